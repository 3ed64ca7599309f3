//! Token records as database rows: times as milliseconds, the disabled flag as 0 or 1, allowed IPs joined by commas, routes and rate limits as JSON, and
//! a row read back into a token (or the reason it is invalid).

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{unavailable, DbError};
use crate::token::{
    self, compile_routes, route_specs, Permission, RateLimitRule, Route, RouteSpec, Source, Token,
};

pub(super) fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(super) fn from_millis(ms: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms).single()
}

pub(super) fn routes_json(routes: &[Route]) -> String {
    serde_json::to_string(&route_specs(routes)).unwrap_or_else(|_| "[]".into())
}

/// The previous secret as its two columns (both `None` when there is none).
pub(super) fn previous_columns(t: &Token) -> (Option<String>, Option<i64>) {
    match &t.previous {
        Some(p) => (
            Some(p.hash.as_str().to_owned()),
            Some(millis(p.valid_until)),
        ),
        None => (None, None),
    }
}

/// The origin of a minted token, as stored (`NULL` for every other token).
pub(super) fn oidc_json(source: &Source) -> Option<String> {
    match source {
        Source::Oidc(o) => serde_json::to_string(&**o).ok(),
        _ => None,
    }
}

pub(super) fn rate_limit_json(r: Option<RateLimitRule>) -> Option<String> {
    r.and_then(|r| serde_json::to_string(&r).ok())
}

pub(super) fn row_to_token(row: &AnyRow) -> Result<Token, DbError> {
    let id: String = row.try_get("id").map_err(unavailable)?;
    let bad = |reason: String| DbError::Corrupt {
        id: id.clone(),
        reason,
    };
    let name: String = row.try_get("name").map_err(unavailable)?;
    let description: Option<String> = row.try_get("description").map_err(unavailable)?;
    let hash: String = row.try_get("hash").map_err(unavailable)?;
    let permission: String = row.try_get("permission").map_err(unavailable)?;
    let routes: String = row.try_get("routes").map_err(unavailable)?;
    let rate_limit: Option<String> = row.try_get("rate_limit").map_err(unavailable)?;
    let created_at: i64 = row.try_get("created_at").map_err(unavailable)?;
    let expires_at: Option<i64> = row.try_get("expires_at").map_err(unavailable)?;
    let generation: i64 = row.try_get("generation").map_err(unavailable)?;
    let disabled: i64 = row.try_get("disabled").map_err(unavailable)?;
    let allowed_ips: String = row.try_get("allowed_ips").map_err(unavailable)?;
    let allowed_ips = token::AllowedIps::parse_stored(&allowed_ips).map_err(bad)?;
    let previous_hash: Option<String> = row.try_get("previous_hash").map_err(unavailable)?;
    let previous_valid_until: Option<i64> =
        row.try_get("previous_valid_until").map_err(unavailable)?;
    let previous = match (previous_hash, previous_valid_until) {
        (Some(h), Some(until)) => Some(token::PreviousSecret {
            hash: token::validate_phc(&h).map_err(|e| bad(format!("previous_hash: {e}")))?,
            valid_until: from_millis(until)
                .ok_or_else(|| bad("previous_valid_until out of range".into()))?,
        }),
        (None, None) => None,
        _ => {
            return Err(bad(
                "previous_hash and previous_valid_until go together".into()
            ))
        }
    };
    let oidc: Option<String> = row.try_get("oidc").map_err(unavailable)?;
    let source = match oidc {
        None => Source::Database,
        Some(o) => Source::Oidc(Arc::new(
            serde_json::from_str(&o).map_err(|e| bad(format!("oidc: {e}")))?,
        )),
    };
    let packages: String = row.try_get("packages").map_err(unavailable)?;
    let packages = crate::token::PackagePatterns::parse_stored(&packages).map_err(bad)?;
    let permission = match permission.as_str() {
        "read" => Permission::Read,
        "write" => Permission::Write,
        "manager" => Permission::Manager,
        other => return Err(bad(format!("permission {other:?}"))),
    };
    let specs: Vec<RouteSpec> =
        serde_json::from_str(&routes).map_err(|e| bad(format!("routes: {e}")))?;
    let routes = compile_routes(&specs).map_err(|e| bad(format!("routes: {e}")))?;
    let rate_limit = rate_limit
        .map(|r| serde_json::from_str::<RateLimitRule>(&r))
        .transpose()
        .map_err(|e| bad(format!("rate_limit: {e}")))?;
    Ok(Token {
        hash: token::validate_phc(&hash).map_err(|e| bad(format!("hash: {e}")))?,
        id: Arc::from(id.as_str()),
        name: Arc::from(name.as_str()),
        description,
        permission,
        routes,
        created_at: from_millis(created_at),
        expires_at: expires_at.and_then(from_millis),
        rate_limit,
        generation: generation as u64,
        disabled: disabled != 0,
        allowed_ips,
        previous,
        packages,
        source,
    })
}
