//! The token record as the proxy sees it, whatever its source.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{PhcHash, RoutePattern};

/// What a valid token name is made of, as said in refusals.
pub const NAME_RULE: &str = "1-64 letters, digits, '-', '_', '.' or '@'";

/// True if `name` is usable as a token name (and thus as a Basic username): see [`NAME_RULE`].
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
}

/// What a token may do. Ordered: `Read < Write < Manager`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// GET, HEAD, OPTIONS.
    Read,
    /// Read plus PUT, POST, PATCH, DELETE.
    Write,
    /// Every method, and the admin API.
    Manager,
}

impl Permission {
    /// The lowercase name used in files, JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Manager => "manager",
        }
    }
}

/// The access a route grants: `write` implies `read`; `none` refuses the route's paths.
///
/// A `none` route is a deny rule: a path it matches is refused whatever the token's other
/// routes grant, in any order. Deny rules subtract from what the token's other routes grant, or
/// from its whole permission when it has no other routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Nothing: the route's paths are refused (a deny rule).
    None,
    /// Read methods only.
    Read,
    /// Read and write methods.
    Write,
}

impl Access {
    /// The permission level this access grants; `None` for a deny rule.
    pub fn as_permission(self) -> Option<Permission> {
        match self {
            Access::None => None,
            Access::Read => Some(Permission::Read),
            Access::Write => Some(Permission::Write),
        }
    }

    /// True for a deny rule (`none`).
    pub fn is_deny(self) -> bool {
        self == Access::None
    }

    /// The lowercase name used in files, JSON and the CLI (`none`, `read`, `write`).
    pub fn as_str(self) -> &'static str {
        match self {
            Access::None => "none",
            Access::Read => "read",
            Access::Write => "write",
        }
    }
}

/// A route rule: a path pattern and the access it grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The compiled pattern (its source text is `pattern.as_str()`).
    pub pattern: RoutePattern,
    /// The access granted under the pattern.
    pub access: Access,
}

/// Where a token record came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A YAML token file (its path).
    File(Arc<str>),
    /// The token database (admin API, CLI).
    Database,
    /// `--bootstrap-token` / `TOLLGATE_BOOTSTRAP_TOKEN`: in memory only.
    Bootstrap,
    /// Minted by a trusted-publishing exchange (kept in the token database, short-lived).
    Oidc(Arc<OidcOrigin>),
}

/// Where a minted token came from: the trust policy and the CI job's identity (from its
/// verified OIDC token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OidcOrigin {
    /// The trust policy that allowed the exchange.
    pub policy: String,
    /// The job token's issuer.
    pub issuer: String,
    /// The job token's `sub`.
    pub subject: String,
    /// The job token's `repository` (GitHub) or `project_path` (GitLab), when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// The job token's `run_id` (GitHub) or `pipeline_id` (GitLab), when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
}

impl Source {
    /// The kind of source, as used in the API and metrics (`file`, `database`, `bootstrap`).
    pub fn kind(&self) -> &'static str {
        match self {
            Source::File(_) => "file",
            Source::Database => "database",
            Source::Bootstrap => "bootstrap",
            Source::Oidc(_) => "oidc",
        }
    }

    /// Where exactly: the file path, or the kind.
    pub fn describe(&self) -> String {
        match self {
            Source::File(p) => p.to_string(),
            Source::Oidc(o) => format!("oidc policy {}", o.policy),
            other => other.kind().to_string(),
        }
    }
}

/// A token's own rate limit, overriding the configured default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitRule {
    /// No limit.
    Unlimited,
    /// `requests` per `period`.
    Limited {
        /// Requests allowed per period (at least 1).
        requests: u32,
        /// The period (at least 1 s).
        period: Duration,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum RuleRepr {
    Word(String),
    Map { requests: u32, period: PeriodRepr },
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum PeriodRepr {
    Secs(u64),
    Text(String),
}

impl RateLimitRule {
    /// Checks the ranges: at least one request, a period of 1 s to 366 days.
    pub fn validate(self) -> Result<Self, String> {
        match self {
            RateLimitRule::Limited { requests, period } => {
                if requests == 0 {
                    return Err("rate_limit.requests must be at least 1".into());
                }
                if period < Duration::from_secs(1) || period > Duration::from_secs(366 * 86400) {
                    return Err("rate_limit.period must be between 1s and 366d".into());
                }
                Ok(self)
            }
            RateLimitRule::Unlimited => Ok(self),
        }
    }
}

impl Serialize for RateLimitRule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            RateLimitRule::Unlimited => RuleRepr::Word("unlimited".into()),
            RateLimitRule::Limited { requests, period } => RuleRepr::Map {
                requests: *requests,
                period: PeriodRepr::Text(humantime::format_duration(*period).to_string()),
            },
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for RateLimitRule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let rule = match RuleRepr::deserialize(d).map_err(|_| {
            D::Error::custom("rate_limit must be \"unlimited\" or {requests: N, period: 1h}")
        })? {
            RuleRepr::Word(w) if w == "unlimited" => RateLimitRule::Unlimited,
            RuleRepr::Word(w) => {
                return Err(D::Error::custom(format!(
                    "rate_limit {w:?} is not \"unlimited\" or {{requests: N, period: 1h}}"
                )))
            }
            RuleRepr::Map { requests, period } => RateLimitRule::Limited {
                requests,
                period: match period {
                    PeriodRepr::Secs(s) => Duration::from_secs(s),
                    PeriodRepr::Text(t) => humantime::parse_duration(&t)
                        .map_err(|e| D::Error::custom(format!("rate_limit.period {t:?}: {e}")))?,
                },
            },
        };
        rule.validate().map_err(D::Error::custom)
    }
}

