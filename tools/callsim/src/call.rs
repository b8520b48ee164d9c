//! Two-party calls and what they measure.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::participant::{self, MediaLog, Options, Switch, FRAME};
use crate::signaling::JoinArgs;
use crate::threads::Threads;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Signaling URLs (`ws://…/v1/signal`); participants are spread over them.
    pub edges: Vec<String>,
    /// HS256 secret for room tokens (the app's API secret).
    pub api_secret: String,
    pub calls: usize,
    /// How long each call runs.
    pub duration: Duration,
    /// Prefix of room names (unique per run).
    pub room_prefix: String,
    /// Region → RTT (ms) every participant sends as `probes` in `join`
    /// (all simulated participants share one host, so one measurement).
    pub probes: std::collections::BTreeMap<String, f64>,
    /// Do not pre-allocate on the hot standby: every `reroute` allocates
    /// anew (what the simulator did before it used the standby).
    pub no_standby: bool,
    /// Inbound silence after which a participant moves sending to its
    /// ready standby leg ([`participant::STALL_AFTER`] by default).
    pub stall_after: Duration,
    /// Calls are placed evenly over this long from the start (zero: all at
    /// once). A thousand calls never start in the same instant, and placing
    /// them at once measures a join storm, not calls.
    pub ramp: Duration,
    /// Niceness of the threads that carry the callers' media (0: the
    /// process's own). See [`Threads::start`].
    pub nice: i32,
}

/// How the participants of a call moved their audio (both sides summed).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Switches {
    /// `reroute` onto the prepared standby leg: no new allocation.
    pub prepared: usize,
    /// `reroute` with a new allocation on the new relay.
    pub fresh: usize,
    /// Inbound audio stalled: sending moved to the standby leg.
    pub stall: usize,
}

impl Switches {
    fn of(logs: [&MediaLog; 2]) -> Switches {
        let mut s = Switches::default();
        for (kind, _) in logs.iter().flat_map(|l| &l.switches) {
            match kind {
                Switch::Prepared => s.prepared += 1,
                Switch::Fresh => s.fresh += 1,
                Switch::Stall => s.stall += 1,
            }
        }
        s
    }
}

impl std::ops::AddAssign for Switches {
    fn add_assign(&mut self, o: Switches) {
        self.prepared += o.prepared;
        self.fresh += o.fresh;
        self.stall += o.stall;
    }
}

/// One call's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct CallReport {
    pub room: String,
    /// Longest silence heard by either side after audio first arrived (ms).
    pub gap_ms: f64,
    /// Audio still arriving at both sides at the end.
    pub restored: bool,
    pub reroutes: usize,
    pub switches: Switches,
    pub received: [usize; 2],
    /// Audio packets each side missed between its first and last received
    /// ([`MediaLog::lost`]).
    pub lost: [u64; 2],
    pub sent: [u64; 2],
    /// Relay each side ended on.
    pub relays: [String; 2],
    /// When the first `reroute` reached either side (unix ms).
    pub reroute_at_ms: Option<u64>,
    /// Longest time either side was without signaling (its edge died)
    /// until its session was resumed on another edge, ms.
    pub signaling_gap_ms: Option<f64>,
    /// When audio was flowing both ways again after that (unix ms): the
    /// first packet each side received after its reroute, the later one.
    pub resumed_at_ms: Option<u64>,
    pub error: Option<String>,
}

/// `t` as unix ms, through the offset between the two clocks now.
fn unix_ms(t: Instant) -> u64 {
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i128;
    let delta = Instant::now().saturating_duration_since(t).as_millis() as i128;
    (now_unix - delta) as u64
}

/// First reroute of a side, and the first packet it received after it.
fn reroute_and_resume(log: &MediaLog) -> Option<(Instant, Option<Instant>)> {
    let (_, at) = log.reroutes.first()?;
    let resumed = log.arrivals.iter().copied().find(|&t| t > *at);
    Some((*at, resumed))
}

fn longest_gap(arrivals: &[Instant]) -> Duration {
    arrivals
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or(Duration::ZERO)
}

/// Audio counts as flowing at the end if a packet arrived in the last
/// ten frame times.
fn flowing_at(arrivals: &[Instant], end: Instant) -> bool {
    arrivals
        .last()
        .is_some_and(|&t| end.saturating_duration_since(t) < FRAME * 10)
}

fn token(secret: &str, room: &str, who: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    edge_signaling::token::mint(
        secret.as_bytes(),
        &edge_signaling::token::Claims {
            room: room.into(),
            sub: who.into(),
            exp,
        },
    )
}

