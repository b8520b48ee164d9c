//! Command-line flags, the TOML config file, and how they combine.
//!
//! Precedence: flags, then environment variables (only the secrets and
//! `--config` have one), then the file, then built-in defaults. Every flag is
//! optional at the clap level so that "not given" can fall through to the
//! file; [`Settings::resolve`] applies the defaults in one place.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use tern_common::secret;

use anyhow::Context;
use clap::Parser;
use ipnet::IpNet;
use serde::Deserialize;

/// tern-relay: Tern's TURN relay (UDP, TCP and TLS listeners; UDP relaying).
#[derive(Debug, Parser, Default)]
#[command(name = "tern-relay", version)]
pub struct Args {
    /// TOML config file (keys are the flag names with `_` for `-`, see
    /// docs/relay.toml). Flags and environment variables override it.
    #[arg(long, env = "TERN_RELAY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Stable id of this relay process, reported in heartbeats [relay-1].
    #[arg(long)]
    pub id: Option<String>,
    /// Region this relay serves, reported in heartbeats [local].
    #[arg(long)]
    pub region: Option<String>,
    /// UDP address TURN clients send to [127.0.0.1:3478].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// TCP listener for TURN over TCP (off unless given).
    #[arg(long)]
    pub listen_tcp: Option<SocketAddr>,
    /// TLS listener for TURN over TLS (off unless given; needs --tls-cert
    /// and --tls-key).
    #[arg(long)]
    pub listen_tls: Option<SocketAddr>,
    /// PEM certificate chain for --listen-tls.
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --listen-tls.
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// IPv4 (or any) address relayed sockets bind to [the listen IP].
    #[arg(long)]
    pub relay_ip: Option<IpAddr>,
    /// IPv6 address for IPv6 relayed addresses (REQUESTED-ADDRESS-FAMILY
    /// IPv6). None: such Allocates get 440.
    #[arg(long)]
    pub relay_ip6: Option<IpAddr>,
    /// Port range for relayed sockets, `LOW-HIGH`, or `ephemeral` to let the
    /// kernel choose [49152-65535].
    #[arg(long, value_parser = parse_ports)]
    pub relay_ports: Option<PortRange>,
    /// Datapath threads, each with its own socket on --listen (SO_REUSEPORT)
    /// and its own share of the allocations; 0 = one per CPU core [0].
    #[arg(long)]
    pub threads: Option<usize>,
    /// UDP listener address as published in heartbeats [--listen].
    #[arg(long)]
    pub advertise: Option<SocketAddr>,
    /// TCP listener address as published [--advertise IP + TCP port].
    #[arg(long)]
    pub advertise_tcp: Option<SocketAddr>,
    /// TLS listener address as published [--advertise IP + TLS port].
    #[arg(long)]
    pub advertise_tls: Option<SocketAddr>,
    /// Fleet secret: TURN REST passwords and heartbeat signatures derive from it.
    #[arg(long, env = "TERN_RELAY_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// The secret before the last rotation: still accepted for TURN
    /// passwords (heartbeats are signed with --secret only).
    #[arg(long, env = "TERN_RELAY_PREVIOUS_SECRET", hide_env_values = true)]
    pub previous_secret: Option<String>,
    /// TURN realm [tern]. Keep it short: the 401 must fit twice the size of
    /// a minimal Allocate (see docs/relay.md, "Amplification").
    #[arg(long)]
    pub realm: Option<String>,
    /// Signaling base URL for heartbeats (e.g. http://127.0.0.1:8080), or
    /// several edges' URLs separated by commas (heartbeats go to one and
    /// move to the next when it fails). No heartbeats when absent.
    #[arg(long)]
    pub signaling: Option<String>,
    /// PEM certificate(s) to trust for `https://` signaling besides the
    /// system's roots (a private CA, or an edge's self-signed certificate).
    #[arg(long, value_name = "PEM")]
    pub signaling_ca: Option<PathBuf>,
    /// Heartbeat interval in milliseconds [250].
    #[arg(long)]
    pub heartbeat_ms: Option<u64>,
    /// Allow relaying to peers in this CIDR even though the default policy
    /// refuses it (loopback, private, link-local, ...). Repeatable; replaces
    /// the file's list when given.
    #[arg(long = "allow-peer", value_name = "CIDR")]
    pub allow_peer: Vec<IpNet>,
    /// Most allocations at once; Allocate beyond it gets 508 [100000].
    #[arg(long)]
    pub max_allocations: Option<usize>,
    /// Most allocations per REST username; beyond it 486. 0 = no limit [64].
    #[arg(long)]
    pub max_allocations_per_user: Option<usize>,
    /// Allocate requests per source IP (IPv6: per /64) per second; more are
    /// dropped. 0 = no limit [100].
    #[arg(long)]
    pub allocate_rate_per_ip: Option<u32>,
    /// Live permissions (peer addresses) per allocation; CreatePermission or
    /// ChannelBind beyond it gets 508. 0 = no limit [128].
    #[arg(long)]
    pub max_permissions: Option<usize>,
    /// Live channels per allocation; ChannelBind beyond it gets 508. 0 = no
    /// limit [128].
    #[arg(long)]
    pub max_channels: Option<usize>,
    /// Bandwidth per allocation, both directions, kbit/s; more is dropped.
    /// 0 = no limit [1000].
    #[arg(long)]
    pub bandwidth_kbps: Option<u64>,
    /// Also accept RFC 5766 channel numbers 0x5000-0x7FFF (older clients such
    /// as coturn's turnutils_uclient pick from there; browsers do not).
    #[arg(long)]
    pub rfc5766_channels: bool,
    /// While draining, redirect new Allocates here (300 Try Alternate).
    #[arg(long)]
    pub alternate: Option<SocketAddr>,
    /// After SIGTERM/SIGINT or POST /drain: keep relaying for existing
    /// allocations up to this long (ms), exit earlier once none are left [1000].
    #[arg(long)]
    pub drain_ms: Option<u64>,
    /// HTTP admin listener: GET /metrics (Prometheus), GET /healthz, POST
    /// /drain. Off unless given. Anywhere but loopback it needs --admin-token.
    #[arg(long)]
    pub admin: Option<SocketAddr>,
    /// Bearer token the admin listener requires for /metrics and /drain
    /// (/healthz stays open for load balancers).
    #[arg(long, env = "TERN_RELAY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// TCP/TLS connections per client IP (IPv6: per /64); more are closed at
    /// once. 0 = no limit [32].
    #[arg(long)]
    pub max_connections_per_ip: Option<usize>,
    /// Cold standby: registered with signaling, but given calls only when
    /// its region has no healthy active relay left.
    #[arg(long)]
    pub standby: bool,
    /// Send media between two allocations of this relay through the kernel
    /// (a datagram from one relayed socket to the other), as other TURN
    /// servers do, instead of handing it over in memory. For measuring.
    #[arg(long)]
    pub no_local_delivery: bool,
}

