//! `tern bench signaling`: what a frame costs through the wasm component, and
//! join→joined latency over WebSocket at a sustained rate. A benchmark, not a
//! test: it reports numbers (docs/benchmarks.md), it asserts nothing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tern_common::relay::{self, Heartbeat, Listener, Load, RelayState};
use tokio_tungstenite::tungstenite::Message;

use crate::edge::{now_ms, App};
use crate::host::SignalingHost;
use crate::store::embedded::EmbeddedStore;

const API: &str = "bench-api-secret-of-at-least-32-bytes";
const RELAY: &str = "bench-relay-secret-of-at-least-32-bytes";

#[derive(Args)]
pub struct BenchArgs {
    /// Frames per kind for the per-frame measurement.
    #[arg(long, default_value_t = 20_000)]
    frames: usize,
    /// Joins per second offered over WebSocket.
    #[arg(long, default_value_t = 5_000)]
    rate: u64,
    /// How long to offer them.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// WebSocket connections used by the load generator.
    #[arg(long, default_value_t = 256)]
    connections: usize,
    /// Worker threads of the server's runtime (the client gets its own).
    #[arg(long, default_value_t = 1)]
    server_threads: usize,
    /// Store of the WebSocket part's origin: `embedded` (a fresh temporary
    /// one) or a Redis URL, as `tern serve --kv` (use a Redis of its own:
    /// the bench writes rooms and call records into it).
    #[arg(long, default_value = "embedded")]
    kv: String,
    /// `tern serve --redis-replica-wait-ms` for the WebSocket part.
    #[arg(long, default_value_t = 1000)]
    redis_replica_wait_ms: u64,
}

fn heartbeat_body(id: &str, region: &str, seq: u64, udp: &str) -> (Vec<u8>, String) {
    let hb = Heartbeat {
        id: id.into(),
        region: region.into(),
        listeners: vec![Listener {
            transport: "udp".into(),
            address: udp.into(),
        }],
        state: RelayState::Active,
        load: Load::default(),
        seq,
        sent_at_ms: now_ms(),
        boot: String::new(),
    };
    let body = serde_json::to_vec(&hb).unwrap();
    let sig = relay::sign(RELAY.as_bytes(), &body);
    (body, sig)
}

fn env() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("TERN_API_SECRET".into(), API.into()),
        ("TERN_RELAY_SECRET".into(), RELAY.into()),
        // Heartbeats are refreshed by hand below; be lenient so a long
        // measurement does not run out of relays.
        ("TERN_RELAY_STALE_MS".into(), "600000".into()),
    ])
}

fn token(room: &str, who: &str) -> String {
    edge_signaling::token::mint(
        API.as_bytes(),
        &edge_signaling::token::Claims {
            room: room.into(),
            sub: who.into(),
            exp: now_ms() / 1000 + 3600,
        },
    )
}

struct Summary {
    p50: Duration,
    p99: Duration,
    max: Duration,
    mean: Duration,
}

fn summarize(mut v: Vec<Duration>) -> Summary {
    v.sort();
    let pick = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    Summary {
        p50: pick(0.50),
        p99: pick(0.99),
        max: *v.last().unwrap(),
        mean: v.iter().sum::<Duration>() / v.len() as u32,
    }
}

fn print_row(name: &str, n: usize, s: &Summary) {
    println!(
        "{name:<28} n={n:<7} p50={:>8.1}µs p99={:>8.1}µs max={:>9.1}µs mean={:>8.1}µs",
        s.p50.as_secs_f64() * 1e6,
        s.p99.as_secs_f64() * 1e6,
        s.max.as_secs_f64() * 1e6,
        s.mean.as_secs_f64() * 1e6
    );
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    println!(
        "# tern bench signaling ({} cores)",
        std::thread::available_parallelism()?.get()
    );
    // `--frames 0` skips it (e.g. when only comparing stores).
    if args.frames > 0 {
        per_frame(args.frames)?;
    }
    // The transport floor first: ping→pong over the same sockets and path,
    // so join→joined can be read as floor + signaling work.
    over_websocket(&args, Kind::Ping)?;
    over_websocket(&args, Kind::Join)
}

