//! The relay directory Durable Object: one for the deployment, strongly
//! consistent (a single writer), unlike Workers KV whose ~60 s propagation
//! would make failover a minute slow.
//!
//! It takes the relays' signed heartbeats (the core checks the signature and
//! runs the failure detector's bookkeeping), serves the directory, hands a
//! copy of its relay keys to rooms that choose a relay, and keeps the
//! room-on-relay markers rooms send it. An alarm every [`CHECK_MS`] judges
//! the relays as the core does; for a relay that is failing (silent, gone,
//! draining, degraded, suspected) it tells each room on it once per relay
//! life, and the room moves its call and pushes `reroute` to its sockets.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

use edge_signaling::apply::{self, KvStore};
use edge_signaling::health::GONE_MS;
use edge_signaling::keys;
use edge_signaling::kv::{KvError, KvRead};
use edge_signaling::signaling::HeartbeatFail;
use edge_signaling::{Outcome, Signaling};
use futures_util::future::join_all;
use tern_common::relay::SIGNATURE_HEADER;
use worker::{durable_object, DurableObject, Env, Method, Request, RequestInit, Response, State};

use crate::config::{self, ConfigError};
use crate::host;
use crate::keyspace::{self, Home};
use crate::objects;
use crate::persist;
use crate::store::{CachedStore, DirectoryKeys, Entries};
use crate::wire::{self, DirectoryWrites, Snapshot, WireError};

/// How often the alarm judges the relays. Relays beat every 250 ms and the
/// failure detector suspects a steady one after ~400 ms of silence, so this
/// adds at most a tenth of a second to failover.
pub const CHECK_MS: u64 = 100;
/// Most rooms one check tells at once: each is a request to another object,
/// and an invocation's subrequests are limited. A relay with more rooms is
/// finished by the following checks, 100 ms apart.
const ROOMS_PER_CHECK: usize = 256;
/// [`CHECK_MS`] as an alarm offset (workers-rs reads a bare integer as an
/// offset from now too, but a `Duration` cannot be mistaken for a time).
const CHECK_PERIOD: std::time::Duration = std::time::Duration::from_millis(CHECK_MS);

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("room {room:?} answered {status}")]
    Room { room: String, status: u16 },
    #[error("Workers runtime: {0}")]
    Runtime(String),
}

impl From<worker::Error> for DirectoryError {
    fn from(e: worker::Error) -> Self {
        DirectoryError::Runtime(e.to_string())
    }
}

#[durable_object]
pub struct RelayDirectory {
    inner: Rc<Inner>,
}

struct Inner {
    state: State,
    env: Env,
    /// Every key, as in storage; `None` until loaded, and after a failed
    /// write.
    keys: RefCell<Option<Entries>>,
    /// Relay id → the life (last heartbeat time) whose rooms were all told.
    /// Memory only: after a restart rooms are told again, which they ignore
    /// (each room remembers which relay lives it has left).
    told: RefCell<BTreeMap<String, u64>>,
    /// An alarm is pending (or running).
    watching: Cell<bool>,
}

impl DurableObject for RelayDirectory {
    fn new(state: State, env: Env) -> Self {
        RelayDirectory {
            inner: Rc::new(Inner {
                state,
                env,
                keys: RefCell::new(None),
                told: RefCell::new(BTreeMap::new()),
                watching: Cell::new(false),
            }),
        }
    }

    async fn fetch(&self, mut req: Request) -> worker::Result<Response> {
        let inner = &self.inner;
        let result = match (req.method(), req.path().as_str()) {
            (Method::Post, "/v1/relays/heartbeat") => {
                let body = req.bytes().await?;
                let signature = req.headers().get(SIGNATURE_HEADER)?.unwrap_or_default();
                inner.heartbeat(&body, &signature).await
            }
            (Method::Get, "/v1/relays") => inner.relays().await,
            (Method::Get, "/healthz") => inner.health().await,
            (Method::Get, wire::SNAPSHOT_PATH) => inner.snapshot().await,
            (Method::Post, wire::WRITES_PATH) => {
                let body = req.text().await?;
                inner.take_writes(&body).await
            }
            _ => return Response::error("not found", 404),
        };
        result.or_else(|e| Response::error(e.to_string(), 503))
    }

