//! The room Durable Object: one per room, named by the room. It terminates
//! the room's WebSockets and runs the core on every input, with the room's
//! keys in its own storage.
//!
//! Inputs are handled one at a time, in arrival order
//! (`blockConcurrencyWhile`): protocol v1 promises that frames from one
//! connection are handled in order, and a join waits for the relay directory,
//! which would otherwise let the connection's next frame overtake it.

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;

use edge_signaling::apply;
use edge_signaling::error::FrameError;
use edge_signaling::frame::ClientFrame;
use edge_signaling::keys;
use edge_signaling::kv::KvError;
use edge_signaling::model::Room as RoomRecord;
use edge_signaling::{Delivery, ErrorCode, Outcome, Signaling};
use worker::{
    durable_object, DurableObject, Env, Method, Request, RequestInit, Response, State, WebSocket,
    WebSocketIncomingMessage, WebSocketPair,
};

use crate::config::{self, ConfigError};
use crate::host;
use crate::objects;
use crate::persist;
use crate::sockets::{self, Attachment};
use crate::store::{CachedStore, DirectoryKeys, Entries};
use crate::wire::{self, DirectoryWrites, Snapshot, WireError};

/// Binding of the room namespace (wrangler.toml).
/// Extra time after a participant's grace period before the housekeeping
/// alarm looks, so the member is surely past it.
const GRACE_MARGIN_MS: u64 = 250;

#[derive(Debug, thiserror::Error)]
pub enum RoomError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("relay directory answered {0}")]
    Directory(u16),
    #[error("Workers runtime: {0}")]
    Runtime(String),
}

impl From<worker::Error> for RoomError {
    fn from(e: worker::Error) -> Self {
        RoomError::Runtime(e.to_string())
    }
}

impl From<worker::wasm_bindgen::JsValue> for RoomError {
    fn from(e: worker::wasm_bindgen::JsValue) -> Self {
        RoomError::Runtime(format!("{e:?}"))
    }
}

#[durable_object]
pub struct Room {
    inner: Rc<Inner>,
}

struct Inner {
    state: State,
    env: Env,
    /// The room's keys as in storage; `None` until loaded after a wake-up,
    /// and again after a failed write (so the next input reloads the truth).
    keys: RefCell<Option<Entries>>,
    /// Changes for the directory that could not be delivered yet; sent
    /// with the next input's.
    outbox: RefCell<DirectoryWrites>,
}

/// Where an input's view of the relay directory comes from.
enum Need {
    /// The input does not read it.
    Nothing,
    /// Ask the directory object.
    Fetch,
    /// It came with the input.
    Given(Entries),
}

impl DurableObject for Room {
    fn new(state: State, env: Env) -> Self {
        Room {
            inner: Rc::new(Inner {
                state,
                env,
                keys: RefCell::new(None),
                outbox: RefCell::new(DirectoryWrites::default()),
            }),
        }
    }

    async fn fetch(&self, mut req: Request) -> worker::Result<Response> {
        if req.path() == wire::REROUTE_PATH && req.method() == Method::Post {
            let body = req.text().await?;
            let inner = self.inner.clone();
            let result =
                serialized(&self.inner.state, async move { inner.reroute(&body).await }).await?;
            return match result {
                Ok(writes) => Response::ok(writes.to_json()),
                Err(e) => Response::error(e.to_string(), 503),
            };
        }
        self.inner.accept(&req)
    }

    async fn websocket_message(
        &self,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> worker::Result<()> {
        let inner = self.inner.clone();
        serialized(&self.inner.state, async move {
            inner.on_message(ws, message).await
        })
        .await
    }

    async fn websocket_close(
        &self,
        ws: WebSocket,
        _code: usize,
        _reason: String,
        _was_clean: bool,
    ) -> worker::Result<()> {
        let inner = self.inner.clone();
        serialized(&self.inner.state, async move { inner.on_close(ws).await }).await
    }

    async fn websocket_error(&self, ws: WebSocket, _error: worker::Error) -> worker::Result<()> {
        let inner = self.inner.clone();
        serialized(&self.inner.state, async move { inner.on_close(ws).await }).await
    }

    async fn alarm(&self) -> worker::Result<Response> {
        let inner = self.inner.clone();
        serialized(&self.inner.state, async move { inner.housekeeping().await }).await?;
        Response::empty()
    }
}

/// Run `input` with no other event delivered to the object meanwhile. The
/// input must not fail: an error here resets the whole object.
async fn serialized<T: 'static>(
    state: &State,
    input: impl Future<Output = T> + 'static,
) -> worker::Result<T> {
    state
        .block_concurrency_while(async move { Ok(input.await) })
        .await
}

fn error_frame(conn: &str, code: ErrorCode, message: impl Into<String>) -> Vec<Delivery> {
    Outcome::error(conn, &FrameError::new(code, message)).deliveries
}

