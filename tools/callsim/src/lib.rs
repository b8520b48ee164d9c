//! A call simulator for failover drills and benchmarks.
//!
//! Each simulated participant does what the browser SDK does, minus WebRTC:
//! it joins a room over WebSocket, allocates on the TURN relay signaling
//! hands it (REST credentials from `iceServers`), tells its peer its relayed
//! address through `signal` frames, binds a channel to the peer's relayed
//! address and sends 160-byte RTP-like packets (sequence number + send time)
//! at 50 pps.
//!
//! It also allocates on the hot standby `joined` names (another region's
//! relay) and binds that leg to the peer's standby leg, so on a `reroute` to
//! that relay it only starts sending there: no allocation in the gap. It
//! receives on both legs, and moves sending to the standby by itself when
//! inbound audio stalls (like the SDK after a path loss). A `reroute`
//! anywhere else allocates on the new relay and announces the new address;
//! the peer rebinds. `no_standby` turns the standby off (one allocation at
//! a time). Received packets give each direction's audio gap: the longest
//! silence between two packets after media started.
//!
//! * [`participant`]: one simulated caller (signaling + media).
//! * [`call`]: a two-party call and its measurements.
//! * [`signaling`]: a participant's WebSocket to the edges, on threads of
//!   its own.
//! * [`threads`]: the runtimes the callers' media and signaling run on.

pub mod call;
pub mod participant;
pub mod signaling;
pub mod threads;

pub use call::{run_calls, CallReport, SimConfig, Switches};
pub use participant::{Options, Switch, STALL_AFTER};
