//! `tern serve`: one signaling edge (origin), with scheduled backups if
//! asked.

use std::net::SocketAddr;

use clap::Args;
use tern_common::secret;

use crate::cmd::{secrets, StoreArgs, DEFAULT_DATA_DIR};
use crate::edge::serve::EdgeConfig;
use crate::edge::socket_limits::SocketLimits;

#[derive(Args, Clone)]
pub struct ServeArgs {
    /// Address for HTTP and WebSocket clients.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Name of this edge; unique among edges sharing a store. Letters,
    /// digits, '-' and '_' (it starts every connection id this edge makes).
    #[arg(long, default_value = "local", value_parser = parse_edge)]
    pub edge: String,
    /// HS256 secret room tokens are signed with.
    #[arg(long, env = "TERN_API_SECRET", hide_env_values = true)]
    pub api_secret: Option<String>,
    /// Secret shared with relays (TURN credentials and heartbeats).
    #[arg(long, env = "TERN_RELAY_SECRET", hide_env_values = true)]
    pub relay_secret: Option<String>,
    /// Bearer token that reads call records (`GET /v1/calls`, `tern calls
    /// --url`); at least 32 bytes. Without it the calls API is off.
    #[arg(long, env = "TERN_CALLS_TOKEN", hide_env_values = true)]
    pub calls_token: Option<String>,
    /// A relay is unhealthy once its last heartbeat is older than this.
    #[arg(long, default_value_t = 1500)]
    pub relay_stale_ms: u64,
    /// Serve `GET /v1/dev/token` (anyone can get a token: development only).
    #[arg(long)]
    pub dev_tokens: bool,
    /// How long a participant whose connection dropped keeps its place (to
    /// resume) before it leaves with reason `timeout`.
    #[arg(long, env = "TERN_SESSION_GRACE_MS", default_value_t = edge_signaling::Config::DEFAULT_SESSION_GRACE_MS)]
    pub session_grace_ms: u64,
    /// How often, at most, this edge sweeps open calls for participants
    /// away past the grace period (each sweep lists every open call).
    #[arg(long, env = "TERN_CALL_SWEEP_MS", default_value_t = edge_signaling::Config::DEFAULT_CALL_SWEEP_MS)]
    pub call_sweep_ms: u64,
    /// Frames per second one WebSocket may send, sustained; faster ones
    /// wait (the socket is not read meanwhile). 0 = no limit.
    #[arg(long, default_value_t = SocketLimits::default().frames_per_sec)]
    pub frames_per_sec: u32,
    /// Frames one WebSocket may send at once after a quiet spell.
    #[arg(long, default_value_t = SocketLimits::default().frame_burst)]
    pub frame_burst: u32,
    /// WebSockets open at once from one client address (IPv6: one /64);
    /// more get 429. Behind a reverse proxy every client has the proxy's
    /// address: set 0 (no limit) and limit at the proxy. 0 = no limit.
    #[arg(long, default_value_t = SocketLimits::default().sockets_per_ip)]
    pub sockets_per_ip: usize,
}

/// `tern serve`'s flags: an edge, and its backup schedule.
#[derive(Args)]
pub struct ServeCommand {
    #[command(flatten)]
    serve: ServeArgs,
    #[command(flatten)]
    backup: crate::backup::ScheduleArgs,
}

fn parse_edge(s: &str) -> Result<String, String> {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        Ok(s.to_string())
    } else {
        Err("edge names use letters, digits, '-' and '_'".into())
    }
}

impl ServeArgs {
    /// The edge these flags describe: the store opened, missing secrets
    /// taken from (or made in) the data directory.
    pub async fn config(&self) -> anyhow::Result<EdgeConfig> {
        let dir = self.store.data_dir_or(DEFAULT_DATA_DIR);
        let (api_secret, relay_secret) = match (&self.api_secret, &self.relay_secret) {
            (Some(a), Some(r)) => (a.clone(), r.clone()),
            // Secrets made up here live in this edge's data directory: on a
            // shared store every edge would have its own, and refuse the
            // others' tokens, relays and heartbeats.
            _ if self.store.is_shared() => anyhow::bail!(
                "edges sharing a store must share their secrets: set TERN_API_SECRET and \
                 TERN_RELAY_SECRET (or --api-secret and --relay-secret) on every edge"
            ),
            (a, r) => {
                let s = secrets::load_or_create(&dir)?;
                (
                    a.clone().unwrap_or(s.api_secret),
                    r.clone().unwrap_or(s.relay_secret),
                )
            }
        };
        secret::check("TERN_API_SECRET", api_secret.as_bytes())?;
        secret::check("TERN_RELAY_SECRET", relay_secret.as_bytes())?;
        if let Some(t) = &self.calls_token {
            secret::check("TERN_CALLS_TOKEN", t.as_bytes())?;
        }
        let kv = {
            let (store, dir) = (self.store.clone(), dir.clone());
            tokio::task::spawn_blocking(move || store.open(&dir)).await??
        };
        Ok(EdgeConfig {
            listen: self.listen,
            edge: self.edge.clone(),
            kv,
            api_secret,
            relay_secret,
            relay_stale_ms: self.relay_stale_ms,
            dev_tokens: self.dev_tokens,
            session_grace_ms: self.session_grace_ms,
            call_sweep_ms: self.call_sweep_ms,
            calls_token: self.calls_token.clone(),
            limits: SocketLimits {
                frames_per_sec: self.frames_per_sec,
                frame_burst: self.frame_burst,
                sockets_per_ip: self.sockets_per_ip,
            },
        })
    }

    /// The non-secret part of this config, recorded in backups.
    pub fn backup_meta(&self) -> serde_json::Value {
        serde_json::json!({
            "edge": self.edge,
            "listen": self.listen.to_string(),
            "kv": crate::store::redact_url(&self.store.kv),
            "kv_prefix": self.store.kv_prefix,
            "relay_stale_ms": self.relay_stale_ms,
        })
    }
}

pub async fn run(args: ServeCommand) -> anyhow::Result<()> {
    let meta = args.serve.backup_meta();
    let (app, listener) = crate::edge::serve::start(args.serve.config().await?).await?;
    let _backups = crate::backup::spawn_schedule(app.kv.clone(), &args.backup, None, meta)?;
    crate::edge::serve::serve(app, listener).await
}
