//! An origin (`tern serve`) on loopback, and what any signaling host's relay
//! directory says.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::http::http_get;
use crate::process::{bin, free_tcp_port, wait_until, Proc};
use crate::token::{API_SECRET, CALLS_TOKEN, RELAY_SECRET};
/// An origin started with `tern serve` on a fresh data dir.
pub struct Origin {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
}

impl Origin {
    pub fn start(edge: &str) -> Origin {
        Origin::start_with(edge, "embedded")
    }

    /// An origin on the given store (`embedded`, `redis://…`,
    /// `redis+sentinel://…`).
    pub fn start_with(edge: &str, kv: &str) -> Origin {
        Origin::start_full(edge, kv, None, None, &[])
    }

    /// An origin on a given address (default: a free port) and data dir
    /// (default: a fresh one, which must not exist yet), with extra `tern
    /// serve` flags. A standby that takes over a dead origin's address
    /// and a restored data dir is started this way.
    pub fn start_full(
        edge: &str,
        kv: &str,
        listen: Option<SocketAddr>,
        data_dir: Option<PathBuf>,
        extra: &[&str],
    ) -> Origin {
        let addr =
            listen.unwrap_or_else(|| format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap());
        let port = addr.port();
        let data_dir = data_dir.unwrap_or_else(|| {
            let d = std::env::temp_dir().join(format!("tern-test-{}-{port}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            d
        });
        let child = Command::new(bin("tern"))
            .args([
                "serve",
                "--listen",
                &addr.to_string(),
                "--edge",
                edge,
                "--kv",
                kv,
            ])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(extra)
            .env("TERN_API_SECRET", API_SECRET)
            .env("TERN_RELAY_SECRET", RELAY_SECRET)
            .env("TERN_CALLS_TOKEN", CALLS_TOKEN)
            .env("RUST_LOG", "warn,tern::app=info")
            .stdin(Stdio::null())
            .spawn()
            .expect("starting tern serve");
        let o = Origin {
            proc: Proc {
                child,
                name: format!("origin {edge}"),
            },
            addr,
            data_dir,
        };
        wait_until(Duration::from_secs(30), || {
            http_get(addr, "/healthz").is_ok()
        })
        .expect("origin never became healthy");
        o
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/signal", self.addr)
    }

    pub fn relays(&self) -> Value {
        relay_directory(self.addr)
    }

    /// Wait until the directory lists `n` healthy relays.
    pub fn wait_healthy_relays(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        wait_healthy_relays_at(self.addr, n, timeout)
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.proc.kill();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// `GET /v1/relays` of the signaling host at `addr`.
pub fn relay_directory(addr: SocketAddr) -> Value {
    let (_, body) = http_get(addr, "/v1/relays").expect("GET /v1/relays");
    serde_json::from_str(&body).expect("relays JSON")
}

/// Wait until the host at `addr` lists `n` healthy relays.
pub fn wait_healthy_relays_at(addr: SocketAddr, n: usize, timeout: Duration) -> anyhow::Result<()> {
    wait_until(timeout, || healthy_ids(&relay_directory(addr)).len() >= n)
}

pub fn healthy_ids(relays: &Value) -> Vec<String> {
    relays
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["healthy"] == true)
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}
