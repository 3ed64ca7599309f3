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
//!
//! [`limits`] holds the counters and the open-file limit; [`guarded`] the per-connection
//! loop; [`proxy_protocol`] the PROXY header of connections from trusted load balancers.

mod guarded;
mod limits;
pub mod proxy_protocol;

use std::sync::Arc;

use pingora::apps::HttpServerOptions;
use pingora::listeners::{L4BufferSettings, ListenerConfig, TcpSocketOptions};
use pingora::proxy::{HttpProxy, ProxyHttp};
use pingora::server::configuration::ServerConf;
use pingora::services::listening::Service;

pub use guarded::Guarded;
pub use limits::{
    default_max_connections, raise_open_file_limit, Limits, Refused, Slot, RESERVED_DESCRIPTORS,
};

use crate::config::LimitsConfig;

/// One worker's proxy service: the connection limits in front of `proxy`, on one
/// single-threaded runtime (see [`WORKER_THREADS`] and [`Guarded`]'s "Workers").
/// `proxy_protocol`: with `listen_proxy_protocol`, the trusted proxies whose plain connections
/// start with a PROXY header.
pub fn proxy_service<P>(
    conf: &Arc<ServerConf>,
    proxy: P,
    limits: Arc<Limits>,
    proxy_protocol: Option<crate::config::TrustedProxies>,
) -> Service<Guarded<HttpProxy<P>>>
where
    P: ProxyHttp + Send + Sync + 'static,
    P::CTX: Send + Sync,
{
    let mut app = pingora::proxy::http_proxy(conf, proxy);
    let mut options = HttpServerOptions::default();
    options.h2_idle_timeout = Some(limits.keepalive_timeout);
    app.server_options = Some(options);
    let mut service = Service::new(
        "Tollgate proxy".to_string(),
        Guarded {
            app: Arc::new(app),
            limits,
            proxy_protocol,
        },
    );
    service.threads = Some(WORKER_THREADS);
    service
}

/// The runtime of one worker's pingora server: a single thread, which accepts the worker's
/// connections, serves them and holds its upstream connection pool (see [`Guarded`]).
pub const WORKER_THREADS: usize = 1;
/// With one thread, pingora's runtime without work stealing is one single-threaded tokio
/// runtime (no stealing to coordinate).
pub const WORKER_WORK_STEALING: bool = false;

/// Bytes of a response pingora gathers before writing them to the client socket.
///
/// pingora's default (1,460, one TCP segment) holds a response head and a small body only while
/// together they fit: the rate-limit fields every limited token's response carries push a 1 KiB
/// download past it, and the head then goes out in a `sendto` of its own (`benches/syscalls.sh`
/// counted 3 per proxied request instead of the pass-through's 2). 4 KiB keeps head and body
/// in one write up to ~3 KiB of body, for 2.6 KiB more per open connection; larger writes
/// bypass the buffer as before.
pub const WRITE_BUFFER: usize = 4096;

/// A listening endpoint on `addr` (TLS when `tls` is set) with Tollgate's socket buffers.
/// `SO_REUSEPORT`: every worker binds a socket of its own to the address, and the kernel
/// spreads new connections over them (see [`Guarded`]'s "Workers").
pub fn listener(addr: &str, tls: Option<pingora::listeners::tls::TlsSettings>) -> ListenerConfig {
    let mut options = TcpSocketOptions::default();
    options.so_reuseport = Some(true);
    let config = ListenerConfig::tcp(addr)
        .tcp_socket_options(options)
        .l4_buffer(L4BufferSettings::default().write(WRITE_BUFFER));
    match tls {
        Some(settings) => config.tls(settings),
        None => config,
    }
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
