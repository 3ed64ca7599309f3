//! Typed errors of the token store, each saying which source failed: a token file, the token
//! database or the loader thread (loading the token set), and why a token change is refused
//! (managing tokens). Their messages are the human ones the API, the CLI and the logs show.

use std::fmt;

use super::db::DbError;
use super::SnapshotError;
use crate::token::{HashError, Source};

/// A refused token file: its path and its problems, one line each, every line starting with
/// the path (`FILE: problem`). The list is capped (see [`super::yaml::MAX_PROBLEMS`]); past the
/// cap, one last line says how many more there are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .problems.join("; "))]
pub struct FileRefused {
    /// The file, as it names itself in the problems.
    pub path: String,
    /// The problems, each naming the file (and the entry, line and field where known).
    pub problems: Vec<String>,
}

impl FileRefused {
    /// A file refused for one reason; `problem` is prefixed with the path.
    pub fn one(path: &str, problem: impl fmt::Display) -> Self {
        FileRefused {
            path: path.to_string(),
            problems: vec![format!("{path}: {problem}")],
        }
    }
}

/// Why the token set could not be (re)loaded. Whatever the cause, the last good token set keeps
/// serving.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The token database could not be reached or used: an outage.
    #[error(transparent)]
    Database(#[from] DbError),
    /// A token-file edit was refused: the files' last good tokens keep serving, less any the
    /// edit removed or regenerated.
    #[error("{}", self.problems().join("; "))]
    TokenFiles {
        /// Each refused file with its problems, in the configured order.
        files: Vec<FileRefused>,
        /// Records of the files in conflict with each other (duplicate id or name, a name that
        /// is another record's id); checked only when every file reads well.
        conflicts: Vec<SnapshotError>,
        /// Set when the set could not even be rebuilt without what the edit removed: the
        /// database failed before any good read of it.
        rebuild: Option<DbError>,
    },
    /// The token loader thread failed (an internal error).
    #[error("{0}")]
    Loader(&'static str),
}

impl StoreError {
    /// Every problem, one human line each (as the reload endpoint and `check-config` list them).
    pub fn problems(&self) -> Vec<String> {
        match self {
            StoreError::TokenFiles {
                files,
                conflicts,
                rebuild,
            } => files
                .iter()
                .flat_map(|f| f.problems.iter().cloned())
                .chain(conflicts.iter().map(ToString::to_string))
                .chain(rebuild.iter().map(ToString::to_string))
                .collect(),
            other => vec![other.to_string()],
        }
    }

    /// True when the token database being unreachable is the cause.
    pub fn is_database_outage(&self) -> bool {
        matches!(self, StoreError::Database(DbError::Unavailable(_)))
    }
}

/// A record left out of the token set while the rest of it serves.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A database row that does not read back as a valid token.
    #[error("token database: {0}")]
    Row(DbError),
    /// Records of different sources in conflict (duplicate id or name, a name that is another
    /// token's id): all of them are left out, but the bootstrap token.
    #[error(transparent)]
    Conflict(#[from] SnapshotError),
}

/// Why a token change (create, modify, regenerate, revoke) is refused before it is stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    /// The request does not make a valid token: name, description, routes, expiry or custom
    /// secret.
    #[error("{0}")]
    Invalid(String),
    /// The secret could not be hashed with the configured parameters.
    #[error(transparent)]
    Hash(#[from] HashError),
    /// The change would grant something the acting manager token lacks.
    #[error("{0}")]
    ExceedsActor(String),
    /// The token does not live in the database (a token file, the bootstrap token).
    #[error("{}", read_only_message(.name, .origin))]
    ReadOnly {
        /// The token's name.
        name: String,
        /// Where it lives.
        origin: Source,
    },
}

fn read_only_message(name: &str, source: &Source) -> String {
    match source {
        Source::File(path) => {
            format!("token {name:?} comes from the token file {path}: edit the file to change it")
        }
        Source::Bootstrap => "the bootstrap token lives in memory only: change --bootstrap-token / TOLLGATE_BOOTSTRAP_TOKEN".into(),
        Source::Database => format!("token {name:?} lives in the database"),
        Source::Oidc(_) => format!("token {name:?} was minted by a trusted-publishing exchange"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_keep_their_order_and_text() {
        let e = StoreError::TokenFiles {
            files: vec![
                FileRefused::one("a.yaml", "bad"),
                FileRefused {
                    path: "b.yaml".into(),
                    problems: vec!["b.yaml: one".into(), "b.yaml: two".into()],
                },
            ],
            conflicts: vec![],
            rebuild: Some(DbError::Unavailable("down".into())),
        };
        assert_eq!(
            e.problems(),
            [
                "a.yaml: bad",
                "b.yaml: one",
                "b.yaml: two",
                "the token database is unavailable: down"
            ]
        );
        assert_eq!(e.to_string(), e.problems().join("; "));
        assert!(!e.is_database_outage());
        let outage = StoreError::from(DbError::Unavailable("down".into()));
        assert!(outage.is_database_outage());
        assert_eq!(
            outage.problems(),
            ["the token database is unavailable: down"]
        );
    }

    #[test]
    fn read_only_names_where_the_token_lives() {
        let file = ChangeError::ReadOnly {
            name: "ci".into(),
            origin: Source::File("/etc/t.yaml".into()),
        };
        assert_eq!(
            file.to_string(),
            "token \"ci\" comes from the token file /etc/t.yaml: edit the file to change it"
        );
        let boot = ChangeError::ReadOnly {
            name: "admin".into(),
            origin: Source::Bootstrap,
        };
        assert!(boot.to_string().contains("TOLLGATE_BOOTSTRAP_TOKEN"));
    }
}
