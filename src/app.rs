//! The server as a value: [`App::build`] resolves the upstream, loads the certificates and the
//! token set, and checks the listen addresses; [`App::run`] starts the control plane (token store loops and the admin
//! listener, on the caller's tokio runtime) and the pingora proxy (on its own thread and
//! runtimes), then waits for whichever comes first: the `shutdown` future, or the proxy
//! thread ending on its own — which is a failure (`/healthz` fails, `run` returns an error).
//!
//! Over 500 lines: `App::run` is the one place that orders the start and the stop of every
//! part (proxy, admin listener, token store, usage ledger, webhooks, trusted publishing); split,
//! that order would have to be read across files.
//!
//! Nothing here polls: the proxy thread reports its end on a oneshot channel (a dropped
//! sender, i.e. a panic, counts as an end), and the drain waits on [`Health::idle`].

mod quotas;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use pingora::listeners::tls::TlsSettings;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use tokio::sync::watch;

use crate::admin::{self, AdminState};
use crate::auth::Verifier;
use crate::config::{Config, ConfigErrors};
use crate::conn::Limits;
use crate::lifecycle::{Health, Shutdown};
use crate::proxy::Proxy;
use crate::store::Store;
use crate::tls::CertStore;
use crate::token::Token;
use crate::upstream::UpstreamPeers;

/// After the last in-flight request ends, how long the drain waits for another to start (a
/// connection accepted just before the listeners closed may not have sent its request yet).
const DRAIN_SETTLE: Duration = Duration::from_millis(50);

/// How often the control plane forgets limiter state that no longer decides anything.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(5);
/// How often the expiry gauges are recomputed between snapshots (tokens cross into a window,
/// or expire, with no change to the set).
const EXPIRY_METRICS_INTERVAL: Duration = Duration::from_secs(60);

/// How long a fast shutdown waits for the proxy thread.
const FAST_STOP: Duration = Duration::from_secs(1);