/// The config file: the same settings as the flags, snake_case.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    pub id: Option<String>,
    pub region: Option<String>,
    pub listen: Option<SocketAddr>,
    pub listen_tcp: Option<SocketAddr>,
    pub listen_tls: Option<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub relay_ip: Option<IpAddr>,
    pub relay_ip6: Option<IpAddr>,
    pub relay_ports: Option<String>,
    pub threads: Option<usize>,
    pub advertise: Option<SocketAddr>,
    pub advertise_tcp: Option<SocketAddr>,
    pub advertise_tls: Option<SocketAddr>,
    pub secret: Option<String>,
    pub previous_secret: Option<String>,
    pub realm: Option<String>,
    pub signaling: Option<String>,
    pub signaling_ca: Option<PathBuf>,
    pub heartbeat_ms: Option<u64>,
    #[serde(default)]
    pub allow_peer: Vec<String>,
    pub max_allocations: Option<usize>,
    pub max_allocations_per_user: Option<usize>,
    pub allocate_rate_per_ip: Option<u32>,
    pub max_permissions: Option<usize>,
    pub max_channels: Option<usize>,
    pub bandwidth_kbps: Option<u64>,
    pub rfc5766_channels: Option<bool>,
    pub alternate: Option<SocketAddr>,
    pub drain_ms: Option<u64>,
    pub admin: Option<SocketAddr>,
    pub admin_token: Option<String>,
    pub max_connections_per_ip: Option<usize>,
    pub standby: Option<bool>,
    pub local_delivery: Option<bool>,
}

