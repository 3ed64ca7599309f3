//! Database URLs: which backend a URL selects, how it is shown without its password, and the
//! SQLite file behind it (created private to the user when missing).

use std::path::Path;

use super::DbError;

/// The database engine behind a URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

/// The SQLite file path of a `sqlite:` URL (None for in-memory databases).
pub(super) fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && !path.starts_with(":memory:")).then_some(path)
}

/// Shows a database URL without its password. The credentials end at the last `@` before
/// the query (a password may hold an unencoded `@`: everything up to the last one is hidden).
pub fn redact_url(url: &str) -> String {
    let Some(s) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[s + 3..];
    let before_query = rest.find('?').map_or(rest, |q| &rest[..q]);
    match before_query.rfind('@') {
        Some(at) => match rest[..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &rest[at..]),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
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
    if url.starts_with("sqlite:") {
        Ok(Backend::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Backend::Postgres)
    } else {
        Err(DbError::Url(format!(
            "{:?} is not sqlite://PATH or postgres://…",
            redact_url(url)
        )))
    }
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
        assert!(backend_of("mysql://x").is_err());
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(redact_url("sqlite://data/t.db"), "sqlite://data/t.db");
        // An unencoded @ in the password: nothing of it shows.
        assert_eq!(
            redact_url("postgres://u:p@ss@w0rd@h/db?sslmode=require&x=a@b"),
            "postgres://u:***@h/db?sslmode=require&x=a@b"
        );
    }
}
