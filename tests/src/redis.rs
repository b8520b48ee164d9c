//! Redis and Sentinel servers the tests start on loopback.
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::bail;

use crate::process::{wait_until, Proc};
/// A `redis-server` on a loopback port, no persistence, optionally a replica.
pub fn start_redis(port: u16, replica_of: Option<u16>) -> Proc {
    // Its own working dir: a replica's full sync writes an RDB file there.
    let dir = std::env::temp_dir().join(format!("tern-redis-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = Command::new("redis-server");
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .arg("--dir")
        .arg(&dir)
        .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"]);
    if let Some(p) = replica_of {
        cmd.args(["--replicaof", "127.0.0.1", &p.to_string()]);
    }
    let child = cmd
        .stdout(Stdio::null())
        .stdin(Stdio::null())
        .spawn()
        .expect("redis-server must be installed (./dev test installs it)");
    let p = Proc {
        child,
        name: format!("redis {port}"),
    };
    wait_until(Duration::from_secs(10), || {
        redis_cli(port, &["PING"]).is_ok_and(|s| s == "PONG")
    })
    .expect("redis-server did not start");
    p
}

/// A `redis-sentinel` watching the primary on `primary_port` as `service`,
/// with fast failure detection for tests.
pub fn start_sentinel(port: u16, primary_port: u16, service: &str, dir: &std::path::Path) -> Proc {
    start_sentinel_with(port, primary_port, service, dir, 5000)
}

/// [`start_sentinel`] with a given `failover-timeout`. Besides bounding a
/// failover, it is how long Sentinel leaves a replica that follows another
/// address than the primary's before it points it back at the primary
/// ("+fix-slave-config"): a test that puts a forwarder between the two
/// needs it longer than the test.
pub fn start_sentinel_with(
    port: u16,
    primary_port: u16,
    service: &str,
    dir: &std::path::Path,
    failover_timeout_ms: u64,
) -> Proc {
    let conf = dir.join(format!("sentinel-{port}.conf"));
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        &conf,
        format!(
            "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {}\n\
             sentinel monitor {service} 127.0.0.1 {primary_port} 1\n\
             sentinel down-after-milliseconds {service} 1000\n\
             sentinel failover-timeout {service} {failover_timeout_ms}\n\
             sentinel parallel-syncs {service} 1\n",
            dir.display()
        ),
    )
    .unwrap();
    let child = Command::new("redis-sentinel")
        .arg(&conf)
        .stdout(Stdio::null())
        .stdin(Stdio::null())
        .spawn()
        .expect("redis-sentinel must be installed (./dev test installs it)");
    let p = Proc {
        child,
        name: format!("sentinel {port}"),
    };
    wait_until(Duration::from_secs(10), || {
        redis_cli(port, &["PING"]).is_ok_and(|s| s == "PONG")
    })
    .expect("redis-sentinel did not start");
    p
}

/// Run `redis-cli -p port args…` and return its trimmed output.
pub fn redis_cli(port: u16, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stderr(Stdio::null())
        .output()?;
    if !out.status.success() {
        bail!("redis-cli failed");
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
