// Real-browser failover: a live call survives its relay's process dying.
//
//   TERN_BIN=target/release/tern node --test tests/browser/failover.test.mjs
//
// Two Chromium pages (separate profiles) join one room through `tern up`,
// relay-only, and talk over relay X. The test SIGKILLs X's process (by the
// PID `tern up` printed): no drain, no last heartbeat, exactly a vanished
// machine. Nothing tells the browsers; Chromium alone would take ~5 s to call
// the link disconnected and ~15 s to call it failed. Tern's signaling must
// notice (missing heartbeats, unanswered probes), send both pages `reroute` with credentials
// for the other relay, and the SDK's ICE restart must bring audio back on it.
//
// Asserted: both pages get a `reroute` (reason relay-lost, to the other
// relay); each page's selected candidate pair moves to a relay candidate
// allocated through the OTHER relay's TURN listener; inbound audio keeps
// growing on both sides afterwards. The bounds are generous (reroute < 2 s
// after the kill, audio gap < 5 s): this is a test, not a benchmark. The
// measured figures are printed (console.log, `failover:` lines) for the docs.
// When the machine starves the pages themselves (their 20 ms poll loop
// stalls), the figures are printed but the timing bounds are not asserted:
// they would measure the machine, not Tern.
//
// How the figures are measured: each page polls its RTCPeerConnection's
// getStats() every ~20 ms and keeps the times at which inbound-rtp audio
// packetsReceived grew, and the time it got the `reroute` (the SDK's `relay`
// event, which fires as the frame is applied). The gap is the longest
// interval without growth from the kill on. Chromium caches a stats report
// for up to ~50 ms, so gaps are good to about ±50 ms. The kill time is
// translated into each page's clock (offset measured by round trips), so the
// kill → reroute time does not depend on Node's and Chromium's clocks
// agreeing.
//
// Also: the same with SIGTERM (the relay drains: signaling gets a draining
// heartbeat and moves the room while the old relay still relays, so the gap
// should be near zero), and a SIGKILL while one page is away from signaling
// (its resume must carry it to the new relay, and the other page's lost
// ICE-restart offer must not wedge the call).
//
// And: a frozen relay (SIGSTOP) that the SDK must report with a `stall`
// frame, and a dead relay whose `reroute` is held back, where the SDK must
// switch to `joined.standby` on its own.
//
// Needs `tern up` started by the test (TERN_BIN, or a built target/): with
// TERN_URL there are no relay PIDs to kill and the tests fail saying so.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';
import { startTern } from './tern-process.mjs';
import {
  CHROMIUM, CHROMIUM_ARGS, startCall, assertNoPageErrors, linkStats, relayOf, turnHostPort, waitFor, diagnostics, sleep,
  installProbe, longestGap, pageClockOffset,
} from './helpers.mjs';

/**
 * Generous bounds: a regression alarm, not a performance target. Each run
 * widens them by what it measured of the machine (see `boundsFor`).
 */
const MAX_REROUTE_MS = 2_000;
const MAX_GAP_MS = 5_000;
/** How long to watch audio after the move before calling it restored. */
const WATCH_AFTER_MOVE_MS = 1_000;

/** @type {import('playwright-core').Browser} */
let browser;
/** Each test kills a relay, so each gets its own `tern up`. */
/** @type {import('./tern-process.mjs').Tern[]} */
const terns = [];

before(async () => {
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
});

after(async () => {
  await browser?.close();
  for (const tern of terns) await tern.stop();
});

/** A fresh `tern up` with two relays whose PIDs we know. */
async function ternWithRelays() {
  const tern = await startTern();
  terns.push(tern);
  assert.ok(tern.relays, 'needs `tern up` started by the test (TERN_BIN): with TERN_URL there is no relay process to kill');
  assert.ok(tern.relays.length >= 2, `needs two relays, tern up printed ${tern.relays.length}:${ternTail(tern)}`);
  // The precondition is two healthy relays (one to lose, one to move to);
  // `startTern` only waits for one.
  await allRelaysHealthy(tern);
  return tern;
}

/**
 * Wait until signaling counts every relay healthy. Checked again right
 * before a kill: on a starved machine the failure detector can suspect
 * every relay at once for a few seconds, and a kill during that window
 * tests that, not failover.
 */
