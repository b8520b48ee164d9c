//! Starting and running an edge: its store and component, the listener,
//! and the tasks that run beside the HTTP server (store flushes, the
//! housekeeping tick, the prober, the cross-edge bus, call retention).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;

use crate::edge::App;
use crate::store::Kv;

/// What an edge needs to start. Commands build it from their flags.
pub struct EdgeConfig {
    /// Address for HTTP and WebSocket clients.
    pub listen: SocketAddr,
    /// This edge's name, unique among edges sharing a store.
    pub edge: String,
    /// The store, opened.
    pub kv: Kv,
    pub api_secret: String,
    pub relay_secret: String,
    pub relay_stale_ms: u64,
    /// Serve `GET /v1/dev/token` (development only).
    pub dev_tokens: bool,
    pub session_grace_ms: u64,
    pub call_sweep_ms: u64,
    /// Bearer token of `GET /v1/calls` (off without one).
    pub calls_token: Option<String>,
    /// Frames per socket and sockets per address.
    pub limits: crate::edge::socket_limits::SocketLimits,
}

/// Load the component over the store and bind the listener.
pub async fn start(cfg: EdgeConfig) -> anyhow::Result<(Arc<App>, tokio::net::TcpListener)> {
    let mut signaling =
        edge_signaling::Config::new(cfg.api_secret.clone(), cfg.relay_secret.clone());
    signaling.edge = cfg.edge.clone();
    signaling.relay_stale_ms = cfg.relay_stale_ms;
    signaling.session_grace_ms = cfg.session_grace_ms;
    signaling.call_sweep_ms = cfg.call_sweep_ms;
    // The component reads its settings from its environment; keep it and
    // `signaling` (what this process judges with) the same.
    let env = BTreeMap::from([
        ("TERN_API_SECRET".to_string(), cfg.api_secret),
        ("TERN_RELAY_SECRET".to_string(), cfg.relay_secret),
        ("TERN_EDGE".to_string(), cfg.edge.clone()),
        (
            "TERN_RELAY_STALE_MS".to_string(),
            cfg.relay_stale_ms.to_string(),
        ),
        (
            "TERN_SESSION_GRACE_MS".to_string(),
            cfg.session_grace_ms.to_string(),
        ),
        (
            "TERN_CALL_SWEEP_MS".to_string(),
            cfg.call_sweep_ms.to_string(),
        ),
    ]);
    let host = tokio::task::spawn_blocking({
        let kv = cfg.kv.clone();
        move || crate::host::SignalingHost::new(crate::host::SIGNALING_WASM, env, kv)
    })
    .await??;
    let mut boot = [0u8; 4];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut boot);
    let app = Arc::new(App {
        host: Arc::new(host),
        kv: cfg.kv,
        conns: Default::default(),
        edge: cfg.edge,
        boot: hex::encode(boot),
        signaling,
        dev_tokens: cfg.dev_tokens,
        in_flight: tokio::sync::Semaphore::new(crate::edge::MAX_IN_FLIGHT),
        housekeeping: tokio::sync::Semaphore::new(crate::edge::MAX_HOUSEKEEPING),
        ticking: tokio::sync::Semaphore::new(crate::edge::MAX_TICKS),
        directory: Default::default(),
        tick_now: tokio::sync::Notify::new(),
        suspects: crate::probe::Suspects::new(),
        limits: cfg.limits,
        calls_token: cfg.calls_token,
        sockets_per_ip: Default::default(),
    });
    let listener = edge_relay::server::listen_stream(cfg.listen)
        .with_context(|| format!("binding {}", cfg.listen))?;
    Ok((app, listener))
}

/// How often an edge looks for calls to move off unhealthy relays: a bound
/// on how long rerouting lags behind detection.
const TICK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// Serve HTTP until ctrl-c or SIGTERM; flush the store on the way out.
pub async fn serve(app: Arc<App>, listener: tokio::net::TcpListener) -> anyhow::Result<()> {
    let flusher = spawn_flusher(app.kv.clone());
    tracing::info!(addr = %listener.local_addr()?, edge = %app.edge, "signaling listening");
    crate::edge::bus::spawn(app.clone());
    crate::probe::spawn(
        Arc::new(crate::edge::probes::EdgeProbes(app.clone())),
        &app.suspects,
    );
    crate::edge::calls::spawn_retention(
        app.clone(),
        crate::edge::calls::retention_days_from_env()?,
    );
    let ticker = {
        let app = app.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = app.tick_now.notified() => tick.reset(),
                }
                app.handle_tick().await;
            }
        })
    };
    let store = app.kv.clone();
    let listener = crate::edge::relay_link::EdgeListener(listener);
    // Each connection carries a Link: relays' heartbeat connections closing
    // is how a crashed relay is noticed first (relay_link.rs).
    let service = crate::edge::routes::router(app)
        .into_make_service_with_connect_info::<crate::edge::relay_link::Link>();
    axum::serve(listener, service)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    flusher.abort();
    ticker.abort();
    store.flush()?;
    Ok(())
}

/// Make the store's recent writes durable every
/// [`crate::store::FLUSH_INTERVAL`], off the async workers.
pub fn spawn_flusher(store: Kv) -> tokio::task::JoinHandle<()> {
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
}

pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
