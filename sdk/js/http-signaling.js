// @ts-check
/**
 * Protocol v1 over plain HTTP, for signaling hosts that cannot accept
 * WebSockets (Fermyon Spin). Same interface as `SignalingSocket`, so the
 * client (tern.js) does not care which one it holds.
 *
 * The server keeps this connection's frames in a mailbox in its store until
 * we acknowledge them (docs/protocol.md, "HTTP transport"): every answer
 * carries the frames after the `ack` we sent, numbered, ending at `last`.
 * Sends and the long poll run concurrently and their answers may overlap,
 * so a frame is handled only if its number is past the last one handled.
 *
 * Liveness: the long poll is the heartbeat. A poll that does not come back
 * within the server's `poll_ms` plus `pingTimeout`, a failed request or a 404
 * (the server forgot us) ends the connection, like a dead socket; the client
 * then connects again and resumes its session.
 *
 * @module
 */

/**
 * @typedef {object} HttpSocketOptions
 * @property {(frame: any) => void} onFrame   every parsed server frame except `pong`
 * @property {(reason: string) => void} onClose  called exactly once
 * @property {number} [pingTimeout]  ms a request may be late before the connection counts as dead (default 5 000)
 * @property {typeof fetch} [fetch]  injectable for tests
 */

export class HttpSignalingSocket {
  /** Transport base, e.g. `https://h/v1/http`. */ #base;
  /** @type {HttpSocketOptions} */ #opts;
  /** @type {typeof fetch} */ #fetch;
  /** @type {string | null} */ #conn = null;
  #pollMs = 20_000;
  /** Sequence number of the last frame handled (what we acknowledge). */ #ack = 0;
  #closed = false;
  /** @type {Promise<void>} */ #connected;
  /** Sends go out one at a time, in order: the server handles them in arrival order. */
  /** @type {Promise<void>} */ #sending = Promise.resolve();
  /** @type {AbortController} */ #abort = new AbortController();
  /** Round-trip time of the last send, in ms (signaling RTT, not media). */
  rtt = /** @type {number | null} */ (null);

  /**
   * @param {string} url  the transport base (`http(s)://host/v1/http`)
   * @param {HttpSocketOptions} opts
   */
  constructor(url, opts) {
    this.#base = url.replace(/\/+$/, '');
    this.#opts = opts;
    this.#fetch = opts.fetch ?? globalThis.fetch.bind(globalThis);
    this.#connected = this.#connect();
    // The outcome reaches the client through opened(); never unhandled.
    this.#connected.catch(() => {});
  }

  /** Resolves once the server gave us a connection; rejects if that fails. */
  async opened() {
    try {
      await this.#connected;
    } catch {
      this.#finish('could not connect to signaling');
      throw new Error('could not connect to signaling');
    }
    if (this.#closed) throw new Error('connection closed');
  }

  get isOpen() {
    return !this.#closed && this.#conn !== null;
  }

  /**
   * Send one frame. Returns false (and drops it) when the connection is not
   * open, so callers can queue what must survive a reconnect.
   * @param {object} frame
   */
  send(frame) {
    if (!this.isOpen) return false;
    const body = JSON.stringify(frame);
    this.#sending = this.#sending.then(() => this.#send(body));
    return true;
  }

  /** Close on purpose. `onClose` still runs, once. */
  close(reason = 'closed by client') {
    if (this.#conn && !this.#closed) {
      // Tell the server now rather than letting the connection idle out, so
      // peers see us away at once. `keepalive` lets it outlive a closing page.
      this.#fetch(this.#url('close'), { method: 'POST', keepalive: true }).catch(() => {});
    }
    this.#finish(reason);
  }

  /** @param {string} what */
  #url(what, ack = false) {
    const q = new URLSearchParams({ conn: this.#conn ?? '' });
    if (ack) q.set('ack', String(this.#ack));
    return `${this.#base}/${what}?${q}`;
  }

  async #connect() {
    const res = await this.#request(`${this.#base}/connect`, { method: 'POST' }, this.#timeout());
    if (!res.ok) throw new Error(`connect answered ${res.status}`);
    const body = await res.json();
    if (typeof body?.conn !== 'string') throw new Error('connect answered without a connection');
    this.#conn = body.conn;
    if (Number.isFinite(body.poll_ms) && body.poll_ms > 0) this.#pollMs = body.poll_ms;
    this.#poll();
  }

  /** @param {string} body */
  async #send(body) {
    if (this.#closed) return;
    const started = Date.now();
    try {
      const res = await this.#request(
        this.#url('send', true),
        // text/plain keeps it a "simple" request: no CORS preflight round trip.
        { method: 'POST', body, headers: { 'content-type': 'text/plain' } },
        this.#timeout(),
      );
      this.rtt = Date.now() - started;
      await this.#take(res);
    } catch (err) {
      this.#finish(`signaling send failed: ${/** @type {Error} */ (err).message}`);
    }
  }

  async #poll() {
    while (!this.#closed) {
      try {
        const res = await this.#request(this.#url('poll', true), {}, this.#pollMs + this.#timeout());
        await this.#take(res);
      } catch (err) {
        this.#finish(`signaling poll failed: ${/** @type {Error} */ (err).message}`);
      }
    }
  }

  #timeout() {
    return this.#opts.pingTimeout ?? 5_000;
  }

  /**
   * fetch with a deadline; aborted too when the connection closes.
   * @param {string} url
   * @param {RequestInit} init
   * @param {number} ms
   */
  async #request(url, init, ms) {
    const signal = AbortSignal.any([this.#abort.signal, AbortSignal.timeout(ms)]);
    return this.#fetch(url, { ...init, signal });
  }

  /**
   * Handle an answer's frames in order, skipping those already handled.
   * @param {Response} res
   */
  async #take(res) {
    if (res.status === 404) {
      this.#finish('signaling forgot this connection');
      return;
    }
    if (!res.ok) throw new Error(`answered ${res.status}`);
    const body = await res.json();
    const frames = Array.isArray(body?.frames) ? body.frames : [];
    const last = Number(body?.last);
    if (!Number.isSafeInteger(last)) throw new Error('answer without `last`');
    const first = last - frames.length + 1;
    for (let i = 0; i < frames.length; i++) {
      const seq = first + i;
      if (seq <= this.#ack) continue;
      this.#ack = seq;
      if (this.#closed) return;
      const frame = frames[i];
      if (!frame || typeof frame.type !== 'string' || frame.type === 'pong') continue;
      this.#opts.onFrame(frame);
    }
  }

  /** @param {string} reason */
  #finish(reason) {
    if (this.#closed) return;
    this.#closed = true;
    this.#abort.abort();
    this.#opts.onClose(reason);
  }
}
