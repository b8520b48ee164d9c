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
import { randomBytes } from 'node:crypto';
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

/** A fresh secret as long as every Tern host requires (32 bytes, hex). */
function randomSecret() {
  return randomBytes(32).toString('hex');
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

/**
 * A small multi-edge deployment on loopback: one redis-server, `edges`
 * origins (`tern serve --kv redis://…`, dev tokens on) sharing it, and one
 * relay per region heartbeating to every edge (`--signaling a,b`: one at a
 * time, moving on when one dies). Needs TERN_BIN (or a built tern) and
 * redis-server on PATH.
 *
 * @typedef {object} Cluster
 * @property {string[]} urls    HTTP base URL of each edge
 * @property {string[]} signal  WebSocket signaling URL of each edge
 * @property {(i: number) => number} killEdge  SIGKILL edge i (by the PID we
 *   spawned it with); returns the time it was sent (epoch ms, sub-ms)
 * @property {() => Promise<void>} stop
 * @property {() => string} output  the last ~20 kB of every process's output
 *
 * `delays` puts regions far away: `{ 'region-a': 40 }` starts a `tern-delay`
 * shim (+40 ms each way, so +80 ms RTT) in front of region-a's relay, and
 * the relay advertises the shim's address, so browsers reach the region
 * (and probe it) only through the delay.
 *
 * @param {{edges?: number, regions?: string[], delays?: Record<string, number>}} [opts]
 * @returns {Promise<Cluster>}
 */
export async function startCluster({ edges = 2, regions = ['region-a', 'region-b'], delays = {} } = {}) {
  const bin = process.env.TERN_BIN ?? firstExisting([join(REPO, 'target/release/tern'), join(REPO, 'target/debug/tern')]);
  if (!bin) throw new Error('set TERN_BIN (path to the tern binary) or build it: cargo build --release -p origin');
  const { dir, run, stop, output } = await processGroup('tern-cluster-');
  try {
    const redisPort = await freeTcpPort();
    run('redis', 'redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir]);
    const secrets = { TERN_API_SECRET: randomSecret(), TERN_RELAY_SECRET: randomSecret() };
    const ports = await Promise.all(Array.from({ length: edges }, () => freeTcpPort()));
    const urls = ports.map((p) => `http://127.0.0.1:${p}`);
    // Redis must be up before an edge connects.
    await waitTcp(redisPort, 10_000);
    /** @type {import('node:child_process').ChildProcess[]} */
    const edgeProcs = ports.map((p, i) => run(`edge-${i}`, bin, [
      'serve', '--listen', `127.0.0.1:${p}`, '--edge', `edge-${i}`, '--kv', `redis://127.0.0.1:${redisPort}`,
      '--data-dir', join(dir, `edge-${i}`), '--dev-tokens',
    ], secrets));
    for (const region of regions) {
      const udp = await freeUdpPortPair();
      const advertise = [];
      if (delays[region]) {
        const shim = await freeUdpPortPair();
        run(`delay-${region}`, delayBin(bin), [
          '--listen', `127.0.0.1:${shim}`, '--upstream', `127.0.0.1:${udp}`, '--delay-ms', String(delays[region]),
        ]);
        advertise.push('--advertise', `127.0.0.1:${shim}`);
      }
      run(`relay-${region}`, bin, [
        'relay', '--id', `${region}-1`, '--region', region, '--listen', `127.0.0.1:${udp}`, ...advertise,
        '--signaling', urls.join(','), '--allow-peer', '127.0.0.0/8', '--relay-ports', 'ephemeral',
      ], { TERN_RELAY_SECRET: secrets.TERN_RELAY_SECRET });
    }
    await Promise.all(urls.map((u) => waitHealthy(u, 60_000)));
    // Every relay, not just one, as every edge sees it.
    await Promise.all(urls.map((u) => waitRelaysHealthy(u, regions.length, 30_000)));
    const killed = new Set();
    return {
      urls,
      signal: urls.map((u) => `${u.replace(/^http/, 'ws')}/v1/signal`),
      killEdge: (i) => {
        if (killed.has(i)) throw new Error(`edge ${i} was already killed`);
        killed.add(i);
        const at = performance.timeOrigin + performance.now();
        edgeProcs[i].kill('SIGKILL');
        return at;
      },
      stop,
      output,
    };
  } catch (err) {
    await stop();
    throw new Error(`${err.message}\n${output()}`);
  }
}

/**
 * @typedef {object} Serverless
 * @property {string} spin     the Spin app's base URL; its HTTP transport is `${spin}/v1/http`
 * @property {string} gateway  `tern gateway` in front of it: WebSockets at /v1/signal, the demo,
 *   the SDK and dev tokens
 * @property {() => Promise<void>} stop
 * @property {() => string} output
 */

/**
 * The Spin CLI: SPIN_BIN (relative paths from the repository's root), else
 * `spin` on the PATH. No package registry carries Spin, so without one this
 * throws, saying how to get it.
 */
export function spinBin() {
  if (process.env.SPIN_BIN) {
    const p = process.env.SPIN_BIN.startsWith('/') ? process.env.SPIN_BIN : join(REPO, process.env.SPIN_BIN);
    if (!existsSync(p)) throw new Error(`SPIN_BIN=${process.env.SPIN_BIN} does not exist; point it at a Spin CLI (>= 4.0)`);
    return p;
  }
  const onPath = (process.env.PATH ?? '').split(':').map((d) => join(d, 'spin')).find((p) => existsSync(p));
  if (!onPath) {
    throw new Error('no Spin CLI: install Spin >= 4.0 (or build it from the spinframework/spin repository) and put `spin` on the PATH or set SPIN_BIN');
  }
  return onPath;
}

/**
 * Signaling as a serverless function: Tern's Spin app on the real Spin
 * runtime (`spin up`, its default SQLite store in a fresh state directory)
 * or, with `host: 'tern spin'`, the same artifact hosted by `tern spin`;
 * one relay per region heartbeating into it, and `tern gateway` bridging
 * browser WebSockets to its HTTP transport.
 * @param {{regions?: string[], host?: 'spin up' | 'tern spin'}} [opts]
 * @returns {Promise<Serverless>}
 */
export async function startServerless({ regions = ['region-a', 'region-b'], host = 'spin up' } = {}) {
  const bin = process.env.TERN_BIN ?? firstExisting([join(REPO, 'target/release/tern'), join(REPO, 'target/debug/tern')]);
  if (!bin) throw new Error('set TERN_BIN (path to the tern binary) or build it: cargo build --release -p origin');
  const { dir, run, stop, output } = await processGroup('tern-serverless-');
  try {
    const secrets = { TERN_API_SECRET: randomSecret(), TERN_RELAY_SECRET: randomSecret() };
    const [spinPort, gatewayPort] = [await freeTcpPort(), await freeTcpPort()];
    const spin = `http://127.0.0.1:${spinPort}`;
    const gateway = `http://127.0.0.1:${gatewayPort}`;
    if (host === 'spin up') {
      run('spin', spinBin(), [
        'up', '--from', join(REPO, 'spin.toml'), '--listen', `127.0.0.1:${spinPort}`, '--state-dir', join(dir, 'spin'),
        '--env', `TERN_API_SECRET=${secrets.TERN_API_SECRET}`, '--env', `TERN_RELAY_SECRET=${secrets.TERN_RELAY_SECRET}`,
      ], {}, REPO);
    } else {
      run('spin', bin, [
        'spin', '--manifest', join(REPO, 'spin.toml'), '--listen', `127.0.0.1:${spinPort}`,
        '--data-dir', join(dir, 'spin'),
      ], secrets);
    }
    run('gateway', bin, [
      'gateway', '--listen', `127.0.0.1:${gatewayPort}`, '--upstream', `${spin}/v1/http`, '--dev-tokens',
    ], { TERN_API_SECRET: secrets.TERN_API_SECRET });
    for (const region of regions) {
      const udp = await freeUdpPortPair();
      run(`relay-${region}`, bin, [
        'relay', '--id', `${region}-1`, '--region', region, '--listen', `127.0.0.1:${udp}`,
        '--signaling', spin, '--allow-peer', '127.0.0.0/8', '--relay-ports', 'ephemeral',
      ], { TERN_RELAY_SECRET: secrets.TERN_RELAY_SECRET });
    }
    await waitHealthy(spin, 60_000);
    await waitHealthy(gateway, 30_000);
    await waitRelaysHealthy(spin, regions.length, 30_000);
    return { spin, gateway, stop, output };
  } catch (err) {
    await stop();
    throw new Error(`${err.message}\n${output()}`);
  }
}

/**
 * @typedef {object} Worker
 * @property {string} worker  the Worker under `wrangler dev --local` (WebSocket at
 *   /v1/signal?room=R, relay directory at /v1/relays)
 * @property {string} page    an origin serving the demo, the SDK and dev tokens signed with the
 *   Worker's API secret (what an app's own server does); it hosts no calls
 * @property {() => Promise<void>} stop
 * @property {() => string} output
 */

/**
 * Signaling as a Cloudflare Worker: `wrangler dev --local` (the repository's
 * wrangler.toml, fresh Durable Object state), one relay per region
 * heartbeating into it, and a page server for the demo.
 * @param {{regions?: string[]}} [opts]
 * @returns {Promise<Worker>}
 */
export async function startWorker({ regions = ['region-a', 'region-b'] } = {}) {
  const bin = process.env.TERN_BIN ?? firstExisting([join(REPO, 'target/release/tern'), join(REPO, 'target/debug/tern')]);
  if (!bin) throw new Error('set TERN_BIN (path to the tern binary) or build it: cargo build --release -p origin');
  const wrangler = join(REPO, 'node_modules/.bin/wrangler');
  if (!existsSync(wrangler)) throw new Error('wrangler is not installed: npm ci at the repository top level (./dev test does)');
  const { dir, run, stop, output } = await processGroup('tern-worker-');
  try {
    const secrets = { TERN_API_SECRET: randomSecret(), TERN_RELAY_SECRET: randomSecret() };
    const [workerPort, inspectorPort, pagePort] = [await freeTcpPort(), await freeTcpPort(), await freeTcpPort()];
    const worker = `http://127.0.0.1:${workerPort}`;
    const page = `http://127.0.0.1:${pagePort}`;
    // tests/wrangler-dev.sh: builds the Worker as wrangler.toml says, then
    // serves it without wrangler's second build (the script says why).
    run('wrangler', join(REPO, 'tests/wrangler-dev.sh'), [
      join(dir, 'config'), '--local', '--ip', '127.0.0.1', '--port', String(workerPort), '--inspector-port', String(inspectorPort),
      '--persist-to', join(dir, 'state'), '--show-interactive-dev-session=false',
      '--var', `TERN_API_SECRET:${secrets.TERN_API_SECRET}`, '--var', `TERN_RELAY_SECRET:${secrets.TERN_RELAY_SECRET}`,
    ], { CLOUDFLARE_CF_FETCH_ENABLED: 'false', WRANGLER_SEND_METRICS: 'false' }, REPO);
    run('page', bin, [
      'serve', '--listen', `127.0.0.1:${pagePort}`, '--edge', 'page', '--data-dir', join(dir, 'page'), '--dev-tokens',
    ], secrets);
    for (const region of regions) {
      const udp = await freeUdpPortPair();
      run(`relay-${region}`, bin, [
        'relay', '--id', `${region}-1`, '--region', region, '--listen', `127.0.0.1:${udp}`,
        '--signaling', worker, '--allow-peer', '127.0.0.0/8', '--relay-ports', 'ephemeral',
      ], { TERN_RELAY_SECRET: secrets.TERN_RELAY_SECRET });
    }
    // Relays retry their heartbeats until the Worker is up; its build
    // (worker-build, release) can take minutes cold.
    await waitRelaysHealthy(worker, regions.length, 900_000);
    await waitPage(`${page}/demo/`, 60_000);
    return { worker, page, stop, output };
  } catch (err) {
    await stop();
    throw new Error(`${err.message}\n${output()}`);
  }
}

/**
 * Processes a test starts, with their output kept for failure messages, and
 * a scratch directory; `stop` ends exactly those processes (by PID) and
 * removes the directory.
 * @param {string} prefix
 */
async function processGroup(prefix) {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  let output = '';
  /** @type {import('node:child_process').ChildProcess[]} */
  const procs = [];
  const run = (name, cmd, args, env = {}, cwd = undefined) => {
    // Its own process group (wrangler starts workerd and the build as
    // children), so stop() ends everything it started and nothing else.
    const child = spawn(cmd, args, {
      cwd, detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn', ...env },
    });
    const keep = (d) => { output = (output + `[${name}] ${d}`).slice(-20_000); };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    procs.push(child);
    return child;
  };
  const signalGroup = (c, sig) => {
    try { process.kill(-c.pid, sig); } catch { /* already gone */ }
  };
  const stop = async () => {
    await Promise.all(procs.map((c) => {
      if (c.exitCode !== null || c.signalCode !== null) {
        signalGroup(c, 'SIGKILL'); // children it may have left behind
        return null;
      }
      const exited = new Promise((r) => c.once('exit', r));
      signalGroup(c, 'SIGTERM');
      const timer = setTimeout(() => signalGroup(c, 'SIGKILL'), 5_000);
      return exited.then(() => {
        clearTimeout(timer);
        signalGroup(c, 'SIGKILL');
      });
    }));
    await rm(dir, { recursive: true, force: true });
  };
  return { dir, run, stop, output: () => output };
}

/** Wait until `url` answers 200. */
async function waitPage(url, ms) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    try {
      if ((await fetch(url)).ok) return;
    } catch { /* not up yet */ }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${url} never answered`);
}

/** Wait until the edge at `url` lists `n` healthy relays. */
export async function waitRelaysHealthy(url, n, ms) {
  const deadline = Date.now() + ms;
  let last = '';
  while (Date.now() < deadline) {
    try {
      const dir = await (await fetch(`${url}/v1/relays`)).json();
      const list = Array.isArray(dir) ? dir : dir.relays ?? [];
      if (list.filter((r) => r.healthy).length >= n) return;
      last = JSON.stringify(list.map((r) => [r.id, r.healthy, r.failing ?? null]));
    } catch (err) {
      last = String(err);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${url}: fewer than ${n} healthy relays after ${ms} ms: ${last}`);
}

/** tern-delay (tools/drill): next to the tern binary, else in the target dirs. */
function delayBin(ternBin) {
  const bin = process.env.TERN_DELAY_BIN ?? firstExisting([
    join(dirname(ternBin), 'tern-delay'), join(REPO, 'target/release/tern-delay'), join(REPO, 'target/debug/tern-delay'),
  ]);
  if (!bin) throw new Error('tern-delay not built: cargo build -p tern-tests --bin tern-delay');
  return bin;
}

/** Wait until something accepts TCP connections on 127.0.0.1:port. */
async function waitTcp(port, ms) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const ok = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => { s.destroy(); resolve(true); });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nothing listening on 127.0.0.1:${port} after ${ms} ms`);
}
