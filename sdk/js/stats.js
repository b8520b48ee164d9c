// @ts-check
/**
 * Turn a raw RTCStatsReport into the few numbers a voice call is judged by.
 *
 * Units are the ones people read: milliseconds for RTT and jitter (WebRTC
 * reports seconds). Fields are null when the browser has not measured them
 * yet, so "0 ms" never means "unknown".
 *
 * @module
 */

/**
 * @typedef {object} MediaStats
 * @property {number} packetsSent      audio RTP packets sent
 * @property {number} packetsReceived  audio RTP packets received
 * @property {number} packetsLost      audio RTP packets lost on the way in
 * @property {number} bytesSent
 * @property {number} bytesReceived
 * @property {number | null} jitter    inbound audio jitter, ms
 * @property {number | null} rtt       round-trip time of the selected path, ms
 * @property {string | null} localCandidateType   host | srflx | prflx | relay
 * @property {string | null} remoteCandidateType
 * @property {string | null} relayProtocol  udp | tcp | tls, how we reach the TURN server
 * @property {string | null} relayUrl  TURN URL of the server carrying our side (local relay candidate)
 * @property {string | null} localAddress   "ip:port" of the local candidate (for relay: the allocation)
 * @property {string | null} remoteAddress  "ip:port" of the remote candidate
 */

/** @param {number | undefined} seconds */
const ms = (seconds) => (typeof seconds === 'number' ? Math.round(seconds * 10_000) / 10 : null);

/** @param {any} c */
const addr = (c) => (c && c.address != null ? `${c.address}:${c.port}` : null);

/**
 * @param {RTCStatsReport} report
 * @returns {MediaStats}
 */
export function summarize(report) {
  /** @type {Map<string, any>} */
  const byId = new Map();
  report.forEach((s) => byId.set(s.id, s));

  /** @type {MediaStats} */
  const out = {
    packetsSent: 0,
    packetsReceived: 0,
    packetsLost: 0,
    bytesSent: 0,
    bytesReceived: 0,
    jitter: null,
    rtt: null,
    localCandidateType: null,
    remoteCandidateType: null,
    relayProtocol: null,
    relayUrl: null,
    localAddress: null,
    remoteAddress: null,
  };
  let pair = null;
  /** @type {number | null} */ let rtcpRtt = null;

  for (const s of byId.values()) {
    if (s.type === 'outbound-rtp' && s.kind === 'audio') {
      out.packetsSent += s.packetsSent ?? 0;
      out.bytesSent += s.bytesSent ?? 0;
    } else if (s.type === 'inbound-rtp' && s.kind === 'audio') {
      out.packetsReceived += s.packetsReceived ?? 0;
      out.packetsLost += Math.max(0, s.packetsLost ?? 0);
      out.bytesReceived += s.bytesReceived ?? 0;
      if (typeof s.jitter === 'number') out.jitter = Math.max(out.jitter ?? 0, ms(s.jitter) ?? 0);
    } else if (s.type === 'remote-inbound-rtp' && s.kind === 'audio') {
      if (typeof s.roundTripTime === 'number') rtcpRtt = ms(s.roundTripTime);
    } else if (s.type === 'transport' && s.selectedCandidatePairId) {
      pair = byId.get(s.selectedCandidatePairId) ?? pair;
    }
  }
  // Browsers without transport.selectedCandidatePairId (Firefox) mark the pair.
  if (!pair) {
    for (const s of byId.values()) {
      if (s.type === 'candidate-pair' && (s.selected || (s.nominated && s.state === 'succeeded'))) pair = s;
    }
  }
  if (pair) {
    const local = byId.get(pair.localCandidateId);
    const remote = byId.get(pair.remoteCandidateId);
    out.rtt = ms(pair.currentRoundTripTime);
    out.localCandidateType = local?.candidateType ?? null;
    out.remoteCandidateType = remote?.candidateType ?? null;
    out.localAddress = addr(local);
    out.remoteAddress = addr(remote);
    if (local?.candidateType === 'relay') {
      out.relayProtocol = local.relayProtocol ?? null;
      out.relayUrl = local.url ?? null;
    }
  }
  if (out.rtt === null) out.rtt = rtcpRtt;
  return out;
}
