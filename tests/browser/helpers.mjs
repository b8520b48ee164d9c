// Shared by the browser tests: Chromium flags, opening the demo in its own
// profile, joining, and reading a page's WebRTC stats.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join as joinPath, dirname, extname } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = joinPath(dirname(fileURLToPath(import.meta.url)), '..', '..');

export const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';
// What Debian's Chromium needs headless
// in a container, plus a fake microphone that needs no permission prompt.
export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-dev-shm-usage',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
];

/** Time allowed for join + ICE + the first 50 packets each way. */
export const MEDIA_TIMEOUT_MS = 30_000;

/**
 * Alice joins, then bob (so bob is the newcomer and makes the offer); resolves
 * once audio flows both ways over relay candidates.
 * @param {import('playwright-core').Browser} browser
 * @param {string} url  Tern's HTTP base URL
 * @param {{route?: boolean, holdReroute?: number}} [opts]  see openDemo
 */
export async function startCall(t, browser, url, opts = {}) {
  const room = `e2e-${Math.random().toString(36).slice(2, 10)}`;
  const alice = await openDemo(browser, url, 'alice', room, opts);
  const bob = await openDemo(browser, url, 'bob', room, opts);
  t.after(async () => {
    for (const p of [alice, bob]) await p.page.context().close().catch(() => {});
  });
  await join(alice);
  await join(bob);

  // Both see each other in the participant list.
  await alice.page.locator('#participants li[data-participant]').first().waitFor({ timeout: 10_000 });
  await bob.page.locator('#participants li[data-participant]').first().waitFor({ timeout: 10_000 });

  // Audio flows both ways, over a relay candidate on both sides.
  const first = await waitFor(async () => {
    const a = await linkStats(alice.page);
    const b = await linkStats(bob.page);
    const ok = (s) => s && s.packetsReceived > 50 && s.localType === 'relay';
    return ok(a) && ok(b) ? { a, b } : null;
  }, MEDIA_TIMEOUT_MS, () => diagnostics(alice, bob));
  return { alice, bob, first };
}

export function assertNoPageErrors(...pages) {
  for (const p of pages) assert.deepEqual(p.errors, [], `${p.name}: uncaught errors in the page`);
}

/**
 * A demo page in its own browser context (own profile: separate storage,
 * separate WebRTC stack state, like two different people).
 *
 * With `route` (the default) signaling passes through Playwright, so a test
 * can cut the socket or play the server's part (inject frames); without
 * handlers it forwards as is. `route: false` leaves the socket alone, for
 * tests that time what the real server sends. `holdReroute: ms` (with
 * `route`) delays every `reroute` the server sends by `ms`. `query` is
 * appended to the demo's URL (e.g. `&edges=…`).
 */
export async function openDemo(browser, url, name, room, { route = true, holdReroute = 0, query = '' } = {}) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  const log = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => log.push(`[${m.type()}] ${m.text()}`));
  const sockets = [];
  // `sent`: every text frame the page sent on a signaling socket, parsed
  // (what the SDK told the server).
  const sent = [];
  const record = (payload) => {
    try {
      sent.push({ t: Date.now(), frame: JSON.parse(String(payload)) });
    } catch { /* not JSON: not ours to judge here */ }
  };
  // `refuseSignaling = true`: new signaling sockets are closed at once, as if
  // the edge were unreachable (the SDK keeps retrying with backoff).
  const p = { name, page, errors, log, sockets, sent, refuseSignaling: false, refused: 0 };
  if (route) {
    await context.routeWebSocket(/\/v1\/signal(\?[^/]*)?$/, (ws) => {
      if (p.refuseSignaling) {
        p.refused++;
        ws.close({ code: 1013, reason: 'test: signaling unreachable' });
        return;
      }
      const server = ws.connectToServer();
      sockets.push({ ws, server });
      if (holdReroute) forwardHoldingReroutes(ws, server, holdReroute, record);
    });
  }
  if (!holdReroute) {
    page.on('websocket', (ws) => {
      if (/\/v1\/signal(\?[^/]*)?$/.test(ws.url())) ws.on('framesent', ({ payload }) => record(payload));
    });
  }
  if (process.env.TERN_SDK_FROM_TREE) await serveSdkFromTree(context);
  await page.goto(`${url}/demo/?room=${encodeURIComponent(room)}&name=${name}${query}`);
  return p;
}

/**
 * Forward a routed signaling socket by hand, delaying each `reroute` from the
 * server by `ms` (other frames pass at once, so pongs and the peer's offers
 * are not held up): the page sits on a dead path for that long, as if
 * signaling were slow to notice. Frames the page sends go to `record`.
 */
