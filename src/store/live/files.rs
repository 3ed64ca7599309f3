//! The token files: read and parsed on the loader thread (a changed file's unchanged entries
//! are reused), a good edit applied, a refused one logged once (what it removed or regenerated
//! still goes), and the files' directories watched (with polling and SIGHUP as fallbacks).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{lock, Store};
use crate::metrics::METRICS;
use crate::store::{yaml, FileRefused, StoreError};
use crate::token::{Source, Token};

/// Wait after a file event before re-reading, so editors' multi-step saves settle.
const DEBOUNCE: Duration = Duration::from_millis(250);

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
pub(super) type EntryCaches = HashMap<std::path::PathBuf, yaml::EntryCache>;

/// Reads every token file; `None` when their contents have the digest `unchanged` (the last
/// good load), else the digest and the parse of every file.
/// Entries unchanged since a file's last good parse are taken from `caches`, not parsed again.
fn read_files(
    paths: &[std::path::PathBuf],
    missing_ok: bool,
    unchanged: Option<[u8; 32]>,
    caches: &mut EntryCaches,
) -> Option<LoadedFiles> {
    let mut digest = Sha256::new();
    let mut texts = Vec::with_capacity(paths.len());
    for path in paths {
        let text = yaml::read_token_file(path);
        digest.update(path.as_os_str().as_encoded_bytes());
        if missing_ok && matches!(&text, Err(e) if e.kind() == std::io::ErrorKind::NotFound) {
            // A default file not created (yet): no tokens, no problem.
            digest.update([2]);
            continue;
        }
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

/// The problems of the entries of `path` that break `tokens.max_lifetime` (`max`), if any: an
/// entry must expire, at most `max` after its `created_at` (or, without one, after `now`).
/// They refuse the file like any invalid entry. A `created_at` later than `now` counts as
/// `now`: a postdated entry would otherwise live longer than the policy from today.
fn beyond_lifetime(
    path: &Path,
    tokens: &[Arc<Token>],
    max: Option<Duration>,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<FileRefused> {
    max?;
    let file = path.display().to_string();
    let problems: Vec<String> = tokens
        .iter()
        .filter_map(|t| {
            let from = t.created_at.map_or(now, |c| c.min(now));
            crate::store::lifetime::check_lifetime(t.expires_at, from, max)
                .err()
                .map(|e| format!("{file}: token {:?} (id {}): {e}", &*t.name, t.id))
        })
        .collect();
    (!problems.is_empty()).then_some(FileRefused {
        path: file,
        problems,
    })
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

impl Store {
    /// Reads every token file. Unless `force`, nothing happens when their contents are the
    /// same as at the last good load. A good set is swapped in with a new snapshot; a bad
    /// one changes nothing, and its problems are logged once per distinct content.
    /// Returns whether a new snapshot was built.
    pub async fn reload_files(&self, force: bool) -> Result<bool, StoreError> {
        let paths = self.file_paths.clone();
        let missing_ok = self.files_optional;
        let last_good = if force {
            None
        } else {
            *lock(&self.files_digest)
        };
        // Reading and parsing a large file takes a while: not on the control-plane runtime.
        let caches = self.entry_caches.clone();
        let loaded =
            on_loader(move || read_files(&paths, missing_ok, last_good, &mut lock(&caches))).await;
        let Some((digest, mut files)) = loaded? else {
            return Ok(false);
        };
        let mut refused = Vec::new();
        let mut fresh = Vec::new();
        let now = chrono::Utc::now();
        for f in &mut files {
            match std::mem::replace(&mut f.parsed, Ok(Vec::new())) {
                Ok(t) => match beyond_lifetime(&f.path, &t, self.max_lifetime, now) {
                    None => fresh.extend(t),
                    Some(e) => refused.push(e),
                },
                Err(e) => refused.push(e),
            }
        }
        // Duplicates among the files are a problem of the edit, refused like a bad entry
        // (conflicts with the database or the bootstrap token leave out only the records).
        let conflicts = if refused.is_empty() {
            crate::store::snapshot::conflicts(&fresh).1
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
            // What serves is no longer the last good load: putting that text back must be read
            // as a change (it restores what this edit took away), not skipped as unchanged.
            *lock(&self.files_digest) = None;
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
