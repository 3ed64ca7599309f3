//! Token changes shared by the admin API and the CLI: validate a request, build the new
//! record (hashing its secret), apply a modification, regenerate a secret. Pure apart from
//! the CSPRNG and argon2 (call from a blocking thread in async code).
//!
//! Over 500 lines: a third of it is the unit tests of the escalation rules ([`check_within`]),
//! one or more per rule.

use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};
use serde::Deserialize;

use super::lifetime::check_lifetime;
use super::ChangeError;
use crate::token::{
    self, compile_routes, route_specs, valid_name, AllowedIps, HashParams, Permission,
    RateLimitRule, Route, RouteSpec, Secret, Source, Token, NAME_RULE,
};

/// A token to create.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// Unique name.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// read, write or manager.
    pub permission: Permission,
    /// Route rules.
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    /// `30d`, `90d`, `365d`, `never` (default) or an RFC 3339 date.
    #[serde(default)]
    pub expires_in: Option<String>,
    /// Own rate limit; absent means the configured default.
    #[serde(default)]
    pub rate_limit: Option<RateLimitRule>,
    /// Client networks the token may be used from (CIDR or single addresses); empty or
    /// absent: any address.
    #[serde(default)]
    pub allowed_ips: AllowedIps,
    /// Package patterns the token is limited to; empty or absent: every package.
    #[serde(default)]
    pub packages: crate::token::PackagePatterns,
    /// A custom secret (CLI only; never accepted over the API).
    #[serde(skip)]
    pub secret: Option<Secret>,
}

/// `Some(None)` for an explicit `null`, `None` for an absent field.
fn nullable<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A modification: absent fields stay; `null` clears description and rate limit.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Patch {
    /// New name.
    #[serde(default)]
    pub name: Option<String>,
    /// New description (`null` clears).
    #[serde(default, deserialize_with = "nullable")]
    pub description: Option<Option<String>>,
    /// New permission.
    #[serde(default)]
    pub permission: Option<Permission>,
    /// New routes (replace all).
    #[serde(default)]
    pub routes: Option<Vec<RouteSpec>>,
    /// New rate limit (`null` = back to the default).
    #[serde(default, deserialize_with = "nullable")]
    pub rate_limit: Option<Option<RateLimitRule>>,
    /// Disable (`true`: refused after its secret verifies) or enable (`false`) the token.
    #[serde(default)]
    pub disabled: Option<bool>,
    /// New client allowlist (replaces it; `[]` or `null` = any address).
    #[serde(default, deserialize_with = "nullable")]
    pub allowed_ips: Option<Option<AllowedIps>>,
    /// New package patterns (replaces them; `[]` or `null` = every package).
    #[serde(default, deserialize_with = "nullable")]
    pub packages: Option<Option<crate::token::PackagePatterns>>,
}

/// Shortest custom secret accepted.
pub const MIN_CUSTOM_SECRET: usize = 16;

fn check_name(name: &str) -> Result<(), ChangeError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(ChangeError::Invalid(format!("name must be {NAME_RULE}")))
    }
}

fn check_description(d: &Option<String>) -> Result<(), ChangeError> {
    match d {
        Some(d) if d.len() > 1024 => Err(ChangeError::Invalid(
            "description must be at most 1024 bytes".into(),
        )),
        _ => Ok(()),
    }
}

fn hash(secret: &Secret, params: &HashParams) -> Result<token::PhcHash, ChangeError> {
    let phc = token::hash_secret(secret.expose(), params)?;
    Ok(token::validate_phc(&phc)?)
}

