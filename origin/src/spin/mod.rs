//! `tern spin`: run the Spin app described by `spin.toml` without Spin.
//!
//! The Spin CLI is not always at hand (CI here cannot install it), yet the
//! artifact Spin would run must be exercised end to end. This host reads the
//! manifest like Spin's HTTP trigger does (route, component source,
//! environment, the `default` key-value store), links the same interfaces
//! Spin 4.0.x provides to such a component (WASI 0.2, wasi:http 0.2,
//! wasi:keyvalue@0.2.0-draft2 with atomics) and serves HTTP with one fresh
//! instance per request, as Spin does. The key-value store is origin's
//! (embedded redb or Redis), so a `tern spin` and `tern serve` can share one.

mod manifest;
mod server;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;

use crate::kv::Kv;

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
    /// Key-value store behind bucket `default`: `embedded` (a redb file in
    /// --data-dir) or `redis://host:port` (as `tern serve`).
    #[arg(long, env = "TERN_KV", default_value = "embedded")]
    pub kv: String,
    /// Prefix of every key in Redis (as `tern serve`).
    #[arg(long, default_value = "tern:")]
    pub kv_prefix: String,
    /// Where the embedded store keeps its file.
    #[arg(long, default_value = ".tern-spin")]
    pub data_dir: PathBuf,
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

/// Secrets a deployment passes with `spin up --env`; taken from this
/// process's environment when set, so they never have to be on a command line.
const PASSED_THROUGH: &[&str] = &["TERN_API_SECRET", "TERN_RELAY_SECRET"];

pub async fn run(args: SpinArgs) -> anyhow::Result<()> {
    let app = manifest::load(&args.manifest, args.component.as_deref())?;
    let wasm = std::fs::read(&app.source).with_context(|| {
        format!(
            "reading the component {} (build it first: the manifest's [component.{}.build] command)",
            app.source.display(),
            app.component
        )
    })?;
    let mut env: BTreeMap<String, String> = app.environment.clone();
    for name in PASSED_THROUGH {
        if let Ok(v) = std::env::var(name) {
            env.insert(name.to_string(), v);
        }
    }
    env.extend(args.env.iter().cloned());
    let kv = if args.kv == "embedded" {
        Kv::Embedded(crate::store::EmbeddedStore::open(&args.data_dir)?)
    } else {
        let (url, prefix) = (args.kv.clone(), args.kv_prefix.clone());
        let r =
            tokio::task::spawn_blocking(move || crate::redis_kv::RedisKv::connect(&url, &prefix))
                .await?
                .with_context(|| format!("connecting to {}", args.kv))?;
        Kv::Redis(Arc::new(r))
    };
    let host = tokio::task::spawn_blocking({
        let kv = kv.clone();
        move || server::SpinHost::new(&wasm, env.into_iter().collect(), kv, app)
    })
    .await??;
    let listener = edge_relay::server::listen_stream(args.listen)
        .with_context(|| format!("binding {}", args.listen))?;
    let flusher = {
        let store = kv.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(crate::store::FLUSH_INTERVAL);
            loop {
                tick.tick().await;
                let s = store.clone();
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || s.flush()).await {
                    tracing::error!(error = %e, "store flush failed");
                }
            }
        })
    };
    tracing::info!(addr = %listener.local_addr()?, "serving the Spin app");
    tokio::select! {
        r = server::serve(Arc::new(host), listener) => r?,
        _ = crate::shutdown_signal() => {}
    }
    flusher.abort();
    kv.flush()?;
    Ok(())
}
