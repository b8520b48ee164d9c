//! The protocol state machine: one input in, one [`Outcome`] out.

use std::collections::BTreeMap;

use tern_common::credentials;
use tern_common::relay::{self as relay_hb, HeartbeatError};

use crate::calls;
use crate::config::Config;
use crate::directory::{self, RelayView};
use crate::error::{ErrorCode, FrameError};
use crate::frame::{ClientFrame, IceServer, PeerInfo, ServerFrame, Standby};
use crate::health;
use crate::keys;
use crate::kv::{KvError, KvRead, Write};
use crate::model::{
    cas, decode, encode, read, CallEventKind, ConnBinding, Member, Quality, RelayIndex,
    RelayRecord, Room, Session, Stall, StalledRooms, Suspect,
};
pub use crate::outcome::{Delivery, Outcome};
use crate::token;

/// Bytes of host entropy the core wants per input (ids are drawn from it).
pub const ENTROPY_BYTES: usize = 24;

/// Signaling core for one deployment. Cheap to construct; holds no state.
pub struct Signaling<'a> {
    /// Secrets and limits of the deployment, and this edge's name.
    pub config: &'a Config,
}

/// Errors inside a handler: either the client's fault (sent back as a frame)
/// or the store's (reported as `unavailable`).
enum Fail {
    Frame(FrameError),
    Kv(KvError),
}

impl From<FrameError> for Fail {
    fn from(e: FrameError) -> Self {
        Fail::Frame(e)
    }
}
impl From<KvError> for Fail {
    fn from(e: KvError) -> Self {
        Fail::Kv(e)
    }
}

fn frame_err(code: ErrorCode, msg: impl Into<String>) -> Fail {
    Fail::Frame(FrameError::new(code, msg))
}

impl<'a> Signaling<'a> {
    /// A core for `config`; cheap enough to make per input.
    pub fn new(config: &'a Config) -> Self {
        Signaling { config }
    }

    /// Handle one text frame that arrived on `conn`.
    ///
    /// `entropy` must be fresh random bytes from the host (at least
    /// [`ENTROPY_BYTES`]); ids for new participants and sessions come from it.
    pub fn handle_frame(
        &self,
        now_ms: u64,
        conn: &str,
        text: &str,
        entropy: &[u8],
        kv: &dyn KvRead,
    ) -> Outcome {
        if text.len() > self.config.max_frame_bytes {
            return Outcome::error(
                conn,
                &FrameError::new(
                    ErrorCode::FrameTooLarge,
                    format!(
                        "frame is {} bytes; the limit is {}",
                        text.len(),
                        self.config.max_frame_bytes
                    ),
                ),
            );
        }
        let result = ClientFrame::parse(text)
            .map_err(Fail::from)
            .and_then(|frame| self.dispatch(now_ms, conn, frame, entropy, kv));
        match result {
            Ok(o) => o,
            Err(Fail::Frame(e)) => Outcome::error(conn, &e),
            Err(Fail::Kv(e)) => Outcome::error(
                conn,
                &FrameError::new(ErrorCode::Unavailable, format!("state store failed: {e}")),
            ),
        }
    }

    fn dispatch(
        &self,
        now_ms: u64,
        conn: &str,
        frame: ClientFrame,
        entropy: &[u8],
        kv: &dyn KvRead,
    ) -> Result<Outcome, Fail> {
        match frame {
            ClientFrame::Ping { id } => {
                let mut o = Outcome::default();
                o.deliver(conn, ServerFrame::Pong { id: &id });
                Ok(o)
            }
            ClientFrame::Join {
                room,
                token,
                session,
                probes,
            } => self.join(now_ms, conn, &room, &token, session, &probes, entropy, kv),
            ClientFrame::Signal { to, data } => self.signal(conn, &to, &data, kv),
            ClientFrame::Leave => self.leave(now_ms, conn, kv),
            ClientFrame::Stall { relay } => self.stall(now_ms, conn, &relay, kv),
            ClientFrame::Stats { report } => self.stats(now_ms, conn, report, kv),
        }
    }

