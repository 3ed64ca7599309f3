//! Client connection limits on the proxy listeners: a deadline for the request head, an idle
//! timeout between requests on a kept-alive connection, a cap on open connections in total and
//! per client address, and the open-file limit they are derived from.
//!
//! Pingora 0.9 has no hook for any of these. Its HTTP/1 server times each *read* of a request
//! head, not the head (a byte every few seconds holds a connection forever), and after the first
//! request of a connection it waits for the next one without any timeout (`respect_keepalive`
//! turns an HTTP/1.1 session's keep-alive into "infinite"). Its optional connection filter sees
//! only the address at accept, never the close. So [`Guarded`] wraps the proxy application one
//! level up, as the [`ServerApp`] that pingora's listening service hands every accepted (and TLS
//! handshaken) connection to:
//!
//! - it takes a slot for the connection or refuses it (503 `too_many_connections`, closed);
//! - for HTTP/1 it runs the keep-alive loop itself (the loop of pingora's own
//!   `impl ServerApp for HttpServerApp`): it reads each request head under the deadlines, then
//!   gives the session to the proxy with those bytes as a prefix, which pingora parses without
//!   reading again;
//! - HTTP/2 (TLS with ALPN `h2`) goes to pingora unchanged, with `h2_idle_timeout` set to the
//!   keep-alive timeout.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::BytesMut;
use dashmap::DashMap;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, HttpServerOptions, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::proxy::{HttpProxy, ProxyHttp};
use pingora::server::configuration::ServerConf;
use pingora::server::ShutdownWatch;
use pingora::services::listening::Service;
use prometheus::IntCounter;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::LimitsConfig;
use crate::metrics::METRICS;

/// Descriptors kept free for everything but client connections (listeners, runtimes, token
/// files, the database, logs, idle upstream connections) when `max_connections` is derived.
pub const RESERVED_DESCRIPTORS: u64 = 256;

/// Pingora refuses a request head longer than this (its `MAX_HEADER_SIZE`); past it the bytes
/// go to pingora, which answers 400.
const MAX_HEAD: usize = 1_048_575;

/// The cap on open client connections when `limits.max_connections` is `auto`: half the
/// open-file limit (a proxied connection holds two descriptors, the client's and the
/// upstream's) less [`RESERVED_DESCRIPTORS`]; a quarter of it below 1024 descriptors.
pub fn default_max_connections(nofile: u64) -> usize {
    let n = if nofile >= 4 * RESERVED_DESCRIPTORS {
        nofile / 2 - RESERVED_DESCRIPTORS
    } else {
        nofile / 4
    };
    usize::try_from(n.max(1)).unwrap_or(usize::MAX)
}

/// Raises the soft open-file limit (`RLIMIT_NOFILE`) to the hard limit; returns the limit in
/// force afterwards.
pub fn raise_open_file_limit() -> std::io::Result<u64> {
    let (soft, hard) = crate::sys::open_file_limit()?;
    let mut target = hard;
    if target == libc::RLIM_INFINITY {
        // Linux refuses an infinite NOFILE; its ceiling is fs.nr_open.
        target = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1 << 20);
    }
    if target > soft {
        if let Err(e) = crate::sys::set_open_file_limit(target, hard) {
            tracing::warn!(error = %e, soft, hard, "cannot raise the open-file limit");
            return Ok(soft);
        }
        return Ok(target);
    }
    Ok(soft)
}

/// Why a connection was refused (the `reason` label of `tollgate_connections_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `limits.max_connections` reached.
    Total,
    /// `limits.max_connections_per_ip` reached for the client's address.
    PerIp,
}

impl Refused {
    fn label(self) -> &'static str {
        match self {
            Refused::Total => "max_connections",
            Refused::PerIp => "max_connections_per_ip",
        }
    }
}

/// The connection caps and deadlines, with the counts of open connections.
pub struct Limits {
    header_timeout: Duration,
    keepalive_timeout: Duration,
    max_total: usize,
    max_per_ip: usize,
    open: AtomicUsize,
    per_ip: DashMap<IpAddr, usize, foldhash::fast::RandomState>,
    refused: [IntCounter; 2],
    header_timeouts: IntCounter,
    keepalive_timeouts: IntCounter,
    started: Instant,
    /// Seconds since `started` of the last refusal logged, per reason (+1; 0 = never).
    last_logged: [AtomicU64; 2],
}

/// One open connection's place in the counts; given back on drop.
pub struct Slot {
    limits: Arc<Limits>,
    ip: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            if let dashmap::Entry::Occupied(mut e) = self.limits.per_ip.entry(ip) {
                *e.get_mut() -= 1;
                if *e.get() == 0 {
                    e.remove();
                }
            }
        }
        self.limits.open.fetch_sub(1, Ordering::AcqRel);
        METRICS.connections_open.dec();
    }
}

