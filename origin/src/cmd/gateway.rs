//! `tern gateway`: browser WebSockets in front of a signaling host that only
//! speaks the HTTP transport ([`crate::gateway`]).

use std::net::SocketAddr;

use clap::Args;

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
    })
    .await
}
