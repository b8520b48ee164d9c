//! `tern spin`: serve the Spin app in spin.toml without Spin
//! ([`crate::spin`]).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

#[derive(Args)]
pub struct SpinArgs {
    /// The Spin manifest.
    #[arg(long, default_value = "spin.toml")]
    pub manifest: PathBuf,
    /// Which HTTP-triggered component to serve (default: the only one).
    #[arg(long)]
    pub component: Option<String>,
    /// Address to serve HTTP on (Spin's default port).
    #[arg(long, default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,
    /// Key-value store behind bucket `default` (as `tern serve`; the
    /// embedded store's default directory is `.tern-spin`).
    #[command(flatten)]
    pub store: crate::cmd::StoreArgs,
    /// Extra environment for the component, `NAME=VALUE` (like `spin up
    /// --env`); overrides the manifest's `environment`.
    #[arg(long = "env", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| "expected NAME=VALUE".into())
}

/// Where `tern spin` keeps its embedded store unless told.
const DEFAULT_SPIN_DATA_DIR: &str = ".tern-spin";

pub async fn run(args: SpinArgs) -> anyhow::Result<()> {
    let dir = args.store.data_dir_or(DEFAULT_SPIN_DATA_DIR);
    let kv = {
        let store = args.store.clone();
        tokio::task::spawn_blocking(move || store.open(&dir)).await??
    };
    crate::spin::run(
        &args.manifest,
        args.component.as_deref(),
        args.listen,
        kv,
        &args.env,
    )
    .await
}