    fn binding(&self, conn: &str, kv: &dyn KvRead) -> Result<ConnBinding, Fail> {
        match read::<ConnBinding>(kv, &keys::conn(conn))? {
            (Some(b), _) => Ok(b),
            (None, _) => Err(frame_err(ErrorCode::NotJoined, "send \"join\" first")),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn join(
        &self,
        now_ms: u64,
        conn: &str,
        room_name: &str,
        token_str: &str,
        session: Option<String>,
        probes: &BTreeMap<String, f64>,
        entropy: &[u8],
        kv: &dyn KvRead,
    ) -> Result<Outcome, Fail> {
        let claims = token::verify(&self.config.api_secret, token_str, now_ms / 1000).map_err(
            |e| match e {
                token::TokenError::Expired { .. } => {
                    frame_err(ErrorCode::ExpiredToken, e.to_string())
                }
                _ => frame_err(ErrorCode::BadToken, e.to_string()),
            },
        )?;
        if claims.room != room_name {
            return Err(frame_err(
                ErrorCode::BadToken,
                format!("token is for room {:?}, not {:?}", claims.room, room_name),
            ));
        }
        // The three records a join needs, in one read (one round trip on a
        // store across the network).
        let room_key = keys::room(room_name);
        let mut wanted = vec![keys::conn(conn), room_key.clone()];
        wanted.extend(session.as_deref().map(keys::session));
        let mut got = kv.get_many(&wanted)?.into_iter();
        let (raw_conn, raw_room, raw_session) = (
            got.next().flatten(),
            got.next().flatten(),
            got.next().flatten(),
        );
        if raw_conn.is_some() {
            return Err(frame_err(
                ErrorCode::AlreadyJoined,
                "this connection has already joined; send \"leave\" first",
            ));
        }
        if entropy.len() < ENTROPY_BYTES {
            return Err(Fail::Kv(KvError("host gave too little entropy".into())));
        }

        let mut room = decode::<Room>(&room_key, raw_room.as_deref())?.unwrap_or_default();
        let mut out = Outcome::default();
        self.prune_away(now_ms, &mut room, &mut out);
        calls::end_if_empty(&mut out, &mut room, now_ms, "timeout");

        // Resume only a session that belongs to this identity in this room;
        // anything else (expired, pruned, someone else's) is a fresh join.
        let resumed = match &session {
            Some(s) => match decode::<Session>(&wanted[2], raw_session.as_deref())? {
                Some(sess)
                    if sess.room == room_name
                        && sess.identity == claims.sub
                        && room.member(&sess.participant).is_some() =>
                {
                    Some((s.clone(), sess.participant))
                }
                _ => None,
            },
            None => None,
        };

        let (session_id, participant) = match resumed.clone() {
            Some((s, p)) => {
                let m = room
                    .members
                    .iter_mut()
                    .find(|m| m.participant == p)
                    .expect("checked above");
                // A resume on a new socket while the old one still looks
                // alive: the newest connection wins.
                if let Some(old) = m.conn.replace(conn.to_string()) {
                    if old != conn {
                        out.writes.push(Write::Delete {
                            key: keys::conn(&old),
                        });
                    }
                }
                m.away_since_ms = None;
                m.token_exp = claims.exp;
                (s, p)
            }
            None => {
                if room.members.len() >= self.config.max_room_size {
                    return Err(frame_err(
                        ErrorCode::RoomFull,
                        format!("room has {} participants", room.members.len()),
                    ));
                }
                let participant = format!("p-{}", hex::encode(&entropy[0..8]));
                let session_id = format!("s-{}", hex::encode(&entropy[8..24]));
                room.members.push(Member {
                    participant: participant.clone(),
                    identity: claims.sub.clone(),
                    token_exp: claims.exp,
                    session: session_id.clone(),
                    conn: Some(conn.to_string()),
                    joined_at_ms: now_ms,
                    away_since_ms: None,
                });
                (session_id, participant)
            }
        };

        // Relay choice: keep the room's relay while it keeps calls (healthy,
        // or only too busy for new ones) so everyone in a call shares one
        // relay; otherwise take the best-ranked one.
        let relays = directory::list(kv, now_ms, self.config.relay_stale_ms, &self.config.edge)?;
        let ranked = directory::rank(&relays, probes);
        let primary = room
            .relay
            .as_ref()
            .and_then(|id| relays.iter().find(|r| &r.id == id && r.keeps_calls()))
            .or_else(|| ranked.first().copied())
            .ok_or_else(|| frame_err(ErrorCode::NoRelay, "no healthy relay is registered"))?;
        if room.relay.as_deref() != Some(primary.id.as_str()) || raw_room.is_none() {
            out.writes.push(Write::Put {
                key: keys::relay_room(&primary.id, room_name),
                value: Vec::new(),
            });
        }
        room.relay = Some(primary.id.clone());
        // Remember where the callers are, for choosing the next relay if
        // this one fails: the probes of the join that starts a call (a new
        // call's callers replace the last call's view), or the first join
        // that brings any.
        if room.call.is_none() || room.probes.is_empty() {
            room.probes = probes.clone();
        }

        // The call record: a fresh join into a room without a call starts
        // one; every join and resume is an event of it.
        let call = match room.call.clone() {
            Some(c) => c,
            None => calls::start(
                &mut out,
                &mut room,
                room_name,
                &self.config.edge,
                now_ms,
                entropy,
            ),
        };
        let event = match &resumed {
            Some(_) => CallEventKind::Resume {
                participant: participant.clone(),
                edge: self.config.edge.clone(),
            },
            None => {
                // Index the call under the identity (the same key again if
                // it joins twice), for queries by identity.
                out.writes.push(Write::Put {
                    key: keys::call_by_identity(&claims.sub, &call),
                    value: Vec::new(),
                });
                CallEventKind::Join {
                    participant: participant.clone(),
                    identity: claims.sub.clone(),
                    edge: self.config.edge.clone(),
                    relay: primary.id.clone(),
                }
            }
        };
        calls::record(&mut out, &call, now_ms, event);

        let me = room
            .member(&participant)
            .cloned()
            .expect("joined or resumed above");
        let standby = directory::standby(&ranked, primary).map(|r| Standby {
            relay: r.client_ref(),
            ice_servers: self.ice_servers(r, &me, now_ms),
        });

        let peers: Vec<PeerInfo> = room
            .others(&participant)
            .map(|(m, _)| PeerInfo {
                participant: m.participant.clone(),
                identity: m.identity.clone(),
            })
            .collect();

        out.writes.push(cas(room_key, raw_room, &room));
        out.writes.push(Write::Put {
            key: keys::session(&session_id),
            value: encode(&Session {
                participant: participant.clone(),
                room: room_name.to_string(),
                identity: claims.sub.clone(),
            }),
        });
        out.writes.push(Write::Put {
            key: keys::conn(conn),
            value: encode(&ConnBinding {
                participant: participant.clone(),
                room: room_name.to_string(),
                session: session_id.clone(),
            }),
        });

        out.deliver(
            conn,
            ServerFrame::Joined {
                participant: &participant,
                session: &session_id,
                identity: &claims.sub,
                room: room_name,
                resumed: resumed.is_some(),
                peers,
                relay: primary.client_ref(),
                ice_servers: self.ice_servers(primary, &me, now_ms),
                standby,
            },
        );
        if resumed.is_none() {
            for (_, other) in room.others(&participant) {
                out.deliver(
                    other,
                    ServerFrame::PeerJoined {
                        participant: &participant,
                        identity: &claims.sub,
                    },
                );
            }
        }
        Ok(out)
    }

    /// Drop members that have been away longer than the grace period, tell
    /// the others they left and record it in the room's call.
    pub(crate) fn prune_away(&self, now_ms: u64, room: &mut Room, out: &mut Outcome) {
        let grace = self.config.session_grace_ms;
        let (gone, kept): (Vec<Member>, Vec<Member>) = std::mem::take(&mut room.members)
            .into_iter()
            .partition(|m| matches!(m.away_since_ms, Some(t) if now_ms.saturating_sub(t) > grace));
        room.members = kept;
        for m in &gone {
            out.writes.push(Write::Delete {
                key: keys::session(&m.session),
            });
            if let Some(call) = &room.call {
                calls::record(
                    out,
                    call,
                    now_ms,
                    CallEventKind::Leave {
                        participant: m.participant.clone(),
                        reason: "timeout".into(),
                    },
                );
            }
            for (_, conn) in room.others(&m.participant) {
                out.deliver(
                    conn,
                    ServerFrame::PeerLeft {
                        participant: &m.participant,
                    },
                );
            }
        }
    }

    /// TURN credentials on `relay` for `member`: named by its identity's
    /// pseudonym and valid as long as its room token (see
    /// [`credentials::turn_identity`]), so one token is one TURN user, held
    /// to the relay's quota per user however often it joins.
    pub(crate) fn ice_servers(
        &self,
        relay: &RelayView,
        member: &Member,
        now_ms: u64,
    ) -> Vec<IceServer> {
        let now = now_ms / 1000;
        let expiry = if member.token_exp > now {
            member.token_exp
        } else {
            // A record from before tokens' expiry was kept.
            now + self.config.turn_ttl_secs
        };
        let user = credentials::turn_identity(&member.identity);
        let cred = credentials::mint(&self.config.relay_secret, &user, expiry);
        vec![IceServer {
            urls: relay.listeners.iter().map(|l| l.turn_url()).collect(),
            username: cred.username,
            credential: cred.credential,
        }]
    }

    fn signal(
        &self,
        conn: &str,
        to: &str,
        data: &serde_json::Value,
        kv: &dyn KvRead,
    ) -> Result<Outcome, Fail> {
        let me = self.binding(conn, kv)?;
        let room = read::<Room>(kv, &keys::room(&me.room))?
            .0
            .unwrap_or_default();
        let target = room
            .member(to)
            .filter(|m| m.participant != me.participant)
            .and_then(|m| m.conn.as_deref())
            .ok_or_else(|| {
                let mut e = FrameError::new(
                    ErrorCode::UnknownPeer,
                    format!("no connected participant {to:?} in this room"),
                );
                e.to = Some(to.to_string());
                Fail::Frame(e)
            })?;
        let mut out = Outcome::default();
        out.deliver(
            target,
            ServerFrame::Signal {
                from: &me.participant,
                data,
            },
        );
        Ok(out)
    }

    /// A participant's inbound audio stalled on `relay`. When at least two
    /// connected participants of the room with different identities report
    /// it within `STALL_WINDOW_MS`, this room moves at once; one report
    /// alone could be that caller's own network, and one identity on
    /// several sockets is still one caller. The relay is suspected
    /// fleet-wide (its other rooms move on the next tick) only once
    /// [`health::FLEET_STALL_ROOMS`] rooms have agreed so: one room must not
    /// be able to move everyone else's calls.
    fn stall(
        &self,
        now_ms: u64,
        conn: &str,
        relay: &str,
        kv: &dyn KvRead,
    ) -> Result<Outcome, Fail> {
        let me = self.binding(conn, kv)?;
        let room_key = keys::room(&me.room);
        let (room, raw) = read::<Room>(kv, &room_key)?;
        let mut out = Outcome::default();
        let Some(mut room) = room.filter(|r| r.relay.as_deref() == Some(relay)) else {
            return Ok(out); // stale report: the room has moved on already
        };
        room.stalls.retain(|s| {
            s.participant != me.participant
                && now_ms.saturating_sub(s.at_ms) <= health::STALL_WINDOW_MS
        });
        room.stalls.push(Stall {
            participant: me.participant.clone(),
            at_ms: now_ms,
        });
        let identities: std::collections::BTreeSet<&str> = room
            .stalls
            .iter()
            .filter_map(|s| room.member(&s.participant))
            .filter(|m| m.conn.is_some())
            .map(|m| m.identity.as_str())
            .collect();
        if identities.len() >= 2 {
            let relays =
                directory::list(kv, now_ms, self.config.relay_stale_ms, &self.config.edge)?;
            let since = room.stalls.iter().map(|s| s.at_ms).min();
            if self.move_room(
                now_ms,
                &mut room,
                &me.room,
                &relays,
                "media-stalled",
                since,
                &mut out,
            ) {
                self.stalled_room(now_ms, relay, &me.room, kv, &mut out)?;
            }
        }
        out.writes.insert(0, cas(room_key, raw, &room));
        Ok(out)
    }

    /// Room `room` moved off `relay` because its callers' audio stalled:
    /// remember it, and suspect the relay fleet-wide if other rooms agreed
    /// recently.
    fn stalled_room(
        &self,
        now_ms: u64,
        relay: &str,
        room: &str,
        kv: &dyn KvRead,
        out: &mut Outcome,
    ) -> Result<(), Fail> {
        let key = keys::relay_stalled_rooms(relay);
        let stalled = read::<StalledRooms>(kv, &key)?.0;
        let mut stalled = stalled.unwrap_or_default();
        stalled.rooms.retain(|(r, at)| {
            r != room && now_ms.saturating_sub(*at) <= health::FLEET_STALL_WINDOW_MS
        });
        stalled.rooms.push((room.to_string(), now_ms));
        let excess = stalled
            .rooms
            .len()
            .saturating_sub(health::FLEET_STALL_MEMORY);
        stalled.rooms.drain(..excess);
        if stalled.rooms.len() >= health::FLEET_STALL_ROOMS {
            out.writes.push(Write::Put {
                key: keys::relay_suspect(relay),
                value: encode(&Suspect {
                    at_ms: now_ms,
                    reason: "media-stalled".into(),
                }),
            });
        }
        // A put, not a swap: the key is fleet-wide, and some hosts cannot
        // swap such keys from a room (the Worker's directory object). Two
        // rooms writing at once may forget one of them; a verdict missed so
        // costs a moment, as the next stalled room writes it again.
        out.writes.push(Write::Put {
            key,
            value: encode(&stalled),
        });
        Ok(())
    }

    /// A quality report: folded into this participant's summary for the
    /// room's call (one key, one writer: this participant's connection).
    /// Nothing is sent back, so it needs no durable write.
    fn stats(
        &self,
        now_ms: u64,
        conn: &str,
        report: serde_json::Value,
        kv: &dyn KvRead,
    ) -> Result<Outcome, Fail> {
        let me = self.binding(conn, kv)?;
        let report: calls::StatsReport = serde_json::from_value(report)
            .map_err(|e| frame_err(ErrorCode::BadRequest, format!("bad \"stats\" frame: {e}")))?;
        let mut out = Outcome::default();
        let room = read::<Room>(kv, &keys::room(&me.room))?
            .0
            .unwrap_or_default();
        let Some(call) = room.call.clone() else {
            return Ok(out);
        };
        let key = keys::call_quality(&call, &me.participant);
        let mut q = read::<Quality>(kv, &key)?.0.unwrap_or_else(|| Quality {
            participant: me.participant.clone(),
            ..Quality::default()
        });
        // Evidence about a relay counts only from a connected member of a
        // room that uses it, about that relay (a report naming another is
        // about no call of this room), and once per identity.
        let member = room.member(&me.participant).filter(|m| m.conn.is_some());
        let relay = room
            .relay
            .as_deref()
            .filter(|r| report.relay.as_deref().is_none_or(|named| named == *r));
        if let (Some(member), Some(relay)) = (member, relay) {
            let reporter = crate::loss::Reporter {
                identity: &member.identity,
                room: &me.room,
            };
            if let Some(w) = crate::loss::report_write(now_ms, reporter, relay, &q, &report) {
                out.writes.push(w);
            }
        }
        calls::fold(&mut q, &report, now_ms, &room);
        out.writes.push(Write::Put {
            key,
            value: encode(&q),
        });
        if let Some(gap) = &report.gap {
            calls::record(
                &mut out,
                &call,
                now_ms,
                CallEventKind::Gap {
                    participant: me.participant.clone(),
                    relay: gap.relay.clone(),
                    gap_ms: gap.ms,
                },
            );
        }
        Ok(out)
    }

    fn leave(&self, now_ms: u64, conn: &str, kv: &dyn KvRead) -> Result<Outcome, Fail> {
        let me = self.binding(conn, kv)?;
        let room_key = keys::room(&me.room);
        let (room, raw) = read::<Room>(kv, &room_key)?;
        let mut room = room.unwrap_or_default();
        room.members.retain(|m| m.participant != me.participant);
        let mut out = Outcome::default();
        if let Some(call) = &room.call {
            calls::record(
                &mut out,
                call,
                now_ms,
                CallEventKind::Leave {
                    participant: me.participant.clone(),
                    reason: "leave".into(),
                },
            );
        }
        calls::end_if_empty(&mut out, &mut room, now_ms, "empty");
        out.writes.insert(0, cas(room_key, raw, &room));
        out.writes.push(Write::Delete {
            key: keys::session(&me.session),
        });
        out.writes.push(Write::Delete {
            key: keys::conn(conn),
        });
        for (_, other) in room.others(&me.participant) {
            out.deliver(
                other,
                ServerFrame::PeerLeft {
                    participant: &me.participant,
                },
            );
        }
        out.deliver(conn, ServerFrame::Left);
        Ok(out)
    }

    /// The connection `conn` closed without `leave`. Its participant stays in
    /// the room as away for `session_grace_ms` so it can resume.
    pub fn handle_disconnect(
        &self,
        now_ms: u64,
        conn: &str,
        kv: &dyn KvRead,
    ) -> Result<Outcome, KvError> {
        let Some(me) = read::<ConnBinding>(kv, &keys::conn(conn))?.0 else {
            return Ok(Outcome::default());
        };
        let room_key = keys::room(&me.room);
        let (room, raw) = read::<Room>(kv, &room_key)?;
        let mut out = Outcome::default();
        out.writes.push(Write::Delete {
            key: keys::conn(conn),
        });
        if let Some(mut room) = room {
            if let Some(m) = room
                .members
                .iter_mut()
                .find(|m| m.participant == me.participant && m.conn.as_deref() == Some(conn))
            {
                m.conn = None;
                m.away_since_ms = Some(now_ms);
                if let Some(call) = &room.call {
                    calls::record(
                        &mut out,
                        call,
                        now_ms,
                        CallEventKind::Away {
                            participant: me.participant.clone(),
                        },
                    );
                }
                out.writes.insert(0, cas(room_key, raw, &room));
            }
        }
        Ok(out)
    }

    /// A relay heartbeat arrived (body and signature header as received).
    pub fn handle_heartbeat(
        &self,
        now_ms: u64,
        body: &[u8],
        signature: &str,
        kv: &dyn KvRead,
    ) -> Result<Outcome, HeartbeatFail> {
        let hb = relay_hb::verify(&self.config.relay_secret, body, signature, now_ms)?;
        let key = keys::relay(&hb.id);
        let mut out = Outcome::default();
        let mut intervals = Vec::new();
        let mut cpu = Vec::new();
        if let (Some(prev), _) = read::<RelayRecord>(kv, &key)? {
            // Within one run, a heartbeat not newer than the last is
            // reordered: dropped. A restarted relay starts its sequence
            // again under a new boot; a heartbeat of another run counts only
            // if it was sent after the last one heard, so an earlier run's
            // (replayed, or late) cannot undo what the current run said.
            // Relays from before boots were sent have none: judged by seq
            // and clock together, as before.
            let prev_hb = &prev.heartbeat;
            let stale = if hb.boot.is_empty() || prev_hb.boot.is_empty() {
                hb.seq <= prev_hb.seq && hb.sent_at_ms <= prev_hb.sent_at_ms
            } else if hb.boot == prev_hb.boot {
                hb.seq <= prev_hb.seq
            } else {
                hb.sent_at_ms <= prev_hb.sent_at_ms
            };
            if stale {
                return Ok(out);
            }
            intervals = prev.intervals;
            health::record(
                &mut intervals,
                now_ms.saturating_sub(prev.received_at_ms),
                self.config.relay_stale_ms,
            );
            // A restart (the phi history reset) starts the CPU window anew too.
            if !intervals.is_empty() {
                cpu = prev.cpu;
            }
        }
        if let Some(sample) = health::cpu_sample(hb.load.cpu_percent, hb.load.threads) {
            health::record_cpu(&mut cpu, sample);
        }
        let (index, raw_index) = read::<RelayIndex>(kv, keys::RELAY_INDEX)?;
        let mut index = index.unwrap_or_default();
        if !index.ids.contains(&hb.id) {
            index.ids.push(hb.id.clone());
            out.writes
                .push(cas(keys::RELAY_INDEX.to_string(), raw_index, &index));
        }
        out.writes.push(Write::Put {
            key,
            value: encode(&RelayRecord {
                heartbeat: hb,
                received_at_ms: now_ms,
                intervals,
                cpu,
            }),
        });
        Ok(out)
    }

    /// The relay directory as `GET /v1/relays` shows it.
    pub fn relays(&self, now_ms: u64, kv: &dyn KvRead) -> Result<Vec<RelayView>, KvError> {
        directory::list(kv, now_ms, self.config.relay_stale_ms, &self.config.edge)
    }
}

/// Why a heartbeat was refused.
#[derive(Debug, thiserror::Error)]
pub enum HeartbeatFail {
    /// Bad signature, malformed body or clock too far off: refuse it (401).
    #[error(transparent)]
    Invalid(#[from] HeartbeatError),
    /// The store failed; the heartbeat had no effect.
    #[error(transparent)]
    Kv(#[from] KvError),
}