/// The proxy stopped without being asked to.
#[derive(Debug, thiserror::Error)]
#[error("the proxy stopped unexpectedly ({0}); exiting")]
pub struct ProxyStopped(&'static str);

/// A built server, ready to [`run`](App::run).
pub struct App {
    config: Config,
    limits: Arc<Limits>,
    store: Arc<Store>,
    verifier: Arc<Verifier>,
    health: Arc<Health>,
    admin_listener: std::net::TcpListener,
    certs: Option<Arc<CertStore>>,
    upstream_addrs: Vec<std::net::SocketAddr>,
    hooks: Vec<crate::webhook::Hook>,
}

/// What the configuration names outside itself, found before anything starts: the upstream's
/// addresses and the HTTPS certificate pair.
pub(crate) struct Preflight {
    /// Every address the upstream host resolves to.
    pub upstream_addrs: Vec<std::net::SocketAddr>,
    /// The certificate pair of the HTTPS listener, when there is one.
    pub certs: Option<Arc<CertStore>>,
    /// The webhooks, their secrets read.
    pub hooks: Vec<crate::webhook::Hook>,
}

/// Resolves the upstream host and loads the certificate pair. Problems are refused like the
/// configuration's own (`FILE: upstream.url: cannot resolve …`, `FILE: tls.cert_file: …`),
/// both at once; `serve` and `check-config` run the same checks.
pub(crate) async fn preflight(config: &Config) -> anyhow::Result<Preflight> {
    let mut problems = Vec::new();
    let up = &config.upstream;
    let upstream_addrs = match crate::upstream::resolve(&up.host, up.port).await {
        Ok(addrs) => addrs,
        Err(reason) => {
            problems.push(config.origins.problem("upstream.url", reason));
            Vec::new()
        }
    };
    let certs = match &config.tls {
        Some(t) => match CertStore::load(&t.cert_file, &t.key_file) {
            Ok(certs) => Some(certs),
            Err(reason) => {
                problems.push(config.origins.problem("tls.cert_file", reason));
                None
            }
        },
        None => None,
    };
    problems.extend(quotas::preflight(config));
    let hooks = crate::webhook::resolve(&config.webhooks).unwrap_or_else(|found| {
        for p in found {
            let (field, reason) = p.split_once(": ").unwrap_or(("webhooks", &p));
            problems.push(config.origins.problem(field, reason));
        }
        Vec::new()
    });
    if !problems.is_empty() {
        return Err(config_refused(&ConfigErrors(problems)));
    }
    Ok(Preflight {
        upstream_addrs,
        certs,
        hooks,
    })
}

/// Loads every source into `store` and builds the first snapshot. Bad token files (or a
/// conflict between sources) refuse; an unreachable database refuses only when `strict`,
/// else the server starts not ready and connects in the background.
pub(crate) async fn load_store(store: &Store, strict: bool) -> anyhow::Result<()> {
    if let Err(e) = store.connect().await {
        if strict {
            return Err(refused("token database", &[e]));
        }
        tracing::warn!(error = %e, "token database unavailable at start; not ready until it connects");
    }
    store
        .reload_files(true)
        .await
        .map(|_| ())
        .map_err(|e| refused("token set", &e.problems()))
}

pub(crate) fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The configuration is refused, with every problem on a line of its own.
pub(crate) fn config_refused(errors: &crate::config::ConfigErrors) -> anyhow::Error {
    anyhow!(
        "the configuration is refused ({} problem{}):\n{errors}",
        errors.0.len(),
        plural(errors.0.len())
    )
}

/// "the WHAT is refused (N problems):" and the problems, one a line.
pub(crate) fn refused<E: std::fmt::Display>(what: &str, errors: &[E]) -> anyhow::Error {
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    anyhow!(
        "the {what} is refused ({} problem{}):\n{}",
        lines.len(),
        plural(lines.len()),
        lines.join("\n")
    )
}

/// Fails when `addr` cannot be bound now (pingora binds later, on its own thread).
fn check_bindable(addr: std::net::SocketAddr, field: &str) -> anyhow::Result<()> {
    std::net::TcpListener::bind(addr)
        .map(drop)
        .with_context(|| format!("cannot listen on {field} {addr}"))
}

impl App {
    /// Raises the open-file limit, loads the token set (an unreachable database only delays
    /// readiness), binds the admin listener, and checks the proxy addresses and certificates.
    /// Runs on the caller's tokio runtime, which [`run`](App::run) must then use too.
    pub async fn build(config: Config, bootstrap: Option<Token>) -> anyhow::Result<App> {
        let Preflight {
            upstream_addrs,
            certs,
            hooks,
        } = preflight(&config).await?;
        // Then: the connection cap is derived from the raised limit.
        let limits = crate::conn::start(&config.limits);
        let store = Arc::new(Store::new(&config, bootstrap));
        load_store(&store, false).await?;
        let admin_listener = std::net::TcpListener::bind(config.admin_listen)
            .with_context(|| format!("cannot listen on admin_listen {}", config.admin_listen))?;
        check_bindable(config.listen, "listen")?;
        if let Some(t) = &config.tls {
            check_bindable(t.listen, "tls.listen")?;
        }
        let verifier = Arc::new(Verifier::new(&config));
        Ok(App {
            config,
            limits,
            store,
            verifier,
            health: Arc::new(Health::default()),
            admin_listener,
            certs,
            upstream_addrs,
            hooks,
        })
    }

    /// The process health this server reports.
    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.admin_listener.local_addr()
    }

    /// Serves until `shutdown` resolves (then drains: readiness fails at once, in-flight
    /// requests get up to `shutdown_grace`) or until the proxy stops on its own, which is
    /// returned as [`ProxyStopped`]. Last-use times are flushed on the way out.
    pub async fn run(self, shutdown: impl Future<Output = Shutdown>) -> anyhow::Result<()> {
        let App {
            config,
            limits,
            store,
            verifier,
            health,
            admin_listener,
            certs,
            upstream_addrs,
            hooks,
        } = self;
        tracing::info!(
            tokens = store.set.load().len(),
            config = %config.source,
            listen = %config.listen,
            admin_listen = %config.admin_listen,
            upstream = %config.upstream.url,
            upstream_addresses = ?upstream_addrs,
            "tollgate starting"
        );
        if store.set.is_ready() && store.set.load().is_empty() {
            tracing::info!("{}", first_token_hint(store.has_database()));
        }

        // ---- control plane, on this runtime
        let (stop_tx, stop_rx) = watch::channel(false);
        let upstream = UpstreamPeers::new(&config.upstream, upstream_addrs);
        tokio::spawn(upstream.clone().run(stop_rx.clone()));
        let ledger = crate::usage::Ledger::with_ecosystems(
            &config.usage,
            store.clone(),
            config.upstream.layouts.iter().map(|l| l.kind).collect(),
        );
        let webhooks = crate::webhook::Webhooks::start(hooks, &store, &ledger, stop_rx.clone());
        let mut proxy = Proxy::new(
            &config,
            upstream,
            store.clone(),
            verifier.clone(),
            health.clone(),
        )
        .with_usage(ledger.clone());
        let usage_task = ledger
            .clone()
            .map(|l| tokio::spawn(crate::usage::run(l, stop_rx.clone())));
        let oidc = if config.oidc.enabled {
            let oidc = Arc::new(crate::oidc::Oidc::new(&config, store.clone())?);
            tokio::spawn(oidc.clone().run(stop_rx.clone()));
            proxy = proxy.with_oidc(oidc.clone());
            Some(oidc)
        } else {
            None
        };
        let proxy = quotas::attach(&config, proxy, &store, &stop_rx)?;
        {
            // Verification budgets and rate-limit buckets that are full again, and buckets of
            // tokens no longer in the set, are forgotten off the request path; the expiry gauges
            // follow the clock.
            let verifier = verifier.clone();
            let rate_limits = proxy.rate_limits();
            let store = store.clone();
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(MAINTENANCE_INTERVAL);
                let mut expiry_tick = tokio::time::interval(EXPIRY_METRICS_INTERVAL);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {
                            verifier.maintain();
                            rate_limits.maintain(&store.set.load());
                        }
                        _ = expiry_tick.tick() => store.set.load().record_expiry(chrono::Utc::now()),
                        _ = stop.changed() => return,
                    }
                }
            });
        }
        let admin_tls = match &config.tls {
            Some(t) if t.admin => certs.clone(),
            _ => None,
        };
        if let Some(certs) = &certs {
            tokio::spawn(certs.clone().watch(Duration::from_secs(2), stop_rx.clone()));
        }
        let state = AdminState {
            store: store.clone(),
            verifier: verifier.clone(),
            token_usernames: config.tokens.token_usernames.clone().into(),
            hashing: config.hashing,
            default_rate_limit: config.rate_limit,
            max_lifetime: config.tokens.max_lifetime,
            max_overlap: config.tokens.max_overlap,
            trusted_proxies: Arc::new(config.trusted_proxies.clone()),
            health: health.clone(),
            quotas: proxy.quotas(),
            usage: ledger,
            webhooks,
            oidc,
        };
        let admin_task = tokio::spawn(admin::serve(
            admin_listener,
            state,
            admin_tls,
            stop_rx.clone(),
        ));
        tokio::spawn(crate::auth::rotation::run(
            verifier.clone(),
            store.clone(),
            stop_rx.clone(),
        ));
        let store_task = {
            let store = store.clone();
            let stop = stop_rx.clone();
            tokio::spawn(async move { store.run(stop).await })
        };
        {
            let store = store.clone();
            let stop = stop_rx.clone();
            tokio::spawn(async move { store.watch_files(stop).await });
        }
        let probe = tokio::spawn(probe_listener(config.listen, health.clone()));

        // ---- the proxy: its workers, each on a thread of its own
        let (relay_tx, relay_rx) = watch::channel(None);
        let workers = start_proxy(&config, proxy, limits, certs, Relay(relay_rx))?;
        let mut proxy_done = Box::pin(workers.all_ended());
        let first_ended = workers.first_ended();

        tokio::pin!(shutdown);
        let result = tokio::select! {
            how = &mut shutdown => {
                let _ = relay_tx.send(Some(how));
                match how {
                    Shutdown::Graceful => {
                        health.start_draining();
                        tracing::info!("shutdown requested: not ready, draining in-flight requests");
                        tokio::select! {
                            _ = drain(&health, config.shutdown_grace) => {}
                            _ = &mut proxy_done => {}
                        }
                    }
                    Shutdown::Fast => {
                        tracing::info!("interrupted: stopping now");
                        let _ = tokio::time::timeout(FAST_STOP, &mut proxy_done).await;
                    }
                }
                Ok(())
            }
            panicked = first_ended => {
                health.set_proxy_stopped();
                let why = if panicked { "its thread panicked" } else { "it returned" };
                tracing::error!(reason = why, "the proxy stopped unexpectedly; exiting");
                Err(ProxyStopped(why).into())
            }
        };
        probe.abort();

        // ---- stop the control plane, which flushes last-use times
        let _ = stop_tx.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), store_task).await;
        if let Some(task) = usage_task {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), admin_task).await;
        tracing::info!("tollgate stopped");
        result
    }
}

