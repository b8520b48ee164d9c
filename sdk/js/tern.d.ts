// Types for the Tern browser SDK (tern.js). Hand-written to match the JSDoc
// in tern.js, signaling.js, peer.js and stats.js; no build step.

export interface TernOptions {
  /** Signaling WebSocket URL. Default: `/v1/signal` on the server that served tern.js. */
  url?: string;
  /**
   * Several edges' signaling URLs (instead of `url`): a join tries them in
   * order; a dropped socket resumes on the next edge at once.
   */
  urls?: string[];
  /** Only use TURN relay candidates (`iceTransportPolicy: 'relay'`). Default true. */
  relayOnly?: boolean;
  /** Capture a microphone (true, or constraints). Default true. */
  audio?: boolean | MediaTrackConstraints;
  /** Send this stream instead of capturing one (the SDK will not stop its tracks). */
  localStream?: MediaStream;
  /** ms between `stats` events. Default 1000. */
  statsInterval?: number;
  /** ms between quality reports sent to signaling. Default 5000. */
  reportInterval?: number;
  /** ms between signaling pings. Default 10000. */
  pingInterval?: number;
  /** ms a pong may be late before the socket counts as dead. Default 5000. */
  pingTimeout?: number;
  /** ms to wait for `joined`. Default 10000. */
  joinTimeout?: number;
  /** Reconnect and resume after a dropped socket. Default true. */
  reconnect?: boolean;
  /** Cap of the reconnect backoff, ms. Default 5000. */
  maxReconnectDelay?: number;
  /**
   * Measure the RTT to every relay region (STUN through ICE, in parallel
   * with capturing the microphone) before joining and send it as `probes`.
   * Default true; ignored when `join` is given `probes`.
   */
  probe?: boolean;
  /** ms a region may take to answer a probe. Default 1000. */
  probeTimeout?: number;
  WebSocket?: typeof WebSocket;
  RTCPeerConnection?: typeof RTCPeerConnection;
}

export interface RelayInfo {
  id: string;
  region: string;
}

export interface PeerInfo {
  participant: string;
  identity: string;
}

export interface JoinArgs {
  room: string;
  /** Room token (JWT, HS256) from your app server. */
  token: string;
  /** `session` from an earlier join, to resume as the same participant. */
  session?: string;
  /** Measured RTT per region, ms. */
  probes?: Record<string, number>;
}

export interface JoinedInfo {
  participant: string;
  session: string;
  identity?: string;
  room: string;
  resumed: boolean;
  peers: PeerInfo[];
  relay: RelayInfo;
  iceServers: RTCIceServer[];
  standby: { relay: RelayInfo; iceServers: RTCIceServer[] } | null;
}

export interface MediaStats {
  packetsSent: number;
  packetsReceived: number;
  packetsLost: number;
  bytesSent: number;
  bytesReceived: number;
  /** Inbound audio jitter, ms. */
  jitter: number | null;
  /** Round-trip time of the selected candidate pair, ms. */
  rtt: number | null;
  localCandidateType: 'host' | 'srflx' | 'prflx' | 'relay' | null;
  remoteCandidateType: 'host' | 'srflx' | 'prflx' | 'relay' | null;
  relayProtocol: 'udp' | 'tcp' | 'tls' | null;
  /** TURN URL of the server carrying our side of the link. */
  relayUrl: string | null;
  localAddress: string | null;
  remoteAddress: string | null;
}

export interface PeerStats extends MediaStats {
  participant: string;
  identity: string;
  connectionState: RTCPeerConnectionState;
}

export interface TernEventMap {
  joined: JoinedInfo;
  'peer-joined': PeerInfo;
  'peer-left': { participant: string; identity?: string };
  track: { participant: string; identity: string; stream: MediaStream; track: MediaStreamTrack };
  'peer-state': { participant: string; state: RTCPeerConnectionState };
  /** `reason`: `joined`, `resumed` (the room moved while our signaling was away), or the `reroute` frame's (`relay-lost`, `relay-draining`, …). */
  relay: RelayInfo & { standby: RelayInfo | null; reason: string };
  /** Inbound audio from `participant` stopped for > 300 ms; a `stall` frame naming `relay` was sent. Once per silence. */
  stall: { participant: string; relay: string; silentMs: number };
  /** A link went `disconnected`/`failed`, no `reroute` came within 400 ms: it switched to the standby relay's TURN servers. */
  standby: { participant: string; relay: RelayInfo; state: RTCPeerConnectionState };
  stats: { peers: Record<string, PeerStats>; at: number };
  reconnecting: { attempt: number; delay: number; reason: string };
  reconnected: { resumed: boolean };
  /** Region probes measured before the join (region → RTT ms; regions that did not answer are absent). */
  probes: { rtts: Record<string, number> };
  error: { code: string; message: string; participant?: string };
  closed: { reason: string; error?: { code: string; message: string } };
}

export type TernState = 'idle' | 'joining' | 'joined' | 'reconnecting' | 'leaving' | 'closed';

export class TernError extends Error {
  constructor(code: string, message: string);
  /** Protocol error code (`bad_token`, `room_full`, …) or the SDK's own (`media`, `connect`, `timeout`, `disconnected`, `closed`). */
  code: string;
}

export class TernClient extends EventTarget {
  constructor(options?: TernOptions);
  readonly state: TernState;
  /** The signaling URL of the edge in use (or tried next). */
  readonly url: string;
  readonly participant: string | null;
  readonly session: string | null;
  readonly relay: RelayInfo | null;
  readonly info: JoinedInfo | null;
  readonly localStream: MediaStream | null;
  readonly peers: (PeerInfo & { connectionState: RTCPeerConnectionState })[];
  peerConnection(participant: string): RTCPeerConnection | null;
  /** Subscribe; `fn` receives the event detail. Returns an unsubscribe function. */
  on<K extends keyof TernEventMap>(name: K, fn: (detail: TernEventMap[K]) => void): () => void;
  join(args: JoinArgs): Promise<JoinedInfo>;
  leave(): Promise<void>;
  hangup(): Promise<void>;
  getStats(): Promise<Record<string, PeerStats>>;
}

/**
 * RTT in ms to one relay per region listed by the edge at `signalUrl`
 * (`GET /v1/relays`), measured with STUN through ICE gathering; regions that
 * do not answer within `timeout` ms (default 500) are left out.
 */
export function probeRegions(
  signalUrl: string,
  opts?: { timeout?: number; rounds?: number; RTCPeerConnection?: typeof RTCPeerConnection; fetch?: typeof fetch },
): Promise<Record<string, number>>;