/// Run every call concurrently for `duration` and report each.
pub async fn run_calls(cfg: &SimConfig) -> Vec<CallReport> {
    let until = Instant::now() + cfg.duration;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let media = Threads::start("callsim-media", cores, cfg.nice).expect("media threads start");
    // Signaling is light (a resume storm of 1,000 sessions costs the
    // callers tens of ms): two threads, the second so one slow handshake
    // does not hold up the rest.
    let signaling = Threads::start("callsim-signaling", 2, 0).expect("signaling threads start");
    let mut tasks = Vec::new();
    for i in 0..cfg.calls {
        let room = format!("{}-{i}", cfg.room_prefix);
        // Each participant starts on its own edge and knows the others to
        // fall back to: the two sides of a call sit on different edges when
        // there are several.
        let rotated = |k: usize| -> Vec<String> {
            let n = cfg.edges.len();
            (0..n).map(|j| cfg.edges[(k + j) % n].clone()).collect()
        };
        let edges = (rotated(2 * i), rotated(2 * i + 1));
        // Every simulated caller is a user of its own, as in life: one
        // identity is one TURN user, held to the relay's quota per user.
        let tokens = (
            token(&cfg.api_secret, &room, &format!("caller-{i}")),
            token(&cfg.api_secret, &room, &format!("callee-{i}")),
        );
        let joins = [tokens.0, tokens.1].map(|token| JoinArgs {
            room: room.clone(),
            token,
            probes: cfg.probes.clone(),
        });
        let opts = Options {
            standby: !cfg.no_standby,
            stall_after: cfg.stall_after,
        };
        let start = cfg.ramp.mul_f64(i as f64 / cfg.calls.max(1) as f64);
        let signaling = signaling.handle();
        tasks.push(media.handle().spawn(async move {
            tokio::time::sleep(start).await;
            let [ja, jb] = joins;
            let a = tokio::spawn({
                let (e, o) = (edges.0.clone(), opts.clone());
                let signaling = signaling.clone();
                async move { participant::run(&signaling, &e, &ja, &o, until, rand::random()).await }
            });
            // The callee joins a moment later, as in a real call.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let b =
                participant::run(&signaling, &edges.1, &jb, &opts, until, rand::random()).await;
            let a = a.await.map_err(anyhow::Error::from).and_then(|r| r);
            report(room, a, b, until)
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        if let Ok(r) = t.await {
            out.push(r);
        }
    }
    out
}

fn report(
    room: String,
    a: anyhow::Result<MediaLog>,
    b: anyhow::Result<MediaLog>,
    end: Instant,
) -> CallReport {
    match (a, b) {
        (Ok(a), Ok(b)) => {
            let ra = reroute_and_resume(&a);
            let rb = reroute_and_resume(&b);
            let reroute_at = [ra, rb].iter().flatten().map(|r| r.0).min();
            let resumed_at = match (ra, rb) {
                (Some((_, Some(x))), Some((_, Some(y)))) => Some(x.max(y)),
                (Some((_, x)), None) | (None, Some((_, x))) => x,
                _ => None,
            };
            let signaling_gap_ms = a
                .signaling_gaps
                .iter()
                .chain(&b.signaling_gaps)
                .max()
                .map(|d| d.as_secs_f64() * 1e3);
            CallReport {
                room,
                signaling_gap_ms,
                reroute_at_ms: reroute_at.map(unix_ms),
                resumed_at_ms: resumed_at.map(unix_ms),
                gap_ms: longest_gap(&a.arrivals)
                    .max(longest_gap(&b.arrivals))
                    .as_secs_f64()
                    * 1e3,
                restored: flowing_at(&a.arrivals, end) && flowing_at(&b.arrivals, end),
                reroutes: a.reroutes.len().max(b.reroutes.len()),
                switches: Switches::of([&a, &b]),
                received: [a.arrivals.len(), b.arrivals.len()],
                lost: [a.lost(), b.lost()],
                sent: [a.sent, b.sent],
                relays: [a.relay, b.relay],
                error: None,
            }
        }
        (a, b) => CallReport {
            room,
            gap_ms: f64::INFINITY,
            restored: false,
            reroutes: 0,
            switches: Switches::default(),
            received: [0, 0],
            lost: [0, 0],
            sent: [0, 0],
            relays: Default::default(),
            reroute_at_ms: None,
            resumed_at_ms: None,
            signaling_gap_ms: None,
            error: Some(format!(
                "{}{}",
                a.err()
                    .map(|e| format!("caller: {e:#} "))
                    .unwrap_or_default(),
                b.err()
                    .map(|e| format!("callee: {e:#}"))
                    .unwrap_or_default()
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gap_is_the_longest_silence() {
        let t0 = Instant::now();
        let ms = |m| t0 + Duration::from_millis(m);
        let arrivals = [ms(0), ms(20), ms(40), ms(400), ms(420)];
        assert_eq!(longest_gap(&arrivals), Duration::from_millis(360));
        assert!(flowing_at(&arrivals, ms(430)));
        assert!(!flowing_at(&arrivals, ms(1000)));
        assert_eq!(longest_gap(&[]), Duration::ZERO);
    }
}
