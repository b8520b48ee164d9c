// Where the browser tests find Tern: a running one (TERN_URL) or one they
// start themselves (TERN_BIN, `tern up` on free ports and a fresh data dir).
//
// Everything listens on 127.0.0.1: test traffic stays on loopback.

import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import net from 'node:net';
import dgram from 'node:dgram';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = join(HERE, '..', '..');

/**
 * @returns {Promise<{url: string, stop: () => Promise<void>}>}
 */
export async function startTern() {
  if (process.env.TERN_URL) {
    const url = process.env.TERN_URL.replace(/\/+$/, '');
    await waitHealthy(url, 10_000);
    return { url, stop: async () => {} };
  }

  const bin = process.env.TERN_BIN ?? firstExisting([join(REPO, 'target/release/tern'), join(REPO, 'target/debug/tern')]);
  if (!bin) throw new Error('set TERN_URL (a running tern) or TERN_BIN (path to the tern binary), or build it: cargo build --release -p origin');

  const httpPort = await freeTcpPort();
  // Two local relays take relayPort and relayPort+1 (UDP). Choose free ones
  // rather than the default 3478/3479 so the test can run next to a
  // developer's own `tern up`.
  const relayPort = await freeUdpPortPair();
  const dataDir = await mkdtemp(join(tmpdir(), 'tern-e2e-'));
  const url = `http://127.0.0.1:${httpPort}`;

  const child = spawn(
    bin,
    ['up', '--listen', `127.0.0.1:${httpPort}`, '--data-dir', dataDir, '--relay-port', String(relayPort)],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn' } },
  );
  let output = '';
  const keep = (d) => { output = (output + d).slice(-20_000); };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));

  const stop = async () => {
    // Only the process we started, by its PID. `tern up` takes its relay
    // children down with it (kill_on_drop + parent-death signal).
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(timer);
    }
    await rm(dataDir, { recursive: true, force: true });
  };

  try {
    await Promise.race([
      waitHealthy(url, 60_000),
      exited.then(({ code, signal }) => {
        throw new Error(`tern up exited early (code ${code}, signal ${signal}):\n${output}`);
      }),
    ]);
  } catch (err) {
    await stop();
    throw err;
  }
  return { url, stop };
}

/** Wait until /healthz is ok and at least one relay heartbeats as healthy. */
async function waitHealthy(url, ms) {
  const deadline = Date.now() + ms;
  let last = 'no answer';
  while (Date.now() < deadline) {
    try {
      const res = await fetch(`${url}/healthz`);
      const body = await res.json();
      if (res.ok && body.status === 'ok' && (body.relays_healthy ?? 1) > 0) return body;
      last = `HTTP ${res.status} ${JSON.stringify(body)}`;
    } catch (err) {
      last = String(err.cause ?? err);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`tern at ${url} not healthy after ${ms} ms: ${last}`);
}

function firstExisting(paths) {
  return paths.find((p) => existsSync(p)) ?? null;
}

function freeTcpPort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** A UDP port p on 127.0.0.1 such that p and p+1 are both free right now. */
async function freeUdpPortPair() {
  for (let i = 0; i < 20; i++) {
    const a = await bindUdp(0);
    const p = a.address().port;
    const b = p < 65535 ? await bindUdp(p + 1).catch(() => null) : null;
    a.close();
    b?.close();
    if (b) return p;
  }
  throw new Error('no two consecutive free UDP ports');
}

function bindUdp(port) {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket('udp4');
    s.once('error', reject);
    s.bind(port, '127.0.0.1', () => resolve(s));
  });
}
