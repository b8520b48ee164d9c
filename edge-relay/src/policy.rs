//! Which peers a relay may send to.
//!
//! A TURN relay is an open door into whatever network it sits in: without a
//! policy, any client holding credentials could reach the relay host's
//! loopback services, the cloud metadata endpoint, or the private network
//! behind it. So by default only public unicast addresses are peers; an
//! operator (or a local test: `tern up` passes `--allow-peer 127.0.0.0/8`)
//! opens specific ranges with an allow-list that overrides the deny-list.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Allow-list over a fixed deny-list of non-public ranges.
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    allow: Vec<IpNet>,
}

impl PeerPolicy {
    /// The default deny-list, with `allow` ranges opened on top of it.
    pub fn new(allow: Vec<IpNet>) -> Self {
        PeerPolicy { allow }
    }

    /// May the relay send to (and accept from) `ip`?
    pub fn is_allowed(&self, ip: IpAddr) -> bool {
        // Judge an IPv4-mapped IPv6 address as the IPv4 address it is, so
        // `::ffff:127.0.0.1` cannot sneak past the IPv4 rules.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        if self.allow.iter().any(|net| net.contains(&ip)) {
            return true;
        }
        match ip {
            IpAddr::V4(v4) => !denied_v4(v4),
            IpAddr::V6(v6) => !denied_v6(v6),
        }
    }
}

fn denied_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_unspecified()
        || o[0] == 0 // "this network" 0.0.0.0/8
        || ip.is_loopback()
        || ip.is_private() // 10/8, 172.16/12, 192.168/16
        || ip.is_link_local() // 169.254/16, includes 169.254.169.254 metadata
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // CGNAT 100.64/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments 192.0.0/24
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking 198.18/15
        || ip.is_multicast()
        || ip.is_broadcast()
        || o[0] >= 240 // reserved 240/4
}

/// The IPv4 address an IPv6 address carries by a translation or tunnel
/// mechanism, if it is one: such an address reaches that IPv4 host (through
/// a NAT64 gateway, a 6to4 or Teredo relay), so the IPv4 rules decide it.
/// Several may be embedded (Teredo names a server and a client): all count.
fn embedded_v4(ip: Ipv6Addr) -> Vec<Ipv4Addr> {
    let s = ip.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from(((hi as u32) << 16) | lo as u32);
    match s {
        // NAT64, the well-known prefix 64:ff9b::/96 (RFC 6052).
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => vec![v4(hi, lo)],
        // 6to4, 2002::/16 (RFC 3056): the IPv4 address follows the prefix.
        [0x2002, hi, lo, ..] => vec![v4(hi, lo)],
        // Teredo, 2001::/32 (RFC 4380): the server's address, and the
        // client's, obfuscated by inverting every bit.
        [0x2001, 0, shi, slo, _, _, chi, clo] => vec![v4(shi, slo), v4(!chi, !clo)],
        // IPv4-compatible ::a.b.c.d (deprecated, RFC 4291): judge as IPv4.
        [0, 0, 0, 0, 0, 0, hi, lo] => vec![v4(hi, lo)],
        _ => Vec::new(),
    }
}

fn denied_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    if ip.is_unspecified() || ip.is_loopback() {
        return true;
    }
    let embedded = embedded_v4(ip);
    if !embedded.is_empty() {
        return embedded.into_iter().any(denied_v4);
    }
    (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7 (RFC 4193)
        || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated, RFC 3879)
        || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) // local-use NAT64 64:ff9b:1::/48 (RFC 8215)
        || ip.is_multicast()
    // fd00:ec2::254 is AWS's IPv6 metadata endpoint; covered by fc00::/7.
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn default_policy_refuses_non_public() {
        let p = PeerPolicy::default();
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "224.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "192.0.0.8",
            "198.18.0.1",
            "198.19.255.254",
            "fec0::1",
            "64:ff9b:1::1",
        ] {
            assert!(!p.is_allowed(ip(bad)), "{bad} must be refused");
        }
        for good in [
            "8.8.8.8",
            "100.128.0.1",
            "172.32.0.1",
            "198.20.0.1",
            "2001:db8::1",
        ] {
            assert!(p.is_allowed(ip(good)), "{good} must be allowed");
        }
    }

    /// Translation and tunnel prefixes reach the IPv4 host they embed: a
    /// loopback, private or metadata address inside one is refused like the
    /// address itself, a public one is allowed.
    #[test]
    fn addresses_embedding_ipv4_are_judged_by_it() {
        let p = PeerPolicy::default();
        for bad in [
            "64:ff9b::7f00:1",           // NAT64 of 127.0.0.1
            "64:ff9b::a9fe:a9fe",        // NAT64 of 169.254.169.254
            "2002:7f00:1::1",            // 6to4 of 127.0.0.1
            "2002:a00:1::1",             // 6to4 of 10.0.0.1
            "2001:0:808:808::80ff:fefe", // Teredo, client 127.0.1.1
            "2001:0:a00:1::f7f7:f7f7",   // Teredo, server 10.0.0.1
            "::7f00:1",                  // IPv4-compatible 127.0.0.1
            "::a00:1",                   // IPv4-compatible 10.0.0.1
        ] {
            assert!(!p.is_allowed(ip(bad)), "{bad} must be refused");
        }
        for good in [
            "64:ff9b::808:808",          // NAT64 of 8.8.8.8
            "2002:808:808::1",           // 6to4 of 8.8.8.8
            "2001:0:808:808::f7f7:f7f7", // Teredo, server and client public
        ] {
            assert!(p.is_allowed(ip(good)), "{good} must be allowed");
        }
    }

    #[test]
    fn allow_list_overrides() {
        let p = PeerPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(p.is_allowed(ip("127.0.0.1")));
        assert!(p.is_allowed(ip("::ffff:127.0.0.1")));
        assert!(!p.is_allowed(ip("10.0.0.1")));
    }
}
