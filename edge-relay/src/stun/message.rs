//! STUN message header and zero-copy parsing.

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;

use super::attr;
pub use super::header::{TransactionId, HEADER_LEN, MAGIC_COOKIE};

/// XORed into the CRC32 of FINGERPRINT so STUN CRCs differ from other protocols'.
pub const FINGERPRINT_XOR: u32 = 0x5354_554e;
/// Bound on attributes we index per message. Real clients send < 15; the cap
/// keeps a hostile datagram full of empty attributes from costing much.
const MAX_ATTRIBUTES: usize = 48;

/// The two class bits of the message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Expects a success or error response with the same transaction id.
    Request,
    /// Fire-and-forget (Send, Data): never answered.
    Indication,
    /// Success response to a request.
    Success,
    /// Error response to a request, carrying ERROR-CODE.
    Error,
}

/// The 12 method bits of the message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Method(pub u16);

impl Method {
    /// STUN Binding: answered with the client's XOR-MAPPED-ADDRESS.
    pub const BINDING: Method = Method(0x001);
    /// TURN Allocate: create an allocation and its relayed address.
    pub const ALLOCATE: Method = Method(0x003);
    /// TURN Refresh: extend an allocation's lifetime, or delete it with 0.
    pub const REFRESH: Method = Method(0x004);
    /// TURN Send indication: client media to a peer, without a channel.
    pub const SEND: Method = Method(0x006);
    /// TURN Data indication: peer media to a client, without a channel.
    pub const DATA: Method = Method(0x007);
    /// TURN CreatePermission: permit media to and from the given peer IPs.
    pub const CREATE_PERMISSION: Method = Method(0x008);
    /// TURN ChannelBind: bind a channel number to a peer (and permit it).
    pub const CHANNEL_BIND: Method = Method(0x009);
}

/// Interleave method and class bits as in RFC 8489 §5 (M11..M7 C1 M6..M4 C0 M3..M0).
pub fn encode_type(method: Method, class: Class) -> u16 {
    let m = method.0 & 0x0fff;
    let c: u16 = match class {
        Class::Request => 0b00,
        Class::Indication => 0b01,
        Class::Success => 0b10,
        Class::Error => 0b11,
    };
    (m & 0x000f) | ((m & 0x0070) << 1) | ((m & 0x0f80) << 2) | ((c & 1) << 4) | ((c & 2) << 7)
}

/// Inverse of [`encode_type`].
pub fn decode_type(t: u16) -> (Method, Class) {
    let m = (t & 0x000f) | ((t >> 1) & 0x0070) | ((t >> 2) & 0x0f80);
    let class = match ((t >> 4) & 1) | ((t >> 7) & 2) {
        0b00 => Class::Request,
        0b01 => Class::Indication,
        0b10 => Class::Success,
        _ => Class::Error,
    };
    (Method(m), class)
}

/// Why a datagram is not a usable STUN message. All of these are dropped
/// silently by the engine: answering garbage would make us a reflector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer than the 20 bytes of a STUN header.
    #[error("shorter than a STUN header")]
    TooShort,
    /// The first two bits are not zero or the magic cookie is missing.
    #[error("not a STUN message (leading bits or magic cookie)")]
    NotStun,
    /// The header's length is not a multiple of 4 or not the datagram's.
    #[error("length field disagrees with the datagram size")]
    BadLength,
    /// An attribute's length runs past the end of the message.
    #[error("an attribute runs past the end of the message")]
    AttributeOverflow,
    /// More attributes than the parser indexes (48), a cost bound.
    #[error("too many attributes")]
    TooManyAttributes,
    /// FINGERPRINT is not last, not 4 bytes, or its CRC does not match.
    #[error("FINGERPRINT does not match")]
    BadFingerprint,
}

/// One attribute as found in the datagram.
#[derive(Debug, Clone, Copy)]
pub struct RawAttribute<'a> {
    /// Attribute type number (see [`super::attr`]).
    pub typ: u16,
    /// The value, without the header or padding.
    pub value: &'a [u8],
    /// Offset of the attribute header inside the message.
    pub offset: usize,
}

/// A parsed STUN message borrowing the datagram it came from.
#[derive(Debug)]
pub struct Message<'a> {
    /// The method bits of the message type (Allocate, Refresh, ...).
    pub method: Method,
    /// The class bits of the message type (request, indication, response).
    pub class: Class,
    /// The 96-bit id a response echoes from its request.
    pub transaction_id: TransactionId,
    raw: &'a [u8],
    attributes: Vec<RawAttribute<'a>>,
    /// Offset of MESSAGE-INTEGRITY, if present.
    integrity_at: Option<usize>,
    /// Offset of MESSAGE-INTEGRITY-SHA256, if present.
    integrity_sha256_at: Option<usize>,
}

