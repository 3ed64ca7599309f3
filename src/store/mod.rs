//! The token set: an immutable [`Snapshot`] behind an `ArcSwap`, and the sources it is built
//! from (YAML token files for now).

mod snapshot;
pub mod yaml;

pub use snapshot::{Snapshot, SnapshotError, TokenSet};

use crate::config::Config;

/// Builds a complete snapshot from every configured source, or every problem found.
pub fn load_snapshot(config: &Config, generation: u64) -> Result<Snapshot, Vec<String>> {
    let mut tokens = Vec::new();
    let mut errors = Vec::new();
    for file in &config.tokens.files {
        match yaml::load_file(file) {
            Ok(mut t) => tokens.append(&mut t),
            Err(mut e) => errors.append(&mut e),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Snapshot::build(tokens, generation).map_err(|e| e.into_iter().map(|e| e.to_string()).collect())
}
