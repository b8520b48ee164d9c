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
        || ip.is_multicast()
        || ip.is_broadcast()
        || o[0] >= 240 // reserved 240/4
}

fn denied_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    ip.is_unspecified()
        || ip.is_loopback()
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7 (RFC 4193)
        || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
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
        ] {
            assert!(!p.is_allowed(ip(bad)), "{bad} must be refused");
        }
        for good in ["8.8.8.8", "100.128.0.1", "172.32.0.1", "2001:db8::1"] {
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
