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

  /** Restart ICE on the existing servers (e.g. after a signaling outage). */
  restartIce() {
    if (!this.#closed) this.pc.restartIce();
  }

  close() {
    if (this.#closed) return;
    this.#closed = true;
    this.pc.onicecandidate = this.pc.ontrack = this.pc.onconnectionstatechange = this.pc.onnegotiationneeded = null;
    this.pc.close();
  }

  async #offer() {
    if (this.#closed) return;
    try {
      this.#makingOffer = true;
      await this.pc.setLocalDescription();
      const desc = this.pc.localDescription;
      if (desc) this.#o.send({ description: desc.toJSON() });
    } catch (err) {
      this.#o.onError(err);
    } finally {
      this.#makingOffer = false;
    }
  }

  /** @param {any} data */
  async #apply(data) {
    if (this.#closed || !data || typeof data !== 'object') return;
    const pc = this.pc;
    if (data.description) {
      const desc = data.description;
      const collision = desc.type === 'offer' && (this.#makingOffer || pc.signalingState !== 'stable');
      this.#ignoreOffer = !this.#polite && collision;
      if (this.#ignoreOffer) return; // the remote (polite) side will answer ours
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
