//! The client's own minimal STUN codec (RFC 8489): build requests with
//! MESSAGE-INTEGRITY (HMAC-SHA1, long-term key) and FINGERPRINT, parse
//! answers, XOR addresses, ERROR-CODE.
//!
//! Deliberately not the relay's codec (`edge_relay::stun`): a load generator
//! that shares the server's encoder would share its bugs, and coturn must
//! accept what we send too. It is also small enough that owning it costs
//! less than tracking another crate's API while the relay evolves.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;

pub const MAGIC_COOKIE: u32 = 0x2112_A442;
pub const HEADER_LEN: usize = 20;
const FINGERPRINT_XOR: u32 = 0x5354_554e;

pub type TransactionId = [u8; 12];

// Methods (RFC 8489, RFC 8656).
pub const ALLOCATE: u16 = 0x003;
pub const REFRESH: u16 = 0x004;
pub const CREATE_PERMISSION: u16 = 0x008;
pub const CHANNEL_BIND: u16 = 0x009;

// Attributes.
pub const USERNAME: u16 = 0x0006;
pub const MESSAGE_INTEGRITY: u16 = 0x0008;
pub const ERROR_CODE: u16 = 0x0009;
pub const CHANNEL_NUMBER: u16 = 0x000C;
pub const LIFETIME: u16 = 0x000D;
pub const XOR_PEER_ADDRESS: u16 = 0x0012;
pub const REALM: u16 = 0x0014;
pub const NONCE: u16 = 0x0015;
pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
pub const REQUESTED_TRANSPORT: u16 = 0x0019;
pub const FINGERPRINT: u16 = 0x8028;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Request,
    Indication,
    Success,
    Error,
}

/// Interleave method and class bits (RFC 8489 §5).
pub fn encode_type(method: u16, class: Class) -> u16 {
    let c: u16 = match class {
        Class::Request => 0,
        Class::Indication => 1,
        Class::Success => 2,
        Class::Error => 3,
    };
    let m = method & 0x0fff;
    (m & 0x000f) | ((m & 0x0070) << 1) | ((m & 0x0f80) << 2) | ((c & 1) << 4) | ((c & 2) << 7)
}

pub fn decode_type(t: u16) -> (u16, Class) {
    let m = (t & 0x000f) | ((t >> 1) & 0x0070) | ((t >> 2) & 0x0f80);
    let class = match ((t >> 4) & 1) | ((t >> 7) & 2) {
        0 => Class::Request,
        1 => Class::Indication,
        2 => Class::Success,
        _ => Class::Error,
    };
    (m, class)
}

/// Long-term credential key: MD5(username ":" realm ":" password).
pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
    h.finalize().into()
}

/// Writes a message attribute by attribute, keeping the length field current
/// so integrity and fingerprint cover the bytes as they stand.
pub struct Builder {
    buf: Vec<u8>,
    tid: TransactionId,
}

