// @ts-check
/**
 * One WebSocket to a Tern signaling endpoint, for its whole (short) life.
 *
 * This file knows JSON framing and liveness, nothing about rooms: the client
 * (tern.js) owns the protocol and decides whether to reconnect. A socket is
 * never reused after it closes; the client makes a new one, which keeps the
 * "is this event from the old or the new socket?" question out of the code.
 *
 * Liveness: a TCP connection through a dead NAT or a vanished edge can stay
 * "open" for minutes. We ping every `pingInterval` and, when a pong is late by
 * `pingTimeout`, declare the socket dead ourselves instead of waiting for the
 * browser's close handshake (which would also wait on the dead peer).
 *
 * @module
 */

/**
 * @typedef {object} SocketOptions
 * @property {(frame: any) => void} onFrame   every parsed server frame except `pong`
 * @property {(reason: string) => void} onClose  called exactly once
 * @property {number} [pingInterval]  ms between pings (default 10 000)
 * @property {number} [pingTimeout]   ms to wait for a pong (default 5 000)
 * @property {typeof WebSocket} [WebSocket]  injectable for tests
 */

export class SignalingSocket {
  /** @type {WebSocket} */ #ws;
  /** @type {SocketOptions} */ #opts;
  #closed = false;
  #pingId = 0;
  /** @type {Map<number, number>} ping id → time sent */ #inflight = new Map();
  /** @type {ReturnType<typeof setInterval> | undefined} */ #pingTimer;
  /** Round-trip time of the last ping, in ms (signaling RTT, not media). */
  rtt = /** @type {number | null} */ (null);

  /**
   * @param {string} url
   * @param {SocketOptions} opts
   */
  constructor(url, opts) {
    this.#opts = opts;
    const WS = opts.WebSocket ?? globalThis.WebSocket;
    this.#ws = new WS(url);
    this.#ws.onmessage = (ev) => this.#onMessage(ev);
    this.#ws.onclose = (ev) => this.#finish(`socket closed (${ev.code}${ev.reason ? `: ${ev.reason}` : ''})`);
    // `error` is always followed by `close`; the close carries the outcome.
    this.#ws.onerror = () => {};
  }

  /** Resolves once the socket is open; rejects if it closes first. */
  opened() {
    return new Promise((resolve, reject) => {
      if (this.#ws.readyState === 1) return resolve(undefined);
      if (this.#closed) return reject(new Error('socket closed'));
      this.#ws.addEventListener('open', () => {
        this.#startPings();
        resolve(undefined);
      }, { once: true });
      this.#ws.addEventListener('close', () => reject(new Error('could not connect to signaling')), { once: true });
    });
  }

  get isOpen() {
    return !this.#closed && this.#ws.readyState === 1;
  }

  /**
   * Send one frame. Returns false (and drops it) when the socket is not open,
   * so callers can queue what must survive a reconnect.
   * @param {object} frame
   */
  send(frame) {
    if (!this.isOpen) return false;
    this.#ws.send(JSON.stringify(frame));
    return true;
  }

  /** Close on purpose. `onClose` still runs, once. */
  close(reason = 'closed by client') {
    try { this.#ws.close(1000, reason.slice(0, 100)); } catch { /* already closing */ }
    this.#finish(reason);
  }

  /** @param {MessageEvent} ev */
  #onMessage(ev) {
    if (this.#closed) return;
    let frame;
    try {
      frame = JSON.parse(ev.data);
    } catch {
      return; // The server only sends JSON; ignore anything else rather than die.
    }
    if (!frame || typeof frame.type !== 'string') return;
    if (frame.type === 'pong') {
      const sent = this.#inflight.get(frame.id);
      if (sent !== undefined) this.rtt = Date.now() - sent;
      // Any pong proves the socket alive, so forget all older pings too.
      this.#inflight.clear();
      return;
    }
    this.#opts.onFrame(frame);
  }

  #startPings() {
    const every = this.#opts.pingInterval ?? 10_000;
    const timeout = this.#opts.pingTimeout ?? 5_000;
    let lastSent = Date.now();
    // Tick faster than we ping, so a missing pong is noticed about
    // `pingTimeout` after it was due rather than at the next ping.
    this.#pingTimer = setInterval(() => {
      const now = Date.now();
      for (const sent of this.#inflight.values()) {
        if (now - sent > timeout) {
          this.close('signaling did not answer a ping');
          return;
        }
      }
      if (now - lastSent >= every) {
        lastSent = now;
        const id = ++this.#pingId;
        this.#inflight.set(id, now);
        this.send({ type: 'ping', id });
      }
    }, Math.min(1_000, every, timeout));
  }

  /** @param {string} reason */
  #finish(reason) {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#pingTimer);
    this.#ws.onmessage = this.#ws.onclose = null;
    this.#opts.onClose(reason);
  }
}
