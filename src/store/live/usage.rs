//! Last use of each token: when, from which client address and with which user agent. Noted
//! in memory on every use (the time at most once a second per token, unless the address or
//! user agent changes) and written to the database behind, in batches (one row per token).

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::Store;
use crate::store::db::{DbError, LastUse};
use crate::token::{Source, Token};

/// Last-use times closer than this to the stored one are not updated (saves map writes).
const USAGE_RESOLUTION_MS: i64 = 1000;

/// Longest user agent kept, in bytes (cut at a character boundary).
const MAX_USER_AGENT: usize = 256;

#[derive(Debug, Clone)]
pub(super) struct Usage {
    pub(super) last: LastUse,
    pub(super) dirty: bool,
}

/// The user agent as stored: control characters dropped, at most [`MAX_USER_AGENT`] bytes;
/// `None` when nothing is left. Bytes that are not UTF-8 are replaced.
fn clean_user_agent(raw: &[u8]) -> Option<Arc<str>> {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len().min(MAX_USER_AGENT));
    for c in text.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > MAX_USER_AGENT {
            break;
        }
        out.push(c);
    }
    (!out.is_empty()).then(|| Arc::from(out))
}

/// True when `stored` is what [`clean_user_agent`] makes of `raw` (checked without
/// allocating, so an unchanged user agent costs no copy).
fn same_user_agent(stored: Option<&str>, raw: Option<&[u8]>) -> bool {
    match (stored, raw) {
        (None, None) => true,
        (Some(s), Some(r)) if s.as_bytes() == r => true,
        (None, Some(r)) => r.iter().all(|b| b.is_ascii_control()),
        // A cleaned (changed or cut) value is compared the slow way: rare.
        (Some(s), Some(r)) => clean_user_agent(r).as_deref() == Some(s),
        (Some(_), None) => false,
    }
}

impl Store {
    /// Notes that `token` was used at `now`, from `client` with the `User-Agent` value
    /// `user_agent` (in memory; written behind).
    pub fn touch(
        &self,
        token: &Token,
        now: DateTime<Utc>,
        client: Option<IpAddr>,
        user_agent: Option<&[u8]>,
    ) {
        if token.source == Source::Bootstrap {
            return;
        }
        if let Some(u) = self.usage.get(&token.id) {
            if (now - u.last.at).num_milliseconds() < USAGE_RESOLUTION_MS
                && u.last.ip == client
                && same_user_agent(u.last.user_agent.as_deref(), user_agent)
            {
                return;
            }
        }
        let mut entry = self.usage.entry(token.id.clone()).or_insert(Usage {
            last: LastUse {
                at: now,
                ip: None,
                user_agent: None,
            },
            dirty: true,
        });
        let u = entry.value_mut();
        u.last.at = u.last.at.max(now);
        u.last.ip = client;
        if !same_user_agent(u.last.user_agent.as_deref(), user_agent) {
            u.last.user_agent = user_agent.and_then(clean_user_agent);
        }
        u.dirty = true;
    }

    /// The last use of a token, if known.
    pub fn last_used(&self, id: &str) -> Option<LastUse> {
        self.usage.get(id).map(|u| u.last.clone())
    }

    /// Writes pending last uses to the database.
    pub async fn flush_usage(&self) -> Result<usize, DbError> {
        let Some(db) = self.db.get() else {
            return Ok(0);
        };
        let batch: Vec<(Arc<str>, LastUse)> = self
            .usage
            .iter()
            .filter(|e| e.dirty)
            .map(|e| (e.key().clone(), e.last.clone()))
            .collect();
        if batch.is_empty() {
            return Ok(0);
        }
        db.record_usage(&batch).await?;
        for (id, last) in &batch {
            if let Some(mut u) = self.usage.get_mut(id) {
                if u.last == *last {
                    u.dirty = false;
                }
            }
        }
        Ok(batch.len())
    }

    /// Forgets last-use entries of tokens no longer in the snapshot.
    pub fn prune_usage(&self) {
        let snap = self.set.load();
        self.usage
            .retain(|id, u| u.dirty || snap.by_id(id).is_some());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agents_are_cleaned_and_compared_without_copies() {
        assert_eq!(clean_user_agent(b"pip/24.0").as_deref(), Some("pip/24.0"));
        assert_eq!(clean_user_agent(b"a\r\nb\x00c").as_deref(), Some("abc"));
        assert_eq!(clean_user_agent(b"\x01\x02"), None);
        let long = "é".repeat(200);
        let cut = clean_user_agent(long.as_bytes()).unwrap();
        assert_eq!(cut.len(), MAX_USER_AGENT);
        assert!(same_user_agent(Some("pip/24.0"), Some(b"pip/24.0")));
        assert!(same_user_agent(Some("abc"), Some(b"a\nbc")));
        assert!(!same_user_agent(Some("pip/24.0"), Some(b"npm/10")));
        assert!(!same_user_agent(Some("pip/24.0"), None));
        assert!(same_user_agent(None, Some(b"\x01")));
        assert!(same_user_agent(Some(&cut), Some(long.as_bytes())));
    }
}
