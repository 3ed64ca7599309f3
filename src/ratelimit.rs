//! Per-token rate limiting: GCRA decisions and the arithmetic behind them.
//!
//! Pure: no HTTP types and no I/O (the proxy renders a [`Decision`] as response header
//! fields). Time comes from an injected [`Clock`], so tests advance a manual clock instead of
//! sleeping. State is one small bucket per token id in a sharded [`DashMap`]: a decision is
//! O(1) and locks one shard only.
//!
//! # Semantics
//! A [`Limit`] of `requests` per `period` is a bucket of capacity `requests`, refilled
//! continuously at `requests` per `period` (one request every `period / requests`). A token
//! seen for the first time starts with a full bucket; a refused request consumes nothing;
//! a token whose limit changed starts over with a full bucket for the new limit.
//!
//! This is GCRA: each bucket keeps only its *theoretical arrival time* (TAT), the instant at
//! which it would be full again. A request is allowed when, after paying for it, the TAT lies
//! no more than one `period` ahead of now.
//!
//! # Arithmetic
//! Exact integer arithmetic, no floats. Time is counted in nanoseconds multiplied by
//! `requests` ("scaled" time), so the emission interval `period / requests` is exact: in
//! scaled units one request costs `period` (in ns) and the whole budget is
//! `period × requests`. The largest such product, `Duration::MAX` in ns (≈1.8e28) times
//! `u32::MAX` (≈4.3e9) ≈ 7.9e37, fits a `u128` (≈3.4e38) with room for the sums made here;
//! every operation saturates anyway, so no input panics.
//!
//! Over 500 lines: more than half of it is the unit tests, which pin every decision of the
//! arithmetic above to exact values (tables of steps, rounding, extremes, concurrency).

use std::hash::Hash;
use std::sync::Arc;
#[cfg(test)]
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// A source of time. Injected into [`RateLimiter`] so tests never sleep.
pub trait Clock: Send + Sync {
    /// Monotonic time since an arbitrary, fixed origin; never goes backwards.
    fn now(&self) -> Duration;
    /// Wall-clock time since `UNIX_EPOCH` (for `X-RateLimit-Reset`).
    fn unix_now(&self) -> Duration;
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> Duration {
        (**self).now()
    }

    fn unix_now(&self) -> Duration {
        (**self).unix_now()
    }
}

/// The real clock: [`Instant`] since construction for `now`, [`SystemTime`] for `unix_now`.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A clock whose monotonic origin is the moment of this call.
    pub fn new() -> Self {
        SystemClock {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        // Saturates at zero; never panics.
        self.origin.elapsed()
    }

    fn unix_now(&self) -> Duration {
        // A wall clock set before 1970 reads as the epoch rather than panicking.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
    }
}

/// A clock that moves only when told to, for unit tests.
///
/// `now` starts at zero; `unix_now` starts at the given wall-clock time; [`advance`] moves
/// both together. Share it with a limiter through an `Arc`, or reach it via
/// [`RateLimiter::clock`].
///
/// [`advance`]: ManualClock::advance
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct ManualClock {
    unix_start: Duration,
    elapsed: Mutex<Duration>,
}

#[cfg(test)]
impl ManualClock {
    /// The wall-clock start used by [`Default`]: 2023-11-14T22:13:20Z.
    pub const DEFAULT_UNIX_START: Duration = Duration::from_secs(1_700_000_000);

    /// A clock at monotonic zero whose wall clock reads `unix_start`.
    pub fn new(unix_start: Duration) -> Self {
        ManualClock {
            unix_start,
            elapsed: Mutex::new(Duration::ZERO),
        }
    }

    /// Moves both clocks forward by `by` (saturating at `Duration::MAX`).
    pub fn advance(&self, by: Duration) {
        let mut elapsed = self.elapsed.lock().unwrap_or_else(PoisonError::into_inner);
        *elapsed = elapsed.saturating_add(by);
    }
}

#[cfg(test)]
impl Default for ManualClock {
    fn default() -> Self {
        Self::new(Self::DEFAULT_UNIX_START)
    }
}