/// Quick test used by the demultiplexer: first two bits zero and the magic
/// cookie in place. ChannelData starts with 0b01, so the two never collide.
pub fn looks_like_stun(buf: &[u8]) -> bool {
    buf.len() >= HEADER_LEN
        && buf[0] & 0xc0 == 0
        && u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) == MAGIC_COOKIE
}

impl<'a> Message<'a> {
    /// Parse and, when FINGERPRINT is present, verify it.
    pub fn parse(raw: &'a [u8]) -> Result<Self, DecodeError> {
        if raw.len() < HEADER_LEN {
            return Err(DecodeError::TooShort);
        }
        if !looks_like_stun(raw) {
            return Err(DecodeError::NotStun);
        }
        let len = u16::from_be_bytes([raw[2], raw[3]]) as usize;
        if !len.is_multiple_of(4) || HEADER_LEN + len != raw.len() {
            return Err(DecodeError::BadLength);
        }
        let (method, class) = decode_type(u16::from_be_bytes([raw[0], raw[1]]));
        let mut transaction_id = [0u8; 12];
        transaction_id.copy_from_slice(&raw[8..20]);

        let mut attributes = Vec::new();
        let mut integrity_at = None;
        let mut integrity_sha256_at = None;
        let mut pos = HEADER_LEN;
        while pos < raw.len() {
            if pos + 4 > raw.len() {
                return Err(DecodeError::AttributeOverflow);
            }
            let typ = u16::from_be_bytes([raw[pos], raw[pos + 1]]);
            let vlen = u16::from_be_bytes([raw[pos + 2], raw[pos + 3]]) as usize;
            let start = pos + 4;
            let end = start + vlen;
            if end > raw.len() {
                return Err(DecodeError::AttributeOverflow);
            }
            let value = &raw[start..end];
            if typ == attr::FINGERPRINT {
                // FINGERPRINT must be last; its CRC covers everything before it.
                if end != raw.len() || vlen != 4 {
                    return Err(DecodeError::BadFingerprint);
                }
                let got = u32::from_be_bytes([value[0], value[1], value[2], value[3]]);
                if got != fingerprint(raw, pos) {
                    return Err(DecodeError::BadFingerprint);
                }
                break;
            }
            // RFC 8489 §14.5/§14.6: after MESSAGE-INTEGRITY only
            // MESSAGE-INTEGRITY-SHA256 and FINGERPRINT count, after
            // MESSAGE-INTEGRITY-SHA256 only FINGERPRINT; anything else there
            // is not covered by a MAC and is ignored.
            let counted = if integrity_sha256_at.is_some() {
                false
            } else if typ == attr::MESSAGE_INTEGRITY_SHA256 {
                integrity_sha256_at = Some(pos);
                true
            } else {
                integrity_at.is_none()
            };
            if counted {
                if attributes.len() == MAX_ATTRIBUTES {
                    return Err(DecodeError::TooManyAttributes);
                }
                attributes.push(RawAttribute {
                    typ,
                    value,
                    offset: pos,
                });
                if typ == attr::MESSAGE_INTEGRITY {
                    integrity_at = Some(pos);
                }
            }
            pos = start + ((vlen + 3) & !3);
        }
        Ok(Message {
            method,
            class,
            transaction_id,
            raw,
            attributes,
            integrity_at,
            integrity_sha256_at,
        })
    }

    /// The first attribute of a type (RFC 8489: later duplicates are ignored).
    pub fn get(&self, typ: u16) -> Option<&'a [u8]> {
        self.attributes
            .iter()
            .find(|a| a.typ == typ)
            .map(|a| a.value)
    }

    /// Attributes in wire order, without FINGERPRINT and without those after
    /// the integrity attributes (no MAC covers them).
    pub fn attributes(&self) -> &[RawAttribute<'a>] {
        &self.attributes
    }

    /// Carries MESSAGE-INTEGRITY or MESSAGE-INTEGRITY-SHA256.
    pub fn has_integrity(&self) -> bool {
        self.integrity_at.is_some() || self.integrity_sha256_at.is_some()
    }

    /// Carries MESSAGE-INTEGRITY-SHA256 (which then is the one that counts).
    pub fn has_integrity_sha256(&self) -> bool {
        self.integrity_sha256_at.is_some()
    }

    /// Check MESSAGE-INTEGRITY-SHA256 (HMAC-SHA256, possibly truncated to
    /// 16..=32 bytes in steps of 4, RFC 8489 §14.6). False when absent.
    pub fn verify_integrity_sha256(&self, key: &[u8]) -> bool {
        let Some(at) = self.integrity_sha256_at else {
            return false;
        };
        let Some(value) = self.get(attr::MESSAGE_INTEGRITY_SHA256) else {
            return false;
        };
        if !(16..=32).contains(&value.len()) || !value.len().is_multiple_of(4) {
            return false;
        }
        let mac = integrity_sha256_mac(self.raw, at, value.len(), key);
        mac.verify_truncated_left(value).is_ok()
    }

    /// Check MESSAGE-INTEGRITY (HMAC-SHA1) with `key`. False when absent.
    pub fn verify_integrity(&self, key: &[u8]) -> bool {
        let Some(at) = self.integrity_at else {
            return false;
        };
        let Some(value) = self.get(attr::MESSAGE_INTEGRITY) else {
            return false;
        };
        if value.len() != 20 {
            return false;
        }
        let mac = integrity_mac(self.raw, at, key);
        // `verify_slice` compares in constant time.
        mac.verify_slice(value).is_ok()
    }

    /// The whole message as received.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }
}

