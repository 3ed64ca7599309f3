//! The `oidc:` section (trusted publishing) and the trust policy record, which the token
//! database and the admin API store and show in the same JSON form. Data and validation only:
//! verification and minting live in `crate::oidc`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_yaml_ng::Value;

use super::fields::{as_duration, as_string, kind_of, Section};
use crate::token::{compile_routes, valid_name, Permission, RouteSpec, NAME_RULE};

/// No minted token lives longer than this, whatever the configuration says.
pub const LIFETIME_CEILING: Duration = Duration::from_secs(3600);
/// The lifetime of a minted token when its policy names none.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// Longest trust policy name (a minted token's name is `oidc-<policy>-<id>`, at most 64).
pub const MAX_POLICY_NAME: usize = 40;
/// Most claim rules in one policy, longest claim name and pattern.
const MAX_CLAIMS: usize = 32;
const MAX_CLAIM_NAME: usize = 64;
const MAX_PATTERN: usize = 512;
/// Longest issuer URL or audience.
const MAX_URL: usize = 512;

/// Trusted publishing: CI jobs trade the OIDC token their provider signs for a short-lived
/// `tok_…` token at `exchange_path` on the proxy listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcConfig {
    /// The exchange endpoint answers (off by default: the path is then an ordinary path).
    pub enabled: bool,
    /// Where the proxy answers exchanges (`/_tollgate/oidc/exchange`).
    pub exchange_path: String,
    /// The `aud` a job token must carry when its policy names none.
    pub audience: Option<String>,
    /// The longest lifetime a policy may give (at most 1 h).
    pub max_lifetime: Duration,
    /// Clock leeway for `exp`, `nbf` and `iat`.
    pub leeway: Duration,
    /// A key id not in the cached JWKS refetches it at most once per this interval.
    pub jwks_refresh_interval: Duration,
    /// How long a fetched JWKS is used before it is fetched again.
    pub jwks_cache_ttl: Duration,
    /// Timeout of one discovery or JWKS fetch.
    pub fetch_timeout: Duration,
    /// Trust policies from the configuration file (the database may hold more).
    pub policies: Vec<TrustPolicy>,
}

impl Default for OidcConfig {
    fn default() -> Self {
        OidcConfig {
            enabled: false,
            exchange_path: "/_tollgate/oidc/exchange".into(),
            audience: None,
            max_lifetime: LIFETIME_CEILING,
            leeway: Duration::from_secs(60),
            jwks_refresh_interval: Duration::from_secs(60),
            jwks_cache_ttl: Duration::from_secs(3600),
            fetch_timeout: Duration::from_secs(5),
            policies: Vec::new(),
        }
    }
}

/// Who may trade a job token for a Tollgate token, and what that token may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustPolicy {
    /// Unique name (token-name characters, at most 40).
    pub name: String,
    /// The issuer URL, compared exactly with the job token's `iss`
    /// (`https://token.actions.githubusercontent.com`, `https://gitlab.com`).
    pub issuer: String,
    /// The `aud` the job token must carry; absent: `oidc.audience`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Claim rules: claim name → exact value, or a pattern where `*` matches any run of
    /// characters. Every rule must match. At least one, and none may be `*` alone.
    pub claims: BTreeMap<String, String>,
    /// The minted token's permission: `read` or `write`.
    pub permission: Permission,
    /// The minted token's routes (none: every path).
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    /// The minted token's package scopes (none: every package), as a token's `packages`.
    #[serde(
        default,
        skip_serializing_if = "crate::token::PackagePatterns::is_empty"
    )]
    pub packages: crate::token::PackagePatterns,
    /// The minted token's lifetime (`15m` when absent; at most `oidc.max_lifetime`).
    #[serde(
        default,
        with = "lifetime_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub lifetime: Option<Duration>,
}

mod lifetime_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        use serde::de::Error;
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Secs(u64),
            Text(String),
        }
        match Option::<Repr>::deserialize(d)? {
            None => Ok(None),
            Some(Repr::Secs(s)) => Ok(Some(Duration::from_secs(s))),
            Some(Repr::Text(t)) => humantime::parse_duration(&t)
                .map(Some)
                .map_err(|e| D::Error::custom(format!("lifetime {t:?}: {e}"))),
        }
    }
}

