//! The Spin app (spin.toml) under the real Spin runtime: `spin up` from the
//! repository's root, serving the built component over its HTTP trigger,
//! with its key-value store `default` on Spin's own SQLite store (a fresh
//! state directory per app) or on Redis (a runtime-config file naming it).
//!
//! Spin is found through `SPIN_BIN`, else `spin` on the PATH. Without one the
//! tests fail and say how to get it: no package registry carries Spin, so a
//! user installs it (Spin >= 4.0) and CI points `SPIN_BIN` at a build of
//! Spin's source (.ci/run).

use std::fs::File;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cloudflare::repo_root;
use crate::http::http_get;
use crate::origin::wait_healthy_relays_at;
use crate::process::free_tcp_port;
use crate::token::{API_SECRET, RELAY_SECRET};

/// Where `spin up` keeps the app's state.
#[derive(Debug, Clone)]
pub enum SpinStore {
    /// Spin's default: a SQLite file in the app's state directory.
    Sqlite,
    /// Spin's Redis store at this URL (`redis://host:port`), the documented
    /// multi-instance setup (runtime-config.toml).
    Redis(String),
}

/// The Spin CLI to test with: `SPIN_BIN`, else `spin` on the PATH.
pub fn spin_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SPIN_BIN") {
        let p = PathBuf::from(p);
        let p = if p.is_relative() {
            repo_root().join(p)
        } else {
            p
        };
        assert!(
            p.exists(),
            "SPIN_BIN={} does not exist; point it at a Spin CLI (>= 4.0)",
            p.display()
        );
        return p;
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("spin"))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "no Spin CLI: these tests run Tern's Spin app on real Spin. Install Spin >= 4.0 \
                 (its releases page, or build it from the spinframework/spin repository) and put \
                 `spin` on the PATH or set SPIN_BIN to its path"
            )
        })
}

/// A `spin up` process group on a loopback port.
pub struct SpinUp {
    child: Child,
    pub addr: SocketAddr,
    dir: PathBuf,
}

impl SpinUp {
    /// `spin up` on `store`, with extra component settings (`--env K=V`).
    pub fn start(store: SpinStore, env: &[(&str, &str)]) -> SpinUp {
        let root = repo_root();
        let manifest = root.join("spin.toml");
        let component =
            root.join("target/component/wasm32-wasip2/component/signaling_component.wasm");
        assert!(
            component.exists(),
            "{} is missing: build it as spin.toml says (`spin build`, or `cargo build -p origin`)",
            component.display()
        );
        let port = free_tcp_port();
        let dir = std::env::temp_dir().join(format!("tern-spin-up-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let log = File::create(dir.join("spin.log")).unwrap();
        let mut cmd = Command::new(spin_bin());
        cmd.current_dir(&root)
            .arg("up")
            .arg("--from")
            .arg(&manifest)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            // Its own state (the SQLite store, component logs) per app.
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(["--env", &format!("TERN_API_SECRET={API_SECRET}")])
            .args(["--env", &format!("TERN_RELAY_SECRET={RELAY_SECRET}")]);
        for (k, v) in env {
            cmd.args(["--env", &format!("{k}={v}")]);
        }
        if let SpinStore::Redis(url) = &store {
            let config = dir.join("runtime-config.toml");
            std::fs::write(
                &config,
                format!("[key_value_store.default]\ntype = \"redis\"\nurl = \"{url}\"\n"),
            )
            .unwrap();
            cmd.arg("--runtime-config-file").arg(config);
        }
        let child = cmd
            .env("RUST_LOG", "spin=warn")
            // Its own process group, so Drop ends everything it started.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", spin_bin().display()));
        let mut s = SpinUp {
            child,
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            dir,
        };
        let start = Instant::now();
        while http_get(s.addr, "/healthz").is_err() {
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("spin up exited ({status}):\n{}", s.log_tail());
            }
            if start.elapsed() > Duration::from_secs(120) {
                panic!("spin up never answered /healthz:\n{}", s.log_tail());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        s
    }

    /// What Spin printed, and the component's own stderr.
    pub fn log_tail(&self) -> String {
        let mut out = std::fs::read_to_string(self.dir.join("spin.log")).unwrap_or_default();
        let logs = self.dir.join("state/logs");
        if let Ok(entries) = std::fs::read_dir(logs) {
            for e in entries.flatten() {
                out += &format!("\n--- {}\n", e.path().display());
                out += &std::fs::read_to_string(e.path()).unwrap_or_default();
            }
        }
        let lines: Vec<&str> = out.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn relays(&self) -> Value {
        crate::origin::relay_directory(self.addr)
    }

    pub fn wait_healthy_relays(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        wait_healthy_relays_at(self.addr, n, timeout)
    }
}

impl Drop for SpinUp {
    fn drop(&mut self) {
        // SAFETY: kill(2) of the process group we created for this child.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
