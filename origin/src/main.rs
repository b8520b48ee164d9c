//! `tern`: the origin. Hosts the signaling component, terminates WebSockets,
//! keeps state in the embedded store, and in `tern up` runs local relays.

mod app;
mod assets;
mod backup;
mod bench;
mod bridge;
mod calls;
mod calls_cli;
mod calls_client;
mod component;
mod edge_bus;
mod gateway;
mod http;
mod kv;
mod prober;
mod redis_kv;
mod relay_link;
mod rtt_trend;
mod secrets;
mod spin;
mod store;
mod sync_gate;
mod up;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use edge_signaling::token::{self, Claims};

#[derive(Parser)]
#[command(
    name = "tern",
    version,
    about = "Tern: voice calls that survive failures"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run everything on one machine: signaling, the embedded store, and two
    /// local relay regions. Development and demo defaults.
    Up(up::UpArgs),
    /// Run an origin (signaling edge) only.
    Serve(ServeCommand),
    // Boxed: its many flags make it far larger than the other variants.
    /// Run a TURN relay that heartbeats into signaling (same as `tern-relay`).
    Relay(Box<edge_relay::server::Args>),
    /// Print a room token.
    Token(TokenArgs),
    /// Benchmarks (results go to docs/benchmarks.md).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Call records: list, filter and export.
    Calls(calls_cli::CallsArgs),
    /// Encrypted backups of Tern's state: make one, list them.
    Backup(backup::BackupArgs),
    /// Restore a backup into an empty store.
    Restore(backup::RestoreArgs),
    /// Terminate browser WebSockets and bridge them to a signaling host that
    /// speaks only the HTTP transport (a Spin app).
    Gateway(bridge::GatewayArgs),
    /// Serve the Spin app in spin.toml without Spin: the component's
    /// wasi:http export, one instance per request, origin's key-value store.
    Spin(spin::SpinArgs),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Per-frame cost through the wasm component and join→joined latency.
    Signaling(bench::BenchArgs),
    /// Backup and restore throughput on generated call records.
    Backup(backup::bench::BenchArgs),
}

#[derive(Args, Clone)]
pub struct ServeArgs {
    /// Address for HTTP and WebSocket clients.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Where the embedded store keeps its file.
    #[arg(long, default_value = ".tern")]
    pub data_dir: PathBuf,
    /// Name of this edge; unique among edges sharing a store. Letters,
    /// digits, '-' and '_' (it starts every connection id this edge makes).
    #[arg(long, default_value = "local", value_parser = parse_edge)]
    pub edge: String,
    /// State store: `embedded` (a redb file in --data-dir), `redis://host:port`
    /// or `redis+sentinel://host:port[,host:port…]/<service>`.
    #[arg(long, env = "TERN_KV", default_value = "embedded")]
    pub kv: String,
    /// Prefix of every key Tern writes in Redis.
    #[arg(long, default_value = "tern:")]
    pub kv_prefix: String,
    /// On Redis with replicas: how long the answer to a frame that wrote
    /// call records waits for a replica to acknowledge them (WAIT), so a
    /// failover cannot lose an acknowledged event. When none does in time
    /// the frame is answered anyway (and later ones do not wait until a
    /// replica catches up). 0: never wait. docs/kv-schema.md "Durability
    /// (Redis)".
    #[arg(long, env = "TERN_REDIS_REPLICA_WAIT_MS", default_value_t = 1000)]
    pub redis_replica_wait_ms: u64,
    /// HS256 secret room tokens are signed with.
    #[arg(long, env = "TERN_API_SECRET", hide_env_values = true)]
    pub api_secret: Option<String>,
    /// Secret shared with relays (TURN credentials and heartbeats).
    #[arg(long, env = "TERN_RELAY_SECRET", hide_env_values = true)]
    pub relay_secret: Option<String>,
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
}

/// `tern serve`: an origin, with scheduled backups if asked.
#[derive(Args)]
struct ServeCommand {
    #[command(flatten)]
    serve: ServeArgs,
    #[command(flatten)]
    backup: backup::ScheduleArgs,
}

