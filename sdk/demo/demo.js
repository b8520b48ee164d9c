// @ts-check
/**
 * The Tern demo page: a thin UI over the SDK. Everything call-related goes
 * through TernClient; this file only renders what it reports.
 *
 * Tokens come from `GET /v1/dev/token`, which exists only under `tern up`.
 * A real app mints room tokens on its own server with its API secret.
 */

import { TernClient } from '/sdk/tern.js';

/** @param {string} id */
const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));
const form = /** @type {HTMLFormElement} */ ($('join-form'));
const roomInput = /** @type {HTMLInputElement} */ ($('room'));
const nameInput = /** @type {HTMLInputElement} */ ($('name'));
const relayOnlyInput = /** @type {HTMLInputElement} */ ($('relay-only'));
const joinBtn = /** @type {HTMLButtonElement} */ ($('join'));
const leaveBtn = /** @type {HTMLButtonElement} */ ($('leave'));
const statsBody = /** @type {HTMLTableSectionElement} */ ($('stats').querySelector('tbody'));

/** @type {TernClient | null} */
let client = null;

// Exposed for the browser e2e test (tests/browser) and for poking in devtools.
/** @type {any} */ (window).ternDemo = {
  get client() { return client; },
};

// Defaults: room from ?room=, else a short random one; name remembered.
const params = new URLSearchParams(location.search);
roomInput.value = params.get('room') ?? `room-${Math.random().toString(36).slice(2, 7)}`;
nameInput.value = params.get('name') ?? localStorage.getItem('tern-name') ?? `guest-${Math.random().toString(36).slice(2, 6)}`;

form.addEventListener('submit', (e) => {
  e.preventDefault();
  join().catch(() => { /* already logged and shown */ });
});
leaveBtn.addEventListener('click', () => client?.leave());

async function join() {
  const room = roomInput.value.trim();
  const identity = nameInput.value.trim();
  if (!room || !identity) return;
  localStorage.setItem('tern-name', identity);
  setBusy(true);
  setStatus('joining', 'getting a token…');
  try {
    const token = await devToken(room, identity);
    // `?edges=wss://a/v1/signal,wss://b/v1/signal`: several signaling edges
    // (the SDK resumes on the next one when its edge goes away).
    const edges = params.get('edges')?.split(',').filter(Boolean);
    // `?probe=0`: join without region probes (signaling ranks without RTTs).
    const probe = params.get('probe') !== '0';
    client = new TernClient({ relayOnly: relayOnlyInput.checked, urls: edges, probe });
    wire(client);
    setStatus('joining', 'joining…');
    await client.join({ room, token });
    history.replaceState(null, '', `?room=${encodeURIComponent(room)}`);
  } catch (err) {
    const e = /** @type {any} */ (err);
    log(`join failed: ${e.code ? `${e.code}: ` : ''}${e.message}`, true);
    setStatus('error', e.message);
    setBusy(false);
    client = null;
    throw err;
  }
}

/**
 * @param {string} room
 * @param {string} identity
 */
async function devToken(room, identity) {
  const res = await fetch(`/v1/dev/token?room=${encodeURIComponent(room)}&identity=${encodeURIComponent(identity)}`);
  if (res.status === 404) throw new Error('no dev tokens here: run `tern up`, or give the page a token from your app');
  if (!res.ok) throw new Error(`dev token: HTTP ${res.status}`);
  const body = await res.json();
  return /** @type {string} */ (body.token);
}

/** @param {TernClient} c */
function wire(c) {
  c.on('joined', (info) => {
    setStatus('joined', `in ${info.room}`);
    $('me').textContent = `${info.identity ?? nameInput.value} (${info.participant})`;
    log(`joined ${info.room} as ${info.participant}; ${info.peers.length} already here`);
    for (const p of info.peers) upsertPeer(p.participant, p.identity);
  });
  c.on('peer-joined', ({ participant, identity }) => {
    log(`${identity || participant} joined`);
    upsertPeer(participant, identity);
  });
  c.on('peer-left', ({ participant, identity }) => {
    log(`${identity || participant} left`);
    removePeer(participant);
  });
  c.on('track', ({ participant, identity, stream }) => {
    upsertPeer(participant, identity);
    audioFor(participant).srcObject = stream;
    log(`audio from ${identity || participant}`);
  });
  c.on('peer-state', ({ participant, state }) => {
    const el = document.querySelector(`#participants li[data-participant="${participant}"] .state`);
    if (el) { el.textContent = state; /** @type {HTMLElement} */ (el).dataset.state = state; }
    log(`link to ${participant}: ${state}`);
  });
  c.on('relay', (r) => {
    $('relay-id').textContent = r.id ?? '–';
    $('relay-region').textContent = r.region ?? '–';
    $('relay-standby').textContent = r.standby ? `${r.standby.id} (${r.standby.region})` : '–';
    log(`media via relay ${r.id} in ${r.region}${r.reason === 'joined' ? '' : ` (${r.reason})`}`);
  });
  c.on('stats', ({ peers }) => renderStats(peers));
  c.on('reconnecting', ({ attempt, delay, reason }) => {
    setStatus('reconnecting', `reconnecting (attempt ${attempt})…`);
    log(`signaling lost (${reason}); retry in ${delay} ms`, true);
  });
  c.on('reconnected', ({ resumed }) => {
    setStatus('joined', resumed ? 'resumed' : 'rejoined as a new participant');
    log(resumed ? 'signaling back; session resumed' : 'signaling back; session expired, joined afresh');
  });
  c.on('probes', ({ rtts }) => {
    const list = Object.entries(rtts).sort((a, b) => a[1] - b[1]).map(([r, ms]) => `${r} ${ms} ms`);
    log(list.length ? `region probes: ${list.join(', ')}` : 'region probes: no answer');
  });
  c.on('error', ({ code, message }) => log(`error ${code}: ${message}`, true));
  c.on('closed', ({ reason, error }) => {
    log(`call closed: ${reason}${error ? ` (${error.code})` : ''}`, Boolean(error));
    setStatus(error ? 'error' : 'idle', error ? error.message : 'not connected');
    resetCall();
  });
}

