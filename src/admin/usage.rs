//! Usage routes of the admin API (behind the manager-token check of [`super::api`]):
//! `GET /api/v1/tokens/{id}/usage` (a token's usage per day, and its most fetched packages and
//! paths) and `GET /api/v1/usage?path=…|package=…` (the reverse lookup: which tokens fetched a
//! path or a package, when, how often, from how many addresses; per version for a package). Also the webhook hook of the token changes.

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use serde_json::{json, Value};

use super::error::ApiError;
use super::AdminState;
use crate::config::WebhookEvent;
use crate::store::db::Database;
use crate::token::Token;
use crate::usage::{db, packages_named, DayRange, Ledger};

type Params = Result<Query<HashMap<String, String>>, QueryRejection>;

/// The usage routes (the caller adds the manager check).
pub(super) fn routes() -> Router<AdminState> {
    Router::new()
        .route("/api/v1/tokens/{id}/usage", get(token_usage))
        .route("/api/v1/usage", get(path_usage))
}

/// Queues the webhook event of a token change made through the API.
pub(super) fn notify(s: &AdminState, kind: WebhookEvent, t: &Token, actor: &Token) {
    if let Some(w) = &s.webhooks {
        w.token_event(kind, t, actor);
    }
}

fn ledger(s: &AdminState) -> Result<(&Ledger, &Database), ApiError> {
    let ledger = s.usage.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "no_ledger",
            "usage is not recorded: usage.enabled is false, or there is no database (tokens.database: none and no usage.database)",
        )
    })?;
    let db = ledger.database().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the usage database is not connected yet; retry shortly",
        )
    })?;
    Ok((ledger, db))
}

fn params(p: Params) -> Result<HashMap<String, String>, ApiError> {
    p.map(|Query(q)| q)
        .map_err(|e| ApiError::bad(format!("query: {}", e.body_text())))
}

fn range(q: &HashMap<String, String>) -> Result<DayRange, ApiError> {
    DayRange::parse(
        q.get("from").map(String::as_str),
        q.get("to").map(String::as_str),
        Utc::now(),
    )
    .map_err(ApiError::bad)
}

async fn token_usage(
    State(s): State<AdminState>,
    Path(id): Path<String>,
    q: Params,
) -> Result<Json<Value>, ApiError> {
    let q = params(q)?;
    match q.get("granularity").map(String::as_str) {
        None | Some("day") => {}
        Some(other) => {
            return Err(ApiError::bad(format!(
                "granularity: {other:?} is not supported (day)"
            )))
        }
    }
    let range = range(&q)?;
    let (ledger, database) = ledger(&s)?;
    // A revoked token's usage stays readable by its id.
    let snap = s.store.set.load();
    let known = snap.by_id(&id).or_else(|| snap.by_name(&id)).cloned();
    let token_id = match &known {
        Some(t) => t.id.to_string(),
        None if crate::token::valid_name(&id) => id.clone(),
        None => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no token {id:?}"),
            ))
        }
    };
    let max = ledger.config().max_addresses;
    let (days, keys) = db::token_usage(database, &token_id, &range.from, &range.to, max).await?;
    Ok(Json(json!({
        "token": {"id": token_id, "name": known.as_ref().map(|t| &*t.name)},
        "from": range.from,
        "to": range.to,
        "granularity": "day",
        "days": days,
        "paths": keys,
    })))
}

/// Rows as JSON, each with its token's name (`null` once the token is gone).
fn named<'a, T: serde::Serialize + 'a>(
    s: &AdminState,
    rows: impl Iterator<Item = (&'a str, &'a T)>,
) -> Vec<Value> {
    let snap = s.store.set.load();
    rows.map(|(id, r)| {
        let mut v = serde_json::to_value(r).unwrap_or_default();
        v["token_name"] = json!(snap.by_id(id).map(|t| t.name.to_string()));
        v
    })
    .collect()
}

async fn path_usage(State(s): State<AdminState>, q: Params) -> Result<Json<Value>, ApiError> {
    let q = params(q)?;
    if q.contains_key("package") {
        return package_usage(&s, &q).await;
    }
    for only in ["ecosystem", "version"] {
        if q.contains_key(only) {
            return Err(ApiError::bad(format!("{only}: only with package=")));
        }
    }
    let raw = q.get("path").ok_or_else(|| {
        ApiError::bad("path is required (a normalized path such as /p2/acme/widget.json)")
    })?;
    let path = crate::token::normalize_path(raw)
        .map_err(|e| ApiError::bad(format!("path: {e}")))?
        .into_owned();
    let range = range(&q)?;
    let (ledger, database) = ledger(&s)?;
    let max = ledger.config().max_addresses;
    let rows = db::path_usage(database, &path, &range.from, &range.to, max).await?;
    let tokens = named(&s, rows.iter().map(|r| (&*r.token_id, r)));
    Ok(Json(json!({
        "path": path,
        "from": range.from,
        "to": range.to,
        "tokens": tokens,
    })))
}

/// `GET /api/v1/usage?package=NAME[&ecosystem=E][&version=V]`: which tokens fetched a package
/// (every ecosystem of the layouts whose rules accept the name, unless one is given), their
/// totals and what they fetched of each version.
async fn package_usage(
    s: &AdminState,
    q: &HashMap<String, String>,
) -> Result<Json<Value>, ApiError> {
    if q.contains_key("path") {
        return Err(ApiError::bad("path and package: give one"));
    }
    let name = q.get("package").map(String::as_str).unwrap_or_default();
    let version = match q.get("version").map(|v| v.trim()) {
        Some("") => return Err(ApiError::bad("version: empty")),
        v => v,
    };
    let range = range(q)?;
    let (ledger, database) = ledger(s)?;
    let packages = packages_named(
        name,
        q.get("ecosystem").map(String::as_str),
        ledger.ecosystems().iter().copied(),
    )
    .map_err(ApiError::bad)?;
    let max = ledger.config().max_addresses;
    let rows =
        crate::usage::package_usage(database, &packages, version, &range.from, &range.to, max)
            .await?;
    let tokens = named(s, rows.iter().map(|r| (&*r.token_id, r)));
    let searched: Vec<Value> = packages
        .iter()
        .map(|(e, n)| json!({"ecosystem": e.as_str(), "package": n}))
        .collect();
    Ok(Json(json!({
        "package": name,
        "packages": searched,
        "version": version,
        "from": range.from,
        "to": range.to,
        "tokens": tokens,
    })))
}
