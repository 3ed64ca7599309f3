//! A failed proxy attempt: the refusal the client gets, the upstream error kind for the
//! metric, and Tollgate's own log line in place of pingora's. Pingora logs every final failure
//! at ERROR with its source file's absolute path; a client that closes its connection in the
//! middle of a download is normal for package managers (cancelled installs, parallel fetches
//! that lose a race), so it is counted (`tollgate_client_aborts_total`) and logged at debug.
//! Upstream and internal failures stay warnings, in the same JSON line format as the rest.

use pingora::prelude::*;
use pingora::proxy::Session;

use super::Refusal;

/// Whether the client's side failed: it closed, reset or stalled its connection.
pub(super) fn is_client_side(e: &Error) -> bool {
    e.esource() == &ErrorSource::Downstream
}

fn is_timeout(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::ConnectTimedout
            | ErrorType::ReadTimedout
            | ErrorType::WriteTimedout
            | ErrorType::TLSHandshakeTimedout
    )
}

/// What the client is answered, or `None` when the client itself is gone.
pub(super) fn refusal_for(e: &Error) -> Option<Refusal> {
    if is_client_side(e) {
        return None;
    }
    if is_timeout(e) {
        return Some(Refusal::UpstreamTimeout);
    }
    match e.esource() {
        ErrorSource::Upstream => Some(Refusal::UpstreamUnavailable),
        _ => Some(Refusal::Internal),
    }
}

/// The `kind` label of `tollgate_upstream_errors_total`, for an upstream failure.
pub(super) fn upstream_kind(e: &Error) -> Option<&'static str> {
    if e.esource() != &ErrorSource::Upstream {
        return None;
    }
    Some(if is_timeout(e) {
        "timeout"
    } else {
        match e.etype() {
            ErrorType::ConnectRefused | ErrorType::ConnectNoRoute | ErrorType::ConnectError => {
                "connect"
            }
            ErrorType::TLSHandshakeFailure | ErrorType::InvalidCert => "tls",
            _ => "other",
        }
    })
}

/// Logs a request's final failure (pingora's own line is suppressed); `status` is what the
/// client was answered (0: nothing, it was gone).
pub(super) fn log_final(session: &Session, e: &Error, status: u16) {
    let req = session.req_header();
    let method = req.method.as_str();
    let path = req.uri.path();
    if is_client_side(e) {
        tracing::debug!(
            method,
            path,
            error = e.etype().as_str(),
            "the client closed the connection before the response was complete"
        );
    } else {
        tracing::warn!(
            method,
            path,
            status,
            source = e.esource().as_str(),
            error = %e,
            "proxying failed"
        );
    }
}

/// Logs a failed upstream attempt that is retried (pingora's warning is suppressed).
pub(super) fn log_retry(session: &Session, e: &Error) {
    let req = session.req_header();
    tracing::info!(
        method = req.method.as_str(),
        path = req.uri.path(),
        error = %e,
        "connecting to the upstream failed; retrying on its addresses as resolved again"
    );
}
