//! The Cloudflare Worker (wrangler.toml) under `wrangler dev --local`: the
//! real workerd runtime, offline, with Durable Objects persisted to a fresh
//! directory. Relays heartbeat into it like into any signaling edge.
//!
//! It starts through `tests/wrangler-dev.sh`, which runs wrangler.toml's
//! build command (worker-build: a release wasm build, minutes when cold, a
//! second when warm) before `wrangler dev` and serves the result without
//! wrangler's own rebuild (the script says why). So it needs what
//! `./dev test` installs: `npm ci` at the top level, `worker-build` and
//! `wasm-bindgen-cli` from cargo, the wasm32-unknown-unknown target. Missing
//! any of them fails the test (it never skips).

use std::fs::File;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::http::http_get;
use crate::process::{bin, free_tcp_port, free_udp_port, Proc};
use crate::token::{API_SECRET, RELAY_SECRET};

/// The repository's top level (where wrangler.toml and package.json are).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

/// A `wrangler dev --local` process group on a loopback port.
pub struct WranglerDev {
    child: Child,
    pub addr: SocketAddr,
    dir: PathBuf,
}

impl WranglerDev {
    pub fn start() -> WranglerDev {
        WranglerDev::start_with(&[])
    }

    /// With extra Worker vars, e.g. `("TERN_MAX_ROOM_SIZE", "2")`.
    ///
    /// Its port is probed free and then handed to wrangler, which binds it
    /// seconds later (after the build): meanwhile another process can take
    /// it, even as the local port of an outgoing connection. workerd then
    /// exits with "Address already in use"; start again on a fresh port.
    pub fn start_with(vars: &[(&str, &str)]) -> WranglerDev {
        for _ in 0..4 {
            match WranglerDev::start_once(vars) {
                Ok(w) => return w,
                Err(log) => eprintln!("wrangler dev lost its port; again on another:\n{log}"),
            }
        }
        panic!("wrangler dev lost its port four times");
    }

    /// One start; `Err` with the log when the port was taken meanwhile.
    fn start_once(vars: &[(&str, &str)]) -> Result<WranglerDev, String> {
        let root = repo_root();
        let wrangler = root.join("node_modules/.bin/wrangler");
        assert!(
            wrangler.exists(),
            "wrangler is not installed: run `npm ci` at the repository top level (./dev test does)"
        );
        let port = free_tcp_port();
        let dir = std::env::temp_dir().join(format!("tern-wrangler-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let log = File::create(dir.join("wrangler.log")).unwrap();
        let mut cmd = Command::new(root.join("tests/wrangler-dev.sh"));
        cmd.current_dir(&root)
            .arg(dir.join("config"))
            .args(["--local", "--ip", "127.0.0.1"])
            .args(["--port", &port.to_string()])
            .args(["--inspector-port", &free_tcp_port().to_string()])
            .arg("--persist-to")
            .arg(dir.join("state"))
            .args(["--show-interactive-dev-session=false"])
            .args(["--var", &format!("TERN_API_SECRET:{API_SECRET}")])
            .args(["--var", &format!("TERN_RELAY_SECRET:{RELAY_SECRET}")]);
        for (k, v) in vars {
            cmd.args(["--var", &format!("{k}:{v}")]);
        }
        let child = cmd
            // Offline: no `Request.cf` download, no telemetry.
            .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
            .env("WRANGLER_SEND_METRICS", "false")
            // Its own process group: wrangler starts workerd (and the build)
            // as children, and Drop kills them all.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting wrangler dev");
        let mut w = WranglerDev {
            child,
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            dir,
        };
        // Cold, the build compiles the Worker in release mode.
        let start = Instant::now();
        loop {
            if http_get(w.addr, "/healthz").is_ok() {
                break;
            }
            if let Ok(Some(status)) = w.child.try_wait() {
                let log = w.log_tail();
                if log.contains("Address already in use") {
                    return Err(log);
                }
                panic!("wrangler dev exited ({status}):\n{log}");
            }
            if start.elapsed() > Duration::from_secs(900) {
                panic!("wrangler dev never answered /healthz:\n{}", w.log_tail());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(w)
    }

    /// The last lines wrangler (and the Worker's console) printed, without
    /// the request log of heartbeats (four a second per relay).
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("wrangler.log")).unwrap_or_default();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| !l.contains("POST /v1/relays/heartbeat 204"))
            .collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// On this host a socket belongs to the room in its URL.
    pub fn ws_url(&self, room: &str) -> String {
        format!("ws://{}/v1/signal?room={room}", self.addr)
    }

    pub fn relays(&self) -> Value {
        crate::origin::relay_directory(self.addr)
    }

    pub fn wait_healthy_relays(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        crate::origin::wait_healthy_relays_at(self.addr, n, timeout)
    }
}

impl Drop for WranglerDev {
    fn drop(&mut self) {
        // The group we created: wrangler, workerd and any build it runs.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A standalone `tern-relay` (edge-relay's binary) on a loopback port,
/// heartbeating into the signaling edge at `signaling` (a base URL).
pub fn start_tern_relay(signaling: &str, id: &str, region: &str) -> Proc {
    let port = free_udp_port();
    let child = Command::new(bin("tern-relay"))
        .args(["--id", id, "--region", region])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--signaling", signaling])
        .args(["--allow-peer", "127.0.0.0/8"])
        .args(["--allocate-rate-per-ip", "0"])
        .env("TERN_RELAY_SECRET", RELAY_SECRET)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .expect("starting tern-relay (cargo build -p edge-relay --bin tern-relay)");
    Proc {
        child,
        name: format!("tern-relay {id}"),
    }
}