async function allRelaysHealthy(tern) {
  await waitFor(async () => {
    const list = await (await fetch(`${tern.url}/v1/relays`)).json();
    return tern.relays.every((r) => list.find((d) => d.id === r.id)?.healthy === true);
  }, 15_000, async () => `not all relays healthy${await ternState(tern)}`, 100);
}

test('killing the relay under a live call: both browsers reroute to the other relay and audio comes back', (t) =>
  // A killed relay is caught by heartbeats/probes (relay-lost) or, when the
  // SDK's own 300 ms stall reports win the race, by callers (media-stalled).
  relayGoes(t, 'SIGKILL', ['relay-lost', 'media-stalled']));

// SIGTERM: the relay announces it is draining (a last heartbeat), keeps
// relaying for its drain period (1 s under `tern up`), then exits. Signaling
// moves the room at once, make-before-break, so the gap should be small.
test('draining the relay under a live call (SIGTERM): both browsers move before it stops', (t) =>
  relayGoes(t, 'SIGTERM', ['relay-draining']));

/** How late the stall test hands each page its `reroute` (see there). */
const HOLD_REROUTE_MS = 1_000;

// SIGSTOP: the relay freezes (alive to the kernel, silent on the wire), as a
// hung or starved process would. The SDK's stall watch (no inbound audio for
// > 300 ms) must report it with a `stall` frame; signaling may also notice by
// missed heartbeats or probes first. Either way the call must move: this
// asserts the report was sent and the call recovered, not which detector won.
test('freezing the relay under a live call (SIGSTOP): the SDK reports the stall and the call moves', async (t) => {
  const tern = await ternWithRelays();
  // Signaling's heartbeat and probe detectors usually reroute within
  // 0.2–0.5 s, as fast as the SDK's 300 ms stall watch: to exercise the
  // watch every time, each page gets its `reroute` HOLD_REROUTE_MS late.
  const { alice, bob, first } = await startCall(t, browser, tern.url, { holdReroute: HOLD_REROUTE_MS });
  const pages = [alice, bob];
  const directory = await (await fetch(`${tern.url}/v1/relays`)).json();
  const relayByTurn = relayFinder(tern, directory);
  const x = relayByTurn(first.a.url);
  assert.ok(x, `alice's relay candidate (url=${first.a.url}) is on none of tern up's relays`);

  for (const p of pages) {
    await p.page.evaluate(() => {
      window.__stalls = [];
      window.__reroutes = [];
      window.ternDemo.client.on('stall', (s) => window.__stalls.push(s));
      window.ternDemo.client.on('relay', (r) => { if (r.reason !== 'joined') window.__reroutes.push(r); });
    });
  }
  // Let the SDK's watch see audio flowing (it arms only after growth).
  await sleep(1_000);
  await allRelaysHealthy(tern);
  const frozenAt = Date.now();
  tern.signalRelay(x.id, 'SIGSTOP');
  // The frozen process is ours to end, by its PID (SIGKILL works on a stopped one).
  t.after(() => {
    try { tern.killRelay(x.id, 'SIGKILL'); } catch { /* already gone */ }
  });
  t.diagnostic(`SIGSTOP to ${x.id} (pid ${x.pid})`);

  const reroutes = await waitFor(async () => {
    const got = {};
    for (const p of pages) {
      got[p.name] = await p.page.evaluate(() => window.__reroutes[0] ?? null);
      if (!got[p.name]) return null;
    }
    return got;
  }, 10_000, async () => `no reroute on both pages 10 s after freezing ${x.id}\n${await diagnostics(alice, bob)}${await ternState(tern)}`, 50);
  for (const p of pages) {
    assert.notEqual(reroutes[p.name].id, x.id, `${p.name} was rerouted to the frozen relay`);
  }

  // At least one page reported the frozen relay (~300 ms of silence, well
  // before its held `reroute` arrived).
  const stallFrames = await waitFor(async () => {
    const frames = pages.flatMap((p) => p.sent.filter((s) => s.frame.type === 'stall').map((s) => ({ page: p.name, ...s })));
    return frames.length ? frames : null;
  }, 5_000, async () => `no page sent a stall frame\n${await diagnostics(alice, bob)}${await ternState(tern)}`, 50);
  for (const s of stallFrames) assert.equal(s.frame.relay, x.id, `${s.page} reported ${s.frame.relay}, not the frozen relay`);
  // One report per silence: no page reports the same relay twice in a row here.
  for (const p of pages) {
    const n = p.sent.filter((s) => s.frame.type === 'stall').length;
    assert.ok(n <= 1, `${p.name} sent ${n} stall frames for one stall`);
  }

  // Audio resumes on the other relay on both sides.
  await waitFor(async () => {
    for (const p of pages) {
      const s1 = await linkStats(p.page);
      const r = s1 && s1.localType === 'relay' ? relayByTurn(s1.url) : null;
      if (!r || r.id === x.id) return false;
      await sleep(300);
      const s2 = await linkStats(p.page);
      if (!s2 || s2.packetsReceived - s1.packetsReceived < 5) return false;
    }
    return true;
  }, 15_000, async () => `audio did not resume off ${x.id}\n${await diagnostics(alice, bob)}${await ternState(tern)}`, 100);
  const reasons = pages.map((p) => `${p.name}: ${reroutes[p.name].reason}`).join(', ');
  console.log(`stall: SIGSTOP ${x.id}; reroutes ${reasons}; stall frames ${stallFrames.map((s) => `${s.page} +${s.t - frozenAt} ms`).join(', ')}`);
  assertNoPageErrors(alice, bob);
});

