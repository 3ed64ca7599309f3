//! The token REST API: create (the token shown once), list, show, modify,
//! regenerate and revoke database tokens. Every request needs a manager token; every change
//! is audited; bad input is a 4xx JSON error, never a 500.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chrono::Utc;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::error::ApiError;
use super::AdminState;
use crate::auth::{parse_authorization, AuthError, Caller};
use crate::config::WebhookEvent;
use crate::store::manage::{self, NewToken, Patch};
use crate::store::rotation::{self, RegenerateRequest};
use crate::store::{ChangeError, StoreError};
use crate::token::{Permission, Secret, Token};

type ApiResult<T> = Result<T, ApiError>;

/// Largest admin request body (a token record is well under 64 KiB).
const MAX_BODY: usize = 64 * 1024;

/// The manager token behind an admin request.
#[derive(Clone)]
pub struct Actor(pub Arc<Token>);

/// The `/api/v1` routes, behind the manager-token check.
pub fn routes(state: AdminState) -> Router<AdminState> {
    Router::new()
        .route("/api/v1/tokens", get(list).post(create))
        .route(
            "/api/v1/tokens/{id}",
            get(show).patch(modify).delete(revoke),
        )
        .route("/api/v1/tokens/{id}/regenerate", post(regenerate))
        .route("/api/v1/reload", post(reload))
        .merge(super::usage::routes())
        .merge(super::trust::routes())
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .route_layer(axum::middleware::from_fn_with_state(state, require_manager))
}

async fn require_manager(State(s): State<AdminState>, mut req: Request, next: Next) -> Response {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    let presented = match parse_authorization(header, &s.token_usernames) {
        Ok(p) => p,
        Err(e) => {
            return ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", e.to_string())
                .into_response()
        }
    };
    let snapshot = s.store.set.load();
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<super::ClientAddr>>()
        .map(|c| c.0 .0.ip());
    let addr = s.trusted_proxies.client(peer, || {
        req.headers()
            .get_all("x-forwarded-for")
            .iter()
            .map(|v| v.as_bytes())
    });
    let token = match s
        .verifier
        .authenticate(&presented, &snapshot, Utc::now(), Caller::admin(addr))
        .await
    {
        Ok(t) => t,
        Err(AuthError::Busy) => {
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "verification capacity exhausted; retry",
            )
            .into_response()
        }
        Err(AuthError::Throttled(secs)) => {
            let mut r = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "verification_throttled",
                format!(
                    "too many attempts with wrong or new secrets from this address; retry in {secs} s"
                ),
            )
            .into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            return r;
        }
        Err(AuthError::Expired) => {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "token_expired",
                "the token has expired",
            )
            .into_response()
        }
        Err(AuthError::IpNotAllowed) => {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "ip_not_allowed",
                "the token may not be used from this client address",
            )
            .into_response()
        }
        Err(AuthError::Disabled) => {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "token_disabled",
                "the token is disabled",
            )
            .into_response()
        }
        Err(_) => {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "the token is unknown, revoked, or its secret is wrong",
            )
            .into_response()
        }
    };
    if token.permission != Permission::Manager {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the admin API needs a manager token",
        )
        .into_response();
    }
    let agent = req.headers().get(header::USER_AGENT);
    s.store
        .touch(&token, Utc::now(), addr, agent.map(HeaderValue::as_bytes));
    req.extensions_mut().insert(Actor(token));
    next.run(req).await
}

/// The request body, or a JSON error (e.g. 413 over the size limit).
pub(super) type Body = Result<Bytes, BytesRejection>;

pub(super) fn parse_body<T: DeserializeOwned>(body: &Body) -> ApiResult<T> {
    let body = match body {
        Ok(b) => b,
        Err(rejection) => {
            let status = rejection.status();
            let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
                "payload_too_large"
            } else {
                "invalid_request"
            };
            return Err(ApiError::new(status, code, rejection.body_text()));
        }
    };
    if body.is_empty() {
        return Err(ApiError::bad("a JSON body is required"));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad(format!("invalid JSON body: {e}")))
}

