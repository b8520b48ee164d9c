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
 * A relay process that `tern up` started, as its stdout announces it:
 * `  relay:      local-a-1 region=local-a turn=127.0.0.1:3478 pid=12345`.
 * @typedef {{id: string, region: string, turn: string, pid: number}} RelayProcess
 */

/**
 * @typedef {object} Tern
 * @property {string} url  HTTP base URL (signaling is `/v1/signal` under it)
 * @property {() => Promise<void>} stop
 * @property {RelayProcess[] | null} relays  the local relays and their PIDs;
 *   null when the test did not start Tern itself (TERN_URL): it then has no
 *   business killing anything
 * @property {(id: string, signal?: NodeJS.Signals) => number} killRelay
 *   signal one relay by the PID `tern up` printed (default SIGKILL: no drain,
 *   no goodbye heartbeat, as if its machine vanished); returns the time it
 *   was sent, in ms since the epoch with sub-ms precision
 *   (`performance.timeOrigin + performance.now()`, the same clock pages use)
 * @property {(id: string, signal: NodeJS.Signals) => void} signalRelay
 *   send a non-fatal signal (SIGSTOP to freeze a relay, SIGCONT to thaw it)
 *   to one relay by its PID; refused once killRelay has been used on it
 * @property {() => string} output  the last ~20 kB of `tern up`'s stdout and
 *   stderr (for failure messages); empty with TERN_URL
 */

/** @returns {Promise<Tern>} */
export async function startTern() {
  if (process.env.TERN_URL) {
    const url = process.env.TERN_URL.replace(/\/+$/, '');
    await waitHealthy(url, 10_000);
    return {
      url,
      stop: async () => {},
      relays: null,
      output: () => '',
      killRelay: () => { throw new Error('relays can only be killed when the test started tern (TERN_BIN)'); },
      signalRelay: () => { throw new Error('relays can only be signalled when the test started tern (TERN_BIN)'); },
    };
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

  /** @type {RelayProcess[]} */
  const relays = [];
  let announced = false; // `tern up` prints its relays, then the `data:` line
  let stdoutLine = '';
  child.stdout.on('data', (d) => {
    stdoutLine += d;
    let nl;
    while ((nl = stdoutLine.indexOf('\n')) >= 0) {
      const line = stdoutLine.slice(0, nl);
      stdoutLine = stdoutLine.slice(nl + 1);
      const m = /^\s*relay:\s+(\S+)\s+region=(\S+)\s+turn=(\S+)\s+pid=(\d+)\s*$/.exec(line);
      if (m) relays.push({ id: m[1], region: m[2], turn: m[3], pid: Number(m[4]) });
      if (/^\s*data:/.test(line)) announced = true;
    }
  });
  /** Relays this test killed: never signal a PID twice (it could be reused). */
  const killed = new Set();
  const killRelay = (id, signal = 'SIGKILL') => {
    const r = relays.find((x) => x.id === id);
    if (!r) throw new Error(`no relay ${id} among ${relays.map((x) => x.id).join(', ')}`);
    if (killed.has(id)) throw new Error(`relay ${id} was already killed`);
    if (!r.pid) throw new Error(`tern up printed no PID for relay ${id}`);
    killed.add(id);
    const at = performance.timeOrigin + performance.now();
    process.kill(r.pid, signal);
    return at;
  };

  const signalRelay = (id, signal) => {
    const r = relays.find((x) => x.id === id);
    if (!r?.pid) throw new Error(`no relay ${id} with a PID among ${relays.map((x) => x.id).join(', ')}`);
    if (killed.has(id)) throw new Error(`relay ${id} was already killed`);
    process.kill(r.pid, signal);
  };

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
    // The relay lines come before the server answers, but be sure.
    const deadline = Date.now() + 5_000;
    while (!announced && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    if (!announced) throw new Error(`tern up did not announce its relays:\n${output}`);
  } catch (err) {
    await stop();
    throw err;
  }
  return { url, stop, relays, killRelay, signalRelay, output: () => output };
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
