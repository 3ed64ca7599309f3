//! The answers the proxy gives itself: refusals and the whoami page, as small JSON bodies.
//! `respond_error` cannot carry headers, so each answer builds its own `ResponseHeader`.

use std::borrow::Cow;

use bytes::Bytes;
use http::header::{
    HeaderName, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE,
};
use http::{HeaderValue, StatusCode};
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;

use crate::auth::{AuthError, CredentialError, PathError};

/// Why the proxy answers a request itself instead of forwarding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 401: no credentials.
    CredentialsMissing,
    /// 401: credentials that are not an accepted form, or a token with a bad checksum.
    CredentialsMalformed(&'static str),
    /// 401: unknown token or wrong secret (not told apart, to give no oracle).
    TokenInvalid,
    /// 401: expired token.
    TokenExpired,
    /// 401: disabled token (its secret verified: a wrong secret is `TokenInvalid`).
    TokenDisabled,
    /// 403: the client's address is outside the token's `allowed_ips` (its secret verified:
    /// a wrong secret is `TokenInvalid`).
    IpNotAllowed,
    /// 403: the token lacks the permission or route.
    Forbidden,
    /// 403: the request touches a package outside the token's `packages`.
    PackageNotAllowed,
    /// 403: the token is limited to packages and the request's package cannot be told (no
    /// layout covers the path, or an upload body names none).
    PackageUnknown,
    /// 502: a listing too large to filter for a token limited to packages.
    ListingTooLarge,
    /// 502: a listing that could not be filtered (not its format, or compressed).
    ListingUnfilterable,
    /// 503: the listings and uploads held for scoped tokens fill their shared budget.
    ScopeBusy,
    /// 400: the path cannot be normalized safely.
    BadPath(PathError),
    /// 405: a method the proxy's own endpoint does not take.
    MethodNotAllowed,
    /// 429: the token's rate limit is spent; retry after this many seconds.
    RateLimited(u64),
    /// 429: too many verifications of uncached credentials for this token (a guessing
    /// attack, or a misconfigured client); retry after this many seconds.
    Throttled(u64),
    /// 503: argon2 capacity exhausted.
    Busy,
    /// 503: no token set loaded yet.
    NotReady,
    /// 502: the upstream refused or broke the connection.
    UpstreamUnavailable,
    /// 504: the upstream did not answer in time.
    UpstreamTimeout,
    /// 500: a bug or an internal failure.
    Internal,
}

impl Refusal {
    /// HTTP status.
    pub fn status(self) -> u16 {
        match self {
            Refusal::CredentialsMissing
            | Refusal::CredentialsMalformed(_)
            | Refusal::TokenInvalid
            | Refusal::TokenExpired
            | Refusal::TokenDisabled => 401,
            Refusal::Forbidden
            | Refusal::IpNotAllowed
            | Refusal::PackageNotAllowed
            | Refusal::PackageUnknown => 403,
            Refusal::ListingTooLarge | Refusal::ListingUnfilterable => 502,
            Refusal::BadPath(_) => 400,
            Refusal::MethodNotAllowed => 405,
            Refusal::RateLimited(_) | Refusal::Throttled(_) => 429,
            Refusal::Busy | Refusal::NotReady | Refusal::ScopeBusy => 503,
            Refusal::UpstreamUnavailable => 502,
            Refusal::UpstreamTimeout => 504,
            Refusal::Internal => 500,
        }
    }

    /// Stable machine-readable code; also the `outcome` in logs and metrics.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::CredentialsMissing => "credentials_missing",
            Refusal::CredentialsMalformed(_) => "credentials_malformed",
            Refusal::TokenInvalid => "token_invalid",
            Refusal::TokenExpired => "token_expired",
            Refusal::TokenDisabled => "token_disabled",
            Refusal::IpNotAllowed => "ip_not_allowed",
            Refusal::Forbidden => "forbidden",
            Refusal::PackageNotAllowed => "package_not_allowed",
            Refusal::PackageUnknown => "package_unknown",
            Refusal::ListingTooLarge => "listing_too_large",
            Refusal::ListingUnfilterable => "listing_unfilterable",
            Refusal::ScopeBusy => "scope_busy",
            Refusal::BadPath(_) => "bad_path",
            Refusal::MethodNotAllowed => "method_not_allowed",
            Refusal::RateLimited(_) => "rate_limited",
            Refusal::Throttled(_) => "verification_throttled",
            Refusal::Busy => "busy",
            Refusal::NotReady => "not_ready",
            Refusal::UpstreamUnavailable => "upstream_unavailable",
            Refusal::UpstreamTimeout => "upstream_timeout",
            Refusal::Internal => "internal",
        }
    }

    /// Plain-words message; never holds a secret.
    pub fn message(self) -> Cow<'static, str> {
        match self {
            Refusal::CredentialsMissing => {
                "an access token is required: send it as a password with Basic auth (user 'token'), or as a Bearer token".into()
            }
            Refusal::CredentialsMalformed(why) => format!("credentials are malformed: {why}").into(),
            Refusal::TokenInvalid => "the token is unknown, revoked, or its secret is wrong".into(),
            Refusal::TokenExpired => "the token has expired".into(),
            Refusal::TokenDisabled => "the token is disabled".into(),
            Refusal::IpNotAllowed => {
                "the token may not be used from this client address".into()
            }
            Refusal::Forbidden => "the token does not allow this method on this path".into(),
            Refusal::PackageNotAllowed => "the token does not allow this package".into(),
            Refusal::PackageUnknown => {
                "the token is limited to packages, and the package of this request cannot be told".into()
            }
            Refusal::ListingTooLarge => {
                "the package store's listing is too large to filter for this token".into()
            }
            Refusal::ListingUnfilterable => {
                "the package store's listing could not be filtered for this token".into()
            }
            Refusal::ScopeBusy => {
                "too many listings and uploads are being checked for package scopes; retry shortly"
                    .into()
            }
            Refusal::BadPath(e) => format!("the request path is refused: {e}").into(),
            Refusal::MethodNotAllowed => "this endpoint answers GET only".into(),
            Refusal::RateLimited(s) => {
                format!("the token's rate limit is spent; retry in {s} s").into()
            }
            Refusal::Throttled(s) => format!(
                "too many attempts with wrong or new secrets from this address; retry in {s} s"
            )
            .into(),
            Refusal::Busy => "too many token verifications in progress; retry shortly".into(),
            Refusal::NotReady => "no token set is loaded yet; retry shortly".into(),
            Refusal::UpstreamUnavailable => "the package store could not be reached".into(),
            Refusal::UpstreamTimeout => "the package store did not answer in time".into(),
            Refusal::Internal => "internal error".into(),
        }
    }
}

