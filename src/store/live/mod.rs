//! The live token store: merges the sources (token files, database, bootstrap token) into
//! snapshots, notices writes made by other processes, and keeps last-use times in memory,
//! writing them behind in batches.
//!
//! Here: the [`Store`] itself and its control-plane loop. The rest by concern: `files` (reading
//! and watching the token files, on the loader thread), `assemble` (building and swapping a
//! snapshot from every source), `database` (connecting, following other processes' writes,
//! outages), `usage` (last-use times, written behind).

mod assemble;
mod database;
mod files;
mod usage;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use dashmap::DashMap;

use super::db::Database;
use super::{Refusal, TokenSet};
use crate::config::Config;
use crate::token::Token;
use files::EntryCaches;
use usage::Usage;

/// How often the database change counter is polled.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// How often last-use times are written.
pub const USAGE_FLUSH_INTERVAL: Duration = Duration::from_secs(5);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Everything about the token set that lives across snapshots.
pub struct Store {
    /// The snapshot the proxy reads.
    pub set: Arc<TokenSet>,
    db_url: Option<String>,
    db: OnceLock<Database>,
    files: Mutex<Vec<Arc<Token>>>,
    file_paths: Vec<std::path::PathBuf>,
    /// The files are the default ones, which the configuration did not name: while absent
    /// they hold no tokens (a first run with only a database); once created, they are read.
    files_optional: bool,
    files_digest: Mutex<Option<[u8; 32]>>,
    /// Only used on the loader thread (a mutex to share it with the jobs sent there).
    entry_caches: Arc<Mutex<EntryCaches>>,
    failed_digest: Mutex<Option<[u8; 32]>>,
    poll_interval: Duration,
    /// `tokens.max_lifetime`: a token-file entry expiring later, or never, refuses its file.
    max_lifetime: Option<Duration>,
    bootstrap: Option<Token>,
    generation: AtomicU64,
    seen_changes: AtomicI64,
    /// Last uses by token id (foldhash, seeded per process: looked up on every request).
    usage: DashMap<Arc<str>, Usage, foldhash::quality::RandomState>,
    rebuild_lock: tokio::sync::Mutex<()>,
    /// The database rows of the last good read: a token-file edit made while the database is
    /// unreachable is applied on top of them.
    db_rows: Mutex<Option<Vec<Arc<Token>>>>,
    /// Problems that left records out of the current set (conflicts, invalid rows), as last
    /// reported.
    refused: Mutex<Vec<Refusal>>,
    /// Open the database without creating or migrating anything (`check-config`).
    read_only: bool,
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
            file_paths: {
                // Logs an absent default file once at start.
                super::token_files(&config.tokens);
                config.tokens.files.clone()
            },
            files_optional: config.tokens.files_defaulted,
            files_digest: Mutex::new(None),
            entry_caches: Arc::default(),
            failed_digest: Mutex::new(None),
            poll_interval: config.tokens.poll_interval,
            max_lifetime: config.tokens.max_lifetime,
            bootstrap,
            generation: AtomicU64::new(0),
            seen_changes: AtomicI64::new(i64::MIN),
            usage: DashMap::default(),
            rebuild_lock: tokio::sync::Mutex::new(()),
            db_rows: Mutex::new(None),
            refused: Mutex::new(Vec::new()),
            read_only: false,
        }
    }

    /// This store opens its database read-only and never migrates it (`check-config`).
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    /// Problems that left token records out of the current set (empty when none).
    pub fn refused(&self) -> Vec<Refusal> {
        lock(&self.refused).clone()
    }

    /// The database, once connected.
    pub fn db(&self) -> Option<&Database> {
        self.db.get()
    }

    /// Adds `(requests, bytes)` to token `id`'s quota usage in period `index` of
    /// `period_seconds` in the database; the totals of every replica. `None` without a
    /// database, or while it does not answer.
    pub async fn add_quota_usage(
        &self,
        id: &str,
        period_seconds: u64,
        index: u64,
        add: (u64, u64),
    ) -> Option<(u64, u64)> {
        self.db()?
            .add_quota_usage(id, period_seconds, index, add)
            .await
            .ok()
    }

    /// True when a database is configured.
    pub fn has_database(&self) -> bool {
        self.db_url.is_some()
    }

    /// Control-plane loop: polls the database and flushes last-use times until `stop` fires,
    /// then flushes once more.
    pub async fn run(&self, stop: tokio::sync::watch::Receiver<bool>) {
        let listen = async {
            // Wait for a connection (the database may be down at start), then follow NOTIFYs.
            loop {
                if let Some(db) = self.db.get() {
                    if db.backend() == super::db::Backend::Postgres {
                        self.listen_postgres(stop.clone()).await;
                    }
                    return;
                }
                if *stop.borrow() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        tokio::join!(listen, self.run_polls(stop.clone()));
    }

    async fn run_polls(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut poll = tokio::time::interval(POLL_INTERVAL);
        let mut flush = tokio::time::interval(USAGE_FLUSH_INTERVAL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut backoff = Duration::from_millis(500);
        loop {
            tokio::select! {
                _ = poll.tick() => {
                    if self.db_url.is_some() && self.db.get().is_none() {
                        // Not connected yet (the database was down at start): retry with backoff.
                        match self.connect().await {
                            Ok(()) => match self.rebuild().await {
                                Ok(()) => tracing::info!("token database connected; token set loaded"),
                                Err(e) => tracing::error!(source = "database", error = %e, "token set refused: reading the token database failed"),
                            },
                            Err(e) => {
                                tracing::warn!(error = %e, retry_in = ?backoff, "token database unavailable");
                                tokio::time::sleep(backoff).await;
                                backoff = (backoff * 2).min(Duration::from_secs(30));
                            }
                        }
                        continue;
                    }
                    if let Err(e) = self.poll_database().await {
                        tracing::warn!(error = %e, "token database reload failed; the last good token set keeps serving");
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
