//! Tern's signaling core as a Cloudflare Worker (docs/deploy.md, "Cloudflare
//! Workers").
//!
//! The same sans-IO core that origin and Spin host, driven by Cloudflare's
//! primitives instead of a shared key-value store:
//!
//! * [`room::Room`], a Durable Object per room, terminates the room's
//!   WebSockets (`GET /v1/signal?room=R`) with the hibernation API and keeps
//!   the room's keys in its own storage. It is the room's only writer, so an
//!   in-memory copy of those keys is exact and the core reads it synchronously.
//! * [`directory::RelayDirectory`], one strongly consistent Durable Object,
//!   takes signed relay heartbeats, serves `GET /v1/relays`, hands rooms the
//!   directory when they choose a relay, and checks relay health from an
//!   alarm every [`directory::CHECK_MS`]: rooms on a relay that stopped
//!   heartbeating are told, and push `reroute` frames to their sockets.
//! * The Worker itself ([`route`]) only routes requests to those objects.
//!
//! The pure modules ([`keyspace`], [`store`], [`wire`]) build and are tested
//! natively; the rest needs the Workers runtime and is wasm32-only.

pub mod keyspace;
pub mod store;
pub mod wire;

#[cfg(target_arch = "wasm32")]
pub mod config;
#[cfg(target_arch = "wasm32")]
pub mod directory;
#[cfg(target_arch = "wasm32")]
pub mod host;
#[cfg(target_arch = "wasm32")]
pub mod objects;
#[cfg(target_arch = "wasm32")]
pub mod persist;
#[cfg(target_arch = "wasm32")]
pub mod room;
#[cfg(target_arch = "wasm32")]
pub mod route;
#[cfg(target_arch = "wasm32")]
pub mod sockets;

#[cfg(target_arch = "wasm32")]
#[worker::event(fetch)]
async fn fetch(
    req: worker::Request,
    env: worker::Env,
    _ctx: worker::Context,
) -> worker::Result<worker::Response> {
    route::handle(req, env).await
}
