//! The upstream's addresses: the configured host name resolved to every address it has.
//!
//! Resolution goes through the system resolver (`getaddrinfo`, on a blocking thread, bounded by
//! [`RESOLVE_TIMEOUT`]); an IP literal is its own address and is never looked up.
//!
//! Test seam, compiled into debug builds only: when `TOLLGATE_TEST_HOSTS` names a file in
//! `/etc/hosts` format (`ADDRESS NAME [ALIAS…]` per line, `#` comments), a name listed there
//! resolves to every address listed for it, read afresh on each resolution, before the system
//! resolver is asked. Tests rewrite the file to move a name to another address without touching
//! the machine's own `/etc/hosts`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Longest wait for one resolution.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Every address of `host` at `port`, in the resolver's order without duplicates; an error
/// (`cannot resolve NAME: …`) when the name does not resolve in time or has no address.
pub async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    #[cfg(debug_assertions)]
    if let Some(ips) = test_hosts::lookup(host) {
        return Ok(ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect());
    }
    let found =
        match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port))).await {
            Err(_) => {
                return Err(format!(
                    "cannot resolve {host}: no answer within {}s",
                    RESOLVE_TIMEOUT.as_secs()
                ))
            }
            Ok(Err(e)) => return Err(format!("cannot resolve {host}: {e}")),
            Ok(Ok(found)) => found,
        };
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for a in found {
        if !addrs.contains(&a) {
            addrs.push(a);
        }
    }
    if addrs.is_empty() {
        return Err(format!("{host} resolves to no address"));
    }
    Ok(addrs)
}

/// Whether `host` is an IP literal (its address never changes).
pub fn is_literal(host: &str) -> bool {
    host.parse::<IpAddr>().is_ok()
}

/// The debug-build hosts-file seam described in the module documentation.
#[cfg(debug_assertions)]
mod test_hosts {
    use std::net::IpAddr;

    /// The addresses the test hosts file lists for `host`, or `None` when no file is named or
    /// the file does not list the name.
    pub fn lookup(host: &str) -> Option<Vec<IpAddr>> {
        let path = std::env::var_os("TOLLGATE_TEST_HOSTS")?;
        let text = std::fs::read_to_string(path).ok()?;
        let ips = parse(&text, host);
        (!ips.is_empty()).then_some(ips)
    }

    /// Every address listed for `host` in hosts-file `text`, in file order.
    pub fn parse(text: &str, host: &str) -> Vec<IpAddr> {
        let mut ips = Vec::new();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or_default();
            let mut words = line.split_whitespace();
            let Some(Ok(ip)) = words.next().map(str::parse::<IpAddr>) else {
                continue;
            };
            if words.any(|w| w.eq_ignore_ascii_case(host)) && !ips.contains(&ip) {
                ips.push(ip);
            }
        }
        ips
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn literals_are_their_own_address() {
        assert_eq!(
            resolve("127.0.0.1", 80).await.unwrap(),
            ["127.0.0.1:80".parse().unwrap()]
        );
        assert_eq!(
            resolve("::1", 443).await.unwrap(),
            ["[::1]:443".parse().unwrap()]
        );
        assert!(is_literal("::1") && !is_literal("localhost"));
    }

    #[tokio::test]
    async fn names_resolve_or_say_why_not() {
        let local = resolve("localhost", 81).await.unwrap();
        assert!(local.iter().all(|a| a.ip().is_loopback() && a.port() == 81));
        let e = resolve("no-such-host.invalid", 80).await.unwrap_err();
        assert!(
            e.starts_with("cannot resolve no-such-host.invalid: "),
            "{e}"
        );
    }

    #[test]
    fn hosts_file_format() {
        let text = "# comment\n127.0.0.2 store.test other\n\n127.0.0.3\tSTORE.test # again\n\
                    ::1 store.test\nnot-an-ip store.test\n127.0.0.2 store.test\n";
        let ips: Vec<String> = test_hosts::parse(text, "store.test")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(ips, ["127.0.0.2", "127.0.0.3", "::1"]);
        assert!(test_hosts::parse(text, "store").is_empty());
    }
}
