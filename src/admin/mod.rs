//! The admin listener: probes and Prometheus metrics (the token API joins it later).
//! Served by axum on a pingora background service, on its own port (127.0.0.1 by default).

use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::metrics::METRICS;
use crate::store::TokenSet;

/// Shared state of the admin handlers.
#[derive(Clone)]
pub struct AdminState {
    /// The live token set (readiness).
    pub tokens: Arc<TokenSet>,
}

/// The admin HTTP routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    if s.tokens.is_ready() {
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

/// Runs the admin router on a listener bound before the server started.
pub struct AdminService {
    listener: std::sync::Mutex<Option<std::net::TcpListener>>,
    state: AdminState,
}

impl AdminService {
    /// Takes an already bound (so bind errors surface at start-up) listener.
    pub fn new(listener: std::net::TcpListener, state: AdminState) -> Self {
        AdminService {
            listener: std::sync::Mutex::new(Some(listener)),
            state,
        }
    }
}

#[async_trait]
impl BackgroundService for AdminService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(std_listener) = self.listener.lock().ok().and_then(|mut l| l.take()) else {
            return;
        };
        let listener = match std_listener
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpListener::from_std(std_listener))
        {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "admin listener could not start");
                return;
            }
        };
        let app = router(self.state.clone());
        let stop = async move {
            let _ = shutdown.changed().await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!(error = %e, "admin listener failed");
        }
    }
}
