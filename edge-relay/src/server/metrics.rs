//! Prometheus text exposition (format 0.0.4), written by hand: a dozen
//! families do not justify a metrics registry, and the numbers come from one
//! snapshot of the engine so a scrape is internally consistent.

use std::fmt::Write as _;

use crate::{AuthOutcome, DropReason, Quota, Stats};

/// The engine's state at one instant, copied out by the engine task.
#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshot {
    pub stats: Stats,
    pub allocations: usize,
    pub permissions: usize,
    pub channels: usize,
    pub tcp_connections: usize,
    pub tls_connections: usize,
    pub draining: bool,
}

impl Snapshot {
    /// Fold in another engine's snapshot (one per core).
    pub(crate) fn merge(&mut self, o: &Snapshot) {
        self.stats.merge(&o.stats);
        self.allocations += o.allocations;
        self.permissions += o.permissions;
        self.channels += o.channels;
        self.tcp_connections += o.tcp_connections;
        self.tls_connections += o.tls_connections;
        self.draining |= o.draining;
    }
}

/// Render `/metrics`; `cpu_seconds` is the process's CPU time so far.
pub(crate) fn render(s: &Snapshot, cpu_seconds: Option<f64>) -> String {
    let mut out = String::with_capacity(4096);
    let mut family = |name: &str, kind: &str, help: &str, samples: &[(&str, f64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, v) in samples {
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {v}");
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {v}");
            }
        }
    };
    let st = &s.stats;
    family(
        "tern_relay_allocations",
        "gauge",
        "Live and pending TURN allocations.",
        &[("", s.allocations as f64)],
    );
    family(
        "tern_relay_permissions",
        "gauge",
        "Live permissions over all allocations.",
        &[("", s.permissions as f64)],
    );
    family(
        "tern_relay_channels",
        "gauge",
        "Live channel bindings over all allocations.",
        &[("", s.channels as f64)],
    );
    family(
        "tern_relay_connections",
        "gauge",
        "Open TURN client connections over streams.",
        &[
            ("transport=\"tcp\"", s.tcp_connections as f64),
            ("transport=\"tls\"", s.tls_connections as f64),
        ],
    );
    family(
        "tern_relay_draining",
        "gauge",
        "1 while draining (new allocations refused or redirected).",
        &[("", s.draining as u8 as f64)],
    );
    family(
        "tern_relay_packets_in_total",
        "counter",
        "Packets received, before any check.",
        &[
            ("from=\"client\"", st.client_packets_in as f64),
            ("from=\"peer\"", st.peer_packets_in as f64),
        ],
    );
    family(
        "tern_relay_bytes_in_total",
        "counter",
        "Bytes received (peer: payload), before any check.",
        &[
            ("from=\"client\"", st.client_bytes_in as f64),
            ("from=\"peer\"", st.peer_bytes_in as f64),
        ],
    );
    family(
        "tern_relay_relayed_packets_total",
        "counter",
        "Media packets relayed, both directions.",
        &[("", st.relayed_packets as f64)],
    );
    family(
        "tern_relay_relayed_bytes_total",
        "counter",
        "Media payload bytes relayed, both directions.",
        &[("", st.relayed_bytes as f64)],
    );
    family(
        "tern_relay_local_deliveries_total",
        "counter",
        "Media packets handed from one allocation to another of the same datapath thread without the kernel.",
        &[("", st.local_deliveries as f64)],
    );
    family(
        "tern_relay_control_packets_out_total",
        "counter",
        "STUN answers and Data indications sent to clients.",
        &[("", st.control_packets_out as f64)],
    );
    family(
        "tern_relay_control_bytes_out_total",
        "counter",
        "Bytes of STUN answers and Data indications sent to clients.",
        &[("", st.control_bytes_out as f64)],
    );
    let drops: Vec<(String, f64)> = DropReason::ALL
        .iter()
        .map(|r| (format!("reason=\"{}\"", r.as_str()), st.drops(*r) as f64))
        .collect();
    let drops: Vec<(&str, f64)> = drops.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    family(
        "tern_relay_dropped_total",
        "counter",
        "Messages dropped without an answer, by reason.",
        &drops,
    );
    let auth: Vec<(String, f64)> = AuthOutcome::ALL
        .iter()
        .map(|o| (format!("outcome=\"{}\"", o.as_str()), st.auth(*o) as f64))
        .collect();
    let auth: Vec<(&str, f64)> = auth.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    family(
        "tern_relay_auth_total",
        "counter",
        "Requests that needed authentication and did not pass (challenged is the normal first leg).",
        &auth,
    );
    let quota: Vec<(String, f64)> = Quota::ALL
        .iter()
        .map(|q| {
            (
                format!("quota=\"{}\"", q.as_str()),
                st.quota_hits(*q) as f64,
            )
        })
        .collect();
    let quota: Vec<(&str, f64)> = quota.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    family(
        "tern_relay_quota_hits_total",
        "counter",
        "Requests or packets refused by a quota or rate limit.",
        &quota,
    );
    if let Some(cpu) = cpu_seconds {
        family(
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time of this process.",
            &[("", cpu)],
        );
    }
    out
}

/// User + system CPU seconds of this process, from /proc/self/stat.
pub(crate) fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name (which may hold spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux ABI Rust targets.
    Some((utime + stime) / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_labels() {
        let text = render(&Snapshot::default(), Some(1.5));
        for needle in [
            "tern_relay_allocations 0",
            "tern_relay_dropped_total{reason=\"amplification\"} 0",
            "tern_relay_auth_total{outcome=\"rejected\"} 0",
            "tern_relay_quota_hits_total{quota=\"user_allocations\"} 0",
            "tern_relay_connections{transport=\"tls\"} 0",
            "process_cpu_seconds_total 1.5",
        ] {
            assert!(text.contains(needle), "missing {needle}:\n{text}");
        }
        #[cfg(target_os = "linux")]
        assert!(process_cpu_seconds().is_some());
    }
}
