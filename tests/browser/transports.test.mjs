// Real-browser e2e over TURN/TCP and TURN/TLS: the same two-Chromium call as
// e2e.test.mjs, but each page only gets the `turn:…?transport=tcp` (or
// `turns:…?transport=tcp`) URLs from signaling, so the only way media can
// flow is over a TCP (TLS) connection to the relay.
//
// The filtering happens on the signaling socket (Playwright routes it): the
// `joined` / `reroute` frames' iceServers lose every other URL. `tern up`
// gives its relays a self-signed certificate, hence
// `--ignore-certificate-errors` for this browser only.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';
import { startTern } from './tern-process.mjs';
import {
  CHROMIUM, CHROMIUM_ARGS, MEDIA_TIMEOUT_MS, assertNoPageErrors, diagnostics, join, linkStats, relayOf, sleep, waitFor,
} from './helpers.mjs';

let tern;
let browser;

before(async () => {
  tern = await startTern();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [...CHROMIUM_ARGS, '--ignore-certificate-errors'],
  });
});

after(async () => {
  await browser?.close();
  await tern?.stop();
});

/** Which iceServers URLs a variant keeps. */
const KEEP = {
  tcp: (u) => u.startsWith('turn:') && u.includes('transport=tcp'),
  tls: (u) => u.startsWith('turns:'),
};

for (const transport of ['tcp', 'tls']) {
  test(`two browsers talk through a Tern relay over TURN/${transport.toUpperCase()}`, async (t) => {
    const relays = await (await fetch(`${tern.url}/v1/relays`)).json();
    const offered = relays.flatMap((r) => (r.listeners ?? []).map((l) => l.transport));
    assert.ok(offered.includes(transport), `relays list no ${transport} listener: ${JSON.stringify(relays)}`);

    const room = `e2e-${transport}-${Math.random().toString(36).slice(2, 10)}`;
    const alice = await openFiltered(transport, 'alice', room);
    const bob = await openFiltered(transport, 'bob', room);
    t.after(async () => {
      for (const p of [alice, bob]) await p.page.context().close().catch(() => {});
    });
    await join(alice);
    await join(bob);
    assert.ok(alice.kept.length > 0 && alice.kept.every(KEEP[transport]), `alice got ${JSON.stringify(alice.kept)}`);

    const first = await waitFor(async () => {
      const a = await linkStats(alice.page);
      const b = await linkStats(bob.page);
      const ok = (s) => s && s.packetsReceived > 50 && s.localType === 'relay' && s.relayProtocol === transport;
      return ok(a) && ok(b) ? { a, b } : null;
    }, MEDIA_TIMEOUT_MS, () => diagnostics(alice, bob));

    // It is one of Tern's relays, reached through the listener we kept.
    for (const s of [first.a, first.b]) {
      assert.ok(relayOf(relays, s), `candidate ${s.url} is not a listed relay`);
      assert.ok(KEEP[transport](s.url ?? ''), `candidate url ${s.url}`);
    }
    // ...and audio keeps flowing.
    await sleep(1_500);
    const a2 = await linkStats(alice.page);
    const b2 = await linkStats(bob.page);
    assert.ok(a2.packetsReceived > first.a.packetsReceived, 'alice stopped receiving');
    assert.ok(b2.packetsReceived > first.b.packetsReceived, 'bob stopped receiving');
    t.diagnostic(`${transport}: alice via ${a2.url} (${a2.packetsReceived} in), bob via ${b2.url} (${b2.packetsReceived} in)`);
    assertNoPageErrors(alice, bob);
  });
}

/**
 * The demo in its own browser context, with the signaling socket routed so
 * that every iceServers list the server sends keeps only `transport` URLs.
 */
async function openFiltered(transport, name, room) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const p = { name, page, errors: [], log: [], kept: [] };
  page.on('pageerror', (e) => p.errors.push(String(e)));
  page.on('console', (m) => p.log.push(`[${m.type()}] ${m.text()}`));
  await context.routeWebSocket(/\/v1\/signal(\?[^/]*)?$/, (ws) => {
    const server = ws.connectToServer();
    // Setting a handler stops automatic server→page forwarding; page→server
    // still forwards as is.
    server.onMessage((message) => {
      if (typeof message !== 'string') return ws.send(message);
      let frame;
      try { frame = JSON.parse(message); } catch { return ws.send(message); }
      const filter = (servers) => servers
        .map((s) => ({ ...s, urls: [].concat(s.urls).filter(KEEP[transport]) }))
        .filter((s) => s.urls.length > 0);
      if (Array.isArray(frame.iceServers)) {
        frame.iceServers = filter(frame.iceServers);
        p.kept = frame.iceServers.flatMap((s) => s.urls);
      }
      if (frame.standby && Array.isArray(frame.standby.iceServers)) {
        frame.standby.iceServers = filter(frame.standby.iceServers);
      }
      ws.send(JSON.stringify(frame));
    });
  });
  await page.goto(`${tern.url}/demo/?room=${encodeURIComponent(room)}&name=${name}`);
  return p;
}
