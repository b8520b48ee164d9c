// @ts-check
/**
 * Tern browser SDK: join a room, talk to everyone in it through a Tern relay.
 *
 *     import { TernClient } from '/sdk/tern.js';
 *     const call = new TernClient({ relayOnly: true });
 *     call.on('track', ({ participant, stream }) => audioFor(participant).srcObject = stream);
 *     const info = await call.join({ room, token });
 *     ...
 *     await call.leave();
 *
 * The call is a mesh: one RTCPeerConnection per remote participant, all of
 * them through the TURN servers signaling hands out (media is end-to-end
 * DTLS-SRTP; relays only see ciphertext). Signaling speaks protocol v1
 * (docs/protocol.md). When the WebSocket drops, the client reconnects and
 * resumes its session; the peer connections keep running meanwhile, because
 * media does not go through signaling.
 *
 * Files: signaling.js (one WebSocket), peer.js (one peer connection and its
 * negotiation), stats.js (raw WebRTC stats → call quality numbers).
 *
 * @module
 */

import { SignalingSocket } from './signaling.js';
import { HttpSignalingSocket } from './http-signaling.js';
import { Peer } from './peer.js';
import { summarize } from './stats.js';
import { probeRegions } from './probe.js';

export { probeRegions };

/** @typedef {import('./stats.js').MediaStats} MediaStats */

/**
 * @typedef {object} TernOptions
 * @property {string} [url]  signaling URL; default: `/v1/signal` on the server
 *   this SDK was loaded from (ws: or wss: to match http: or https:). A
 *   `ws(s)://…/v1/signal` URL speaks over a WebSocket; an `http(s)://…/v1/http`
 *   URL uses the HTTP transport (long poll), for hosts without WebSockets (Spin).
 * @property {string[]} [urls]  several edges' signaling URLs (instead of `url`).
 *   A join tries them in order until one answers; when the socket drops, the
 *   client resumes its session on the next edge at once (edges share state,
 *   so any edge can resume it) and only backs off once every edge has failed.
 * @property {boolean} [relayOnly]  only use TURN relay candidates (default true)
 * @property {boolean | MediaTrackConstraints} [audio]  capture a microphone (default true)
 * @property {MediaStream} [localStream]  use this stream instead of capturing one
 * @property {number} [statsInterval]   ms between `stats` events (default 1 000)
 * @property {number} [reportInterval]  ms between quality reports to the server (default 5 000)
 * @property {number} [pingInterval]    ms between signaling pings (default 10 000)
 * @property {number} [pingTimeout]     ms a pong may be late before the socket counts as dead (default 5 000)
 * @property {number} [joinTimeout]     ms to wait for `joined` (default 10 000)
 * @property {boolean} [reconnect]      reconnect and resume after a dropped socket (default true)
 * @property {boolean} [probe]  measure the RTT to every relay region before joining (STUN through
 *   ICE, in parallel with capturing the microphone) and send it as `probes`, so signaling picks the
 *   nearest region (default true; ignored when `join` is given `probes`)
 * @property {number} [probeTimeout]  ms a region may take to answer a probe (default 1 000)
 * @property {number} [maxReconnectDelay]  ms, cap of the exponential backoff (default 5 000)
 * @property {typeof WebSocket} [WebSocket]
 * @property {typeof RTCPeerConnection} [RTCPeerConnection]
 */

/**
 * @typedef {object} RelayInfo
 * @property {string} id
 * @property {string} region
 */

/**
 * @typedef {object} JoinedInfo
 * @property {string} participant  our participant id in the room
 * @property {string} session      resume handle (keep it secret)
 * @property {string} [identity]
 * @property {string} room
 * @property {boolean} resumed
 * @property {{participant: string, identity: string}[]} peers  who was already there
 * @property {RelayInfo} relay      the relay carrying our media
 * @property {RTCIceServer[]} iceServers
 * @property {{relay: RelayInfo, iceServers: RTCIceServer[]} | null} standby
 */

/**
 * @typedef {MediaStats & {participant: string, identity: string, connectionState: RTCPeerConnectionState}} PeerStats
 */

/**
 * Stall detection: inbound audio is polled this often per peer connection,
 * and a link whose packetsReceived has not grown for longer than
 * STALL_AFTER_MS (after audio had flowed) is reported to signaling. Opus
 * sends a packet every 20 ms, so 300 ms is ~15 packets missing: not jitter.
 */
const STALL_POLL_MS = 100;
const STALL_AFTER_MS = 300;

/**
 * Hot standby: a link whose connection goes `disconnected` or `failed` and
 * gets no `reroute` within this long switches to the standby's TURN servers
 * by itself. Signaling's detectors usually reroute well within it (a relay
 * death is noticed in 0.2–0.5 s, and Chromium only calls a link
 * disconnected seconds after its path went quiet); this covers signaling
 * being slow, or unreachable.
 */
