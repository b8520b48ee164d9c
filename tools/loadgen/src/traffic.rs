//! One measurement step: every client sends ChannelData to its partner at the
//! same per-stream rate, evenly interleaved, for a fixed time; then the
//! generator waits a little for stragglers and counts.
//!
//! Pacing needs no timer wheel: all streams share one period, so the global
//! send order is fixed (stream `j % N` sends the j-th packet) and packet j is
//! due at `start + j / rate`. The loop sends whatever is due, then waits in
//! epoll (nanosecond timeout) until the next packet is due or one arrives.
//! It does not spin, so the generator's CPU time says how busy it really is.

use std::io;
use std::time::{Duration, Instant};

use crate::client::{decode_channel_data, encode_channel_data, CHANNEL_DATA_HEADER};
use crate::harness::{Harness, CHANNEL};
use crate::payload::{Probe, HEADER};
use crate::procstat;
use crate::stats::Histogram;
use crate::LoadError;
use tern_netio::Epoll;

/// Most packets sent in one go before the loop reads again, so receive
/// timestamps stay honest when the generator runs late.
const SEND_BURST: u64 = 32;
/// How often session timers (Refresh, retransmissions) are looked at.
const TIMER_CHECK: Duration = Duration::from_millis(50);
/// A packet due within this long is sent now rather than after one more
/// sleep. Waking for every packet of 100,000 a second took 96 % of the
/// generator's core at a rate it can otherwise carry twice over, and under
/// SCHED_FIFO a core that busy is throttled by the kernel for tens of
/// milliseconds a second, which showed up as latency of every relay
/// measured. The relay sees at most rate × SEND_AHEAD packets at once (5 at
/// 100,000/s); each carries its real send time, so latency is not skewed.
const SEND_AHEAD: Duration = Duration::from_micros(50);

#[derive(Debug, Clone)]
pub struct StepConfig {
    /// Aggregate packets per second over all streams.
    pub rate: f64,
    pub duration: Duration,
    /// Payload bytes per packet (at least the probe header).
    pub size: usize,
    /// Wait this long after the last send for packets still in flight.
    pub drain: Duration,
    /// The relay's pid, for CPU accounting.
    pub relay_pid: Option<u32>,
}

/// What one step measured.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StepReport {
    pub offered_pps: f64,
    /// What the generator managed to send per second.
    pub sent_pps: f64,
    pub secs: f64,
    pub sent: u64,
    pub delivered: u64,
    /// Sent and never received: lost by the relay, or dropped by the
    /// generator's own receive buffers (`generator_drops`, included here).
    pub lost: u64,
    /// Of `lost`, what the generator's own sockets dropped because it did
    /// not read them in time (SO_MEMINFO): the generator's limit, not the
    /// relay's. Such a step counts as generator-limited.
    pub generator_drops: u64,
    /// Sends the generator's own socket refused (its buffer was full).
    pub send_errors: u64,
    /// Packets that arrived from an earlier step or were not ours.
    pub stray: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    /// The generator could not keep the schedule (sent < 95 % of offered)
    /// or could not read what came back (`generator_drops`): this step says
    /// more about the generator than the relay.
    pub generator_limited: bool,
    pub relay_cpu_secs: Option<f64>,
    /// The generator's own CPU seconds in the step. Close to `secs` means
    /// its core is full and it, not the relay, may be what limits the step.
    pub generator_cpu_secs: f64,
    /// Relay CPU seconds per million delivered packets.
    pub relay_cpu_secs_per_mpkt: Option<f64>,
}