/// What to do when there is no token yet (every request is refused until one exists).
fn first_token_hint(database: bool) -> &'static str {
    if database {
        "no tokens yet: create the first with `tollgate token create --name NAME --permission \
         manager`, or start with --bootstrap-token NAME:SECRET (or TOLLGATE_BOOTSTRAP_TOKEN) \
         and create tokens through the admin API"
    } else {
        "no tokens yet: add one to a token file (tokens.files); `tollgate token hash --name \
         NAME --permission read` prints the entry"
    }
}

/// Starts the proxy: one pingora server per `threads`, each on a thread of its own with one
/// single-threaded runtime and its own listening sockets (a *worker*, see
/// [`crate::conn::Guarded`]).
fn start_proxy(
    config: &Config,
    proxy: Proxy,
    limits: Arc<Limits>,
    certs: Option<Arc<CertStore>>,
    relay: Relay,
) -> anyhow::Result<Workers> {
    let threads = config.threads.max(1);
    let (ended_tx, ended_rx) = watch::channel(Ended::default());
    let ended_tx = Arc::new(ended_tx);
    let mut servers = Vec::with_capacity(threads);
    for _ in 0..threads {
        let conf = ServerConf {
            threads: crate::conn::WORKER_THREADS,
            work_stealing: crate::conn::WORKER_WORK_STEALING,
            // Our own drain exits as soon as in-flight requests are done; pingora's grace
            // (which always sleeps in full) is only the backstop.
            grace_period_seconds: Some(config.shutdown_grace.as_secs().max(1)),
            graceful_shutdown_timeout_seconds: Some(1),
            ..ServerConf::default()
        };
        let mut server = Server::new_with_opt_and_conf(None, conf);
        server.bootstrap();
        let mut service = crate::conn::proxy_service(
            &server.configuration,
            proxy.clone(),
            limits.clone(),
            config
                .listen_proxy_protocol
                .then(|| config.trusted_proxies.clone()),
        );
        service.add_listener(crate::conn::listener(&config.listen.to_string(), None));
        if let (Some(tls), Some(certs)) = (&config.tls, &certs) {
            let mut settings =
                TlsSettings::intermediate("", "").map_err(|e| anyhow!("tls: {e}"))?;
            settings.set_cert_resolver(certs.clone());
            settings.enable_h2();
            service.add_listener(crate::conn::listener(
                &tls.listen.to_string(),
                Some(settings),
            ));
        }
        server.add_service(service);
        servers.push(server);
    }
    // Every worker is built before any starts: a failure above leaves nothing running.
    for (n, server) in servers.into_iter().enumerate() {
        let relay = relay.clone();
        let ended = WorkerEnd(ended_tx.clone());
        std::thread::Builder::new()
            .name(format!("tollgate-proxy-{n}"))
            .spawn(move || {
                // Marks the end when the thread ends, by return or by panic.
                let _ended = ended;
                server.run(RunArgs {
                    shutdown_signal: Box::new(relay),
                });
            })
            .context("starting a proxy thread")?;
    }
    Ok(Workers {
        threads,
        ended: ended_rx,
    })
}