const STANDBY_AFTER_MS = 400;

/** Error codes after which retrying the same join cannot succeed. */
const FATAL_JOIN_ERRORS = new Set(['bad_request', 'bad_token', 'expired_token', 'room_full', 'already_joined']);

/** An error with a stable, machine-readable `code` (the protocol's, or the SDK's own). */
export class TernError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   */
  constructor(code, message) {
    super(message);
    this.name = 'TernError';
    this.code = code;
  }
}

/** Where signaling lives by default: the server that served this module. */
/**
 * A signaling connection over the transport the URL names: `ws(s)://…` is a
 * WebSocket (origin, Cloudflare), `http(s)://…` the HTTP transport (Spin).
 * @param {string} url
 * @param {import('./signaling.js').SocketOptions} opts
 */
function openSignaling(url, opts) {
  return /^https?:/i.test(url) ? new HttpSignalingSocket(url, opts) : new SignalingSocket(url, opts);
}

function defaultSignalUrl() {
  let base = import.meta.url;
  if (!/^https?:/.test(base) && typeof location !== 'undefined') base = location.href;
  const u = new URL('/v1/signal', base);
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  return u.href;
}

/**
 * The WebSocket URL for joining `room`: `?room=` names the room before the
 * join frame does, so a host that keeps each room in its own object (the
 * Cloudflare Worker, docs/deploy.md) can hand the socket to it; other hosts
 * ignore it. Non-WebSocket URLs are left alone.
 * @param {string} url
 * @param {string} room
 */
function roomUrl(url, room) {
  const u = new URL(url);
  if (u.protocol !== 'ws:' && u.protocol !== 'wss:') return url;
  u.searchParams.set('room', room);
  return u.href;
}

/**
 * A call in one room.
 *
 * Events (also via `on(name, fn)`, which passes `event.detail` to `fn`):
 * `joined`, `peer-joined`, `peer-left`, `track`, `peer-state`, `relay`,
 * `stall`, `standby`, `stats`, `probes`, `reconnecting`, `reconnected`, `error`, `closed`.
 */
export class TernClient extends EventTarget {
  /** @type {Required<Omit<TernOptions, 'localStream' | 'WebSocket' | 'RTCPeerConnection'>> & TernOptions} */
  #o;
  /** idle → joining → joined ⇄ reconnecting → closed (→ joining again) */
  /** @type {'idle' | 'joining' | 'joined' | 'reconnecting' | 'leaving' | 'closed'} */
  #state = 'idle';
  /** @type {SignalingSocket | HttpSignalingSocket | null} */ #socket = null;
  /** @type {{room: string, token: string, probes?: Record<string, number>} | null} */ #joinArgs = null;
  /** @type {JoinedInfo | null} */ #info = null;
  /** Everyone else in the room, whether or not media is up yet. */
  /** @type {Map<string, string>} participant → identity */ #roster = new Map();
  /** @type {Map<string, Peer>} */ #peers = new Map();
  /** Signals that could not be sent while signaling was down. */
  /** @type {object[]} */ #outbox = [];
  /** @type {{resolve: (f: any) => void, reject: (e: Error) => void} | null} */ #waitJoined = null;
  /** @type {(() => void) | null} */ #waitLeft = null;
  /** @type {MediaStream | null} */ #localStream = null;
  #ownsStream = false;
  /** @type {ReturnType<typeof setInterval>[]} */ #timers = [];
  /** @type {ReturnType<typeof setTimeout> | undefined} */ #reconnectTimer;
  #reconnectAttempt = 0;
  /** Index into the edge URLs of the one we use (or try next). */
  #edge = 0;
  /**
   * Inbound audio per link, for stall detection: packets seen, when they last
   * grew, the relay that carried them then, whether audio has flowed at all,
   * and whether the current silence was already reported (one report per
   * episode).
   */
  /** @type {Map<string, {packets: number, grewAt: number, relay: string | null, flowing: boolean, reported: boolean}>} */
  #audio = new Map();
  /**
   * Longest inbound-audio gap measured since the last quality report, for
   * the call record (reported once, with the relay that carried the audio
   * before the gap).
   * @type {{relay: string | null, ms: number} | null}
   */
  #gap = null;
  #stallPollBusy = false;
  /** Reroutes applied so far: a standby timer armed before one must not act. */
  #reroutes = 0;
  /** @type {Map<string, ReturnType<typeof setTimeout>>} participant → pending standby switch */
  #standbyTimers = new Map();
  /** @type {Map<string, string>} participant → standby relay its link already switched to */
  #onStandby = new Map();
  /** Bumped on every teardown so late async work from an old call is dropped. */
  #epoch = 0;

