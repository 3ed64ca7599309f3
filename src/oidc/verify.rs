//! The job token (a JWT): its size and shape and header read before any key is fetched
//! ([`peek`]), then its signature and times checked by `jsonwebtoken` ([`verify`]). Only RS256
//! and ES256 are accepted, named in the `Validation` explicitly: `none` and every HMAC
//! algorithm are refused from the header, before any key is looked at, so a public key is never
//! used as an HMAC secret.

use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::exchange::Refusal;

/// Largest job token read (GitHub's are about 1.5 KiB, GitLab's about 1 KiB).
pub const MAX_JWT: usize = 8 * 1024;
/// Longest remaining lifetime a job token may claim (CI providers issue minutes): bounds how long
/// its id is remembered.
const MAX_JWT_LIFETIME_SECS: i64 = 24 * 3600;

/// What is read from a job token before its signature is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unverified {
    /// RS256 or ES256.
    pub alg: Algorithm,
    /// The header's key id.
    pub kid: String,
    /// The payload's `iss` (chooses the policies, and so the keys; checked again by the
    /// signature validation).
    pub iss: String,
}

fn b64(part: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .ok()
}

/// Size, shape (three base64url parts, JSON objects), the header's algorithm and key id, and
/// the issuer.
pub fn peek(jwt: &str) -> Result<Unverified, Refusal> {
    if jwt.len() > MAX_JWT {
        return Err(Refusal::new(
            400,
            "jwt_too_large",
            format!("the job token is larger than {MAX_JWT} bytes"),
        ));
    }
    let malformed = |why: &str| Refusal::new(400, "jwt_malformed", format!("the job token {why}"));
    let parts: Vec<&str> = jwt.split('.').collect();
    let base64url = |p: &str| {
        p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if parts.len() != 3 || !parts.iter().all(|p| base64url(p)) {
        return Err(malformed("is not a JWT (three base64url parts)"));
    }
    let header: Map<String, Value> = b64(parts[0])
        .and_then(|h| serde_json::from_slice(&h).ok())
        .ok_or_else(|| malformed("header is not a JSON object"))?;
    // The algorithm first: an unsigned token (`alg: none`, empty signature) is named as such.
    let alg = match header.get("alg").and_then(Value::as_str) {
        Some("RS256") => Algorithm::RS256,
        Some("ES256") => Algorithm::ES256,
        Some(other) => {
            let shown: String = other.chars().take(16).filter(|c| !c.is_control()).collect();
            return Err(Refusal::new(
                401,
                "alg_not_allowed",
                format!("algorithm {shown:?} is not accepted: only RS256 and ES256"),
            ));
        }
        None => return Err(malformed("header names no algorithm")),
    };
    if parts.iter().any(|p| p.is_empty()) {
        return Err(malformed("is not a JWT (three base64url parts)"));
    }
    if header.contains_key("crit") {
        return Err(malformed(
            "header has critical extensions (crit), which are not supported",
        ));
    }
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty() && k.len() <= 256)
        .ok_or_else(|| malformed("header names no key id (kid)"))?
        .to_string();
    let payload: Map<String, Value> = b64(parts[1])
        .and_then(|p| serde_json::from_slice(&p).ok())
        .ok_or_else(|| malformed("payload is not a JSON object"))?;
    let iss = payload
        .get("iss")
        .and_then(Value::as_str)
        .filter(|i| !i.is_empty())
        .ok_or_else(|| malformed("has no issuer (iss)"))?
        .to_string();
    Ok(Unverified { alg, kid, iss })
}