/// The public view of a token: never the hash.
pub fn view(s: &AdminState, t: &Token) -> Value {
    let mut v = manage::token_view(t, s.store.last_used(&t.id).as_ref(), Utc::now());
    if let Some(q) = &t.quota {
        add_usage(&mut v, s.quotas.usage(&t.id, q));
    }
    v
}

/// `quota.used` and `quota.resets_at` of a view.
fn add_usage(v: &mut Value, usage: crate::shared::Usage) {
    v["quota"]["used"] = json!({"requests": usage.requests, "bytes": usage.bytes});
    v["quota"]["resets_at"] = json!(usage.resets_at);
}

fn audit(actor: &Actor, action: &str, t: &Token) {
    tracing::info!(
        target: "audit",
        action,
        actor_id = &*actor.0.id,
        actor_name = &*actor.0.name,
        token_id = &*t.id,
        token_name = &*t.name,
        "admin change"
    );
}

fn find(s: &AdminState, id: &str) -> ApiResult<Arc<Token>> {
    let snap = s.store.set.load();
    snap.by_id(id)
        .or_else(|| snap.by_name(id))
        .cloned()
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no token {id:?}"),
            )
        })
}

/// Refuses `t` unless it is within the acting token's rights (see [`manage::check_within`]).
fn within(s: &AdminState, actor: &Actor, t: &Token) -> ApiResult<()> {
    Ok(manage::check_within(&actor.0, t, s.default_rate_limit)?)
}

fn writable(t: &Token) -> ApiResult<()> {
    Ok(manage::check_writable(t)?)
}

fn db(s: &AdminState) -> ApiResult<&crate::store::db::Database> {
    if !s.store.has_database() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_database",
            "no token database is configured (tokens.database: none); tokens come from files only",
        ));
    }
    s.store.db().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the token database is not connected yet; retry shortly",
        )
    })
}

async fn apply(s: &AdminState) -> ApiResult<()> {
    s.store.rebuild().await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "reload_failed",
            format!("the change is stored but the token set could not be rebuilt: {e}"),
        )
    })
}

/// Runs CPU-heavy record building (argon2) on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ChangeError> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "hashing failed",
            )
        })?
        .map_err(ApiError::from)
}

/// Refuses a name another token (from any source) already has, or another token's id.
fn check_name_free(s: &AdminState, name: &str, except_id: Option<&str>) -> ApiResult<()> {
    let snap = s.store.set.load();
    if let Some(other) = snap.by_id(name) {
        if Some(&*other.id) != except_id {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("{name:?} is the id of another token: a name cannot be a token id"),
            ));
        }
    }
    if let Some(other) = snap.by_name(name) {
        if Some(&*other.id) != except_id {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!(
                    "a token named {name:?} already exists ({})",
                    other.source.kind()
                ),
            ));
        }
    }
    Ok(())
}

async fn list(State(s): State<AdminState>) -> Json<Value> {
    let snap = s.store.set.load();
    let mut tokens: Vec<&Arc<Token>> = snap.iter().collect();
    tokens.sort_by(|a, b| a.name.cmp(&b.name));
    Json(json!({"tokens": tokens.iter().map(|t| view(&s, t)).collect::<Vec<_>>()}))
}

async fn show(State(s): State<AdminState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let t = find(&s, &id)?;
    let mut v = view(&s, &t);
    if let Some(q) = &t.quota {
        // The shared total, not only what this replica counted.
        add_usage(&mut v, s.quotas.current(&t.id, q).await);
    }
    Ok(Json(v))
}

