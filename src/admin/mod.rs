//! The admin listener: the token REST API, probes and Prometheus metrics, served by axum on
//! Tollgate's control-plane runtime (beside the token store's reload and write-behind loop),
//! on its own port (127.0.0.1 by default).

pub mod api;
pub mod ui;

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::auth::Verifier;
use crate::config::HashParams;
use crate::metrics::METRICS;
use crate::store::Store;

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
}

/// Every admin route.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(api::routes(state.clone()))
        .merge(ui::routes())
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

async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    if s.store.set.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no token set loaded yet\n")
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

/// Serves the admin routes on `listener` until `stop` fires.
pub async fn serve(
    listener: std::net::TcpListener,
    state: AdminState,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move {
            let _ = stop.changed().await;
        })
        .await
}
