//! The live token store: merges the sources (token files, database, bootstrap token) into
//! snapshots, notices writes made by other processes, and keeps last-use times in memory,
//! writing them behind in batches.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use sha2::{Digest, Sha256};

use super::db::{Database, DbError};
use super::{yaml, FileRefused, Refusal, Snapshot, StoreError, TokenSet};
use crate::config::Config;
use crate::metrics::METRICS;
use crate::token::{Source, Token};

/// How often the database change counter is polled.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// How often last-use times are written.
pub const USAGE_FLUSH_INTERVAL: Duration = Duration::from_secs(5);
/// PostgreSQL channel the change trigger notifies.
const NOTIFY_CHANNEL: &str = "tollgate_changes";
/// Wait after a file event before re-reading, so editors' multi-step saves settle.
const DEBOUNCE: Duration = Duration::from_millis(250);
/// Last-use times closer than this to the stored one are not updated (saves map writes).
const USAGE_RESOLUTION_MS: i64 = 1000;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug, Clone, Copy)]
struct Usage {
    at: DateTime<Utc>,
    dirty: bool,
}

type LoaderJob = Box<dyn FnOnce() + Send>;

/// Runs `job` on the token loader: one long-lived thread that reads and parses the token files.
/// Their records are allocated in that thread's heap, and mimalloc gives a page back only from
/// the thread that owns it: so freeing a replaced set and collecting happen there too (a
/// blocking-pool thread would be a different one each time, or gone). The job is sent at
/// once; the returned future only waits for its result.
fn on_loader<R: Send + 'static>(
    job: impl FnOnce() -> R + Send + 'static,
) -> impl std::future::Future<Output = Result<R, StoreError>> {
    static LOADER: OnceLock<Mutex<std::sync::mpsc::Sender<LoaderJob>>> = OnceLock::new();
    let sender = LOADER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<LoaderJob>();
        let spawned = std::thread::Builder::new()
            .name("tollgate-tokens".into())
            .spawn(move || {
                for job in rx {
                    // A panicking job drops its result sender; the thread goes on.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the token loader thread");
        }
        Mutex::new(tx)
    });
    let (tx, rx) = tokio::sync::oneshot::channel();
    let sent = lock(sender).send(Box::new(move || {
        let _ = tx.send(job());
    }));
    async move {
        sent.map_err(|_| StoreError::Loader("the token loader thread is not running"))?;
        rx.await
            .map_err(|_| StoreError::Loader("reading the token files failed (internal error)"))
    }
}

/// One token file read and parsed: its path, its text (when readable) and its tokens or
/// problems.
struct LoadedFile {
    path: std::path::PathBuf,
    text: Option<String>,
    parsed: Result<Vec<Arc<Token>>, FileRefused>,
}

/// Token files read and parsed: the digest of their contents, and each file's result.
type LoadedFiles = ([u8; 32], Vec<LoadedFile>);

/// Entry caches of the token files, by path (see [`yaml::parse_incremental`]).
type EntryCaches = HashMap<std::path::PathBuf, yaml::EntryCache>;

/// Reads every token file; `None` when their contents have the digest `unchanged` (the last
/// good load), else the digest and the parse of every file.
/// Entries unchanged since a file's last good parse are taken from `caches`, not parsed again.
fn read_files(
    paths: &[std::path::PathBuf],
    unchanged: Option<[u8; 32]>,
    caches: &mut EntryCaches,
) -> Option<LoadedFiles> {
    let mut digest = Sha256::new();
    let mut texts = Vec::with_capacity(paths.len());
    for path in paths {
        let text = yaml::read_token_file(path);
        digest.update(path.as_os_str().as_encoded_bytes());
        match &text {
            Ok(t) => {
                digest.update([1]);
                digest.update((t.len() as u64).to_le_bytes());
                digest.update(t.as_bytes());
            }
            Err(e) => digest.update(format!("\0{e}").as_bytes()),
        }
        texts.push((path, text));
    }
    let digest: [u8; 32] = digest.finalize().into();
    if unchanged == Some(digest) {
        return None;
    }
    let mut files = Vec::with_capacity(texts.len());
    for (path, text) in texts {
        let name = path.display().to_string();
        let (text, parsed) = match text {
            Ok(t) => {
                let parsed =
                    yaml::parse_incremental(&name, &t, caches.entry(path.clone()).or_default());
                (Some(t), parsed)
            }
            Err(e) => (None, Err(yaml::unreadable(&name, &e))),
        };
        files.push(LoadedFile {
            path: path.clone(),
            text,
            parsed,
        });
    }
    Some((digest, files))
}