#[cfg(test)]
impl Clock for ManualClock {
    fn now(&self) -> Duration {
        *self.elapsed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn unix_now(&self) -> Duration {
        self.unix_start.saturating_add(self.now())
    }
}

/// Why a [`Limit`] is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// `requests` is zero.
    #[error("rate limit requests must be at least 1")]
    ZeroRequests,
    /// `period` is zero.
    #[error("rate limit period must be longer than zero")]
    ZeroPeriod,
}

/// A rate limit: `requests` per `period`, i.e. a bucket of `requests` refilled continuously
/// over `period`.
///
/// Invariants: `requests >= 1` and `period > 0` ([`Limit::new`] and [`Limit::validate`]
/// check them). The limiter never panics on a limit that breaks them: it treats
/// `requests: 0` as 1 and a zero period as one nanosecond, so configuration must refuse
/// such limits before they get here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limit {
    /// Requests allowed per period (the bucket's capacity).
    pub requests: u32,
    /// Time in which a used-up budget refills completely.
    pub period: Duration,
}

impl Limit {
    /// A checked limit.
    pub fn new(requests: u32, period: Duration) -> Result<Self, LimitError> {
        let limit = Limit { requests, period };
        limit.validate()?;
        Ok(limit)
    }

    /// Checks the invariants (`requests >= 1`, `period > 0`).
    pub fn validate(&self) -> Result<(), LimitError> {
        if self.requests == 0 {
            Err(LimitError::ZeroRequests)
        } else if self.period.is_zero() {
            Err(LimitError::ZeroPeriod)
        } else {
            Ok(())
        }
    }

    /// The policy name in the `RateLimit-Policy` and `RateLimit` fields.
    ///
    /// Always `"default"`: each response carries exactly one policy,
    /// the token's own, so the name only has to tie the two fields together, and a constant
    /// name does not tell clients which tokens have overrides.
    pub fn policy_name(&self) -> &'static str {
        "default"
    }
}

/// The outcome of [`RateLimiter::check`] or [`RateLimiter::peek`], with everything the
/// response headers need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed (for `peek`: whether a request now would).
    pub allowed: bool,
    /// Requests per period (the limit's `requests`).
    pub limit: u32,
    /// Whole requests left right now, after this one if it was allowed.
    pub remaining: u32,
    /// `limit - remaining`.
    pub used: u32,
    /// Time until the budget is whole again (zero when it already is).
    pub reset_after: Duration,
    /// Only when refused: time until one request is allowed (never zero).
    pub retry_after: Option<Duration>,
    /// The limit's period.
    pub period: Duration,
}

impl Decision {
    /// Seconds until the budget is whole again, rounded up.
    pub fn reset_after_secs(&self) -> u64 {
        ceil_secs(self.reset_after)
    }

    /// `Retry-After` seconds, rounded up and at least 1; `None` when allowed.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after.map(|d| ceil_secs(d).max(1))
    }

    /// Unix epoch seconds at which the budget is whole again, rounded up, given the wall
    /// clock `unix_now` (see [`Clock::unix_now`]).
    pub fn reset_at(&self, unix_now: Duration) -> u64 {
        let nanos = unix_now
            .as_nanos()
            .saturating_add(self.reset_after.as_nanos());
        u64::try_from(nanos.div_ceil(NANOS_PER_SEC)).unwrap_or(u64::MAX)
    }

    /// The policy window in whole seconds, rounded up and at least 1 (the `w` of
    /// `RateLimit-Policy`).
    pub fn window_secs(&self) -> u64 {
        ceil_secs(self.period).max(1)
    }

    /// The policy name of this decision's limit (see [`Limit::policy_name`]).
    pub fn policy_name(&self) -> &'static str {
        Limit {
            requests: self.limit,
            period: self.period,
        }
        .policy_name()
    }
}

