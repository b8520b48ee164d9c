// The browser demo against the Cloudflare Worker under `wrangler dev --local`:
// two Chromium pages open the demo (served, with dev tokens, by an origin
// standing in for the app's own server) pointed at the Worker's WebSocket
// (`?edges=ws://…/v1/signal`), join one room through its Durable Object and
// talk through a relay the Worker's directory lists.
//
//   npm ci && TERN_BIN=target/release/tern node --test tests/browser/worker.test.mjs

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';
import { startWorker } from './tern-process.mjs';
import { CHROMIUM, CHROMIUM_ARGS, startCall, assertNoPageErrors, linkStats, relayOf, sleep } from './helpers.mjs';

/** @type {import('./tern-process.mjs').Worker} */
let cf;
/** @type {import('playwright-core').Browser} */
let browser;

before(async () => {
  cf = await startWorker();
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
}, { timeout: 960_000 });

after(async () => {
  await browser?.close();
  await cf?.stop();
});

test('two browsers talk through the Cloudflare Worker (wrangler dev)', async (t) => {
  const edge = `${cf.worker.replace(/^http/, 'ws')}/v1/signal`;
  const { alice, bob, first } = await startCall(t, browser, cf.page, { query: `&edges=${encodeURIComponent(edge)}` });
  // The signaling socket went to the Worker, naming the room.
  const sockets = alice.sockets.map((s) => s.ws.url());
  assert.ok(sockets.some((u) => u.startsWith(edge) && u.includes('room=')), `sockets: ${sockets}`);

  await sleep(1_000);
  const relays = await (await fetch(`${cf.worker}/v1/relays`)).json();
  for (const [p, before] of [[alice, first.a], [bob, first.b]]) {
    const s = await linkStats(p.page);
    assert.ok(s.packetsReceived > before.packetsReceived, `${p.name} stopped receiving`);
    const relay = relayOf(relays, s);
    assert.ok(relay, `${p.name}'s relay candidate ${s.address} is not in the Worker's directory: ${JSON.stringify(relays)}`);
    const shown = (await p.page.locator('#relay-id').textContent())?.trim();
    assert.equal(shown, relay.id);
    t.diagnostic(`${p.name}: ${s.packetsReceived} packets in via ${relay.id} (${relay.region})`);
  }

  await bob.page.click('#leave');
  await alice.page.locator('#participants li[data-participant]').waitFor({ state: 'detached', timeout: 10_000 });
  assertNoPageErrors(alice, bob);
});