// ---- rendering ----------------------------------------------------------

/**
 * @param {string} state
 * @param {string} text
 */
function setStatus(state, text) {
  const el = $('status');
  el.dataset.state = state;
  el.textContent = text;
}

/** @param {boolean} inCall */
function setBusy(inCall) {
  joinBtn.disabled = inCall;
  leaveBtn.disabled = !inCall;
  roomInput.disabled = nameInput.disabled = relayOnlyInput.disabled = inCall;
}

function resetCall() {
  setBusy(false);
  client = null;
  for (const id of ['me', 'relay-id', 'relay-region', 'relay-standby', 'relay-url']) $(id).textContent = '–';
  $('participants').replaceChildren();
  $('audio').replaceChildren();
  statsBody.replaceChildren();
  countPeers();
}

/**
 * @param {string} participant
 * @param {string} identity
 */
function upsertPeer(participant, identity) {
  let li = /** @type {HTMLLIElement | null} */ (document.querySelector(`#participants li[data-participant="${participant}"]`));
  if (!li) {
    li = document.createElement('li');
    li.dataset.participant = participant;
    li.dataset.testid = 'participant';
    li.innerHTML = '<span class="who"></span><span class="state" data-state="new">new</span>';
    $('participants').append(li);
  }
  if (identity) /** @type {HTMLElement} */ (li.querySelector('.who')).textContent = identity;
  else if (!li.querySelector('.who')?.textContent) /** @type {HTMLElement} */ (li.querySelector('.who')).textContent = participant;
  countPeers();
}

/** @param {string} participant */
function removePeer(participant) {
  document.querySelector(`#participants li[data-participant="${participant}"]`)?.remove();
  document.querySelector(`#audio audio[data-participant="${participant}"]`)?.remove();
  statsBody.querySelector(`tr[data-peer="${participant}"]`)?.remove();
  countPeers();
}

function countPeers() {
  const n = $('participants').children.length;
  $('peer-count').textContent = String(n);
  $('no-peers').hidden = n > 0;
}

/** One <audio> per remote participant; autoplay works because Join was a click. */
/** @param {string} participant */
function audioFor(participant) {
  let el = /** @type {HTMLAudioElement | null} */ (document.querySelector(`#audio audio[data-participant="${participant}"]`));
  if (!el) {
    el = document.createElement('audio');
    el.autoplay = true;
    el.dataset.participant = participant;
    el.dataset.testid = 'remote-audio';
    $('audio').append(el);
  }
  return el;
}

/** @param {Record<string, import('/sdk/tern.js').PeerStats>} peers */
function renderStats(peers) {
  /** @type {string | null} */ let relayUrl = null;
  for (const s of Object.values(peers)) {
    let tr = /** @type {HTMLTableRowElement | null} */ (statsBody.querySelector(`tr[data-peer="${s.participant}"]`));
    if (!tr) {
      tr = document.createElement('tr');
      tr.dataset.peer = s.participant;
      tr.dataset.testid = 'peer-stats';
      for (const key of ['who', 'state', 'sent', 'received', 'lost', 'rtt', 'jitter', 'candidates', 'relay']) {
        const td = document.createElement('td');
        td.dataset.field = key;
        if (['sent', 'received', 'lost', 'rtt', 'jitter'].includes(key)) td.className = 'num';
        tr.append(td);
      }
      statsBody.append(tr);
    }
    const cells = /** @type {Record<string, HTMLElement>} */ ({});
    tr.querySelectorAll('td').forEach((td) => { cells[/** @type {string} */ (td.dataset.field)] = td; });
    cells.who.textContent = s.identity || s.participant;
    cells.state.textContent = s.connectionState;
    cells.sent.textContent = String(s.packetsSent);
    cells.received.textContent = String(s.packetsReceived);
    cells.lost.textContent = String(s.packetsLost);
    cells.rtt.textContent = s.rtt == null ? '–' : s.rtt.toFixed(1);
    cells.jitter.textContent = s.jitter == null ? '–' : s.jitter.toFixed(1);
    cells.candidates.textContent = s.localCandidateType ? `${s.localCandidateType} → ${s.remoteCandidateType}` : '–';
    cells.relay.textContent = s.relayUrl ?? '–';
    relayUrl ??= s.relayUrl;
  }
  if (relayUrl) $('relay-url').textContent = relayUrl;
}

/**
 * @param {string} text
 * @param {boolean} [isError]
 */
function log(text, isError = false) {
  const li = document.createElement('li');
  if (isError) li.className = 'error';
  const t = document.createElement('time');
  t.textContent = new Date().toLocaleTimeString();
  li.append(t, text);
  const ol = $('log');
  ol.append(li);
  while (ol.children.length > 200) ol.firstElementChild?.remove();
  ol.scrollTop = ol.scrollHeight;
}
