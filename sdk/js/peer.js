// @ts-check
/**
 * One link between this participant and one remote participant: an
 * RTCPeerConnection plus the negotiation rules that keep two browsers from
 * talking over each other.
 *
 * Roles follow the protocol's "newcomer offers" rule: the newcomer makes the
 * first offer and is *impolite*; the participant already in the room answers
 * and is *polite*. Later renegotiations — ICE restarts after a `reroute` can
 * start on both sides at the same moment — use the W3C "perfect negotiation"
 * pattern with those same roles, so a collision resolves itself (the polite
 * side rolls back and answers) instead of wedging both connections.
 *
 * Signal payloads (opaque to the server, carried in `signal.data`):
 *   `{ description: {type, sdp} }`  an offer or answer
 *   `{ candidate: RTCIceCandidateInit }`  a trickled ICE candidate
 *
 * @module
 */

/**
 * @typedef {object} PeerOptions
 * @property {string} participant   remote participant id
 * @property {string} [identity]    remote identity (display name)
 * @property {boolean} offerer      true when we are the newcomer
 * @property {RTCConfiguration} config
 * @property {MediaStream | null} localStream
 * @property {(data: object) => void} send   deliver a signal payload to the remote
 * @property {(stream: MediaStream, track: MediaStreamTrack) => void} onTrack
 * @property {(state: RTCPeerConnectionState) => void} onStateChange
 * @property {(err: unknown) => void} onError
 * @property {typeof RTCPeerConnection} [RTCPeerConnection]  injectable for tests
 */

/**
 * Offers can be lost. Signaling refuses a `signal` to a participant whose
 * socket is away (`unknown_peer`, which does not say which signal it
 * refused), so an ICE restart offered while the other side was reconnecting —
 * typical in a failover, where a relay and an edge can go at once — is simply
 * gone, and its sender waits in have-local-offer. Two remedies:
 *
 * - the impolite side, getting an offer while its own is older than
 *   OFFER_STALE_MS, still ignores it (it never yields: yielding while its own
 *   offer is merely slow would leave the two sides with crossed ICE
 *   credentials) but re-sends its own at once; the polite side rolls back
 *   and answers it. This is what un-wedges a call within one round trip once
 *   the other side resumes and restarts ICE itself;
 * - any offer still unanswered after OFFER_RESEND_MS is re-sent (then 2×, 4×…,
 *   OFFER_RESENDS times), for when the other side has nothing to offer.
 *
 * A duplicate offer is harmless: a peer that already answered it answers
 * again with the same ICE credentials, and an answer that arrives in
 * `stable` is dropped. A normal answer takes one signaling round trip (tens
 * of ms), far below both figures.
 */
const OFFER_STALE_MS = 500;
const OFFER_RESEND_MS = 2_000;
const OFFER_RESENDS = 4;

export class Peer {
  /** @type {RTCPeerConnection} */ pc;
  /** @type {MediaStream | null} */ remoteStream = null;
  #o;
  #polite;
  #makingOffer = false;
  #ignoreOffer = false;
  #tracksAdded = false;
  /** Candidates that arrived before the description they belong to. */
  /** @type {RTCIceCandidateInit[]} */ #pending = [];
  /** Signals are applied one at a time, in arrival order. */
  #queue = Promise.resolve();
  #closed = false;
  /** When our outstanding offer was last sent (performance.now()), 0 if none. */
  #offerSentAt = 0;
  /** Offers made so far: tells a resend timer whether its offer is still the current one. */
  #offers = 0;
  /** @type {ReturnType<typeof setTimeout> | undefined} */ #resendTimer;