impl Builder {
    pub fn new(method: u16, class: Class, tid: TransactionId) -> Self {
        let mut buf = Vec::with_capacity(160);
        buf.extend_from_slice(&encode_type(method, class).to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(&tid);
        Builder { buf, tid }
    }

    pub fn attr(&mut self, typ: u16, value: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(&typ.to_be_bytes());
        self.buf
            .extend_from_slice(&(value.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(value);
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
        let len = (self.buf.len() - HEADER_LEN) as u16;
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
        self
    }

    pub fn u32(&mut self, typ: u16, v: u32) -> &mut Self {
        self.attr(typ, &v.to_be_bytes())
    }

    pub fn xor_address(&mut self, typ: u16, addr: SocketAddr) -> &mut Self {
        let v = encode_xor_address(addr, &self.tid);
        self.attr(typ, &v)
    }

    /// MESSAGE-INTEGRITY over everything so far (length includes itself).
    pub fn integrity(&mut self, key: &[u8]) -> &mut Self {
        let at = self.buf.len();
        let mac = integrity_mac(&self.buf, at, key);
        self.attr(MESSAGE_INTEGRITY, &mac)
    }

    /// FINGERPRINT; always last.
    pub fn fingerprint(&mut self) -> &mut Self {
        let at = self.buf.len();
        let crc = fingerprint(&self.buf, at);
        self.u32(FINGERPRINT, crc)
    }

    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
}

/// HMAC-SHA1 of `msg[..at]` with the header length patched to end just after
/// a MESSAGE-INTEGRITY placed at `at` (RFC 8489 §14.5).
fn integrity_mac(msg: &[u8], at: usize, key: &[u8]) -> [u8; 20] {
    let mut mac = Hmac::<Sha1>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(&msg[0..2]);
    mac.update(&((at - HEADER_LEN + 24) as u16).to_be_bytes());
    mac.update(&msg[4..at]);
    mac.finalize().into_bytes().into()
}

fn fingerprint(msg: &[u8], at: usize) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&msg[0..2]);
    h.update(&((at - HEADER_LEN + 8) as u16).to_be_bytes());
    h.update(&msg[4..at]);
    h.finalize() ^ FINGERPRINT_XOR
}

/// A parsed answer, borrowing the datagram.
#[derive(Debug)]
pub struct Message<'a> {
    pub method: u16,
    pub class: Class,
    pub tid: TransactionId,
    raw: &'a [u8],
    attrs: Vec<(u16, usize, &'a [u8])>,
}

impl<'a> Message<'a> {
    /// Parse; `None` for anything that is not a well-formed STUN message.
    pub fn parse(raw: &'a [u8]) -> Option<Message<'a>> {
        if raw.len() < HEADER_LEN
            || raw[0] & 0xc0 != 0
            || u32::from_be_bytes(raw[4..8].try_into().ok()?) != MAGIC_COOKIE
            || u16::from_be_bytes([raw[2], raw[3]]) as usize + HEADER_LEN != raw.len()
        {
            return None;
        }
        let (method, class) = decode_type(u16::from_be_bytes([raw[0], raw[1]]));
        let tid: TransactionId = raw[8..20].try_into().ok()?;
        let mut attrs = Vec::new();
        let mut pos = HEADER_LEN;
        while pos + 4 <= raw.len() {
            let typ = u16::from_be_bytes([raw[pos], raw[pos + 1]]);
            let len = u16::from_be_bytes([raw[pos + 2], raw[pos + 3]]) as usize;
            let value = raw.get(pos + 4..pos + 4 + len)?;
            attrs.push((typ, pos, value));
            pos += 4 + ((len + 3) & !3);
        }
        Some(Message {
            method,
            class,
            tid,
            raw,
            attrs,
        })
    }

    pub fn get(&self, typ: u16) -> Option<&'a [u8]> {
        self.attrs.iter().find(|a| a.0 == typ).map(|a| a.2)
    }

    pub fn has_integrity(&self) -> bool {
        self.get(MESSAGE_INTEGRITY).is_some()
    }

    /// Check MESSAGE-INTEGRITY with `key`; false when absent or wrong.
    pub fn verify_integrity(&self, key: &[u8]) -> bool {
        let Some(&(_, at, value)) = self.attrs.iter().find(|a| a.0 == MESSAGE_INTEGRITY) else {
            return false;
        };
        let mut mac = Hmac::<Sha1>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(&self.raw[0..2]);
        mac.update(&((at - HEADER_LEN + 24) as u16).to_be_bytes());
        mac.update(&self.raw[4..at]);
        mac.verify_slice(value).is_ok()
    }

    pub fn error_code(&self) -> Option<u16> {
        let v = self.get(ERROR_CODE)?;
        (v.len() >= 4).then(|| u16::from(v[2] & 7) * 100 + u16::from(v[3]))
    }