/// The tokens of a file that failed to load: its last good tokens, less every one the new
/// text no longer names with the same id and hash. A broken edit keeps the rest of the file
/// serving, but a token removed or regenerated in it is gone at once (fail closed). The text
/// is split into words once (ids and PHC hashes are runs of `[A-Za-z0-9$=,+/._-]`), so this is
/// linear in the file, not in tokens × file.
fn survivors(
    previous: &[Arc<Token>],
    path: &std::path::Path,
    text: Option<&str>,
) -> Vec<Arc<Token>> {
    let Some(text) = text else {
        // Unreadable (deleted, permissions): nothing in it can be vouched for.
        return Vec::new();
    };
    let words: std::collections::HashSet<&str> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || "$=,+/._-".contains(c)))
        .filter(|w| !w.is_empty())
        .collect();
    previous
        .iter()
        .filter(|t| matches!(&t.source, Source::File(p) if Path::new(&**p) == path))
        .filter(|t| words.contains(&*t.id) && words.contains(t.hash.as_str()))
        .cloned()
        .collect()
}

/// Logs a refused token-file edit, each problem naming its source: the file (every problem line
/// starts with its path), records of the files in conflict, or the database when the set could
/// not be rebuilt without what the edit removed.
fn log_refused_edit(error: &StoreError) {
    const KEPT: &str = "token files refused; their last good tokens keep serving, less any the edit removed or regenerated";
    let StoreError::TokenFiles {
        files,
        conflicts,
        rebuild,
    } = error
    else {
        tracing::error!(error = %error, "{KEPT}");
        return;
    };
    for f in files {
        for p in &f.problems {
            tracing::error!(file = %f.path, problem = %p, "{KEPT}");
        }
    }
    for c in conflicts {
        tracing::error!(problem = %c, "{KEPT}");
    }
    if let Some(e) = rebuild {
        tracing::error!(
            source = "database",
            error = %e,
            "the token set could not be rebuilt without what the refused edit removed"
        );
    }
}

/// Whether an event in a watched directory may concern a token file: one of their names, a
/// name starting with `..` (Kubernetes swaps a `..data` symlink to a `..2026_…` directory), or
/// an event naming no file (a rescan). Anything else written beside the token files (a log
/// file, an editor's swap file) would otherwise re-read and re-digest them after every write.
fn may_change_token_files(event: &notify::Event, names: &[std::ffi::OsString]) -> bool {
    event.paths.is_empty()
        || event.paths.iter().any(|p| match p.file_name() {
            Some(n) => names.iter().any(|x| x == n) || n.as_encoded_bytes().starts_with(b".."),
            None => true,
        })
}

/// Everything about the token set that lives across snapshots.
pub struct Store {
    /// The snapshot the proxy reads.
    pub set: Arc<TokenSet>,
    db_url: Option<String>,
    db: OnceLock<Database>,
    files: Mutex<Vec<Arc<Token>>>,
    file_paths: Vec<std::path::PathBuf>,
    files_digest: Mutex<Option<[u8; 32]>>,
    /// Only used on the loader thread (a mutex to share it with the jobs sent there).
    entry_caches: Arc<Mutex<EntryCaches>>,
    failed_digest: Mutex<Option<[u8; 32]>>,
    poll_interval: Duration,
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
            file_paths: super::token_files(&config.tokens),
            files_digest: Mutex::new(None),
            entry_caches: Arc::default(),
            failed_digest: Mutex::new(None),
            poll_interval: config.tokens.poll_interval,
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

    /// The database, once connected.
    pub fn db(&self) -> Option<&Database> {
        self.db.get()
    }

    /// True when a database is configured.
    pub fn has_database(&self) -> bool {
        self.db_url.is_some()
    }

    /// Reads every token file. Unless `force`, nothing happens when their contents are the
    /// same as at the last good load. A good set is swapped in with a new snapshot; a bad
    /// one changes nothing, and its problems are logged once per distinct content.
    /// Returns whether a new snapshot was built.
    pub async fn reload_files(&self, force: bool) -> Result<bool, StoreError> {
        let paths = self.file_paths.clone();
        let last_good = if force {
            None
        } else {
            *lock(&self.files_digest)
        };
        // Reading and parsing a large file takes a while: not on the control-plane runtime.
        let caches = self.entry_caches.clone();
        let loaded = on_loader(move || read_files(&paths, last_good, &mut lock(&caches))).await;
        let Some((digest, mut files)) = loaded? else {
            return Ok(false);
        };
        let mut refused = Vec::new();
        let mut fresh = Vec::new();
        for f in &mut files {
            match std::mem::replace(&mut f.parsed, Ok(Vec::new())) {
                Ok(t) => fresh.extend(t),
                Err(e) => refused.push(e),
            }
        }
        // Duplicates among the files are a problem of the edit, refused like a bad entry
        // (conflicts with the database or the bootstrap token leave out only the records).
        let conflicts = if refused.is_empty() {
            super::snapshot::conflicts(&fresh).1
        } else {
            Vec::new()
        };
        if refused.is_empty() && conflicts.is_empty() {
            self.rebuild_with(Some(fresh)).await?;
            *lock(&self.files_digest) = Some(digest);
            *lock(&self.failed_digest) = None;
            METRICS
                .reloads
                .with_label_values(&["file", "success"])
                .inc();
            // The replaced set is freed by now (unless a request still holds it): give
            // its pages back instead of keeping them for the next reload.
            drop(on_loader(crate::sys::release_free_memory));
            return Ok(true);
        }
        drop(fresh);
        // The edit is refused, but what it removed or regenerated goes at once (fail closed):
        // only the last good tokens it still names with the same id and hash keep serving.
        let previous = lock(&self.files).clone();
        let kept: Vec<Arc<Token>> = files
            .iter()
            .flat_map(|f| survivors(&previous, &f.path, f.text.as_deref()))
            .collect();
        let rebuild = if kept.len() != previous.len() {
            self.rebuild_with(Some(kept)).await.err()
        } else {
            None
        };
        let error = StoreError::TokenFiles {
            files: refused,
            conflicts,
            rebuild,
        };
        let mut failed = lock(&self.failed_digest);
        // Counted and logged once per distinct broken content, not on every poll.
        if force || *failed != Some(digest) {
            METRICS
                .reloads
                .with_label_values(&["file", "failure"])
                .inc();
            log_refused_edit(&error);
        }
        *failed = Some(digest);
        Err(error)
    }

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
    pub async fn rebuild(&self) -> Result<(), DbError> {
        self.rebuild_with(None).await
    }

