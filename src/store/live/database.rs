//! The token database as a source: connecting (late, when it is down at start), noticing
//! other processes' writes by the change counter and PostgreSQL `NOTIFY`, and outages (the last
//! good token set keeps serving; only transitions are logged).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{Store, Usage};
use crate::metrics::METRICS;
use crate::store::db::{Database, DbError};

/// PostgreSQL channel the change trigger notifies.
const NOTIFY_CHANNEL: &str = "tollgate_changes";

impl Store {
    /// Connects to the configured database (if any) and loads stored last-use times.
    pub async fn connect(&self) -> Result<(), DbError> {
        let Some(url) = &self.db_url else {
            return Ok(());
        };
        if self.db.get().is_some() {
            return Ok(());
        }
        let db = if self.read_only {
            Database::open_read_only(url).await
        } else {
            Database::open(url).await
        }?;
        METRICS.database_up.set(1);
        if let Ok(usage) = db.usage().await {
            for (id, last) in usage {
                self.usage
                    .entry(Arc::from(id.as_str()))
                    .or_insert(Usage { last, dirty: false });
            }
        }
        let _ = self.db.set(db);
        Ok(())
    }

    /// Rebuilds if another process changed the database since the last build.
    pub async fn poll_database(&self) -> Result<bool, DbError> {
        let Some(db) = self.db.get() else {
            return Ok(false);
        };
        let result = match db.changes().await {
            Ok(now) => {
                self.database_state(true, None);
                if now == self.seen_changes.load(Ordering::Relaxed) {
                    return Ok(false);
                }
                self.rebuild().await.map(|()| true)
            }
            Err(e) => {
                self.database_state(false, Some(&e));
                Err(e)
            }
        };
        let label = if result.is_ok() { "success" } else { "failure" };
        METRICS
            .reloads
            .with_label_values(&["database", label])
            .inc();
        result
    }

    /// Records whether the database answers; logs only the transitions.
    fn database_state(&self, up: bool, error: Option<&DbError>) {
        let was = METRICS.database_up.get() == 1;
        METRICS.database_up.set(up as i64);
        match (was, up) {
            (true, false) => tracing::error!(
                error = %error.map(|e| e.to_string()).unwrap_or_default(),
                "token database unavailable: serving the last token set; admin writes answer 503"
            ),
            (false, true) => tracing::info!("token database available"),
            _ => {}
        }
    }

    /// Follows PostgreSQL `NOTIFY`s of token changes (sent by a trigger on every write), so
    /// replicas rebuild within milliseconds; reconnects with backoff and catches up after.
    pub(super) async fn listen_postgres(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let Some(url) = self.db.get().map(|d| d.url().to_string()) else {
            return;
        };
        let mut backoff = Duration::from_millis(500);
        loop {
            let connect = async {
                let mut l = sqlx::postgres::PgListener::connect(&url).await?;
                l.listen(NOTIFY_CHANNEL).await?;
                Ok::<_, sqlx::Error>(l)
            };
            let listener = tokio::select! {
                r = connect => r,
                _ = stop.changed() => return,
            };
            match listener {
                Ok(mut l) => {
                    backoff = Duration::from_millis(500);
                    tracing::info!("listening for token changes");
                    let _ = self.poll_database().await;
                    loop {
                        tokio::select! {
                            n = l.try_recv() => match n {
                                Ok(Some(_)) => { let _ = self.poll_database().await; }
                                Ok(None) => {
                                    tracing::warn!("change listener lost its connection; reconnecting");
                                    break;
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "change listener failed; reconnecting");
                                    break;
                                }
                            },
                            _ = stop.changed() => return,
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, retry_in = ?backoff, "change listener cannot connect");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}
