//! The admin listener: the token REST API, probes and Prometheus metrics, served by axum on
//! Tollgate's control-plane runtime (beside the token store's reload and write-behind loop),
//! on its own port (127.0.0.1 by default).

pub mod api;
mod error;
mod trust;
pub mod ui;
mod usage;

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::auth::Verifier;
use crate::config::HashParams;
use crate::lifecycle::Health;
use crate::metrics::METRICS;
use crate::store::Store;
use crate::token::RateLimitRule;

/// Shared state of the admin handlers.
#[derive(Clone)]
pub struct AdminState {
    /// The token store.
    pub store: Arc<Store>,
    /// Verifies the manager tokens of admin requests (shares the proxy's cache).
    pub verifier: Arc<Verifier>,
    /// Basic usernames meaning "the password is the token".
    pub token_usernames: Arc<[String]>,
    /// argon2 parameters for new hashes.
    pub hashing: HashParams,
    /// The configured default rate limit (what a token without its own limit gets).
    pub default_rate_limit: RateLimitRule,
    /// `tokens.max_lifetime`: the latest expiry a created or regenerated token may have.
    pub max_lifetime: Option<std::time::Duration>,
    /// `tokens.max_overlap`: the longest overlap a regeneration may keep the old secret for.
    pub max_overlap: std::time::Duration,
    /// `trusted_proxies`: behind one of them, a manager token's allowlist and the budgets
    /// key on the client `X-Forwarded-For` names, as on the proxy.
    pub trusted_proxies: Arc<crate::config::TrustedProxies>,
    /// Listener and shutdown state.
    pub health: Arc<Health>,
    /// The proxy's quota counters (usage shown with each token that has a quota).
    pub quotas: Arc<crate::shared::Quotas>,
    /// The usage ledger (`None`: usage is not recorded).
    pub usage: Option<Arc<crate::usage::Ledger>>,
    /// Webhooks of token changes (`None`: none configured).
    pub webhooks: Option<Arc<crate::webhook::Webhooks>>,
    /// Trusted publishing, when `oidc.enabled` (the trust-policy routes answer 409 otherwise).
    pub oidc: Option<Arc<crate::oidc::Oidc>>,
}

/// Every admin route.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(api::routes(state.clone()))
        .merge(ui::routes())
        .method_not_allowed_fallback(|| async {
            (
                StatusCode::METHOD_NOT_ALLOWED,
                axum::Json(serde_json::json!({"error": "method_not_allowed", "message": "this endpoint does not take that method"})),
            )
        })
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                axum::Json(
                    serde_json::json!({"error": "not_found", "message": "no such endpoint"}),
                ),
            )
        })
        .with_state(state)
}

async fn healthz(State(s): State<AdminState>) -> impl IntoResponse {
    match s.health.live() {
        Ok(()) => (StatusCode::OK, "ok\n"),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    match s.health.ready(s.store.set.is_ready()) {
        Ok(()) => (StatusCode::OK, "ready\n"),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

async fn metrics() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        METRICS.encode(),
    )
}

/// The peer address of an admin connection (budgets of failed verifications are keyed by it).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub std::net::SocketAddr);

impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>>
    for ClientAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, crate::tls::TlsListener>>
    for ClientAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, crate::tls::TlsListener>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

/// Serves the admin routes on `listener` until `stop` fires; over HTTPS when `tls` is given.
pub async fn serve(
    listener: std::net::TcpListener,
    state: AdminState,
    tls: Option<Arc<crate::tls::CertStore>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let stopped = async move {
        let _ = stop.changed().await;
    };
    match tls {
        None => {
            axum::serve(
                listener,
                router(state).into_make_service_with_connect_info::<ClientAddr>(),
            )
            .with_graceful_shutdown(stopped)
            .await
        }
        Some(certs) => {
            let tls = crate::tls::TlsListener::new(listener, certs)?;
            axum::serve(
                tls,
                router(state).into_make_service_with_connect_info::<ClientAddr>(),
            )
            .with_graceful_shutdown(stopped)
            .await
        }
    }
}