impl Decision {
    /// The decision under `limit` for a bucket whose theoretical arrival time lies `debt`
    /// ahead of now: for limiters that keep the bucket elsewhere (a shared backend) and know
    /// only how far ahead it is.
    pub fn from_debt(limit: &Limit, allowed: bool, debt: Duration) -> Decision {
        let rates = Rates::of(limit);
        rates.decision(
            allowed,
            debt.as_nanos()
                .saturating_mul(rates.requests)
                .min(rates.window.saturating_add(rates.period)),
        )
    }
}

/// Whole seconds in `d`, rounded up (saturating).
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))
}

/// Nanoseconds back to a `Duration`, saturating at `Duration::MAX`.
fn duration_from_nanos(nanos: u128) -> Duration {
    match u64::try_from(nanos / NANOS_PER_SEC) {
        // The remainder is below 1e9, so it fits a u32 and `Duration::new` cannot carry over.
        Ok(secs) => Duration::new(secs, (nanos % NANOS_PER_SEC) as u32),
        Err(_) => Duration::MAX,
    }
}

/// A limit in scaled units (ns × requests), with invalid values clamped.
#[derive(Debug, Clone, Copy)]
struct Rates {
    /// `requests`, at least 1.
    requests: u128,
    /// `period` in ns, at least 1: the cost of one request in scaled units.
    period: u128,
    /// `period × requests`: the whole budget in scaled units.
    window: u128,
}

impl Rates {
    fn of(limit: &Limit) -> Self {
        let requests = u128::from(limit.requests.max(1));
        let period = limit.period.as_nanos().max(1);
        Rates {
            requests,
            period,
            window: period.saturating_mul(requests),
        }
    }

    /// A monotonic instant in scaled units.
    fn scaled(&self, now: Duration) -> u128 {
        now.as_nanos().saturating_mul(self.requests)
    }

    /// Pays for one request if the budget allows; returns the decision.
    fn consume(&self, bucket: &mut Bucket, limit: &Limit, now: u128) -> Decision {
        if bucket.limit != *limit {
            *bucket = Bucket::full(*limit, now);
        }
        let tat = bucket.tat.max(now);
        let after = tat.saturating_add(self.period);
        if after - now <= self.window {
            bucket.tat = after;
            self.decision(true, after - now)
        } else {
            self.decision(false, tat - now)
        }
    }

    /// The decision for a bucket whose TAT lies `debt` (scaled) ahead of now.
    fn decision(&self, allowed: bool, debt: u128) -> Decision {
        let limit = u32::try_from(self.requests).unwrap_or(u32::MAX);
        let remaining = self.window.saturating_sub(debt) / self.period;
        let remaining = u32::try_from(remaining.min(self.requests)).unwrap_or(u32::MAX);
        // Refused: one request fits once the debt is down to `window - period`.
        let retry_after = (!allowed).then(|| {
            let excess = debt.saturating_sub(self.window.saturating_sub(self.period));
            duration_from_nanos(excess.div_ceil(self.requests).max(1))
        });
        Decision {
            allowed,
            limit,
            remaining,
            used: limit.saturating_sub(remaining),
            reset_after: duration_from_nanos(debt.div_ceil(self.requests)),
            retry_after,
            period: duration_from_nanos(self.period),
        }
    }
}

/// One token's state: the limit it was last checked under and its theoretical arrival time
/// (scaled by that limit's `requests`, on the limiter clock's monotonic axis).
#[derive(Debug, Clone, Copy)]
struct Bucket {
    limit: Limit,
    tat: u128,
}

impl Bucket {
    /// A full bucket at scaled instant `now`.
    fn full(limit: Limit, now: u128) -> Self {
        Bucket { limit, tat: now }
    }
}

/// GCRA limiter: one bucket per key (a token id by default, or a client address), in a
/// sharded map.
#[derive(Debug)]
pub struct RateLimiter<C: Clock = SystemClock, K: Eq + Hash = Arc<str>> {
    /// Keyed by ids of known tokens (or addresses); foldhash (seeded per process) rather
    /// than SipHash.
    buckets: DashMap<K, Bucket, foldhash::quality::RandomState>,
    clock: C,
}