  /** @param {PeerOptions} o */
  constructor(o) {
    this.#o = o;
    this.participant = o.participant;
    this.identity = o.identity ?? '';
    this.#polite = !o.offerer;
    const PC = o.RTCPeerConnection ?? globalThis.RTCPeerConnection;
    const pc = (this.pc = new PC(o.config));

    pc.onicecandidate = ({ candidate }) => {
      // The end-of-candidates marker (null) is not sent: trickle ICE works
      // without it and it would only cost a frame per peer.
      if (candidate) o.send({ candidate: candidate.toJSON() });
    };
    pc.ontrack = ({ track, streams }) => {
      let stream = streams[0];
      if (!stream) {
        stream = this.remoteStream ?? new MediaStream();
        stream.addTrack(track);
      }
      this.remoteStream = stream;
      o.onTrack(stream, track);
    };
    pc.onconnectionstatechange = () => {
      o.onStateChange(pc.connectionState);
      // A failed path (relay gone, NAT rebinding) can often be saved by an
      // ICE restart. Only the impolite side starts one, so the two sides do
      // not restart twice for the same failure.
      if (pc.connectionState === 'failed' && !this.#polite) pc.restartIce();
    };
    pc.onnegotiationneeded = () => this.#offer();

    // The newcomer adds its media now, which fires negotiationneeded and so
    // the first offer. The answerer waits for that offer and attaches its
    // media to the transceiver the offer creates (see #addLocalMedia): adding
    // it earlier would make the answerer offer too, a needless collision.
    if (o.offerer) this.#addLocalMedia();
  }

  get connectionState() {
    return this.pc.connectionState;
  }

  /**
   * Apply a signal payload from the remote participant.
   * @param {any} data
   */
  handleSignal(data) {
    this.#queue = this.#queue
      .then(() => this.#apply(data))
      .catch((err) => this.#o.onError(err));
    return this.#queue;
  }

  /**
   * Move this link to other TURN servers (a `reroute`): new servers apply to
   * the next gathering, and restartIce() makes that gathering happen now.
   * DTLS and SRTP keys survive an ICE restart, so the call is not re-keyed.
   * @param {RTCIceServer[]} iceServers
   */
  reroute(iceServers) {
    if (this.#closed) return;
    const config = this.pc.getConfiguration();
    config.iceServers = iceServers;
    this.pc.setConfiguration(config);
    this.pc.restartIce();
  }

  /**
   * Signaling refused one of our signals (`unknown_peer`: the recipient was
   * away). The error does not say which signal or to whom, so every link
   * takes it as "my pending offer may be lost": the next offer that collides
   * with it makes us re-send ours at once instead of after OFFER_STALE_MS.
   * A wrong guess costs one duplicate offer, which is harmless.
   */
  signalRefused() {
    this.#offerSentAt = -Infinity;
  }

  /** Restart ICE on the existing servers (e.g. after a signaling outage). */
  restartIce() {
    if (!this.#closed) this.pc.restartIce();
  }

  close() {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#resendTimer);
    this.pc.onicecandidate = this.pc.ontrack = this.pc.onconnectionstatechange = this.pc.onnegotiationneeded = null;
    this.pc.close();
  }

  async #offer() {
    if (this.#closed) return;
    try {
      this.#makingOffer = true;
      await this.pc.setLocalDescription();
      const desc = this.pc.localDescription;
      if (desc && desc.type === 'offer') {
        this.#o.send({ description: desc.toJSON() });
        this.#offerSentAt = performance.now();
        this.#scheduleResend(++this.#offers, 0);
      }
    } catch (err) {
      this.#o.onError(err);
    } finally {
      this.#makingOffer = false;
    }
  }

  /**
   * If offer number `n` is still unanswered after a while, send it again:
   * it was probably refused because the other side was away (see
   * OFFER_STALE_MS). Without this, an impolite side whose restart offer was
   * lost waits in have-local-offer forever and ignores every offer the other
   * side makes: the link never recovers. Re-sending the *same* offer is safe:
   * a peer that already answered it answers again, and a second answer in
   * `stable` is dropped in #apply. (The offer is identified by number, not
   * by its SDP: localDescription grows a=candidate lines as gathering goes
   * on, and re-sending it with them is all the better.)
   * @param {number} n
   * @param {number} attempt
   */
  #scheduleResend(n, attempt) {
    clearTimeout(this.#resendTimer);
    if (attempt >= OFFER_RESENDS) return;
    this.#resendTimer = setTimeout(() => {
      if (n === this.#offers && this.#resendOffer()) this.#scheduleResend(n, attempt + 1);
    }, OFFER_RESEND_MS * 2 ** attempt);
  }

  /** Send our pending offer again (with the candidates gathered since). */
  #resendOffer() {
    const desc = this.pc.localDescription;
    if (this.#closed || this.pc.signalingState !== 'have-local-offer' || desc?.type !== 'offer') return false;
    this.#o.send({ description: desc.toJSON() });
    this.#offerSentAt = performance.now();
    return true;
  }

  /** @param {any} data */
  async #apply(data) {
    if (this.#closed || !data || typeof data !== 'object') return;
    const pc = this.pc;
    if (data.description) {
      const desc = data.description;
      // An answer while stable answers an offer we re-sent (#scheduleResend)
      // and already have an answer for: nothing to do.
      if (desc.type === 'answer' && pc.signalingState === 'stable') return;
      const collision = desc.type === 'offer' && (this.#makingOffer || pc.signalingState !== 'stable');
      this.#ignoreOffer = !this.#polite && collision;
      if (this.#ignoreOffer) {
        // The remote (polite) side will answer ours — if it ever got it. An
        // offer of theirs long after ours suggests ours was lost while they
        // were away (see OFFER_STALE_MS): send it again now.
        if (!this.#makingOffer && performance.now() - this.#offerSentAt > OFFER_STALE_MS) this.#resendOffer();
        return;
      }
      // For the polite side this implicitly rolls back its own offer.
      await pc.setRemoteDescription(desc);
      if (desc.type === 'offer') {
        this.#addLocalMedia();
        await pc.setLocalDescription();
        const answer = pc.localDescription;
        if (answer) this.#o.send({ description: answer.toJSON() });
      }
      const pending = this.#pending.splice(0);
      for (const c of pending) await this.#addCandidate(c);
    } else if (data.candidate) {
      if (!pc.remoteDescription) this.#pending.push(data.candidate);
      else await this.#addCandidate(data.candidate);
    }
  }

  /** @param {RTCIceCandidateInit} c */
  async #addCandidate(c) {
    try {
      await this.pc.addIceCandidate(c);
    } catch (err) {
      // Candidates for an offer we chose to ignore are expected to fail.
      if (!this.#ignoreOffer) throw err;
    }
  }

  /**
   * Attach local audio once. On the answering side this runs after the remote
   * offer is applied, so addTrack reuses the audio transceiver that offer
   * created and the answer becomes sendrecv without another round trip.
   */
  #addLocalMedia() {
    if (this.#tracksAdded) return;
    this.#tracksAdded = true;
    const stream = this.#o.localStream;
    const tracks = stream ? stream.getAudioTracks() : [];
    if (tracks.length && stream) {
      for (const t of tracks) this.pc.addTrack(t, stream);
    } else if (!this.#polite) {
      // No microphone: still offer to receive audio, or there is nothing
      // to negotiate and the remote side's audio would never flow.
      this.pc.addTransceiver('audio', { direction: 'recvonly' });
    }
  }
}
