//! Active probes of relays from this edge. Heartbeats say a relay's process
//! is alive; a probe says its TURN listener answers. Every
//! [`PROBE_INTERVAL`] the edge sends each relay's UDP listener a STUN Binding
//! request (20 bytes; the answer is 32); after [`MISSES`] unanswered probes
//! in a row it records `relay-probe/<edge>/<relay>` as failing, which the
//! directory treats as lost (calls move on the next tick). One answer clears
//! it. A relay whose heartbeat task lives on while its media socket is
//! stuck is caught here, and a dead relay is caught sooner than by
//! heartbeats alone. Answers also time the round trip: a relay answering far
//! slower than its usual ([`rtt_trend`]) is recorded as slow, which
//! the directory treats as degrading (its calls move make-before-break).
//!
//! A relay process that died on a host that is still up is known sooner: its
//! host answers the probe with ICMP port unreachable ([`tern_netio::refusal`]).
//! One refusal sends a confirming probe at once; a second refusal with no
//! answer between marks the relay failing, about one probe interval after
//! the crash instead of [`SILENCE`]. (One stray or forged ICMP is not
//! enough; a host that is gone, or a network cut, sends nothing and is
//! caught by silence as before.)
//!
//! Sooner still, and without ICMP (which a loaded host rate-limits): when a
//! relay's heartbeat connection to this edge closes (the edge's relay links)
//! the relay becomes a *suspect*: it is probed at once, and marked failing
//! if its host refuses that probe or no answer comes within a few of its
//! usual round trips. A live relay (one that only moved its
//! heartbeats to another edge) answers and is left alone.

//!
//! * [`judge`]: the verdicts, sans-IO, in simulated time in tests.
//! * [`driver`]: the UDP sockets, the clock, and the [`ProbeHost`] (the
//!   edge) that verdicts are reported to.
//! * [`rtt_trend`]: a relay's usual round trip, and "far slower than usual".

pub mod driver;
pub mod judge;
pub mod rtt_trend;

pub use driver::{spawn, ProbeHost, Suspects};
