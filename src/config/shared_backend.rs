//! `rate_limit.backend` and its companions: the Redis server that replicas share their rate
//! limits and quotas on. Pure text: connecting is the `shared` module's.

use std::fmt;
use std::time::Duration;

use serde_yaml_ng::Value;

use super::fields::{as_duration, as_string, Section};
use super::redact_url;
use crate::token::RateLimitRule;

/// What a replica does while the shared backend cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnBackendError {
    /// Fall back to the in-process limiter (each replica then has the whole budget).
    Local,
    /// Refuse limited requests with 429 `rate_limit_unavailable`.
    Deny,
}

/// A backend URL; `Debug` and `Display` hide its password.
#[derive(Clone, PartialEq, Eq)]
pub struct BackendUrl(String);

impl BackendUrl {
    /// The URL with its password, to connect with. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for BackendUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", redact_url(&self.0))
    }
}

impl fmt::Display for BackendUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

/// The shared rate-limit backend (`rate_limit.backend` and the fields beside it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedBackendConfig {
    /// `redis://[user:password@]host:port/db` or `rediss://…` (TLS).
    pub url: BackendUrl,
    /// What to do while Redis cannot be reached.
    pub on_error: OnBackendError,
    /// Largest slice of a token's budget one replica leases at once (it is also at most 5 %
    /// of the token's limit, and at least 1).
    pub lease_max: u32,
    /// Longest a request waits for Redis.
    pub timeout: Duration,
    /// Prefix of every key Tollgate writes (several deployments may share one Redis).
    pub key_prefix: String,
}

/// Takes the backend fields of the `rate_limit` section (`None` without `backend`).
pub(super) fn take_backend(r: &mut Section<'_>) -> Option<SharedBackendConfig> {
    let url = r.take_with("backend", None, |v| {
        let s = as_string(v)?;
        let s = s.trim();
        if s.is_empty() {
            return Ok(None);
        }
        if !(s.starts_with("redis://") || s.starts_with("rediss://")) {
            return Err(format!(
                "{:?} is not redis://HOST:PORT/DB or rediss://…",
                redact_url(s)
            ));
        }
        if s.len() > 2048 {
            return Err("longer than 2048 characters".into());
        }
        Ok(Some(BackendUrl(s.to_string())))
    });
    let on_error = r.take_with(
        "on_backend_error",
        OnBackendError::Local,
        |v| match as_string(v)?.trim() {
            "local" => Ok(OnBackendError::Local),
            "deny" => Ok(OnBackendError::Deny),
            other => Err(format!("{other:?} is not local or deny")),
        },
    );
    let lease_max = r.take_with("lease", 100u32, |v| {
        let n: u64 = serde_yaml_ng::from_value(v).map_err(|e| e.to_string())?;
        match n {
            1..=10_000 => Ok(n as u32),
            _ => Err("must be between 1 and 10000".into()),
        }
    });
    let timeout = r.take_with(
        "backend_timeout",
        Duration::from_millis(50),
        |v| match as_duration(v)? {
            t if t < Duration::from_millis(1) || t > Duration::from_secs(5) => {
                Err("must be between 1ms and 5s".into())
            }
            t => Ok(t),
        },
    );
    let key_prefix = r.take_with("key_prefix", "tollgate:".to_string(), |v: Value| {
        let s = as_string(v)?;
        if s.len() > 64 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("at most 64 characters, no spaces".into());
        }
        Ok(s)
    });
    url.map(|url| SharedBackendConfig {
        url,
        on_error,
        lease_max,
        timeout,
        key_prefix,
    })
}

/// The keys of `rate_limit` that configure the backend rather than the default limit.
pub(super) const BACKEND_KEYS: [&str; 5] = [
    "backend",
    "on_backend_error",
    "lease",
    "backend_timeout",
    "key_prefix",
];

/// The default per-token limit and the shared backend, both in `rate_limit`: `unlimited`, or
/// `{requests, period}`, beside which (or instead of which, keeping the default limit)
/// `backend: redis://…` and its companions may stand.
pub(super) fn take_rate_limit(
    s: &mut Section<'_>,
    default: RateLimitRule,
) -> (RateLimitRule, Option<SharedBackendConfig>) {
    let has_backend_keys = match s.peek("rate_limit") {
        Some(Value::Mapping(m)) => BACKEND_KEYS.iter().any(|k| m.contains_key(*k)),
        _ => false,
    };
    if !has_backend_keys {
        return (super::sections::take_rule(s, "rate_limit", default), None);
    }
    s.section("rate_limit", |r| {
        let backend = take_backend(r);
        (super::sections::rule_fields(r, default, true), backend)
    })
}