impl From<CredentialError> for Refusal {
    fn from(e: CredentialError) -> Self {
        match e {
            CredentialError::Missing => Refusal::CredentialsMissing,
            CredentialError::Malformed(why) => Refusal::CredentialsMalformed(why),
        }
    }
}

impl From<AuthError> for Refusal {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Unknown | AuthError::WrongSecret => Refusal::TokenInvalid,
            AuthError::Expired => Refusal::TokenExpired,
            AuthError::Disabled => Refusal::TokenDisabled,
            AuthError::IpNotAllowed => Refusal::IpNotAllowed,
            AuthError::Busy => Refusal::Busy,
            AuthError::Throttled(secs) => Refusal::Throttled(secs),
            AuthError::Internal => Refusal::Internal,
        }
    }
}

/// JSON body of a refusal.
pub fn refusal_body(r: Refusal) -> Bytes {
    let mut v = serde_json::json!({ "error": r.code(), "message": r.message() });
    if let Refusal::RateLimited(secs) | Refusal::Throttled(secs) = r {
        v["retry_after"] = secs.into();
    }
    Bytes::from(v.to_string())
}

/// Writes a complete JSON response with `extra` headers.
pub async fn write_json(
    session: &mut Session,
    status: u16,
    extra: &[(HeaderName, HeaderValue)],
    body: Bytes,
) -> Result<()> {
    // Plain parts, no case map: cheap to build even during a flood of refusals.
    let mut parts = http::Response::new(()).into_parts().0;
    parts.status =
        StatusCode::from_u16(status).or_err(ErrorType::InternalError, "invalid status code")?;
    let headers = &mut parts.headers;
    headers.reserve(4 + extra.len());
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for (name, value) in extra {
        headers.insert(name.clone(), value.clone());
    }
    let h = ResponseHeader::from(parts);
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(h), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// Writes a refusal with `extra` headers (rate-limit fields); 401s carry the
/// `WWW-Authenticate` challenge (Maven, cargo and pip send credentials only after it).
pub async fn write_refusal(
    session: &mut Session,
    r: Refusal,
    challenge: &HeaderValue,
    mut extra: Vec<(HeaderName, HeaderValue)>,
) -> Result<()> {
    if r.status() == 401 {
        extra.push((WWW_AUTHENTICATE, challenge.clone()));
    } else if matches!(r, Refusal::Busy | Refusal::NotReady | Refusal::ScopeBusy) {
        extra.push((RETRY_AFTER, HeaderValue::from_static("1")));
    } else if let Refusal::Throttled(secs) = r {
        extra.push((RETRY_AFTER, HeaderValue::from(secs)));
    }
    write_json(session, r.status(), &extra, refusal_body(r)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_json_with_code() {
        let all = [
            Refusal::CredentialsMissing,
            Refusal::CredentialsMalformed("x"),
            Refusal::TokenInvalid,
            Refusal::TokenExpired,
            Refusal::TokenDisabled,
            Refusal::IpNotAllowed,
            Refusal::Forbidden,
            Refusal::PackageNotAllowed,
            Refusal::PackageUnknown,
            Refusal::ListingTooLarge,
            Refusal::ListingUnfilterable,
            Refusal::ScopeBusy,
            Refusal::BadPath(PathError::Nul),
            Refusal::MethodNotAllowed,
            Refusal::RateLimited(3),
            Refusal::Throttled(4),
            Refusal::Busy,
            Refusal::NotReady,
            Refusal::UpstreamUnavailable,
            Refusal::UpstreamTimeout,
            Refusal::Internal,
        ];
        for r in all {
            let v: serde_json::Value = serde_json::from_slice(&refusal_body(r)).unwrap();
            assert_eq!(v["error"], r.code());
            assert!(!v["message"].as_str().unwrap().is_empty());
            assert!((400..600).contains(&r.status()));
            if let Refusal::RateLimited(s) | Refusal::Throttled(s) = r {
                assert_eq!(v["retry_after"], s);
            }
        }
    }
}
