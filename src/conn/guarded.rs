//! [`Guarded`]: the [`ServerApp`] in front of pingora's HTTP application that admits each
//! connection against the [`Limits`] and, for HTTP/1, reads every request head under the
//! header and keep-alive deadlines before pingora sees it. With `listen_proxy_protocol`, a
//! plain connection from a trusted proxy first gives its PROXY header (`super::proxy_protocol`),
//! and is admitted and served as from the client it names.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::limits::Limits;
use super::proxy_protocol;
use crate::config::TrustedProxies;

/// Pingora refuses a request head longer than this (its `MAX_HEADER_SIZE`); past it the bytes
/// go to pingora, which answers 400.
const MAX_HEAD: usize = 1_048_575;

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
///
/// Runs once per read of every request, so it jumps from `\n` to `\n` with `memchr` (SIMD)
/// instead of looking at every pair of bytes: callgrind counted ~1,500 instructions per request
/// for the byte-pair scan of a 200-byte head, and ~100 for this one.
fn head_complete(buf: &[u8], from: usize) -> bool {
    let Some(start) = buf.iter().position(|&b| b != b'\r' && b != b'\n') else {
        return false;
    };
    let from = from.saturating_sub(2).max(start);
    let rest = &buf[from..];
    memchr::memchr_iter(b'\n', rest).any(|i| match rest.get(i + 1) {
        Some(b'\n') => true,
        Some(b'\r') => rest.get(i + 2) == Some(&b'\n'),
        _ => false,
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
    mut buf: BytesMut,
) -> Head {
    // Bytes already read (after a PROXY header) may hold the whole head.
    if !buf.is_empty() && (head_complete(&buf, 0) || buf.len() > MAX_HEAD) {
        return Head::Read(buf);
    }
    let mut scanned = buf.len();
    let mut deadline = Instant::now() + idle.unwrap_or(header_timeout);
    loop {
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        // pingora's timer wheel, as pingora times its own reads: a tokio timer registered from
        // a worker other than the one parked in the I/O driver wakes that one (an eventfd write,
        // a futex wake and an epoll return per request, `benches/syscalls.sh`).
        let left = deadline.saturating_duration_since(Instant::now());
        let read = tokio::select! {
            biased;
            r = pingora_timeout::fast_timeout::fast_timeout(left, stream.read_buf(&mut buf)) => r,
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
            deadline = Instant::now() + header_timeout;
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
///
/// # Workers
/// Tollgate runs one pingora server per proxy thread (`threads`), each a *worker*: one
/// single-threaded runtime that accepts connections on a socket of its own (`SO_REUSEPORT` on
/// the same address; the kernel spreads new connections over the workers), serves them with a
/// `Guarded` and a proxy application of its own, and holds its own upstream connection pool.
/// Nothing on the request path crosses threads, as in nginx's workers.
///
/// Measured reason (`benches/syscalls.sh`, BENCHMARKS.md "Workers"): in one pingora server the
/// threads share work in ways that wake each other on every request. With its usual set-up (one
/// work-stealing runtime) a task woken on one worker wakes the idle other, a `futex` each way
/// (~1.9 per request). With single-threaded runtimes in one server, the accept loop runs on one
/// of them and registers every accepted socket there while the connection is served on a
/// random one, and pingora spawns each idle upstream connection's watcher on a random runtime:
/// readiness and reuse hop between threads (~1.6 eventfd `write`s per request), and reusing a
/// connection races its watcher's exit, which closes it: pingora logs "failed to acquire
/// reusable stream" and connects again (136 times in 87,452 requests of a 4 s `wrk` run).
pub struct Guarded<A> {
    pub(super) app: Arc<A>,
    pub(super) limits: Arc<Limits>,
    /// With `listen_proxy_protocol`: the peers whose plain connections start with a PROXY
    /// header.
    pub(super) proxy_protocol: Option<TrustedProxies>,
}

impl<A> Guarded<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    /// The HTTP/1 keep-alive loop under the deadlines.
    async fn serve_http1(
        &self,
        inner: &Arc<A>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
        early: BytesMut,
    ) {
        let limits = &self.limits;
        let mut watch = shutdown.clone();
        let mut persisted: Option<HttpPersistentSettings> = None;
        let mut first = true;
        let mut early = Some(early);
        loop {
            let idle = (!first).then_some(limits.keepalive_timeout);
            let buf = early
                .take()
                .unwrap_or_else(|| BytesMut::with_capacity(4096));
            let head =
                match read_head(&mut stream, idle, limits.header_timeout, &mut watch, buf).await {
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
                    inner
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
            match inner.process_new_http(session, shutdown).await {
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
        let inner = &self.app;
        let options = inner.server_options();
        let pingora_handles = options.is_some_and(|o| o.h2c || o.force_custom)
            || matches!(
                stream.selected_alpn_proto(),
                Some(ALPN::H2) | Some(ALPN::Custom(_))
            );
        let mut stream = stream;
        let mut ip = peer_ip(&stream);
        let mut early = BytesMut::new();
        let proxied = match &self.proxy_protocol {
            // Only plain HTTP/1 connections (a TLS connection was handshaken before this).
            Some(trusted) if !pingora_handles && stream.get_ssl_digest().is_none() => {
                ip.is_some_and(|ip| trusted.trusts(ip))
            }
            _ => false,
        };
        if proxied {
            // Read before admission, so the caps count the client the header names (only
            // trusted peers get here, and only for the header deadline).
            let deadline = tokio::time::Instant::now() + self.limits.header_timeout;
            match proxy_protocol::read_header(&mut stream, deadline).await {
                Ok((source, rest)) => {
                    if let Some(source) = source {
                        let source =
                            std::net::SocketAddr::new(source.ip().to_canonical(), source.port());
                        proxy_protocol::set_client(&mut stream, source);
                        ip = Some(source.ip());
                    }
                    early = rest;
                }
                Err(e) => {
                    crate::metrics::METRICS
                        .connections_refused
                        .with_label_values(&["proxy_protocol"])
                        .inc();
                    tracing::debug!(peer = ?ip, reason = e.as_str(), "connection from a trusted proxy closed");
                    return None;
                }
            }
        }
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
            return ServerApp::process_new(inner, stream, shutdown).await;
        }
        self.serve_http1(inner, stream, shutdown, early).await;
        None
    }

    async fn cleanup(&self) {
        self.app.http_cleanup().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// The byte-pair scan `head_complete` replaced: the reference it must agree with.
    fn head_complete_reference(buf: &[u8]) -> bool {
        let Some(start) = buf.iter().position(|&b| b != b'\r' && b != b'\n') else {
            return false;
        };
        let rest = &buf[start..];
        rest.windows(2).enumerate().any(|(i, w)| {
            w[0] == b'\n' && (w[1] == b'\n' || (w[1] == b'\r' && rest.get(i + 2) == Some(&b'\n')))
        })
    }

    proptest::proptest! {
        /// Fed in arbitrary pieces, the scan finds an end exactly when the reference does,
        /// at the first piece that completes it.
        #[test]
        fn head_scan_agrees_with_the_reference(
            bytes in proptest::collection::vec(
                proptest::sample::select(vec![b'\r', b'\n', b'a', b' ', b':']), 0..64),
            cuts in proptest::collection::vec(0usize..64, 0..6),
        ) {
            let mut ends: Vec<usize> = cuts.into_iter().filter(|&c| c <= bytes.len()).collect();
            ends.push(bytes.len());
            ends.sort_unstable();
            ends.dedup();
            let mut scanned = 0;
            for end in ends {
                let piece = &bytes[..end];
                proptest::prop_assert_eq!(
                    head_complete(piece, scanned),
                    head_complete_reference(piece),
                    "{:?} scanned from {}", String::from_utf8_lossy(piece), scanned
                );
                if head_complete_reference(piece) {
                    break;
                }
                scanned = end;
            }
        }
    }
}