/// Everything resolved: what the server runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Stable id of this relay process in heartbeats (default `relay-1`).
    pub id: String,
    /// Region this relay serves, reported in heartbeats (default `local`).
    pub region: String,
    /// UDP listener TURN clients send to (default 127.0.0.1:3478).
    pub listen: SocketAddr,
    /// TURN over TCP listener, if enabled.
    pub listen_tcp: Option<SocketAddr>,
    /// TURN over TLS listener, if enabled (then `tls_cert` and `tls_key` are set).
    pub listen_tls: Option<SocketAddr>,
    /// PEM certificate chain for the TLS listener.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for the TLS listener.
    pub tls_key: Option<PathBuf>,
    /// IPv4 (or any) address relayed sockets bind to (default: the listen IP).
    pub relay_ip: IpAddr,
    /// IPv6 address for IPv6 relayed addresses; `None`: such Allocates get 440.
    pub relay_ip6: Option<IpAddr>,
    /// Ports relayed sockets bind in (default 49152-65535).
    pub relay_ports: PortRange,
    /// Datapath threads (resolved: at least 1).
    pub threads: usize,
    /// UDP listener address published in heartbeats, if not `listen`.
    pub advertise: Option<SocketAddr>,
    /// TCP listener address published, if not the advertised IP + TCP port.
    pub advertise_tcp: Option<SocketAddr>,
    /// TLS listener address published, if not the advertised IP + TLS port.
    pub advertise_tls: Option<SocketAddr>,
    /// Fleet secret: TURN REST passwords and heartbeat signatures derive from it.
    pub secret: String,
    /// Secret before the last rotation, still accepted for TURN passwords.
    pub previous_secret: Option<String>,
    /// TURN realm (default `tern`).
    pub realm: String,
    /// Signaling base URL(s), comma-separated, for heartbeats; `None`: none sent.
    pub signaling: Option<String>,
    /// Extra roots for `https://` signaling.
    pub signaling_ca: Option<PathBuf>,
    /// Heartbeat interval in ms (default 250; at least 10 is used).
    pub heartbeat_ms: u64,
    /// Peer ranges allowed despite the default deny-list (loopback, private, ...).
    pub allow_peer: Vec<IpNet>,
    /// Most allocations at once, all shards together (default 100000; then 508).
    pub max_allocations: usize,
    /// Most allocations per REST username (default 64; 0 = no limit; then 486).
    pub max_allocations_per_user: usize,
    /// Allocate requests per source IP (IPv6: /64) per second (default 100; 0 = no limit).
    pub allocate_rate_per_ip: u32,
    /// Live permissions per allocation (default 128; 0 = no limit; then 508).
    pub max_permissions: usize,
    /// Live channels per allocation (default 128; 0 = no limit; then 508).
    pub max_channels: usize,
    /// Bandwidth quota per allocation, both directions, in kbit/s (default 1000; 0 = none).
    pub bandwidth_kbps: u64,
    /// Also accept RFC 5766 channel numbers 0x5000-0x7FFF.
    pub rfc5766_channels: bool,
    /// Where new Allocates are redirected (300 Try Alternate) while draining.
    pub alternate: Option<SocketAddr>,
    /// Longest drain in ms after a stop signal or POST /drain (default 1000).
    pub drain_ms: u64,
    /// HTTP admin listener (/metrics, /healthz, POST /drain), if enabled.
    pub admin: Option<SocketAddr>,
    /// Bearer token for /metrics and /drain; required off loopback.
    pub admin_token: Option<String>,
    /// TCP/TLS connections per client IP (IPv6: /64) (default 32; 0 = no limit).
    pub max_connections_per_ip: usize,
    /// Cold standby: given calls only when its region has no healthy active relay.
    pub standby: bool,
    /// Deliver media between two allocations of this relay in memory, not via
    /// the kernel (default on).
    pub local_delivery: bool,
}

