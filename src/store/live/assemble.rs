//! Building the token set: the file tokens, the database rows (or, during an outage, the rows
//! of the last good read) and the bootstrap token, records in conflict left out and reported,
//! swapped in as a new snapshot with its metrics.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use chrono::Utc;

use super::{lock, Store};
use crate::metrics::METRICS;
use crate::store::db::DbError;
use crate::store::{Refusal, Snapshot};
use crate::token::Token;

impl Store {
    /// Builds a new snapshot from the file tokens, the database and the bootstrap token, and
    /// swaps it in. On any problem the current snapshot stays.
    pub async fn rebuild(&self) -> Result<(), DbError> {
        self.rebuild_with(None).await
    }

    /// Like [`Store::rebuild`], with `files` replacing the file tokens if the build succeeds.
    /// The file tokens are shared between `files` and the snapshots, never copied.
    pub(super) async fn rebuild_with(&self, files: Option<Vec<Arc<Token>>>) -> Result<(), DbError> {
        let _guard = self.rebuild_lock.lock().await;
        if self.db_url.is_some() && self.db.get().is_none() {
            // Keep good files for the first build, which follows the database connection.
            if let Some(f) = files {
                *lock(&self.files) = f;
            }
            return Ok(());
        }
        let mut problems = Vec::new();
        let mut tokens = match &files {
            Some(f) => f.clone(),
            None => lock(&self.files).clone(),
        };
        let from_files = tokens.len();
        let mut from_db = 0;
        let mut changes_before = None;
        if let Some(db) = self.db.get() {
            let read = async {
                let changes = db.changes().await?;
                let (rows, bad) = db.tokens_with_problems().await?;
                Ok::<_, DbError>((changes, rows, bad))
            }
            .await;
            let rows = match read {
                Ok((changes, rows, bad)) => {
                    changes_before = Some(changes);
                    problems.extend(bad.into_iter().map(Refusal::Row));
                    let rows: Vec<Arc<Token>> = rows.into_iter().map(Arc::new).collect();
                    *lock(&self.db_rows) = Some(rows.clone());
                    rows
                }
                // A token-file edit (maybe removing a compromised token) must not wait for the
                // database: it applies on top of the rows of the last good read.
                Err(e) if files.is_some() => match lock(&self.db_rows).clone() {
                    Some(rows) => {
                        tracing::warn!(error = %e, "token database unavailable: token files applied with the last good database rows");
                        rows
                    }
                    None => return Err(e),
                },
                Err(e) => return Err(e),
            };
            from_db = rows.len();
            tokens.extend(rows);
        }
        if let Some(b) = &self.bootstrap {
            tokens.push(Arc::new(b.clone()));
        }
        let generation = self.generation.load(Ordering::Relaxed) + 1;
        let (snapshot, conflicts) = Snapshot::build_excluding_conflicts(tokens, generation);
        problems.extend(conflicts.into_iter().map(Refusal::Conflict));
        self.set_refused(problems);
        self.generation.store(generation, Ordering::Relaxed);
        if let Some(f) = files {
            *lock(&self.files) = f;
        }
        if let Some(c) = changes_before {
            self.seen_changes.store(c, Ordering::Relaxed);
        }
        METRICS
            .tokens
            .with_label_values(&["file"])
            .set(from_files as i64);
        METRICS
            .tokens
            .with_label_values(&["database"])
            .set(from_db as i64);
        METRICS
            .tokens
            .with_label_values(&["bootstrap"])
            .set(self.bootstrap.is_some() as i64);
        METRICS.snapshot_generation.set(generation as i64);
        METRICS
            .last_reload
            .set(Utc::now().timestamp_millis() as f64 / 1000.0);
        snapshot.record_expiry(Utc::now());
        self.set.store(snapshot);
        self.prune_usage();
        Ok(())
    }

    /// Records the problems of the set just built; logs them when they changed.
    fn set_refused(&self, problems: Vec<Refusal>) {
        METRICS.tokens_refused.set(problems.len() as i64);
        let mut current = lock(&self.refused);
        if *current != problems {
            for p in problems.iter().take(100) {
                match p {
                    Refusal::Row(_) => tracing::error!(
                        source = "database",
                        problem = %p,
                        "token record left out of the token set"
                    ),
                    Refusal::Conflict(_) => {
                        tracing::error!(problem = %p, "token record left out of the token set")
                    }
                }
            }
            if problems.len() > 100 {
                tracing::error!(
                    more = problems.len() - 100,
                    "more token records left out of the token set"
                );
            }
        }
        *current = problems;
    }
}
