//! Writing STUN messages.

use std::net::SocketAddr;

use super::attr;
use super::message::{
    encode_type, fingerprint, integrity_mac, integrity_sha256_mac, Class, Method, TransactionId,
    HEADER_LEN, MAGIC_COOKIE,
};
use hmac::Mac;

/// Appends attributes to a message, keeping the header's length field current
/// so integrity and fingerprint can be computed over the bytes as they stand.
pub struct MessageBuilder {
    buf: Vec<u8>,
    tid: TransactionId,
}

impl MessageBuilder {
    /// A header for `method`/`class` with transaction id `tid` and no
    /// attributes yet.
    pub fn new(method: Method, class: Class, tid: TransactionId) -> Self {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&encode_type(method, class).to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(&tid);
        MessageBuilder { buf, tid }
    }

    /// Add an attribute with a raw value (padded to 4 bytes with zeros).
    pub fn attr(&mut self, typ: u16, value: &[u8]) -> &mut Self {
        self.attr_with(typ, |out| out.extend_from_slice(value))
    }

    /// Add an attribute whose value is written by `write`, so callers need no
    /// temporary buffer.
    pub fn attr_with(&mut self, typ: u16, write: impl FnOnce(&mut Vec<u8>)) -> &mut Self {
        let at = self.buf.len();
        self.buf.extend_from_slice(&typ.to_be_bytes());
        self.buf.extend_from_slice(&[0, 0]);
        write(&mut self.buf);
        let vlen = self.buf.len() - at - 4;
        self.buf[at + 2..at + 4].copy_from_slice(&(vlen as u16).to_be_bytes());
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
        self.set_length();
        self
    }

    /// Add an XOR-*-ADDRESS attribute (`typ`) holding `addr`, XORed with the
    /// magic cookie and this message's transaction id.
    pub fn xor_address(&mut self, typ: u16, addr: SocketAddr) -> &mut Self {
        let tid = self.tid;
        self.attr_with(typ, |out| attr::encode_xor_address(addr, &tid, out))
    }

    /// Add a 32-bit big-endian attribute, such as LIFETIME (seconds).
    pub fn u32(&mut self, typ: u16, v: u32) -> &mut Self {
        self.attr(typ, &v.to_be_bytes())
    }

    /// Add ERROR-CODE with `code` (300-699) and its reason phrase.
    pub fn error(&mut self, code: u16, reason: &str) -> &mut Self {
        self.attr_with(attr::ERROR_CODE, |out| {
            attr::encode_error_code(code, reason, out)
        })
    }

    /// MESSAGE-INTEGRITY over everything so far. Must precede FINGERPRINT.
    pub fn integrity(&mut self, key: &[u8]) -> &mut Self {
        let at = self.buf.len();
        let mac = integrity_mac(&self.buf, at, key).finalize().into_bytes();
        self.attr(attr::MESSAGE_INTEGRITY, &mac)
    }

    /// MESSAGE-INTEGRITY-SHA256 (full 32 bytes) over everything so far.
    /// Must precede FINGERPRINT.
    pub fn integrity_sha256(&mut self, key: &[u8]) -> &mut Self {
        let at = self.buf.len();
        let mac = integrity_sha256_mac(&self.buf, at, 32, key)
            .finalize()
            .into_bytes();
        self.attr(attr::MESSAGE_INTEGRITY_SHA256, &mac)
    }

    /// Current length in bytes (header included).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Never true: there is always a header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// FINGERPRINT; always the last attribute.
    pub fn fingerprint(&mut self) -> &mut Self {
        let at = self.buf.len();
        let crc = fingerprint(&self.buf, at);
        self.u32(attr::FINGERPRINT, crc)
    }

    /// The finished message; leaves the builder empty.
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    fn set_length(&mut self) {
        let len = (self.buf.len() - HEADER_LEN) as u16;
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::super::Message;
    use super::*;

    #[test]
    fn built_messages_parse_and_verify() {
        let tid = [1u8; 12];
        let mut b = MessageBuilder::new(Method::ALLOCATE, Class::Success, tid);
        b.xor_address(attr::XOR_RELAYED_ADDRESS, "10.0.0.1:5000".parse().unwrap())
            .u32(attr::LIFETIME, 600)
            .attr(attr::USERNAME, b"abcde")
            .integrity(b"key")
            .fingerprint();
        let bytes = b.finish();
        let m = Message::parse(&bytes).unwrap();
        assert_eq!(m.method, Method::ALLOCATE);
        assert_eq!(m.class, Class::Success);
        assert_eq!(m.get(attr::USERNAME), Some(&b"abcde"[..]));
        assert!(m.verify_integrity(b"key"));
        assert!(!m.verify_integrity(b"other"));
        assert!(!m.verify_integrity_sha256(b"key"), "absent");
        assert_eq!(
            attr::decode_xor_address(m.get(attr::XOR_RELAYED_ADDRESS).unwrap(), &tid),
            Some("10.0.0.1:5000".parse().unwrap())
        );
    }
}

#[cfg(test)]
mod sha256_tests {
    use super::super::Message;
    use super::*;

    #[test]
    fn sha256_integrity_after_sha1_integrity_verifies() {
        let mut b = MessageBuilder::new(Method::REFRESH, Class::Request, [3; 12]);
        b.attr(attr::USERNAME, b"u")
            .integrity(b"k1")
            .integrity_sha256(b"k2")
            .fingerprint();
        let bytes = b.finish();
        let m = Message::parse(&bytes).unwrap();
        assert!(m.has_integrity_sha256());
        assert!(m.verify_integrity(b"k1"));
        assert!(m.verify_integrity_sha256(b"k2"));
        assert!(!m.verify_integrity_sha256(b"k1"));
        // Truncated to 16 bytes is still valid (RFC 8489 §14.6).
        let mut b = MessageBuilder::new(Method::REFRESH, Class::Request, [3; 12]);
        b.attr(attr::USERNAME, b"u");
        let at = b.len();
        let mac = integrity_sha256_mac(&b.finish(), at, 16, b"k2")
            .finalize()
            .into_bytes();
        let mut b = MessageBuilder::new(Method::REFRESH, Class::Request, [3; 12]);
        b.attr(attr::USERNAME, b"u")
            .attr(attr::MESSAGE_INTEGRITY_SHA256, &mac[..16]);
        let bytes = b.finish();
        assert!(Message::parse(&bytes)
            .unwrap()
            .verify_integrity_sha256(b"k2"));
    }
}