fn created(s: &AdminState, t: &Token, secret: &Secret, status: StatusCode) -> Response {
    let mut body = view(s, t);
    body["token"] = Value::String(secret.expose().to_string());
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&format!("/api/v1/tokens/{}", t.id)) {
        headers.insert(header::LOCATION, v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    (status, headers, Json(body)).into_response()
}

async fn create(
    State(s): State<AdminState>,
    Extension(actor): Extension<Actor>,
    body: Body,
) -> ApiResult<Response> {
    let req: NewToken = parse_body(&body)?;
    let database = db(&s)?;
    check_name_free(&s, &req.name, None)?;
    let params = s.hashing;
    let max = s.max_lifetime;
    let (t, secret) = blocking(move || manage::build_new(req, &params, Utc::now(), max)).await?;
    within(&s, &actor, &t)?;
    database.insert(&t).await?;
    apply(&s).await?;
    audit(&actor, "token.create", &t);
    super::usage::notify(&s, WebhookEvent::Created, &t, &actor.0);
    Ok(created(&s, &t, &secret, StatusCode::CREATED))
}

async fn modify(
    State(s): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult<Json<Value>> {
    let raw: Value = parse_body(&body)?;
    if let Some(field) = ["expires_in", "expires_at", "created_at"]
        .into_iter()
        .find(|f| raw.get(f).is_some())
    {
        return Err(ApiError::bad(format!(
            "{field} cannot be changed: expiry is chosen at creation; create a new token instead"
        )));
    }
    let patch: Patch = parse_body(&body)?;
    let current = find(&s, &id)?;
    writable(&current)?;
    let database = db(&s)?;
    if let Some(name) = &patch.name {
        check_name_free(&s, name, Some(&current.id))?;
    }
    let mut t = manage::apply_patch(&current, patch)?;
    if t.previous.is_some() && !s.verifier.rotation.previous_usable(&current, Utc::now()) {
        // Retired here (its database write may still be on its way): a change must not bring
        // the previous secret back under a new generation.
        t.previous = None;
    }
    within(&s, &actor, &current)?;
    within(&s, &actor, &t)?;
    database.update(&t, current.generation).await?;
    apply(&s).await?;
    audit(&actor, "token.modify", &t);
    Ok(Json(view(&s, &t)))
}

async fn regenerate(
    State(s): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    // The body is optional: none (or empty) regenerates without an overlap.
    let req: RegenerateRequest = match &body {
        Ok(b) if b.is_empty() => RegenerateRequest::default(),
        _ => parse_body(&body)?,
    };
    let overlap = req
        .overlap
        .as_deref()
        .map(|o| rotation::parse_overlap(o, s.max_overlap, s.max_lifetime))
        .transpose()?;
    let current = find(&s, &id)?;
    writable(&current)?;
    within(&s, &actor, &current)?;
    let database = db(&s)?;
    let params = s.hashing;
    let cur = current.clone();
    let max = s.max_lifetime;
    let now = Utc::now();
    let (t, secret) = blocking(move || manage::regenerate(&cur, &params, now, max)).await?;
    let t = match overlap {
        Some(o) => rotation::with_overlap(&current, t, o, now),
        None => t,
    };
    database.update(&t, current.generation).await?;
    apply(&s).await?;
    audit(&actor, "token.regenerate", &t);
    super::usage::notify(&s, WebhookEvent::Regenerated, &t, &actor.0);
    if let Some(p) = &t.previous {
        tracing::info!(
            target: "audit",
            action = "token.overlap",
            token_id = &*t.id,
            token_name = &*t.name,
            previous_valid_until = %p.valid_until.to_rfc3339(),
            "previous secret kept until the overlap ends"
        );
    }
    Ok(created(&s, &t, &secret, StatusCode::OK))
}

async fn revoke(
    State(s): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let current = find(&s, &id)?;
    writable(&current)?;
    within(&s, &actor, &current)?;
    let database = db(&s)?;
    if !database.delete(&current.id).await? {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no token {id:?}"),
        ));
    }
    apply(&s).await?;
    audit(&actor, "token.revoke", &current);
    super::usage::notify(&s, WebhookEvent::Revoked, &current, &actor.0);
    Ok(StatusCode::NO_CONTENT)
}

/// Re-reads the token files and the database now.
async fn reload(State(s): State<AdminState>, Extension(actor): Extension<Actor>) -> Response {
    tracing::info!(target: "audit", action = "reload", actor_id = &*actor.0.id, actor_name = &*actor.0.name, "admin reload");
    let result = match s.store.reload_files(true).await {
        Ok(_) => s.store.rebuild().await.map_err(StoreError::from),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => {
            let snap = s.store.set.load();
            Json(json!({"generation": snap.generation, "tokens": snap.len()})).into_response()
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}
