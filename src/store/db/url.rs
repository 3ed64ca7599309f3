//! Database URLs: which backend a URL selects (the rule is the configuration's, which checks
//! the URL first), and the SQLite file behind it (created private to the user when missing).

use std::path::Path;

use super::DbError;
pub use crate::config::{redact_url, Backend};

/// The SQLite file path of a `sqlite:` URL (None for in-memory databases).
pub(super) fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && !path.starts_with(":memory:")).then_some(path)
}

/// The SQLite file of `url` if it is one that does not exist yet.
pub fn missing_sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let path = Path::new(sqlite_path(url)?);
    (!path.exists()).then(|| path.to_path_buf())
}

/// Creates the SQLite file (0600) and its directory (0700) when they do not exist: tokens'
/// hashes and names are nobody else's business on the machine.
pub(super) fn create_private(path: &Path) -> Result<(), DbError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| {
                    DbError::Unavailable(format!("cannot create {}: {e}", dir.display()))
                })?;
        }
    }
    if !path.exists() {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| DbError::Unavailable(format!("cannot create {}: {e}", path.display())))?;
    }
    Ok(())
}

/// Which backend a URL selects.
pub fn backend_of(url: &str) -> Result<Backend, DbError> {
    crate::config::backend_of(url).map_err(DbError::Url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(sqlite_path("sqlite://data/t.db"), Some("data/t.db"));
        assert_eq!(sqlite_path("sqlite:data/t.db?mode=rwc"), Some("data/t.db"));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(backend_of("postgres://x/y"), Ok(Backend::Postgres));
        assert!(matches!(backend_of("mysql://x"), Err(DbError::Url(_))));
    }
}
