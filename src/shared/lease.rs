//! Leases: a replica takes a slice of a token's shared budget from Redis and serves requests
//! from it without a round-trip, asking for the next slice in the background once half of it
//! is spent.
//!
//! # Lease size
//! The largest slice is the token's *cap*: 5 % of its limit, at most `rate_limit.lease`. A
//! token's slices start small ([`FIRST_SLICE`]) and follow its traffic on this replica: a
//! slice spent within [`FAST`] of the previous call doubles the next one (up to the cap), one
//! that lasted longer than [`SLOW`] halves it. A busy token thus calls Redis a few times a
//! second whatever its rate, and a quiet one holds almost nothing it could leave unspent.
//!
//! # Accuracy
//! Every leased request is paid for in Redis when it is leased, so Redis never grants more
//! than the limit allows. A replica may serve a leased request later than it was granted,
//! though, so within any window of one period the requests admitted across all replicas are
//! at most `limit + replicas × cap` (each replica holds at most one slice unspent, and a slice
//! is at most the cap: a refill asks only for what tops it up to one slice). Leases left unspent when a token goes
//! quiet are lost: a token may get slightly *less* than its limit, never more than the bound.
//!
//! Headers: `remaining` is the shared budget as Redis last reported it to this replica, plus
//! this replica's unspent lease; other replicas' spending since then is not seen, which is
//! the same bound.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;

use super::{Backend, Unavailable};
use crate::ratelimit::{Decision, Limit};

/// This replica's view of one token's shared budget.
#[derive(Debug, Clone, Copy)]
struct Lease {
    limit: Limit,
    /// Leased requests not yet served.
    left: u32,
    /// When (µs on this replica's wall clock) the shared bucket is full again, as last
    /// reported.
    full_at: u64,
    /// Until when (µs) Redis said the budget is spent: refused here without asking again.
    denied_until: u64,
    /// A call to Redis for this token is under way.
    refilling: bool,
    /// The slice asked for next (1 ..= the cap).
    slice: u32,
    /// When (µs) the last call for a slice started.
    leased_at: u64,
}

/// The first slice of a token (or its cap, when smaller).
const FIRST_SLICE: u32 = 4;
/// A slice spent faster than this (µs) since the previous call: the next one is twice as big.
const FAST: u64 = 250_000;
/// A slice that lasted longer than this (µs): the next one is half as big.
const SLOW: u64 = 5_000_000;

impl Lease {
    fn empty(limit: Limit, cap: u32) -> Self {
        Lease {
            limit,
            left: 0,
            full_at: 0,
            denied_until: 0,
            refilling: false,
            slice: FIRST_SLICE.min(cap),
            leased_at: 0,
        }
    }

    /// The next slice, sized to how fast the last one went (see the module comment).
    fn next_slice(&mut self, cap: u32, now: u64) -> u32 {
        let since = now.saturating_sub(self.leased_at);
        if self.leased_at == 0 {
            // The token's first slice here.
        } else if since < FAST {
            self.slice = self.slice.saturating_mul(2);
        } else if since > SLOW {
            self.slice /= 2;
        }
        self.slice = self.slice.clamp(1, cap.max(1));
        self.leased_at = now;
        self.slice
    }

    fn decision(&self, allowed: bool, now: u64) -> Decision {
        let debt = Duration::from_micros(self.full_at.saturating_sub(now));
        let mut d = Decision::from_debt(&self.limit, allowed, debt);
        d.remaining = d.remaining.saturating_add(self.left).min(d.limit);
        d.used = d.limit - d.remaining;
        if allowed {
            d.retry_after = None;
        } else {
            let wait = Duration::from_micros(self.denied_until.saturating_sub(now));
            d.retry_after = Some(wait.max(Duration::from_millis(1)));
        }
        d
    }

    fn apply(&mut self, grant: &super::Grant, now: u64) {
        self.left = self.left.saturating_add(grant.granted);
        self.full_at = now.saturating_add(micros(grant.debt));
        self.denied_until = if grant.granted == 0 {
            now.saturating_add(micros(grant.retry))
        } else {
            0
        };
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn now_micros() -> u64 {
    micros(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default(),
    )
}

/// Marks the end of a lease call for a token, however the call ends.
struct RefillGuard<'a> {
    leases: &'a DashMap<Arc<str>, Lease, foldhash::quality::RandomState>,
    id: &'a Arc<str>,
}

impl Drop for RefillGuard<'_> {
    fn drop(&mut self) {
        if let Some(mut entry) = self.leases.get_mut(self.id) {
            entry.refilling = false;
        }
    }
}

/// Per-token rate limits shared through [`Backend`], served from leases.
#[derive(Debug)]
pub struct SharedLimits {
    backend: Arc<Backend>,
    leases: DashMap<Arc<str>, Lease, foldhash::quality::RandomState>,
}

impl SharedLimits {
    /// No lease yet, on `backend`.
    pub fn new(backend: Arc<Backend>) -> Arc<Self> {
        Arc::new(SharedLimits {
            backend,
            leases: DashMap::default(),
        })
    }

