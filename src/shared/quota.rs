//! Quota counters: requests and bytes sent per token and period.
//!
//! The request path only touches memory: it reads what is known of the period's usage plus
//! what this replica has counted since, and adds to the latter. [`Quotas::flush`] (on the
//! control plane, every [`FLUSH_INTERVAL`]) moves the counts into the shared total:
//! - with `rate_limit.backend`, into one Redis hash per token and period (`HINCRBY`, which
//!   returns the total of every replica); counts made while Redis is down are kept and sent
//!   when it is back;
//! - with a token database and no Redis, into the database (one upsert per token and flush);
//! - without either (token files only), into this process' memory only: counts start over when
//!   the process restarts.
//!
//! Accuracy: a replica sees the other replicas' usage at most one second late (counts go out
//! every flush, the totals of tokens this replica does not count right now come back every
//! fifth), so a quota may be overrun by what the other replicas admit in that time.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;

use super::Unavailable;
use crate::token::Quota;

/// Where the shared totals of quota usage are kept: Redis ([`super::Backend`]), or the token
/// database (implemented by the application over the store).
#[async_trait::async_trait]
pub trait UsageStore: Send + Sync + std::fmt::Debug {
    /// Whether a call may be made now (false: skip it rather than wait).
    fn available(&self) -> bool;
    /// Adds `(requests, bytes)` to token `id`'s usage of `quota` in period `window` (ending at
    /// `resets_at`, Unix seconds); returns the totals of every replica.
    async fn add(
        &self,
        id: &str,
        quota: &Quota,
        window: u64,
        resets_at: u64,
        add: (u64, u64),
    ) -> Result<(u64, u64), Unavailable>;
}

/// How often counts go to the shared total.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(200);

/// What a quota has used in its current period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Requests counted.
    pub requests: u64,
    /// Bytes of response bodies sent.
    pub bytes: u64,
    /// When the period ends (Unix seconds).
    pub resets_at: u64,
}

/// Which part of a quota is used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    /// The requests of the period.
    Requests,
    /// The bytes of the period.
    Bytes,
}