/// One token. The secret is never here, only its argon2id hash.
#[derive(Debug, Clone)]
pub struct Token {
    /// Public id (12 base62 characters).
    pub id: Arc<str>,
    /// Unique name; also the Basic username for custom-secret tokens.
    pub name: Arc<str>,
    /// Free text.
    pub description: Option<String>,
    /// argon2id PHC hash of the full token (or of the custom secret).
    pub hash: PhcHash,
    /// What the token may do.
    pub permission: Permission,
    /// Route rules narrowing the permission; no allow rule (`read`/`write`) means every path,
    /// less the paths of the deny rules (`none`).
    pub routes: Vec<Route>,
    /// When the token was made, if known.
    pub created_at: Option<DateTime<Utc>>,
    /// When the token stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// Own rate limit; `None` means the configured default.
    pub rate_limit: Option<RateLimitRule>,
    /// Refused (after its secret verifies) until enabled again; keeps its id, secret and
    /// history meanwhile.
    pub disabled: bool,
    /// The client networks the token may be used from (empty: any). Checked after the secret
    /// verifies, like `disabled`.
    pub allowed_ips: super::AllowedIps,
    /// The secret this one replaced, still accepted until its deadline (a regeneration with
    /// an overlap); `None` when there is none.
    pub previous: Option<PreviousSecret>,
    /// The packages the token may touch (empty: every package), matched per ecosystem under
    /// `upstream.layouts`; combined with `permission` and `routes` (all must allow).
    pub packages: crate::scope::PackagePatterns,
    /// Changes whenever the secret or the rights change; cached verifications of another
    /// generation do not count.
    pub generation: u64,
    /// Where the record came from.
    pub source: Source,
}

/// The secret a regeneration with an overlap replaced: accepted until `valid_until` (or,
/// by default, until the new secret is first used).
#[derive(Debug, Clone)]
pub struct PreviousSecret {
    /// argon2id PHC hash of the previous secret.
    pub hash: PhcHash,
    /// The overlap's deadline: from then on the previous secret is refused.
    pub valid_until: DateTime<Utc>,
}

impl Token {
    /// The previous secret while `now` is before its deadline.
    pub fn live_previous(&self, now: DateTime<Utc>) -> Option<&PreviousSecret> {
        self.previous.as_ref().filter(|p| now < p.valid_until)
    }

    /// True once `now` has reached the expiry.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|e| now >= e)
    }
}

#[cfg(test)]
impl Token {
    /// A read token for unit tests: `name` as given, a fixed cheap hash, no routes, expiry or
    /// own rate limit, from `t.yaml`. Change fields with struct update syntax.
    pub(crate) fn for_tests(id: &str, name: &str) -> Token {
        Token {
            id: id.into(),
            name: name.into(),
            description: None,
            hash: super::validate_phc(
                "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
            )
            .expect("a valid PHC string"),
            permission: Permission::Read,
            routes: Vec::new(),
            created_at: None,
            expires_at: None,
            rate_limit: None,
            disabled: false,
            allowed_ips: Default::default(),
            previous: None,
            packages: Default::default(),
            generation: 1,
            source: Source::File("t.yaml".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_rule_forms() {
        let p = |s: &str| serde_yaml_ng::from_str::<RateLimitRule>(s);
        assert_eq!(p("unlimited").unwrap(), RateLimitRule::Unlimited);
        assert_eq!(
            p("{requests: 5, period: 1m}").unwrap(),
            RateLimitRule::Limited {
                requests: 5,
                period: Duration::from_secs(60)
            }
        );
        assert_eq!(
            p("{requests: 5, period: 30}").unwrap(),
            RateLimitRule::Limited {
                requests: 5,
                period: Duration::from_secs(30)
            }
        );
        for bad in [
            "lots",
            "{requests: 0, period: 1m}",
            "{requests: 5, period: 0s}",
            "{requests: 5}",
            "7",
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
        let json = serde_json::to_string(&RateLimitRule::Limited {
            requests: 5,
            period: Duration::from_secs(3600),
        })
        .unwrap();
        assert_eq!(json, r#"{"requests":5,"period":"1h"}"#);
        assert_eq!(
            serde_json::to_string(&RateLimitRule::Unlimited).unwrap(),
            r#""unlimited""#
        );
    }
}
