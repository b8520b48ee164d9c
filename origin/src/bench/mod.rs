//! Benchmarks built into `tern` (`tern bench …`), kept apart from the
//! modules they measure so the production paths carry no bench code.
//!
//! * [`signaling`]: per-frame cost through the component, join→joined.
//! * [`backup`]: backup and restore throughput.

pub mod backup;
pub mod signaling;
