//! Client addresses: as text, shared by the proxy's forwarding headers and the audit line; and
//! which address is the client's when the connection comes from a trusted proxy
//! ([`TrustedProxies`]).

use std::net::IpAddr;

use ipnet::IpNet;

/// Most `X-Forwarded-For` entries read (over all its header lines); a longer chain is not
/// read at all.
pub const MAX_FORWARDED_ENTRIES: usize = 64;
/// Most `X-Forwarded-For` bytes read (over all its header lines); a longer chain is not read
/// at all.
pub const MAX_FORWARDED_BYTES: usize = 8 * 1024;

/// The `trusted_proxies` setting: peers whose `X-Forwarded-For` says who the client is.
///
/// When the TCP peer is in one of these networks, the client is the rightmost address of
/// `X-Forwarded-For` that is not itself a trusted proxy, walking the chain right to left
/// (header lines in order, each split at commas). The walk stops at the first entry that is not
/// an IP address (brackets around IPv6 are accepted, ports are not): the address read just
/// before it (a trusted proxy, possibly the peer) is then the client, since nothing further left
/// can be trusted. The walk reads at most [`MAX_FORWARDED_ENTRIES`] entries or
/// [`MAX_FORWARDED_BYTES`] bytes from the right (the work stays bounded); beyond them the peer
/// itself is the client. Only trusted proxies write that part of the chain: what a client sends
/// lies left of the address its first proxy appends, so a long header never makes the client
/// the proxy.
/// With no trusted proxy (the default), or a peer outside them, the client is the peer and the
/// header is not looked at. IPv4-mapped IPv6 addresses are matched as IPv4.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// The networks to trust (empty: none).
    pub fn new(networks: Vec<IpNet>) -> Self {
        TrustedProxies(networks)
    }

    /// No proxy is trusted: the client is always the TCP peer.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The networks.
    pub fn networks(&self) -> &[IpNet] {
        &self.0
    }

    /// True when `ip` is a trusted proxy.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = unmapped(ip);
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The client's address: `peer`, or when `peer` is trusted, what `forwarded_for` (each
    /// call iterates the `X-Forwarded-For` header lines, in order) says (see the type's
    /// documentation). Allocates nothing.
    pub fn client<'a, I>(
        &self,
        peer: Option<IpAddr>,
        forwarded_for: impl Fn() -> I,
    ) -> Option<IpAddr>
    where
        I: DoubleEndedIterator<Item = &'a [u8]>,
    {
        let peer = peer?;
        if self.0.is_empty() || !self.trusts(peer) {
            return Some(peer);
        }
        // Only the entries walked count: they are right of the first untrusted one, so every
        // one of them was written by a trusted proxy. A client's own entries (left of the
        // address its first proxy appended) can make the header long but never stop the walk
        // early: bounding the whole header would let any client turn itself into the proxy.
        let (mut bytes, mut entries) = (0usize, 0usize);
        let mut client = peer;
        for line in forwarded_for().rev() {
            for entry in line.rsplit(|&b| b == b',') {
                bytes += entry.len() + 1;
                entries += 1;
                if bytes > MAX_FORWARDED_BYTES || entries > MAX_FORWARDED_ENTRIES {
                    return Some(peer);
                }
                let entry = entry.trim_ascii();
                if entry.is_empty() {
                    continue;
                }
                let Some(ip) = parse_entry(entry) else {
                    return Some(client);
                };
                client = ip;
                if !self.trusts(ip) {
                    return Some(ip);
                }
            }
        }
        Some(client)
    }
}

/// One `X-Forwarded-For` entry: an IP address, IPv6 optionally in brackets.
fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let entry = match entry {
        [b'[', inner @ .., b']'] => inner,
        e => e,
    };
    std::str::from_utf8(entry).ok()?.parse().ok()
}