/// Per-frame cost through the component, in-process: instantiation from the
/// pool, the guest's KV calls into redb, and the core's work. One thread.
fn per_frame(n: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = crate::store::Kv::from(EmbeddedStore::open(dir.path())?);
    let host = SignalingHost::new(crate::host::SIGNALING_WASM, env(), store)?;
    for (id, region) in [("a-1", "region-a"), ("b-1", "region-b")] {
        let (b, s) = heartbeat_body(id, region, 1, "127.0.0.1:3478");
        host.handle_heartbeat(now_ms(), &b, &s)?
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    let mut entropy_n = 0u64;
    let mut entropy = || {
        entropy_n += 1;
        let mut e = [0u8; 32];
        e[..8].copy_from_slice(&entropy_n.to_le_bytes());
        e[8..16].copy_from_slice(&entropy_n.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
        e
    };
    let time = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        t.elapsed()
    };

    // ping: the floor (instantiate + parse + answer, no KV).
    let ping = r#"{"type":"ping","id":1}"#;
    for _ in 0..1000 {
        host.handle_frame(now_ms(), "c0", ping, &entropy())?;
    }
    let v: Vec<Duration> = (0..n)
        .map(|_| {
            let e = entropy();
            time(&mut || {
                host.handle_frame(now_ms(), "c0", ping, &e).unwrap();
            })
        })
        .collect();
    print_row("frame: ping", n, &summarize(v));

    // signal between two joined participants (2 KV reads).
    let ja = host.handle_frame(
        now_ms(),
        "ca",
        &json!({"type":"join","room":"r","token":token("r","a")}).to_string(),
        &entropy(),
    )?;
    let jb = host.handle_frame(
        now_ms(),
        "cb",
        &json!({"type":"join","room":"r","token":token("r","b")}).to_string(),
        &entropy(),
    )?;
    let pa: Value = serde_json::from_str(&ja.value[0].frame)?;
    let pb: Value = serde_json::from_str(&jb.value.iter().find(|d| d.conn == "cb").unwrap().frame)?;
    let to_b = json!({"type":"signal","to":pb["participant"],"data":{"candidate":"candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host"}}).to_string();
    let to_a = json!({"type":"signal","to":pa["participant"],"data":{"candidate":"candidate:1 1 udp 2122260223 192.0.2.2 54321 typ host"}}).to_string();
    let v: Vec<Duration> = (0..n)
        .map(|i| {
            let e = entropy();
            let (c, f) = if i % 2 == 0 {
                ("ca", &to_b)
            } else {
                ("cb", &to_a)
            };
            time(&mut || {
                let d = host.handle_frame(now_ms(), c, f, &e).unwrap();
                assert_eq!(d.value.len(), 1);
            })
        })
        .collect();
    print_row("frame: signal", n, &summarize(v));

    // join + leave in fresh rooms (reads relays, CAS on the room, 2 puts).
    let m = n / 4;
    let mut joins = Vec::with_capacity(m);
    let mut leaves = Vec::with_capacity(m);
    let leave = r#"{"type":"leave"}"#;
    for i in 0..m {
        let room = format!("room-{i}");
        let j = json!({"type":"join","room":room,"token":token(&room,"x")}).to_string();
        let e = entropy();
        joins.push(time(&mut || {
            let d = host.handle_frame(now_ms(), "cj", &j, &e).unwrap();
            assert!(
                d.value[0].frame.starts_with(r#"{"type":"joined""#),
                "{}",
                d.value[0].frame
            );
        }));
        let e = entropy();
        leaves.push(time(&mut || {
            host.handle_frame(now_ms(), "cj", leave, &e).unwrap();
        }));
    }
    print_row("frame: join (new room)", m, &summarize(joins));
    print_row("frame: leave", m, &summarize(leaves));
    Ok(())
}

/// join→joined over WebSocket against an in-process origin whose runtime has
/// `server_threads` workers; the load generator runs on its own runtime.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Ping,
    Join,
}

fn over_websocket(args: &BenchArgs, kind: Kind) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // On Redis each frame's component call runs on the blocking pool and
    // waits on the network; give it the pool `tern serve` has.
    let blocking = if args.kv == "embedded" {
        args.server_threads.max(1)
    } else {
        crate::edge::MAX_IN_FLIGHT + crate::edge::MAX_HOUSEKEEPING
    };
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.server_threads)
        .max_blocking_threads(blocking)
        .enable_all()
        .build()?;
    let url = if args.kv == "embedded" {
        crate::store::StoreUrl::Embedded {
            dir: dir.path().to_path_buf(),
        }
    } else {
        crate::store::StoreUrl::Redis {
            url: args.kv.clone(),
            prefix: "tern:".into(),
            replica_wait: Duration::from_millis(args.redis_replica_wait_ms),
            connections: crate::edge::CALLS_IN_FLIGHT,
        }
    };
    let config = crate::edge::serve::EdgeConfig {
        listen: "127.0.0.1:0".parse()?,
        edge: "bench".into(),
        kv: crate::store::open(&url)?,
        api_secret: API.into(),
        relay_secret: RELAY.into(),
        relay_stale_ms: 600_000,
        dev_tokens: false,
        session_grace_ms: edge_signaling::Config::DEFAULT_SESSION_GRACE_MS,
        call_sweep_ms: edge_signaling::Config::DEFAULT_CALL_SWEEP_MS,
        calls_token: None,
        // The load generator's sockets all come from loopback: one
        // address, which the per-address limit is not for.
        limits: crate::edge::socket_limits::SocketLimits {
            sockets_per_ip: 0,
            ..Default::default()
        },
    };
    let (app, listener): (Arc<App>, _) = server_rt.block_on(crate::edge::serve::start(config))?;
    let addr = listener.local_addr()?;
    // The edge probes its relays with STUN and stops handing out those that
    // do not answer: the bench's stand-in relays answer from here.
    let stun = stun_responder()?.to_string();
    server_rt.block_on(async {
        for (id, region) in [("a-1", "region-a"), ("b-1", "region-b")] {
            let (b, s) = heartbeat_body(id, region, 1, &stun);
            app.handle_heartbeat(b, s).await??;
        }
        anyhow::Ok(())
    })?;
    server_rt.spawn(crate::edge::serve::serve(app, listener));

    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let url = format!("ws://{addr}/v1/signal");
    let (rate, secs, conns) = (args.rate, args.seconds, args.connections);
    let (lat, offered, done, elapsed, failed) = client_rt.block_on(async move {
        let (pool_tx, mut pool_rx) = tokio::sync::mpsc::unbounded_channel();
        for i in 0..conns {
            let (ws, _) = tokio_tungstenite::connect_async_with_config(&url, None, true).await?;
            pool_tx.send((i, ws))?;
        }
        let (lat_tx, mut lat_rx) = tokio::sync::mpsc::unbounded_channel::<(Duration, Duration)>();
        let total = rate * secs;
        let failed = Arc::new(AtomicU64::new(0));
        let failures = failed.clone();
        let start = Instant::now();
        let mut sent = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut seq = 0u64;
        'offer: while sent < total {
            tick.tick().await;
            // Joins due by now, each stamped with its scheduled time so
            // queueing in the generator counts against latency (no
            // coordinated omission).
            let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
            while sent < due {
                let scheduled = start + Duration::from_secs_f64(sent as f64 / rate as f64);
                // A socket whose exchange failed never comes back: if none
                // does for a long time, report what was measured so far
                // instead of waiting forever.
                let (i, mut ws) =
                    match tokio::time::timeout(Duration::from_secs(30), pool_rx.recv()).await {
                        Ok(Some(x)) => x,
                        Ok(None) => anyhow::bail!("pool closed"),
                        Err(_) => {
                            eprintln!("no socket came back for 30 s; stopping after {sent} frames");
                            break 'offer;
                        }
                    };
                sent += 1;
                seq += 1;
                let room = format!("bench-{i}-{seq}");
                let frame = match kind {
                    Kind::Join => json!({"type":"join","room":room,"token":token(&room,"x")}),
                    Kind::Ping => json!({"type":"ping","id":seq}),
                }
                .to_string();
                let (pool_tx, lat_tx, failed) = (pool_tx.clone(), lat_tx.clone(), failed.clone());
                let exchange = async move {
                    let sent_at = Instant::now();
                    ws.send(Message::Text(frame.into())).await?;
                    match kind {
                        Kind::Ping => wait_for(&mut ws, "pong").await?,
                        Kind::Join => wait_for(&mut ws, "joined").await?,
                    }
                    let _ = lat_tx.send((sent_at.elapsed(), scheduled.elapsed()));
                    if kind == Kind::Join {
                        ws.send(Message::Text(r#"{"type":"leave"}"#.into())).await?;
                        wait_for(&mut ws, "left").await?;
                    }
                    let _ = pool_tx.send((i, ws));
                    anyhow::Ok(())
                };
                tokio::spawn(async move {
                    if let Err(e) = exchange.await {
                        if failed.fetch_add(1, Ordering::Relaxed) == 0 {
                            eprintln!("first failed exchange: {e:#}");
                        }
                    }
                });
            }
        }
        drop(lat_tx);
        let mut lat = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while lat.len() < total as usize {
            match tokio::time::timeout_at(deadline, lat_rx.recv()).await {
                Ok(Some(d)) => lat.push(d),
                _ => break,
            }
        }
        let done = lat.len();
        anyhow::Ok((
            lat,
            total,
            done,
            start.elapsed(),
            failures.load(Ordering::Relaxed),
        ))
    })?;
    let what = match kind {
        Kind::Ping => "ping→pong",
        Kind::Join => "join→joined",
    };
    println!(
        "websocket {what}: offered {offered} at {rate}/s over {secs}s on {} server thread(s), {} completed, {failed} failed, achieved {:.0}/s{}",
        args.server_threads,
        done,
        done as f64 / elapsed.as_secs_f64(),
        if kind == Kind::Join { " (each join is followed by a leave on the same socket)" } else { "" }
    );
    if !lat.is_empty() {
        let (from_send, from_schedule): (Vec<_>, Vec<_>) = lat.into_iter().unzip();
        print_row(
            &format!("{what} (ws)"),
            from_send.len(),
            &summarize(from_send),
        );
        // Includes the generator's own pacing lag (its timer ticks every 1 ms).
        print_row(
            "  from scheduled time",
            from_schedule.len(),
            &summarize(from_schedule),
        );
    }
    Ok(())
}

/// A UDP socket that answers every STUN Binding request with a bare
/// success (same transaction id), on a thread of its own for the life of
/// the process: enough for the edge's relay prober.
fn stun_responder() -> anyhow::Result<std::net::SocketAddr> {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let addr = sock.local_addr()?;
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            if n >= 20 && buf[0..2] == [0, 1] {
                let mut resp = [0u8; 20];
                resp[0..2].copy_from_slice(&0x0101u16.to_be_bytes());
                resp[4..20].copy_from_slice(&buf[4..20]);
                let _ = sock.send_to(&resp, from);
            }
        }
    });
    Ok(addr)
}

async fn wait_for<S>(ws: &mut S, ty: &str) -> anyhow::Result<()>
where
    S: StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let want = format!(r#"{{"type":"{ty}""#);
    while let Some(m) = ws.next().await {
        if let Message::Text(t) = m? {
            if t.starts_with(&want) {
                return Ok(());
            }
            if t.starts_with(r#"{"type":"error""#) {
                anyhow::bail!("server error: {t}");
            }
        }
    }
    anyhow::bail!("socket closed")
}