// Hot standby: the relay dies and signaling's `reroute` is held back (15 s)
// from both pages. Once Chromium calls the link disconnected, the SDK must
// switch it to `joined.standby`'s TURN servers by itself (after ~400 ms
// without a reroute), and audio must come back there before the reroute.
test('the relay dies and no reroute comes: the SDK switches to the hot standby on its own', async (t) => {
  const tern = await ternWithRelays();
  const { alice, bob, first } = await startCall(t, browser, tern.url, { holdReroute: 15_000 });
  const pages = [alice, bob];
  const directory = await (await fetch(`${tern.url}/v1/relays`)).json();
  const relayByTurn = relayFinder(tern, directory);
  const x = relayByTurn(first.a.url);
  assert.ok(x, `alice's relay candidate (url=${first.a.url}) is on none of tern up's relays`);
  for (const p of pages) {
    const standby = await p.page.evaluate(() => window.ternDemo.client.info?.standby?.relay?.id ?? null);
    assert.ok(standby && standby !== x.id, `${p.name} has no standby other than ${x.id} (${standby})`);
    await p.page.evaluate(() => {
      window.__standby = [];
      window.__reroutes = [];
      window.ternDemo.client.on('standby', (s) => window.__standby.push(s));
      window.ternDemo.client.on('relay', (r) => { if (r.reason !== 'joined') window.__reroutes.push(r); });
    });
  }
  await allRelaysHealthy(tern);
  const killedAt = Date.now();
  tern.killRelay(x.id, 'SIGKILL');

  const switched = await waitFor(async () => {
    const got = {};
    for (const p of pages) {
      got[p.name] = await p.page.evaluate(() => window.__standby[0] ?? null);
      if (!got[p.name]) return null;
    }
    return got;
  }, 12_000, async () => `no standby switch on both pages\n${await diagnostics(alice, bob)}${await ternState(tern)}`, 100);
  for (const p of pages) assert.notEqual(switched[p.name].relay.id, x.id);

  await waitFor(async () => {
    for (const p of pages) {
      const s1 = await linkStats(p.page);
      const r = s1 && s1.localType === 'relay' ? relayByTurn(s1.url) : null;
      if (!r || r.id === x.id) return false;
      await sleep(300);
      const s2 = await linkStats(p.page);
      if (!s2 || s2.packetsReceived - s1.packetsReceived < 5) return false;
    }
    return true;
  }, 8_000, async () => `audio did not resume on the standby\n${await diagnostics(alice, bob)}${await ternState(tern)}`, 100);
  const elapsed = Date.now() - killedAt;
  for (const p of pages) {
    const n = await p.page.evaluate(() => window.__reroutes.length);
    assert.equal(n, 0, `${p.name} got its reroute before audio resumed (${elapsed} ms): the standby path was not what recovered`);
  }
  console.log(`standby: SIGKILL ${x.id}; switched ${pages.map((p) => `${p.name} (${switched[p.name].state})`).join(', ')}; audio back within ${elapsed} ms`);
  assertNoPageErrors(alice, bob);
});