function forwardHoldingReroutes(ws, server, ms, record) {
  server.onMessage((m) => {
    if (frameType(m) !== 'reroute') return ws.send(m);
    setTimeout(() => {
      try { ws.send(m); } catch { /* the page is gone */ }
    }, ms);
  });
  ws.onMessage((m) => {
    record(m);
    server.send(m);
  });
}

function frameType(m) {
  try {
    return JSON.parse(String(m)).type;
  } catch {
    return null;
  }
}

/**
 * TERN_SDK_FROM_TREE=1: serve /sdk/ and /demo/ from this checkout instead of
 * the copies compiled into `tern`, to iterate on the SDK without rebuilding
 * (a development aid: CI tests what the binary serves).
 */
async function serveSdkFromTree(context) {
  const types = { '.js': 'text/javascript', '.html': 'text/html', '.css': 'text/css', '.ts': 'text/plain' };
  await context.route(/\/(sdk|demo)\/[^?#]*(\?.*)?$/, async (route) => {
    // The page itself still comes from tern: a fulfilled document has no
    // address, counts as "public", and Chromium's local-network-access
    // checks would then block its WebSocket to 127.0.0.1.
    if (route.request().resourceType() === 'document') return route.continue();
    const path = new URL(route.request().url()).pathname;
    const m = /^\/(sdk|demo)\/([\w.-]*)$/.exec(path);
    if (!m) return route.continue();
    const file = joinPath(REPO, 'sdk', m[1] === 'sdk' ? 'js' : 'demo', m[2] || 'index.html');
    try {
      await route.fulfill({ body: await readFile(file), contentType: types[extname(file)] ?? 'application/octet-stream' });
    } catch {
      await route.continue();
    }
  });
}

export async function join(p) {
  await p.page.click('#join');
  await p.page.locator('#status[data-state="joined"]').waitFor({ timeout: 15_000 }).catch(async (e) => {
    throw new Error(`${p.name} did not join: ${await p.page.locator('#log').innerText()}\n${e.message}`);
  });
}

/**
 * Raw WebRTC numbers for the (single) remote peer, read straight from the
 * RTCPeerConnection rather than through the SDK's summary, so an SDK bug
 * cannot make the test pass.
 */
export async function linkStats(page) {
  return page.evaluate(async () => {
    const client = window.ternDemo?.client;
    const peer = client?.peers[0];
    const pc = peer && client.peerConnection(peer.participant);
    if (!pc) return null;
    const report = await pc.getStats();
    const byId = new Map();
    report.forEach((s) => byId.set(s.id, s));
    const out = { state: pc.connectionState, packetsReceived: 0, packetsSent: 0, localType: null, url: null, address: null };
    for (const s of byId.values()) {
      if (s.type === 'inbound-rtp' && s.kind === 'audio') out.packetsReceived += s.packetsReceived ?? 0;
      if (s.type === 'outbound-rtp' && s.kind === 'audio') out.packetsSent += s.packetsSent ?? 0;
      if (s.type === 'transport' && s.selectedCandidatePairId) {
        const pair = byId.get(s.selectedCandidatePairId);
        const local = pair && byId.get(pair.localCandidateId);
        if (local) {
          out.localType = local.candidateType;
          out.url = local.url ?? null;
          out.address = `${local.address}:${local.port}`;
          out.relayProtocol = local.relayProtocol ?? null;
        }
      }
    }
    return out;
  });
}

/**
 * The relay in Tern's directory whose listener the local relay candidate was
 * allocated through. Chromium reports that as the candidate's TURN `url`
 * ("turn:127.0.0.1:3478?transport=udp"); the candidate's own address is the
 * allocation (relayed) address, which a relay on one IP shares with its
 * listener, so fall back to comparing the IP if a browser omits `url`.
 */
export function relayOf(relays, s) {
  const hostPort = s.url ? turnHostPort(s.url) : null;
  for (const r of relays) {
    for (const l of r.listeners ?? []) {
      if (hostPort && hostPort === l.address) return r;
      if (!hostPort && s.address && ipOf(s.address) === ipOf(l.address)) return r;
    }
  }
  return null;
}

/** "turn:1.2.3.4:3478?transport=udp" → "1.2.3.4:3478" (default port 3478, 5349 for turns). */
export function turnHostPort(url) {
  const m = /^(turns?):(\[[^\]]+\]|[^:?]+)(?::(\d+))?/.exec(url);
  if (!m) return null;
  return `${m[2]}:${m[3] ?? (m[1] === 'turns' ? '5349' : '3478')}`;
}

