//! Token database URLs as the configuration takes them: which backend a URL selects, and how it
//! is shown without its password. Pure text: opening the database is the store's.

/// The database engine behind a URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

/// Which backend a URL selects; the refusal says why (without the password).
pub fn backend_of(url: &str) -> Result<Backend, String> {
    if url.starts_with("sqlite:") {
        Ok(Backend::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Backend::Postgres)
    } else {
        Err(format!(
            "{:?} is not sqlite://PATH or postgres://…",
            redact_url(url)
        ))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_and_redaction() {
        assert_eq!(backend_of("postgres://x/y"), Ok(Backend::Postgres));
        assert_eq!(backend_of("sqlite://data/t.db"), Ok(Backend::Sqlite));
        assert_eq!(
            backend_of("mysql://u:pw@x"),
            Err("\"mysql://u:***@x\" is not sqlite://PATH or postgres://…".into())
        );
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