/**
 * A call on relay X; X gets `signal`; both pages must get `reroute` with
 * `reason` and end up with audio on the other relay.
 * @param {NodeJS.Signals} signal
 * @param {string[]} reasons reroute reasons that fit this kind of loss
 */
async function relayGoes(t, signal, reasons) {
  const tern = await ternWithRelays();

  // Signaling straight to the server (no Playwright WebSocket routing), so
  // the reroute's arrival time is the real one.
  const { alice, bob, first } = await startCall(t, browser, tern.url, { route: false });
  const pages = [alice, bob];

  // Relay X: the one carrying the call. A room has one relay, so both sides
  // allocated on the same listener.
  // Signaling's own directory, while both relays are in it: every listener
  // (UDP, TCP, TLS) of every relay, to tell which relay a TURN url belongs to.
  const directory = await (await fetch(`${tern.url}/v1/relays`)).json();
  const relayByTurn = relayFinder(tern, directory);
  const x = relayByTurn(first.a.url);
  assert.ok(x, `alice's relay candidate (url=${first.a.url}) is on none of tern up's relays: ${JSON.stringify(tern.relays)}`);
  assert.equal(relayByTurn(first.b.url)?.id, x.id, `alice is on ${x.id} but bob's candidate url is ${first.b.url}`);
  const others = tern.relays.filter((r) => r.id !== x.id);
  for (const p of pages) {
    assert.equal((await p.page.locator('#relay-id').textContent())?.trim(), x.id, `${p.name}'s page shows another relay than media uses`);
  }

  // Start the probes, and let them see audio flowing before anything breaks.
  for (const p of pages) await p.page.evaluate(installProbe);
  await waitFor(async () => {
    for (const p of pages) {
      const n = await p.page.evaluate(() => window.__failover.growth.length);
      if (n < 10) return false;
    }
    return true;
  }, 5_000, async () => `${await diagnostics(alice, bob)}${await ternState(tern)}`, 50);
  const offsets = {};
  for (const p of pages) offsets[p.name] = await pageClockOffset(p.page);

  await allRelaysHealthy(tern);
  // SIGKILL: X dies as a vanished machine would (no drain, no last word).
  const killedAt = tern.killRelay(x.id, signal);
  t.diagnostic(`${signal} to ${x.id} (pid ${x.pid}, turn ${x.turn}); the call should move to ${others.map((r) => r.id).join(' or ')}`);

  // Both pages hear about it from signaling...
  const reroutes = await waitFor(async () => {
    const got = {};
    for (const p of pages) {
      got[p.name] = await p.page.evaluate(() => window.__failover.reroutes[0] ?? null);
      if (!got[p.name]) return null;
    }
    return got;
  }, 10_000, async () => `no reroute on both pages 10 s after killing ${x.id}\n${await diagnostics(alice, bob)}${await ternState(tern)}`, 20);

  // ...and each moves its selected pair to a relay candidate allocated
  // through the other relay's listener.
  const moved = await waitFor(async () => {
    const got = {};
    for (const p of pages) {
      const s = await linkStats(p.page);
      const r = s && s.localType === 'relay' ? relayByTurn(s.url) : null;
      if (!r || r.id === x.id) return null;
      got[p.name] = { stats: s, relay: r };
    }
    return got;
  }, 15_000, async () => `selected pairs did not leave ${x.id}\n${await diagnostics(alice, bob)}${await ternState(tern)}`, 50);

  // Audio keeps coming in on the new path on both sides, for a while.
  await waitFor(async () => {
    for (const p of pages) {
      const ok = await p.page.evaluate(([kill, dead, ms]) => {
        const { growth, paths } = window.__failover;
        const onDead = (url) => !url || dead.some((a) => url.includes(`:${a}?`) || url.endsWith(`:${a}`));
        const moved = paths.find((e) => e.t >= kill && !onDead(e.url));
        if (!moved) return false;
        const after = growth.filter((e) => e.t >= moved.t);
        return after.length >= 2 && after.at(-1).t - moved.t >= ms && after.at(-1).n - after[0].n >= ms / 40;
      }, [killedAt + offsets[p.name], listenersOf(directory, x), WATCH_AFTER_MOVE_MS]);
      if (!ok) return false;
    }
    return true;
  }, 15_000, async () => `audio did not keep flowing after the move\n${await diagnostics(alice, bob)}${await ternState(tern)}`, 100);

  const results = {};
  for (const p of pages) {
    const probe = await p.page.evaluate(() => {
      window.__failover.stop = true;
      return window.__failover;
    });
    const kill = killedAt + offsets[p.name]; // in the page's clock
    const r = reroutes[p.name];
    const m = moved[p.name];

    // The reroute: the real server's, for this kind of loss, to the relay media moved to.
    assert.ok(r.t >= kill, `${p.name}: a reroute (${r.reason} → ${r.id}) came ${Math.round(kill - r.t)} ms BEFORE the relay was signalled: a false suspicion`);
    assert.ok(reasons.includes(r.reason), `${p.name}: reroute reason ${r.reason}, expected one of ${reasons}`);
    assert.notEqual(r.id, x.id, `${p.name}: rerouted to the dead relay`);
    assert.equal(r.id, m.relay.id, `${p.name}: reroute named ${r.id} but media moved to ${m.relay.id}`);
    assert.equal((await p.page.locator('#relay-id').textContent())?.trim(), m.relay.id, `${p.name}: page shows the wrong relay`);
    // The new candidate's TURN server is a listener signaling's directory
    // lists for that relay, not merely a port tern up printed.
    assert.equal(relayOf(directory, m.stats)?.id, m.relay.id, `${p.name}: ${m.stats.url} is not ${m.relay.id}'s listener in /v1/relays: ${JSON.stringify(directory)}`);

    const gap = longestGap(probe.growth, kill);
    const switched = probe.paths.find((e) => e.t >= kill && e.url && relayByTurn(e.url)?.id === m.relay.id);
    results[p.name] = {
      rerouteMs: r.t - kill,
      gapMs: gap.ms,
      // When the stall began and ended, relative to the kill.
      lastBeforeMs: gap.from - kill,
      firstAfterMs: gap.to - kill,
      pairSwitchMs: switched ? switched.t - kill : null,
      pollMs: probe.polls > 1 ? (probe.lastPoll - probe.firstPoll) / (probe.polls - 1) : null,
      maxPollGapMs: probe.maxPollGap,
      controlGapMs: longestGapBefore(probe.growth, kill),
      packets: `${probe.growth[0].n} → ${probe.growth.at(-1).n}`,
      // RTP sequence gaps from just before the kill to the end (packetsLost).
      lost: probe.growth.at(-1).lost - (probe.growth.findLast((e) => e.t <= kill) ?? probe.growth[0]).lost,
      to: m.relay.id,
      url: m.stats.url,
    };
  }

  const f = (v) => (v == null ? '–' : `${Math.round(v)} ms`);
  for (const [name, r] of Object.entries(results)) {
    console.log(
      `failover (${signal}): ${name}: ${x.id} → reroute ${f(r.rerouteMs)}, audio gap ${f(r.gapMs)} ` +
        `(last packet before it ${f(r.lastBeforeMs)}, first after ${f(r.firstAfterMs)}, pair on ${r.to} ${f(r.pairSwitchMs)}); ` +
        `packets in ${r.packets}, lost ${r.lost}; stats polled every ${f(r.pollMs)} (longest ${f(r.maxPollGapMs)}); ` +
        `longest gap before the kill ${f(r.controlGapMs)}; now ${r.url}`,
    );
  }
  for (const [name, r] of Object.entries(results)) {
    const b = boundsFor(r);
    assert.ok(r.rerouteMs >= 0 && r.rerouteMs < b.rerouteMs, `${name}: reroute ${Math.round(r.rerouteMs)} ms after the kill (bound ${b.rerouteMs} ms: ${b.why})`);
    assert.ok(r.gapMs < b.gapMs, `${name}: audio gap ${Math.round(r.gapMs)} ms (bound ${b.gapMs} ms: ${b.why})`);
  }
  assertNoPageErrors(alice, bob);
}