    /// Like [`Store::rebuild`], with `files` replacing the file tokens if the build succeeds.
    /// The file tokens are shared between `files` and the snapshots, never copied.
    async fn rebuild_with(&self, files: Option<Vec<Arc<Token>>>) -> Result<(), DbError> {
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
        self.set.store(snapshot);
        self.prune_usage();
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
    async fn listen_postgres(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
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

    /// Watches the token files' directories (not the files: Kubernetes swaps a `..data`
    /// symlink beside them), re-reads on any event after a short debounce, polls contents as a
    /// fallback, and reloads everything on SIGHUP. Runs until `stop` fires.
    pub async fn watch_files(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
        use notify::Watcher;
        let (tx, mut events) = tokio::sync::mpsc::unbounded_channel::<()>();
        let names: Vec<std::ffi::OsString> = self
            .file_paths
            .iter()
            .filter_map(|p| p.file_name().map(ToOwned::to_owned))
            .collect();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if res.is_ok_and(|e| !may_change_token_files(&e, &names)) {
                return;
            }
            let _ = tx.send(());
        });
        let mut watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "file events unavailable; token files are polled only");
                None
            }
        };
        if let Some(w) = watcher.as_mut() {
            let mut dirs: Vec<&Path> = self
                .file_paths
                .iter()
                .map(|p| match p.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d,
                    _ => Path::new("."),
                })
                .collect();
            dirs.sort();
            dirs.dedup();
            for dir in dirs {
                if let Err(e) = w.watch(dir, notify::RecursiveMode::NonRecursive) {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot watch; relying on polling");
                }
            }
        }
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut poll = tokio::time::interval(self.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        poll.tick().await;
        loop {
            let force = tokio::select! {
                Some(()) = events.recv() => {
                    tokio::time::sleep(DEBOUNCE).await;
                    while events.try_recv().is_ok() {}
                    false
                }
                _ = poll.tick() => false,
                Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    tracing::info!("SIGHUP: reloading the token set");
                    true
                }
                _ = stop.changed() => break,
            };
            if self.file_paths.is_empty() && !force {
                continue;
            }
            let _ = self.reload_files(force).await;
            if force {
                let _ = self.poll_database().await;
            }
        }
        drop(watcher);
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

#[cfg(test)]
mod tests {
    use super::may_change_token_files;
    use notify::event::{CreateKind, Event, EventKind, ModifyKind, RenameMode};
    use std::ffi::OsString;

    fn event(kind: EventKind, paths: &[&str]) -> Event {
        let mut e = Event::new(kind);
        for p in paths {
            e = e.add_path(p.into());
        }
        e
    }

    #[test]
    fn only_events_that_may_change_token_files_count() {
        let names = [OsString::from("tokens.yaml"), OsString::from("team.yml")];
        let write = EventKind::Modify(ModifyKind::Any);
        let yes = [
            event(write, &["/etc/tollgate/tokens.yaml"]),
            event(write, &["/etc/tollgate/team.yml"]),
            // An editor's rename over the file; a Kubernetes `..data` swap.
            event(
                EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
                &[
                    "/etc/tollgate/.tokens.yaml.swp",
                    "/etc/tollgate/tokens.yaml",
                ],
            ),
            event(
                EventKind::Create(CreateKind::Any),
                &["/etc/tollgate/..data_tmp"],
            ),
            event(EventKind::Any, &[]),
        ];
        let no = [
            event(write, &["/etc/tollgate/access.log"]),
            event(write, &["/etc/tollgate/tokens.yaml.swp"]),
            event(write, &["/etc/tollgate/old-tokens.yaml"]),
        ];
        for e in &yes {
            assert!(may_change_token_files(e, &names), "{e:?}");
        }
        for e in &no {
            assert!(!may_change_token_files(e, &names), "{e:?}");
        }
    }
}