#[derive(Args)]
struct TokenArgs {
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
    #[arg(long, default_value = ".tern")]
    data_dir: PathBuf,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,wasmtime=warn,cranelift=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Token(t) => {
            let secret = match t.api_secret {
                Some(s) => s,
                None => secrets::load_or_create(&t.data_dir)?.api_secret,
            };
            let claims = Claims {
                room: t.room,
                sub: t.identity,
                exp: app::now_ms() / 1000 + t.ttl,
            };
            println!("{}", token::mint(secret.as_bytes(), &claims));
            Ok(())
        }
        Command::Serve(ServeCommand {
            serve: args,
            backup,
        }) => runtime()?.block_on(async {
            let meta = backup::serve_meta(&args);
            let (app, listener) = start(args).await?;
            let _backups = backup::spawn_schedule(app.kv.clone(), &backup, None, meta)?;
            serve(app, listener).await
        }),
        Command::Up(args) => runtime()?.block_on(up::run(args)),
        Command::Relay(args) => runtime()?.block_on(edge_relay::server::run(*args)),
        Command::Bench(BenchCommand::Signaling(args)) => bench::run(args),
        Command::Bench(BenchCommand::Backup(args)) => backup::bench::run(args),
        Command::Calls(args) => calls_cli::run(args),
        Command::Backup(args) => backup::run(args),
        Command::Restore(args) => backup::restore(args),
        Command::Gateway(args) => runtime()?.block_on(bridge::run(args)),
        Command::Spin(args) => runtime()?.block_on(spin::run(args)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
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

/// Open the store, load the component and bind the listener.
pub async fn start(args: ServeArgs) -> anyhow::Result<(Arc<app::App>, tokio::net::TcpListener)> {
    let kv = if args.kv == "embedded" {
        kv::Kv::Embedded(store::EmbeddedStore::open(&args.data_dir)?)
    } else {
        let (url, prefix) = (args.kv.clone(), args.kv_prefix.clone());
        let wait = std::time::Duration::from_millis(args.redis_replica_wait_ms);
        let r = tokio::task::spawn_blocking(move || {
            let mut r = redis_kv::RedisKv::connect(&url, &prefix)?;
            if !wait.is_zero() {
                r.enable_replica_wait(wait)?;
            }
            Ok::<_, store::StoreError>(r)
        })
        .await?
        .with_context(|| format!("connecting to {}", args.kv))?;
        kv::Kv::Redis(Arc::new(r))
    };
    let (api_secret, relay_secret) = match (args.api_secret, args.relay_secret) {
        (Some(a), Some(r)) => (a, r),
        (a, r) => {
            let s = secrets::load_or_create(&args.data_dir)?;
            (a.unwrap_or(s.api_secret), r.unwrap_or(s.relay_secret))
        }
    };
    let mut cfg = edge_signaling::Config::new(api_secret.clone(), relay_secret.clone());
    cfg.edge = args.edge.clone();
    cfg.relay_stale_ms = args.relay_stale_ms;
    cfg.session_grace_ms = args.session_grace_ms;
    cfg.call_sweep_ms = args.call_sweep_ms;
    // The component reads its settings from its environment; keep it and
    // `cfg` (what this process judges with) the same.
    let env = BTreeMap::from([
        ("TERN_API_SECRET".to_string(), api_secret),
        ("TERN_RELAY_SECRET".to_string(), relay_secret),
        ("TERN_EDGE".to_string(), args.edge.clone()),
        (
            "TERN_RELAY_STALE_MS".to_string(),
            args.relay_stale_ms.to_string(),
        ),
        (
            "TERN_SESSION_GRACE_MS".to_string(),
            args.session_grace_ms.to_string(),
        ),
        (
            "TERN_CALL_SWEEP_MS".to_string(),
            args.call_sweep_ms.to_string(),
        ),
    ]);
    let host = tokio::task::spawn_blocking({
        let kv = kv.clone();
        move || component::SignalingHost::new(component::SIGNALING_WASM, env, kv)
    })
    .await??;
    let mut boot = [0u8; 4];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut boot);
    let app = Arc::new(app::App {
        host: Arc::new(host),
        kv,
        conns: Default::default(),
        edge: args.edge,
        boot: hex::encode(boot),
        signaling: cfg,
        dev_tokens: args.dev_tokens,
        in_flight: tokio::sync::Semaphore::new(app::MAX_IN_FLIGHT),
        housekeeping: tokio::sync::Semaphore::new(app::MAX_HOUSEKEEPING),
        tick_now: tokio::sync::Notify::new(),
        suspects: prober::Suspects::new(),
    });
    let listener = edge_relay::server::listen_stream(args.listen)
        .with_context(|| format!("binding {}", args.listen))?;
    Ok((app, listener))
}

/// How often an edge looks for calls to move off unhealthy relays: a bound
/// on how long rerouting lags behind detection.
const TICK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// Serve HTTP until ctrl-c or SIGTERM; flush the store on the way out.
pub async fn serve(app: Arc<app::App>, listener: tokio::net::TcpListener) -> anyhow::Result<()> {
    let flusher = {
        let store = app.kv.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(store::FLUSH_INTERVAL);
            loop {
                tick.tick().await;
                let s = store.clone();
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || s.flush()).await {
                    tracing::error!(error = %e, "store flush failed");
                }
            }
        })
    };
    tracing::info!(addr = %listener.local_addr()?, edge = %app.edge, "signaling listening");
    edge_bus::spawn(app.clone());
    prober::spawn(app.clone());
    calls::spawn_retention(app.clone(), calls::retention_days_from_env()?);
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
    let listener = relay_link::EdgeListener(listener);
    // Each connection carries a Link: relays' heartbeat connections closing
    // is how a crashed relay is noticed first (relay_link.rs).
    let service = http::router(app).into_make_service_with_connect_info::<relay_link::Link>();
    axum::serve(listener, service)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    flusher.abort();
    ticker.abort();
    store.flush()?;
    Ok(())
}

pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