impl Limits {
    /// Limits from the configuration; `max_total` is the resolved `max_connections`.
    pub fn new(config: &LimitsConfig, max_total: usize) -> Arc<Self> {
        let refused = |r: Refused| METRICS.connections_refused.with_label_values(&[r.label()]);
        let timeouts = |kind: &str| METRICS.connection_timeouts.with_label_values(&[kind]);
        METRICS.connections_max.set(max_total as i64);
        Arc::new(Limits {
            header_timeout: config.header_timeout,
            keepalive_timeout: config.keepalive_timeout,
            max_total,
            max_per_ip: config.max_connections_per_ip,
            open: AtomicUsize::new(0),
            per_ip: DashMap::default(),
            refused: [refused(Refused::Total), refused(Refused::PerIp)],
            header_timeouts: timeouts("header"),
            keepalive_timeouts: timeouts("keepalive"),
            started: Instant::now(),
            last_logged: [AtomicU64::new(0), AtomicU64::new(0)],
        })
    }

    /// Open connections now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Takes a slot for a connection from `ip`, or says which cap refuses it.
    pub fn admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<Slot, Refused> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::Total);
        }
        let ip = ip.filter(|_| self.max_per_ip > 0);
        if let Some(ip) = ip {
            let mut n = self.per_ip.entry(ip).or_insert(0);
            if *n >= self.max_per_ip {
                drop(n);
                self.open.fetch_sub(1, Ordering::AcqRel);
                return Err(Refused::PerIp);
            }
            *n += 1;
        }
        METRICS.connections_open.inc();
        Ok(Slot {
            limits: self.clone(),
            ip,
        })
    }

    /// Counts a refusal; logs it, at most once every 10 s per reason.
    fn note_refused(&self, reason: Refused, ip: Option<IpAddr>) {
        let i = reason as usize;
        self.refused[i].inc();
        let now = self.started.elapsed().as_secs() + 1;
        let last = self.last_logged[i].load(Ordering::Relaxed);
        if (last == 0 || now >= last + 10)
            && self.last_logged[i]
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                reason = reason.label(),
                client = ?ip,
                open = self.open(),
                max_connections = self.max_total,
                max_connections_per_ip = self.max_per_ip,
                "connection refused: too many connections (tollgate_connections_refused_total \
                 counts every refusal; this line repeats at most every 10 s)"
            );
        }
    }
}

/// The client's address, IPv4-mapped IPv6 as IPv4.
fn peer_ip(stream: &Stream) -> Option<IpAddr> {
    let digest = stream.get_socket_digest()?;
    let addr = digest.peer_addr()?.as_inet()?;
    Some(addr.ip().to_canonical())
}

/// Where a request head read by [`read_head`] ended up.
enum Head {
    /// A complete head (or more than pingora accepts), with whatever followed it.
    Read(BytesMut),
    /// The client closed, or the read failed.
    Closed,
    /// No new request within the keep-alive timeout.
    Idle,
    /// The head was not complete within the header timeout; `partial` when bytes came.
    TimedOut { partial: bool },
    /// The server is shutting down.
    Shutdown,
}

/// True once `buf` (scanned from `from` on) holds a whole request head: a line, then an empty
/// line, CRLF or bare LF, after any empty lines before it (as pingora's parser, httparse, reads).
fn head_complete(buf: &[u8], from: usize) -> bool {
    let Some(start) = buf.iter().position(|&b| b != b'\r' && b != b'\n') else {
        return false;
    };
    let from = from.saturating_sub(2).max(start);
    let rest = &buf[from..];
    rest.windows(2).enumerate().any(|(i, w)| {
        w[0] == b'\n' && (w[1] == b'\n' || (w[1] == b'\r' && rest.get(i + 2) == Some(&b'\n')))
    })
}

