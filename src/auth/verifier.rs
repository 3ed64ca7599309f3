//! Token verification: find the one record a credential names, then check the secret —
//! from the moka cache when a verification of this exact credential is still valid, else
//! with argon2 on a blocking thread, bounded by a semaphore (DESIGN §6).
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
use crate::store::Snapshot;
use crate::token::{verify_secret, Token};

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
    positive: Cache<[u8; 32], Verified>,
    negative: Cache<[u8; 32], u64>,
    /// Verifications running or waiting; `try_acquire` failing means 503.
    admission: Arc<Semaphore>,
    /// Verifications running at once on blocking threads.
    workers: Arc<Semaphore>,
}

impl Verifier {
    /// A verifier sized from the configuration.
    pub fn new(config: &Config) -> Self {
        let workers = config.verify.max_concurrent.max(1);
        Verifier {
            positive: Cache::builder()
                .max_capacity(config.cache.capacity)
                .time_to_live(config.cache.ttl)
                .build(),
            negative: Cache::builder()
                .max_capacity(config.cache.capacity)
                .time_to_live(config.cache.negative_ttl)
                .build(),
            admission: Arc::new(Semaphore::new(workers + config.verify.max_queue)),
            workers: Arc::new(Semaphore::new(workers)),
        }
    }

    /// Returns the token `presented` proves, as of `now`.
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
        .ok_or(AuthError::Unknown)?
        .clone();
        let digest = presented.digest();
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
        let permit = self
            .workers
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| AuthError::Internal)?;
        let ok = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            verify_secret(secret.expose(), &record.hash)
        })
        .await
        .map_err(|_| AuthError::Internal)?;
        if ok {
            Ok(())
        } else {
            Err(AuthError::WrongSecret)
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