/// Builds the record of a new database token and its secret (shown once); an expiry beyond
/// `max_lifetime` (`tokens.max_lifetime`), or none, is refused.
pub fn build_new(
    req: NewToken,
    params: &HashParams,
    now: DateTime<Utc>,
    max_lifetime: Option<std::time::Duration>,
) -> Result<(Token, Secret), ChangeError> {
    // Stored with millisecond precision: answer exactly what later reads will show.
    let now = now.trunc_subsecs(3);
    check_name(&req.name)?;
    check_description(&req.description)?;
    let routes = compile_routes(&req.routes).map_err(ChangeError::Invalid)?;
    let expires_at = token::parse_expiry(req.expires_in.as_deref().unwrap_or("never"), now)
        .map_err(|e| ChangeError::Invalid(format!("expires_in: {e}")))?;
    check_lifetime(expires_at, now, max_lifetime).map_err(ChangeError::Invalid)?;
    let (id, secret) = match req.secret {
        Some(s) if s.expose().len() < MIN_CUSTOM_SECRET => {
            return Err(ChangeError::Invalid(format!(
                "a custom secret must be at least {MIN_CUSTOM_SECRET} characters"
            )))
        }
        Some(s) if s.expose().contains(':') || s.expose().starts_with(token::PREFIX) => {
            return Err(ChangeError::Invalid(format!(
                "a custom secret cannot contain ':' or start with {}",
                token::PREFIX
            )))
        }
        Some(s) => (token::generate_id(), s),
        None => {
            let g = token::generate();
            (g.id, g.token)
        }
    };
    let record = Token {
        id: Arc::from(id.as_str()),
        name: Arc::from(req.name.as_str()),
        description: req.description,
        hash: hash(&secret, params)?,
        permission: req.permission,
        routes,
        created_at: Some(now),
        expires_at,
        rate_limit: req.rate_limit,
        disabled: false,
        allowed_ips: req.allowed_ips,
        previous: None,
        packages: req.packages,
        generation: 1,
        source: Source::Database,
    };
    Ok((record, secret))
}

/// The record after `patch`, one generation on (expiry and creation date never change).
pub fn apply_patch(current: &Token, patch: Patch) -> Result<Token, ChangeError> {
    let mut t = current.clone();
    if let Some(name) = patch.name {
        check_name(&name)?;
        t.name = Arc::from(name.as_str());
    }
    if let Some(d) = patch.description {
        check_description(&d)?;
        t.description = d;
    }
    if let Some(p) = patch.permission {
        t.permission = p;
    }
    if let Some(r) = patch.routes {
        t.routes = compile_routes(&r).map_err(ChangeError::Invalid)?;
    }
    if let Some(r) = patch.rate_limit {
        t.rate_limit = r;
    }
    if let Some(d) = patch.disabled {
        t.disabled = d;
    }
    if let Some(ips) = patch.allowed_ips {
        t.allowed_ips = ips.unwrap_or_default();
    }
    if let Some(p) = patch.packages {
        t.packages = p.unwrap_or_default();
    }
    t.generation = current.generation + 1;
    Ok(t)
}

/// The record with a fresh generated secret for the same id, and that secret (shown once).
/// The expiry stays: a token expiring later than `max_lifetime` from `now`, or never, is
/// refused (create a new one instead).
pub fn regenerate(
    current: &Token,
    params: &HashParams,
    now: DateTime<Utc>,
    max_lifetime: Option<std::time::Duration>,
) -> Result<(Token, Secret), ChangeError> {
    check_lifetime(current.expires_at, now, max_lifetime)
        .map_err(|e| ChangeError::Invalid(format!("{e}; create a new token instead")))?;
    let g = token::generate_with_id(&current.id);
    let mut t = current.clone();
    t.hash = hash(&g.token, params)?;
    // No overlap unless asked for (`rotation::with_overlap`): an earlier previous secret dies.
    t.previous = None;
    t.generation = current.generation + 1;
    Ok((t, g.token))
}

/// The public view of a token (admin API, CLI JSON): never the hash.
pub fn token_view(
    t: &Token,
    last_used: Option<&crate::store::LastUse>,
    now: DateTime<Utc>,
) -> serde_json::Value {
    serde_json::json!({
        "id": &*t.id,
        "name": &*t.name,
        "description": t.description,
        "permission": t.permission,
        "routes": route_specs(&t.routes),
        "created_at": t.created_at,
        "expires_at": t.expires_at,
        "expired": t.is_expired(now),
        "last_used_at": last_used.map(|u| u.at),
        "last_used_ip": last_used.and_then(|u| u.ip).map(|ip| ip.to_string()),
        "last_used_user_agent": last_used.and_then(|u| u.user_agent.as_deref()),
        "rate_limit": t.rate_limit,
        "disabled": t.disabled,
        "allowed_ips": t.allowed_ips,
        "previous_valid_until": t.live_previous(now).map(|p| p.valid_until),
        "packages": t.packages,
        "source": t.source.kind(),
        "oidc": match &t.source {
            Source::Oidc(o) => serde_json::to_value(&**o).ok(),
            _ => None,
        },
    })
}

