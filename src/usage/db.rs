//! The ledger's tables (`usage_daily`, `usage_addresses`; migrations `0009_usage` and
//! `0010_usage_packages` SQLite, `0010_usage` and `0011_usage_packages` PostgreSQL): batch writes, the per-token and reverse queries, the retention
//! purge, and the webhook claim rows (`webhook_claims`) that make one replica send each event.

use std::collections::HashMap;

use serde::Serialize;
use sqlx::Row;

use super::{day_text, Entry};
use crate::store::db::{Database, DbError};

pub(super) fn unavailable(e: sqlx::Error) -> DbError {
    DbError::Unavailable(e.to_string())
}

/// Entries written per transaction.
const CHUNK: usize = 1000;

/// Adds a batch of entries to the stored rows (counters summed, first/last widened, addresses
/// added up to `max_addresses` per row).
pub async fn write(db: &Database, batch: &[Entry], max_addresses: usize) -> Result<(), DbError> {
    for chunk in batch.chunks(CHUNK) {
        let mut tx = db.pool().begin().await.map_err(unavailable)?;
        for e in chunk {
            let day = day_text(e.day);
            let key = e.key.stored();
            let (eco, package, version) = match e.key.parts() {
                Some(p) => (p.ecosystem.as_str(), p.package, p.version),
                None => ("", "", ""),
            };
            let c = &e.counters;
            sqlx::query(
                "INSERT INTO usage_daily (token_id, day, usage_key, requests, bytes_sent, first_at, \
                 last_at, status_2xx, status_3xx, status_4xx, status_5xx, ecosystem, package, \
                 version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
                 ON CONFLICT (token_id, day, usage_key) DO UPDATE SET \
                 requests = usage_daily.requests + excluded.requests, \
                 bytes_sent = usage_daily.bytes_sent + excluded.bytes_sent, \
                 first_at = CASE WHEN excluded.first_at < usage_daily.first_at \
                 THEN excluded.first_at ELSE usage_daily.first_at END, \
                 last_at = CASE WHEN excluded.last_at > usage_daily.last_at \
                 THEN excluded.last_at ELSE usage_daily.last_at END, \
                 status_2xx = usage_daily.status_2xx + excluded.status_2xx, \
                 status_3xx = usage_daily.status_3xx + excluded.status_3xx, \
                 status_4xx = usage_daily.status_4xx + excluded.status_4xx, \
                 status_5xx = usage_daily.status_5xx + excluded.status_5xx",
            )
            .bind(&*e.token)
            .bind(&day)
            .bind(key)
            .bind(c.requests as i64)
            .bind(c.bytes as i64)
            .bind(c.first_ms)
            .bind(c.last_ms)
            .bind(c.status[0] as i64)
            .bind(c.status[1] as i64)
            .bind(c.status[2] as i64)
            .bind(c.status[3] as i64)
            .bind(eco)
            .bind(package)
            .bind(version)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
            for ip in &c.addresses {
                sqlx::query(
                    "INSERT INTO usage_addresses (token_id, day, usage_key, address, ecosystem, \
                     package, version) SELECT $1, $2, $3, $4, $6, $7, $8 WHERE (SELECT COUNT(*) FROM usage_addresses \
                     WHERE token_id = $1 AND day = $2 AND usage_key = $3) < $5 \
                     ON CONFLICT DO NOTHING",
                )
                .bind(&*e.token)
                .bind(&day)
                .bind(key)
                .bind(ip.to_string())
                .bind(max_addresses as i64)
                .bind(eco)
                .bind(package)
                .bind(version)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
            }
        }
        tx.commit().await.map_err(unavailable)?;
    }
    Ok(())
}

/// Deletes rows of days before `before` (`YYYY-MM-DD`) and claims older than `claims_before`
/// (Unix milliseconds); returns the ledger rows deleted.
pub async fn purge(db: &Database, before: &str, claims_before: i64) -> Result<u64, DbError> {
    let rows = sqlx::query("DELETE FROM usage_daily WHERE day < $1")
        .bind(before)
        .execute(db.pool())
        .await
        .map_err(unavailable)?
        .rows_affected();
    sqlx::query("DELETE FROM usage_addresses WHERE day < $1")
        .bind(before)
        .execute(db.pool())
        .await
        .map_err(unavailable)?;
    sqlx::query("DELETE FROM webhook_claims WHERE claimed_at < $1")
        .bind(claims_before)
        .execute(db.pool())
        .await
        .map_err(unavailable)?;
    Ok(rows)
}