    pub fn u32(&self, typ: u16) -> Option<u32> {
        Some(u32::from_be_bytes(self.get(typ)?.try_into().ok()?))
    }

    pub fn xor_address(&self, typ: u16) -> Option<SocketAddr> {
        decode_xor_address(self.get(typ)?, &self.tid)
    }
}

fn xor_mask_v6(tid: &TransactionId) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    m[4..].copy_from_slice(tid);
    m
}

pub fn encode_xor_address(addr: SocketAddr, tid: &TransactionId) -> Vec<u8> {
    let mut out = vec![0];
    let xport = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.push(1);
            out.extend_from_slice(&xport.to_be_bytes());
            out.extend_from_slice(&(u32::from(ip) ^ MAGIC_COOKIE).to_be_bytes());
        }
        IpAddr::V6(ip) => {
            out.push(2);
            out.extend_from_slice(&xport.to_be_bytes());
            let mask = xor_mask_v6(tid);
            out.extend(ip.octets().iter().zip(mask).map(|(o, m)| o ^ m));
        }
    }
    out
}

pub fn decode_xor_address(v: &[u8], tid: &TransactionId) -> Option<SocketAddr> {
    let port = u16::from_be_bytes([*v.get(2)?, *v.get(3)?]) ^ (MAGIC_COOKIE >> 16) as u16;
    match (v[1], v.len()) {
        (1, 8) => {
            let x = u32::from_be_bytes(v[4..8].try_into().ok()?) ^ MAGIC_COOKIE;
            Some(SocketAddr::new(Ipv4Addr::from(x).into(), port))
        }
        (2, 20) => {
            let mask = xor_mask_v6(tid);
            let mut o = [0u8; 16];
            for i in 0..16 {
                o[i] = v[4 + i] ^ mask[i];
            }
            Some(SocketAddr::new(Ipv6Addr::from(o).into(), port))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 5769 §2.2 sample IPv4 response: integrity with short-term
    /// password "VOkJxbRl1RmTxUk/WvJxBt", XOR-MAPPED-ADDRESS 192.0.2.1:32853.
    #[test]
    fn rfc5769_sample_response() {
        let b = unhex(
            "0101003c 2112a442 b7e7a701 bc34d686 fa87dfae 8022000b 74657374 20766563 \
             746f7220 00200008 0001a147 e112a643 00080014 2b91f599 fd9e90c3 8c7489f9 \
             2af9ba53 f06be7d7 80280004 c07d4c96",
        );
        let m = Message::parse(&b).unwrap();
        assert_eq!(m.class, Class::Success);
        assert_eq!(
            m.xor_address(0x0020),
            Some("192.0.2.1:32853".parse().unwrap())
        );
        assert!(m.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBt"));
        assert!(!m.verify_integrity(b"wrong"));
    }

    #[test]
    fn built_requests_verify_and_carry_fingerprint() {
        let tid = [9u8; 12];
        let peer: SocketAddr = "[2001:db8::1]:3478".parse().unwrap();
        let bytes = Builder::new(CHANNEL_BIND, Class::Request, tid)
            .attr(CHANNEL_NUMBER, &[0x40, 0, 0, 0])
            .xor_address(XOR_PEER_ADDRESS, peer)
            .attr(USERNAME, b"abc")
            .integrity(b"key")
            .fingerprint()
            .finish();
        let m = Message::parse(&bytes).unwrap();
        assert_eq!((m.method, m.class), (CHANNEL_BIND, Class::Request));
        assert_eq!(m.xor_address(XOR_PEER_ADDRESS), Some(peer));
        assert!(m.verify_integrity(b"key"));
        let fp = m.u32(FINGERPRINT).unwrap();
        assert_eq!(fp, fingerprint(&bytes, bytes.len() - 8));
        assert_eq!(encode_type(ALLOCATE, Class::Error), 0x0113);
        assert_eq!(decode_type(0x0113), (ALLOCATE, Class::Error));
    }
}
