//! Running the Spin app described by `spin.toml` without Spin (`tern
//! spin`, a stand-in for tests and development; real Spin runs the same
//! artifact, docs/spin.md). This host reads the
//! manifest like Spin's HTTP trigger does (route, component source,
//! environment, the `default` key-value store), links the same interfaces
//! Spin 4.0.x provides to such a component (WASI 0.2, wasi:http 0.2,
//! wasi:keyvalue@0.2.0-draft2 with atomics) and serves HTTP with one fresh
//! instance per request, as Spin does. The key-value store is origin's
//! (embedded redb or Redis), so a `tern spin` and `tern serve` can share one.

pub mod manifest;
pub mod server;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;

use crate::store::Kv;

/// Secrets a deployment passes with `spin up --env`; taken from this
/// process's environment when set, so they never have to be on a command line.
const PASSED_THROUGH: &[&str] = &["TERN_API_SECRET", "TERN_RELAY_SECRET"];

/// Serve the app `manifest` describes (its component `component`, or the
/// only one) on `listen` over `kv`, with `env` on top of the manifest's
/// environment, until ctrl-c or SIGTERM.
pub async fn run(
    manifest: &std::path::Path,
    component: Option<&str>,
    listen: SocketAddr,
    kv: Kv,
    extra_env: &[(String, String)],
) -> anyhow::Result<()> {
    let app = manifest::load(manifest, component)?;
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
    env.extend(extra_env.iter().cloned());
    let host = tokio::task::spawn_blocking({
        let kv = kv.clone();
        move || server::SpinHost::new(&wasm, env.into_iter().collect(), kv, app)
    })
    .await??;
    let listener =
        edge_relay::server::listen_stream(listen).with_context(|| format!("binding {listen}"))?;
    let flusher = crate::edge::serve::spawn_flusher(kv.clone());
    tracing::info!(addr = %listener.local_addr()?, "serving the Spin app");
    tokio::select! {
        r = server::serve(Arc::new(host), listener) => r?,
        _ = crate::edge::serve::shutdown_signal() => {}
    }
    flusher.abort();
    kv.flush()?;
    Ok(())
}