/// HMAC-SHA1 over `msg[..at]` as if the header length ended just after a
/// MESSAGE-INTEGRITY attribute placed at `at` (RFC 8489 §14.5). Feeding the
/// pieces separately avoids copying the message to patch its length.
pub(crate) fn integrity_mac(msg: &[u8], at: usize, key: &[u8]) -> Hmac<Sha1> {
    let mut mac = Hmac::<Sha1>::new_from_slice(key).expect("HMAC takes any key length");
    let len = (at - HEADER_LEN + 24) as u16;
    mac.update(&msg[0..2]);
    mac.update(&len.to_be_bytes());
    mac.update(&msg[4..at]);
    mac
}

/// HMAC-SHA256 over `msg[..at]` with the length covering a
/// MESSAGE-INTEGRITY-SHA256 of `value_len` bytes placed at `at` (§14.6).
pub(crate) fn integrity_sha256_mac(
    msg: &[u8],
    at: usize,
    value_len: usize,
    key: &[u8],
) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    let len = (at - HEADER_LEN + 4 + value_len) as u16;
    mac.update(&msg[0..2]);
    mac.update(&len.to_be_bytes());
    mac.update(&msg[4..at]);
    mac
}

/// CRC32 ^ 0x5354554e over `msg[..at]` with the length covering FINGERPRINT.
pub(crate) fn fingerprint(msg: &[u8], at: usize) -> u32 {
    let mut h = crc32fast::Hasher::new();
    let len = (at - HEADER_LEN + 8) as u16;
    h.update(&msg[0..2]);
    h.update(&len.to_be_bytes());
    h.update(&msg[4..at]);
    h.finalize() ^ FINGERPRINT_XOR
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_bits_round_trip() {
        // Known values from RFC 8489 / 8656.
        assert_eq!(encode_type(Method::BINDING, Class::Request), 0x0001);
        assert_eq!(encode_type(Method::BINDING, Class::Success), 0x0101);
        assert_eq!(encode_type(Method::ALLOCATE, Class::Error), 0x0113);
        assert_eq!(encode_type(Method::SEND, Class::Indication), 0x0016);
        assert_eq!(encode_type(Method::DATA, Class::Indication), 0x0017);
        for m in 0..0x1000u16 {
            for c in [
                Class::Request,
                Class::Indication,
                Class::Success,
                Class::Error,
            ] {
                assert_eq!(decode_type(encode_type(Method(m), c)), (Method(m), c));
            }
        }
    }

    /// RFC 5769 §2.1 sample request: integrity with short-term password
    /// "VOkJxbRl1RmTxUk/WvJxBt" and a FINGERPRINT.
    #[test]
    fn rfc5769_sample_request_verifies() {
        let hex = "00010058 2112a442 b7e7a701 bc34d686 fa87dfae 80220010 5354554e \
                   20746573 7420636c 69656e74 00240004 6e0001ff 80290008 932ff9b1 \
                   51263b36 00060009 6576746a 3a683676 59202020 00080014 9aeaa70c \
                   bfd8cb56 781ef2b5 b2d3f249 c1b571a2 80280004 e57a3bcf";
        let hex: String = hex.chars().filter(|c| !c.is_whitespace()).collect();
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let m = Message::parse(&bytes).expect("parses, fingerprint ok");
        assert_eq!(m.class, Class::Request);
        assert_eq!(m.get(attr::USERNAME), Some(&b"evtj:h6vY"[..]));
        assert!(m.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBt"));
        assert!(!m.verify_integrity(b"wrong"));
        let mut bad = bytes.clone();
        bad[30] ^= 1;
        assert_eq!(
            Message::parse(&bad).unwrap_err(),
            DecodeError::BadFingerprint
        );
    }
}
