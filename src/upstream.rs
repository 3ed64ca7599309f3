//! The upstream's addresses: the configured host name resolved to every address it has, kept
//! current while Tollgate runs so that a store behind a Kubernetes Service or a DNS failover
//! keeps working without a restart.
//!
//! Resolution goes through the system resolver (`getaddrinfo`, on a blocking thread, bounded by
//! [`RESOLVE_TIMEOUT`]); an IP literal is its own address and is never looked up again.
//! [`UpstreamPeers`] holds the current addresses, each as a ready pingora peer, behind an
//! `ArcSwap`: the proxy reads them without a lock and takes them in turn (round-robin). The
//! host is resolved again
//!
//! - at start, where a name that does not resolve refuses the start (see `crate::app`);
//! - every `upstream.resolve_interval` (default 30 s; `0` or `never` turns it off), in a
//!   background task on the control runtime ([`UpstreamPeers::run`]);
//! - after a failed connection ([`UpstreamPeers::connect_failed`]), at most once per
//!   [`FAILURE_RESOLVE_MIN_GAP`]; the proxy retries the request once, on the addresses that
//!   resolution found.
//!
//! A resolution that fails or finds nothing keeps the addresses already known.
//!
//! Test seam, compiled into debug builds only: when `TOLLGATE_TEST_HOSTS` names a file in
//! `/etc/hosts` format (`ADDRESS NAME [ALIAS…]` per line, `#` comments), a name listed there
//! resolves to every address listed for it, read afresh on each resolution, before the system
//! resolver is asked. Tests rewrite the file to move a name to another address without touching
//! the machine's own `/etc/hosts`.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use pingora::upstreams::peer::HttpPeer;
use tokio::sync::{watch, Notify};

use crate::config::UpstreamConfig;
use crate::metrics::METRICS;

/// Longest wait for one resolution.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Connection failures start a resolution at most this often.
pub const FAILURE_RESOLVE_MIN_GAP: Duration = Duration::from_secs(1);

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

/// Whether `e` is a failure to reach the upstream at all: nothing was sent, so the request
/// can be tried again elsewhere.
pub fn is_connect_failure(e: &pingora::Error) -> bool {
    use pingora::ErrorType::*;
    matches!(
        e.etype(),
        ConnectRefused | ConnectNoRoute | ConnectTimedout | ConnectError
    )
}

/// The pingora peer for `addr`: TLS, SNI and timeouts as configured.
fn make_peer(up: &UpstreamConfig, addr: SocketAddr) -> HttpPeer {
    let mut peer = HttpPeer::new(addr, up.tls, up.sni.clone());
    peer.options.connection_timeout = Some(up.connect_timeout);
    peer.options.total_connection_timeout = Some(up.connect_timeout);
    peer.options.read_timeout = Some(up.read_timeout);
    peer.options.write_timeout = Some(up.read_timeout);
    peer.options.idle_timeout = Some(Duration::from_secs(60));
    peer
}

/// A resolution's addresses, sorted, and a peer for each.
struct Current {
    addrs: Vec<SocketAddr>,
    /// Never empty.
    peers: Vec<HttpPeer>,
}

impl Current {
    fn new(config: &UpstreamConfig, mut addrs: Vec<SocketAddr>) -> Self {
        addrs.sort();
        let peers = addrs.iter().map(|a| make_peer(config, *a)).collect();
        Current { addrs, peers }
    }
}

/// The upstream's current addresses as peers, and what keeps them current (see the module
/// documentation).
pub struct UpstreamPeers {
    config: UpstreamConfig,
    current: ArcSwap<Current>,
    /// Round-robin position.
    next: AtomicUsize,
    /// Wakes the background task for a resolution now.
    wake: Notify,
    /// Resolutions finished by the background task (successful or not).
    finished: watch::Sender<u64>,
    /// When a connection failure last asked for a resolution, and how many resolutions had
    /// finished then.
    last_request: Mutex<Option<(Instant, u64)>>,
}

impl UpstreamPeers {
    /// The peers for `addrs` (the start's resolution, not empty).
    pub fn new(config: &UpstreamConfig, addrs: Vec<SocketAddr>) -> Arc<Self> {
        assert!(!addrs.is_empty(), "the upstream has at least one address");
        METRICS.upstream_addresses.set(addrs.len() as i64);
        Arc::new(UpstreamPeers {
            config: config.clone(),
            current: ArcSwap::from_pointee(Current::new(config, addrs)),
            next: AtomicUsize::new(0),
            wake: Notify::new(),
            finished: watch::channel(0).0,
            last_request: Mutex::new(None),
        })
    }

    /// Whether the host is ever resolved again (it is a name, not an IP literal).
    fn resolves(&self) -> bool {
        !is_literal(&self.config.host)
    }