  /** @param {TernOptions} [options] */
  constructor(options = {}) {
    super();
    this.#o = {
      ...options,
      urls: options.urls?.length ? [...options.urls] : [options.url ?? defaultSignalUrl()],
      relayOnly: options.relayOnly ?? true,
      audio: options.audio ?? true,
      statsInterval: options.statsInterval ?? 1_000,
      reportInterval: options.reportInterval ?? 5_000,
      pingInterval: options.pingInterval ?? 10_000,
      pingTimeout: options.pingTimeout ?? 5_000,
      joinTimeout: options.joinTimeout ?? 10_000,
      reconnect: options.reconnect ?? true,
      maxReconnectDelay: options.maxReconnectDelay ?? 5_000,
      probe: options.probe ?? true,
      probeTimeout: options.probeTimeout ?? 1_000,
    };
  }

  // ---- public API -------------------------------------------------------

  /** @returns {'idle' | 'joining' | 'joined' | 'reconnecting' | 'leaving' | 'closed'} */
  get state() { return this.#state; }
  /** Our participant id, once joined. */
  get participant() { return this.#info?.participant ?? null; }
  /** The resume handle from the last `joined`. */
  get session() { return this.#info?.session ?? null; }
  /** The relay carrying our media. */
  get relay() { return this.#info?.relay ?? null; }
  /** The last `joined` frame, as received. */
  get info() { return this.#info; }
  get localStream() { return this.#localStream; }
  /** Everyone else in the room. */
  get peers() {
    return [...this.#roster].map(([participant, identity]) => ({
      participant,
      identity,
      connectionState: this.#peers.get(participant)?.connectionState ?? 'new',
    }));
  }

  /**
   * The RTCPeerConnection to one participant (for advanced use and tests).
   * @param {string} participant
   */
  peerConnection(participant) {
    return this.#peers.get(participant)?.pc ?? null;
  }

  /**
   * Subscribe to an event; `fn` gets the event's detail. Returns an unsubscribe function.
   * @param {string} name
   * @param {(detail: any) => void} fn
   */
  on(name, fn) {
    /** @param {Event} e */
    const h = (e) => fn(/** @type {CustomEvent} */ (e).detail);
    this.addEventListener(name, h);
    return () => this.removeEventListener(name, h);
  }

  /**
   * Join a room. Captures the microphone first (so a permission prompt comes
   * before anyone hears us), then connects and sends offers to everyone there.
   * @param {{room: string, token: string, session?: string, probes?: Record<string, number>}} args
   * @returns {Promise<JoinedInfo>}
   */
  async join({ room, token, session, probes }) {
    if (this.#state !== 'idle' && this.#state !== 'closed') {
      throw new TernError('already_joined', `cannot join while ${this.#state}; leave first`);
    }
    this.#state = 'joining';
    const epoch = ++this.#epoch;
    this.#joinArgs = { room, token, probes };
    try {
      const measured = !probes && this.#o.probe ? this.#probe() : null;
      await this.#prepareMedia();
      if (measured) {
        const rtts = await measured;
        if (epoch !== this.#epoch) throw new TernError('closed', 'left before the join completed');
        if (Object.keys(rtts).length) this.#joinArgs.probes = rtts;
        this.#emit('probes', { rtts });
      }
      const frame = await this.#joinAnyEdge(session);
      if (epoch !== this.#epoch) throw new TernError('closed', 'left before the join completed');
      this.#applyJoined(frame, false);
      this.#startTimers();
      return /** @type {JoinedInfo} */ (this.#info);
    } catch (err) {
      if (epoch === this.#epoch) this.#teardown('join failed', err);
      throw err;
    }
  }

  /**
   * Leave the room: tell signaling (so peers hear `peer-left` now rather than
   * after the resume grace period), then close everything.
   */
  async leave() {
    if (this.#state === 'idle' || this.#state === 'closed' || this.#state === 'leaving') return;
    const wasJoined = this.#state === 'joined';
    this.#state = 'leaving';
    const socket = this.#socket;
    if (wasJoined && socket?.send({ type: 'leave' })) {
      // Wait briefly for `left`; leaving must not hang on a slow server.
      await new Promise((resolve) => {
        this.#waitLeft = () => resolve(undefined);
        setTimeout(resolve, 1_000);
      });
    }
    this.#teardown('left');
  }

  /** Same as leave(). */
  hangup() {
    return this.leave();
  }

  /**
   * Call quality per remote participant, keyed by participant id.
   * @returns {Promise<Record<string, PeerStats>>}
   */
  async getStats() {
    /** @type {Record<string, PeerStats>} */
    const out = {};
    await Promise.all(
      [...this.#peers].map(async ([id, peer]) => {
        try {
          const s = summarize(await peer.pc.getStats());
          out[id] = { participant: id, identity: peer.identity, connectionState: peer.connectionState, ...s };
        } catch {
          /* closed while we asked */
        }
      }),
    );
    return out;
  }

  // ---- connection and join ----------------------------------------------

  async #prepareMedia() {
    if (this.#localStream) return;
    if (this.#o.localStream) {
      this.#localStream = this.#o.localStream;
      this.#ownsStream = false;
    } else if (this.#o.audio) {
      const audio = this.#o.audio === true ? true : this.#o.audio;
      try {
        this.#localStream = await navigator.mediaDevices.getUserMedia({ audio, video: false });
      } catch (err) {
        throw new TernError('media', `could not capture audio: ${/** @type {Error} */ (err).message}`);
      }
      this.#ownsStream = true;
    }
  }

  /**
   * RTTs to the relay regions of the current edge's directory; never throws
   * (a failed probe is an empty result: signaling then ranks without it).
   * @returns {Promise<Record<string, number>>}
   */
  async #probe() {
    try {
      return await probeRegions(this.url, {
        timeout: this.#o.probeTimeout,
        RTCPeerConnection: this.#o.RTCPeerConnection,
      });
    } catch {
      return {};
    }
  }

  /** The signaling URL of the edge in use (or tried next). */
  get url() {
    return this.#o.urls[this.#edge];
  }

  /** Move on to the next edge (no-op with one). */
  #nextEdge() {
    this.#edge = (this.#edge + 1) % this.#o.urls.length;
  }

  /**
   * Join through the current edge, moving on to the next ones while an edge
   * cannot be reached or does not answer; other errors (a bad token, a full
   * room) would be the same on every edge and end the attempt.
   * @param {string | undefined} session
   * @returns {Promise<any>}
   */
  async #joinAnyEdge(session) {
    for (let tried = 1; ; tried++) {
      try {
        return await this.#connectAndJoin(session);
      } catch (err) {
        const code = /** @type {TernError} */ (err).code;
        const edgeTrouble = code === 'connect' || code === 'timeout' || code === 'disconnected';
        if (!edgeTrouble || tried >= this.#o.urls.length) throw err;
        this.#nextEdge();
      }
    }
  }

  /**
   * Open a fresh socket and send `join`; resolves with the `joined` frame.
   * @param {string | undefined} session
   * @returns {Promise<any>}
   */
  async #connectAndJoin(session) {
    const room = /** @type {{room: string}} */ (this.#joinArgs).room;
    /** @type {SignalingSocket | HttpSignalingSocket} */
    const socket = openSignaling(roomUrl(this.url, room), {
      onFrame: (f) => { if (this.#socket === socket) this.#onFrame(f); },
      onClose: (reason) => { if (this.#socket === socket) this.#onSocketClosed(reason); },
      pingInterval: this.#o.pingInterval,
      pingTimeout: this.#o.pingTimeout,
      WebSocket: this.#o.WebSocket,
    });
    this.#socket = socket;
    const joined = new Promise((resolve, reject) => {
      this.#waitJoined = { resolve, reject };
    });
    // If the socket closes before it opens, `joined` is rejected (by
    // #onSocketClosed) while we still wait in opened() and never await it:
    // without this the page gets an unhandled rejection on every failed
    // reconnect attempt. The error still reaches us through opened().
    joined.catch(() => {});
    const timer = setTimeout(
      () => this.#waitJoined?.reject(new TernError('timeout', 'signaling did not answer the join in time')),
      this.#o.joinTimeout,
    );
    try {
      try {
        await socket.opened();
      } catch (err) {
        throw new TernError('connect', `could not connect to ${this.url}`);
      }
      const args = /** @type {{room: string, token: string, probes?: Record<string, number>}} */ (this.#joinArgs);
      /** @type {Record<string, unknown>} */
      const frame = { type: 'join', room: args.room, token: args.token };
      if (session) frame.session = session;
      if (args.probes) frame.probes = args.probes;
      socket.send(frame);
      return await joined;
    } catch (err) {
      if (this.#socket === socket) this.#socket = null;
      socket.close('join failed');
      throw err;
    } finally {
      clearTimeout(timer);
      this.#waitJoined = null;
    }
  }

  /**
   * @param {any} f  the `joined` frame
   * @param {boolean} reconnecting  true when this join followed a dropped socket
   */
  #applyJoined(f, reconnecting) {
    const prev = this.#info;
    /** @type {JoinedInfo} */
    const info = {
      participant: f.participant,
      session: f.session,
      identity: f.identity,
      room: f.room ?? this.#joinArgs?.room,
      resumed: f.resumed === true || (reconnecting && prev?.participant === f.participant),
      peers: Array.isArray(f.peers) ? f.peers : [],
      relay: f.relay ?? null,
      iceServers: Array.isArray(f.iceServers) ? f.iceServers : [],
      standby: f.standby ?? null,
    };
    this.#info = info;
    this.#state = 'joined';
    const present = new Map(info.peers.map((p) => [p.participant, p.identity]));

    if (reconnecting && info.resumed) {
      // Same participant: existing peer connections are still valid. Reconcile
      // the roster with who is there now — we may have missed a peer-left.
      // `peers` lists only *connected* participants, so a peer missing from it
      // may merely be away too (one dead edge drops everyone at once): keep
      // any link whose media still works; signaling sends peer-left if that
      // peer never comes back.
      for (const id of [...this.#roster.keys()]) {
        const state = this.#peers.get(id)?.connectionState;
        if (!present.has(id) && state !== 'connected' && state !== 'connecting') this.#removePeer(id);
      }
      for (const [id, identity] of present) {
        if (!this.#roster.has(id)) {
          // Joined while we were away: it could not reach us (we were not
          // "connected"), so we make the offer, as if we were the newcomer.
          this.#roster.set(id, identity);
          this.#emit('peer-joined', { participant: id, identity });
          this.#createPeer(id, identity, true);
        }
      }
      const queued = this.#outbox.splice(0);
      for (const frame of queued) this.#socket?.send(frame);
      if (prev && info.relay && !sameRelay(prev.relay, info.relay)) {
        // The room moved to another relay while we were away (ours was lost
        // or drained): signaling sends `reroute` only to connected members and
        // tells the away ones through this `joined` instead. Without this our
        // links would stay on the old relay's servers — and an ICE restart on
        // a dead relay never connects — so move them exactly as on `reroute`.
        this.#reroutes++;
        this.#onStandby.clear();
        for (const peer of this.#peers.values()) peer.reroute(info.iceServers);
      } else {
        // Candidates may have been lost with the socket; a path that broke
        // meanwhile gets a fresh ICE attempt.
        for (const peer of this.#peers.values()) {
          if (peer.connectionState === 'failed' || peer.connectionState === 'disconnected') peer.restartIce();
        }
      }
    } else {
      // A fresh join (or a resume that came too late: we are a new participant
      // and everyone dropped our old connections). Newcomer offers to all.
      for (const id of [...this.#roster.keys()]) this.#removePeer(id);
      this.#outbox = [];
      for (const [id, identity] of present) {
        this.#roster.set(id, identity);
        this.#createPeer(id, identity, true);
      }
      this.#emit('joined', info);
    }
    if (!prev || !sameRelay(prev.relay, info.relay)) {
      const reason = reconnecting && info.resumed && prev ? 'resumed' : 'joined';
      this.#emit('relay', { ...info.relay, standby: info.standby?.relay ?? null, reason });
    }
  }

  /** @param {any} f */
  #onFrame(f) {
    switch (f.type) {
      case 'joined':
        this.#waitJoined?.resolve(f);
        break;
      case 'error': {
        const err = new TernError(String(f.code ?? 'error'), String(f.message ?? 'signaling error'));
        if (this.#waitJoined) this.#waitJoined.reject(err);
        // A signal to a participant that is away was dropped; if it was an
        // ICE-restart offer its link would wait for an answer forever.
        if (err.code === 'unknown_peer') for (const peer of this.#peers.values()) peer.signalRefused();
        this.#emit('error', { code: err.code, message: err.message });
        break;
      }
      case 'peer-joined':
        if (typeof f.participant !== 'string') break;
        this.#roster.set(f.participant, f.identity ?? '');
        this.#emit('peer-joined', { participant: f.participant, identity: f.identity ?? '' });
        break;
      case 'peer-left':
        if (typeof f.participant === 'string') this.#removePeer(f.participant);
        break;
      case 'signal':
        this.#onSignal(f.from, f.data);
        break;
      case 'left':
        this.#waitLeft?.();
        this.#waitLeft = null;
        break;
      case 'reroute':
        this.#onReroute(f);
        break;
      default:
        // Unknown frames are ignored so servers can add types without
        // breaking older SDKs (the protocol's forward-compatibility rule).
        break;
    }
  }

  /**
   * @param {unknown} from
   * @param {unknown} data
   */
  #onSignal(from, data) {
    if (typeof from !== 'string' || this.#state !== 'joined') return;
    let peer = this.#peers.get(from);
    if (!peer) {
      // A signal from someone we have no link with: a newcomer's offer.
      if (!this.#roster.has(from)) {
        this.#roster.set(from, '');
      }
      peer = this.#createPeer(from, this.#roster.get(from) ?? '', false);
    }
    peer.handleSignal(data);
  }

  /**
   * `reroute`: signaling moved us to another relay. New TURN servers for all
   * links and an ICE restart on each; DTLS survives, so audio resumes as soon
   * as the new path checks out. (A link that lost its path before this
   * came may already be on the standby: see #armStandby.)
   * @param {any} f
   */
  #onReroute(f) {
    if (!this.#info || !Array.isArray(f.iceServers)) return;
    // The standby comes with the reroute (or is absent: no other region is
    // healthy). Keeping the one from `joined` would be wrong: it is often the
    // very relay we are moving to, or the one that just died.
    this.#info = { ...this.#info, relay: f.relay ?? this.#info.relay, iceServers: f.iceServers, standby: f.standby ?? null };
    this.#reroutes++;
    this.#onStandby.clear();
    for (const peer of this.#peers.values()) peer.reroute(f.iceServers);
    this.#emit('relay', { ...this.#info.relay, standby: this.#info.standby?.relay ?? null, reason: f.reason ?? 'reroute' });
  }

  // ---- peers --------------------------------------------------------------

  /**
   * @param {string} participant
   * @param {string} identity
   * @param {boolean} offerer
   */
  #createPeer(participant, identity, offerer) {
    this.#peers.get(participant)?.close();
    this.#audio.delete(participant); // a new link counts from zero
    const peer = new Peer({
      participant,
      identity,
      offerer,
      config: this.#rtcConfig(),
      localStream: this.#localStream,
      RTCPeerConnection: this.#o.RTCPeerConnection,
      send: (data) => this.#sendSignal(participant, data),
      onTrack: (stream, track) => this.#emit('track', { participant, identity: this.#roster.get(participant) ?? identity, stream, track }),
      onStateChange: (state) => this.#onPeerState(participant, state),
      onError: (err) =>
        this.#emit('error', { code: 'webrtc', message: `${participant}: ${/** @type {Error} */ (err)?.message ?? err}`, participant }),
    });
    this.#peers.set(participant, peer);
    return peer;
  }

  /**
   * @param {string} participant
   * @param {RTCPeerConnectionState} state
   */
  #onPeerState(participant, state) {
    this.#emit('peer-state', { participant, state });
    if (state === 'disconnected' || state === 'failed') this.#armStandby(participant);
  }

  /**
   * Give signaling STANDBY_AFTER_MS to send a `reroute` (which wins: it knows
   * which relay died); if none comes, switch this link to the standby.
   * @param {string} participant
   */
  #armStandby(participant) {
    if (this.#standbyTimers.has(participant)) return;
    const reroutes = this.#reroutes;
    const epoch = this.#epoch;
    this.#standbyTimers.set(participant, setTimeout(() => {
      this.#standbyTimers.delete(participant);
      if (epoch === this.#epoch && reroutes === this.#reroutes) this.#switchToStandby(participant);
    }, STANDBY_AFTER_MS));
  }

  /**
   * Move one link to the standby's TURN servers (ICE restart; perfect
   * negotiation handles both sides doing it at once). Once per standby
   * relay per link: if the standby does not help either, the link waits for
   * signaling. Signaling's view (`relay`) is left alone: it still names the
   * room's relay, and the next `reroute` applies to this link as to any.
   * @param {string} participant
   */
  #switchToStandby(participant) {
    const peer = this.#peers.get(participant);
    const standby = this.#info?.standby;
    if (!peer || !standby?.relay?.id || !Array.isArray(standby.iceServers) || !standby.iceServers.length) return;
    const state = peer.connectionState;
    if (state !== 'disconnected' && state !== 'failed') return; // recovered meanwhile
    if (this.#onStandby.get(participant) === standby.relay.id) return;
    this.#onStandby.set(participant, standby.relay.id);
    peer.reroute(standby.iceServers);
    this.#emit('standby', { participant, relay: standby.relay, state });
  }

  /** @param {string} participant */
  #removePeer(participant) {
    const peer = this.#peers.get(participant);
    peer?.close();
    this.#peers.delete(participant);
    this.#audio.delete(participant);
    clearTimeout(this.#standbyTimers.get(participant));
    this.#standbyTimers.delete(participant);
    this.#onStandby.delete(participant);
    const identity = this.#roster.get(participant);
    if (this.#roster.delete(participant)) this.#emit('peer-left', { participant, identity });
  }

  /** @returns {RTCConfiguration} */
  #rtcConfig() {
    return {
      // Exactly what signaling handed out: it picked the relay and minted
      // short-lived credentials for it.
      iceServers: this.#info?.iceServers ?? [],
      iceTransportPolicy: this.#o.relayOnly ? 'relay' : 'all',
      bundlePolicy: 'max-bundle',
      rtcpMuxPolicy: 'require',
    };
  }

  /**
   * @param {string} to
   * @param {object} data
   */
  #sendSignal(to, data) {
    const frame = { type: 'signal', to, data };
    if (this.#state === 'joined' && this.#socket?.send(frame)) return;
    // Signaling is down: keep it for after the resume (bounded, since a
    // long outage ends in a fresh join that drops the queue anyway).
    if (this.#outbox.length < 500) this.#outbox.push(frame);
  }

  // ---- reconnect ------------------------------------------------------------

  /** @param {string} reason */
  #onSocketClosed(reason) {
    this.#socket = null;
    this.#waitJoined?.reject(new TernError('disconnected', reason));
    if (this.#state !== 'joined' && this.#state !== 'reconnecting') return;
    if (!this.#o.reconnect) {
      this.#teardown('signaling lost', new TernError('disconnected', reason));
      return;
    }
    this.#state = 'reconnecting';
    // The edge we were on may be gone: resume on the next one.
    this.#nextEdge();
    this.#scheduleReconnect(reason);
  }

  /** @param {string} reason */
  #scheduleReconnect(reason) {
    // Exponential backoff with jitter: many clients of a dead edge must not
    // come back in lockstep.
    // While untried edges remain, go to the next at once (a few ms of
    // jitter only): it is a different server, and every ms here is a ms
    // without signaling. Back off once the whole list has failed.
    const edges = this.#o.urls.length;
    const fresh = edges > 1 && this.#reconnectAttempt < edges - 1;
    const backoffs = Math.max(0, this.#reconnectAttempt - (edges - 1));
    const base = fresh ? 20 : Math.min(this.#o.maxReconnectDelay, 250 * 2 ** backoffs);
    const delay = Math.round(base * (0.8 + Math.random() * 0.4));
    this.#reconnectAttempt++;
    this.#emit('reconnecting', { attempt: this.#reconnectAttempt, delay, reason });
    const epoch = this.#epoch;
    this.#reconnectTimer = setTimeout(() => this.#reconnect(epoch), delay);
  }

  /** @param {number} epoch */
  async #reconnect(epoch) {
    if (epoch !== this.#epoch || this.#state !== 'reconnecting') return;
    try {
      const frame = await this.#connectAndJoin(this.#info?.session ?? undefined);
      if (epoch !== this.#epoch || this.#state !== 'reconnecting') return;
      this.#reconnectAttempt = 0;
      this.#applyJoined(frame, true);
      this.#emit('reconnected', { resumed: /** @type {JoinedInfo} */ (this.#info).resumed });
    } catch (err) {
      if (epoch !== this.#epoch || this.#state !== 'reconnecting') return;
      const e = /** @type {TernError} */ (err);
      if (FATAL_JOIN_ERRORS.has(e.code)) this.#teardown('could not rejoin', e);
      else {
        this.#nextEdge();
        this.#scheduleReconnect(e.message);
      }
    }
  }

  // ---- periodic work --------------------------------------------------------

  #startTimers() {
    const epoch = this.#epoch;
    this.#timers.push(
      setInterval(async () => {
        const peers = await this.getStats();
        if (epoch === this.#epoch && this.#state !== 'closed') this.#emit('stats', { peers, at: Date.now() });
      }, this.#o.statsInterval),
      setInterval(() => this.#report(), this.#o.reportInterval),
      setInterval(() => this.#watchAudio(), STALL_POLL_MS),
    );
  }

  /**
   * One stall-detection tick: read each link's inbound audio counter. Skips
   * a tick rather than piling up getStats() calls when the page is slow.
   */
  async #watchAudio() {
    if (this.#stallPollBusy || this.#state !== 'joined') return;
    this.#stallPollBusy = true;
    const epoch = this.#epoch;
    try {
      await Promise.all([...this.#peers].map(async ([id, peer]) => {
        const packets = await inboundAudioPackets(peer.pc);
        if (epoch === this.#epoch && this.#peers.get(id) === peer && packets !== null) this.#checkStall(id, packets);
      }));
    } finally {
      this.#stallPollBusy = false;
    }
  }

  /**
   * @param {string} participant
   * @param {number} packets  inbound audio packetsReceived on its link
   */
  #checkStall(participant, packets) {
    const now = performance.now();
    const w = this.#audio.get(participant);
    if (!w || packets > w.packets) {
      // Audio flows (again): arm for the next episode. The first sample only
      // sets the baseline (audio may not have started yet). A silence long
      // enough to count as a stall is a gap worth keeping in the record.
      const silent = w && w.flowing ? Math.round(now - w.grewAt) : 0;
      if (silent > STALL_AFTER_MS && silent > (this.#gap?.ms ?? 0)) this.#gap = { relay: w?.relay ?? null, ms: silent };
      const relay = this.#info?.relay?.id ?? null;
      this.#audio.set(participant, { packets, grewAt: now, relay, flowing: !!w, reported: false });
      return;
    }
    if (!w.flowing || w.reported || now - w.grewAt <= STALL_AFTER_MS) return;
    // A room has one relay: if another link still brings audio, the relay
    // works and this peer's silence is its own (muted, crashed, its network).
    for (const o of this.#audio.values()) if (o.flowing && now - o.grewAt <= STALL_AFTER_MS) return;
    // Still in the room (a peer-left removes it from #audio), audio had
    // flowed and stopped: the relay is the likely culprit. Signaling only
    // acts when two participants agree, so one false report is harmless.
    // The report names the relay that carried the audio when it stopped,
    // not the current one: if signaling already moved us (its own detectors
    // can be faster), the silence until the ICE restart completes is not the
    // new relay's fault, and a report naming a relay the room no longer uses
    // is simply ignored by the server.
    const relay = w.relay;
    if (!relay || !this.#socket?.send({ type: 'stall', relay })) return; // retry next tick
    w.reported = true;
    this.#emit('stall', { participant, relay, silentMs: Math.round(now - w.grewAt) });
  }

  /** Quality report for call records; the server may ignore it. */
  async #report() {
    if (this.#state !== 'joined' || !this.#socket?.isOpen) return;
    const stats = await this.getStats();
    const peers = Object.values(stats).map((s) => ({
      participant: s.participant,
      packetsSent: s.packetsSent,
      packetsReceived: s.packetsReceived,
      packetsLost: s.packetsLost,
      jitter: s.jitter,
      rtt: s.rtt,
      candidateType: s.localCandidateType,
      state: s.connectionState,
    }));
    const gap = this.#gap;
    const frame = { type: 'stats', relay: this.#info?.relay?.id ?? null, signalingRtt: this.#socket?.rtt ?? null, peers };
    if (this.#socket?.send(gap ? { ...frame, gap } : frame) && gap === this.#gap) this.#gap = null;
  }

  // ---- teardown -------------------------------------------------------------

  /**
   * @param {string} reason
   * @param {unknown} [error]
   */
  #teardown(reason, error) {
    if (this.#state === 'closed') return;
    this.#epoch++;
    this.#state = 'closed';
    this.#waitJoined?.reject(new TernError('closed', reason));
    this.#waitLeft?.();
    this.#waitLeft = null;
    for (const t of this.#timers.splice(0)) clearInterval(t);
    clearTimeout(this.#reconnectTimer);
    this.#reconnectAttempt = 0;
    const socket = this.#socket;
    this.#socket = null;
    socket?.close(reason);
    for (const peer of this.#peers.values()) peer.close();
    this.#peers.clear();
    this.#audio.clear();
    for (const timer of this.#standbyTimers.values()) clearTimeout(timer);
    this.#standbyTimers.clear();
    this.#onStandby.clear();
    this.#roster.clear();
    this.#outbox = [];
    if (this.#ownsStream) this.#localStream?.getTracks().forEach((t) => t.stop());
    this.#localStream = null;
    this.#info = null;
    /** @type {{reason: string, error?: {code: string, message: string}}} */
    const detail = { reason };
    if (error) {
      const e = /** @type {TernError} */ (error);
      detail.error = { code: e.code ?? 'error', message: e.message ?? String(error) };
    }
    this.#emit('closed', detail);
  }

  /**
   * @param {string} name
   * @param {unknown} detail
   */
  #emit(name, detail) {
    this.dispatchEvent(new CustomEvent(name, { detail }));
  }
}

/**
 * Inbound audio packets on a link, from its receivers only (smaller reports
 * than pc.getStats(), which matters at 10 polls a second); null if closed.
 * @param {RTCPeerConnection} pc
 * @returns {Promise<number | null>}
 */
async function inboundAudioPackets(pc) {
  try {
    let n = 0;
    for (const r of pc.getReceivers()) {
      if (r.track?.kind !== 'audio') continue;
      (await r.getStats()).forEach((s) => {
        if (s.type === 'inbound-rtp') n += s.packetsReceived ?? 0;
      });
    }
    return n;
  } catch {
    return null;
  }
}

/**
 * @param {RelayInfo | null | undefined} a
 * @param {RelayInfo | null | undefined} b
 */
function sameRelay(a, b) {
  return (a?.id ?? null) === (b?.id ?? null) && (a?.region ?? null) === (b?.region ?? null);
}
