//! The core's settings, from the Worker's bindings: the two secrets (set with
//! `wrangler secret put`, or `--var` for `wrangler dev`) and optional vars
//! with the same names the wasm component reads from its environment.

use edge_signaling::Config;
use worker::Env;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("the Worker has no {0} secret (wrangler secret put {0})")]
    Missing(&'static str),
    #[error("{name} is not a number: {value:?}")]
    NotANumber { name: &'static str, value: String },
    #[error(transparent)]
    Weak(#[from] tern_common::secret::WeakSecret),
}

/// A secret, or a plain var of the same name (`wrangler dev --var`).
fn text(env: &Env, name: &str) -> Option<String> {
    env.secret(name)
        .map(|s| s.to_string())
        .or_else(|_| env.var(name).map(|v| v.to_string()))
        .ok()
}

fn number<T: std::str::FromStr>(env: &Env, name: &'static str) -> Result<Option<T>, ConfigError> {
    match text(env, name) {
        None => Ok(None),
        Some(value) => value
            .parse()
            .map(Some)
            .map_err(|_| ConfigError::NotANumber { name, value }),
    }
}

pub fn from_env(env: &Env) -> Result<Config, ConfigError> {
    let api = text(env, "TERN_API_SECRET").ok_or(ConfigError::Missing("TERN_API_SECRET"))?;
    let relay = text(env, "TERN_RELAY_SECRET").ok_or(ConfigError::Missing("TERN_RELAY_SECRET"))?;
    tern_common::secret::check("TERN_API_SECRET", api.as_bytes())?;
    tern_common::secret::check("TERN_RELAY_SECRET", relay.as_bytes())?;
    let mut c = Config::new(api, relay);
    c.edge = text(env, "TERN_EDGE").unwrap_or_else(|| "cloudflare".into());
    // Loss reports live in each room's object (keyspace.rs): a verdict moves
    // only the room that reached it.
    c.room_local_evidence = true;
    if let Some(v) = number(env, "TERN_MAX_ROOM_SIZE")? {
        c.max_room_size = v;
    }
    if let Some(v) = number(env, "TERN_RELAY_STALE_MS")? {
        c.relay_stale_ms = v;
    }
    if let Some(v) = number(env, "TERN_SESSION_GRACE_MS")? {
        c.session_grace_ms = v;
    }
    if let Some(v) = number(env, "TERN_TURN_TTL_SECS")? {
        c.turn_ttl_secs = v;
    }
    if let Some(v) = number(env, "TERN_CALL_SWEEP_MS")? {
        c.call_sweep_ms = v;
    }
    Ok(c)
}