test('the relay dies while one side is away from signaling: the resume carries the new relay and the call recovers', async (t) => {
  const tern = await ternWithRelays();
  // Routed signaling: the test cuts alice's socket and keeps her edge
  // "unreachable" while the relay dies.
  const { alice, bob, first } = await startCall(t, browser, tern.url);
  const pages = [alice, bob];
  const directory = await (await fetch(`${tern.url}/v1/relays`)).json();
  const relayByTurn = relayFinder(tern, directory);
  const x = relayByTurn(first.a.url);
  assert.ok(x && relayByTurn(first.b.url)?.id === x.id, `call not on one of tern up's relays: ${first.a.url} / ${first.b.url}`);
  for (const p of pages) await p.page.evaluate(installProbe);
  const offsets = {};
  for (const p of pages) offsets[p.name] = await pageClockOffset(p.page);

  // Alice loses signaling and cannot get it back for now.
  alice.refuseSignaling = true;
  const route = alice.sockets.at(-1);
  route.server.close({ code: 1001, reason: 'test: edge gone' });
  route.ws.close({ code: 4000, reason: 'test: edge gone' });
  await alice.page.locator('#status[data-state="reconnecting"]').waitFor({ timeout: 5_000 });
  // ...and has really tried (and failed) to come back.
  await waitFor(() => alice.refused >= 1, 5_000, () => 'alice never retried signaling', 20);

  await allRelaysHealthy(tern);
  // The relay dies meanwhile. Only bob is connected, so only bob gets the
  // reroute; his ICE-restart offer to alice is refused (she is away).
  const killedAt = tern.killRelay(x.id, 'SIGKILL');
  const bobReroute = await waitFor(
    () => bob.page.evaluate(() => window.__failover.reroutes[0] ?? null),
    10_000,
    async () => `bob got no reroute\n${await diagnostics(alice, bob)}${await ternState(tern)}`,
    20,
  );
  assert.equal(bobReroute.reason, 'relay-lost');
  assert.notEqual(bobReroute.id, x.id);
  assert.equal(await alice.page.evaluate(() => window.__failover.reroutes.length), 0, 'alice was away and cannot have had a reroute');

  // Alice's edge comes back: her resume's `joined` names the new relay, and
  // the SDK must move her links to it (and un-wedge bob's lost offer).
  alice.refuseSignaling = false;
  await alice.page.locator('#status[data-state="joined"]').waitFor({ timeout: 10_000 });
  assert.match(await alice.page.locator('#status').innerText(), /resumed/);
  const aliceMove = await waitFor(
    () => alice.page.evaluate(() => window.__failover.reroutes[0] ?? null),
    5_000,
    async () => `alice's SDK reported no relay change on resume\n${await diagnostics(alice, bob)}${await ternState(tern)}`,
    20,
  );
  assert.equal(aliceMove.reason, 'resumed');
  assert.equal(aliceMove.id, bobReroute.id, 'the resume named another relay than the reroute');

  const moved = await waitFor(async () => {
    const got = {};
    for (const p of pages) {
      const s = await linkStats(p.page);
      const r = s && s.localType === 'relay' ? relayByTurn(s.url) : null;
      if (!r || r.id !== bobReroute.id) return null;
      got[p.name] = s;
    }
    return got;
  }, 20_000, async () => `selected pairs did not reach ${bobReroute.id}\n${await diagnostics(alice, bob)}${await ternState(tern)}`, 50);
  await waitFor(async () => {
    for (const p of pages) {
      const ok = await p.page.evaluate(([dead, ms]) => {
        const { growth, paths } = window.__failover;
        const moved = [...paths].reverse().find((e) => e.url && !dead.some((a) => e.url.includes(`:${a}?`) || e.url.endsWith(`:${a}`)));
        if (!moved) return false;
        const after = growth.filter((e) => e.t >= moved.t);
        return after.length >= 2 && after.at(-1).t - moved.t >= ms && after.at(-1).n - after[0].n >= ms / 40;
      }, [listenersOf(directory, x), WATCH_AFTER_MOVE_MS]);
      if (!ok) return false;
    }
    return true;
  }, 15_000, async () => `audio did not keep flowing after the move\n${await diagnostics(alice, bob)}${await ternState(tern)}`, 100);

  const f = (v) => (v == null ? '–' : `${Math.round(v)} ms`);
  for (const p of pages) {
    const probe = await p.page.evaluate(() => {
      window.__failover.stop = true;
      return window.__failover;
    });
    const kill = killedAt + offsets[p.name];
    const gap = longestGap(probe.growth, kill);
    const r = probe.reroutes[0];
    const switched = probe.paths.find((e) => e.t >= kill && e.url && relayByTurn(e.url)?.id === bobReroute.id);
    console.log(
      `failover (away): ${p.name}: SIGKILL ${x.id} → ${r.reason} ${f(r.t - kill)}, audio gap ${f(gap.ms)} ` +
        `(last packet before it ${f(gap.from - kill)}, first after ${f(gap.to - kill)}, pair on ${bobReroute.id} ${f(switched ? switched.t - kill : null)}); ` +
        `now ${moved[p.name].url}`,
    );
    const b = boundsFor({
      pollMs: probe.polls > 1 ? (probe.lastPoll - probe.firstPoll) / (probe.polls - 1) : 0,
      maxPollGapMs: probe.maxPollGap,
      controlGapMs: longestGapBefore(probe.growth, kill),
    });
    assert.ok(gap.ms < b.gapMs, `${p.name}: audio gap ${Math.round(gap.ms)} ms (bound ${b.gapMs} ms: ${b.why})`);
  }
  assertNoPageErrors(alice, bob);
});

