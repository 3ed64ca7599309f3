//! Quota usage in the database (when there is no Redis): one row per token and period, to
//! which every replica adds its counts.

use sqlx::Row;

use super::{unavailable, Database, DbError};

impl Database {
    /// Adds `(requests, bytes)` to token `id`'s quota usage in period `index` of
    /// `period_seconds`, and returns the totals of every replica.
    pub async fn add_quota_usage(
        &self,
        id: &str,
        period_seconds: u64,
        index: u64,
        add: (u64, u64),
    ) -> Result<(u64, u64), DbError> {
        let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let row = sqlx::query(
            "INSERT INTO token_quota_usage (token_id, period_seconds, period_index, requests, bytes) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (token_id, period_seconds, period_index) \
             DO UPDATE SET requests = token_quota_usage.requests + excluded.requests, \
             bytes = token_quota_usage.bytes + excluded.bytes \
             RETURNING requests, bytes",
        )
        .bind(id.to_owned())
        .bind(clamp(period_seconds))
        .bind(clamp(index))
        .bind(clamp(add.0))
        .bind(clamp(add.1))
        .fetch_one(&self.pool)
        .await
        .map_err(unavailable)?;
        let requests: i64 = row.try_get(0).map_err(unavailable)?;
        let bytes: i64 = row.try_get(1).map_err(unavailable)?;
        Ok((requests.max(0) as u64, bytes.max(0) as u64))
    }
}
