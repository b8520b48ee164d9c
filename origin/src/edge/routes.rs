//! HTTP routes of an origin.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use edge_signaling::token::{self, Claims};
use serde::Deserialize;
use serde_json::json;
use tern_common::relay::{self as relay_hb, SIGNATURE_HEADER};

use crate::edge::assets;
use crate::edge::relay_link::Link;
use crate::edge::websocket;
use crate::edge::{now_ms, App};
use crate::host::HeartbeatError;

/// Heartbeats are small; anything bigger is not one.
const MAX_HEARTBEAT_BYTES: usize = 16 * 1024;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/signal", get(websocket::upgrade))
        .route("/v1/relays", get(relays))
        .route(
            "/v1/relays/heartbeat",
            post(heartbeat).layer(axum::extract::DefaultBodyLimit::max(MAX_HEARTBEAT_BYTES)),
        )
        .route("/v1/dev/token", get(dev_token))
        .route("/v1/calls", get(calls))
        .route("/healthz", get(healthz))
        .merge(static_routes())
        .with_state(app)
}

/// The demo page and the browser SDK, embedded in the binary (also served
/// by `tern gateway`).
pub fn static_routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { Redirect::temporary("/demo/") }))
        .route("/demo", get(|| async { Redirect::permanent("/demo/") }))
        .route("/demo/", get(|| async { asset("demo", "index.html") }))
        .route(
            "/demo/{file}",
            get(|Path(f): Path<String>| async move { asset("demo", &f) }),
        )
        .route(
            "/sdk/{file}",
            get(|Path(f): Path<String>| async move { asset("js", &f) }),
        )
}

fn asset(dir: &str, file: &str) -> Response {
    match assets::get(dir, file) {
        Some((bytes, mime)) => (
            [
                (header::CONTENT_TYPE, mime),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"code": code, "message": message.into()})),
    )
        .into_response()
}

async fn relays(State(app): State<Arc<App>>) -> Response {
    match app.directory.view(app.relay_view()).await {
        Ok(v) => Json(&*v).into_response(),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        ),
    }
}

async fn heartbeat(
    State(app): State<Arc<App>>,
    ConnectInfo(link): ConnectInfo<Link>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(sig) = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok()) else {
        return error(
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            format!("missing {SIGNATURE_HEADER}"),
        );
    };
    // Anyone can post here: a forged heartbeat is refused before it waits
    // for a lane or an instance of the component (which checks again).
    if let Err(e) = relay_hb::verify(&app.signaling.relay_secret, &body, sig, now_ms()) {
        return error(StatusCode::UNAUTHORIZED, "rejected", e.to_string());
    }
    match app.handle_heartbeat(body.to_vec(), sig.to_string()).await {
        Ok(Ok(())) => {
            watch_link(&app, &link, &body);
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(Err(HeartbeatError::Rejected(m))) => {
            tracing::warn!(reason = %m, "heartbeat refused");
            error(StatusCode::UNAUTHORIZED, "rejected", m)
        }
        Ok(Err(HeartbeatError::Unavailable(m))) => {
            error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m)
        }
        Err(e) => {
            tracing::error!(error = %e, "heartbeat handling failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "heartbeat handling failed",
            )
        }
    }
}

/// After the first accepted heartbeat on a connection: when the connection
/// closes, have the prober check that relay at once (see
/// [`crate::edge::relay_link`]).
fn watch_link(app: &Arc<App>, link: &Link, body: &[u8]) {
    #[derive(Deserialize)]
    struct Sender {
        id: String,
    }
    // The component verified the signature; only the id is needed here.
    let Ok(Sender { id }) = serde_json::from_slice(body) else {
        return;
    };
    link.heard(now_ms());
    let Some(closed) = link.watch() else {
        return;
    };
    let app = app.clone();
    tokio::spawn(async move {
        let last_heartbeat_ms = closed.await;
        tracing::info!(relay = %id, "relay's heartbeat connection closed; probing it now");
        app.suspects.report(id, last_heartbeat_ms);
    });
}

/// Whether `headers` carry `Authorization: Bearer <calls token>`. Call
/// records say who called whom: only the app's servers and operators may
/// read them, with a token of its own, not the API secret that signs room
/// tokens (a reader need not be able to join every room).
fn authorized(want: &[u8], headers: &HeaderMap) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    // Constant time in the token's contents.
    given.len() == want.len()
        && given
            .bytes()
            .zip(want.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// `GET /v1/calls?room=&identity=&since=&until=&limit=&cursor=`: call
/// records, newest first, one page at a time (docs/protocol.md).
async fn calls(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    q: Result<Query<CallsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Some(token) = &app.calls_token else {
        return error(
            StatusCode::FORBIDDEN,
            "calls_api_off",
            "this origin has no calls token: start it with TERN_CALLS_TOKEN to serve call records",
        );
    };
    if !authorized(token.as_bytes(), &headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "call records need `Authorization: Bearer <calls token>`",
        );
    }
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", e.body_text()),
    };
    if q.limit == Some(0) || q.limit.is_some_and(|l| l > crate::edge::calls::MAX_LIMIT) {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("limit must be 1..={}", crate::edge::calls::MAX_LIMIT),
        );
    }
    let query = crate::edge::calls::Query {
        room: q.room,
        identity: q.identity,
        since_ms: q.since,
        until_ms: q.until,
        limit: q.limit,
        cursor: q.cursor,
    };
    let kv = app.kv.clone();
    // A query reads many keys: never on an async worker.
    match tokio::task::spawn_blocking(move || crate::edge::calls::query(&kv, &query, now_ms()))
        .await
    {
        Ok(Ok(page)) => Json(page).into_response(),
        Ok(Err(e)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        ),
        Err(e) => {
            tracing::error!(error = %e, "call query panicked");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "call query failed",
            )
        }
    }
}

#[derive(Deserialize)]
struct CallsQuery {
    room: Option<String>,
    identity: Option<String>,
    /// Unix ms.
    since: Option<u64>,
    until: Option<u64>,
    limit: Option<usize>,
    cursor: Option<String>,
}

#[derive(Deserialize)]
pub struct TokenQuery {
    room: String,
    identity: String,
}

pub type TokenQueryResult = Result<Query<TokenQuery>, axum::extract::rejection::QueryRejection>;

/// Development only (`tern up`): anyone who can reach it gets a token, which
/// is why `tern serve` never mounts it.
async fn dev_token(State(app): State<Arc<App>>, q: TokenQueryResult) -> Response {
    if !app.dev_tokens {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "dev tokens are only served by `tern up`",
        );
    }
    mint_dev_token(&app.signaling.api_secret, q)
}

/// A room token valid for an hour, for whoever asks (development only).
pub fn mint_dev_token(api_secret: &[u8], q: TokenQueryResult) -> Response {
    let Ok(Query(q)) = q else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "room and identity are required",
        );
    };
    if q.room.is_empty() || q.room.len() > 128 || q.identity.is_empty() || q.identity.len() > 256 {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "room must be 1..=128 and identity 1..=256 bytes",
        );
    }
    let claims = Claims {
        room: q.room,
        sub: q.identity,
        exp: now_ms() / 1000 + 3600,
    };
    Json(json!({"token": token::mint(api_secret, &claims)})).into_response()
}

async fn healthz(State(app): State<Arc<App>>) -> Response {
    match app.directory.view(app.relay_view()).await {
        Ok(relays) => Json(json!({
            "status": "ok",
            "edge": app.edge,
            "connections": app.conns.len(),
            "relays_healthy": relays.iter().filter(|r| r.healthy).count(),
        }))
        .into_response(),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        ),
    }
}