impl Settings {
    /// Flags over environment over file over defaults.
    pub fn resolve(args: Args) -> anyhow::Result<Settings> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config {}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("parsing config {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let relay_ports = match (args.relay_ports, file.relay_ports) {
            (Some(p), _) => p,
            (None, Some(s)) => parse_ports(&s).map_err(anyhow::Error::msg)?,
            (None, None) => PortRange::Range(49152..=65535),
        };
        let listen = args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| "127.0.0.1:3478".parse().expect("valid"));
        let secret = args
            .secret
            .or(file.secret)
            .filter(|s| !s.is_empty())
            .context(
                "a secret is required: --secret, TERN_RELAY_SECRET or `secret` in the config",
            )?;
        let s = Settings {
            id: args.id.or(file.id).unwrap_or_else(|| "relay-1".into()),
            region: args
                .region
                .or(file.region)
                .unwrap_or_else(|| "local".into()),
            listen,
            listen_tcp: args.listen_tcp.or(file.listen_tcp),
            listen_tls: args.listen_tls.or(file.listen_tls),
            tls_cert: args.tls_cert.or(file.tls_cert),
            tls_key: args.tls_key.or(file.tls_key),
            relay_ip: args.relay_ip.or(file.relay_ip).unwrap_or(listen.ip()),
            relay_ip6: args.relay_ip6.or(file.relay_ip6),
            relay_ports,
            threads: match args.threads.or(file.threads).unwrap_or(0) {
                0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                n => n,
            },
            advertise: args.advertise.or(file.advertise),
            advertise_tcp: args.advertise_tcp.or(file.advertise_tcp),
            advertise_tls: args.advertise_tls.or(file.advertise_tls),
            secret,
            previous_secret: args
                .previous_secret
                .or(file.previous_secret)
                .filter(|s| !s.is_empty()),
            realm: args.realm.or(file.realm).unwrap_or_else(|| "tern".into()),
            signaling: args.signaling.or(file.signaling),
            signaling_ca: args.signaling_ca.or(file.signaling_ca),
            heartbeat_ms: args.heartbeat_ms.or(file.heartbeat_ms).unwrap_or(250),
            allow_peer: if args.allow_peer.is_empty() {
                file.allow_peer
                    .iter()
                    .map(|c| c.parse().with_context(|| format!("allow_peer {c:?}")))
                    .collect::<anyhow::Result<_>>()?
            } else {
                args.allow_peer
            },
            max_allocations: args
                .max_allocations
                .or(file.max_allocations)
                .unwrap_or(100_000),
            max_allocations_per_user: args
                .max_allocations_per_user
                .or(file.max_allocations_per_user)
                .unwrap_or(64),
            allocate_rate_per_ip: args
                .allocate_rate_per_ip
                .or(file.allocate_rate_per_ip)
                .unwrap_or(100),
            max_permissions: args.max_permissions.or(file.max_permissions).unwrap_or(128),
            max_channels: args.max_channels.or(file.max_channels).unwrap_or(128),
            bandwidth_kbps: args.bandwidth_kbps.or(file.bandwidth_kbps).unwrap_or(1000),
            rfc5766_channels: args.rfc5766_channels || file.rfc5766_channels.unwrap_or(false),
            alternate: args.alternate.or(file.alternate),
            drain_ms: args.drain_ms.or(file.drain_ms).unwrap_or(1000),
            admin: args.admin.or(file.admin),
            admin_token: args
                .admin_token
                .or(file.admin_token)
                .filter(|t| !t.is_empty()),
            max_connections_per_ip: args
                .max_connections_per_ip
                .or(file.max_connections_per_ip)
                .unwrap_or(32),
            standby: args.standby || file.standby.unwrap_or(false),
            local_delivery: !args.no_local_delivery && file.local_delivery.unwrap_or(true),
        };
        // TURN passwords and heartbeat signatures derive from these: a
        // short one can be guessed offline from one credential.
        secret::check("TERN_RELAY_SECRET", s.secret.as_bytes())?;
        if let Some(p) = &s.previous_secret {
            secret::check("TERN_RELAY_PREVIOUS_SECRET", p.as_bytes())?;
        }
        if let Some(ip6) = s.relay_ip6 {
            anyhow::ensure!(ip6.is_ipv6(), "--relay-ip6 must be an IPv6 address");
        }
        if let Some(admin) = s.admin {
            // /drain stops the relay taking calls and /metrics tells who is
            // busy: an open admin port on a public address is an outage
            // button for anyone.
            anyhow::ensure!(
                admin.ip().is_loopback() || s.admin_token.is_some(),
                "--admin {admin} is not a loopback address: give --admin-token (or TERN_RELAY_ADMIN_TOKEN)"
            );
        }
        if s.listen_tls.is_some() {
            anyhow::ensure!(
                s.tls_cert.is_some() && s.tls_key.is_some(),
                "--listen-tls needs --tls-cert and --tls-key"
            );
        }
        Ok(s)
    }
}