/// An IPv4-mapped IPv6 address as IPv4; any other address as it is.
fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Formats `ip` into `buf`: IPv4 by hand (`Display` for `Ipv4Addr` costs ~1000
/// instructions), IPv6 through `Display`.
pub fn format_ip(ip: IpAddr, buf: &mut [u8; 48]) -> &[u8] {
    let mut len = 0;
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[len] = b'.';
                    len += 1;
                }
                if octet >= 100 {
                    buf[len] = b'0' + octet / 100;
                    len += 1;
                }
                if octet >= 10 {
                    buf[len] = b'0' + octet / 10 % 10;
                    len += 1;
                }
                buf[len] = b'0' + octet % 10;
                len += 1;
            }
        }
        IpAddr::V6(_) => {
            use std::io::Write;
            let mut cursor = std::io::Cursor::new(&mut buf[..]);
            // An IPv6 address is at most 45 characters: this cannot fail.
            let _ = write!(cursor, "{ip}");
            len = cursor.position() as usize;
        }
    }
    &buf[..len]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::new(nets.iter().map(|n| n.parse().unwrap()).collect())
    }

    fn resolve(t: &TrustedProxies, peer: &str, lines: &[&str]) -> String {
        let lines: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
        t.client(Some(peer.parse().unwrap()), || lines.iter().copied())
            .unwrap()
            .to_string()
    }

    #[test]
    fn client_behind_trusted_proxies() {
        let none = TrustedProxies::default();
        let t = trusted(&["10.0.0.0/8", "127.0.0.3/32"]);
        // Nobody trusted, or an untrusted peer: the header is ignored.
        assert_eq!(resolve(&none, "10.0.0.1", &["192.0.2.1"]), "10.0.0.1");
        assert_eq!(resolve(&t, "192.0.2.9", &["127.0.0.1"]), "192.0.2.9");
        // Rightmost untrusted entry, across lines and spaces.
        assert_eq!(resolve(&t, "127.0.0.3", &["127.0.0.1"]), "127.0.0.1");
        assert_eq!(
            resolve(
                &t,
                "10.0.0.1",
                &["1.1.1.1, 192.0.2.7", "10.0.0.2 ,10.0.0.3"]
            ),
            "192.0.2.7"
        );
        assert_eq!(
            resolve(&t, "::ffff:10.0.0.1", &["[2001:db8::1]"]),
            "2001:db8::1"
        );
        // No header, or only trusted entries: the leftmost address reached.
        assert_eq!(resolve(&t, "10.0.0.1", &[]), "10.0.0.1");
        assert_eq!(resolve(&t, "10.0.0.1", &["10.0.0.5, 10.0.0.6"]), "10.0.0.5");
        // Garbage stops the walk at the last trusted address read.
        assert_eq!(
            resolve(&t, "10.0.0.1", &["192.0.2.1, junk, 10.0.0.6"]),
            "10.0.0.6"
        );
        assert_eq!(resolve(&t, "10.0.0.1", &["192.0.2.1:80"]), "10.0.0.1");
        // What the client sent, however long, is left of the address its proxy appended.
        let long = vec!["10.0.0.9"; MAX_FORWARDED_ENTRIES + 1].join(",");
        assert_eq!(resolve(&t, "10.0.0.1", &[&long, "192.0.2.7"]), "192.0.2.7");
        assert_eq!(
            resolve(&t, "10.0.0.1", &[&format!("{long}, 192.0.2.7")]),
            "192.0.2.7"
        );
        // More trusted hops than the walk reads: the peer.
        assert_eq!(resolve(&t, "10.0.0.1", &[&long]), "10.0.0.1");
        let wide = format!("192.0.2.1,{}", " ".repeat(MAX_FORWARDED_BYTES));
        assert_eq!(resolve(&t, "10.0.0.1", &[&wide]), "10.0.0.1");
        assert_eq!(t.client(None, std::iter::empty), None);
    }

    #[test]
    fn formats_addresses_like_display() {
        let cases = [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "100.9.99.1",
            "::1",
            "2001:db8::8a2e:370:7334",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::ffff:192.168.1.1",
        ];
        for c in cases {
            let ip: IpAddr = c.parse().unwrap();
            let mut buf = [0u8; 48];
            assert_eq!(format_ip(ip, &mut buf), ip.to_string().as_bytes(), "{c}");
        }
    }
}