/// How many proxy workers have ended, and whether one panicked.
#[derive(Debug, Default, Clone, Copy)]
struct Ended {
    count: usize,
    panicked: bool,
}

/// Held by a worker's thread: counts its end, by return or by panic, when dropped.
struct WorkerEnd(Arc<watch::Sender<Ended>>);

impl Drop for WorkerEnd {
    fn drop(&mut self) {
        let panicked = std::thread::panicking();
        self.0.send_modify(|e| {
            e.count += 1;
            e.panicked |= panicked;
        });
    }
}

/// The proxy workers started by [`start_proxy`].
struct Workers {
    threads: usize,
    ended: watch::Receiver<Ended>,
}

impl Workers {
    /// Resolves once the first worker has ended; `true` when one panicked.
    fn first_ended(&self) -> impl std::future::Future<Output = bool> + Send + 'static {
        let mut rx = self.ended.clone();
        async move {
            match rx.wait_for(|e| e.count > 0).await {
                Ok(e) => e.panicked,
                Err(_) => true,
            }
        }
    }

    /// Resolves once every worker has ended.
    fn all_ended(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.ended.clone();
        let threads = self.threads;
        async move {
            let _ = rx.wait_for(|e| e.count >= threads).await;
        }
    }
}

/// Waits until no proxy request is in flight (and none started within [`DRAIN_SETTLE`]
/// after that) or `grace` has passed.
async fn drain(health: &Health, grace: Duration) {
    let drained = async {
        loop {
            health.idle().await;
            tokio::time::sleep(DRAIN_SETTLE).await;
            if health.in_flight() == 0 {
                return;
            }
        }
    };
    match tokio::time::timeout(grace, drained).await {
        Ok(()) => tracing::info!("drained: no request in flight"),
        Err(_) => tracing::warn!(
            in_flight = health.in_flight(),
            "grace period over with requests still in flight"
        ),
    }
}

