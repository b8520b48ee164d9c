//! The Spin app under `tern spin` (origin hosting the artifact spin.toml
//! names); the real Spin runtime is [`crate::spin_up`].
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::http::http_get;
use crate::origin::{relay_directory, wait_healthy_relays_at};
use crate::process::{bin, free_tcp_port, wait_until, Proc};
use crate::token::{API_SECRET, RELAY_SECRET};
/// The Spin app of the repository's spin.toml, served by `tern spin` (the
/// same .wasm Spin would run) on a fresh embedded store or on `kv`.
pub struct SpinApp {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
}

impl SpinApp {
    pub fn start() -> SpinApp {
        SpinApp::start_with("embedded", &[])
    }

    pub fn start_with(kv: &str, extra: &[&str]) -> SpinApp {
        let port = free_tcp_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let data_dir =
            std::env::temp_dir().join(format!("tern-spin-test-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data_dir);
        let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../spin.toml");
        let child = Command::new(bin("tern"))
            .arg("spin")
            .arg("--manifest")
            .arg(&manifest)
            .args(["--listen", &addr.to_string(), "--kv", kv])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(extra)
            .env("TERN_API_SECRET", API_SECRET)
            .env("TERN_RELAY_SECRET", RELAY_SECRET)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("starting tern spin");
        let app = SpinApp {
            proc: Proc {
                child,
                name: "tern spin".into(),
            },
            addr,
            data_dir,
        };
        wait_until(Duration::from_secs(60), || {
            http_get(addr, "/healthz").is_ok()
        })
        .expect("tern spin never became healthy");
        app
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn relays(&self) -> Value {
        relay_directory(self.addr)
    }

    /// Wait until the directory lists `n` healthy relays.
    pub fn wait_healthy_relays(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        wait_healthy_relays_at(self.addr, n, timeout)
    }
}

impl Drop for SpinApp {
    fn drop(&mut self) {
        self.proc.kill();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}
