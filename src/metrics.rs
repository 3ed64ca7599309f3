//! Every metric Tollgate exports, defined once, in one registry served by the admin listener.
//! Labels are bounded: outcomes, methods, results and sources — never token ids, names or paths.
//!
//! Over 500 lines: a field and a registration for each of some forty metrics; one file keeps
//! every exported name and label set in one place to read and review.

use std::cell::RefCell;
use std::sync::LazyLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The metric set.
pub struct Metrics {
    registry: Registry,
    /// Requests by outcome (`ok`; `public` for an anonymous request to a public path; an
    /// error code) and method.
    pub requests: IntCounterVec,
    /// Whole request time, as seen by the proxy.
    pub request_duration: HistogramVec,
    /// Verification cache hits.
    pub cache_hits: IntCounter,
    /// Verification cache misses (each leads to at most one argon2 run per credential).
    pub cache_misses: IntCounter,
    /// argon2 verifications by result (`ok`, `wrong_secret`, `busy`, `error`).
    pub verifications: IntCounterVec,
    /// Time of one argon2 verification.
    pub verification_duration: Histogram,
    /// Tokens in the current snapshot, by source.
    pub tokens: IntGaugeVec,
    /// Tokens of the current snapshot whose expiry falls within a window from now (`within`:
    /// `7d`, `30d`) and that have not expired yet; updated with every snapshot and every minute.
    pub tokens_expiring: IntGaugeVec,
    /// Tokens of the current snapshot that have expired (still listed, refused by the proxy).
    pub tokens_expired: IntGauge,
    /// Generation of the current snapshot.
    pub snapshot_generation: IntGauge,
    /// Token records left out of the current set: conflicts (duplicate ids or names), invalid
    /// database rows, and entries of token files that failed to load.
    pub tokens_refused: IntGauge,
    /// Reload attempts by source (`file`, `database`) and result (`success`, `failure`).
    pub reloads: IntCounterVec,
    /// Unix time of the last successful snapshot build.
    pub last_reload: prometheus::Gauge,
    /// 1 while the token database answers, 0 during an outage.
    pub database_up: IntGauge,
    /// Requests refused with 429.
    pub rate_limited: IntCounter,
    /// Time from sending a request upstream to its response header.
    pub upstream_duration: Histogram,
    /// Upstream failures by kind (`connect`, `timeout`, `tls`, `other`).
    pub upstream_errors: IntCounterVec,
    /// Requests the client gave up on (closed or reset its connection) before the response was
    /// complete: normal for package clients that cancel downloads; logged at debug only.
    pub client_aborts: IntCounter,
    /// Addresses the upstream host resolves to now.
    pub upstream_addresses: IntGauge,
    /// Resolutions of the upstream host after the start's, by result (`ok`, `error`).
    pub upstream_resolutions: IntCounterVec,
    /// Open client connections on the proxy listeners.
    pub connections_open: IntGauge,
    /// The cap on open client connections (`limits.max_connections`, resolved).
    pub connections_max: IntGauge,
    /// Client connections refused by a cap, by reason (`max_connections`,
    /// `max_connections_per_ip`), or closed for lack of a valid PROXY header from a trusted
    /// proxy (`proxy_protocol`).
    pub connections_refused: IntCounterVec,
    /// Client connections closed by a deadline, by kind (`header`: the request head was not
    /// complete in time; `keepalive`: idle between requests).
    pub connection_timeouts: IntCounterVec,
    /// 1 while the shared rate-limit backend (Redis) answers, 0 during an outage or when none
    /// is configured.
    pub ratelimit_backend_up: IntGauge,
    /// Time of one call to the shared rate-limit backend (a lease or a quota update).
    pub ratelimit_backend_duration: Histogram,
    /// Requests refused because the token's quota for the period is used up, by kind
    /// (`requests`, `bytes`).
    pub quota_exceeded: IntCounterVec,
    /// Requests the usage ledger counted in a token's `other` row because its in-memory bound
    /// (`usage.max_entries`) was reached.
    pub usage_overflow: IntCounter,
    /// Usage ledger entries written to the database.
    pub usage_flushed: IntCounter,
    /// Webhook delivery attempts by result (`delivered`, `retry`, `failed`: given up after
    /// the last retry, `dropped`: the queue was full).
    pub webhook_deliveries: IntCounterVec,
    /// Trusted-publishing exchanges by result (`success`, or the refusal's code).
    pub oidc_exchanges: IntCounterVec,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
    r.register(Box::new(c.clone()))
        .expect("metric names are unique and valid");
    c
}

