//! Harness for Tern's integration tests: starts real processes (origins,
//! relays, Redis, Spin, wrangler) on loopback and speaks protocol v1 to them
//! like a client would. Used by the tests in tests/tests/.
//!
//! One module per kind of process ([`origin`], [`relay`], [`redis`],
//! [`spin_app`] for `tern spin`, [`spin_up`] for real Spin, [`cloudflare`]
//! for `wrangler dev`), one per client transport ([`client`]), and the
//! conformance suite every host must pass ([`conformance`]). Everything a
//! test file needs is re-exported here (`use tern_tests::*`).

pub mod client;
pub mod cloudflare;
pub mod conformance;
pub mod http;
pub mod origin;
pub mod process;
pub mod redis;
pub mod relay;
pub mod spin_app;
pub mod spin_up;
pub mod token;

pub use client::http::HttpClient;
pub use client::Client;
pub use http::{http_get, http_post};
pub use origin::{healthy_ids, relay_directory, wait_healthy_relays_at, Origin};
pub use process::{bin, free_tcp_port, free_udp_port, wait_until, Proc};
pub use redis::{redis_cli, start_redis, start_sentinel, start_sentinel_with};
pub use relay::{start_relay, start_relay_at, start_relay_with};
pub use spin_app::SpinApp;
pub use token::{token, API_SECRET, CALLS_TOKEN, RELAY_SECRET};
