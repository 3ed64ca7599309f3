//! The trust-policy REST API (trusted publishing): list, show, create and delete the policies
//! that let CI jobs trade their OIDC tokens for minted tokens. Policies of the configuration
//! file are listed (`source: file`) but changed only in the file. Behind the manager-token
//! check of `/api/v1`; every change is audited.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::{json, Value};

use super::api::{parse_body, Actor, Body};
use super::error::ApiError;
use super::AdminState;
use crate::config::TrustPolicy;
use crate::oidc::{Oidc, PolicyError};

type ApiResult<T> = Result<T, ApiError>;

/// The `/api/v1/trust-policies` routes (mounted behind the manager-token check).
pub(super) fn routes() -> Router<AdminState> {
    Router::new()
        .route("/api/v1/trust-policies", get(list).post(create))
        .route("/api/v1/trust-policies/{name}", get(show).delete(remove))
}

impl From<PolicyError> for ApiError {
    fn from(e: PolicyError) -> Self {
        let (status, code) = match &e {
            PolicyError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            PolicyError::Duplicate(_) => (StatusCode::CONFLICT, "conflict"),
            PolicyError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            PolicyError::ReadOnly(_) => (StatusCode::CONFLICT, "read_only"),
            PolicyError::NoDatabase => (StatusCode::CONFLICT, "no_database"),
            PolicyError::Unavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "database_unavailable")
            }
        };
        ApiError::new(status, code, e.to_string())
    }
}

fn oidc(s: &AdminState) -> ApiResult<&Oidc> {
    s.oidc.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "oidc_disabled",
            "trusted publishing is off (oidc.enabled: false)",
        )
    })
}

/// A policy as the API shows it: its fields and where it lives.
fn view(p: &TrustPolicy, source: &str) -> Value {
    let mut v = serde_json::to_value(p).unwrap_or_else(|_| json!({}));
    v["source"] = json!(source);
    v
}

/// The list; with trusted publishing off, `enabled: false` and no policies (not an error, so the
/// dashboard asks without provoking a refusal).
async fn list(State(s): State<AdminState>) -> ApiResult<Json<Value>> {
    let Some(oidc) = s.oidc.as_deref() else {
        return Ok(Json(json!({"enabled": false, "policies": []})));
    };
    let all = oidc.policies().await?;
    Ok(Json(json!({
        "enabled": true,
        "policies": all.iter().map(|(p, src)| view(p, src)).collect::<Vec<_>>(),
    })))
}

async fn show(State(s): State<AdminState>, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    let all = oidc(&s)?.policies().await?;
    all.iter()
        .find(|(p, _)| p.name == name)
        .map(|(p, src)| Json(view(p, src)))
        .ok_or_else(|| PolicyError::NotFound(name).into())
}

async fn create(
    State(s): State<AdminState>,
    Extension(actor): Extension<Actor>,
    body: Body,
) -> ApiResult<Response> {
    let policy: TrustPolicy = parse_body(&body)?;
    oidc(&s)?.add_policy(policy.clone()).await?;
    tracing::info!(target: "audit", action = "trust_policy.create", actor_id = &*actor.0.id,
        actor_name = &*actor.0.name, policy = %policy.name, issuer = %policy.issuer, "admin change");
    Ok((StatusCode::CREATED, Json(view(&policy, "database"))).into_response())
}

async fn remove(
    State(s): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    oidc(&s)?.remove_policy(&name).await?;
    tracing::info!(target: "audit", action = "trust_policy.delete", actor_id = &*actor.0.id,
        actor_name = &*actor.0.name, policy = %name, "admin change");
    Ok(StatusCode::NO_CONTENT)
}
