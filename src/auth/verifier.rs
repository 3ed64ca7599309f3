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
//! A token regenerated with an overlap also accepts its previous secret while
//! [`super::rotation::Rotation`] says it is usable: a credential is checked against the
//! current hash, then the previous one (in the same argon2 job, for one budget), and the
//! cache remembers which of the two it proved, so a previous secret retired or past its
//! deadline is refused on the next request, cached or not.
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

use super::argon2_pool::Argon2Pool;
use super::rotation::Rotation;
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
    /// The credential is the record's previous secret (overlapping rotation).
    previous: bool,
}

/// A verified token, and which of its secrets proved it.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// The token.
    pub token: Arc<Token>,
    /// The credential was the token's previous secret (a regeneration's overlap).
    pub previous_secret: bool,
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
    /// Previous secrets of overlapping rotations: which are retired, and when used.
    pub rotation: Rotation,
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
            rotation: Rotation::new(config.tokens.rotation_overlap_ends),
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
    pub async fn authenticate(
        &self,
        presented: &Presented,
        snapshot: &Snapshot,
        now: DateTime<Utc>,
        caller: Caller,
    ) -> Result<Arc<Token>, AuthError> {
        self.authenticate_detailed(presented, snapshot, now, caller)
            .await
            .map(|a| a.token)
    }

    /// Returns the token `presented` proves, as of `now`, and whether it was its previous
    /// secret.
    ///
    /// The cache hit is the hot path and stays inline; everything else (a miss, argon2, a
    /// stale entry) is a boxed future, so callers' futures stay small.
    pub async fn authenticate_detailed(
        &self,
        presented: &Presented,
        snapshot: &Snapshot,
        now: DateTime<Utc>,
        caller: Caller,
    ) -> Result<Authenticated, AuthError> {
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
                let result = self.finish(record.clone(), v.previous, now, caller.addr);
                if v.previous && matches!(result, Err(AuthError::WrongSecret)) {
                    // A previous secret that died: forget it, so it costs nothing again.
                    Box::pin(self.forget_dead_previous(digest, record.generation)).await;
                }
                return result;
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
    ) -> Result<Authenticated, AuthError> {
        METRICS.cache_misses.inc();
        if self.negative.get(&digest).await == Some(UNKNOWN_GENERATION) {
            return Err(AuthError::Unknown);
        }
        self.spend_attempt(&caller, presented.who())?;
        let result = match &self.dummy {
            Some(dummy) => self
                .run_argon2(presented.secret().clone(), dummy.clone(), false)
                .await
                .map(|_| ()),
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
    ) -> Result<Authenticated, AuthError> {
        let current = |v: &Verified| v.generation == record.generation && v.id == record.id;

        // Two rounds at most: a stale entry (another generation) is dropped and verified afresh.
        for _ in 0..2 {
            match self.positive.get(&digest).await {
                Some(v) if current(&v) => {
                    METRICS.cache_hits.inc();
                    let result = self.finish(record.clone(), v.previous, now, caller.addr);
                    if v.previous && matches!(result, Err(AuthError::WrongSecret)) {
                        self.forget_dead_previous(digest, record.generation).await;
                    }
                    return result;
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
            let with_previous = self.rotation.previous_usable(&record, now);
            let verified = self
                .positive
                .try_get_with(digest, async move {
                    self.spend_attempt(&caller, presented.who())?;
                    let started = Instant::now();
                    let result = self.run_argon2(secret, rec.clone(), with_previous).await;
                    METRICS
                        .verification_duration
                        .observe(started.elapsed().as_secs_f64());
                    let label = match &result {
                        Ok(_) => "ok",
                        Err(AuthError::WrongSecret) => "wrong_secret",
                        Err(AuthError::Busy) => "busy",
                        Err(_) => "error",
                    };
                    METRICS.verifications.with_label_values(&[label]).inc();
                    result.map(|previous| Verified {
                        id: rec.id.clone(),
                        generation: rec.generation,
                        previous,
                    })
                })
                .await;
            match verified {
                Ok(v) if current(&v) => {
                    let result = self.finish(record.clone(), v.previous, now, caller.addr);
                    if v.previous && matches!(result, Err(AuthError::WrongSecret)) {
                        self.forget_dead_previous(digest, record.generation).await;
                    }
                    return result;
                }
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

    /// Checks a verified credential against the record's state at `now` (a previous secret
    /// must still be usable), and notes which secret was used: the current one retires the
    /// previous one when overlaps end at first use.
    fn finish(
        &self,
        record: Arc<Token>,
        previous: bool,
        now: DateTime<Utc>,
        client: Option<std::net::IpAddr>,
    ) -> Result<Authenticated, AuthError> {
        if previous && !self.rotation.previous_usable(&record, now) {
            if record.previous.is_some() {
                // Past its deadline: the control plane's sweep may not have run yet.
                self.rotation
                    .retire(&record, super::rotation::RetireReason::Deadline);
            }
            return Err(AuthError::WrongSecret);
        }
        let token = check_usable(record, now, client)?;
        if previous {
            self.rotation.previous_used(&token, now);
        } else {
            self.rotation.current_used(&token);
        }
        Ok(Authenticated {
            token,
            previous_secret: previous,
        })
    }

    /// A cached verification of a previous secret that is no longer usable: dropped, and
    /// remembered as wrong for this generation.
    async fn forget_dead_previous(&self, digest: [u8; 32], generation: u64) {
        self.positive.invalidate(&digest).await;
        self.negative.insert(digest, generation).await;
    }

    /// Verifies `secret` against the record's hash, then, with `with_previous`, against its
    /// previous secret's hash; `Ok(true)` when it is the previous secret.
    async fn run_argon2(
        &self,
        secret: crate::token::Secret,
        record: Arc<Token>,
        with_previous: bool,
    ) -> Result<bool, AuthError> {
        let _admitted = self
            .admission
            .clone()
            .try_acquire_owned()
            .map_err(|_| AuthError::Busy)?;
        let matched = self
            .pool
            .run(move || {
                if verify_secret(secret.expose(), &record.hash) {
                    return Some(false);
                }
                let previous = record.previous.as_ref().filter(|_| with_previous)?;
                verify_secret(secret.expose(), &previous.hash).then_some(true)
            })
            .await
            .ok_or(AuthError::Internal)?;
        matched.ok_or(AuthError::WrongSecret)
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
        disabled: false,
        allowed_ips: Default::default(),
        previous: None,
        packages: Default::default(),
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