impl Inner {
    /// A browser's `GET /v1/signal?room=R`, routed here by the Worker.
    fn accept(&self, req: &Request) -> worker::Result<Response> {
        let upgrade = req.headers().get("upgrade")?;
        if !upgrade.is_some_and(|u| u.eq_ignore_ascii_case("websocket")) {
            return Response::error("expected a WebSocket upgrade", 426);
        }
        let room = req
            .url()?
            .query_pairs()
            .find(|(k, _)| k == "room")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        let bytes = host::random_bytes(16).map_err(|e| worker::Error::from(format!("{e:?}")))?;
        let pair = WebSocketPair::new()?;
        let att = Attachment {
            conn: format!("c-{}", hex::encode(bytes)),
            room,
        };
        sockets::accept(&self.state, &pair.server, &att)?;
        Response::from_websocket(pair.client)
    }

    async fn on_message(&self, ws: WebSocket, message: WebSocketIncomingMessage) {
        let Some(att) = sockets::attachment(&ws) else {
            return;
        };
        let text = match message {
            WebSocketIncomingMessage::String(s) => s,
            WebSocketIncomingMessage::Binary(_) => {
                let d = error_frame(
                    &att.conn,
                    ErrorCode::BadRequest,
                    "binary messages are not frames; send JSON text",
                );
                return sockets::deliver(&self.state, d);
            }
        };
        // A socket belongs to the room in its URL: this object holds only
        // that room. Other frames (and malformed ones) go to the core as
        // they are.
        let need = match ClientFrame::parse(&text) {
            Ok(ClientFrame::Join { room, .. }) if room != att.room => {
                let d = error_frame(
                    &att.conn,
                    ErrorCode::BadRequest,
                    format!(
                        "this socket is for room {:?}; join {room:?} on /v1/signal?room=<that room>",
                        att.room
                    ),
                );
                return sockets::deliver(&self.state, d);
            }
            Ok(ClientFrame::Join { .. } | ClientFrame::Stall { .. }) => Need::Fetch,
            _ => Need::Nothing,
        };
        let now = host::now_ms();
        let conn = att.conn.clone();
        let result = match host::entropy() {
            Err(e) => Err(RoomError::from(e)),
            Ok(entropy) => {
                self.step(need, |s, store| {
                    Ok(
                        match apply::run(store, |kv| {
                            s.handle_frame(now, &conn, &text, &entropy, kv)
                        })? {
                            Some(o) => o.deliveries,
                            None => error_frame(
                                &conn,
                                ErrorCode::Unavailable,
                                "the room kept changing; try again",
                            ),
                        },
                    )
                })
                .await
            }
        };
        let deliveries = match result {
            Ok(d) => {
                self.forward().await;
                d
            }
            Err(e) => error_frame(&att.conn, ErrorCode::Unavailable, e.to_string()),
        };
        sockets::deliver(&self.state, deliveries);
    }

    async fn on_close(&self, ws: WebSocket) {
        // Completes the closing handshake; the socket may be gone already.
        let _ = ws.close(Some(1000), Some("closed"));
        let Some(att) = sockets::attachment(&ws) else {
            return;
        };
        let now = host::now_ms();
        let result = self
            .step(Need::Nothing, |s, store| {
                disconnect(s, now, &att.conn, store)?;
                Ok(Vec::new())
            })
            .await;
        if result.is_ok() {
            self.forward().await;
        }
        self.arm_housekeeping(now).await;
    }

    /// The directory saw this room's relay fail: move the room (the core's
    /// tick, on the directory as the directory saw it) and tell the sockets.
    async fn reroute(&self, body: &str) -> Result<DirectoryWrites, RoomError> {
        let directory = Snapshot::from_json(body)?.into_entries()?;
        let now = host::now_ms();
        let deliveries = self
            .step(Need::Given(directory), |s, store| {
                edge_signaling::reroute::tick(s, now, store)
            })
            .await?;
        sockets::deliver(&self.state, deliveries);
        // The directory applies these itself (its answer), so it learns the
        // room's new relay before it looks at the next failure.
        Ok(std::mem::take(&mut *self.outbox.borrow_mut()))
    }

    /// Participants that dropped and never came back: once their grace
    /// period is over, the core removes them and tells the others (its
    /// call sweep); the alarm is set when a socket closes.
    async fn housekeeping(&self) {
        let now = host::now_ms();
        let result = self
            .step(Need::Fetch, |s, store| {
                edge_signaling::reroute::tick(s, now, store)
            })
            .await;
        if let Ok(d) = result {
            self.forward().await;
            sockets::deliver(&self.state, d);
        }
        self.arm_housekeeping(now).await;
    }

