//! Token verification: find the one record a credential names, then check the secret —
//! from the moka cache when a verification of this exact credential is still valid, else
//! with argon2 on a small pool of low-priority threads, with a bounded queue.
//!
//! argon2 is the denial-of-service surface: a flood of wrong secrets for a known id reaches it
//! on every request. Three things keep cached (legitimate) traffic fast during one:
//! - budgets of argon2 verifications, keyed by the client address (an IPv6 /64): per address
//!   and token (`verify.token_attempts`, 10 per minute by default) and per address over all
//!   tokens (`verify.client_attempts`, 60 per minute); beyond them, uncached credentials from
//!   that address are answered 429 `verification_throttled` without argon2 (cached ones are
//!   not affected). Keyed by address, a guesser spends only its own budget, never the
//!   owner's: the owner's correct credential from elsewhere still verifies;
//! - the argon2 threads run at a lower CPU priority (`verify.nice`), so the proxy's threads
//!   win the cores while both want them;
//! - at most `verify.max_concurrent` run at once and `verify.max_queue` wait; beyond that 503.
//!
//! A cached verification counts only while the snapshot still holds that id with that
//! generation, so revocation, regeneration and rights changes act on the next request; the
//! disabled flag, the expiry and the client allowlist are read from the snapshot's record after every verification.
//! Concurrent misses for one credential share one argon2 run (`try_get_with`); failures are
//! remembered briefly so a replayed wrong secret costs no argon2.
//!
//! An unknown id or name is answered like a wrong secret: it spends the same budgets and runs
//! argon2 against a dummy hash, so neither the time nor a 429 tells which ids exist.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use moka::future::Cache;
use tokio::sync::Semaphore;

use super::Presented;
use crate::config::Config;
use crate::metrics::METRICS;
use crate::ratelimit::{Limit, RateLimiter};
use crate::store::Snapshot;
use crate::token::{verify_secret, RateLimitRule, Token};

/// Why a credential was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token has this id or name.
    #[error("unknown token")]
    Unknown,
    /// The secret does not match the stored hash.
    #[error("wrong secret")]
    WrongSecret,
    /// The secret is right but the token has expired.
    #[error("token expired")]
    Expired,
    /// The secret is right but the token is disabled.
    #[error("token disabled")]
    Disabled,
    /// The secret is right but the client's address is outside the token's `allowed_ips`.
    #[error("client address not allowed for this token")]
    IpNotAllowed,
    /// Too many verifications are running or waiting.
    #[error("verification capacity exhausted")]
    Busy,
    /// The token's budget of verifications is spent; retry after this many seconds.
    #[error("too many verifications for this token")]
    Throttled(u64),
    /// The blocking verification task failed.
    #[error("verification failed internally")]
    Internal,
}

/// Who is asking: the client address budgets are keyed by, and the listener.
#[derive(Debug, Clone, Copy, Default)]
pub struct Caller {
    /// The client's address (`None` when unknown: such callers share one budget).
    pub addr: Option<std::net::IpAddr>,
    /// The admin listener (the bootstrap token is accepted only there).
    pub admin: bool,
}

impl Caller {
    /// A client of the proxy listener.
    pub fn proxy(addr: Option<std::net::IpAddr>) -> Self {
        Caller { addr, admin: false }
    }

    /// A client of the admin listener.
    pub fn admin(addr: Option<std::net::IpAddr>) -> Self {
        Caller { addr, admin: true }
    }

    /// The budget key of the address: IPv4 as it is, IPv6 by its /64 (one subscriber holds a
    /// whole /64), IPv4-mapped IPv6 as IPv4.
    fn key(&self) -> String {
        use std::net::IpAddr;
        // The listeners keep apart: guesses on the proxy port never spend the admin budget.
        let listener = if self.admin { "admin" } else { "proxy" };
        let addr = match self.addr.map(|a| match a {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
            v4 => v4,
        }) {
            Some(IpAddr::V4(v4)) => v4.to_string(),
            Some(IpAddr::V6(v6)) => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
            None => "unknown".into(),
        };
        format!("{listener} {addr}")
    }
}

#[derive(Debug, Clone)]
struct Verified {
    id: Arc<str>,
    generation: u64,
}

/// Verifies credentials against a snapshot.
pub struct Verifier {
    // Keyed by SHA-256 digests: foldhash (seeded per process) instead of SipHash, which was
    // the larger part of a cache hit's lookup.
    positive: Cache<[u8; 32], Verified, foldhash::quality::RandomState>,
    negative: Cache<[u8; 32], u64, foldhash::quality::RandomState>,
    /// Verifications running or waiting; `try_acquire` failing means 503.
    admission: Arc<Semaphore>,
    /// The argon2 threads.
    pool: Argon2Pool,
    /// Verifications per client address and token, and per client address (`None`:
    /// unlimited).
    attempts: Option<Attempts>,
    /// What an unknown id or name is verified against (same parameters as real hashes).
    dummy: Option<Arc<Token>>,
}

struct Attempts {
    per_token: Limit,
    per_client: Limit,
    limiter: RateLimiter,
}