impl Metrics {
    fn new() -> Self {
        let r = Registry::new_custom(Some("tollgate".into()), None)
            .expect("static registry prefix is valid");
        let build = IntGaugeVec::new(
            Opts::new("build_info", "Build information; always 1"),
            &["version"],
        )
        .expect("valid metric");
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        register(&r, build);
        let metrics = Metrics {
            requests: register(
                &r,
                IntCounterVec::new(
                    Opts::new("requests_total", "Proxy requests by outcome and method"),
                    &["outcome", "method"],
                )
                .expect("valid metric"),
            ),
            request_duration: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "request_duration_seconds",
                        "Time from request to end of response, by outcome class",
                    )
                    .buckets(vec![
                        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                        0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    ]),
                    &["class"],
                )
                .expect("valid metric"),
            ),
            cache_hits: register(
                &r,
                IntCounter::new("auth_cache_hits_total", "Verification cache hits")
                    .expect("valid metric"),
            ),
            cache_misses: register(
                &r,
                IntCounter::new("auth_cache_misses_total", "Verification cache misses")
                    .expect("valid metric"),
            ),
            verifications: register(
                &r,
                IntCounterVec::new(
                    Opts::new("verifications_total", "argon2 verifications by result"),
                    &["result"],
                )
                .expect("valid metric"),
            ),
            verification_duration: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "verification_duration_seconds",
                        "Time of one argon2 verification, queueing included",
                    )
                    .buckets(vec![
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    ]),
                )
                .expect("valid metric"),
            ),
            tokens: register(
                &r,
                IntGaugeVec::new(Opts::new("tokens", "Tokens loaded, by source"), &["source"])
                    .expect("valid metric"),
            ),
            tokens_expiring: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "tokens_expiring",
                        "Tokens expiring within the window from now, not yet expired",
                    ),
                    &["within"],
                )
                .expect("valid metric"),
            ),
            tokens_expired: register(
                &r,
                IntGauge::new("tokens_expired", "Tokens of the live set that have expired")
                    .expect("valid metric"),
            ),
            snapshot_generation: register(
                &r,
                IntGauge::new("snapshot_generation", "Generation of the live token set")
                    .expect("valid metric"),
            ),
            tokens_refused: register(
                &r,
                IntGauge::new(
                    "tokens_refused",
                    "Problems that left token records out of the live set (conflicts, invalid rows or entries)",
                )
                .expect("valid metric"),
            ),
            reloads: register(
                &r,
                IntCounterVec::new(
                    Opts::new("reloads_total", "Token-set reloads by source and result"),
                    &["source", "result"],
                )
                .expect("valid metric"),
            ),
            last_reload: register(
                &r,
                prometheus::Gauge::new(
                    "last_reload_timestamp_seconds",
                    "Unix time of the last successful token-set build",
                )
                .expect("valid metric"),
            ),
            database_up: register(
                &r,
                IntGauge::new(
                    "database_up",
                    "1 while the token database answers, 0 during an outage",
                )
                .expect("valid metric"),
            ),
            rate_limited: register(
                &r,
                IntCounter::new("rate_limited_total", "Requests refused by a rate limit")
                    .expect("valid metric"),
            ),
            upstream_duration: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "upstream_duration_seconds",
                        "Time from sending a request upstream to its response header",
                    )
                    .buckets(vec![
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                        5.0, 10.0, 30.0, 60.0,
                    ]),
                )
                .expect("valid metric"),
            ),
            client_aborts: register(
                &r,
                IntCounter::new(
                    "client_aborts_total",
                    "Requests whose client closed the connection before the response was complete",
                )
                .expect("valid metric"),
            ),
            upstream_errors: register(
                &r,
                IntCounterVec::new(
                    Opts::new("upstream_errors_total", "Upstream failures by kind"),
                    &["kind"],
                )
                .expect("valid metric"),
            ),
            upstream_addresses: register(
                &r,
                IntGauge::new(
                    "upstream_addresses",
                    "Addresses the upstream host resolves to now",
                )
                .expect("valid metric"),
            ),
            upstream_resolutions: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "upstream_resolutions_total",
                        "Resolutions of the upstream host after the start's, by result",
                    ),
                    &["result"],
                )
                .expect("valid metric"),
            ),
            connections_open: register(
                &r,
                IntGauge::new(
                    "connections_open",
                    "Open client connections on the proxy listeners",
                )
                .expect("valid metric"),
            ),
            connections_max: register(
                &r,
                IntGauge::new(
                    "connections_max",
                    "Most client connections open at once (limits.max_connections)",
                )
                .expect("valid metric"),
            ),
            connections_refused: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "connections_refused_total",
                        "Client connections refused by a connection cap, or for lack of a valid PROXY header, by reason",
                    ),
                    &["reason"],
                )
                .expect("valid metric"),
            ),
            connection_timeouts: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "connection_timeouts_total",
                        "Client connections closed by the header or keep-alive timeout",
                    ),
                    &["kind"],
                )
                .expect("valid metric"),
            ),
            ratelimit_backend_up: register(
                &r,
                IntGauge::new(
                    "ratelimit_backend_up",
                    "1 while the shared rate-limit backend answers, 0 during an outage or without one",
                )
                .expect("valid metric"),
            ),
            ratelimit_backend_duration: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "ratelimit_backend_duration_seconds",
                        "Time of one call to the shared rate-limit backend",
                    )
                    .buckets(vec![
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                    ]),
                )
                .expect("valid metric"),
            ),
            quota_exceeded: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "quota_exceeded_total",
                        "Requests refused because the token's quota for the period is used up",
                    ),
                    &["kind"],
                )
                .expect("valid metric"),
            ),
            usage_overflow: register(
                &r,
                IntCounter::new(
                    "usage_overflow_total",
                    "Requests counted in a token's `other` usage row (the in-memory bound was reached)",
                )
                .expect("valid metric"),
            ),
            usage_flushed: register(
                &r,
                IntCounter::new(
                    "usage_entries_written_total",
                    "Usage ledger entries written to the database",
                )
                .expect("valid metric"),
            ),
            webhook_deliveries: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "webhook_deliveries_total",
                        "Webhook delivery attempts by result",
                    ),
                    &["result"],
                )
                .expect("valid metric"),
            ),
            oidc_exchanges: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "oidc_exchanges_total",
                        "Trusted-publishing exchanges of CI job tokens, by result",
                    ),
                    &["result"],
                )
                .expect("valid metric"),
            ),
            registry: r,
        };
        for kind in ["requests", "bytes"] {
            metrics.quota_exceeded.with_label_values(&[kind]);
        }
        for result in ["delivered", "retry", "failed", "dropped"] {
            metrics.webhook_deliveries.with_label_values(&[result]);
        }
        for result in ["ok", "error"] {
            // Present from the start, so that a rate over them is defined.
            metrics.upstream_resolutions.with_label_values(&[result]);
        }
        for (window, _) in EXPIRY_WINDOWS {
            metrics.tokens_expiring.with_label_values(&[window]);
        }
        metrics
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// The windows of `tollgate_tokens_expiring`: the `within` label and its length in days.
pub const EXPIRY_WINDOWS: [(&str, i64); 2] = [("7d", 7), ("30d", 30)];