/// Resolves when the server starts shutting down.
async fn shutting_down(watch: &mut ShutdownWatch) {
    loop {
        if *watch.borrow_and_update() {
            return;
        }
        if watch.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// Reads one request head. On a kept-alive connection (`idle` set) the client has `idle` to
/// start it and then the header timeout to finish it; on a new connection the header timeout
/// runs from the start.
async fn read_head(
    stream: &mut Stream,
    idle: Option<Duration>,
    header_timeout: Duration,
    watch: &mut ShutdownWatch,
) -> Head {
    let mut buf = BytesMut::with_capacity(4096);
    let mut deadline = tokio::time::Instant::now() + idle.unwrap_or(header_timeout);
    let mut scanned = 0;
    loop {
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        let read = tokio::select! {
            biased;
            r = tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)) => r,
            _ = shutting_down(watch) => return Head::Shutdown,
        };
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => return Head::Closed,
            Ok(Ok(_)) => {}
            Err(_) if buf.is_empty() && idle.is_some() => return Head::Idle,
            Err(_) => {
                return Head::TimedOut {
                    partial: !buf.is_empty(),
                }
            }
        }
        if scanned == 0 && idle.is_some() {
            // The first bytes of a later request: the head's own deadline starts now.
            deadline = tokio::time::Instant::now() + header_timeout;
        }
        if head_complete(&buf, scanned) || buf.len() > MAX_HEAD {
            return Head::Read(buf);
        }
        scanned = buf.len();
    }
}

/// A fixed answer written before closing (best effort, at most 1 s).
async fn answer_and_close(mut stream: Stream, status: &str, code: &str, message: &str) {
    let body = serde_json::json!({"error": code, "message": message}).to_string();
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(response.as_bytes()).await?;
        stream.flush().await
    })
    .await;
}

/// Whole seconds, at least 1 (pingora's keep-alive takes seconds; 0 would mean "forever").
fn whole_secs(d: Duration) -> u64 {
    d.as_secs_f64().ceil().max(1.0) as u64
}

/// The proxy application behind the connection limits.
pub struct Guarded<A> {
    inner: Arc<A>,
    limits: Arc<Limits>,
}

impl<A> Guarded<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    /// The HTTP/1 keep-alive loop under the deadlines.
    async fn serve_http1(&self, mut stream: Stream, shutdown: &ShutdownWatch) {
        let limits = &self.limits;
        let mut watch = shutdown.clone();
        let mut persisted: Option<HttpPersistentSettings> = None;
        let mut first = true;
        loop {
            let idle = (!first).then_some(limits.keepalive_timeout);
            let head = match read_head(&mut stream, idle, limits.header_timeout, &mut watch).await {
                Head::Read(head) => head,
                Head::Closed | Head::Shutdown => return,
                Head::Idle => {
                    limits.keepalive_timeouts.inc();
                    return;
                }
                Head::TimedOut { partial } => {
                    limits.header_timeouts.inc();
                    tracing::debug!(partial, "request head not complete within header_timeout");
                    if partial {
                        let message = format!(
                            "the request head did not arrive within {}",
                            humantime::format_duration(limits.header_timeout)
                        );
                        answer_and_close(
                            stream,
                            "408 Request Timeout",
                            "request_timeout",
                            &message,
                        )
                        .await;
                    }
                    return;
                }
            };
            let mut session = ServerSession::new_http1(stream);
            match persisted.take() {
                Some(p) => p.apply_to_session(&mut session),
                None => session.set_keepalive_reuses_remaining(
                    self.inner
                        .server_options()
                        .and_then(|o| o.keepalive_request_limit),
                ),
            }
            if first && *shutdown.borrow() {
                session.set_keepalive(None);
            } else {
                // Bounds each read should pingora need more of the head than was found (it
                // times reads by the keep-alive value until the head is parsed; after that the
                // loop here times the wait for the next request).
                session.set_keepalive(Some(whole_secs(limits.header_timeout)));
            }
            if let ServerSession::H1(h1) = &mut session {
                // Tollgate never enables pipelining, so no earlier prefix is pending here.
                h1.set_pipelined_prefix(head);
            }
            first = false;
            match self.inner.process_new_http(session, shutdown).await {
                Some(reused) => {
                    let (s, p) = reused.consume();
                    stream = s;
                    persisted = p;
                }
                None => return,
            }
        }
    }
}

#[async_trait]
impl<A> ServerApp for Guarded<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let options = self.inner.server_options();
        let pingora_handles = options.is_some_and(|o| o.h2c || o.force_custom)
            || matches!(
                stream.selected_alpn_proto(),
                Some(ALPN::H2) | Some(ALPN::Custom(_))
            );
        let ip = peer_ip(&stream);
        let _slot = match self.limits.admit(ip) {
            Ok(slot) => slot,
            Err(reason) => {
                self.limits.note_refused(reason, ip);
                if !pingora_handles {
                    answer_and_close(
                        stream,
                        "503 Service Unavailable",
                        "too_many_connections",
                        "too many open connections; retry later",
                    )
                    .await;
                }
                return None;
            }
        };
        if pingora_handles {
            return ServerApp::process_new(&self.inner, stream, shutdown).await;
        }
        self.serve_http1(stream, shutdown).await;
        None
    }

    async fn cleanup(&self) {
        self.inner.http_cleanup().await;
    }
}