/// Checks the signature with `key` (for `alg` only), `iss`, and the times (`exp` required,
/// `nbf` when present, `iat` required and not in the future, all with `leeway_secs`); `now` is
/// Unix seconds. The verified claims, with `jti` and `sub` present as strings.
pub fn verify(
    jwt: &str,
    key: &DecodingKey,
    alg: Algorithm,
    iss: &str,
    leeway_secs: u64,
    now: i64,
) -> Result<Map<String, Value>, Refusal> {
    let mut v = Validation::new(alg);
    v.algorithms = vec![alg];
    v.leeway = leeway_secs;
    v.validate_exp = true;
    v.validate_nbf = true;
    // The audience depends on the trust policy: checked by the caller, exactly.
    v.validate_aud = false;
    v.set_issuer(&[iss]);
    v.set_required_spec_claims(&["exp", "iss"]);
    let data =
        jsonwebtoken::decode::<Map<String, Value>>(jwt, key, &v).map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature
            | ErrorKind::InvalidAlgorithm
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidKeyFormat => Refusal::new(
                401,
                "bad_signature",
                "the job token's signature does not verify with the issuer's key",
            ),
            ErrorKind::ExpiredSignature => {
                Refusal::new(401, "jwt_expired", "the job token has expired")
            }
            ErrorKind::ImmatureSignature => Refusal::new(
                401,
                "jwt_not_yet_valid",
                "the job token is not valid yet (nbf)",
            ),
            ErrorKind::InvalidIssuer => Refusal::new(
                401,
                "unknown_issuer",
                "the job token's issuer is not trusted",
            ),
            _ => Refusal::new(
                400,
                "jwt_malformed",
                "the job token's claims are not valid (exp, nbf, iss)",
            ),
        })?;
    let claims = data.claims;
    let leeway = leeway_secs as i64;
    match claims.get("iat").and_then(Value::as_i64) {
        Some(iat) if iat > now + leeway => {
            return Err(Refusal::new(
                401,
                "jwt_not_yet_valid",
                "the job token was issued in the future (iat)",
            ))
        }
        Some(_) => {}
        None => {
            return Err(Refusal::new(
                400,
                "jwt_malformed",
                "the job token has no issue time (iat)",
            ))
        }
    }
    if claims
        .get("exp")
        .and_then(Value::as_i64)
        .is_some_and(|exp| exp > now + MAX_JWT_LIFETIME_SECS)
    {
        return Err(Refusal::new(
            401,
            "jwt_lifetime_too_long",
            "the job token expires more than 24 hours from now",
        ));
    }
    for claim in ["jti", "sub"] {
        let ok = claims
            .get(claim)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty() && s.len() <= 1024);
        if !ok {
            return Err(Refusal::new(
                400,
                "jwt_malformed",
                format!("the job token has no {claim} claim"),
            ));
        }
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(v: serde_json::Value) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    }

    #[test]
    fn peek_refuses_before_any_key_is_needed() {
        let p = part(serde_json::json!({"iss": "https://i.example"}));
        let jwt = |h: serde_json::Value| format!("{}.{p}.c2ln", part(h));
        let ok = peek(&jwt(serde_json::json!({"alg": "ES256", "kid": "k"}))).unwrap();
        assert_eq!(
            (ok.alg, ok.kid.as_str(), ok.iss.as_str()),
            (Algorithm::ES256, "k", "https://i.example")
        );
        for (h, code) in [
            (
                serde_json::json!({"alg": "none", "kid": "k"}),
                "alg_not_allowed",
            ),
            (
                serde_json::json!({"alg": "HS256", "kid": "k"}),
                "alg_not_allowed",
            ),
            (
                serde_json::json!({"alg": "RS512", "kid": "k"}),
                "alg_not_allowed",
            ),
            (serde_json::json!({"kid": "k"}), "jwt_malformed"),
            (serde_json::json!({"alg": "RS256"}), "jwt_malformed"),
            (
                serde_json::json!({"alg": "RS256", "kid": "k", "crit": ["b64"]}),
                "jwt_malformed",
            ),
        ] {
            assert_eq!(peek(&jwt(h.clone())).unwrap_err().code, code, "{h}");
        }
        let unsigned = format!("{}.{p}.", part(serde_json::json!({"alg": "none"})));
        assert_eq!(peek(&unsigned).unwrap_err().code, "alg_not_allowed");
        for bad in ["", "a.b", "a.b.c.d", "a..c", "a.b.c d", "###.b.c"] {
            assert_eq!(peek(bad).unwrap_err().code, "jwt_malformed", "{bad}");
        }
        let big = format!(
            "{}.{}.sig",
            part(serde_json::json!({"alg": "RS256", "kid": "k"})),
            "A".repeat(MAX_JWT)
        );
        assert_eq!(peek(&big).unwrap_err().code, "jwt_too_large");
    }
}