// ---- helpers --------------------------------------------------------------

/**
 * The bounds for one page's figures, from what that page measured of the
 * machine: its longest pause between two ~20 ms stats polls (a page that
 * paused was starved of CPU, and so were the relays, tern and the media
 * threads, which adds to every figure) and the longest gap in inbound
 * audio while nothing had failed yet (the control).
 */
function boundsFor(r) {
  const stall = Math.max(0, (r.maxPollGapMs ?? 0) - 20);
  const control = r.controlGapMs ?? 0;
  return {
    rerouteMs: Math.round(MAX_REROUTE_MS + 2 * stall),
    gapMs: Math.round(MAX_GAP_MS + 2 * stall + 2 * control),
    why: `${MAX_REROUTE_MS}/${MAX_GAP_MS} ms + twice the page's longest poll stall (${Math.round(stall)} ms)` +
      ` and, for the gap, twice the longest gap before the failure (${Math.round(control)} ms)`,
  };
}

/** The longest time between two samples of inbound growth before `kill`. */
function longestGapBefore(growth, kill) {
  let best = 0;
  for (let i = 1; i < growth.length && growth[i].t <= kill; i++) best = Math.max(best, growth[i].t - growth[i - 1].t);
  return best;
}

/**
 * TURN url → the relay process (from `tern up`'s output) it belongs to. A
 * relay may listen on UDP, TCP and TLS ports, and Chromium may pick any of
 * them: match against every listener signaling's directory lists, falling
 * back to the UDP address `tern up` printed.
 */
