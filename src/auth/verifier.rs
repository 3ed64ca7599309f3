//! Token verification: find the one record a credential names, then check the secret —
//! from the moka cache when a verification of this exact credential is still valid, else
//! with argon2 on a small pool of low-priority threads, with a bounded queue (DESIGN §6).
//!
//! argon2 is the denial-of-service surface: a flood of wrong secrets for a known id reaches it
//! on every request. Three things keep cached (legitimate) traffic fast during one:
//! - each token id has a budget of argon2 verifications (`verify.token_attempts`, 10 per
//!   minute by default); beyond it, uncached credentials for that id are answered 429
//!   `verification_throttled` without argon2 (cached ones are not affected);
//! - the argon2 threads run at a lower CPU priority (`verify.nice`), so the proxy's threads
//!   win the cores while both want them;
//! - at most `verify.max_concurrent` run at once and `verify.max_queue` wait; beyond that 503.
//!
//! A cached verification counts only while the snapshot still holds that id with that
//! generation, so revocation, regeneration and rights changes act on the next request.
//! Concurrent misses for one credential share one argon2 run (`try_get_with`); failures are
//! remembered briefly so a replayed wrong secret costs no argon2.

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
    /// Verifications per token id (`None`: unlimited).
    attempts: Option<(RateLimiter, Limit)>,
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
            attempts: match config.verify.token_attempts {
                RateLimitRule::Unlimited => None,
                RateLimitRule::Limited { requests, period } => Limit::new(requests, period)
                    .ok()
                    .map(|l| (RateLimiter::default(), l)),
            },
        }
    }

    /// Spends one verification of `record`'s budget, or says when to retry.
    fn spend_attempt(&self, record: &Token) -> Result<(), AuthError> {
        let Some((limiter, limit)) = &self.attempts else {
            return Ok(());
        };
        // Keep the map to recently active ids (full buckets behave like absent ones).
        if limiter.len() > 1024 {
            limiter.remove_full();
        }
        let d = limiter.check(&record.id, limit);
        if d.allowed {
            Ok(())
        } else {
            Err(AuthError::Throttled(d.retry_after_secs().unwrap_or(1)))
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
    ) -> Result<Arc<Token>, AuthError> {
        let record = match presented {
            Presented::Token { id, .. } => snapshot.by_id(id),
            Presented::Named { name, .. } => snapshot.by_name(name),
        }
        .ok_or(AuthError::Unknown)?;
        let digest = presented.digest();
        if let Some(v) = self.positive.get(&digest).await {
            if v.generation == record.generation && v.id == record.id {
                METRICS.cache_hits.inc();
                return check_expiry(record.clone(), now);
            }
        }
        Box::pin(self.authenticate_slow(presented, record.clone(), digest, now)).await
    }

    async fn authenticate_slow(
        &self,
        presented: &Presented,
        record: Arc<Token>,
        digest: [u8; 32],
        now: DateTime<Utc>,
    ) -> Result<Arc<Token>, AuthError> {
        let current = |v: &Verified| v.generation == record.generation && v.id == record.id;

        // Two rounds at most: a stale entry (another generation) is dropped and verified afresh.
        for _ in 0..2 {
            match self.positive.get(&digest).await {
                Some(v) if current(&v) => {
                    METRICS.cache_hits.inc();
                    return check_expiry(record, now);
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
                    self.spend_attempt(&rec)?;
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
                Ok(v) if current(&v) => return check_expiry(record, now),
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
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
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
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain syscalls on the calling thread, no memory is passed.
        let rc = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, nice)
        };
        if rc != 0 {
            tracing::debug!(nice, "could not lower the argon2 thread priority");
        }
    }
}

fn check_expiry(record: Arc<Token>, now: DateTime<Utc>) -> Result<Arc<Token>, AuthError> {
    if record.is_expired(now) {
        Err(AuthError::Expired)
    } else {
        Ok(record)
    }
}