    /// The backend the leases come from.
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }

    /// Decides one request of token `id` under `limit`: from the lease when it holds one
    /// (no I/O; a refill starts in the background when half of it is spent), else by asking
    /// Redis at most `backend_timeout`. `Err`: Redis cannot be reached, the caller falls back.
    pub async fn check(
        self: &Arc<Self>,
        id: &Arc<str>,
        limit: &Limit,
    ) -> Result<Decision, Unavailable> {
        let now = now_micros();
        let cap = self.backend.lease_size(limit);
        let (leader, size) = {
            let mut entry = self
                .leases
                .entry(id.clone())
                .or_insert_with(|| Lease::empty(*limit, cap));
            if entry.limit != *limit {
                *entry = Lease::empty(*limit, cap);
            }
            if entry.left > 0 {
                entry.left -= 1;
                let decision = entry.decision(true, now);
                if entry.left <= entry.slice / 2 && !entry.refilling && self.backend.is_up() {
                    entry.refilling = true;
                    let want = entry.next_slice(cap, now).saturating_sub(entry.left).max(1);
                    drop(entry);
                    let this = self.clone();
                    let (id, limit) = (id.clone(), *limit);
                    tokio::spawn(async move { this.refill(&id, &limit, want).await });
                }
                return Ok(decision);
            }
            if now < entry.denied_until {
                return Ok(entry.decision(false, now));
            }
            // The first caller to find the lease empty leases a whole slice; callers beside it
            // ask for their own request only, so unspent leases stay within one slice.
            let leader = !entry.refilling;
            entry.refilling = true;
            let size = if leader {
                entry.next_slice(cap, now)
            } else {
                1
            };
            (leader, size)
        };
        let want = size;
        // Clears the flag even when this request is dropped while it waits (client gone).
        let guard = leader.then(|| RefillGuard {
            leases: &self.leases,
            id,
        });
        let result = self.backend.lease(id, limit, want).await;
        drop(guard);
        let now = now_micros();
        let mut entry = self
            .leases
            .entry(id.clone())
            .or_insert_with(|| Lease::empty(*limit, cap));
        let grant = result?;
        if entry.limit != *limit {
            *entry = Lease::empty(*limit, cap);
        }
        entry.apply(&grant, now);
        if grant.granted > 0 {
            entry.left -= 1;
            Ok(entry.decision(true, now))
        } else {
            Ok(entry.decision(false, now))
        }
    }

    /// Tops the lease of `id` up by `want` requests, in the background.
    async fn refill(&self, id: &Arc<str>, limit: &Limit, want: u32) {
        let guard = RefillGuard {
            leases: &self.leases,
            id,
        };
        let result = self.backend.lease(id, limit, want).await;
        drop(guard);
        let now = now_micros();
        if let Some(mut entry) = self.leases.get_mut(id) {
            if let Ok(grant) = result {
                if entry.limit == *limit {
                    entry.apply(&grant, now);
                }
            }
        }
    }

    /// This replica's view of token `id` under `limit`, counting nothing (for whoami).
    pub fn peek(&self, id: &str, limit: &Limit) -> Decision {
        let now = now_micros();
        match self.leases.get(id) {
            Some(lease) if lease.limit == *limit => {
                let allowed = lease.left > 0 || now >= lease.denied_until;
                lease.decision(allowed, now)
            }
            _ => Lease::empty(*limit, 1).decision(true, now),
        }
    }

    /// Forgets leases of tokens `keep` refuses (deleted) and leases of tokens whose shared
    /// budget is full again by what this replica last heard (idle for at least as long as the
    /// budget takes to refill: their unspent requests are given up).
    pub fn maintain(&self, keep: impl Fn(&str) -> bool) {
        let now = now_micros();
        self.leases.retain(|id, lease| {
            keep(id) && (lease.refilling || lease.full_at > now || lease.denied_until > now)
        });
    }

    /// Number of tokens with a lease.
    pub fn tracked(&self) -> usize {
        self.leases.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_follow_the_traffic_within_the_cap() {
        let limit = Limit {
            requests: 10_000,
            period: Duration::from_secs(60),
        };
        let mut l = Lease::empty(limit, 100);
        let mut t = 1_000_000;
        assert_eq!(l.next_slice(100, t), FIRST_SLICE, "the first slice");
        // Spent fast: doubles up to the cap, never past it.
        let mut sizes = vec![];
        for _ in 0..8 {
            t += 1_000;
            sizes.push(l.next_slice(100, t));
        }
        assert_eq!(sizes, [8, 16, 32, 64, 100, 100, 100, 100]);
        // Neither fast nor slow: kept.
        t += 1_000_000;
        assert_eq!(l.next_slice(100, t), 100);
        // Slow: halves, down to 1.
        for want in [50, 25, 12, 6, 3, 1, 1] {
            t += SLOW + 1;
            assert_eq!(l.next_slice(100, t), want);
        }
        // A cap below the first slice bounds it from the start.
        assert_eq!(Lease::empty(limit, 2).next_slice(2, t), 2);
    }
}
