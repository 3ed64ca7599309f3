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
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::proxy::{HttpProxy, ProxyHttp};
use pingora::server::configuration::ServerConf;
use pingora::services::listening::Service;

pub use guarded::Guarded;
pub use limits::{
    default_max_connections, raise_open_file_limit, Limits, Refused, Slot, RESERVED_DESCRIPTORS,
};

use crate::config::LimitsConfig;

/// The proxy service with the connection limits in front of `proxy`: one proxy application
/// per runtime thread (see [`Guarded`]'s shards), on `threads` single-threaded runtimes.
/// `proxy_protocol`: with `listen_proxy_protocol`, the trusted proxies whose plain connections
/// start with a PROXY header.
pub fn proxy_service<P>(
    conf: &Arc<ServerConf>,
    proxy: P,
    threads: usize,
    limits: Arc<Limits>,
    proxy_protocol: Option<crate::config::TrustedProxies>,
) -> Service<Guarded<HttpProxy<P>>>
where
    P: ProxyHttp + Clone + Send + Sync + 'static,
    P::CTX: Send + Sync,
{
    let shards = (0..threads.max(1))
        .map(|_| {
            let mut app = pingora::proxy::http_proxy(conf, proxy.clone());
            let mut options = HttpServerOptions::default();
            options.h2_idle_timeout = Some(limits.keepalive_timeout);
            app.server_options = Some(options);
            Arc::new(app)
        })
        .collect();
    let mut service = Service::new(
        "Tollgate proxy".to_string(),
        Guarded {
            shards,
            limits,
            proxy_protocol,
        },
    );
    service.threads = Some(threads.max(1));
    service
}

/// The runtime set-up [`proxy_service`] expects: one single-threaded runtime per thread
/// (pingora's `work_stealing: false`). See [`Guarded`] for why.
pub const WORK_STEALING: bool = false;

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
pub fn listener(addr: &str, tls: Option<pingora::listeners::tls::TlsSettings>) -> ListenerConfig {
    let config =
        ListenerConfig::tcp(addr).l4_buffer(L4BufferSettings::default().write(WRITE_BUFFER));
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
