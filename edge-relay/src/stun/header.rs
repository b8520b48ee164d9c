//! The fixed part of every STUN header that the other codec modules share:
//! the magic cookie (which also keys the XOR address encoding) and the
//! transaction id.

/// Fixed value in every RFC 5389+ header; it also feeds the XOR address codec.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Type (2) + length (2) + cookie (4) + transaction id (12).
pub const HEADER_LEN: usize = 20;

/// The 96-bit id that ties a response to its request.
pub type TransactionId = [u8; 12];
