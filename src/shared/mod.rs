//! Rate limits and quotas shared by every replica, on Redis (`rate_limit.backend`).
//!
//! - [`Backend`]: the connection (redis-rs' `ConnectionManager`, which reconnects by itself),
//!   whether Redis answers right now (`tollgate_ratelimit_backend_up`), and the calls the
//!   proxy makes: each bounded by `rate_limit.backend_timeout`, none made while Redis is known
//!   to be down.
//! - [`SharedLimits`] (`lease.rs`): each replica leases a slice of a token's budget from the
//!   GCRA state kept in Redis and serves requests from it locally, refilling in the background.
//!
//! The GCRA state per token is one Redis string (the theoretical arrival time), read and
//! written by one Lua script ([`LEASE_SCRIPT`]), so concurrent replicas never lose an update;
//! time is Redis' own `TIME`, so the replicas' clocks do not need to agree.

mod lease;
mod quota;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::watch;

use crate::config::{OnBackendError, SharedBackendConfig};
use crate::metrics::METRICS;
use crate::ratelimit::Limit;

pub use lease::SharedLimits;
pub use quota::{Exceeded, Quotas, Usage, UsageStore, FLUSH_INTERVAL};

/// GCRA lease: takes up to `ARGV[3]` requests from the bucket `KEYS[1]` of `ARGV[1]` requests
/// per `ARGV[2]` microseconds. Returns `{granted, debt, retry}`: how many were granted, how far
/// (µs) the bucket's theoretical arrival time lies ahead of now after the grant, and when none
/// was granted, how long (µs) until one would be.
///
/// Doubles, not integers: Lua 5.1 has no other number. Unix microseconds (~1.8e15) are exact
/// in a double (2^53 ≈ 9e15); the emission interval `period / requests` is rounded, which
/// shifts a refill by less than a microsecond per request.
pub const LEASE_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local requests = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local interval = period / requests
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then tat = now end
local room = math.floor((now + period - tat) / interval + 1e-6)
local granted = math.min(want, room)
if granted > 0 then
  tat = tat + granted * interval
  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
  return {granted, math.floor(tat - now), 0}
end
local retry = tat + interval - period - now
if retry < 1 then retry = 1 end
return {0, math.floor(tat - now), math.ceil(retry)}
"#;

/// A failed call: Redis did not answer in time, refused, or is known to be down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

/// One lease answered by Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// Requests granted (0: the budget is spent).
    pub granted: u32,
    /// How far the bucket's theoretical arrival time lies ahead of now, after the grant.
    pub debt: Duration,
    /// When nothing was granted: time until one request would be.
    pub retry: Duration,
}

#[async_trait::async_trait]
impl UsageStore for Backend {
    fn available(&self) -> bool {
        self.is_up()
    }

    async fn add(
        &self,
        id: &str,
        quota: &crate::token::Quota,
        window: u64,
        resets_at: u64,
        add: (u64, u64),
    ) -> Result<(u64, u64), Unavailable> {
        self.add_usage(id, quota, window, resets_at, add).await
    }
}

/// The connection to the shared backend and its health.
pub struct Backend {
    client: redis::Client,
    manager: OnceLock<ConnectionManager>,
    up: AtomicBool,
    timeout: Duration,
    on_error: OnBackendError,
    lease_max: u32,
    prefix: String,
    lease_script: redis::Script,
    redacted_url: String,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("url", &self.redacted_url)
            .field("up", &self.is_up())
            .finish_non_exhaustive()
    }
}

/// Longest wait between two health checks while Redis is down.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Health check interval while Redis answers.
const HEALTHY_INTERVAL: Duration = Duration::from_secs(1);

impl Backend {
    /// Checks the URL (no I/O: nothing connects before [`Backend::run`]).
    pub fn new(config: &SharedBackendConfig) -> Result<Arc<Self>, String> {
        if config.url.expose().starts_with("rediss://") {
            // redis-rs builds its rustls client on the process-wide provider: ring, as pingora.
            pingora::tls::install_default_crypto_provider();
        }
        let client = redis::Client::open(config.url.expose())
            .map_err(|e| format!("rate_limit.backend {}: {}", config.url, e.category()))?;
        METRICS.ratelimit_backend_up.set(0);
        Ok(Arc::new(Backend {
            client,
            manager: OnceLock::new(),
            up: AtomicBool::new(false),
            timeout: config.timeout,
            on_error: config.on_error,
            lease_max: config.lease_max,
            prefix: config.key_prefix.clone(),
            lease_script: redis::Script::new(LEASE_SCRIPT),
            redacted_url: config.url.to_string(),
        }))
    }

    /// Whether Redis answered the last call or health check.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// What the proxy does while Redis cannot be reached.
    pub fn on_error(&self) -> OnBackendError {
        self.on_error
    }

    /// Connects and keeps checking Redis until `stop`: every second while it answers; while it
    /// does not, again after a backoff doubling from 250 ms to 2 s. Runs on the control plane.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(MAX_BACKOFF);
        match ConnectionManager::new_lazy_with_config(self.client.clone(), config) {
            Ok(m) => {
                let _ = self.manager.set(m);
            }
            Err(e) => {
                tracing::error!(backend = %self.redacted_url, error = %e, "rate-limit backend cannot be used");
                return;
            }
        }
        let mut backoff = Duration::from_millis(250);
        loop {
            let delay = match self.ping().await {
                Ok(()) => {
                    if !self.up.swap(true, Ordering::Relaxed) {
                        METRICS.ratelimit_backend_up.set(1);
                        tracing::info!(backend = %self.redacted_url, "rate-limit backend reachable: limits and quotas are shared");
                    }
                    backoff = Duration::from_millis(250);
                    HEALTHY_INTERVAL
                }
                Err(e) => {
                    self.mark_down(&e);
                    let d = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    d
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.changed() => return,
            }
        }
    }