impl Metrics {
    /// Sets the expiry gauges: `expiring[i]` tokens expire within [`EXPIRY_WINDOWS`]`[i]`,
    /// `expired` have expired.
    pub fn set_expiry(&self, expiring: [usize; EXPIRY_WINDOWS.len()], expired: usize) {
        for ((window, _), n) in EXPIRY_WINDOWS.iter().zip(expiring) {
            self.tokens_expiring
                .with_label_values(&[window])
                .set(n as i64);
        }
        self.tokens_expired.set(expired as i64);
    }
}

/// The process-wide metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The address and length of a `&'static str` label: identifies it without hashing it.
fn key(label: &'static str) -> LabelKey {
    (label.as_ptr() as usize, label.len())
}

/// Children memoized per thread, at most this many each (the label sets are small and fixed).
const MEMO_MAX: usize = 64;

/// A label's identity: its address and length.
type LabelKey = (usize, usize);

thread_local! {
    static REQUESTS: RefCell<Vec<([LabelKey; 2], IntCounter)>> = const { RefCell::new(Vec::new()) };
    static DURATIONS: RefCell<Vec<(LabelKey, Histogram)>> = const { RefCell::new(Vec::new()) };
}

impl Metrics {
    /// Counts one proxy request. Same as `requests.with_label_values(..).inc()`, but on the
    /// request path: `with_label_values` hashes the labels and takes a lock on every call, so
    /// the child is memoized per thread, keyed by the labels' addresses.
    pub fn count_request(&self, outcome: &'static str, method: &'static str) {
        let k = [key(outcome), key(method)];
        REQUESTS.with(|memo| {
            let mut memo = memo.borrow_mut();
            if let Some((_, c)) = memo.iter().find(|(m, _)| *m == k) {
                return c.inc();
            }
            let c = self.requests.with_label_values(&[outcome, method]);
            c.inc();
            if memo.len() < MEMO_MAX {
                memo.push((k, c));
            }
        })
    }

    /// Observes one request's duration by class (memoized like [`Self::count_request`]).
    pub fn observe_request(&self, class: &'static str, seconds: f64) {
        let k = key(class);
        DURATIONS.with(|memo| {
            let mut memo = memo.borrow_mut();
            if let Some((_, h)) = memo.iter().find(|(m, _)| *m == k) {
                return h.observe(seconds);
            }
            let h = self.request_duration.with_label_values(&[class]);
            h.observe(seconds);
            if memo.len() < MEMO_MAX {
                memo.push((k, h));
            }
        })
    }
}

/// A bounded label for an HTTP method.
pub fn method_label(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::PUT => "PUT",
        http::Method::POST => "POST",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_with_prefix() {
        METRICS.cache_hits.inc();
        let text = METRICS.encode();
        assert!(text.contains("tollgate_auth_cache_hits_total"));
        assert!(text.contains("tollgate_build_info{version=\""));
    }
}
