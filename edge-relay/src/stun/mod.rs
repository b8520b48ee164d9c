//! A small STUN (RFC 8489) codec: just what a TURN server needs.
//!
//! * [`message`]: parse a datagram into a borrowed [`Message`] and check its
//!   MESSAGE-INTEGRITY / FINGERPRINT without copying it.
//! * [`header`]: the magic cookie and transaction id every part shares.
//! * [`attr`]: attribute numbers and the value encodings (XOR addresses,
//!   ERROR-CODE) that need more than a byte copy.
//! * [`framing`]: messages on a byte stream (TURN over TCP/TLS).
//! * [`builder`]: write a message into a `Vec<u8>`, integrity and fingerprint
//!   last.
//!
//! Hand-written rather than taken from a crate because the surface is small,
//! parsing must never allocate per attribute on the data path, and the TURN
//! engine needs to reach raw attribute offsets for integrity checks.

pub mod attr;
pub mod builder;
pub mod framing;
pub mod header;
pub mod message;

pub use builder::MessageBuilder;
pub use message::{Class, DecodeError, Message, Method, TransactionId, HEADER_LEN, MAGIC_COOKIE};