/// The proxy service with the connection limits in front of `proxy`.
pub fn proxy_service<P>(
    conf: &Arc<ServerConf>,
    proxy: P,
    limits: Arc<Limits>,
) -> Service<Guarded<HttpProxy<P>>>
where
    P: ProxyHttp + Send + Sync + 'static,
    P::CTX: Send + Sync,
{
    let mut app = pingora::proxy::http_proxy(conf, proxy);
    let mut options = HttpServerOptions::default();
    options.h2_idle_timeout = Some(limits.keepalive_timeout);
    app.server_options = Some(options);
    Service::new(
        "Tollgate proxy".to_string(),
        Guarded {
            inner: Arc::new(app),
            limits,
        },
    )
}

/// Raises the open-file limit, resolves `max_connections` and logs both.
pub fn start(config: &LimitsConfig) -> Arc<Limits> {
    let nofile = match raise_open_file_limit() {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-file limit; assuming 1024");
            1024
        }
    };
    let max = match config.max_connections {
        Some(n) => {
            if (n as u64).saturating_add(RESERVED_DESCRIPTORS) > nofile {
                tracing::warn!(
                    max_connections = n,
                    open_file_limit = nofile,
                    "limits.max_connections leaves fewer than {RESERVED_DESCRIPTORS} descriptors \
                     for upstream connections, token files and the database; at the cap they \
                     can fail (auto keeps half the limit free)"
                );
            }
            n
        }
        None => default_max_connections(nofile),
    };
    tracing::info!(
        open_file_limit = nofile,
        max_connections = max,
        max_connections_per_ip = config.max_connections_per_ip,
        header_timeout = %humantime::format_duration(config.header_timeout),
        keepalive_timeout = %humantime::format_duration(config.keepalive_timeout),
        "connection limits"
    );
    Limits::new(config, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_cap_leaves_descriptors_free() {
        assert_eq!(default_max_connections(1024), 256);
        assert_eq!(default_max_connections(20_000), 9_744);
        assert_eq!(default_max_connections(1 << 20), 524_032);
        assert_eq!(default_max_connections(512), 128);
        assert_eq!(default_max_connections(2), 1);
        for n in [64u64, 512, 1000, 1023, 1024, 1025, 4096, 65_536, 1 << 20] {
            let cap = default_max_connections(n) as u64;
            assert!(2 * cap < n, "{n}: {cap} leaves no headroom");
            assert!(
                default_max_connections(n + 1) as u64 >= cap,
                "{n}: not monotonic"
            );
        }
    }

    #[test]
    fn head_ends_like_httparse() {
        let done = |s: &str| head_complete(s.as_bytes(), 0);
        assert!(done("GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(done("GET / HTTP/1.1\r\n\r\n"));
        assert!(done("GET / HTTP/1.1\n\n"));
        assert!(done("GET / HTTP/1.1\r\nHost: a\n\r\nbody"));
        assert!(done("\r\n\r\nGET / HTTP/1.1\r\n\r\n"));
        assert!(!done("\r\n\r\n\n"));
        assert!(!done("GET / HTTP/1.1\r\nHost: a\r\n"));
        assert!(!done("GET / HTTP/1.1\r\nHost: a\r\n\r"));
        assert!(!done(""));
        // Scanning on from an earlier point finds an end split across reads.
        let full = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        for cut in 1..full.len() {
            assert!(
                !head_complete(&full[..cut], 0) || cut == full.len(),
                "{cut}"
            );
            let mut seen = false;
            let mut scanned = 0;
            for end in cut..=full.len() {
                if head_complete(&full[..end], scanned) {
                    seen = true;
                    assert_eq!(end, full.len(), "cut {cut}");
                    break;
                }
                scanned = end;
            }
            assert!(seen, "cut {cut}");
        }
    }

    #[test]
    fn caps_total_and_per_address() {
        let config = LimitsConfig {
            max_connections_per_ip: 2,
            ..LimitsConfig::default()
        };
        let limits = Limits::new(&config, 3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = limits.admit(Some(a)).unwrap();
        let s2 = limits.admit(Some(a)).unwrap();
        assert_eq!(limits.admit(Some(a)).err(), Some(Refused::PerIp));
        let s3 = limits.admit(Some(b)).unwrap();
        assert_eq!(limits.admit(Some(b)).err(), Some(Refused::Total));
        assert_eq!(limits.open(), 3);
        drop(s1);
        assert_eq!(limits.open(), 2);
        let s4 = limits.admit(Some(a)).unwrap();
        drop((s2, s3, s4));
        assert_eq!(limits.open(), 0);
        assert!(limits.per_ip.is_empty());
    }
}
