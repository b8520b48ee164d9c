//! `tern token`: print a room token (what an app's server mints).

use std::path::PathBuf;

use clap::Args;
use edge_signaling::token::{self, Claims};

#[derive(Args)]
pub struct TokenArgs {
    #[arg(long)]
    room: String,
    #[arg(long)]
    identity: String,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
    /// Secret to sign with; defaults to the one `tern up` keeps in --data-dir.
    #[arg(long, env = "TERN_API_SECRET", hide_env_values = true)]
    api_secret: Option<String>,
    #[arg(long, default_value = crate::cmd::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
}

pub fn run(t: TokenArgs) -> anyhow::Result<()> {
    let secret = match t.api_secret {
        Some(s) => s,
        None => crate::cmd::secrets::load_or_create(&t.data_dir)?.api_secret,
    };
    let claims = Claims {
        room: t.room,
        sub: t.identity,
        exp: crate::edge::now_ms() / 1000 + t.ttl,
    };
    println!("{}", token::mint(secret.as_bytes(), &claims));
    Ok(())
}
