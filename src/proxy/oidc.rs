//! The trusted-publishing exchange endpoint (`POST /_tollgate/oidc/exchange` by default): the
//! request's job token goes to `crate::oidc`, whose answer (a minted token, or a refusal with
//! the code of the failed check) is written here. The body is read within a bound; the job
//! token is never logged or echoed.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::header::AUTHORIZATION;
use pingora::prelude::*;
use pingora::proxy::Session;

use super::{responses, Ctx, Proxy};
use crate::oidc::{ExchangeRequest, Oidc, Refusal};

/// Largest request body read (a JSON object around a job token of at most 8 KiB).
const MAX_BODY: usize = 16 * 1024;
/// Longest time the client may take to send the body (a slow body holds no exchange open).
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl Proxy {
    /// Answers one exchange request; the request never reaches the upstream.
    pub(super) async fn oidc_exchange(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        oidc: &Arc<Oidc>,
    ) -> Result<bool> {
        ctx.class = "oidc";
        let result = match read_request(session).await {
            Ok(req) => oidc.exchange_detached(req).await,
            Err(r) => {
                // An unread or oversized body would be read as the next request: close.
                session.set_keepalive(None);
                crate::metrics::METRICS
                    .oidc_exchanges
                    .with_label_values(&[r.code])
                    .inc();
                Err(r)
            }
        };
        let (status, body) = match result {
            Ok(minted) => {
                ctx.outcome = "ok";
                (200, minted.body())
            }
            Err(r) => {
                ctx.outcome = r.code;
                ctx.class = "refused";
                (r.status, r.body())
            }
        };
        responses::write_json(session, status, &[], Bytes::from(body.to_string())).await?;
        Ok(true)
    }
}

/// The job token from `Authorization: Bearer` or the JSON body's `token` (not both), and the
/// body's `policy`.
async fn read_request(session: &mut Session) -> std::result::Result<ExchangeRequest, Refusal> {
    if session.req_header().method != http::Method::POST {
        return Err(Refusal::new(
            405,
            "method_not_allowed",
            "the exchange takes POST",
        ));
    }
    let too_large = || {
        Refusal::new(
            413,
            "payload_too_large",
            format!("the request body is larger than {MAX_BODY} bytes"),
        )
    };
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    let mut body = BytesMut::new();
    let read = async {
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_BODY {
                        return Err(too_large());
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(()),
                Err(_) => {
                    return Err(Refusal::new(
                        400,
                        "invalid_request",
                        "the request body could not be read",
                    ))
                }
            }
        }
    };
    match tokio::time::timeout(BODY_TIMEOUT, read).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(Refusal::new(
                408,
                "request_timeout",
                "the request body did not arrive in time",
            ))
        }
    }
    let mut req = if body.iter().all(u8::is_ascii_whitespace) {
        ExchangeRequest {
            token: String::new(),
            policy: None,
        }
    } else {
        serde_json::from_slice::<ExchangeRequest>(&body).map_err(|_| {
            Refusal::new(
                400,
                "invalid_request",
                "the body must be a JSON object {\"token\": JWT, \"policy\": NAME (optional)}",
            )
        })?
    };
    let mut values = session.req_header().headers.get_all(AUTHORIZATION).iter();
    let bearer = values.next();
    if values.next().is_some() {
        return Err(Refusal::new(
            400,
            "invalid_request",
            "more than one Authorization header",
        ));
    }
    if let Some(v) = bearer {
        let text = v.to_str().unwrap_or("");
        let Some(jwt) = text
            .strip_prefix("Bearer ")
            .or_else(|| text.strip_prefix("bearer "))
        else {
            return Err(Refusal::new(
                400,
                "invalid_request",
                "Authorization must be Bearer JWT",
            ));
        };
        if !req.token.is_empty() {
            return Err(Refusal::new(
                400,
                "invalid_request",
                "send the job token once: in the body or in Authorization, not both",
            ));
        }
        req.token = jwt.trim().to_string();
    }
    Ok(req)
}