/// The rate limit that applies to `t` on the proxy (the bootstrap token, which the proxy does
/// not accept, counts as unlimited: it is the operator's).
fn effective_limit(t: &Token, default: RateLimitRule) -> RateLimitRule {
    match t.source {
        Source::Bootstrap => RateLimitRule::Unlimited,
        _ => t.rate_limit.unwrap_or(default),
    }
}

/// The allow routes (`read`/`write`) of `t`, each with the access it grants up to `t`'s
/// permission.
fn allow_routes(t: &Token) -> Vec<(&Route, Permission)> {
    t.routes
        .iter()
        .filter_map(|r| Some((r, r.access.as_permission()?.min(t.permission))))
        .collect()
}

/// Refuses `t` unless it grants nothing `actor` lacks: a manager creates, changes, regenerates
/// or revokes only tokens within its own rights, and cannot widen itself. "Within" means:
/// - permission: no higher than the actor's;
/// - allow routes (`read`/`write`): when the actor has allow routes, `t` has allow routes too,
///   and each of them lies inside one of the actor's ([`crate::token::RoutePattern::within`])
///   with no more access (read ≤ write; a route's access counts only up to its token's
///   permission);
/// - deny routes (`none`): every deny rule of the actor is kept by `t`, by a deny rule with the
///   same pattern or one covering it (`t` may add deny rules of its own);
/// - expiry: when the actor expires, `t` expires no later;
/// - client allowlist: when the actor has `allowed_ips`, `t` has some too, each network inside
///   one of the actor's;
/// - packages: when the actor is limited to packages, `t` is too, each of its patterns inside
///   one of the actor's;
/// - rate limit: when the actor is limited (its own limit or the default), `t` is limited to
///   no more requests per period and no higher rate.
pub fn check_within(actor: &Token, t: &Token, default: RateLimitRule) -> Result<(), ChangeError> {
    let who = format!("the acting token {:?}", &*actor.name);
    if t.permission > actor.permission {
        return Err(ChangeError::ExceedsActor(format!(
            "permission {} is above {who}'s ({})",
            t.permission.as_str(),
            actor.permission.as_str()
        )));
    }
    let (actor_allow, t_allow) = (allow_routes(actor), allow_routes(t));
    if !actor_allow.is_empty() {
        if t_allow.is_empty() {
            return Err(ChangeError::ExceedsActor(format!(
                "no allow routes means every path, more than {who} may reach: give routes inside its own"
            )));
        }
        for (r, access) in &t_allow {
            let inside = actor_allow
                .iter()
                .any(|(a, limit)| access <= limit && r.pattern.within(&a.pattern));
            if !inside {
                return Err(ChangeError::ExceedsActor(format!(
                    "route {}={} is not inside a route of {who}",
                    r.pattern.as_str(),
                    r.access.as_str()
                )));
            }
        }
    }
    for d in actor.routes.iter().filter(|r| r.access.is_deny()) {
        let kept = t
            .routes
            .iter()
            .any(|r| r.access.is_deny() && d.pattern.within(&r.pattern));
        if !kept {
            return Err(ChangeError::ExceedsActor(format!(
                "{who} is denied {}: the token must keep that deny rule ({}=none)",
                d.pattern.as_str(),
                d.pattern.as_str()
            )));
        }
    }
    if !t.allowed_ips.within(&actor.allowed_ips) {
        return Err(ChangeError::ExceedsActor(format!(
            "{who} may be used only from {}: the token's allowed_ips must be set and inside them",
            actor.allowed_ips.to_strings().join(", ")
        )));
    }
    if !t.packages.within(&actor.packages) {
        return Err(ChangeError::ExceedsActor(format!(
            "{who} is limited to the packages {}: the token's packages must be set and inside them",
            actor.packages.patterns().join(", ")
        )));
    }
    if let Some(limit) = actor.expires_at {
        match t.expires_at {
            Some(e) if e <= limit => {}
            _ => {
                return Err(ChangeError::ExceedsActor(format!(
                    "{who} expires at {limit}: the token must expire no later"
                )))
            }
        }
    }
    if let RateLimitRule::Limited { requests, period } = effective_limit(actor, default) {
        let ok = match effective_limit(t, default) {
            RateLimitRule::Limited {
                requests: r,
                period: p,
            } => {
                // r/p <= requests/period, in integers.
                r <= requests
                    && u128::from(r) * period.as_millis() <= u128::from(requests) * p.as_millis()
            }
            RateLimitRule::Unlimited => false,
        };
        if !ok {
            return Err(ChangeError::ExceedsActor(format!(
                "{who} is limited to {requests} requests per {}: the token's rate limit must be no higher",
                humantime::format_duration(period)
            )));
        }
    }
    Ok(())
}

