//! Attribute numbers (STUN RFC 8489, TURN RFC 8656) and the value encodings
//! that are more than a byte copy.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::header::{TransactionId, MAGIC_COOKIE};

// STUN, comprehension-required (< 0x8000).
/// Client's reflexive address in the clear (legacy; we send XOR-MAPPED-ADDRESS).
pub const MAPPED_ADDRESS: u16 = 0x0001;
/// RFC 3489 only: "send the answer there". Never honoured (a reflector
/// primitive); unknown to us, so a request carrying it gets 420 to its sender.
pub const RESPONSE_ADDRESS: u16 = 0x0002;
/// RFC 3489 / RFC 5780: "answer from another address". Same treatment.
pub const CHANGE_REQUEST: u16 = 0x0003;
/// Long-term credential username (for Tern, a TURN REST `<expiry>:<identity>`).
pub const USERNAME: u16 = 0x0006;
/// HMAC-SHA1 over the message up to it, keyed with the long-term key.
pub const MESSAGE_INTEGRITY: u16 = 0x0008;
/// Error class and number plus reason phrase in an error response.
pub const ERROR_CODE: u16 = 0x0009;
/// In a 420 answer: the comprehension-required attribute types not understood.
pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
/// Realm of the long-term credentials, sent with 401 and echoed by the client.
pub const REALM: u16 = 0x0014;
/// Server-issued nonce the client must echo in authenticated requests.
pub const NONCE: u16 = 0x0015;
/// HMAC-SHA256 (16 to 32 bytes) over the message up to it.
pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
/// The password algorithm (MD5 or SHA-256) the client chose for its key.
pub const PASSWORD_ALGORITHM: u16 = 0x001D;
/// Hashed username (RFC 8489 anonymity); not supported: a request with it gets 420.
pub const USERHASH: u16 = 0x001E;
/// Client's reflexive address, XORed with the magic cookie (and transaction id).
pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
// TURN, comprehension-required.
/// Channel number (0x4000-0x4FFF) a ChannelBind binds to a peer.
pub const CHANNEL_NUMBER: u16 = 0x000C;
/// Allocation lifetime in seconds, requested by the client or granted by us.
pub const LIFETIME: u16 = 0x000D;
/// The peer a permission, channel, Send or Data indication is about.
pub const XOR_PEER_ADDRESS: u16 = 0x0012;
/// Application payload of a Send or Data indication.
pub const DATA: u16 = 0x0013;
/// The relayed address an Allocate success hands out.
pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
/// Address family (IPv4 or IPv6) the client wants its relayed address in.
pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
/// Ask for an even relayed port (R bit: also reserve the next one).
pub const EVEN_PORT: u16 = 0x0018;
/// Transport protocol of the relayed leg; we relay UDP only.
pub const REQUESTED_TRANSPORT: u16 = 0x0019;
/// Ask for the DF bit on datagrams to peers; accepted and ignored.
pub const DONT_FRAGMENT: u16 = 0x001A;
/// Token for a port reserved by an earlier EVEN-PORT; not supported (420).
pub const RESERVATION_TOKEN: u16 = 0x0022;
// Comprehension-optional (>= 0x8000): may be ignored when not understood.
/// Password algorithms the server offers with a 401; echoed by the client.
pub const PASSWORD_ALGORITHMS: u16 = 0x8002;
/// TLS domain name of ALTERNATE-SERVER; not sent by us.
pub const ALTERNATE_DOMAIN: u16 = 0x8003;
/// Implementation name and version, sent only in authenticated answers.
pub const SOFTWARE: u16 = 0x8022;
/// Where a 300 Try Alternate redirects the client (plain address).
pub const ALTERNATE_SERVER: u16 = 0x8023;
/// CRC32 of the message XOR 0x5354554E, always the last attribute.
pub const FINGERPRINT: u16 = 0x8028;

/// PASSWORD-ALGORITHM number for MD5 (RFC 8489 §18.5).
pub const ALGORITHM_MD5: u16 = 0x0001;
/// PASSWORD-ALGORITHM number for SHA-256 (RFC 8489 §18.5).
pub const ALGORITHM_SHA256: u16 = 0x0002;

/// IANA protocol number for UDP, the only REQUESTED-TRANSPORT we relay.
pub const TRANSPORT_UDP: u8 = 17;

/// Is a comprehension-required attribute one this server implements? Unknown
/// ones in a request make the engine answer 420 with UNKNOWN-ATTRIBUTES.
///
/// DONT-FRAGMENT is accepted and ignored (as coturn does when it cannot set
/// DF): refusing it would only make clients retry without it. EVEN-PORT is
/// understood (R=0 honoured, R=1 refused with 508); RESERVATION-TOKEN is
/// deliberately not listed: we do not reserve port pairs, and 420 is the
/// RFC's way of saying so.
pub fn is_understood(typ: u16) -> bool {
    typ >= 0x8000
        || matches!(
            typ,
            MAPPED_ADDRESS
                | USERNAME
                | MESSAGE_INTEGRITY
                | ERROR_CODE
                | UNKNOWN_ATTRIBUTES
                | REALM
                | NONCE
                | XOR_MAPPED_ADDRESS
                | CHANNEL_NUMBER
                | LIFETIME
                | XOR_PEER_ADDRESS
                | DATA
                | XOR_RELAYED_ADDRESS
                | REQUESTED_ADDRESS_FAMILY
                | REQUESTED_TRANSPORT
                | DONT_FRAGMENT
                | EVEN_PORT
                | MESSAGE_INTEGRITY_SHA256
                | PASSWORD_ALGORITHM
        )
}

