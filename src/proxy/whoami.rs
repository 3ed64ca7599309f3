//! The whoami endpoint: the calling token as JSON (id, name, permission, routes, dates, source
//! rate-limit state, client allowlist and the client address it was checked against), answered
//! by the proxy itself; it counts no request against the limit.

use std::time::Duration;

use bytes::Bytes;
use pingora::prelude::*;
use pingora::proxy::Session;

use super::{responses, unix_now, Ctx, Proxy, Refusal};
use crate::ratelimit::Decision;
use crate::token::Token;

impl Proxy {
    /// Answers `GET`/`HEAD` on the whoami path for `token`; other methods get 405.
    pub(super) async fn whoami(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        token: &Token,
    ) -> Result<bool> {
        let method = &session.req_header().method;
        if method != http::Method::GET && method != http::Method::HEAD {
            return self.refuse(session, ctx, Refusal::MethodNotAllowed).await;
        }
        ctx.outcome = "ok";
        ctx.class = "whoami";
        ctx.rate = self.rate_limits.peek(token);
        let body = body(token, ctx.rate.as_ref(), unix_now(), ctx.client);
        let headers = ctx.rate_headers();
        responses::write_json(session, 200, &headers, Bytes::from(body.to_string())).await?;
        Ok(true)
    }
}

/// The whoami document of `token`, whose rate-limit state is `rate` (`None`: unlimited);
/// `unix_now` is the wall clock, for the reset time; `client` is the client's address as
/// resolved (behind trusted proxies, from `X-Forwarded-For`).
fn body(
    token: &Token,
    rate: Option<&Decision>,
    unix_now: Duration,
    client: Option<std::net::IpAddr>,
) -> serde_json::Value {
    let routes: Vec<_> = token
        .routes
        .iter()
        .map(|r| serde_json::json!({"path": r.pattern.as_str(), "access": r.access}))
        .collect();
    let rate = rate.map(|d| {
        serde_json::json!({
            "limit": d.limit,
            "remaining": d.remaining,
            "used": d.used,
            "reset": d.reset_at(unix_now),
            "period_seconds": d.period.as_secs(),
        })
    });
    serde_json::json!({
        "id": &*token.id,
        "name": &*token.name,
        "description": token.description,
        "permission": token.permission,
        "routes": routes,
        "created_at": token.created_at,
        "expires_at": token.expires_at,
        "source": token.source.kind(),
        "rate_limit": rate,
        "allowed_ips": token.allowed_ips,
        "packages": token.packages,
        "client": client,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::RoutePattern;
    use crate::token::{Access, Route};

    #[test]
    fn document_names_the_token_and_its_rate_state() {
        let t = Token {
            description: Some("CI reader".into()),
            routes: vec![Route {
                pattern: RoutePattern::parse("/p2/acme/*").expect("a pattern"),
                access: Access::Read,
            }],
            ..Token::for_tests("AAAAAAAAAAAA", "ci")
        };
        let d = Decision {
            allowed: true,
            limit: 5,
            remaining: 4,
            used: 1,
            reset_after: Duration::from_secs(12),
            retry_after: None,
            period: Duration::from_secs(60),
        };
        let v = body(
            &t,
            Some(&d),
            Duration::from_secs(1_700_000_000),
            Some([10, 1, 2, 3].into()),
        );
        assert_eq!(v["client"], "10.1.2.3");
        assert_eq!(v["allowed_ips"], serde_json::json!([]));
        assert_eq!(v["id"], "AAAAAAAAAAAA");
        assert_eq!(v["name"], "ci");
        assert_eq!(v["description"], "CI reader");
        assert_eq!(v["routes"][0]["path"], "/p2/acme/*");
        assert_eq!(v["source"], t.source.kind());
        assert!(v.get("hash").is_none());
        assert_eq!(
            v["rate_limit"],
            serde_json::json!({
                "limit": 5, "remaining": 4, "used": 1,
                "reset": 1_700_000_012u64, "period_seconds": 60,
            })
        );
        let v = body(&t, None, Duration::ZERO, None);
        assert!(v["rate_limit"].is_null());
    }
}