/// Where relayed sockets may bind.
#[derive(Debug, Clone)]
pub enum PortRange {
    /// Port 0: the kernel picks an ephemeral port.
    Ephemeral,
    /// A port in this inclusive range (`LOW-HIGH`).
    Range(RangeInclusive<u16>),
}

fn parse_ports(s: &str) -> Result<PortRange, String> {
    if s == "ephemeral" || s == "0" {
        return Ok(PortRange::Ephemeral);
    }
    let (lo, hi) = s
        .split_once('-')
        .ok_or_else(|| format!("expected LOW-HIGH or 'ephemeral', got {s:?}"))?;
    let lo: u16 = lo
        .trim()
        .parse()
        .map_err(|e| format!("bad low port: {e}"))?;
    let hi: u16 = hi
        .trim()
        .parse()
        .map_err(|e| format!("bad high port: {e}"))?;
    if lo == 0 || lo > hi {
        return Err(format!("empty or invalid port range {lo}-{hi}"));
    }
    Ok(PortRange::Range(lo..=hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLAG_SECRET: &str = "from-a-flag-a-secret-of-32-bytes!";

    fn args(v: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("tern-relay").chain(v.iter().copied())).unwrap()
    }

    #[test]
    fn flags_override_file_which_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("tern-relay-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("relay.toml");
        std::fs::write(
            &path,
            r#"
            region = "eu-west"
            listen = "127.0.0.1:4000"
            secret = "from-the-file-a-secret-of-32-bytes"
            allow_peer = ["10.0.0.0/8"]
            relay_ports = "50000-50100"
            rfc5766_channels = true
            bandwidth_kbps = 64
            "#,
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let s = Settings::resolve(args(&["--config", p, "--region", "us-east"])).unwrap();
        assert_eq!(s.region, "us-east", "flag wins");
        assert_eq!(s.listen, "127.0.0.1:4000".parse().unwrap(), "file");
        assert_eq!(s.secret, "from-the-file-a-secret-of-32-bytes");
        assert_eq!(s.allow_peer.len(), 1);
        assert!(s.rfc5766_channels);
        assert_eq!(s.bandwidth_kbps, 64);
        assert_eq!(s.id, "relay-1", "default");
        assert!(matches!(s.relay_ports, PortRange::Range(ref r) if *r.start() == 50000));
        let s = Settings::resolve(args(&["--config", p, "--secret", FLAG_SECRET])).unwrap();
        assert_eq!(s.secret, FLAG_SECRET);

        // An admin listener off loopback needs a token.
        let e = Settings::resolve(args(&["--secret", FLAG_SECRET, "--admin", "0.0.0.0:9000"]))
            .unwrap_err();
        assert!(format!("{e:#}").contains("--admin-token"), "{e:#}");
        let s = Settings::resolve(args(&[
            "--secret",
            FLAG_SECRET,
            "--admin",
            "0.0.0.0:9000",
            "--admin-token",
            "t",
        ]))
        .unwrap();
        assert_eq!(s.admin_token.as_deref(), Some("t"));
        assert!(Settings::resolve(args(&[
            "--secret",
            FLAG_SECRET,
            "--admin",
            "127.0.0.1:9000"
        ]))
        .is_ok());
        assert_eq!(s.max_connections_per_ip, 32, "default");

        std::fs::write(
            &path,
            "no_such_key = 1\nsecret = \"from-the-file-a-secret-of-32-bytes\"\n",
        )
        .unwrap();
        let e = Settings::resolve(args(&["--config", p])).unwrap_err();
        assert!(format!("{e:#}").contains("no_such_key"), "{e:#}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn short_secrets_are_refused() {
        let e = Settings::resolve(args(&["--secret", "ops-secret"])).unwrap_err();
        assert!(
            format!("{e:#}").contains("TERN_RELAY_SECRET is 10 bytes"),
            "{e:#}"
        );
        let e = Settings::resolve(args(&["--secret", FLAG_SECRET, "--previous-secret", "old"]))
            .unwrap_err();
        assert!(
            format!("{e:#}").contains("TERN_RELAY_PREVIOUS_SECRET"),
            "{e:#}"
        );
    }
}
