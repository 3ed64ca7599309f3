//! The minted token: an ordinary `tok_…` record (argon2id hash, the policy's permission and
//! routes, an expiry minutes away) whose source records the policy and the job's identity. It
//! lives in the token database only, never in a token file.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::{Map, Value};

use crate::config::TrustPolicy;
use crate::token::{self, compile_routes, HashParams, OidcOrigin, Secret, Source, Token};

/// Longest identity value kept from a claim (sub, repository, run id).
const MAX_CLAIM_KEPT: usize = 256;

fn claim(claims: &Map<String, Value>, names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| {
        let v = match claims.get(*n)? {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return None,
        };
        Some(truncate(&v))
    })
}

fn truncate(s: &str) -> String {
    let mut end = s.len().min(MAX_CLAIM_KEPT);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].chars().filter(|c| !c.is_control()).collect()
}

/// The job's identity from its verified claims (GitHub's `repository`/`run_id`, GitLab's
/// `project_path`/`pipeline_id`).
pub fn origin(policy: &TrustPolicy, issuer: &str, claims: &Map<String, Value>) -> OidcOrigin {
    OidcOrigin {
        policy: policy.name.clone(),
        issuer: issuer.to_string(),
        subject: claim(claims, &["sub"]).unwrap_or_default(),
        repository: claim(claims, &["repository", "project_path"]),
        run_id: claim(claims, &["run_id", "pipeline_id"]),
    }
}

/// The record of a token minted under `policy` for `origin`, living `lifetime` from `now`, and
/// its secret (shown once). Hashing runs argon2: call from a blocking thread.
pub fn build(
    policy: &TrustPolicy,
    origin: OidcOrigin,
    lifetime: Duration,
    params: &HashParams,
    now: DateTime<Utc>,
) -> anyhow::Result<(Token, Secret)> {
    // Stored with millisecond precision: answer exactly what later reads will show.
    let now = now.trunc_subsecs(3);
    let g = token::generate();
    let hash = token::validate_phc(&token::hash_secret(g.token.expose(), params)?)?;
    let routes = compile_routes(&policy.routes).map_err(anyhow::Error::msg)?;
    let description = format!("trusted publishing: {}", origin.subject);
    let t = Token {
        id: Arc::from(g.id.as_str()),
        // At most 4 + 40 + 1 + 12 characters: a valid name, unique by its id.
        name: Arc::from(format!("oidc-{}-{}", policy.name, g.id).as_str()),
        description: Some(description),
        hash,
        permission: policy.permission,
        routes,
        created_at: Some(now),
        expires_at: Some(now + chrono::Duration::from_std(lifetime)?),
        rate_limit: None,
        disabled: false,
        allowed_ips: Default::default(),
        generation: 1,
        previous: None,
        packages: policy.packages.clone(),
        source: Source::Oidc(Arc::new(origin)),
    };
    Ok((t, g.token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_are_ordinary_tokens_with_their_origin() {
        let policy: TrustPolicy = serde_yaml_ng::from_str(
            "{name: gh-release, issuer: 'https://i.example', audience: a, \
             claims: {repository: acme/widget}, permission: write, \
             routes: [{path: /simple/acme-widget, access: write}]}",
        )
        .unwrap();
        let claims: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "sub": "repo:acme/widget:ref:refs/tags/v1", "repository": "acme/widget",
            "run_id": "77", "project_path": "ignored/when/repository/is/there"
        }))
        .unwrap();
        let o = origin(&policy, "https://i.example", &claims);
        assert_eq!(o.repository.as_deref(), Some("acme/widget"));
        assert_eq!(o.run_id.as_deref(), Some("77"));
        let now = Utc::now();
        let (t, secret) = build(
            &policy,
            o,
            Duration::from_secs(900),
            &HashParams::cheap(),
            now,
        )
        .unwrap();
        assert!(token::valid_name(&t.name), "{}", t.name);
        assert!(t.name.starts_with("oidc-gh-release-"));
        assert!(token::verify_secret(secret.expose(), &t.hash));
        assert_eq!(token::parse(secret.expose()).unwrap().id, &*t.id);
        assert_eq!(
            t.expires_at,
            Some(now.trunc_subsecs(3) + chrono::Duration::seconds(900))
        );
        assert_eq!(t.source.kind(), "oidc");
        assert_eq!(t.routes.len(), 1);
    }
}
