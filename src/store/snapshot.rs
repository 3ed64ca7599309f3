//! An immutable, validated set of tokens, looked up by id or by name, swapped atomically.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::token::Token;

/// Why a set of tokens cannot form a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// Two records share an id.
    #[error("duplicate token id {id:?} ({first} and {second})")]
    DuplicateId {
        /// The id.
        id: String,
        /// Where the first record came from.
        first: String,
        /// Where the second one came from.
        second: String,
    },
    /// Two records share a name.
    #[error("duplicate token name {name:?} ({first} and {second})")]
    DuplicateName {
        /// The name.
        name: String,
        /// Where the first record came from.
        first: String,
        /// Where the second one came from.
        second: String,
    },
}

/// One consistent token set.
#[derive(Debug, Default)]
pub struct Snapshot {
    by_id: HashMap<Arc<str>, Arc<Token>>,
    by_name: HashMap<Arc<str>, Arc<Token>>,
    /// Increases with every successful load.
    pub generation: u64,
}

fn origin(t: &Token) -> String {
    t.source.describe()
}

impl Snapshot {
    /// Indexes `tokens` (owned or already shared), refusing duplicate ids or names.
    pub fn build<T: Into<Arc<Token>>>(
        tokens: impl IntoIterator<Item = T>,
        generation: u64,
    ) -> Result<Self, Vec<SnapshotError>> {
        let tokens = tokens.into_iter();
        let mut errors = Vec::new();
        let mut s = Snapshot {
            generation,
            by_id: HashMap::with_capacity(tokens.size_hint().0),
            by_name: HashMap::with_capacity(tokens.size_hint().0),
        };
        for t in tokens {
            let t: Arc<Token> = t.into();
            if let Some(prev) = s.by_id.get(&t.id) {
                errors.push(SnapshotError::DuplicateId {
                    id: t.id.to_string(),
                    first: origin(prev),
                    second: origin(&t),
                });
                continue;
            }
            if let Some(prev) = s.by_name.get(&t.name) {
                errors.push(SnapshotError::DuplicateName {
                    name: t.name.to_string(),
                    first: origin(prev),
                    second: origin(&t),
                });
                continue;
            }
            s.by_id.insert(t.id.clone(), t.clone());
            s.by_name.insert(t.name.clone(), t);
        }
        if errors.is_empty() {
            Ok(s)
        } else {
            Err(errors)
        }
    }

    /// The token with this id.
    pub fn by_id(&self, id: &str) -> Option<&Arc<Token>> {
        self.by_id.get(id)
    }

    /// The token with this name.
    pub fn by_name(&self, name: &str) -> Option<&Arc<Token>> {
        self.by_name.get(name)
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// True when there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// All tokens, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Token>> {
        self.by_id.values()
    }
}

/// The live token set the proxy reads on every request.
#[derive(Debug, Default)]
pub struct TokenSet {
    current: ArcSwap<Snapshot>,
    ready: AtomicBool,
}

impl TokenSet {
    /// The current snapshot (a cheap, lock-free load).
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// Replaces the snapshot in one step and marks the set ready.
    pub fn store(&self, snapshot: Snapshot) {
        self.current.store(Arc::new(snapshot));
        self.ready.store(true, Ordering::Release);
    }

    /// True once a first snapshot was stored.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}