/// Address family byte for IPv4 in address attributes and REQUESTED-ADDRESS-FAMILY.
pub const FAMILY_IPV4: u8 = 0x01;
/// Address family byte for IPv6 in address attributes and REQUESTED-ADDRESS-FAMILY.
pub const FAMILY_IPV6: u8 = 0x02;

/// Encode an XOR-*-ADDRESS value (RFC 8489 §14.2) into `out`.
pub fn encode_xor_address(addr: SocketAddr, tid: &TransactionId, out: &mut Vec<u8>) {
    let xport = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    out.push(0);
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.push(FAMILY_IPV4);
            out.extend_from_slice(&xport.to_be_bytes());
            let x = u32::from(ip) ^ MAGIC_COOKIE;
            out.extend_from_slice(&x.to_be_bytes());
        }
        IpAddr::V6(ip) => {
            out.push(FAMILY_IPV6);
            out.extend_from_slice(&xport.to_be_bytes());
            let mask = xor_mask_v6(tid);
            for (o, m) in ip.octets().iter().zip(mask) {
                out.push(o ^ m);
            }
        }
    }
}

/// Encode a plain (non-XOR) address value, as ALTERNATE-SERVER uses.
pub fn encode_address(addr: SocketAddr, out: &mut Vec<u8>) {
    out.push(0);
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.push(FAMILY_IPV4);
            out.extend_from_slice(&addr.port().to_be_bytes());
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(FAMILY_IPV6);
            out.extend_from_slice(&addr.port().to_be_bytes());
            out.extend_from_slice(&ip.octets());
        }
    }
}

/// Decode a plain (non-XOR) address value.
pub fn decode_address(v: &[u8]) -> Option<SocketAddr> {
    if v.len() < 4 {
        return None;
    }
    let port = u16::from_be_bytes([v[2], v[3]]);
    match v[1] {
        FAMILY_IPV4 if v.len() == 8 => Some(SocketAddr::new(
            Ipv4Addr::new(v[4], v[5], v[6], v[7]).into(),
            port,
        )),
        FAMILY_IPV6 if v.len() == 20 => {
            let o: [u8; 16] = v[4..20].try_into().ok()?;
            Some(SocketAddr::new(Ipv6Addr::from(o).into(), port))
        }
        _ => None,
    }
}

/// Decode an XOR-*-ADDRESS value; `None` when malformed.
pub fn decode_xor_address(v: &[u8], tid: &TransactionId) -> Option<SocketAddr> {
    if v.len() < 4 {
        return None;
    }
    let port = u16::from_be_bytes([v[2], v[3]]) ^ (MAGIC_COOKIE >> 16) as u16;
    match v[1] {
        FAMILY_IPV4 if v.len() == 8 => {
            let x = u32::from_be_bytes([v[4], v[5], v[6], v[7]]) ^ MAGIC_COOKIE;
            Some(SocketAddr::new(Ipv4Addr::from(x).into(), port))
        }
        FAMILY_IPV6 if v.len() == 20 => {
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

fn xor_mask_v6(tid: &TransactionId) -> [u8; 16] {
    let mut mask = [0u8; 16];
    mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    mask[4..].copy_from_slice(tid);
    mask
}

/// Encode ERROR-CODE: class in the hundreds digit, number in the rest.
pub fn encode_error_code(code: u16, reason: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&[0, 0, (code / 100) as u8, (code % 100) as u8]);
    out.extend_from_slice(reason.as_bytes());
}

/// Decode ERROR-CODE into the numeric code (used by tests and clients).
pub fn decode_error_code(v: &[u8]) -> Option<u16> {
    if v.len() < 4 {
        return None;
    }
    Some((v[2] & 0x7) as u16 * 100 + v[3] as u16)
}

/// A 32-bit big-endian value (LIFETIME).
pub fn decode_u32(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xor_addresses_round_trip() {
        let tid = [7u8; 12];
        for a in ["192.0.2.1:32853", "[2001:db8::1]:1234"] {
            let a: SocketAddr = a.parse().unwrap();
            let mut v = Vec::new();
            encode_xor_address(a, &tid, &mut v);
            assert_eq!(decode_xor_address(&v, &tid), Some(a));
        }
        // RFC 5769 §2.2: 192.0.2.1:32853 encodes to port 0xa147, addr 0xe112a643.
        let mut v = Vec::new();
        encode_xor_address("192.0.2.1:32853".parse().unwrap(), &tid, &mut v);
        assert_eq!(v, [0, 1, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43]);
        assert_eq!(decode_xor_address(&[0, 1, 0], &tid), None);
        assert_eq!(decode_xor_address(&[0, 3, 0, 0, 1, 2, 3, 4], &tid), None);
    }
}