/// Marks the proxy listening once it accepts a connection (pingora binds it after start).
async fn probe_listener(listen: std::net::SocketAddr, health: Arc<Health>) {
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let mut wait = Duration::from_millis(5);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            health.set_listening();
            return;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_millis(50));
    }
}

/// Hands the shutdown decided by [`App::run`] to pingora.
#[derive(Clone)]
struct Relay(watch::Receiver<Option<Shutdown>>);

#[async_trait::async_trait]
impl ShutdownSignalWatch for Relay {
    async fn recv(&self) -> ShutdownSignal {
        let mut rx = self.0.clone();
        #[cfg(debug_assertions)]
        if let Some(after) = fault::proxy_panic_after() {
            // Test builds only: see `fault`.
            if tokio::time::timeout(after, rx.wait_for(Option::is_some))
                .await
                .is_err()
            {
                panic!("injected fault: the proxy thread panics");
            }
        }
        let how = match rx.wait_for(Option::is_some).await {
            Ok(how) => *how,
            // The app is gone: nothing will ask any more.
            Err(_) => Some(Shutdown::Fast),
        };
        match how {
            Some(Shutdown::Graceful) => ShutdownSignal::GracefulTerminate,
            _ => ShutdownSignal::FastShutdown,
        }
    }
}

/// Fault injection for the lifecycle tests, compiled into debug builds only:
/// `TOLLGATE_TEST_FAULT=proxy_panic_after_ms:N` makes pingora's server loop panic N ms after
/// start, which no real input can do on demand.
#[cfg(debug_assertions)]
mod fault {
    use std::time::Duration;

    pub fn proxy_panic_after() -> Option<Duration> {
        let spec = std::env::var("TOLLGATE_TEST_FAULT").ok()?;
        let ms = spec.strip_prefix("proxy_panic_after_ms:")?.parse().ok()?;
        Some(Duration::from_millis(ms))
    }
}
