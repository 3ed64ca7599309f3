//! Last-use times: noted in memory on every use (at most one update a second per token) and
//! written to the database behind, in batches.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::Store;
use crate::store::db::DbError;
use crate::token::{Source, Token};

/// Last-use times closer than this to the stored one are not updated (saves map writes).
const USAGE_RESOLUTION_MS: i64 = 1000;

#[derive(Debug, Clone, Copy)]
pub(super) struct Usage {
    pub(super) at: DateTime<Utc>,
    pub(super) dirty: bool,
}

impl Store {
    /// Notes that `token` was used at `now` (in memory; written behind).
    pub fn touch(&self, token: &Token, now: DateTime<Utc>) {
        if token.source == Source::Bootstrap {
            return;
        }
        if let Some(u) = self.usage.get(&token.id) {
            if (now - u.at).num_milliseconds() < USAGE_RESOLUTION_MS {
                return;
            }
        }
        self.usage.insert(
            token.id.clone(),
            Usage {
                at: now,
                dirty: true,
            },
        );
    }

    /// The last use of a token, if known.
    pub fn last_used(&self, id: &str) -> Option<DateTime<Utc>> {
        self.usage.get(id).map(|u| u.at)
    }

    /// Writes pending last-use times to the database.
    pub async fn flush_usage(&self) -> Result<usize, DbError> {
        let Some(db) = self.db.get() else {
            return Ok(0);
        };
        let batch: Vec<(Arc<str>, DateTime<Utc>)> = self
            .usage
            .iter()
            .filter(|e| e.dirty)
            .map(|e| (e.key().clone(), e.at))
            .collect();
        if batch.is_empty() {
            return Ok(0);
        }
        db.record_usage(&batch).await?;
        for (id, at) in &batch {
            if let Some(mut u) = self.usage.get_mut(id) {
                if u.at == *at {
                    u.dirty = false;
                }
            }
        }
        Ok(batch.len())
    }

    /// Forgets last-use entries of tokens no longer in the snapshot.
    pub fn prune_usage(&self) {
        let snap = self.set.load();
        self.usage
            .retain(|id, u| u.dirty || snap.by_id(id).is_some());
    }
}