    async fn alarm(&self) -> worker::Result<Response> {
        if let Err(e) = self.inner.check().await {
            worker::console_warn!("directory: health check failed: {e}");
        }
        self.inner.rearm().await;
        Response::empty()
    }
}

impl Inner {
    /// Run `f` on the directory's keys; persist what it changed.
    async fn with_store<T>(
        &self,
        f: impl FnOnce(&mut CachedStore<'_>) -> Result<T, DirectoryError>,
    ) -> Result<T, DirectoryError> {
        if self.keys.borrow().is_none() {
            let entries = persist::load(&self.state.storage()).await?;
            *self.keys.borrow_mut() = Some(entries);
        }
        let (result, changes) = {
            let mut keys = self.keys.borrow_mut();
            let own = keys.as_mut().expect("loaded above, no await since");
            let mut store = CachedStore::new(own, DirectoryKeys::Own);
            let result = f(&mut store);
            (result, store.into_changes())
        };
        if !changes.own.is_empty() {
            if let Err(e) = persist::flush(&self.state.storage(), changes.own).await {
                *self.keys.borrow_mut() = None;
                return Err(e.into());
            }
        }
        result
    }

    async fn heartbeat(&self, body: &[u8], signature: &str) -> Result<Response, DirectoryError> {
        let cfg = config::from_env(&self.env)?;
        let s = Signaling::new(&cfg);
        let now = host::now_ms();
        let (refused, applied) = self
            .with_store(|store| {
                let mut refused = None;
                let applied = apply::run(store, |kv| {
                    s.handle_heartbeat(now, body, signature, kv)
                        .unwrap_or_else(|e| {
                            refused = Some(e);
                            Outcome::default()
                        })
                })?;
                Ok((refused, applied.is_some()))
            })
            .await?;
        match refused {
            Some(HeartbeatFail::Invalid(e)) => return Ok(Response::error(e.to_string(), 401)?),
            Some(HeartbeatFail::Kv(e)) => return Err(e.into()),
            None if !applied => return Err(KvError("relay index kept changing".into()).into()),
            None => {}
        }
        self.watch().await?;
        Ok(Response::empty()?.with_status(204))
    }

    /// Make sure the health-check alarm runs.
    async fn watch(&self) -> Result<(), DirectoryError> {
        if !self.watching.get() {
            let storage = self.state.storage();
            if storage.get_alarm().await?.is_none() {
                storage.set_alarm(CHECK_PERIOD).await?;
            }
            self.watching.set(true);
        }
        Ok(())
    }

    /// After a check: look again in [`CHECK_MS`] while any relay may still
    /// fail (heard from recently) or a failure is not yet told to all its
    /// rooms; otherwise sleep until the next heartbeat.
    async fn rearm(&self) {
        let now = host::now_ms();
        let keep = self.keep_watching(now).unwrap_or(true);
        self.watching.set(keep);
        if keep {
            if let Err(e) = self.state.storage().set_alarm(CHECK_PERIOD).await {
                worker::console_error!("directory: cannot set the health-check alarm: {e}");
                self.watching.set(false);
            }
        }
    }

    fn keep_watching(&self, now: u64) -> Result<bool, DirectoryError> {
        let cfg = config::from_env(&self.env)?;
        let mut keys = self.keys.borrow_mut();
        let Some(own) = keys.as_mut() else {
            return Ok(true);
        };
        let store = CachedStore::new(own, DirectoryKeys::Own);
        let views = Signaling::new(&cfg).relays(now, &store)?;
        let told = self.told.borrow();
        Ok(views.iter().any(|v| {
            v.last_heartbeat_age_ms <= GONE_MS
                || (v.failing.is_some() && told.get(&v.id) != Some(&v.received_at_ms))
        }))
    }

    /// Judge every relay; tell the rooms of each newly failing one.
    async fn check(&self) -> Result<(), DirectoryError> {
        let cfg = config::from_env(&self.env)?;
        let s = Signaling::new(&cfg);
        let now = host::now_ms();
        let plan = self
            .with_store(|store| {
                let told = self.told.borrow();
                let mut plan = Vec::new();
                for v in s.relays(now, store)? {
                    if v.failing.is_none() || told.get(&v.id) == Some(&v.received_at_ms) {
                        continue;
                    }
                    let prefix = keys::relay_rooms_prefix(&v.id);
                    let rooms: Vec<String> = store
                        .list(&prefix)?
                        .into_iter()
                        .map(|k| k[prefix.len()..].to_string())
                        .collect();
                    plan.push((v.id, v.received_at_ms, rooms));
                }
                Ok(plan)
            })
            .await?;
        if plan.is_empty() {
            return Ok(());
        }
        let snapshot = self.relay_keys().to_json();
        let mut budget = ROOMS_PER_CHECK;
        for (relay, life, mut rooms) in plan {
            // Rooms left over wait for the next check (their markers are
            // still here; the told ones' are gone).
            let mut all_told = rooms.len() <= budget;
            rooms.truncate(budget);
            budget -= rooms.len();
            let answers = join_all(rooms.iter().map(|r| tell_room(&self.env, r, &snapshot))).await;
            for answer in answers {
                match answer {
                    Ok(writes) => self.apply_writes(writes).await?,
                    Err(e) => {
                        all_told = false;
                        worker::console_warn!("directory: {relay} failed, but: {e}; will retry");
                    }
                }
            }
            if all_told {
                self.told.borrow_mut().insert(relay, life);
            }
        }
        Ok(())
    }

    /// The keys rooms read: relay records, index, suspicion, probes (not
    /// the room markers, which rooms hold themselves).
    fn relay_keys(&self) -> Snapshot {
        let keys = self.keys.borrow();
        let relay_keys: Entries = keys
            .iter()
            .flat_map(|k| k.iter())
            .filter(|(k, _)| keyspace::home(k) == Home::Directory)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Snapshot::of(&relay_keys)
    }

    async fn snapshot(&self) -> Result<Response, DirectoryError> {
        self.with_store(|_| Ok(())).await?;
        Ok(Response::ok(self.relay_keys().to_json())?)
    }

    async fn take_writes(&self, body: &str) -> Result<Response, DirectoryError> {
        self.apply_writes(DirectoryWrites::from_json(body)?).await?;
        Ok(Response::empty()?.with_status(204))
    }

    async fn apply_writes(&self, writes: DirectoryWrites) -> Result<(), DirectoryError> {
        if writes.is_empty() {
            return Ok(());
        }
        let (puts, deletes) = writes.decode()?;
        self.with_store(|store| {
            for (k, v) in &puts {
                store.put(k, v)?;
            }
            for k in &deletes {
                store.delete(k)?;
            }
            Ok(())
        })
        .await
    }

    async fn relays(&self) -> Result<Response, DirectoryError> {
        let cfg = config::from_env(&self.env)?;
        let now = host::now_ms();
        let views = self
            .with_store(|store| Ok(Signaling::new(&cfg).relays(now, store)?))
            .await?;
        let mut resp = Response::from_json(&views)?;
        // Browsers fetch it to pick regions to probe (docs/protocol.md).
        resp.headers_mut().set("access-control-allow-origin", "*")?;
        Ok(resp)
    }

    async fn health(&self) -> Result<Response, DirectoryError> {
        let cfg = config::from_env(&self.env)?;
        let now = host::now_ms();
        let healthy = self
            .with_store(|store| Ok(Signaling::new(&cfg).relays(now, store)?))
            .await?
            .iter()
            .filter(|v| v.healthy)
            .count();
        Ok(Response::from_json(&serde_json::json!({
            "status": "ok",
            "edge": cfg.edge,
            "relays_healthy": healthy,
        }))?)
    }
}

/// Tell room `room` that a relay it may be on failed; its answer is the
/// directory changes it made (its new relay's marker).
async fn tell_room(
    env: &Env,
    room: &str,
    snapshot: &str,
) -> Result<DirectoryWrites, DirectoryError> {
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_body(Some(snapshot.into()));
    let req = Request::new_with_init(&format!("https://room{}", wire::REROUTE_PATH), &init)?;
    let stub = objects::room(env, room)?;
    let mut resp = stub.fetch_with_request(req).await?;
    if resp.status_code() != 200 {
        return Err(DirectoryError::Room {
            room: room.to_string(),
            status: resp.status_code(),
        });
    }
    Ok(DirectoryWrites::from_json(&resp.text().await?)?)
}