impl<K: Eq + Hash + Clone> Default for RateLimiter<SystemClock, K> {
    fn default() -> Self {
        Self::new(SystemClock::new())
    }
}

impl<C: Clock, K: Eq + Hash + Clone> RateLimiter<C, K> {
    /// An empty limiter reading time from `clock`.
    pub fn new(clock: C) -> Self {
        RateLimiter {
            buckets: DashMap::default(),
            clock,
        }
    }

    /// The injected clock (for its wall-clock time, and for tests to advance a manual one).
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// Decides one request of token `id` under `limit`, consuming one unit of budget if it
    /// is allowed; a refused request consumes nothing.
    pub fn check(&self, id: &K, limit: &Limit) -> Decision {
        let rates = Rates::of(limit);
        let now = rates.scaled(self.clock.now());
        // The common case, a known token, neither clones the id nor takes the entry path.
        if let Some(mut bucket) = self.buckets.get_mut(id) {
            return rates.consume(&mut bucket, limit, now);
        }
        let mut bucket = self
            .buckets
            .entry(id.clone())
            .or_insert_with(|| Bucket::full(*limit, now));
        rates.consume(&mut bucket, limit, now)
    }

    /// Drops the buckets that are full again: they behave exactly like absent ones, so this
    /// changes no decision and bounds memory to recently active tokens.
    pub fn remove_full(&self) {
        let now = self.clock.now();
        self.buckets
            .retain(|_, bucket| bucket.tat > Rates::of(&bucket.limit).scaled(now));
    }

    /// Number of tokens with state.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// True if no token has state.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

impl<C: Clock> RateLimiter<C> {
    /// The state of token `id` under `limit` without consuming anything (for whoami).
    /// `allowed` says whether a request now would be allowed. Creates no state.
    pub fn peek(&self, id: &str, limit: &Limit) -> Decision {
        let rates = Rates::of(limit);
        let now = rates.scaled(self.clock.now());
        let debt = match self.buckets.get(id) {
            Some(bucket) if bucket.limit == *limit => bucket.tat.saturating_sub(now),
            // Unknown token, or a changed limit (which `check` would reset): full.
            _ => 0,
        };
        let allowed = debt.saturating_add(rates.period) <= rates.window;
        rates.decision(allowed, debt)
    }

    /// Keeps only the buckets whose token id satisfies `keep` (drops deleted tokens).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.buckets.retain(|id, _| keep(id));
    }
}

