//! Download quotas in the proxy: a request is refused once the token's requests or bytes of
//! the period are used up; a response whose announced size would go over the byte quota is
//! replaced by the refusal; the bytes of every other response are charged as they are sent
//! (the body filter sees each chunk handed to the client's connection).

use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER, TRANSFER_ENCODING};
use http::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::prelude::*;

use super::{responses, unix_now, Refusal};
use crate::metrics::METRICS;
use crate::shared::Quotas;
use crate::token::Token;

/// Counts one request of `token` against its quota, or the refusal.
pub(super) async fn admit(quotas: &Quotas, token: &Token) -> Result<(), Refusal> {
    let Some(quota) = &token.quota else {
        return Ok(());
    };
    quotas
        .admit(&token.id, quota)
        .await
        .map_err(|(exceeded, resets_at)| {
            METRICS
                .quota_exceeded
                .with_label_values(&[exceeded.kind()])
                .inc();
            Refusal::QuotaExceeded(retry_after(resets_at))
        })
}

/// Seconds until `resets_at` (Unix seconds), at least 1.
fn retry_after(resets_at: u64) -> u64 {
    resets_at.saturating_sub(unix_now().as_secs()).max(1)
}

/// When the response's announced length would take `token` over its byte quota, turns
/// `resp` into the refusal and returns the body to send instead of the upstream's.
pub(super) fn check_response(
    quotas: &Quotas,
    token: &Token,
    resp: &mut ResponseHeader,
    head_only: bool,
) -> Result<Option<Bytes>> {
    let Some(quota) = token.quota.as_ref().filter(|q| q.bytes.is_some()) else {
        return Ok(None);
    };
    if head_only {
        return Ok(None);
    }
    let Some(len) = resp
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return Ok(None);
    };
    let Some(resets_at) = quotas.would_exceed(&token.id, quota, len) else {
        return Ok(None);
    };
    METRICS.quota_exceeded.with_label_values(&["bytes"]).inc();
    let refusal = Refusal::QuotaExceeded(retry_after(resets_at));
    let body = responses::refusal_body(refusal);
    let mut fresh = ResponseHeader::build(refusal.status(), Some(4))?;
    fresh.insert_header(CONTENT_TYPE, HeaderValue::from_static("application/json"))?;
    fresh.insert_header(CONTENT_LENGTH, HeaderValue::from(body.len()))?;
    fresh.insert_header(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    )?;
    if let Refusal::QuotaExceeded(secs) = refusal {
        fresh.insert_header(RETRY_AFTER, HeaderValue::from(secs))?;
    }
    fresh.remove_header(&TRANSFER_ENCODING);
    *resp = fresh;
    Ok(Some(body))
}

/// The body filter: sends the refusal in place of a refused response's body, else charges
/// what goes to the client.
pub(super) fn on_body(
    quotas: &Quotas,
    token: Option<&Arc<Token>>,
    replacement: &mut Option<Bytes>,
    body: &mut Option<Bytes>,
    end_of_stream: bool,
) {
    if replacement.is_some() {
        *body = if end_of_stream {
            replacement.take()
        } else {
            None
        };
        return;
    }
    if let (Some(token), Some(chunk)) = (token, body.as_ref()) {
        if let Some(quota) = &token.quota {
            quotas.charge_bytes(&token.id, quota, chunk.len() as u64);
        }
    }
}
