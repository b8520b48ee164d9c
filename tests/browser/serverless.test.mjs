// The browser demo against serverless signaling: Tern's Spin app on the real
// Spin runtime (`spin up`, SPIN_BIN or `spin` on the PATH), and the same
// artifact hosted by `tern spin`, with real relays heartbeating into it,
// each reached two ways:
//   1. through `tern gateway`, which terminates the page's WebSocket and
//      bridges it to the app's HTTP transport (Spin has no inbound WebSockets);
//   2. directly over the HTTP transport (the SDK's long-poll fallback, picked
//      by an http:// signaling URL), cross-origin.
// In both, two Chromium pages join, talk through a relay the Spin app's
// directory lists, and the page shows the relay signaling chose.
//
//   SPIN_BIN=… TERN_BIN=target/debug/tern node --test tests/browser/serverless.test.mjs

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';
import { startServerless } from './tern-process.mjs';
import { CHROMIUM, CHROMIUM_ARGS, startCall, assertNoPageErrors, linkStats, relayOf, sleep } from './helpers.mjs';

/** @type {import('playwright-core').Browser} */
let browser;

before(async () => {
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
});

after(async () => {
  await browser?.close();
});

/** Media keeps flowing through relays the Spin app lists, as each page shows. */
async function assertCallThroughListedRelays(t, app, alice, bob, first) {
  await sleep(1_000);
  const relays = await (await fetch(`${app.spin}/v1/relays`)).json();
  for (const [p, before] of [[alice, first.a], [bob, first.b]]) {
    const s = await linkStats(p.page);
    assert.ok(s.packetsReceived > before.packetsReceived, `${p.name} stopped receiving`);
    const relay = relayOf(relays, s);
    assert.ok(relay, `${p.name}'s relay candidate ${s.address} is not in the Spin app's directory: ${JSON.stringify(relays)}`);
    const shown = (await p.page.locator('#relay-id').textContent())?.trim();
    assert.equal(shown, relay.id, `${p.name}'s page says ${shown} but media goes through ${relay.id}`);
    t.diagnostic(`${p.name}: ${s.packetsReceived} packets in via ${relay.id} (${relay.region})`);
  }
  assertNoPageErrors(alice, bob);
}

for (const host of /** @type {const} */ (['spin up', 'tern spin'])) {
  describe(host, () => {
    /** @type {import('./tern-process.mjs').Serverless} */
    let app;
    before(async () => {
      app = await startServerless({ host });
    });
    after(async () => {
      await app?.stop();
    });

    test(`two browsers talk through tern gateway in front of the Spin app (${host})`, async (t) => {
      const { alice, bob, first } = await startCall(t, browser, app.gateway);
      // The pages spoke WebSocket to the gateway, not HTTP to the app.
      assert.ok(alice.sent.some((f) => f.frame.type === 'join'), 'join went over the WebSocket');
      await assertCallThroughListedRelays(t, app, alice, bob, first);

      // Leaving reaches the other side through the gateway's long poll.
      await bob.page.click('#leave');
      await alice.page.locator('#participants li[data-participant]').waitFor({ state: 'detached', timeout: 10_000 });
    });

    test(`two browsers talk to the Spin app over the HTTP transport (${host})`, async (t) => {
      const edge = `${app.spin}/v1/http`;
      const { alice, bob, first } = await startCall(t, browser, app.gateway, {
        route: false,
        query: `&edges=${encodeURIComponent(edge)}`,
      });
      // No WebSocket at all: the SDK chose the HTTP transport for an http:// URL.
      assert.deepEqual(alice.sent, [], 'no signaling WebSocket frames');
      const transport = await alice.page.evaluate(() => performance.getEntriesByType('resource')
        .map((e) => e.name).filter((n) => n.includes('/v1/http/')));
      assert.ok(transport.some((n) => n.includes('/v1/http/send')), `no HTTP transport requests: ${transport}`);
      await assertCallThroughListedRelays(t, app, alice, bob, first);

      await bob.page.click('#leave');
      await alice.page.locator('#participants li[data-participant]').waitFor({ state: 'detached', timeout: 10_000 });
    });
  });
}