/// True for an issuer (or JWKS) URL Tollgate fetches from: `https://…`, or `http://` on a
/// loopback address (a sidecar issuer, the test suite). The host must be present.
pub fn fetchable_url(url: &str) -> bool {
    let rest = if let Some(r) = url.strip_prefix("https://") {
        r
    } else if let Some(r) = url.strip_prefix("http://") {
        let host = r.split(['/', '?', '#']).next().unwrap_or("");
        let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
        if !(host == "localhost" || host.starts_with("127.") || host == "[::1]") {
            return false;
        }
        r
    } else {
        return false;
    };
    !rest.is_empty()
        && !rest.starts_with('/')
        && !url.contains(['?', '#', ' ', '@'])
        && !url.chars().any(char::is_control)
}

impl TrustPolicy {
    /// Checks the policy; `max_lifetime` is `oidc.max_lifetime`. The reason names the field.
    pub fn validate(&self, max_lifetime: Duration) -> Result<(), String> {
        if !valid_name(&self.name) || self.name.len() > MAX_POLICY_NAME {
            return Err(format!(
                "name must be {NAME_RULE}, at most {MAX_POLICY_NAME} characters"
            ));
        }
        if self.issuer.len() > MAX_URL || !fetchable_url(&self.issuer) {
            return Err(format!(
                "issuer {:?} must be an https:// URL (http:// only on a loopback address)",
                self.issuer
            ));
        }
        if let Some(a) = &self.audience {
            if a.is_empty() || a.len() > MAX_URL || a.chars().any(char::is_control) {
                return Err("audience must be 1-512 characters".into());
            }
        }
        if self.claims.is_empty() {
            return Err(
                "claims: at least one claim rule is required (e.g. repository: acme/widget); \
                 without one every job of the issuer would be trusted"
                    .into(),
            );
        }
        if self.claims.len() > MAX_CLAIMS {
            return Err(format!("claims: at most {MAX_CLAIMS} rules"));
        }
        for (claim, pattern) in &self.claims {
            if claim.is_empty()
                || claim.len() > MAX_CLAIM_NAME
                || claim.chars().any(char::is_control)
            {
                return Err(format!(
                    "claims: claim names are 1-{MAX_CLAIM_NAME} characters"
                ));
            }
            if pattern.is_empty() || pattern.len() > MAX_PATTERN {
                return Err(format!(
                    "claims.{claim}: the pattern must be 1-{MAX_PATTERN} characters"
                ));
            }
            if pattern.chars().all(|c| c == '*') {
                return Err(format!(
                    "claims.{claim}: a pattern of only `*` matches anything; name the value"
                ));
            }
        }
        if self.permission == Permission::Manager {
            return Err("permission must be read or write (a minted token never manages)".into());
        }
        compile_routes(&self.routes).map_err(|e| format!("routes: {e}"))?;
        if let Some(l) = self.lifetime {
            if l < Duration::from_secs(1) || l > max_lifetime {
                return Err(format!(
                    "lifetime must be between 1s and {} (oidc.max_lifetime)",
                    humantime::format_duration(max_lifetime)
                ));
            }
        }
        Ok(())
    }

    /// The lifetime of the tokens minted under this policy.
    pub fn effective_lifetime(&self, max_lifetime: Duration) -> Duration {
        self.lifetime
            .unwrap_or(DEFAULT_LIFETIME)
            .min(max_lifetime)
            .min(LIFETIME_CEILING)
    }
}