/// Claims `key` for this process: true when no process (replica) claimed it before.
pub async fn claim(db: &Database, key: &str, now_ms: i64) -> Result<bool, DbError> {
    let done = sqlx::query(
        "INSERT INTO webhook_claims (claim, claimed_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(key)
    .bind(now_ms)
    .execute(db.pool())
    .await
    .map_err(unavailable)?;
    Ok(done.rows_affected() == 1)
}

/// Gives a claim back (its event could not be sent: another try may claim it again).
pub async fn unclaim(db: &Database, key: &str) -> Result<(), DbError> {
    sqlx::query("DELETE FROM webhook_claims WHERE claim = $1")
        .bind(key)
        .execute(db.pool())
        .await
        .map(drop)
        .map_err(unavailable)
}

/// Usage summed over some rows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Requests.
    pub requests: i64,
    /// Response body bytes sent.
    pub bytes_sent: i64,
    /// First request (RFC 3339).
    pub first_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Last request (RFC 3339).
    pub last_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Responses by class.
    pub status: StatusClasses,
    /// Distinct client addresses (at least this many when `addresses_capped`).
    pub addresses: i64,
    /// True when a row reached `usage.max_addresses`: the real count may be higher.
    pub addresses_capped: bool,
}

/// Responses by status class.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StatusClasses {
    /// 2xx.
    #[serde(rename = "2xx")]
    pub s2xx: i64,
    /// 3xx.
    #[serde(rename = "3xx")]
    pub s3xx: i64,
    /// 4xx.
    #[serde(rename = "4xx")]
    pub s4xx: i64,
    /// 5xx.
    #[serde(rename = "5xx")]
    pub s5xx: i64,
}

/// One day of a token's usage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DayUsage {
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    /// That day's totals.
    #[serde(flatten)]
    pub totals: Totals,
}

/// One key (path) a token fetched, over the whole range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyUsage {
    /// The key as stored: a path, a package key (`pkg:composer/acme/widget@2.3.1`) or `other`.
    pub key: String,
    /// A package key's ecosystem.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ecosystem: Option<String>,
    /// A package key's package (normal form).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    /// A package key's version (`null`: the package's metadata, no version).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Requests.
    pub requests: i64,
    /// Bytes sent.
    pub bytes_sent: i64,
    /// Last request.
    pub last_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// One token's use of a path (the reverse lookup).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenUsage {
    /// The token's id.
    pub token_id: String,
    /// Days with at least one request.
    pub days: i64,
    /// The totals.
    #[serde(flatten)]
    pub totals: Totals,
}

/// The totals' columns. PostgreSQL sums BIGINTs into NUMERIC, which the `Any` driver cannot
/// read as an integer: every sum is cast back.
pub(super) const SUMS: &str = "CAST(SUM(requests) AS BIGINT), CAST(SUM(bytes_sent) AS BIGINT), \
                    MIN(first_at), MAX(last_at), CAST(SUM(status_2xx) AS BIGINT), \
                    CAST(SUM(status_3xx) AS BIGINT), CAST(SUM(status_4xx) AS BIGINT), \
                    CAST(SUM(status_5xx) AS BIGINT)";

pub(super) fn totals(r: &sqlx::any::AnyRow, from: usize) -> Result<Totals, DbError> {
    let get = |i: usize| -> Result<i64, DbError> {
        r.try_get::<Option<i64>, _>(from + i)
            .map(Option::unwrap_or_default)
            .map_err(unavailable)
    };
    let at = |i: usize| -> Result<Option<chrono::DateTime<chrono::Utc>>, DbError> {
        Ok(r.try_get::<Option<i64>, _>(from + i)
            .map_err(unavailable)?
            .and_then(chrono::DateTime::from_timestamp_millis))
    };
    Ok(Totals {
        requests: get(0)?,
        bytes_sent: get(1)?,
        first_at: at(2)?,
        last_at: at(3)?,
        status: StatusClasses {
            s2xx: get(4)?,
            s3xx: get(5)?,
            s4xx: get(6)?,
            s5xx: get(7)?,
        },
        addresses: 0,
        addresses_capped: false,
    })
}