/// Fixtures shared by the limiter's tests and the rate-limit header tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    pub const SEC: Duration = Duration::from_secs(1);
    pub const MS: Duration = Duration::from_millis(1);
    /// 1_700_000_000.25: a fractional start, so rounding up is visible in Reset.
    pub const UNIX_START: Duration = Duration::new(1_700_000_000, 250_000_000);
    pub const T0: u64 = 1_700_000_000;

    pub fn per_minute(requests: u32) -> Limit {
        Limit::new(requests, Duration::from_secs(60)).unwrap()
    }

    pub fn limiter() -> RateLimiter<ManualClock> {
        RateLimiter::new(ManualClock::new(UNIX_START))
    }

    pub fn id(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    /// Limits at the edges (validation refuses some of them; the math must not panic on any):
    /// the first is the largest, the second one request per the longest period, the fifth
    /// zero requests in zero time.
    pub const EXTREME_LIMITS: [Limit; 6] = [
        Limit {
            requests: u32::MAX,
            period: Duration::MAX,
        },
        Limit {
            requests: 1,
            period: Duration::MAX,
        },
        Limit {
            requests: u32::MAX,
            period: Duration::from_nanos(1),
        },
        Limit {
            requests: u32::MAX,
            period: Duration::from_secs(u64::MAX),
        },
        Limit {
            requests: 0,
            period: Duration::ZERO,
        },
        Limit {
            requests: 0,
            period: Duration::MAX,
        },
    ];
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn first_request() {
        let l = limiter();
        let d = l.check(&id("a"), &per_minute(5));
        assert_eq!(
            d,
            Decision {
                allowed: true,
                limit: 5,
                remaining: 4,
                used: 1,
                reset_after: 12 * SEC,
                retry_after: None,
                period: 60 * SEC,
            }
        );
        // 1_700_000_012.25 rounded up
        assert_eq!(d.reset_at(l.clock().unix_now()), T0 + 13);
        assert_eq!((d.reset_after_secs(), d.window_secs()), (12, 60));
        assert_eq!(d.retry_after_secs(), None);
    }

    #[test]
    fn mid_budget() {
        let l = limiter();
        let a = id("a");
        l.check(&a, &per_minute(5));
        l.clock().advance(3 * SEC);
        // 1 used, 3 s refilled a quarter of it, then one more: 1.75 owed → 21 s to whole.
        let d = l.check(&a, &per_minute(5));
        assert_eq!((d.allowed, d.remaining, d.used), (true, 3, 2));
        assert_eq!(d.reset_after, 21 * SEC);
        // 1_700_000_003.25 + 21 rounded up
        assert_eq!(d.reset_at(l.clock().unix_now()), T0 + 25);
    }

    #[test]
    fn exhaustion_table() {
        // (advance before, allowed, remaining, used, reset_after, retry_after)
        type Step = (Duration, bool, u32, u32, Duration, Option<Duration>);
        let steps: &[Step] = &[
            (Duration::ZERO, true, 4, 1, 12 * SEC, None),
            (Duration::ZERO, true, 3, 2, 24 * SEC, None),
            (Duration::ZERO, true, 2, 3, 36 * SEC, None),
            (Duration::ZERO, true, 1, 4, 48 * SEC, None),
            (Duration::ZERO, true, 0, 5, 60 * SEC, None),
            (Duration::ZERO, false, 0, 5, 60 * SEC, Some(12 * SEC)),
            // refused requests consume nothing: the wait only shrinks
            (Duration::ZERO, false, 0, 5, 60 * SEC, Some(12 * SEC)),
            (5 * SEC, false, 0, 5, 55 * SEC, Some(7 * SEC)),
            (6999 * MS, false, 0, 5, 48001 * MS, Some(MS)),
            // exactly one refilled, exactly one allowed
            (MS, true, 0, 5, 60 * SEC, None),
            (Duration::ZERO, false, 0, 5, 60 * SEC, Some(12 * SEC)),
        ];
        let l = limiter();
        let a = id("a");
        for (i, &(advance, allowed, remaining, used, reset_after, retry_after)) in
            steps.iter().enumerate()
        {
            l.clock().advance(advance);
            let d = l.check(&a, &per_minute(5));
            let want = Decision {
                allowed,
                limit: 5,
                remaining,
                used,
                reset_after,
                retry_after,
                period: 60 * SEC,
            };
            assert_eq!(d, want, "step {i}");
        }
    }

    #[test]
    fn refused_decision() {
        let l = limiter();
        let a = id("a");
        for _ in 0..5 {
            assert!(l.check(&a, &per_minute(5)).allowed);
        }
        let d = l.check(&a, &per_minute(5));
        assert!(!d.allowed);
        assert_eq!(d.retry_after_secs(), Some(12));
        assert_eq!(d.reset_at(l.clock().unix_now()), T0 + 61);
        assert_eq!(d.reset_after_secs(), 60);
        // A sub-second wait still says 1.
        l.clock().advance(11_500 * MS);
        let d = l.check(&a, &per_minute(5));
        assert_eq!(d.retry_after, Some(500 * MS));
        assert_eq!(d.retry_after_secs(), Some(1));
    }

    #[test]
    fn partial_refill() {
        let l = limiter();
        let a = id("a");
        for _ in 0..5 {
            l.check(&a, &per_minute(5));
        }
        // 30 s refill 2.5 requests: 2 whole ones are available.
        l.clock().advance(30 * SEC);
        let p = l.peek(&a, &per_minute(5));
        assert_eq!((p.allowed, p.remaining, p.used), (true, 2, 3));
        assert_eq!((p.reset_after, p.retry_after), (30 * SEC, None));
        assert_eq!(l.check(&a, &per_minute(5)).remaining, 1);
        assert_eq!(l.check(&a, &per_minute(5)).remaining, 0);
        let d = l.check(&a, &per_minute(5));
        assert!(!d.allowed);
        // 0.5 of a request was already refilled: 6 s to the next one.
        assert_eq!(d.retry_after, Some(6 * SEC));
    }

    #[test]
    fn full_refill_and_reset_arithmetic() {
        let l = limiter();
        let a = id("a");
        for _ in 0..5 {
            l.check(&a, &per_minute(5));
        }
        let d = l.peek(&a, &per_minute(5));
        assert_eq!(d.reset_at(l.clock().unix_now()), T0 + 61);
        l.clock().advance(59 * SEC);
        let d = l.peek(&a, &per_minute(5));
        assert_eq!((d.remaining, d.reset_after), (4, SEC));
        assert_eq!(d.reset_at(l.clock().unix_now()), T0 + 61);
        l.clock().advance(SEC);
        let d = l.peek(&a, &per_minute(5));
        assert_eq!((d.remaining, d.used, d.reset_after), (5, 0, Duration::ZERO));
        // Whole already: Reset is now, rounded up.
        assert_eq!(d.reset_at(l.clock().unix_now()), T0 + 61);
        // Waiting longer banks nothing beyond the capacity.
        l.clock().advance(3600 * SEC);
        for want in (0..5).rev() {
            assert_eq!(l.check(&a, &per_minute(5)).remaining, want);
        }
        assert!(!l.check(&a, &per_minute(5)).allowed);
    }

    #[test]
    fn reset_at_rounding_table() {
        let cases: &[(Duration, Duration, u64)] = &[
            (Duration::ZERO, Duration::ZERO, 0),
            (Duration::new(10, 0), Duration::ZERO, 10),
            (Duration::new(10, 1), Duration::ZERO, 11),
            (Duration::new(10, 0), Duration::new(2, 0), 12),
            (
                Duration::new(10, 500_000_000),
                Duration::new(1, 500_000_000),
                12,
            ),
            (
                Duration::new(10, 500_000_000),
                Duration::new(1, 500_000_001),
                13,
            ),
            (Duration::MAX, Duration::MAX, u64::MAX),
        ];
        for &(now, reset_after, want) in cases {
            let d = Decision {
                allowed: true,
                limit: 1,
                remaining: 1,
                used: 0,
                reset_after,
                retry_after: None,
                period: SEC,
            };
            assert_eq!(d.reset_at(now), want, "{now:?} + {reset_after:?}");
        }
        let secs: &[(Duration, u64)] = &[
            (Duration::ZERO, 0),
            (Duration::from_nanos(1), 1),
            (SEC, 1),
            (SEC + MS, 2),
            (Duration::MAX, u64::MAX),
        ];
        for &(d, want) in secs {
            assert_eq!(ceil_secs(d), want, "{d:?}");
        }
    }

    #[test]
    fn uneven_interval_is_exact() {
        // 7 per minute: one every 8.571428571428… s, which no whole ns represents.
        let l = limiter();
        let a = id("a");
        let seven = per_minute(7);
        for _ in 0..7 {
            assert!(l.check(&a, &seven).allowed);
        }
        let d = l.check(&a, &seven);
        assert_eq!(d.retry_after, Some(Duration::from_nanos(8_571_428_572)));
        assert_eq!(d.retry_after_secs(), Some(9));
        l.clock().advance(Duration::from_nanos(8_571_428_571));
        assert!(!l.check(&a, &seven).allowed);
        l.clock().advance(Duration::from_nanos(1));
        assert!(l.check(&a, &seven).allowed);
        assert!(!l.check(&a, &seven).allowed);
        // Over many intervals no rounding error accumulates: 7 × 100 refills in 100 minutes.
        l.clock().advance(6000 * SEC);
        let mut allowed = 0;
        for _ in 0..10 {
            allowed += u32::from(l.check(&a, &seven).allowed);
        }
        assert_eq!(allowed, 7);
    }

    #[test]
    fn tokens_are_independent() {
        let l = limiter();
        let (a, b) = (id("a"), id("b"));
        for _ in 0..5 {
            l.check(&a, &per_minute(5));
        }
        assert!(!l.check(&a, &per_minute(5)).allowed);
        let d = l.check(&b, &per_minute(5));
        assert_eq!((d.allowed, d.remaining), (true, 4));
        // A different Arc with the same text is the same token.
        assert!(!l.check(&id("a"), &per_minute(5)).allowed);
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn limit_change_resets() {
        let l = limiter();
        let a = id("a");
        for _ in 0..5 {
            l.check(&a, &per_minute(5));
        }
        assert!(!l.check(&a, &per_minute(5)).allowed);
        // peek under the new limit already shows it full, and changes nothing
        let p = l.peek(&a, &per_minute(3));
        assert_eq!((p.allowed, p.remaining, p.limit), (true, 3, 3));
        let d = l.check(&a, &per_minute(3));
        assert_eq!((d.allowed, d.remaining, d.limit), (true, 2, 3));
        // A different period with the same count is a change too.
        let hourly = Limit::new(3, 3600 * SEC).unwrap();
        let d = l.check(&a, &hourly);
        assert_eq!((d.remaining, d.reset_after), (2, 1200 * SEC));
        // Going back resets again rather than restoring the old state.
        assert_eq!(l.check(&a, &per_minute(5)).remaining, 4);
    }

    #[test]
    fn peek_consumes_nothing() {
        let l = limiter();
        let a = id("a");
        let p = l.peek(&a, &per_minute(5));
        assert_eq!(
            p,
            Decision {
                allowed: true,
                limit: 5,
                remaining: 5,
                used: 0,
                reset_after: Duration::ZERO,
                retry_after: None,
                period: 60 * SEC,
            }
        );
        assert!(l.is_empty(), "peek creates no state");
        for _ in 0..3 {
            l.check(&a, &per_minute(5));
        }
        for _ in 0..10 {
            assert_eq!(l.peek(&a, &per_minute(5)).remaining, 2);
        }
        l.check(&a, &per_minute(5));
        l.check(&a, &per_minute(5));
        let p = l.peek(&a, &per_minute(5));
        assert_eq!((p.allowed, p.retry_after), (false, Some(12 * SEC)));
        assert_eq!(p.retry_after_secs(), Some(12));
    }

    #[test]
    fn retain_and_remove_full_drop_state() {
        let l = limiter();
        for name in ["a", "b", "c"] {
            l.check(&id(name), &per_minute(5));
        }
        assert_eq!(l.len(), 3);
        l.retain(|id| id != "b");
        assert_eq!(l.len(), 2);
        assert_eq!(l.peek("b", &per_minute(5)).remaining, 5);
        assert_eq!(l.peek("a", &per_minute(5)).remaining, 4);

        l.clock().advance(6 * SEC);
        l.check(&id("c"), &per_minute(5));
        l.clock().advance(6 * SEC);
        // "a" is whole again (12 s after one request); "c" still owes.
        l.remove_full();
        assert_eq!(l.len(), 1);
        assert_eq!(l.peek("c", &per_minute(5)).remaining, 4);
        l.retain(|_| false);
        assert!(l.is_empty());
    }

    #[test]
    fn huge_and_invalid_values_do_not_panic() {
        let limits = EXTREME_LIMITS;
        for start in [Duration::ZERO, Duration::MAX] {
            let l = RateLimiter::new(ManualClock::new(start));
            for advance in [Duration::ZERO, SEC, Duration::MAX, Duration::MAX] {
                l.clock().advance(advance);
                for (i, limit) in limits.iter().enumerate() {
                    let key = id(&i.to_string());
                    for _ in 0..3 {
                        let d = l.check(&key, limit);
                        assert_eq!(d.used, d.limit - d.remaining);
                        let p = l.peek(&key, limit);
                        for d in [d, p] {
                            let _ = d.reset_at(l.clock().unix_now());
                            let _ = (d.reset_after_secs(), d.retry_after_secs());
                            assert!(d.window_secs() >= 1);
                        }
                    }
                }
                l.remove_full();
            }
        }
        // Exact values at the extremes.
        let l = limiter();
        let d = l.check(&id("max"), &limits[0]);
        assert_eq!((d.allowed, d.remaining, d.used), (true, u32::MAX - 1, 1));
        assert_eq!((d.limit, d.window_secs()), (u32::MAX, u64::MAX));
        let d = l.check(&id("one"), &limits[1]);
        assert_eq!((d.remaining, d.reset_after), (0, Duration::MAX));
        assert_eq!(d.reset_at(l.clock().unix_now()), u64::MAX);
        let d = l.check(&id("one"), &limits[1]);
        assert_eq!(d.retry_after, Some(Duration::MAX));
        assert_eq!(d.retry_after_secs(), Some(u64::MAX));
        // requests: 0 behaves as 1, a zero period as 1 ns.
        let d = l.check(&id("zero"), &limits[4]);
        assert_eq!(
            (d.allowed, d.limit, d.period),
            (true, 1, Duration::from_nanos(1))
        );
        assert_eq!(d.window_secs(), 1);
    }

    #[test]
    fn limit_validation_table() {
        let cases: &[(u32, Duration, Result<(), LimitError>)] = &[
            (1, SEC, Ok(())),
            (u32::MAX, Duration::MAX, Ok(())),
            (5, Duration::from_nanos(1), Ok(())),
            (0, SEC, Err(LimitError::ZeroRequests)),
            (5, Duration::ZERO, Err(LimitError::ZeroPeriod)),
            (0, Duration::ZERO, Err(LimitError::ZeroRequests)),
        ];
        for &(requests, period, want) in cases {
            assert_eq!(
                Limit::new(requests, period).map(|_| ()),
                want,
                "{requests}/{period:?}"
            );
        }
        assert_eq!(per_minute(5).policy_name(), "default");
    }

    #[test]
    fn policy_window_rounds_up() {
        let l = limiter();
        let cases: &[(Duration, u64)] = &[(3600 * SEC, 3600), (1500 * MS, 2), (MS, 1)];
        for &(period, want) in cases {
            let d = l.check(&id("w"), &Limit::new(2, period).unwrap());
            assert_eq!((d.window_secs(), d.policy_name()), (want, "default"));
        }
    }

    #[test]
    fn concurrent_checks_allow_exactly_the_limit() {
        let l = limiter();
        let limit = Limit::new(50, 3600 * SEC).unwrap();
        let threads = 8;
        let per_thread = 100;
        let allowed: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        let key = id("shared");
                        (0..per_thread)
                            .filter(|_| l.check(&key, &limit).allowed)
                            .count()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(allowed, 50);
        let d = l.peek("shared", &limit);
        assert_eq!((d.remaining, d.used), (0, 50));
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn arc_clock_is_shared() {
        let clock = Arc::new(ManualClock::default());
        let l = RateLimiter::new(Arc::clone(&clock));
        let a = id("a");
        l.check(&a, &per_minute(1));
        assert!(!l.check(&a, &per_minute(1)).allowed);
        clock.advance(60 * SEC);
        assert!(l.check(&a, &per_minute(1)).allowed);
        assert_eq!(
            l.clock().unix_now(),
            ManualClock::DEFAULT_UNIX_START + 60 * SEC
        );
    }

    #[test]
    fn system_clock_reads_sensibly() {
        let c = SystemClock::new();
        let (a, b) = (c.now(), c.now());
        assert!(b >= a);
        assert!(c.unix_now() > Duration::from_secs(1_600_000_000));
        let l = RateLimiter::default();
        assert!(l.check(&id("a"), &per_minute(5)).allowed);
    }
}
