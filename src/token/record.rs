//! The token record as the proxy sees it, whatever its source.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::PhcHash;
use crate::auth::policy::RoutePattern;

/// What a token may do. Ordered: `Read < Write < Manager`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// GET, HEAD, OPTIONS.
    Read,
    /// Read plus PUT, POST, PATCH, DELETE.
    Write,
    /// Every method, and the admin API.
    Manager,
}

impl Permission {
    /// The lowercase name used in files, JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Manager => "manager",
        }
    }
}

/// The access a route grants: `write` implies `read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Read methods only.
    Read,
    /// Read and write methods.
    Write,
}

impl Access {
    /// The permission level this access amounts to.
    pub fn as_permission(self) -> Permission {
        match self {
            Access::Read => Permission::Read,
            Access::Write => Permission::Write,
        }
    }
}

/// A route rule: a path pattern and the access it grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The compiled pattern (its source text is `pattern.as_str()`).
    pub pattern: RoutePattern,
    /// The access granted under the pattern.
    pub access: Access,
}

/// Where a token record came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A YAML token file (its path).
    File(Arc<str>),
}

impl Source {
    /// The kind of source, as used in the API and metrics (`file`).
    pub fn kind(&self) -> &'static str {
        match self {
            Source::File(_) => "file",
        }
    }
}

/// One token. The secret is never here, only its argon2id hash.
#[derive(Debug, Clone)]
pub struct Token {
    /// Public id (12 base62 characters).
    pub id: Arc<str>,
    /// Unique name; also the Basic username for custom-secret tokens.
    pub name: Arc<str>,
    /// Free text.
    pub description: Option<String>,
    /// argon2id PHC hash of the full token (or of the custom secret).
    pub hash: PhcHash,
    /// What the token may do.
    pub permission: Permission,
    /// Route rules narrowing the permission; empty means every path.
    pub routes: Vec<Route>,
    /// When the token was made, if known.
    pub created_at: Option<DateTime<Utc>>,
    /// When the token stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// Changes whenever the secret or the rights change; cached verifications of another
    /// generation do not count.
    pub generation: u64,
    /// Where the record came from.
    pub source: Source,
}

impl Token {
    /// True once `now` has reached the expiry.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|e| now >= e)
    }
}
