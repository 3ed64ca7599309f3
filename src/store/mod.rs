//! The token set: an immutable [`Snapshot`] behind an `ArcSwap`, and the sources it is built
//! from (YAML token files, the token database, the bootstrap token).

pub mod db;
mod error;
pub mod lifetime;
mod live;
pub mod manage;
pub mod rotation;
mod snapshot;
pub mod yaml;

pub use db::LastUse;
pub use error::{ChangeError, FileRefused, Refusal, StoreError};
pub use live::Store;
pub use snapshot::{Snapshot, SnapshotError, TokenSet};

/// The token files to read now: every file named, less the default one when the configuration
/// did not name it and it does not exist (a first run with only a database), which is logged at
/// info. A file the configuration names is always read, so an absent one is refused. (The
/// server's store still watches an absent default file and reads it once it is created.)
pub fn token_files(tokens: &crate::config::TokensConfig) -> Vec<std::path::PathBuf> {
    if !tokens.files_defaulted {
        return tokens.files.clone();
    }
    tokens
        .files
        .iter()
        .filter(|p| match std::fs::metadata(p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::info!(
                    file = %p.display(),
                    "the default token file does not exist (yet); it is read once created"
                );
                false
            }
            _ => true,
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_absent_default_token_file_is_skipped_a_named_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens.yaml");
        let (c, _) = crate::config::load(None, vec![], &Default::default()).unwrap();
        let mut tokens = crate::config::TokensConfig {
            files: vec![file.clone()],
            ..c.tokens
        };
        assert!(tokens.files_defaulted);
        assert!(token_files(&tokens).is_empty());
        tokens.files_defaulted = false;
        assert_eq!(token_files(&tokens), std::slice::from_ref(&file));
        std::fs::write(&file, "tokens: []\n").unwrap();
        tokens.files_defaulted = true;
        assert_eq!(token_files(&tokens), [file]);
    }
}