/// Most keys listed per token in [`token_usage`].
pub const MAX_KEYS_SHOWN: i64 = 50;
/// Most tokens listed by [`path_usage`].
pub const MAX_TOKENS_SHOWN: i64 = 1000;

/// A token's usage per day from `from` to `to` (inclusive, `YYYY-MM-DD`), and its most
/// fetched keys over the range.
pub async fn token_usage(
    db: &Database,
    token: &str,
    from: &str,
    to: &str,
    max_addresses: usize,
) -> Result<(Vec<DayUsage>, Vec<KeyUsage>), DbError> {
    let rows = sqlx::query(&format!(
        "SELECT day, {SUMS} FROM usage_daily WHERE token_id = $1 AND day >= $2 AND day <= $3 \
         GROUP BY day ORDER BY day"
    ))
    .bind(token)
    .bind(from)
    .bind(to)
    .fetch_all(db.pool())
    .await
    .map_err(unavailable)?;
    let capped = capped_days(db, token, from, to, max_addresses).await?;
    let distinct = distinct_per_day(db, token, from, to).await?;
    let mut days = Vec::with_capacity(rows.len());
    for r in &rows {
        let day: String = r.try_get(0).map_err(unavailable)?;
        let mut totals = totals(r, 1)?;
        totals.addresses = distinct.get(&day).copied().unwrap_or_default();
        totals.addresses_capped = capped.contains(&day);
        days.push(DayUsage { day, totals });
    }
    let keys = sqlx::query(
        "SELECT usage_key, CAST(SUM(requests) AS BIGINT), CAST(SUM(bytes_sent) AS BIGINT), \
         MAX(last_at), ecosystem, package, version FROM usage_daily \
         WHERE token_id = $1 AND day >= $2 AND day <= $3 \
         GROUP BY usage_key, ecosystem, package, version \
         ORDER BY SUM(requests) DESC, usage_key LIMIT $4",
    )
    .bind(token)
    .bind(from)
    .bind(to)
    .bind(MAX_KEYS_SHOWN)
    .fetch_all(db.pool())
    .await
    .map_err(unavailable)?;
    let keys = keys
        .iter()
        .map(|r| {
            let text = |i: usize| -> Result<String, DbError> {
                r.try_get::<String, _>(i).map_err(unavailable)
            };
            let (ecosystem, package) = (text(4)?, text(5)?);
            let is_package = !package.is_empty();
            let version = Some(text(6)?).filter(|v| is_package && !v.is_empty());
            Ok(KeyUsage {
                key: r.try_get(0).map_err(unavailable)?,
                ecosystem: is_package.then_some(ecosystem),
                package: is_package.then_some(package),
                version,
                requests: r
                    .try_get::<Option<i64>, _>(1)
                    .map_err(unavailable)?
                    .unwrap_or_default(),
                bytes_sent: r
                    .try_get::<Option<i64>, _>(2)
                    .map_err(unavailable)?
                    .unwrap_or_default(),
                last_at: r
                    .try_get::<Option<i64>, _>(3)
                    .map_err(unavailable)?
                    .and_then(chrono::DateTime::from_timestamp_millis),
            })
        })
        .collect::<Result<Vec<_>, DbError>>()?;
    Ok((days, keys))
}

/// The days on which one of the token's rows reached `max_addresses` (its address count is
/// then a lower bound).
async fn capped_days(
    db: &Database,
    token: &str,
    from: &str,
    to: &str,
    max_addresses: usize,
) -> Result<std::collections::HashSet<String>, DbError> {
    let rows = sqlx::query(
        "SELECT day FROM usage_addresses WHERE token_id = $1 AND day >= $2 AND day <= $3 \
         GROUP BY day, usage_key HAVING COUNT(*) >= $4",
    )
    .bind(token)
    .bind(from)
    .bind(to)
    .bind(max_addresses as i64)
    .fetch_all(db.pool())
    .await
    .map_err(unavailable)?;
    rows.iter()
        .map(|r| r.try_get::<String, _>(0).map_err(unavailable))
        .collect()
}

