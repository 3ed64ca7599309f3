//! An immutable, validated set of tokens, looked up by id or by name, swapped atomically.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};

use crate::metrics::{EXPIRY_WINDOWS, METRICS};
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
    /// A token's name is another token's id (lookups by id or name would be ambiguous).
    #[error("token name {name:?} ({named}) is the id of another token ({owner})")]
    NameIsId {
        /// The name.
        name: String,
        /// Where the named record came from.
        named: String,
        /// Where the record with that id came from.
        owner: String,
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
        let (snapshot, errors) = Self::build_excluding_conflicts(tokens, generation);
        if errors.is_empty() {
            Ok(snapshot)
        } else {
            Err(errors)
        }
    }

    /// Indexes `tokens`, leaving out every record in a conflict, and says which conflicts there
    /// were. A conflict refuses only its own records, never the set: all records sharing an id,
    /// all records sharing a name (but the bootstrap token, the operator's way in, which lives
    /// in memory and cannot be edited away), and a record whose name is another token's id.
    /// Leaving out fails closed: a conflicting record never authenticates, the rest of the set
    /// (and every removal or narrowing in it) applies.
    pub fn build_excluding_conflicts<T: Into<Arc<Token>>>(
        tokens: impl IntoIterator<Item = T>,
        generation: u64,
    ) -> (Self, Vec<SnapshotError>) {
        let tokens: Vec<Arc<Token>> = tokens.into_iter().map(Into::into).collect();
        let (refused, errors) = conflicts(&tokens);
        let kept = refused.iter().filter(|r| !**r).count();
        let mut s = Snapshot {
            generation,
            by_id: HashMap::with_capacity(kept),
            by_name: HashMap::with_capacity(kept),
        };
        for (t, refused) in tokens.into_iter().zip(refused) {
            if !refused {
                s.by_id.insert(t.id.clone(), t.clone());
                s.by_name.insert(t.name.clone(), t);
            }
        }
        (s, errors)
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

    /// How many tokens expire within each of [`EXPIRY_WINDOWS`] from `now` (not expired yet),
    /// and how many have expired.
    pub fn expiry_counts(&self, now: DateTime<Utc>) -> ([usize; EXPIRY_WINDOWS.len()], usize) {
        let ends = EXPIRY_WINDOWS.map(|(_, days)| now + chrono::Duration::days(days));
        let (mut expiring, mut expired) = ([0; EXPIRY_WINDOWS.len()], 0);
        for e in self.by_id.values().filter_map(|t| t.expires_at) {
            if now >= e {
                expired += 1;
                continue;
            }
            for (n, end) in expiring.iter_mut().zip(ends) {
                if e <= end {
                    *n += 1;
                }
            }
        }
        (expiring, expired)
    }

    /// Sets the expiry gauges (`tollgate_tokens_expiring`, `tollgate_tokens_expired`) from
    /// this snapshot at `now`.
    pub fn record_expiry(&self, now: DateTime<Utc>) {
        let (expiring, expired) = self.expiry_counts(now);
        METRICS.set_expiry(expiring, expired);
    }
}

/// The conflicts among `tokens` (see [`Snapshot::build_excluding_conflicts`]): which records
/// a snapshot leaves out, and why, sorted.
pub fn conflicts(tokens: &[Arc<Token>]) -> (Vec<bool>, Vec<SnapshotError>) {
    let mut errors = Vec::new();
    let mut ids: HashMap<&str, Vec<usize>> = HashMap::with_capacity(tokens.len());
    let mut names: HashMap<&str, Vec<usize>> = HashMap::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        ids.entry(&t.id).or_default().push(i);
        names.entry(&t.name).or_default().push(i);
    }
    let mut refused = vec![false; tokens.len()];
    for (id, group) in &ids {
        if group.len() > 1 {
            for pair in group.windows(2) {
                errors.push(SnapshotError::DuplicateId {
                    id: id.to_string(),
                    first: origin(&tokens[pair[0]]),
                    second: origin(&tokens[pair[1]]),
                });
            }
            for &i in group {
                refused[i] = true;
            }
        }
    }
    let is_bootstrap = |i: usize| tokens[i].source == crate::token::Source::Bootstrap;
    for (name, group) in &names {
        if group.len() > 1 {
            for pair in group.windows(2) {
                errors.push(SnapshotError::DuplicateName {
                    name: name.to_string(),
                    first: origin(&tokens[pair[0]]),
                    second: origin(&tokens[pair[1]]),
                });
            }
            for &i in group {
                refused[i] |= !is_bootstrap(i);
            }
        }
        if let Some(owners) = ids.get(name) {
            for &n in group {
                for &o in owners {
                    if o != n {
                        errors.push(SnapshotError::NameIsId {
                            name: name.to_string(),
                            named: origin(&tokens[n]),
                            owner: origin(&tokens[o]),
                        });
                        // The named record goes, unless it is the bootstrap token.
                        if is_bootstrap(n) {
                            refused[o] = true;
                        } else {
                            refused[n] = true;
                        }
                    }
                }
            }
        }
    }
    errors.sort_by_key(|e| e.to_string());
    (refused, errors)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn token(id: &str, expires_at: Option<DateTime<Utc>>) -> Token {
        Token {
            expires_at,
            ..Token::for_tests(id, &format!("n{id}"))
        }
    }

    #[test]
    fn expiry_counts_by_window() {
        let now = Utc::now();
        let days = |d: i64| Some(now + chrono::Duration::days(d));
        let snapshot = Snapshot::build(
            vec![
                token("a", days(3)),
                token("b", days(20)),
                token("c", days(100)),
                token("d", days(-1)),
                token("e", None),
                // On the edges: expiring exactly now is expired; exactly 7 days ahead is inside.
                token("f", Some(now)),
                token("g", days(7)),
            ],
            1,
        )
        .expect("no conflicts");
        assert_eq!(snapshot.expiry_counts(now), ([2, 3], 2));
        // 99 days later only the 100-day token is left, a day from its expiry.
        assert_eq!(
            snapshot.expiry_counts(now + chrono::Duration::days(99)),
            ([1, 1], 5)
        );
    }
}
