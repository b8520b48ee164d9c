//! Command-line flags.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;

use clap::Parser;
use ipnet::IpNet;

/// tern-relay: Tern's TURN relay (UDP).
#[derive(Debug, Parser)]
#[command(name = "tern-relay", version)]
pub struct Args {
    /// Stable id of this relay process, reported in heartbeats.
    #[arg(long, default_value = "relay-1")]
    pub id: String,
    /// Region this relay serves, reported in heartbeats.
    #[arg(long, default_value = "local")]
    pub region: String,
    /// UDP address TURN clients send to.
    #[arg(long, default_value = "127.0.0.1:3478")]
    pub listen: SocketAddr,
    /// IP that relayed sockets bind to (default: the listen IP).
    #[arg(long)]
    pub relay_ip: Option<IpAddr>,
    /// Port range for relayed sockets, `LOW-HIGH`, or `ephemeral` to let the
    /// kernel choose.
    #[arg(long, default_value = "49152-65535", value_parser = parse_ports)]
    pub relay_ports: PortRange,
    /// Address clients reach the listener at, as put in heartbeats
    /// (default: --listen).
    #[arg(long)]
    pub advertise: Option<SocketAddr>,
    /// Fleet secret: TURN REST passwords and heartbeat signatures derive from it.
    #[arg(long, env = "TERN_RELAY_SECRET", hide_env_values = true)]
    pub secret: String,
    /// TURN realm.
    #[arg(long, default_value = "tern")]
    pub realm: String,
    /// Signaling base URL for heartbeats (e.g. http://127.0.0.1:8080). No
    /// heartbeats when absent.
    #[arg(long)]
    pub signaling: Option<String>,
    /// Heartbeat interval in milliseconds.
    #[arg(long, default_value_t = 250)]
    pub heartbeat_ms: u64,
    /// Allow relaying to peers in this CIDR even though the default policy
    /// refuses it (loopback, private, link-local, ...). Repeatable.
    #[arg(long = "allow-peer", value_name = "CIDR")]
    pub allow_peer: Vec<IpNet>,
    /// Most allocations at once; Allocate beyond it gets 508.
    #[arg(long, default_value_t = 100_000)]
    pub max_allocations: usize,
    /// Also accept RFC 5766 channel numbers 0x5000-0x7FFF (older clients such
    /// as coturn's turnutils_uclient pick from there; browsers do not).
    #[arg(long)]
    pub rfc5766_channels: bool,
    /// After SIGTERM/SIGINT: keep relaying this long (milliseconds) after the
    /// draining heartbeat, then exit.
    #[arg(long, default_value_t = 1000)]
    pub drain_ms: u64,
}

/// Where relayed sockets may bind.
#[derive(Debug, Clone)]
pub enum PortRange {
    Ephemeral,
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
