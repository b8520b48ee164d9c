//! The Worker's entry point: routes each public request to the Durable
//! Object that owns it. It holds no state and runs no protocol.
//!
//! | request | object |
//! |---|---|
//! | `GET /v1/signal?room=R` (WebSocket) | room `R` |
//! | `POST /v1/relays/heartbeat`, `GET /v1/relays`, `GET /healthz` | the relay directory |
//!
//! Only these paths reach the objects, so their internal paths
//! ([`crate::wire`]) cannot be called from outside.

use worker::{Env, Method, Request, Response};

use crate::objects;

/// Room names are 1–128 bytes (docs/protocol.md, `join`).
const MAX_ROOM_BYTES: usize = 128;

pub async fn handle(req: Request, env: Env) -> worker::Result<Response> {
    match (req.method(), req.path().as_str()) {
        (Method::Get, "/v1/signal") => signal(req, &env).await,
        (Method::Post, "/v1/relays/heartbeat") | (Method::Get, "/v1/relays" | "/healthz") => {
            objects::directory(&env)?.fetch_with_request(req).await
        }
        _ => Response::error("not found", 404),
    }
}

/// A WebSocket for protocol v1. The room's object must hold the socket, and
/// the first frame (which names the room) has not arrived yet, so the room
/// comes in the URL; the object refuses a `join` for another room.
async fn signal(req: Request, env: &Env) -> worker::Result<Response> {
    let room = req
        .url()?
        .query_pairs()
        .find(|(k, _)| k == "room")
        .map(|(_, v)| v.into_owned());
    let Some(room) = room.filter(|r| !r.is_empty() && r.len() <= MAX_ROOM_BYTES) else {
        return Response::error(
            "connect to /v1/signal?room=<room> (1-128 bytes): on this host a socket belongs to one room",
            400,
        );
    };
    objects::room(env, &room)?.fetch_with_request(req).await
}
