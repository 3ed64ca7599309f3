//! The per-token rate limit through the shared backend, when `rate_limit.backend` is set: the
//! lease decides; while Redis cannot be reached, `rate_limit.on_backend_error` does (the
//! in-process limiter, or a refusal).

use std::sync::Arc;

use super::{Refusal, TokenLimits};
use crate::config::OnBackendError;
use crate::ratelimit::Decision;
use crate::shared::SharedLimits;
use crate::token::Token;

/// Counts one request of `token`: `Ok(None)` when it is unlimited.
pub(super) async fn check(
    shared: &Arc<SharedLimits>,
    local: &TokenLimits,
    token: &Token,
) -> Result<Option<Decision>, Refusal> {
    let Some(limit) = local.limit_of(token) else {
        return Ok(None);
    };
    match shared.check(&token.id, &limit).await {
        Ok(decision) => Ok(Some(decision)),
        Err(_) => match shared.backend().on_error() {
            OnBackendError::Local => Ok(local.check(token)),
            OnBackendError::Deny => Err(Refusal::RateLimitUnavailable),
        },
    }
}

/// The state of `token` without counting a request (for whoami).
pub(super) fn peek(shared: &SharedLimits, local: &TokenLimits, token: &Token) -> Option<Decision> {
    let limit = local.limit_of(token)?;
    if shared.backend().is_up() {
        Some(shared.peek(&token.id, &limit))
    } else {
        local.peek(token)
    }
}