impl Verifier {
    /// A verifier sized from the configuration.
    pub fn new(config: &Config) -> Self {
        let workers = config.verify.max_concurrent.max(1);
        Verifier {
            positive: Cache::builder()
                .max_capacity(config.cache.capacity)
                .time_to_live(config.cache.ttl)
                .build_with_hasher(Default::default()),
            negative: Cache::builder()
                .max_capacity(config.cache.capacity)
                .time_to_live(config.cache.negative_ttl)
                .build_with_hasher(Default::default()),
            admission: Arc::new(Semaphore::new(workers + config.verify.max_queue)),
            pool: Argon2Pool::start(workers, config.verify.nice),
            attempts: match (config.verify.token_attempts, config.verify.client_attempts) {
                (
                    RateLimitRule::Limited { requests, period },
                    RateLimitRule::Limited {
                        requests: c,
                        period: cp,
                    },
                ) => match (Limit::new(requests, period), Limit::new(c, cp)) {
                    (Ok(per_token), Ok(per_client)) => Some(Attempts {
                        per_token,
                        per_client,
                        limiter: RateLimiter::default(),
                    }),
                    _ => None,
                },
                _ => None,
            },
            dummy: dummy_token(config).map(Arc::new),
        }
    }

    /// Spends one verification of the caller's budgets for the credential named `who` (a
    /// token id or name), or says when to retry.
    fn spend_attempt(&self, caller: &Caller, who: &str) -> Result<(), AuthError> {
        let Some(a) = &self.attempts else {
            return Ok(());
        };
        let client = caller.key();
        let d = a.limiter.check(&Arc::from(client.as_str()), &a.per_client);
        if !d.allowed {
            return Err(AuthError::Throttled(d.retry_after_secs().unwrap_or(1)));
        }
        let pair: Arc<str> = Arc::from(format!("{client} {who}"));
        let d = a.limiter.check(&pair, &a.per_token);
        if d.allowed {
            Ok(())
        } else {
            Err(AuthError::Throttled(d.retry_after_secs().unwrap_or(1)))
        }
    }

    /// Forgets budgets that are full again (they behave like absent ones). Called from the
    /// control plane every few seconds, never on the request path.
    pub fn maintain(&self) {
        if let Some(a) = &self.attempts {
            a.limiter.remove_full();
        }
    }

    /// Returns the token `presented` proves, as of `now`.
    ///
    /// The cache hit is the hot path and stays inline; everything else (a miss, argon2, a
    /// stale entry) is a boxed future, so callers' futures stay small.
    pub async fn authenticate(
        &self,
        presented: &Presented,
        snapshot: &Snapshot,
        now: DateTime<Utc>,
        caller: Caller,
    ) -> Result<Arc<Token>, AuthError> {
        let record = match presented {
            Presented::Token { id, .. } => snapshot.by_id(id),
            Presented::Named { name, .. } => snapshot.by_name(name),
        }
        // The bootstrap token manages tokens on the admin listener; on the proxy it is unknown.
        .filter(|t| caller.admin || t.source != crate::token::Source::Bootstrap);
        let digest = presented.digest();
        let Some(record) = record else {
            return Box::pin(self.authenticate_unknown(presented, digest, caller)).await;
        };
        if let Some(v) = self.positive.get(&digest).await {
            if v.generation == record.generation && v.id == record.id {
                METRICS.cache_hits.inc();
                return check_usable(record.clone(), now, caller.addr);
            }
        }
        Box::pin(self.authenticate_slow(presented, record.clone(), digest, now, caller)).await
    }

    /// An unknown id or name: the same budgets and the same argon2 work as a wrong secret.
    async fn authenticate_unknown(
        &self,
        presented: &Presented,
        digest: [u8; 32],
        caller: Caller,
    ) -> Result<Arc<Token>, AuthError> {
        METRICS.cache_misses.inc();
        if self.negative.get(&digest).await == Some(UNKNOWN_GENERATION) {
            return Err(AuthError::Unknown);
        }
        self.spend_attempt(&caller, presented.who())?;
        let result = match &self.dummy {
            Some(dummy) => {
                self.run_argon2(presented.secret().clone(), dummy.clone())
                    .await
            }
            None => Err(AuthError::WrongSecret),
        };
        match result {
            Ok(()) | Err(AuthError::WrongSecret) => {
                METRICS.verifications.with_label_values(&["unknown"]).inc();
                self.negative.insert(digest, UNKNOWN_GENERATION).await;
                Err(AuthError::Unknown)
            }
            Err(e) => Err(e),
        }
    }