function ipOf(addr) {
  return addr.replace(/:\d+$/, '');
}

/** Poll `fn` until it returns something truthy; fail with `describe()` after `ms`. */
export async function waitFor(fn, ms, describe, every = 500) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    last = await fn();
    if (last) return last;
    await sleep(every);
  }
  throw new Error(`timed out after ${ms} ms\n${describe ? await describe() : ''}`);
}

export async function diagnostics(...pages) {
  const parts = [];
  for (const p of pages) {
    const stats = await linkStats(p.page).catch((e) => String(e));
    const log = await p.page.locator('#log').innerText().catch(() => '');
    parts.push(`--- ${p.name}: ${JSON.stringify(stats)}\n${log}\n${p.log.slice(-20).join('\n')}`);
  }
  return parts.join('\n');
}

export function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * Runs in the page: poll the call's RTCPeerConnection every ~20 ms and keep
 * (a) each time inbound audio packetsReceived grew, (b) each change of the
 * selected pair's local candidate URL, (c) reroutes as the SDK reports them,
 * (d) signaling resumes (`reconnected`).
 * Times are `performance.timeOrigin + performance.now()` (epoch ms).
 */
export function installProbe() {
  const client = window.ternDemo.client;
  const pc = client.peerConnection(client.peers[0].participant);
  const now = () => performance.timeOrigin + performance.now();
  const probe = {
    growth: /** @type {{t: number, n: number, lost: number}[]} */ ([]),
    paths: /** @type {{t: number, url: string | null}[]} */ ([]),
    reroutes: /** @type {any[]} */ ([]),
    /** Signaling resumes after a dropped socket (`reconnected` events). */
    reconnects: /** @type {{t: number, resumed: boolean, url: string}[]} */ ([]),
    polls: 0,
    firstPoll: 0,
    lastPoll: 0,
    /** Longest time between two polls: the page's own starvation. */
    maxPollGap: 0,
    stop: false,
  };
  window.__failover = probe;
  client.on('relay', (r) => {
    if (r.reason !== 'joined') probe.reroutes.push({ t: now(), ...r });
  });
  client.on('reconnected', ({ resumed }) => probe.reconnects.push({ t: now(), resumed, url: client.url }));
  let last = -1;
  let lastUrl;
  const poll = async () => {
    if (probe.stop) return;
    try {
      const report = await pc.getStats();
      const t = now();
      let n = 0;
      let lost = 0;
      let url = null;
      const byId = new Map();
      report.forEach((s) => byId.set(s.id, s));
      for (const s of byId.values()) {
        if (s.type === 'inbound-rtp' && s.kind === 'audio') {
          n += s.packetsReceived ?? 0;
          lost += s.packetsLost ?? 0;
        }
        if (s.type === 'transport' && s.selectedCandidatePairId) {
          const pair = byId.get(s.selectedCandidatePairId);
          url = (pair && byId.get(pair.localCandidateId)?.url) ?? null;
        }
      }
      if (n !== last) probe.growth.push({ t, n, lost });
      if (url !== lastUrl) probe.paths.push({ t, url });
      last = n;
      lastUrl = url;
      if (!probe.polls) probe.firstPoll = t;
      else probe.maxPollGap = Math.max(probe.maxPollGap, t - probe.lastPoll);
      probe.lastPoll = t;
      probe.polls++;
    } catch {
      /* the connection closed under us: the test will say what broke */
    }
    setTimeout(poll, 20);
  };
  poll();
}

/**
 * The longest interval between consecutive growths of packetsReceived that
 * ends after `kill` (the stall the kill caused, or a later one if longer).
 * @param {{t: number, n: number}[]} growth
 * @param {number} kill
 */
export function longestGap(growth, kill) {
  let best = { ms: 0, from: kill, to: kill };
  for (let i = 1; i < growth.length; i++) {
    const from = growth[i - 1].t;
    const to = growth[i].t;
    if (to > kill && to - from > best.ms) best = { ms: to - from, from, to };
  }
  return best;
}

/**
 * page clock − Node clock, in ms, both as `timeOrigin + now()`. Taken from
 * the round trip with the smallest delay, assuming the page read its clock
 * halfway through it.
 */
export async function pageClockOffset(page) {
  let best = null;
  for (let i = 0; i < 7; i++) {
    const t0 = performance.timeOrigin + performance.now();
    const p = await page.evaluate(() => performance.timeOrigin + performance.now());
    const t1 = performance.timeOrigin + performance.now();
    if (!best || t1 - t0 < best.rtt) best = { rtt: t1 - t0, offset: p - (t0 + t1) / 2 };
  }
  return best.offset;
}