/// Refuses changes to tokens that do not live in the database.
pub fn check_writable(t: &Token) -> Result<(), ChangeError> {
    match &t.source {
        // A minted token lives in the database too: it can be revoked or disabled early.
        Source::Database | Source::Oidc(_) => Ok(()),
        origin => Err(ChangeError::ReadOnly {
            name: t.name.to_string(),
            origin: origin.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(name: &str) -> NewToken {
        NewToken {
            name: name.into(),
            description: None,
            permission: Permission::Read,
            routes: vec![],
            expires_in: Some("30d".into()),
            rate_limit: None,
            allowed_ips: Default::default(),
            packages: Default::default(),
            secret: None,
        }
    }

    #[test]
    fn create_modify_regenerate() {
        let now = Utc::now();
        let (t, secret) = build_new(req("ci"), &HashParams::cheap(), now, None).unwrap();
        assert!(token::verify_secret(secret.expose(), &t.hash));
        assert_eq!(token::parse(secret.expose()).unwrap().id, &*t.id);
        assert_eq!(
            t.expires_at,
            Some(now.trunc_subsecs(3) + chrono::Duration::days(30))
        );
        let p: Patch =
            serde_json::from_str(r#"{"name":"ci2","description":null,"permission":"write"}"#)
                .unwrap();
        let t2 = apply_patch(&t, p).unwrap();
        assert_eq!(
            (&*t2.name, t2.permission, t2.generation),
            ("ci2", Permission::Write, 2)
        );
        assert_eq!(t2.expires_at, t.expires_at);
        assert!(!t2.disabled);
        let off = apply_patch(&t2, serde_json::from_str(r#"{"disabled":true}"#).unwrap()).unwrap();
        assert!(off.disabled && off.name == t2.name && off.hash.as_str() == t2.hash.as_str());
        let on = apply_patch(&off, serde_json::from_str(r#"{"disabled":false}"#).unwrap()).unwrap();
        assert!(!on.disabled);
        let (t3, s3) = regenerate(&t2, &HashParams::cheap(), now, None).unwrap();
        assert_eq!(t3.id, t.id);
        assert!(!token::verify_secret(secret.expose(), &t3.hash));
        assert!(token::verify_secret(s3.expose(), &t3.hash));
    }

    #[test]
    fn refusals() {
        let p = HashParams::cheap();
        let now = Utc::now();
        assert!(build_new(req("bad name"), &p, now, None).is_err());
        let mut r = req("x");
        r.expires_in = Some("yesterday".into());
        assert!(build_new(r, &p, now, None).is_err());
        let mut r = req("x");
        r.routes = vec![RouteSpec {
            path: "nope".into(),
            access: crate::token::Access::Read,
        }];
        assert!(build_new(r, &p, now, None).is_err());
        let mut r = req("x");
        r.secret = Some(Secret::new("short"));
        assert!(build_new(r, &p, now, None).is_err());
        assert!(serde_json::from_str::<Patch>(r#"{"expires_in":"30d"}"#).is_err());
        assert!(serde_json::from_str::<NewToken>(r#"{"name":"a","permission":"admin"}"#).is_err());
        assert!(serde_json::from_str::<NewToken>(
            r#"{"name":"a","permission":"read","secret":"x"}"#
        )
        .is_err());
    }

    /// A database token with `permission` and `routes` (`(path, access)`), no expiry, unlimited.
    fn with_routes(permission: Permission, routes: &[(&str, &str)]) -> Token {
        let specs: Vec<RouteSpec> = routes
            .iter()
            .map(|(path, access)| {
                serde_json::from_value(serde_json::json!({"path": path, "access": access})).unwrap()
            })
            .collect();
        let mut r = req("t");
        r.permission = permission;
        r.routes = specs;
        r.expires_in = None;
        r.rate_limit = Some(RateLimitRule::Unlimited);
        build_new(r, &HashParams::cheap(), Utc::now(), None)
            .unwrap()
            .0
    }

    fn within(actor: &Token, t: &Token) -> bool {
        check_within(actor, t, RateLimitRule::Unlimited).is_ok()
    }

    #[test]
    fn allowlist_is_kept_by_what_a_manager_makes() {
        use Permission::*;
        let ips = |l: &[&str]| AllowedIps::parse(l).unwrap();
        let mut actor = with_routes(Manager, &[]);
        actor.allowed_ips = ips(&["10.0.0.0/8", "2001:db8::/32"]);
        let mut t = with_routes(Read, &[]);
        // No allowlist means any address: wider than the actor.
        assert!(!within(&actor, &t));
        t.allowed_ips = ips(&["10.1.0.0/16", "2001:db8:1::/48", "10.2.3.4"]);
        assert!(within(&actor, &t));
        t.allowed_ips = ips(&["10.1.0.0/16", "192.0.2.1"]);
        let err = check_within(&actor, &t, RateLimitRule::Unlimited).unwrap_err();
        assert!(matches!(err, ChangeError::ExceedsActor(_)), "{err:?}");
        // An unrestricted actor may set any allowlist, or none.
        actor.allowed_ips = AllowedIps::default();
        assert!(within(&actor, &t));
        t.allowed_ips = AllowedIps::default();
        assert!(within(&actor, &t));
    }

    #[test]
    fn deny_rules_are_kept_by_what_a_manager_makes() {
        use Permission::*;
        let actor = with_routes(
            Manager,
            &[("/p2/acme/*", "write"), ("/p2/acme/internal-*", "none")],
        );
        // The same deny rule, or a wider one, kept: fine (also in another order).
        for ok in [
            vec![("/p2/acme/*", "read"), ("/p2/acme/internal-*", "none")],
            vec![("/p2/acme/internal-*", "none"), ("/p2/acme/widget", "read")],
            vec![("/p2/acme/*", "read"), ("/p2/acme/*", "none")],
            vec![
                ("/p2/acme/*", "write"),
                ("/p2/acme/internal-*", "none"),
                ("/p2/acme/old", "none"),
            ],
        ] {
            assert!(within(&actor, &with_routes(Write, &ok)), "{ok:?}");
        }
        // The deny rule dropped or narrowed: refused.
        for bad in [
            vec![("/p2/acme/*", "read")],
            vec![("/p2/acme/widget", "read")],
            vec![("/p2/acme/*", "read"), ("/p2/acme/internal-x", "none")],
            vec![("/p2/acme/*", "read"), ("/p2/other/*", "none")],
        ] {
            let err = check_within(&actor, &with_routes(Read, &bad), RateLimitRule::Unlimited)
                .unwrap_err();
            assert!(matches!(err, ChangeError::ExceedsActor(_)), "{bad:?}");
        }
        // Deny rules only in the child: every path less those, more than the actor's routes.
        assert!(!within(
            &actor,
            &with_routes(Read, &[("/p2/acme/internal-*", "none")])
        ));
        // Allow routes still within the actor's, as without deny rules.
        assert!(!within(
            &actor,
            &with_routes(Read, &[("/p2/*", "read"), ("/p2/acme/internal-*", "none")])
        ));
    }

    #[test]
    fn an_actor_with_deny_rules_only() {
        use Permission::*;
        let actor = with_routes(Manager, &[("/secret", "none")]);
        assert!(within(&actor, &with_routes(Read, &[("/secret", "none")])));
        assert!(within(
            &actor,
            &with_routes(
                Write,
                &[("/p2/*", "write"), ("/secret/**", "none"), ("/", "none")]
            )
        ));
        assert!(!within(&actor, &with_routes(Read, &[])));
        assert!(!within(&actor, &with_routes(Read, &[("/p2/*", "read")])));
        assert!(!within(
            &actor,
            &with_routes(Read, &[("/secret/x", "none")])
        ));
        // Without deny rules of its own, the actor lets a child have any.
        let plain = with_routes(Manager, &[("/p2/*", "read")]);
        assert!(within(
            &plain,
            &with_routes(Read, &[("/p2/*", "read"), ("/p2/x", "none")])
        ));
        assert!(!within(&plain, &with_routes(Read, &[("/p2/x", "none")])));
    }
}
