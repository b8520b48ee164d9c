// @ts-check
/**
 * Region probes: how far is each relay region from this browser?
 *
 * Signaling ranks relays for a caller by the RTTs the caller measured
 * (`probes` in `join`, docs/protocol.md). A browser cannot send raw UDP, but
 * ICE can: an RTCPeerConnection given `stun:<relay>` as its only ICE server
 * sends a STUN Binding request from each local socket as soon as gathering
 * starts, and reports a server-reflexive candidate when the answer comes
 * back. The time from starting gathering (setLocalDescription) to the srflx
 * candidate is one round trip to the relay plus a few ms of socket setup,
 * about the same for every region, so the ranking holds. (Timing from the
 * host candidate instead does not work: with mDNS host obfuscation Chromium
 * announces the host candidate only after registering its name, which can be
 * after the srflx candidate of a nearby relay.) Every Tern relay answers
 * Binding requests on its UDP listener; no credentials are needed, and the
 * answer is no larger than twice the request (docs/relay.md, amplification).
 *
 * Limit: Chromium does not announce a srflx candidate that equals the
 * local address it was sent from (no NAT in between: a host with a public
 * address, or a relay on the same machine). Such a region gets no RTT and
 * is ranked after the measured ones; when no region answers, signaling
 * ranks as if no probes were sent.
 *
 * Which relays: the healthy ones in the edge's public directory
 * (`GET /v1/relays`), one per region (the first listed; regions are what is
 * ranked). All regions are probed at once; a region that has not answered
 * within the timeout is left out, and signaling ranks unprobed regions after
 * probed ones.
 *
 * Rounds: the whole measurement is made `rounds` times (default 3), 50 ms
 * apart, and each region keeps its lowest RTT. A browser that is busy
 * (starting up, capturing the microphone, loading a page) delays the
 * answers that arrive while it is busy by as much as 100–150 ms, and those
 * are the near regions': one stall made a region 80 ms further look 14 ms
 * further, and with two back-to-back rounds a region 2 ms away still
 * measured 43 ms in both (both seen in CI). Spreading three rounds over
 * ~300 ms lets at least one fall outside such a stall; the minimum of a few
 * round trips is the usual estimate of path RTT for the same reason. A
 * region that gave no answer in a round is not asked again.
 */

/**
 * @typedef {object} ProbeOptions
 * @property {number} [timeout]  ms to wait for answers (default 1 000)
 * @property {number} [rounds]  measurements per region, lowest kept (default 3)
 * @property {typeof RTCPeerConnection} [RTCPeerConnection]
 * @property {typeof fetch} [fetch]
 */

/**
 * The relay directory URL next to a signaling URL (`wss://h/v1/signal` or
 * `https://h/v1/http` → `https://h/v1/relays`; a path prefix is kept).
 * @param {string} signalUrl
 */
export function directoryUrl(signalUrl) {
  const u = new URL(signalUrl);
  if (u.protocol === 'wss:') u.protocol = 'https:';
  if (u.protocol === 'ws:') u.protocol = 'http:';
  u.pathname = u.pathname.replace(/\/+$/, '').replace(/\/[^/]*$/, '/relays');
  u.search = '';
  return u.href;
}

/**
 * One STUN URL per region, from a directory listing.
 * @param {any[]} relays  `GET /v1/relays` (RelayView[])
 * @returns {Map<string, string>} region → `stun:host:port`
 */
export function probeTargets(relays) {
  /** @type {Map<string, string>} */
  const targets = new Map();
  for (const r of relays) {
    if (!r?.healthy || targets.has(r.region)) continue;
    const udp = (r.listeners ?? []).find((/** @type {any} */ l) => l.transport === 'udp');
    if (udp) targets.set(r.region, `stun:${udp.address}`);
  }
  return targets;
}

/**
 * Measure the RTT to one STUN server through ICE gathering.
 * @param {string} stunUrl
 * @param {number} timeout
 * @param {typeof RTCPeerConnection} PC
 * @returns {Promise<number | null>} ms, or null if no answer in time
 */
export function measureRtt(stunUrl, timeout, PC) {
  return new Promise((resolve) => {
    const pc = new PC({ iceServers: [{ urls: stunUrl }], iceCandidatePoolSize: 0 });
    let start = NaN;
    let done = false;
    const finish = (/** @type {number | null} */ rtt) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      pc.close();
      resolve(rtt);
    };
    const timer = setTimeout(() => finish(null), timeout);
    pc.onicecandidate = (e) => {
      // Gathering over without a srflx candidate: no answer, or one that was
      // suppressed (see the limit above). Do not wait out the timeout.
      if (!e.candidate) return finish(null);
      if (e.candidate.type !== 'srflx' || !Number.isFinite(start)) return;
      finish(Math.round((performance.now() - start) * 10) / 10);
    };
    pc.createDataChannel('probe');
    pc.createOffer()
      .then((o) => {
        start = performance.now();
        return pc.setLocalDescription(o);
      })
      .catch(() => finish(null));
  });
}

/** Pause between probe rounds (see "Rounds" above). */
const ROUND_GAP_MS = 50;

/**
 * Probe every region in the directory of the edge at `signalUrl`.
 * @param {string} signalUrl  signaling WebSocket URL of an edge
 * @param {ProbeOptions} [opts]
 * @returns {Promise<Record<string, number>>} region → RTT in ms (answered regions only)
 */
export async function probeRegions(signalUrl, opts = {}) {
  const timeout = opts.timeout ?? 1_000;
  const PC = opts.RTCPeerConnection ?? globalThis.RTCPeerConnection;
  const get = opts.fetch ?? globalThis.fetch.bind(globalThis);
  const controller = new AbortController();
  const abort = setTimeout(() => controller.abort(), timeout);
  let relays;
  try {
    const res = await get(directoryUrl(signalUrl), { signal: controller.signal });
    if (!res.ok) return {};
    relays = await res.json();
  } catch {
    return {};
  } finally {
    clearTimeout(abort);
  }
  let targets = [...probeTargets(Array.isArray(relays) ? relays : relays?.relays ?? [])];
  /** @type {Record<string, number>} */
  const out = {};
  for (let round = 0; round < Math.max(1, opts.rounds ?? 3) && targets.length; round++) {
    if (round > 0) await new Promise((r) => setTimeout(r, ROUND_GAP_MS));
    const rtts = await Promise.all(targets.map(([, url]) => measureRtt(url, timeout, PC)));
    targets = targets.filter(([region], i) => {
      const rtt = rtts[i];
      if (rtt === null) return false; // no answer: not asked again
      out[region] = Math.min(out[region] ?? Infinity, rtt);
      return true;
    });
  }
  return out;
}
