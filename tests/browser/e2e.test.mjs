// Real-browser end-to-end test: two headless Chromium pages open the demo,
// join the same room and talk through a Tern relay.
//
//   TERN_URL=http://127.0.0.1:8080 node --test tests/browser/   # against a running `tern up`
//   TERN_BIN=target/release/tern  node --test tests/browser/    # the test starts `tern up` itself
//
// What it proves: signaling hands out working TURN credentials, the SDK's mesh
// negotiation works between two separate browser profiles, media flows both
// ways, and it flows through a relay that Tern's directory lists — not
// host-to-host, not through some other TURN server.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';
import { startTern } from './tern-process.mjs';

const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';
// From docs (DESIGN.md, machine facts): what Debian's Chromium needs headless
// in a container, plus a fake microphone that needs no permission prompt.
const CHROMIUM_ARGS = [
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
const MEDIA_TIMEOUT_MS = 30_000;

/** @type {{url: string, stop: () => Promise<void>}} */
let tern;
/** @type {import('playwright-core').Browser} */
let browser;

before(async () => {
  tern = await startTern();
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
});

after(async () => {
  await browser?.close();
  await tern?.stop();
});

test('two browsers talk through a Tern relay', async (t) => {
  const room = `e2e-${Math.random().toString(36).slice(2, 10)}`;
  const alice = await openDemo('alice', room);
  const bob = await openDemo('bob', room);
  t.after(async () => {
    for (const p of [alice, bob]) await p.page.context().close().catch(() => {});
  });

  // Join one after the other so bob is the newcomer and makes the offer.
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

  // ...and keeps flowing (not a burst that stopped).
  await sleep(1_500);
  const a2 = await linkStats(alice.page);
  const b2 = await linkStats(bob.page);
  assert.ok(a2.packetsReceived > first.a.packetsReceived, `alice stopped receiving: ${first.a.packetsReceived} → ${a2.packetsReceived}`);
  assert.ok(b2.packetsReceived > first.b.packetsReceived, `bob stopped receiving: ${first.b.packetsReceived} → ${b2.packetsReceived}`);

  // The relay carrying each side is one of Tern's, as its directory lists it.
  const relays = await (await fetch(`${tern.url}/v1/relays`)).json();
  for (const [who, s] of [['alice', a2], ['bob', b2]]) {
    const relay = relayOf(relays, s);
    assert.ok(relay, `${who}'s relay candidate (url=${s.url}, address=${s.address}) matches no listener in /v1/relays: ${JSON.stringify(relays)}`);
    // The demo shows the relay signaling chose; media must use that one.
    const shown = (await pageOf(who).locator('#relay-id').textContent())?.trim();
    assert.equal(shown, relay.id, `${who}'s page says relay ${shown} but media goes through ${relay.id}`);
    t.diagnostic(`${who}: ${s.packetsReceived} packets in, ${s.packetsSent} out, via ${s.localType} ${s.address} on ${relay.id} (${relay.region}) url=${s.url}`);
  }

  // The SDK's own summary agrees with the raw stats the test read.
  const sdk = await alice.page.evaluate(() => window.ternDemo.client.getStats());
  const [peer] = Object.values(sdk);
  assert.equal(peer.localCandidateType, 'relay');
  assert.ok(peer.packetsReceived > 50 && peer.packetsSent > 50, JSON.stringify(peer));

  // Leaving is seen by the other side.
  await bob.page.click('#leave');
  await alice.page.locator('#participants li[data-participant]').waitFor({ state: 'detached', timeout: 10_000 });
  await bob.page.locator('#status[data-state="idle"]').waitFor({ timeout: 5_000 });

  assert.deepEqual(alice.errors, [], 'alice: page errors');
  assert.deepEqual(bob.errors, [], 'bob: page errors');

  function pageOf(who) {
    return who === 'alice' ? alice.page : bob.page;
  }
});

// ---- helpers --------------------------------------------------------------

/**
 * A demo page in its own browser context (own profile: separate storage,
 * separate WebRTC stack state, like two different people).
 */
async function openDemo(name, room) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  const log = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => log.push(`[${m.type()}] ${m.text()}`));
  await page.goto(`${tern.url}/demo/?room=${encodeURIComponent(room)}&name=${name}`);
  return { name, page, errors, log };
}

async function join(p) {
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
async function linkStats(page) {
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
function relayOf(relays, s) {
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
function turnHostPort(url) {
  const m = /^(turns?):(\[[^\]]+\]|[^:?]+)(?::(\d+))?/.exec(url);
  if (!m) return null;
  return `${m[2]}:${m[3] ?? (m[1] === 'turns' ? '5349' : '3478')}`;
}

function ipOf(addr) {
  return addr.replace(/:\d+$/, '');
}

async function waitFor(fn, ms, describe) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    last = await fn();
    if (last) return last;
    await sleep(500);
  }
  throw new Error(`timed out after ${ms} ms\n${await describe()}`);
}

async function diagnostics(...pages) {
  const parts = [];
  for (const p of pages) {
    const stats = await linkStats(p.page).catch((e) => String(e));
    const log = await p.page.locator('#log').innerText().catch(() => '');
    parts.push(`--- ${p.name}: ${JSON.stringify(stats)}\n${log}\n${p.log.slice(-20).join('\n')}`);
  }
  return parts.join('\n');
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}