/// `oidc`: the exchange endpoint, its bounds, and the trust policies of the file.
pub(super) fn build_oidc(s: &mut Section<'_>) -> OidcConfig {
    let d = OidcConfig::default();
    let enabled = s.take("enabled", d.enabled);
    let exchange_path = s.take_with("exchange_path", d.exchange_path, super::sections::url_path);
    let audience = s.take_with("audience", None, |v| {
        let a = as_string(v)?;
        if a.is_empty() || a.len() > MAX_URL {
            return Err("must be 1-512 characters".into());
        }
        Ok(Some(a))
    });
    let max_lifetime = s.take_with("max_lifetime", d.max_lifetime, as_duration);
    if max_lifetime > LIFETIME_CEILING || max_lifetime < Duration::from_secs(1) {
        let f = s.field("max_lifetime");
        s.collector().error(
            &f,
            "must be between 1s and 1h (a minted token never lives longer)",
        );
    }
    let leeway = s.take_with("leeway", d.leeway, as_duration);
    if leeway > Duration::from_secs(300) {
        let f = s.field("leeway");
        s.collector().error(&f, "must be at most 5m");
    }
    let jwks_refresh_interval = s.take_with(
        "jwks_refresh_interval",
        d.jwks_refresh_interval,
        as_duration,
    );
    let jwks_cache_ttl = s.take_with("jwks_cache_ttl", d.jwks_cache_ttl, as_duration);
    let fetch_timeout = s.take_with("fetch_timeout", d.fetch_timeout, as_duration);
    if fetch_timeout < Duration::from_millis(100) || fetch_timeout > Duration::from_secs(60) {
        let f = s.field("fetch_timeout");
        s.collector().error(&f, "must be between 100ms and 60s");
    }
    let field = s.field("policies");
    let items = s.take_with("policies", Vec::new(), |v| match v {
        Value::Sequence(items) => Ok(items),
        other => Err(format!(
            "expected a list of trust policies, found {}",
            kind_of(&other)
        )),
    });
    let mut policies: Vec<TrustPolicy> = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let f = format!("{field}[{i}]");
        let policy = match serde_yaml_ng::from_value::<TrustPolicy>(item) {
            Ok(p) => p,
            Err(e) => {
                s.collector().error(&f, e.to_string());
                continue;
            }
        };
        if let Err(reason) = policy.validate(max_lifetime.min(LIFETIME_CEILING)) {
            s.collector().error(&f, reason);
            continue;
        }
        if policy.audience.is_none() && audience.is_none() {
            s.collector().error(
                &f,
                "audience: required when oidc.audience is not set (the aud job tokens must carry)",
            );
            continue;
        }
        if policies.iter().any(|p| p.name == policy.name) {
            s.collector()
                .error(&f, format!("name {:?} is used twice", policy.name));
            continue;
        }
        policies.push(policy);
    }
    OidcConfig {
        enabled,
        exchange_path,
        audience,
        max_lifetime: max_lifetime.min(LIFETIME_CEILING),
        leeway,
        jwks_refresh_interval,
        jwks_cache_ttl,
        fetch_timeout,
        policies,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> Result<TrustPolicy, String> {
        let p: TrustPolicy = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
        p.validate(LIFETIME_CEILING)?;
        Ok(p)
    }

    #[test]
    fn policies_are_checked() {
        let ok = policy(
            "{name: gh, issuer: 'https://token.actions.githubusercontent.com', audience: x, \
             claims: {repository: acme/widget, ref: 'refs/tags/v*'}, permission: write, \
             routes: [{path: /simple/acme-*, access: write}], lifetime: 10m}",
        )
        .unwrap();
        assert_eq!(
            ok.effective_lifetime(LIFETIME_CEILING),
            Duration::from_secs(600)
        );
        let json = serde_json::to_value(&ok).unwrap();
        assert_eq!(json["lifetime"], "10m");
        let back: TrustPolicy = serde_json::from_value(json).unwrap();
        assert_eq!(back, ok);
        for bad in [
            // no claim rule: every job of the issuer
            "{name: a, issuer: 'https://x.example', claims: {}, permission: read}",
            "{name: a, issuer: 'https://x.example', claims: {repository: '*'}, permission: read}",
            "{name: a, issuer: 'http://x.example', claims: {r: x}, permission: read}",
            "{name: a, issuer: 'https://u@x.example', claims: {r: x}, permission: read}",
            "{name: a, issuer: 'ftp://x', claims: {r: x}, permission: read}",
            "{name: a, issuer: 'https://x.example', claims: {r: x}, permission: manager}",
            "{name: 'a b', issuer: 'https://x.example', claims: {r: x}, permission: read}",
            "{name: a, issuer: 'https://x.example', claims: {r: x}, permission: read, lifetime: 2h}",
            "{name: a, issuer: 'https://x.example', claims: {r: x}, permission: read, lifetime: 0s}",
            "{name: a, issuer: 'https://x.example', claims: {r: x}, permission: read, routes: [{path: nope, access: read}]}",
            "{name: a, issuer: 'https://x.example', claims: {r: x}, permission: read, extra: 1}",
        ] {
            assert!(policy(bad).is_err(), "{bad}");
        }
        assert!(policy(
            "{name: a, issuer: 'http://127.0.0.1:8080/issuer', claims: {r: x}, permission: read}"
        )
        .is_ok());
    }
}