impl Exceeded {
    /// The metric label.
    pub fn kind(self) -> &'static str {
        match self {
            Exceeded::Requests => "requests",
            Exceeded::Bytes => "bytes",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Counter {
    quota: Quota,
    window: u64,
    resets_at: u64,
    /// The shared total as last known (or, without a backend, everything flushed).
    known: (u64, u64),
    /// Counted here since the last flush.
    pending: (u64, u64),
    /// `known` came from the shared backend at least once.
    synced: bool,
}

impl Counter {
    fn used(&self) -> (u64, u64) {
        (
            self.known.0.saturating_add(self.pending.0),
            self.known.1.saturating_add(self.pending.1),
        )
    }
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Quota counters of every token with a quota, owned by the proxy.
#[derive(Debug)]
pub struct Quotas {
    backend: Option<Arc<dyn UsageStore>>,
    counters: DashMap<Arc<str>, Counter, foldhash::quality::RandomState>,
    flushes: std::sync::atomic::AtomicU64,
}

impl Quotas {
    /// Counters kept on `backend` (Redis or the database), or in memory without one.
    pub fn new(backend: Option<Arc<dyn UsageStore>>) -> Arc<Self> {
        Arc::new(Quotas {
            backend,
            counters: DashMap::default(),
            flushes: Default::default(),
        })
    }

    /// The counter of `id` for the current period, made or started over as needed.
    fn with_counter<T>(
        &self,
        id: &Arc<str>,
        quota: &Quota,
        f: impl FnOnce(&mut Counter) -> T,
    ) -> T {
        let (window, resets_at) = quota.window(unix_now());
        let fresh = Counter {
            quota: *quota,
            window,
            resets_at,
            known: (0, 0),
            pending: (0, 0),
            synced: false,
        };
        let mut entry = self.counters.entry(id.clone()).or_insert(fresh);
        if entry.window != window || entry.quota != *quota {
            *entry = fresh;
        }
        f(&mut entry)
    }

    /// Counts one request of `id`, or says which part of its quota is used up and when the
    /// period ends (Unix seconds). The first request of a token in a period on this replica
    /// reads the shared total first (under the backend's timeout; while Redis is down, the
    /// count starts from what this replica knows).
    pub async fn admit(&self, id: &Arc<str>, quota: &Quota) -> Result<(), (Exceeded, u64)> {
        if let Some(backend) = self.backend.as_ref().filter(|b| b.available()) {
            let (window, resets_at) = quota.window(unix_now());
            let known = self
                .counters
                .get(id)
                .is_some_and(|c| c.window == window && c.quota == *quota && c.synced);
            if !known {
                if let Ok(total) = backend.add(id, quota, window, resets_at, (0, 0)).await {
                    self.with_counter(id, quota, |c| {
                        c.known = total;
                        c.synced = true;
                    });
                }
            }
        }
        self.with_counter(id, quota, |c| {
            let (requests, bytes) = c.used();
            if quota.requests.is_some_and(|limit| requests >= limit) {
                return Err((Exceeded::Requests, c.resets_at));
            }
            if quota.bytes.is_some_and(|limit| bytes >= limit) {
                return Err((Exceeded::Bytes, c.resets_at));
            }
            c.pending.0 += 1;
            Ok(())
        })
    }

    /// Whether sending `len` more bytes would go over the byte quota of `id` (a response
    /// whose size is announced); `Some(period end)` when it would.
    pub fn would_exceed(&self, id: &Arc<str>, quota: &Quota, len: u64) -> Option<u64> {
        let limit = quota.bytes?;
        self.with_counter(id, quota, |c| {
            (c.used().1.saturating_add(len) > limit).then_some(c.resets_at)
        })
    }

    /// Charges `n` bytes sent to `id`'s client.
    pub fn charge_bytes(&self, id: &Arc<str>, quota: &Quota, n: u64) {
        if quota.bytes.is_some() && n > 0 {
            self.with_counter(id, quota, |c| c.pending.1 = c.pending.1.saturating_add(n));
        }
    }

    /// What `id` has used of `quota` in the current period: the shared total when the backend
    /// answers (plus this replica's counts not yet sent), else what this replica knows.
    pub async fn current(&self, id: &str, quota: &Quota) -> Usage {
        let mut usage = self.usage(id, quota);
        if let Some(backend) = self.backend.as_ref().filter(|b| b.available()) {
            let (window, resets_at) = quota.window(unix_now());
            if let Ok((requests, bytes)) = backend.add(id, quota, window, resets_at, (0, 0)).await {
                let pending = self
                    .counters
                    .get(id)
                    .filter(|c| c.window == window && c.quota == *quota)
                    .map_or((0, 0), |c| c.pending);
                usage.requests = requests + pending.0;
                usage.bytes = bytes + pending.1;
            }
        }
        usage
    }

    /// What `id` has used of `quota` in the current period (as this replica knows it).
    pub fn usage(&self, id: &str, quota: &Quota) -> Usage {
        let (window, resets_at) = quota.window(unix_now());
        let (requests, bytes) = match self.counters.get(id) {
            Some(c) if c.window == window && c.quota == *quota => c.used(),
            _ => (0, 0),
        };
        Usage {
            requests,
            bytes,
            resets_at,
        }
    }

    /// Moves the counts of this replica into the shared total (see the module comment);
    /// forgets the counters of tokens `keep` refuses and of periods that are over.
    pub async fn flush(&self, keep: impl Fn(&str) -> bool) {
        let now = unix_now().as_secs();
        let refresh = self
            .flushes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            % 5
            == 0;
        self.counters
            .retain(|id, c| keep(id) && (c.resets_at > now || c.pending != (0, 0)));
        let pending: Vec<(Arc<str>, Counter)> = self
            .counters
            .iter()
            // Idle counters learn the other replicas' counts every fifth flush.
            .filter(|c| c.pending != (0, 0) || (self.backend.is_some() && refresh))
            .map(|c| (c.key().clone(), *c.value()))
            .collect();
        for (id, sent) in pending {
            let total = match &self.backend {
                None => Some((sent.known.0 + sent.pending.0, sent.known.1 + sent.pending.1)),
                Some(backend) if backend.available() => backend
                    .add(&id, &sent.quota, sent.window, sent.resets_at, sent.pending)
                    .await
                    .ok(),
                Some(_) => None,
            };
            let Some(total) = total else { continue };
            if let Some(mut c) = self.counters.get_mut(&id) {
                if c.window == sent.window && c.quota == sent.quota {
                    c.pending.0 -= sent.pending.0.min(c.pending.0);
                    c.pending.1 -= sent.pending.1.min(c.pending.1);
                    c.known = total;
                    c.synced = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_in_memory_refuse_at_the_limit_and_survive_a_flush() {
        let quotas = Quotas::new(None);
        let id: Arc<str> = Arc::from("AAAAAAAAAAAA");
        let q = Quota {
            requests: Some(2),
            bytes: Some(1000),
            period: Duration::from_secs(3600),
        };
        assert_eq!(quotas.admit(&id, &q).await, Ok(()));
        quotas.charge_bytes(&id, &q, 600);
        // 600 + 500 announced would go over 1000.
        assert!(quotas.would_exceed(&id, &q, 500).is_some());
        assert_eq!(quotas.would_exceed(&id, &q, 400), None);
        quotas.flush(|_| true).await;
        let usage = quotas.usage(&id, &q);
        assert_eq!((usage.requests, usage.bytes), (1, 600));
        assert_eq!(usage.resets_at % 3600, 0);
        assert_eq!(quotas.admit(&id, &q).await, Ok(()));
        let (exceeded, resets_at) = quotas.admit(&id, &q).await.unwrap_err();
        assert_eq!(exceeded, Exceeded::Requests);
        assert_eq!(resets_at, usage.resets_at);
        // A refused request counts nothing.
        assert_eq!(quotas.usage(&id, &q).requests, 2);
        // Bytes used up refuse too.
        let bytes_only = Quota {
            requests: None,
            bytes: Some(10),
            period: Duration::from_secs(60),
        };
        let other: Arc<str> = Arc::from("BBBBBBBBBBBB");
        assert_eq!(quotas.admit(&other, &bytes_only).await, Ok(()));
        quotas.charge_bytes(&other, &bytes_only, 10);
        assert_eq!(
            quotas.admit(&other, &bytes_only).await.map_err(|e| e.0),
            Err(Exceeded::Bytes)
        );
        // Deleted tokens are forgotten.
        quotas.flush(|i| i != "BBBBBBBBBBBB").await;
        assert_eq!(quotas.usage(&other, &bytes_only).bytes, 0);
    }
}