    async fn ping(&self) -> Result<(), String> {
        let Some(manager) = self.manager.get() else {
            return Err("not connected".into());
        };
        let mut conn = manager.clone();
        match tokio::time::timeout(
            Duration::from_secs(1),
            redis::cmd("PING").query_async::<String>(&mut conn),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }

    /// Records an outage; logs once per outage.
    fn mark_down(&self, reason: &str) {
        if self.up.swap(false, Ordering::Relaxed) {
            METRICS.ratelimit_backend_up.set(0);
            let fallback = match self.on_error {
                OnBackendError::Local => "each replica limits on its own until it is back",
                OnBackendError::Deny => "limited requests are refused until it is back",
            };
            tracing::warn!(backend = %self.redacted_url, error = reason, "rate-limit backend unreachable: {fallback}");
        }
    }

    /// The connection, if Redis is up.
    fn connection(&self) -> Result<ConnectionManager, Unavailable> {
        if !self.is_up() {
            return Err(Unavailable);
        }
        self.manager.get().cloned().ok_or(Unavailable)
    }

    /// Runs one Redis call under the timeout, timing it; an error or a timeout marks Redis
    /// down (the health check brings it back).
    async fn call<T>(
        &self,
        f: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, Unavailable> {
        let start = Instant::now();
        let result = tokio::time::timeout(self.timeout, f).await;
        METRICS
            .ratelimit_backend_duration
            .observe(start.elapsed().as_secs_f64());
        match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.mark_down(&e.to_string());
                Err(Unavailable)
            }
            Err(_) => {
                self.mark_down("timed out");
                Err(Unavailable)
            }
        }
    }

    /// Leases up to `want` requests of token `id`'s budget under `limit`.
    pub async fn lease(&self, id: &str, limit: &Limit, want: u32) -> Result<Grant, Unavailable> {
        let mut conn = self.connection()?;
        let period_us = limit.period.as_micros().clamp(1, i64::MAX as u128) as i64;
        let key = format!("{}rl:{}:{}:{}", self.prefix, id, limit.requests, period_us);
        let mut invocation = self.lease_script.key(key);
        invocation
            .arg(limit.requests.max(1))
            .arg(period_us)
            .arg(want);
        let (granted, debt, retry): (i64, i64, i64) =
            self.call(invocation.invoke_async(&mut conn)).await?;
        Ok(Grant {
            granted: u32::try_from(granted.max(0)).unwrap_or(0),
            debt: Duration::from_micros(debt.max(0) as u64),
            retry: Duration::from_micros(retry.max(0) as u64),
        })
    }

    /// Adds `(requests, bytes)` to token `id`'s usage of `quota` in period `window` (ending
    /// at `resets_at`, Unix seconds); returns the totals of every replica.
    pub async fn add_usage(
        &self,
        id: &str,
        quota: &crate::token::Quota,
        window: u64,
        resets_at: u64,
        add: (u64, u64),
    ) -> Result<(u64, u64), Unavailable> {
        let mut conn = self.connection()?;
        let key = self.quota_key(id, quota, window);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HINCRBY")
            .arg(&key)
            .arg("requests")
            .arg(add.0)
            .cmd("HINCRBY")
            .arg(&key)
            .arg("bytes")
            .arg(add.1)
            .cmd("EXPIREAT")
            .arg(&key)
            .arg(resets_at.saturating_add(3600))
            .ignore();
        let (requests, bytes): (i64, i64) = self.call(pipe.query_async(&mut conn)).await?;
        Ok((requests.max(0) as u64, bytes.max(0) as u64))
    }

    /// Reads token `id`'s usage of `quota` in the current period once, on a connection of its
    /// own (for the command line, which runs no control plane).
    pub async fn read_usage_once(
        &self,
        id: &str,
        quota: &crate::token::Quota,
    ) -> Result<(u64, u64), String> {
        let mut conn = tokio::time::timeout(
            Duration::from_secs(2),
            self.client.get_multiplexed_async_connection(),
        )
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let (window, _) = quota.window(now);
        let key = self.quota_key(id, quota, window);
        let (requests, bytes): (Option<u64>, Option<u64>) = redis::cmd("HMGET")
            .arg(&key)
            .arg("requests")
            .arg("bytes")
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        Ok((requests.unwrap_or(0), bytes.unwrap_or(0)))
    }

    fn quota_key(&self, id: &str, quota: &crate::token::Quota, window: u64) -> String {
        format!(
            "{}quota:{}:{}:{}",
            self.prefix,
            id,
            quota.period.as_secs(),
            window
        )
    }

    /// The largest lease of a limit (its cap): 5 % of its requests, at most `rate_limit.lease`,
    /// at least 1.
    pub fn lease_size(&self, limit: &Limit) -> u32 {
        (limit.requests / 20).clamp(1, self.lease_max)
    }
}