async fn distinct_per_day(
    db: &Database,
    token: &str,
    from: &str,
    to: &str,
) -> Result<HashMap<String, i64>, DbError> {
    let rows = sqlx::query(
        "SELECT day, COUNT(DISTINCT address) FROM usage_addresses WHERE token_id = $1 \
         AND day >= $2 AND day <= $3 GROUP BY day",
    )
    .bind(token)
    .bind(from)
    .bind(to)
    .fetch_all(db.pool())
    .await
    .map_err(unavailable)?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get(0).map_err(unavailable)?,
                r.try_get(1).map_err(unavailable)?,
            ))
        })
        .collect()
}

/// Which tokens fetched `key` from `from` to `to` (inclusive): per token, the totals, the days
/// and the distinct addresses; most requests first.
pub async fn path_usage(
    db: &Database,
    key: &str,
    from: &str,
    to: &str,
    max_addresses: usize,
) -> Result<Vec<TokenUsage>, DbError> {
    let rows = sqlx::query(&format!(
        "SELECT token_id, COUNT(DISTINCT day), {SUMS} FROM usage_daily WHERE usage_key = $1 \
         AND day >= $2 AND day <= $3 GROUP BY token_id ORDER BY SUM(requests) DESC, token_id \
         LIMIT $4"
    ))
    .bind(key)
    .bind(from)
    .bind(to)
    .bind(MAX_TOKENS_SHOWN)
    .fetch_all(db.pool())
    .await
    .map_err(unavailable)?;
    let addr_rows = sqlx::query(
        "SELECT token_id, COUNT(DISTINCT address), MAX(n) FROM (SELECT a.token_id, a.address, \
         (SELECT COUNT(*) FROM usage_addresses b WHERE b.token_id = a.token_id AND b.day = a.day \
         AND b.usage_key = a.usage_key) AS n FROM usage_addresses a WHERE a.usage_key = $1 \
         AND a.day >= $2 AND a.day <= $3) t GROUP BY token_id",
    )
    .bind(key)
    .bind(from)
    .bind(to)
    .fetch_all(db.pool())
    .await
    .map_err(unavailable)?;
    let addresses = address_counts(&addr_rows, max_addresses)?;
    rows.iter()
        .map(|r| {
            let (token_id, days, totals) = token_totals(r, &addresses)?;
            Ok(TokenUsage {
                days,
                token_id,
                totals,
            })
        })
        .collect()
}

/// Distinct addresses per token from rows of (token, distinct addresses, largest row's
/// count), and whether a row reached `max_addresses` (the count is then a lower bound).
pub(super) fn address_counts(
    rows: &[sqlx::any::AnyRow],
    max_addresses: usize,
) -> Result<HashMap<String, (i64, bool)>, DbError> {
    let mut addresses = HashMap::with_capacity(rows.len());
    for r in rows {
        let id: String = r.try_get(0).map_err(unavailable)?;
        let n: i64 = r.try_get(1).map_err(unavailable)?;
        let largest: i64 = r
            .try_get::<Option<i64>, _>(2)
            .map_err(unavailable)?
            .unwrap_or_default();
        addresses.insert(id, (n, largest >= max_addresses as i64));
    }
    Ok(addresses)
}

/// A row of (token, days, [`SUMS`]…) with the token's addresses from [`address_counts`].
pub(super) fn token_totals(
    r: &sqlx::any::AnyRow,
    addresses: &HashMap<String, (i64, bool)>,
) -> Result<(String, i64, Totals), DbError> {
    let token_id: String = r.try_get(0).map_err(unavailable)?;
    let mut totals = totals(r, 2)?;
    if let Some((n, capped)) = addresses.get(&token_id) {
        totals.addresses = *n;
        totals.addresses_capped = *capped;
    }
    Ok((token_id, r.try_get(1).map_err(unavailable)?, totals))
}