    /// The peer for the next request: the addresses in turn. No lock and no allocation but the
    /// peer's own clone.
    pub fn peer(&self) -> HttpPeer {
        let current = self.current.load();
        let peers = &current.peers;
        let i = match peers.len() {
            1 => 0,
            n => self.next.fetch_add(1, Ordering::Relaxed) % n,
        };
        peers[i].clone()
    }

    /// The current addresses, sorted.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.current.load().addrs.clone()
    }

    /// A connection to the upstream failed: asks for a resolution now unless a failure asked
    /// less than [`FAILURE_RESOLVE_MIN_GAP`] ago. Returns what to pass to
    /// [`wait_resolved`](Self::wait_resolved) before trying again (the asked-for resolution,
    /// or the one a recent failure asked for), or `None` for an IP literal.
    pub fn connect_failed(&self) -> Option<u64> {
        if !self.resolves() {
            return None;
        }
        let mut last = self.last_request.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, finished)) = *last {
            if at.elapsed() < FAILURE_RESOLVE_MIN_GAP {
                return Some(finished);
            }
        }
        let finished = *self.finished.borrow();
        *last = Some((Instant::now(), finished));
        self.wake.notify_one();
        Some(finished)
    }

    /// Waits until a resolution after `seen` (from [`connect_failed`](Self::connect_failed))
    /// has finished, or [`RESOLVE_TIMEOUT`] has passed.
    pub async fn wait_resolved(&self, seen: u64) {
        let mut rx = self.finished.subscribe();
        let _ = tokio::time::timeout(RESOLVE_TIMEOUT, rx.wait_for(|n| *n > seen)).await;
    }

    /// Resolves the host again and takes the addresses found; a failure, or no address,
    /// keeps the current ones.
    pub async fn refresh(&self) {
        let up = &self.config;
        match resolve(&up.host, up.port).await {
            Ok(addrs) => {
                METRICS
                    .upstream_resolutions
                    .with_label_values(&["ok"])
                    .inc();
                let new = Current::new(up, addrs);
                let old = self.current.load();
                if new.addrs != old.addrs {
                    tracing::info!(
                        host = %up.host,
                        old = ?old.addrs,
                        new = ?new.addrs,
                        "the upstream's addresses changed"
                    );
                    METRICS.upstream_addresses.set(new.addrs.len() as i64);
                    self.current.store(Arc::new(new));
                }
            }
            Err(e) => {
                METRICS
                    .upstream_resolutions
                    .with_label_values(&["error"])
                    .inc();
                tracing::warn!(error = %e, "resolving the upstream again failed; keeping its addresses");
            }
        }
        self.finished.send_modify(|n| *n += 1);
    }

    /// Resolves the host every `upstream.resolve_interval` and whenever a connection failure
    /// asks, until `stop`. Returns at once for an IP literal.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        if !self.resolves() {
            return;
        }
        let interval = self.config.resolve_interval;
        loop {
            let timer = async {
                match interval {
                    Some(every) => tokio::time::sleep(every).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = timer => {}
                _ = self.wake.notified() => {}
                _ = stop.changed() => return,
            }
            self.refresh().await;
        }
    }
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

    fn config(host: &str) -> UpstreamConfig {
        let (c, _) = crate::config::load(None, vec![], &Default::default()).unwrap();
        UpstreamConfig {
            host: host.into(),
            ..c.upstream
        }
    }

    #[test]
    fn peers_are_taken_in_turn() {
        let addrs: Vec<SocketAddr> =
            vec!["127.0.0.2:80".parse().unwrap(), "[::1]:80".parse().unwrap()];
        let up = UpstreamPeers::new(&config("store.test"), addrs.clone());
        let picked: Vec<String> = (0..4).map(|_| up.peer()._address.to_string()).collect();
        assert_eq!(
            picked,
            ["127.0.0.2:80", "[::1]:80", "127.0.0.2:80", "[::1]:80"]
        );
        assert_eq!(up.addresses(), addrs);
    }

    #[tokio::test]
    async fn failures_ask_for_a_resolution_at_most_once_a_second() {
        let literal =
            UpstreamPeers::new(&config("127.0.0.1"), vec!["127.0.0.1:80".parse().unwrap()]);
        assert_eq!(literal.connect_failed(), None);

        let up = UpstreamPeers::new(&config("localhost"), vec!["127.0.0.9:80".parse().unwrap()]);
        // The sender stays alive: a dropped one reads as "stop" to the task.
        let (_stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(up.clone().run(stop_rx));
        let seen = up.connect_failed().unwrap();
        assert_eq!(seen, 0);
        up.wait_resolved(seen).await;
        assert_eq!(*up.finished.borrow(), 1);
        assert!(up
            .addresses()
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 80));
        // A second failure within the gap waits for the same resolution (already done).
        assert_eq!(up.connect_failed(), Some(0));
        assert_eq!(*up.finished.borrow(), 1);
        task.abort();
    }

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
