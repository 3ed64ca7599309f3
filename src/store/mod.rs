//! The token set: an immutable [`Snapshot`] behind an `ArcSwap`, and the sources it is built
//! from (YAML token files, the token database, the bootstrap token).

pub mod db;
mod live;
pub mod manage;
mod snapshot;
pub mod yaml;
mod yaml_events;

pub use live::Store;
pub use snapshot::{Snapshot, SnapshotError, TokenSet};
