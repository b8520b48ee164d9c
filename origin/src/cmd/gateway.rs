//! `tern gateway`: browser WebSockets in front of a signaling host that only
//! speaks the HTTP transport ([`crate::gateway`]).

use std::net::SocketAddr;

use clap::Args;

use crate::edge::socket_limits::SocketLimits;
use crate::gateway::GatewayConfig;

#[derive(Args)]
pub struct GatewayArgs {
    /// Address for browsers (WebSocket at /v1/signal, the demo and the SDK).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The HTTP transport of the signaling host, e.g.
    /// `https://tern.example.fermyon.app/v1/http`.
    #[arg(long, env = "TERN_UPSTREAM")]
    upstream: String,
    /// Serve `GET /v1/dev/token` signed with --api-secret (development only).
    #[arg(long)]
    dev_tokens: bool,
    /// HS256 secret for dev tokens (the signaling host's API secret).
    #[arg(long, env = "TERN_API_SECRET", hide_env_values = true)]
    api_secret: Option<String>,
    /// Frames per second one WebSocket may send, sustained; faster ones
    /// wait. 0 = no limit.
    #[arg(long, default_value_t = SocketLimits::default().frames_per_sec)]
    frames_per_sec: u32,
    /// Frames one WebSocket may send at once after a quiet spell.
    #[arg(long, default_value_t = SocketLimits::default().frame_burst)]
    frame_burst: u32,
    /// WebSockets open at once from one client address (IPv6: one /64);
    /// more get 429. 0 = no limit.
    #[arg(long, default_value_t = SocketLimits::default().sockets_per_ip)]
    sockets_per_ip: usize,
}

pub async fn run(args: GatewayArgs) -> anyhow::Result<()> {
    let dev_secret = match (args.dev_tokens, args.api_secret) {
        (false, _) => None,
        (true, Some(s)) => Some(s.into_bytes()),
        (true, None) => anyhow::bail!("--dev-tokens needs --api-secret (or TERN_API_SECRET)"),
    };
    crate::gateway::run(GatewayConfig {
        listen: args.listen,
        upstream: args.upstream,
        dev_secret,
        limits: SocketLimits {
            frames_per_sec: args.frames_per_sec,
            frame_burst: args.frame_burst,
            sockets_per_ip: args.sockets_per_ip,
        },
    })
    .await
}