function relayFinder(tern, directory) {
  return (url) => {
    const hp = turnHostPort(url ?? '');
    if (!hp) return null;
    const id = directory.find((r) => (r.listeners ?? []).some((l) => l.address === hp))?.id ?? tern.relays.find((r) => r.turn === hp)?.id;
    return tern.relays.find((r) => r.id === id) ?? null;
  };
}

/** Every host:port relay `r` takes TURN on. */
function listenersOf(directory, r) {
  const d = directory.find((x) => x.id === r.id);
  return [...new Set([r.turn, ...(d?.listeners ?? []).map((l) => l.address)])];
}

/** What signaling thinks of its relays now, and the end of `tern up`'s log. */
async function ternState(tern) {
  let dir;
  try {
    const list = await (await fetch(`${tern.url}/v1/relays`)).json();
    dir = list
      .map((r) => `${r.id}: healthy=${r.healthy} failing=${r.failing} state=${r.state} phi=${r.phi} last_heartbeat_age_ms=${r.last_heartbeat_age_ms}`)
      .join('\n');
  } catch (e) {
    dir = `GET /v1/relays failed: ${e}`;
  }
  return `\n--- /v1/relays now:\n${dir}${ternTail(tern)}`;
}

/** The end of `tern up`'s log, for failure messages (relay exits, suspicions). */
function ternTail(tern, lines = 40) {
  const out = tern.output().trimEnd();
  return out ? `\n--- tern up, last ${lines} lines:\n${out.split('\n').slice(-lines).join('\n')}` : '';
}

