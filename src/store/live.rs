//! The live token store: merges the sources (token files, database, bootstrap token) into
//! snapshots, notices writes made by other processes, and keeps last-use times in memory,
//! writing them behind in batches.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use dashmap::DashMap;

use super::db::{Database, DbError};
use super::{yaml, Snapshot, TokenSet};
use crate::config::Config;
use crate::metrics::METRICS;
use crate::token::{Source, Token};

/// How often the database change counter is polled.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// How often last-use times are written.
pub const USAGE_FLUSH_INTERVAL: Duration = Duration::from_secs(5);
/// Last-use times closer than this to the stored one are not updated (saves map writes).
const USAGE_RESOLUTION_MS: i64 = 1000;

#[derive(Debug, Clone, Copy)]
struct Usage {
    at: DateTime<Utc>,
    dirty: bool,
}

/// Everything about the token set that lives across snapshots.
pub struct Store {
    /// The snapshot the proxy reads.
    pub set: Arc<TokenSet>,
    db_url: Option<String>,
    db: OnceLock<Database>,
    files: Mutex<Vec<Token>>,
    file_paths: Vec<std::path::PathBuf>,
    bootstrap: Option<Token>,
    generation: AtomicU64,
    seen_changes: AtomicI64,
    usage: DashMap<Arc<str>, Usage>,
    rebuild_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("generation", &self.generation.load(Ordering::Relaxed))
            .finish()
    }
}

impl Store {
    /// A store for `config`; `bootstrap` is the in-memory manager token, if any.
    pub fn new(config: &Config, bootstrap: Option<Token>) -> Self {
        Store {
            set: Arc::new(TokenSet::default()),
            db_url: config.tokens.database.clone(),
            db: OnceLock::new(),
            files: Mutex::new(Vec::new()),
            file_paths: config.tokens.files.clone(),
            bootstrap,
            generation: AtomicU64::new(0),
            seen_changes: AtomicI64::new(i64::MIN),
            usage: DashMap::new(),
            rebuild_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The database, once connected.
    pub fn db(&self) -> Option<&Database> {
        self.db.get()
    }

    /// True when a database is configured.
    pub fn has_database(&self) -> bool {
        self.db_url.is_some()
    }

    /// Reads every token file; on success they replace the file tokens of the next snapshot.
    pub fn load_files(&self) -> Result<(), Vec<String>> {
        let mut tokens = Vec::new();
        let mut errors = Vec::new();
        for f in &self.file_paths {
            match yaml::load_file(f) {
                Ok(mut t) => tokens.append(&mut t),
                Err(mut e) => errors.append(&mut e),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        *self.files.lock().unwrap_or_else(|p| p.into_inner()) = tokens;
        Ok(())
    }

    /// Connects to the configured database (if any) and loads stored last-use times.
    pub async fn connect(&self) -> Result<(), Vec<String>> {
        let Some(url) = &self.db_url else {
            return Ok(());
        };
        if self.db.get().is_some() {
            return Ok(());
        }
        let db = Database::open(url).await.map_err(|e| vec![e.to_string()])?;
        if let Ok(usage) = db.usage().await {
            for (id, at) in usage {
                self.usage
                    .entry(Arc::from(id.as_str()))
                    .or_insert(Usage { at, dirty: false });
            }
        }
        let _ = self.db.set(db);
        Ok(())
    }

    /// Builds a new snapshot from the file tokens, the database and the bootstrap token, and
    /// swaps it in. On any problem the current snapshot stays.
    pub async fn rebuild(&self) -> Result<(), Vec<String>> {
        let _guard = self.rebuild_lock.lock().await;
        let changes_before = match self.db.get() {
            Some(db) => Some(db.changes().await.map_err(|e| vec![e.to_string()])?),
            None => None,
        };
        let mut tokens = self.files.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let from_files = tokens.len();
        let mut from_db = 0;
        if let Some(db) = self.db.get() {
            let mut stored = db
                .tokens()
                .await
                .map_err(|errs| errs.iter().map(DbError::to_string).collect::<Vec<_>>())?;
            from_db = stored.len();
            tokens.append(&mut stored);
        } else if self.db_url.is_some() {
            return Err(vec!["the token database is not connected yet".into()]);
        }
        if let Some(b) = &self.bootstrap {
            tokens.push(b.clone());
        }
        let generation = self.generation.load(Ordering::Relaxed) + 1;
        let snapshot = Snapshot::build(tokens, generation)
            .map_err(|e| e.into_iter().map(|e| e.to_string()).collect::<Vec<_>>())?;
        self.generation.store(generation, Ordering::Relaxed);
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
        self.set.store(snapshot);
        Ok(())
    }

    /// Rebuilds if another process changed the database since the last build.
    pub async fn poll_database(&self) -> Result<bool, Vec<String>> {
        let Some(db) = self.db.get() else {
            return Ok(false);
        };
        let now = db.changes().await.map_err(|e| vec![e.to_string()])?;
        if now == self.seen_changes.load(Ordering::Relaxed) {
            return Ok(false);
        }
        self.rebuild().await.map(|()| true)
    }

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

    /// Control-plane loop: polls the database and flushes last-use times until `stop` fires,
    /// then flushes once more.
    pub async fn run(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut poll = tokio::time::interval(POLL_INTERVAL);
        let mut flush = tokio::time::interval(USAGE_FLUSH_INTERVAL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = poll.tick() => {
                    if let Err(errors) = self.poll_database().await {
                        for e in errors {
                            tracing::warn!(error = %e, "token database reload failed; the last good token set keeps serving");
                        }
                    }
                }
                _ = flush.tick() => {
                    if let Err(e) = self.flush_usage().await {
                        tracing::warn!(error = %e, "writing last-use times failed; will retry");
                    }
                    self.prune_usage();
                }
                _ = stop.changed() => break,
            }
        }
        if let Err(e) = self.flush_usage().await {
            tracing::warn!(error = %e, "writing last-use times at shutdown failed");
        }
    }
}
