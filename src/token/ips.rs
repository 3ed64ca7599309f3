//! Per-token client allowlists: the networks (CIDR, or a single address) a token may be used
//! from. Empty means any address. An IPv4-mapped IPv6 client (`::ffff:10.1.2.3`, a dual-stack
//! listener's view of an IPv4 peer) is matched as the IPv4 address it carries.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Most networks one token's allowlist may hold (it is scanned on every request).
pub const MAX_ALLOWED_IPS: usize = 64;

/// The networks a token may be used from; empty allows every address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedIps(Vec<IpNet>);

/// Parses one network: `10.0.0.0/8`, `2001:db8::/32`, or a single address (`203.0.113.7`,
/// read as `/32` or `/128`). A prefix with host bits set (`10.0.0.1/8`) is refused: it is
/// ambiguous whether the network or the host was meant.
pub fn parse_network(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    let net: IpNet = s
        .parse()
        .map_err(|_| format!("{s:?} is not an IP address or CIDR network"))?;
    if net.trunc() != net {
        return Err(format!(
            "{s:?} has host bits set (did you mean {}?)",
            net.trunc()
        ));
    }
    Ok(net)
}

/// The address a rule is matched against: an IPv4-mapped IPv6 address as its IPv4 address.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl AllowedIps {
    /// Parses a list of networks (see [`parse_network`]); duplicates are kept once.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Self, String> {
        if items.len() > MAX_ALLOWED_IPS {
            return Err(format!(
                "allowed_ips holds at most {MAX_ALLOWED_IPS} networks"
            ));
        }
        let mut nets: Vec<IpNet> = Vec::with_capacity(items.len());
        for item in items {
            let net = parse_network(item.as_ref()).map_err(|e| format!("allowed_ips: {e}"))?;
            if !nets.contains(&net) {
                nets.push(net);
            }
        }
        Ok(AllowedIps(nets))
    }

    /// Parses the stored form: the networks joined by commas (empty: any address).
    pub fn parse_stored(s: &str) -> Result<Self, String> {
        let items: Vec<&str> = s.split(',').filter(|p| !p.trim().is_empty()).collect();
        Self::parse(&items)
    }

    /// No restriction: every address is allowed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The networks.
    pub fn networks(&self) -> &[IpNet] {
        &self.0
    }

    /// The networks as text, in order.
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(IpNet::to_string).collect()
    }

    /// True when `ip` may use the token: the list is empty, or a network holds the address
    /// (an IPv4-mapped IPv6 address as IPv4). An unknown address passes only an empty list.
    pub fn allows(&self, ip: Option<IpAddr>) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let Some(ip) = ip else {
            return false;
        };
        let ip = canonical_ip(ip);
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// True when this list allows no address `outer` does not: `outer` is empty (any
    /// address), or this list is not empty and each of its networks lies inside one of
    /// `outer`'s.
    pub fn within(&self, outer: &AllowedIps) -> bool {
        if outer.0.is_empty() {
            return true;
        }
        !self.0.is_empty() && self.0.iter().all(|n| outer.0.iter().any(|o| o.contains(n)))
    }
}

/// The stored form: the networks joined by commas (empty for any address).
impl fmt::Display for AllowedIps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, n) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{n}")?;
        }
        Ok(())
    }
}

impl Serialize for AllowedIps {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(IpNet::to_string))
    }
}

impl<'de> Deserialize<'de> for AllowedIps {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let items = Vec::<String>::deserialize(d)?;
        AllowedIps::parse(&items).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> AllowedIps {
        AllowedIps::parse(items).unwrap()
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn parses_networks_and_addresses() {
        let l = list(&["10.0.0.0/8", "2001:db8::/32", "203.0.113.7", "::1"]);
        assert_eq!(
            l.to_strings(),
            ["10.0.0.0/8", "2001:db8::/32", "203.0.113.7/32", "::1/128"]
        );
        assert_eq!(AllowedIps::parse_stored(&l.to_string()).unwrap(), l);
        assert_eq!(AllowedIps::parse_stored("").unwrap(), AllowedIps::default());
        for bad in [
            "10.0.0.1/8",
            "10.0.0.0/33",
            "nope",
            "",
            "10.0.0.0/",
            "1.2.3",
        ] {
            assert!(AllowedIps::parse(&[bad]).is_err(), "{bad}");
        }
        let many: Vec<String> = (0..=MAX_ALLOWED_IPS)
            .map(|i| format!("10.0.0.{i}"))
            .collect();
        assert!(AllowedIps::parse(&many).is_err());
    }

    #[test]
    fn matches_addresses() {
        let l = list(&["10.0.0.0/8", "2001:db8::/32", "203.0.113.7"]);
        assert!(l.allows(ip("10.1.2.3")));
        assert!(l.allows(ip("::ffff:10.1.2.3")));
        assert!(l.allows(ip("2001:db8::1")));
        assert!(l.allows(ip("203.0.113.7")));
        assert!(!l.allows(ip("203.0.113.8")));
        assert!(!l.allows(ip("11.0.0.1")));
        assert!(!l.allows(ip("2001:db9::1")));
        assert!(!l.allows(None));
        assert!(AllowedIps::default().allows(None));
        assert!(AllowedIps::default().allows(ip("192.0.2.1")));
    }

    #[test]
    fn containment() {
        let outer = list(&["10.0.0.0/8", "2001:db8::/32"]);
        assert!(list(&["10.1.0.0/16", "2001:db8:1::/48"]).within(&outer));
        assert!(list(&["10.0.0.0/8"]).within(&outer));
        assert!(!list(&["10.0.0.0/7"]).within(&outer));
        assert!(!list(&["10.0.0.0/16", "192.0.2.1"]).within(&outer));
        assert!(!AllowedIps::default().within(&outer));
        assert!(AllowedIps::default().within(&AllowedIps::default()));
        assert!(list(&["192.0.2.1"]).within(&AllowedIps::default()));
    }

    #[test]
    fn serde_round_trip() {
        let l: AllowedIps = serde_json::from_str(r#"["10.0.0.0/8","::1"]"#).unwrap();
        assert_eq!(
            serde_json::to_string(&l).unwrap(),
            r#"["10.0.0.0/8","::1/128"]"#
        );
        assert!(serde_json::from_str::<AllowedIps>(r#"["10.0.0.0/99"]"#).is_err());
    }
}
