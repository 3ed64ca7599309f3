//! The ledger's control-plane loop: connect `usage.database` when one is named, write the
//! in-memory entries every `usage.flush_interval` (and once more on the way out), purge rows
//! past `usage.retention` at start and every hour.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::{day_number, day_text, Ledger};
use crate::store::db::Database;

/// How often rows past the retention are purged.
const PURGE_INTERVAL: Duration = Duration::from_secs(3600);

/// Runs until `stop` fires, then flushes once more.
pub async fn run(ledger: Arc<Ledger>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut flush = tokio::time::interval(ledger.config.flush_interval);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut purge = tokio::time::interval(PURGE_INTERVAL);
    purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut purged_once = false;
    let mut backoff = Duration::from_millis(500);
    loop {
        tokio::select! {
            _ = flush.tick() => {
                if ledger.database().is_none() {
                    if let Some(url) = &ledger.config.database {
                        match Database::open(url).await {
                            Ok(db) => {
                                let _ = ledger.own_db.set(db);
                                tracing::info!("usage database connected");
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, retry_in = ?backoff, "usage database unavailable");
                                backoff = (backoff * 2).min(Duration::from_secs(30));
                            }
                        }
                    }
                }
                if !purged_once && ledger.database().is_some() {
                    purged_once = purge_old(&ledger).await;
                }
                if let Err(e) = ledger.flush().await {
                    tracing::warn!(error = %e, "writing usage failed; kept for the next flush");
                }
                ledger.prune_hours(Utc::now());
            }
            _ = purge.tick() => {
                if ledger.database().is_some() {
                    purge_old(&ledger).await;
                }
            }
            _ = stop.changed() => break,
        }
    }
    if let Err(e) = ledger.flush().await {
        tracing::warn!(error = %e, "writing usage at shutdown failed");
    }
}

/// Deletes rows past the retention; true when it ran.
async fn purge_old(ledger: &Ledger) -> bool {
    let Some(db) = ledger.database() else {
        return false;
    };
    let now = Utc::now();
    let keep_days = (ledger.config.retention.as_secs() / 86_400) as i64;
    let before = day_text(day_number(now) - keep_days + 1);
    let claims_before = now.timestamp_millis() - ledger.config.retention.as_millis() as i64;
    match super::db::purge(db, &before, claims_before).await {
        Ok(n) => {
            if n > 0 {
                tracing::info!(rows = n, before = %before, "usage rows past the retention purged");
            }
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "purging old usage failed; will retry");
            false
        }
    }
}