    async fn authenticate_slow(
        &self,
        presented: &Presented,
        record: Arc<Token>,
        digest: [u8; 32],
        now: DateTime<Utc>,
        caller: Caller,
    ) -> Result<Arc<Token>, AuthError> {
        let current = |v: &Verified| v.generation == record.generation && v.id == record.id;

        // Two rounds at most: a stale entry (another generation) is dropped and verified afresh.
        for _ in 0..2 {
            match self.positive.get(&digest).await {
                Some(v) if current(&v) => {
                    METRICS.cache_hits.inc();
                    return check_usable(record, now, caller.addr);
                }
                Some(_) => self.positive.invalidate(&digest).await,
                None => {}
            }
            METRICS.cache_misses.inc();
            if self.negative.get(&digest).await == Some(record.generation) {
                return Err(AuthError::WrongSecret);
            }
            let secret = presented.secret().clone();
            let rec = record.clone();
            let verified = self
                .positive
                .try_get_with(digest, async move {
                    self.spend_attempt(&caller, presented.who())?;
                    let started = Instant::now();
                    let result = self.run_argon2(secret, rec.clone()).await;
                    METRICS
                        .verification_duration
                        .observe(started.elapsed().as_secs_f64());
                    let label = match &result {
                        Ok(()) => "ok",
                        Err(AuthError::WrongSecret) => "wrong_secret",
                        Err(AuthError::Busy) => "busy",
                        Err(_) => "error",
                    };
                    METRICS.verifications.with_label_values(&[label]).inc();
                    result.map(|()| Verified {
                        id: rec.id.clone(),
                        generation: rec.generation,
                    })
                })
                .await;
            match verified {
                Ok(v) if current(&v) => return check_usable(record, now, caller.addr),
                // Another request cached a verification of an older record: drop it, go again.
                Ok(_) => continue,
                Err(e) => {
                    if *e == AuthError::WrongSecret {
                        self.negative.insert(digest, record.generation).await;
                    }
                    return Err(*e);
                }
            }
        }
        Err(AuthError::Unknown)
    }

    async fn run_argon2(
        &self,
        secret: crate::token::Secret,
        record: Arc<Token>,
    ) -> Result<(), AuthError> {
        let _admitted = self
            .admission
            .clone()
            .try_acquire_owned()
            .map_err(|_| AuthError::Busy)?;
        let ok = self
            .pool
            .run(move || verify_secret(secret.expose(), &record.hash))
            .await
            .ok_or(AuthError::Internal)?;
        if ok {
            Ok(())
        } else {
            Err(AuthError::WrongSecret)
        }
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of threads for argon2, started at a lower CPU priority (a higher nice value)
/// so that under contention the proxy's threads get the cores first. Jobs wait in a channel;
/// the threads end when the pool is dropped.
struct Argon2Pool {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl Argon2Pool {
    fn start(threads: usize, nice: i32) -> Self {
        let (jobs, rx) = std::sync::mpsc::channel::<Job>();
        let rx = Arc::new(std::sync::Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("tollgate-argon2-{i}"))
                .spawn(move || {
                    lower_priority(nice);
                    loop {
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(p) => p.into_inner().recv(),
                        };
                        match job {
                            // A panicking job drops its answer (the caller gets `Internal`);
                            // the thread stays, so the pool never shrinks.
                            Ok(job) => {
                                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job))
                                    .is_err()
                                {
                                    tracing::error!("an argon2 verification panicked");
                                }
                            }
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start an argon2 thread");
            }
        }
        Argon2Pool { jobs }
    }

    /// Runs `f` on a pool thread; `None` if it could not run (no thread, or it panicked).
    async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .ok()?;
        rx.await.ok()
    }
}

/// Lowers the calling thread's CPU priority to `nice` (Linux: `setpriority` on a thread id
/// applies to that thread only). Best effort: a failure leaves the default priority.
fn lower_priority(nice: i32) {
    if nice <= 0 {
        return;
    }
    if !crate::sys::set_thread_nice(nice) {
        tracing::debug!(nice, "could not lower the argon2 thread priority");
    }
}

/// The negative-cache generation of unknown credentials (real generations start at 1).
const UNKNOWN_GENERATION: u64 = 0;

/// A token no credential can match (its secret is random and thrown away), hashed with the
/// configured parameters so that verifying against it costs what a real verification does.
/// `None` only if the parameters cannot hash (configuration checks refuse those).
fn dummy_token(config: &Config) -> Option<Token> {
    let secret = crate::token::generate().token;
    let hash = crate::token::hash_secret(secret.expose(), &config.hashing).ok()?;
    Some(Token {
        id: Arc::from(""),
        name: Arc::from(""),
        description: None,
        hash: crate::token::validate_phc(&hash).ok()?,
        permission: crate::token::Permission::Read,
        routes: Vec::new(),
        created_at: None,
        expires_at: None,
        rate_limit: None,
        quota: None,
        disabled: false,
        allowed_ips: Default::default(),
        generation: UNKNOWN_GENERATION,
        source: crate::token::Source::Bootstrap,
    })
}

/// A verified record that may still not be used: disabled, expired, or used from an address
/// outside its allowlist. Checked on the snapshot's record after verification (cached or
/// not), so these act on the next request and a wrong secret is never told apart by them.
fn check_usable(
    record: Arc<Token>,
    now: DateTime<Utc>,
    client: Option<std::net::IpAddr>,
) -> Result<Arc<Token>, AuthError> {
    if record.disabled {
        Err(AuthError::Disabled)
    } else if record.is_expired(now) {
        Err(AuthError::Expired)
    } else if !record.allowed_ips.allows(client) {
        Err(AuthError::IpNotAllowed)
    } else {
        Ok(record)
    }
}
