//! Per-token rate limits as the proxy applies them: which limit a token has (its own, or the
//! configured default) and the GCRA state of recently active tokens; and the limit of
//! anonymous requests to public paths, per client address.
//!
//! Nothing here runs on a timer of its own: the application calls [`TokenLimits::maintain`]
//! every few seconds on the control plane to forget state that no longer decides anything.

use std::net::{IpAddr, Ipv6Addr};

use crate::config::Config;
use crate::ratelimit::{Decision, Limit, RateLimiter};
use crate::store::Snapshot;
use crate::token::{RateLimitRule, Token};

/// The rate-limit state of every token, owned by the proxy.
#[derive(Debug)]
pub struct TokenLimits {
    limiter: RateLimiter,
    default_limit: RateLimitRule,
    /// The limit of anonymous requests and their state per client address (`None`:
    /// unlimited).
    anonymous: Option<(Limit, RateLimiter<crate::ratelimit::SystemClock, IpAddr>)>,
}

impl TokenLimits {
    /// Empty state under the configured default limit and anonymous limit.
    pub fn new(config: &Config) -> Self {
        let mut limits = Self::with_default(config.rate_limit);
        if let RateLimitRule::Limited { requests, period } = config.public_rate_limit {
            limits.anonymous = Some((Limit { requests, period }, RateLimiter::default()));
        }
        limits
    }

    /// Empty state under `default_limit` (for tokens without a limit of their own); anonymous
    /// requests unlimited.
    pub fn with_default(default_limit: RateLimitRule) -> Self {
        TokenLimits {
            limiter: RateLimiter::default(),
            default_limit,
            anonymous: None,
        }
    }

    /// Counts one anonymous request from `client` (`None` when unlimited). Addresses share a
    /// budget as the verification budgets do: IPv4 (and IPv4-mapped IPv6) by address, IPv6 by
    /// its /64; an unknown address shares one budget with every other unknown one.
    pub fn check_anonymous(&self, client: Option<IpAddr>) -> Option<Decision> {
        let (limit, limiter) = self.anonymous.as_ref()?;
        Some(limiter.check(&anonymous_key(client), limit))
    }

    /// The limit that applies to `token`, or `None` when it is unlimited.
    pub fn limit_of(&self, token: &Token) -> Option<Limit> {
        match token.rate_limit.unwrap_or(self.default_limit) {
            RateLimitRule::Unlimited => None,
            RateLimitRule::Limited { requests, period } => Some(Limit { requests, period }),
        }
    }

    /// Counts one request of `token` against its limit (`None` when unlimited).
    pub fn check(&self, token: &Token) -> Option<Decision> {
        self.limit_of(token)
            .map(|limit| self.limiter.check(&token.id, &limit))
    }

    /// The current rate-limit state of `token` without counting a request.
    pub fn peek(&self, token: &Token) -> Option<Decision> {
        self.limit_of(token)
            .map(|limit| self.limiter.peek(&token.id, &limit))
    }

    /// Forgets the state of tokens no longer in `current` (deleted or revoked) and every
    /// budget that is full again (it behaves exactly like an absent one). Bounds memory to
    /// recently active tokens; called from the control plane, never on the request path.
    pub fn maintain(&self, current: &Snapshot) {
        self.limiter.retain(|id| current.by_id(id).is_some());
        self.limiter.remove_full();
        if let Some((_, anonymous)) = &self.anonymous {
            anonymous.remove_full();
        }
    }

    /// Number of tokens with state.
    pub fn tracked(&self) -> usize {
        self.limiter.len()
    }
}

/// The budget an address spends: see [`TokenLimits::check_anonymous`].
fn anonymous_key(client: Option<IpAddr>) -> IpAddr {
    match client {
        None => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        Some(v4) => v4,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn token(id: &str, rate_limit: Option<RateLimitRule>) -> Token {
        Token {
            rate_limit,
            ..Token::for_tests(id, &format!("n{id}"))
        }
    }

    fn per_hour(requests: u32) -> RateLimitRule {
        RateLimitRule::Limited {
            requests,
            period: Duration::from_secs(3600),
        }
    }

    #[test]
    fn a_token_limit_overrides_the_default() {
        let limits = TokenLimits::with_default(per_hour(5));
        let plain = token("AAAAAAAAAAAA", None);
        let own = token("BBBBBBBBBBBB", Some(per_hour(2)));
        let free = token("CCCCCCCCCCCC", Some(RateLimitRule::Unlimited));
        assert_eq!(limits.limit_of(&plain).map(|l| l.requests), Some(5));
        assert_eq!(limits.limit_of(&own).map(|l| l.requests), Some(2));
        assert_eq!(limits.limit_of(&free), None);
        assert_eq!(limits.check(&free), None);
        assert_eq!(limits.peek(&free), None);
        assert!(limits.check(&own).is_some_and(|d| d.allowed));
        assert!(limits.check(&own).is_some_and(|d| d.allowed));
        assert!(limits.check(&own).is_some_and(|d| !d.allowed));
        // peek counts nothing
        assert_eq!(limits.peek(&plain).map(|d| d.remaining), Some(5));
        assert_eq!(limits.peek(&plain).map(|d| d.remaining), Some(5));
        let unlimited = TokenLimits::with_default(RateLimitRule::Unlimited);
        assert_eq!(unlimited.check(&plain), None);
        assert_eq!(unlimited.tracked(), 0);
    }

    #[test]
    fn anonymous_requests_are_limited_per_address() {
        let mut limits = TokenLimits::with_default(RateLimitRule::Unlimited);
        assert_eq!(limits.check_anonymous(None), None);
        limits.anonymous = Some((
            Limit {
                requests: 1,
                period: Duration::from_secs(3600),
            },
            RateLimiter::default(),
        ));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(limits.check_anonymous(Some(a)).is_some_and(|d| d.allowed));
        assert!(limits.check_anonymous(Some(a)).is_some_and(|d| !d.allowed));
        assert!(limits.check_anonymous(Some(b)).is_some_and(|d| d.allowed));
        // The same address mapped into IPv6, and one /64, share a budget.
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert!(limits
            .check_anonymous(Some(mapped))
            .is_some_and(|d| !d.allowed));
        let v6a: IpAddr = "2001:db8::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8::2".parse().unwrap();
        assert!(limits.check_anonymous(Some(v6a)).is_some_and(|d| d.allowed));
        assert!(limits
            .check_anonymous(Some(v6b))
            .is_some_and(|d| !d.allowed));
    }

    #[test]
    fn maintain_forgets_removed_tokens_and_full_budgets() {
        let limits = TokenLimits::with_default(per_hour(5));
        let kept = token("AAAAAAAAAAAA", None);
        let gone = token("BBBBBBBBBBBB", None);
        limits.check(&kept);
        limits.check(&gone);
        assert_eq!(limits.tracked(), 2);
        let current = Snapshot::build(vec![kept.clone()], 2).expect("a valid snapshot");
        limits.maintain(&current);
        assert_eq!(limits.tracked(), 1);
        assert_eq!(limits.peek(&kept).map(|d| d.remaining), Some(4));
        assert_eq!(limits.peek(&gone).map(|d| d.remaining), Some(5));

        // A budget that is whole again is forgotten even for a current token.
        let fast = TokenLimits::with_default(RateLimitRule::Limited {
            requests: 1,
            period: Duration::from_millis(1),
        });
        fast.check(&kept);
        std::thread::sleep(Duration::from_millis(5));
        fast.maintain(&current);
        assert_eq!(fast.tracked(), 0);
    }
}