    /// Wake up when the earliest away participant's grace period is over
    /// (or, while the core's call sweep is rate-limited, a sweep later).
    async fn arm_housekeeping(&self, now: u64) {
        let Ok(cfg) = config::from_env(&self.env) else {
            return;
        };
        let next = {
            let keys = self.keys.borrow();
            let Some(keys) = keys.as_ref() else {
                return;
            };
            keys.range(keys::room("")..)
                .take_while(|(k, _)| k.starts_with(&keys::room("")))
                .filter_map(|(_, v)| serde_json::from_slice::<RoomRecord>(v).ok())
                .flat_map(|r| r.members.into_iter().filter_map(|m| m.away_since_ms))
                .map(|away| away + cfg.session_grace_ms + GRACE_MARGIN_MS)
                .min()
        };
        if let Some(at) = next {
            let at = at.max(now + cfg.call_sweep_ms.min(cfg.session_grace_ms));
            // An offset from now (workers-rs's reading of a duration).
            let offset = std::time::Duration::from_millis(at.saturating_sub(now));
            let _ = self.state.storage().set_alarm(offset).await;
        }
    }

    /// Run the core on one input: load the room's keys (and the directory,
    /// if needed), run `input` on them synchronously, persist what changed.
    /// Directory changes wait in the outbox for [`Inner::forward`].
    async fn step(
        &self,
        need: Need,
        input: impl FnOnce(&Signaling<'_>, &mut CachedStore<'_>) -> Result<Vec<Delivery>, KvError>,
    ) -> Result<Vec<Delivery>, RoomError> {
        let cfg = config::from_env(&self.env)?;
        let woke = self.load().await?;
        let directory = match need {
            Need::Nothing => None,
            Need::Fetch => Some(fetch_snapshot(&self.env).await?),
            Need::Given(d) => Some(d),
        };
        let s = Signaling::new(&cfg);
        let (result, changes) = {
            let mut keys = self.keys.borrow_mut();
            let own = keys.as_mut().expect("loaded above, no await since");
            let mut store = CachedStore::new(own, DirectoryKeys::Snapshot(directory));
            let result = if woke {
                self.forget_dead_sockets(&s, &mut store)
            } else {
                Ok(())
            }
            .and_then(|()| input(&s, &mut store));
            (result, store.into_changes())
        };
        if let Err(e) = persist::flush(&self.state.storage(), changes.own).await {
            *self.keys.borrow_mut() = None;
            return Err(e.into());
        }
        self.outbox.borrow_mut().extend(changes.directory);
        Ok(result?)
    }

    /// Load the room's keys if they are not in memory. True if they were
    /// loaded now (the object just woke up).
    async fn load(&self) -> Result<bool, RoomError> {
        if self.keys.borrow().is_some() {
            return Ok(false);
        }
        let entries = persist::load(&self.state.storage()).await?;
        *self.keys.borrow_mut() = Some(entries);
        Ok(true)
    }

    /// Connections the stored roster thinks are open but whose sockets are
    /// gone (the object was restarted, so their close events were lost) are
    /// disconnected, so their participants can resume and time out as usual.
    fn forget_dead_sockets(
        &self,
        s: &Signaling<'_>,
        store: &mut CachedStore<'_>,
    ) -> Result<(), KvError> {
        use edge_signaling::kv::KvRead;
        let prefix = keys::conn("");
        let now = host::now_ms();
        for key in store.list(&prefix)? {
            let conn = &key[prefix.len()..];
            if !sockets::is_open(&self.state, conn) {
                disconnect(s, now, conn, store)?;
            }
        }
        Ok(())
    }

    /// Send the outbox to the directory; kept for the next input if that
    /// fails.
    async fn forward(&self) {
        let writes = std::mem::take(&mut *self.outbox.borrow_mut());
        if writes.is_empty() {
            return;
        }
        if let Err(e) = post_writes(&self.env, &writes).await {
            worker::console_warn!("room: directory did not take our changes ({e}); will retry");
            // Older changes first, then any queued meanwhile.
            let mut outbox = self.outbox.borrow_mut();
            let newer = std::mem::replace(&mut *outbox, writes);
            outbox.extend(newer);
        }
    }
}

fn disconnect(
    s: &Signaling<'_>,
    now: u64,
    conn: &str,
    store: &mut CachedStore<'_>,
) -> Result<(), KvError> {
    let mut failed = None;
    apply::run(store, |kv| {
        s.handle_disconnect(now, conn, kv).unwrap_or_else(|e| {
            failed = Some(e);
            Outcome::default()
        })
    })?;
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

async fn fetch_snapshot(env: &Env) -> Result<Entries, RoomError> {
    let stub = objects::directory(env)?;
    let mut resp = stub
        .fetch_with_str(&format!("https://directory{}", wire::SNAPSHOT_PATH))
        .await?;
    if resp.status_code() != 200 {
        return Err(RoomError::Directory(resp.status_code()));
    }
    Ok(Snapshot::from_json(&resp.text().await?)?.into_entries()?)
}

async fn post_writes(env: &Env, writes: &DirectoryWrites) -> Result<(), RoomError> {
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_body(Some(writes.to_json().into()));
    let req = Request::new_with_init(&format!("https://directory{}", wire::WRITES_PATH), &init)?;
    let resp = objects::directory(env)?.fetch_with_request(req).await?;
    match resp.status_code() {
        200..=299 => Ok(()),
        s => Err(RoomError::Directory(s)),
    }
}
