//! A bare pingora pass-through proxy: the baseline Tollgate is measured against in
//! `benches/load.sh` (the goal: Tollgate at least 0.9× a bare pingora pass-through built the
//! same way). It has the same Cargo profile, the same pingora features and the same global
//! allocator as the `tollgate` binary, and the same upstream peer options, and does nothing
//! per request but pick that one peer — no auth, no header rewriting, no logging, no metrics.
//!
//!     cargo build --release --example passthrough
//!     target/release/examples/passthrough LISTEN UPSTREAM [THREADS [WORK_STEALING [WORKERS]]]
//!     target/release/examples/passthrough 127.0.0.1:8090 127.0.0.1:8081 2
//!
//! Without arguments, `PASSTHROUGH_LISTEN`, `PASSTHROUGH_UPSTREAM`, `PASSTHROUGH_THREADS`,
//! `PASSTHROUGH_WORK_STEALING` and `PASSTHROUGH_WORKERS` are read (defaults 127.0.0.1:8090,
//! 127.0.0.1:80, 2 like Tollgate on 2 cores, `true`, pingora's default, and `false`).
//! SIGINT stops it at once.
//!
//! `WORKERS=true` runs it the way Tollgate runs its proxy: one pingora server per thread, each
//! with one single-threaded runtime and its own `SO_REUSEPORT` socket (`conn::Guarded`,
//! "Workers"). It is pingora's usual set-up (one server) that Tollgate is measured against;
//! this one says what the same structure gives pingora alone.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use async_trait::async_trait;
use pingora::listeners::TcpSocketOptions;
use pingora::prelude::*;
use pingora::proxy::{http_proxy_service, ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::server::RunArgs;

// The same global allocator as src/main.rs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Passthrough {
    peer: HttpPeer,
}

#[async_trait]
impl ProxyHttp for Passthrough {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(self.peer.clone()))
    }
}

fn arg_or_env(pos: usize, env: &str, default: &str) -> String {
    std::env::args()
        .nth(pos)
        .or_else(|| std::env::var(env).ok())
        .unwrap_or_else(|| default.to_string())
}

fn main() {
    let listen = arg_or_env(1, "PASSTHROUGH_LISTEN", "127.0.0.1:8090");
    let upstream = arg_or_env(2, "PASSTHROUGH_UPSTREAM", "127.0.0.1:80");
    let threads: usize = arg_or_env(3, "PASSTHROUGH_THREADS", "2")
        .parse()
        .expect("THREADS must be a number");
    let work_stealing: bool = arg_or_env(4, "PASSTHROUGH_WORK_STEALING", "true")
        .parse()
        .expect("WORK_STEALING must be true or false");
    // Resolve up front: HttpPeer::new panics on an address it cannot resolve.
    let addr: SocketAddr = upstream
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| panic!("cannot resolve upstream {upstream:?}"));

    // The peer options Tollgate sets (src/proxy/mod.rs), with its default timeouts.
    let mut peer = HttpPeer::new(addr, false, String::new());
    peer.options.connection_timeout = Some(Duration::from_secs(2));
    peer.options.total_connection_timeout = Some(Duration::from_secs(2));
    peer.options.read_timeout = Some(Duration::from_secs(60));
    peer.options.write_timeout = Some(Duration::from_secs(60));
    peer.options.idle_timeout = Some(Duration::from_secs(60));

    let workers: bool = arg_or_env(5, "PASSTHROUGH_WORKERS", "false")
        .parse()
        .expect("WORKERS must be true or false");
    eprintln!(
        "passthrough: {listen} -> {addr}, {threads} threads, work stealing {work_stealing}, \
         workers {workers}"
    );
    if !workers {
        server(&listen, &peer, threads, work_stealing, None).run_forever();
    }
    let mut options = TcpSocketOptions::default();
    options.so_reuseport = Some(true);
    let running: Vec<_> = (0..threads)
        .map(|_| server(&listen, &peer, 1, false, Some(options.clone())))
        .map(|s| std::thread::spawn(move || s.run(RunArgs::default())))
        .collect();
    for r in running {
        let _ = r.join();
    }
}

fn server(
    listen: &str,
    peer: &HttpPeer,
    threads: usize,
    work_stealing: bool,
    socket: Option<TcpSocketOptions>,
) -> Server {
    let conf = ServerConf {
        threads,
        work_stealing,
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let peer = peer.clone();
    let mut proxy = http_proxy_service(&server.configuration, Passthrough { peer });
    match socket {
        Some(options) => proxy.add_tcp_with_settings(listen, options),
        None => proxy.add_tcp(listen),
    }
    server.add_service(proxy);
    server
}
