//! Choosing the trust policy for a verified job token: among the policies of its issuer (or the
//! one the request names), the first whose audience the token carries and whose every claim
//! rule matches.

use serde_json::{Map, Value};

use super::exchange::Refusal;
use crate::config::TrustPolicy;

/// True if `value` matches `pattern`, where `*` matches any run of characters (also `/`) and
/// everything else is literal.
///
/// Hand-written (a dozen lines) rather than a glob crate: claim values such as refs and
/// environment names may hold `?`, `[` or `{`, which glob crates give meaning to; here only
/// `*` is special, so a rule means exactly what it shows.
pub fn glob_match(pattern: &str, value: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == value;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if value.len() < first.len() + last.len() || !value.starts_with(first) || !value.ends_with(last)
    {
        return false;
    }
    let mut rest = &value[first.len()..value.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

/// A claim's value as text: strings as they are, booleans and numbers as written in JSON
/// (GitLab's `ref_protected` is `"true"`, GitHub's ids are strings); lists and objects never
/// match.
fn claim_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// True if the token's `aud` (a string, or a list of strings) is or holds `want`.
fn has_audience(claims: &Map<String, Value>, want: &str) -> bool {
    match claims.get("aud") {
        Some(Value::String(a)) => a == want,
        Some(Value::Array(items)) => items.iter().any(|a| a.as_str() == Some(want)),
        _ => false,
    }
}

/// The first claim rule of `policy` that `claims` does not satisfy, if any.
fn first_mismatch<'p>(policy: &'p TrustPolicy, claims: &Map<String, Value>) -> Option<&'p str> {
    policy
        .claims
        .iter()
        .find(|(claim, pattern)| {
            !claims
                .get(claim.as_str())
                .and_then(claim_text)
                .is_some_and(|v| glob_match(pattern, &v))
        })
        .map(|(claim, _)| claim.as_str())
}

/// The policy for `claims` among `candidates` (the issuer's policies, in order; already
/// narrowed to the one the request names, if any). `default_audience` is `oidc.audience`.
pub fn select<'p>(
    candidates: &'p [TrustPolicy],
    default_audience: Option<&str>,
    claims: &Map<String, Value>,
) -> Result<&'p TrustPolicy, Refusal> {
    let mut audience_ok = false;
    let mut why = Vec::new();
    for p in candidates {
        let Some(aud) = p.audience.as_deref().or(default_audience) else {
            continue;
        };
        if !has_audience(claims, aud) {
            continue;
        }
        audience_ok = true;
        match first_mismatch(p, claims) {
            None => return Ok(p),
            Some(claim) => why.push(format!(
                "policy {:?}: claim {claim:?} does not match",
                p.name
            )),
        }
    }
    if !audience_ok {
        return Err(Refusal::new(
            401,
            "wrong_audience",
            "the job token's audience (aud) is not the one the trust policies require",
        ));
    }
    Err(Refusal::new(
        403,
        "claim_mismatch",
        format!("no trust policy matches this job: {}", why.join("; ")),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_is_star_only() {
        for (p, v, want) in [
            ("acme/widget", "acme/widget", true),
            ("acme/widget", "acme/widget2", false),
            ("acme/*", "acme/widget", true),
            ("acme/*", "acme/", true),
            ("acme/*", "acme", false),
            ("refs/tags/v*", "refs/tags/v1.2", true),
            ("refs/tags/v*", "refs/heads/v1", false),
            (
                "*/release.yml@refs/heads/main",
                "acme/w/.github/workflows/release.yml@refs/heads/main",
                true,
            ),
            ("a*b*c", "abc", true),
            ("a*b*c", "a-b-c", true),
            ("a*b*c", "acb", false),
            ("ab*ba", "aba", false),
            ("v?", "v1", false),
            ("v?", "v?", true),
            ("[x]", "[x]", true),
        ] {
            assert_eq!(glob_match(p, v), want, "{p} vs {v}");
        }
    }

    fn policy(name: &str, claims: &[(&str, &str)], aud: Option<&str>) -> TrustPolicy {
        TrustPolicy {
            name: name.into(),
            issuer: "https://i.example".into(),
            audience: aud.map(Into::into),
            claims: claims
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            permission: crate::token::Permission::Write,
            routes: vec![],
            packages: Default::default(),
            lifetime: None,
        }
    }

    #[test]
    fn the_first_policy_whose_audience_and_claims_match() {
        let claims: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "aud": "tollgate", "repository": "acme/widget", "ref": "refs/heads/main",
            "ref_protected": true, "run_id": 42
        }))
        .unwrap();
        let ps = [
            policy(
                "tags",
                &[("repository", "acme/widget"), ("ref", "refs/tags/*")],
                None,
            ),
            policy("other-aud", &[("repository", "acme/*")], Some("elsewhere")),
            policy(
                "main",
                &[("repository", "acme/widget"), ("ref_protected", "true")],
                None,
            ),
        ];
        assert_eq!(select(&ps, Some("tollgate"), &claims).unwrap().name, "main");
        let r = select(&ps[..1], Some("tollgate"), &claims).unwrap_err();
        assert_eq!((r.status, r.code), (403, "claim_mismatch"));
        assert!(r.message.contains("\"ref\""), "{}", r.message);
        let r = select(&ps, Some("someone-else"), &claims).unwrap_err();
        assert_eq!(r.code, "wrong_audience");
        // A list audience holding ours matches; a claim that is a list never does.
        let mut c2 = claims.clone();
        c2.insert("aud".into(), serde_json::json!(["x", "tollgate"]));
        assert!(select(&ps, Some("tollgate"), &c2).is_ok());
        c2.insert("repository".into(), serde_json::json!(["acme/widget"]));
        assert_eq!(
            select(&ps, Some("tollgate"), &c2).unwrap_err().code,
            "claim_mismatch"
        );
    }
}