impl Harness {
    /// Run one step; `epoch` tags its packets so late ones from a previous
    /// step are not counted.
    pub fn step(&mut self, cfg: &StepConfig, epoch: u32) -> Result<StepReport, LoadError> {
        if cfg.size < HEADER || cfg.size > 1400 {
            return Err(LoadError::Config(format!(
                "--size must be {HEADER}..=1400 bytes"
            )));
        }
        if cfg.rate <= 0.0 {
            return Err(LoadError::Config("rate must be positive".into()));
        }
        let streams = self.clients.len() as u64;
        let total = (cfg.rate * cfg.duration.as_secs_f64()).round() as u64;
        let ns_per_pkt = 1e9 / cfg.rate;
        let mut seqs = vec![0u32; streams as usize];
        let mut received = vec![0u64; streams as usize];
        let mut hist = Histogram::default();
        let (mut sent, mut send_errors, mut stray) = (0u64, 0u64, 0u64);
        let mut packet = vec![0u8; CHANNEL_DATA_HEADER + cfg.size];
        let mut payload = vec![0u8; cfg.size];
        let mut ready = Vec::with_capacity(1024);

        let cpu0 = cfg.relay_pid.map(procstat::cpu_seconds).transpose()?;
        let me = std::process::id();
        let my_cpu0 = procstat::cpu_seconds(me)?;
        let drops0 = self.receive_drops()?;
        Epoll::tighten_timer_slack();
        let base = Instant::now();
        let start = base + Duration::from_millis(1);
        let mut next_timer_check = start + TIMER_CHECK;
        let mut send_end = None;
        let mut j = 0u64;
        loop {
            let now = Instant::now();
            let mut burst = 0;
            while j < total && burst < SEND_BURST {
                let due = start + Duration::from_nanos((j as f64 * ns_per_pkt) as u64);
                if due > now + SEND_AHEAD {
                    break;
                }
                let s = (j % streams) as usize;
                let probe = Probe {
                    epoch,
                    stream: s as u32,
                    seq: seqs[s],
                    sent_ns: base.elapsed().as_nanos() as u64,
                };
                probe.write(&mut payload);
                let len = encode_channel_data(CHANNEL, &payload, &mut packet);
                match self.clients[s].socket.send(&packet[..len]) {
                    Ok(_) => sent += 1,
                    Err(_) => send_errors += 1,
                }
                seqs[s] += 1;
                j += 1;
                burst += 1;
            }
            if j == total && send_end.is_none() {
                send_end = Some(Instant::now());
            }
            let now = Instant::now();
            if let Some(end) = send_end {
                if now >= end + cfg.drain {
                    break;
                }
            }
            if now >= next_timer_check {
                self.service_timers(now)?;
                next_timer_check = now + TIMER_CHECK;
            }
            let next = match send_end {
                None => start + Duration::from_nanos((j as f64 * ns_per_pkt) as u64),
                Some(end) => end + cfg.drain,
            };
            let timeout = next.saturating_duration_since(now).min(TIMER_CHECK);
            let n = self.epoll.wait(Some(timeout))?;
            ready.clear();
            ready.extend((0..n).map(|k| self.epoll.token(k) as usize));
            for &i in &ready {
                // One datagram per report: the epoll is level-triggered and
                // reports the socket again if more is waiting, which saves
                // the EAGAIN read that draining would cost on every packet.
                let n = match self.clients[i].socket.recv(&mut self.buf) {
                    Ok(n) => n,
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::ConnectionRefused
                        ) =>
                    {
                        continue
                    }
                    Err(e) => return Err(e.into()),
                };
                let at = base.elapsed().as_nanos() as u64;
                match decode_channel_data(&self.buf[..n]).and_then(|(_, p)| Probe::read(p)) {
                    // A packet for client i comes from its partner.
                    Some(p) if p.epoch == epoch && p.stream as usize == i ^ 1 => {
                        received[i ^ 1] += 1;
                        hist.record(at.saturating_sub(p.sent_ns));
                    }
                    Some(_) => stray += 1,
                    None => {
                        // Control traffic (Refresh answers) mid-run.
                        let now = Instant::now();
                        self.clients[i].session.handle_control(now, &self.buf[..n]);
                        self.after_session(i)?;
                    }
                }
            }
        }
        let secs = send_end
            .map(|e| e.duration_since(start).as_secs_f64())
            .unwrap_or(0.0)
            // The last packet leaves one interval before the nominal end.
            .max(cfg.duration.as_secs_f64())
            .max(1e-9);
        let cpu = match (cfg.relay_pid, cpu0) {
            (Some(pid), Some(c0)) => Some(procstat::cpu_seconds(pid)? - c0),
            _ => None,
        };
        let generator_cpu_secs = procstat::cpu_seconds(me)? - my_cpu0;
        let generator_drops = self.receive_drops()?.saturating_sub(drops0);
        let delivered: u64 = received.iter().sum();
        let sent_pps = sent as f64 / secs;
        Ok(StepReport {
            offered_pps: cfg.rate,
            sent_pps,
            secs,
            sent,
            delivered,
            lost: sent.saturating_sub(delivered),
            generator_drops,
            send_errors,
            stray,
            p50_us: hist.quantile_us(0.50),
            p99_us: hist.quantile_us(0.99),
            max_us: hist.max_us(),
            generator_limited: sent_pps < 0.95 * cfg.rate || generator_drops > 0,
            relay_cpu_secs: cpu,
            generator_cpu_secs,
            relay_cpu_secs_per_mpkt: cpu
                .filter(|_| delivered > 0)
                .map(|c| c / (delivered as f64 / 1e6)),
        })
    }
}
