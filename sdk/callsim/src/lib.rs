//! A call simulator for failover drills and benchmarks.
//!
//! Each simulated participant does what the browser SDK does, minus WebRTC:
//! it joins a room over WebSocket, allocates on the TURN relay signaling
//! hands it (REST credentials from `iceServers`), tells its peer its relayed
//! address through `signal` frames, binds a channel to the peer's relayed
//! address and sends 160-byte RTP-like packets (sequence number + send time)
//! at 50 pps. On `reroute` it allocates on the new relay and announces the
//! new address; the peer rebinds. Received packets give each direction's
//! audio gap: the longest silence between two packets after media started.
//!
//! * [`participant`]: one simulated caller (signaling + media).
//! * [`call`]: a two-party call and its measurements.

pub mod call;
pub mod participant;

pub use call::{run_calls, CallReport, SimConfig};
