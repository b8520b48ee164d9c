//! `tern up`: the whole system on one machine with zero setup. An origin on
//! the embedded store plus one relay process per local region, each relay a
//! child process of `tern` (the same binary, `tern relay`), heartbeating
//! into this origin like a relay on another VM would.
//!
//! Each relay listens for TURN over UDP, TCP and TLS (a self-signed
//! certificate in the data dir), so browsers get `turn:…?transport=udp`,
//! `turn:…?transport=tcp` and `turns:…?transport=tcp` URLs from signaling.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;

use anyhow::Context as _;
use clap::Args;
use tokio::process::{Child, Command};

use crate::cmd::serve::ServeArgs;
use crate::edge::socket_limits::SocketLimits;

#[derive(Args)]
pub struct UpArgs {
    /// Address for HTTP and WebSocket clients.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Where the embedded store and dev secrets live.
    #[arg(long, default_value = crate::cmd::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// Regions to start one local relay in, each on the next TURN port.
    #[arg(long, value_delimiter = ',', default_value = "local-a,local-b")]
    regions: Vec<String>,
    /// TURN port of the first region's relay.
    #[arg(long, default_value_t = 3478)]
    relay_port: u16,
    /// Address the local relays listen and relay on.
    #[arg(long, default_value = "127.0.0.1")]
    relay_ip: IpAddr,
    /// TURN-over-TCP port of the first region's relay (next ones +1 each);
    /// 0 lets the kernel choose, which is what parallel test runs need. The
    /// relays publish the ports they got in their heartbeats.
    #[arg(long, default_value_t = 0)]
    relay_tcp_port: u16,
    /// TURN-over-TLS port of the first region's relay, as --relay-tcp-port.
    #[arg(long, default_value_t = 0)]
    relay_tls_port: u16,
    /// Do not back up on a schedule (by default every 5 minutes to
    /// <data-dir>/backups, with a key generated in <data-dir>/backup.key).
    #[arg(long)]
    no_backups: bool,
    #[command(flatten)]
    backup: crate::backup::ScheduleArgs,
}

struct RelayChild {
    id: String,
    region: String,
    addr: SocketAddr,
    child: Child,
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let secrets = crate::cmd::secrets::load_or_create(&args.data_dir)?;
    let serve = ServeArgs {
        listen: args.listen,
        store: crate::cmd::StoreArgs::embedded(&args.data_dir),
        edge: "local".into(),
        api_secret: Some(secrets.api_secret),
        relay_secret: Some(secrets.relay_secret.clone()),
        calls_token: std::env::var("TERN_CALLS_TOKEN").ok(),
        relay_stale_ms: 1500,
        dev_tokens: true,
        session_grace_ms: edge_signaling::Config::DEFAULT_SESSION_GRACE_MS,
        call_sweep_ms: edge_signaling::Config::DEFAULT_CALL_SWEEP_MS,
        frames_per_sec: SocketLimits::default().frames_per_sec,
        frame_burst: SocketLimits::default().frame_burst,
        sockets_per_ip: SocketLimits::default().sockets_per_ip,
    };
    let meta = serve.backup_meta();
    let (app, listener) = crate::edge::serve::start(serve.config().await?).await?;
    let http = listener.local_addr()?;

    // Backups on by default, next to the data: a key beside its backups
    // protects nothing, which is fine for development only
    // (docs/backups.md says how to run them for real).
    let mut schedule = args.backup.clone();
    if args.no_backups {
        schedule.to = None;
    } else if schedule.to.is_none() {
        schedule.to = Some(args.data_dir.join("backups").display().to_string());
    }
    let _backups = crate::backup::spawn_schedule(
        app.kv.clone(),
        &schedule,
        Some(args.data_dir.join("backup.key")),
        meta,
    )?;

    // One self-signed certificate for every local relay (browsers in tests
    // run with --ignore-certificate-errors; a real deployment has real ones).
    let tls_dir = args.data_dir.join("relay-tls");
    let (cert, key) = (tls_dir.join("cert.pem"), tls_dir.join("key.pem"));
    edge_relay::server::tls::ensure_self_signed(
        &cert,
        &key,
        &["localhost".to_owned(), args.relay_ip.to_string()],
    )?;
    let port_for = |first: u16, i: usize| if first == 0 { 0 } else { first + i as u16 };

    let exe = std::env::current_exe().context("finding the tern executable")?;
    let mut relays = Vec::new();
    for (i, region) in args.regions.iter().enumerate() {
        let addr = SocketAddr::new(args.relay_ip, args.relay_port + i as u16);
        let tcp = SocketAddr::new(args.relay_ip, port_for(args.relay_tcp_port, i));
        let tls = SocketAddr::new(args.relay_ip, port_for(args.relay_tls_port, i));
        let id = format!("{region}-1");
        let mut cmd = Command::new(&exe);
        cmd.arg("relay")
            .args(["--id", &id, "--region", region])
            .args(["--listen", &addr.to_string()])
            .args(["--listen-tcp", &tcp.to_string()])
            .args(["--listen-tls", &tls.to_string()])
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .args(["--signaling", &format!("http://{http}")])
            // Local relays relay between local browsers, so loopback peers
            // must be allowed here (refused by default everywhere else).
            .args(["--allow-peer", "127.0.0.0/8", "--allow-peer", "::1/128"])
            .env("TERN_RELAY_SECRET", &secrets.relay_secret)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting relay {id}"))?;
        relays.push(RelayChild {
            id,
            region: region.clone(),
            addr,
            child,
        });
    }

    println!("Tern is up.");
    println!("  demo:       http://{http}/demo/   (open it in two tabs and join the same room)");
    println!("  signaling:  ws://{http}/v1/signal");
    println!("  relays:     http://{http}/v1/relays");
    for r in &relays {
        println!(
            "  relay:      {} region={} turn={} pid={}",
            r.id,
            r.region,
            r.addr,
            r.child.id().unwrap_or(0)
        );
    }
    println!("  data:       {}", args.data_dir.display());
    match &schedule.to {
        Some(to) => println!("  backups:    {to} every {:?}", schedule.every),
        None => println!("  backups:    off"),
    }

    let watch = tokio::spawn(async move {
        // Report relays that exit on their own; do not restart them: a dead
        // relay is exactly what failover exists for, and tests kill them.
        let mut waits = relays
            .into_iter()
            .map(|mut r| {
                tokio::spawn(async move {
                    let status = r.child.wait().await;
                    tracing::warn!(relay = %r.id, ?status, "relay exited");
                })
            })
            .collect::<Vec<_>>();
        for w in waits.drain(..) {
            let _ = w.await;
        }
    });
    let result = crate::edge::serve::serve(app, listener).await;
    watch.abort(); // drops the children, which kills them (kill_on_drop)
    result
}

/// Ask the kernel to SIGTERM the child if `tern up` dies without cleanup.
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
