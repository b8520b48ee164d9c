//! The component's settings, from environment variables: origin sets them
//! per instance, Spin per component (`[component.x] environment`).

use edge_signaling::kv::KvError;
use edge_signaling::Config;
use tern_common::secret;

fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// The core's configuration. Missing or weak secrets (shorter than
/// [`secret::MIN_SECRET_BYTES`]; `spin up --env TERN_API_SECRET=` with the
/// variable unset gives an empty one) are reported as a store-like failure
/// (`unavailable`): the deployment is broken, not the client, and nothing
/// is signed or accepted with them.
pub fn load() -> Result<Config, KvError> {
    let api = std::env::var("TERN_API_SECRET")
        .map_err(|_| KvError("component has no TERN_API_SECRET".into()))?;
    let relay = std::env::var("TERN_RELAY_SECRET")
        .map_err(|_| KvError("component has no TERN_RELAY_SECRET".into()))?;
    secret::check("TERN_API_SECRET", api.as_bytes()).map_err(|e| KvError(e.to_string()))?;
    secret::check("TERN_RELAY_SECRET", relay.as_bytes()).map_err(|e| KvError(e.to_string()))?;
    let mut c = Config::new(api, relay);
    if let Ok(edge) = std::env::var("TERN_EDGE") {
        c.edge = edge;
    }
    if let Some(v) = env("TERN_MAX_ROOM_SIZE") {
        c.max_room_size = v;
    }
    if let Some(v) = env("TERN_RELAY_STALE_MS") {
        c.relay_stale_ms = v;
    }
    if let Some(v) = env("TERN_SESSION_GRACE_MS") {
        c.session_grace_ms = v;
    }
    if let Some(v) = env("TERN_TURN_TTL_SECS") {
        c.turn_ttl_secs = v;
    }
    if let Some(v) = env("TERN_CALL_SWEEP_MS") {
        c.call_sweep_ms = v;
    }
    Ok(c)
}
