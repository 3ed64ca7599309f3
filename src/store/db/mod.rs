//! The token database: embedded SQLite by default, PostgreSQL when replicas share tokens.
//! One set of queries through sqlx's `Any` driver, migrations embedded per backend.
//!
//! Every token write bumps a change counter in the same transaction, so any process (the
//! server, a replica, the CLI) can notice another's writes by polling one integer.
//!
//! Here: the connection pool and the queries; `url` handles database URLs, `row` turns rows
//! into tokens and back.

mod minted;
mod quota;
mod row;
mod url;

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::AnyPool;
use sqlx::Row;

use crate::token::Token;

/// A token's last use: when, from which client address, with which user agent (control
/// characters dropped, at most 256 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastUse {
    /// When (to about a second).
    pub at: DateTime<Utc>,
    /// The client's address, when known.
    pub ip: Option<std::net::IpAddr>,
    /// The `User-Agent` it sent, if any.
    pub user_agent: Option<Arc<str>>,
}
use row::{
    from_millis, millis, oidc_json, previous_columns, quota_json, rate_limit_json, routes_json,
    row_to_token,
};
pub use url::{backend_of, missing_sqlite_file, redact_url, Backend};
use url::{create_private, sqlite_path};

/// What went wrong with the database.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DbError {
    /// The database cannot be reached or used right now.
    #[error("the token database is unavailable: {0}")]
    Unavailable(String),
    /// The URL is not usable.
    #[error("database URL: {0}")]
    Url(String),
    /// Another token already has this name.
    #[error("a token named {0:?} already exists")]
    DuplicateName(String),
    /// Another token already has this id.
    #[error("a token with id {0:?} already exists")]
    DuplicateId(String),
    /// No such token (or it changed meanwhile).
    #[error("no token {0:?} in the database")]
    NotFound(String),
    /// A stored row cannot be read back.
    #[error("stored token {id:?} is invalid: {reason}")]
    Corrupt {
        /// Row id.
        id: String,
        /// What is wrong.
        reason: String,
    },
}

fn classify(e: sqlx::Error, name: &str, id: &str) -> DbError {
    if let sqlx::Error::Database(db) = &e {
        if db.is_unique_violation() {
            let msg = db.message().to_ascii_lowercase();
            return if msg.contains("name") {
                DbError::DuplicateName(name.to_string())
            } else {
                DbError::DuplicateId(id.to_string())
            };
        }
    }
    DbError::Unavailable(e.to_string())
}

pub(super) fn unavailable(e: sqlx::Error) -> DbError {
    DbError::Unavailable(e.to_string())
}

/// A connection pool to the token database.
#[derive(Clone)]
pub struct Database {
    pool: AnyPool,
    backend: Backend,
    url: String,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("backend", &self.backend)
            .finish()
    }
}

const TOKEN_COLUMNS: &str =
    "id, name, description, hash, permission, routes, rate_limit, created_at, expires_at, generation, disabled, allowed_ips, previous_hash, previous_valid_until, oidc, packages, quota";

impl Database {
    /// Opens (creating the SQLite file and its directory if needed, private to the user) and
    /// migrates.
    pub async fn open(url: &str) -> Result<Self, DbError> {
        Self::open_with(url, false).await
    }

    /// Opens without creating or changing anything (`check-config`): SQLite read-only, no
    /// migration.
    pub async fn open_read_only(url: &str) -> Result<Self, DbError> {
        Self::open_with(url, true).await
    }

    async fn open_with(url: &str, read_only: bool) -> Result<Self, DbError> {
        sqlx::any::install_default_drivers();
        let backend = backend_of(url)?;
        let mut url = url.to_string();
        if backend == Backend::Sqlite {
            if let (Some(path), false) = (sqlite_path(&url), read_only) {
                create_private(Path::new(path))?;
            }
            if !url.contains("mode=") {
                url.push(if url.contains('?') { '&' } else { '?' });
                url.push_str(if read_only { "mode=ro" } else { "mode=rwc" });
            }
        }
        let options = AnyConnectOptions::from_str(&url).map_err(|e| DbError::Url(e.to_string()))?;
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 8 })
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(unavailable)?;
        let db = Database {
            pool,
            backend,
            url: url.clone(),
        };
        if !read_only {
            db.migrate().await?;
        }
        Ok(db)
    }

    async fn migrate(&self) -> Result<(), DbError> {
        let migrator = match self.backend {
            Backend::Sqlite => sqlx::migrate!("migrations/sqlite"),
            Backend::Postgres => sqlx::migrate!("migrations/postgres"),
        };
        migrator
            .run(&self.pool)
            .await
            .map_err(|e| DbError::Unavailable(format!("migration failed: {e}")))?;
        if self.backend == Backend::Sqlite {
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&self.pool)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    /// The URL (with its password: never log it; see [`redact_url`]).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The connection pool, for the tables other parts own (trusted publishing's, the usage
    /// ledger, webhook claims); the token tables are written only through the methods here.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The engine in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The change counter: differs whenever a token was written since the last read.
    pub async fn changes(&self) -> Result<i64, DbError> {
        sqlx::query("SELECT v FROM tollgate_meta WHERE k = 'changes'")
            .fetch_one(&self.pool)
            .await
            .and_then(|r| r.try_get::<i64, _>(0))
            .map_err(unavailable)
    }

    /// Every stored token; all bad rows are reported together.
    pub async fn tokens(&self) -> Result<Vec<Token>, Vec<DbError>> {
        let (tokens, problems) = self.tokens_with_problems().await.map_err(|e| vec![e])?;
        if problems.is_empty() {
            Ok(tokens)
        } else {
            Err(problems)
        }
    }

    /// Every stored token that reads back valid, and the problems of the rows that do not (a
    /// row that cannot be read is left out: it never authenticates). Fails only when the
    /// database does not answer.
    pub async fn tokens_with_problems(&self) -> Result<(Vec<Token>, Vec<DbError>), DbError> {
        let rows = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY created_at, id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        let mut tokens = Vec::with_capacity(rows.len());
        let mut problems = Vec::new();
        for row in rows {
            match row_to_token(&row) {
                Ok(t) => tokens.push(t),
                Err(e) => problems.push(e),
            }
        }
        Ok((tokens, problems))
    }

    /// One stored token by id.
    pub async fn token(&self, id: &str) -> Result<Token, DbError> {
        let row = sqlx::query(&format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| DbError::NotFound(id.to_string()))?;
        row_to_token(&row)
    }

    /// One stored token by id, or else by name.
    pub async fn find(&self, id_or_name: &str) -> Result<Token, DbError> {
        let row = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = $1 OR name = $1 ORDER BY CASE WHEN id = $1 THEN 0 ELSE 1 END"
        ))
        .bind(id_or_name)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| DbError::NotFound(id_or_name.to_string()))?;
        row_to_token(&row)
    }

    async fn bump(tx: &mut sqlx::Transaction<'_, sqlx::Any>) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE tollgate_meta SET v = v + 1 WHERE k = 'changes'")
            .execute(&mut **tx)
            .await
            .map(|_| ())
    }

    /// Stores a new token.
    pub async fn insert(&self, t: &Token) -> Result<(), DbError> {
        let c = |e| classify(e, &t.name, &t.id);
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        sqlx::query(&format!(
            "INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
        ))
        .bind(&*t.id)
        .bind(&*t.name)
        .bind(t.description.clone())
        .bind(t.hash.as_str())
        .bind(t.permission.as_str())
        .bind(routes_json(&t.routes))
        .bind(rate_limit_json(t.rate_limit))
        .bind(
            t.created_at
                .map(millis)
                .unwrap_or_else(|| millis(Utc::now())),
        )
        .bind(t.expires_at.map(millis))
        .bind(t.generation as i64)
        .bind(i64::from(t.disabled))
        .bind(t.allowed_ips.to_string())
        .bind(previous_columns(t).0)
        .bind(previous_columns(t).1)
        .bind(oidc_json(&t.source))
        .bind(t.packages.to_string())
        .bind(quota_json(t.quota))
        .execute(&mut *tx)
        .await
        .map_err(c)?;
        Self::bump(&mut tx).await.map_err(c)?;
        tx.commit().await.map_err(c)
    }

    /// Rewrites a token's mutable fields (name, description, hash, permission, routes, rate
    /// limit, disabled, allowed IPs, previous secret), if it is still at generation `expected`; its generation becomes `t.generation`.
    pub async fn update(&self, t: &Token, expected: u64) -> Result<(), DbError> {
        let c = |e| classify(e, &t.name, &t.id);
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let done = sqlx::query(
            "UPDATE tokens SET name = $1, description = $2, hash = $3, permission = $4, routes = $5, \
             rate_limit = $6, generation = $7, disabled = $8, allowed_ips = $9, \
             previous_hash = $10, previous_valid_until = $11, packages = $12, quota = $13 \
             WHERE id = $14 AND generation = $15",
        )
        .bind(&*t.name)
        .bind(t.description.clone())
        .bind(t.hash.as_str())
        .bind(t.permission.as_str())
        .bind(routes_json(&t.routes))
        .bind(rate_limit_json(t.rate_limit))
        .bind(t.generation as i64)
        .bind(i64::from(t.disabled))
        .bind(t.allowed_ips.to_string())
        .bind(previous_columns(t).0)
        .bind(previous_columns(t).1)
        .bind(t.packages.to_string())
        .bind(quota_json(t.quota))
        .bind(&*t.id)
        .bind(expected as i64)
        .execute(&mut *tx)
        .await
        .map_err(c)?;
        if done.rows_affected() == 0 {
            return Err(DbError::NotFound(t.id.to_string()));
        }
        Self::bump(&mut tx).await.map_err(c)?;
        tx.commit().await.map_err(c)
    }

    /// Forgets the previous secret of token `id` at generation `generation` (its overlap
    /// ended); false when there was none to forget (already retired, or the token changed).
    /// The generation stays: cached verifications of the current secret remain valid.
    pub async fn retire_previous(&self, id: &str, generation: u64) -> Result<bool, DbError> {
        let c = |e| classify(e, "", id);
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let done = sqlx::query(
            "UPDATE tokens SET previous_hash = NULL, previous_valid_until = NULL \
             WHERE id = $1 AND generation = $2 AND previous_hash IS NOT NULL",
        )
        .bind(id)
        .bind(generation as i64)
        .execute(&mut *tx)
        .await
        .map_err(c)?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        Self::bump(&mut tx).await.map_err(c)?;
        tx.commit().await.map_err(c)?;
        Ok(true)
    }

    /// Deletes (revokes) a token; false if there was none.
    pub async fn delete(&self, id: &str) -> Result<bool, DbError> {
        let c = |e| classify(e, "", id);
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let done = sqlx::query("DELETE FROM tokens WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(c)?;
        sqlx::query("DELETE FROM token_usage WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(c)?;
        Self::bump(&mut tx).await.map_err(c)?;
        tx.commit().await.map_err(c)?;
        Ok(done.rows_affected() > 0)
    }

    /// Writes a batch of last uses, one row per token (never moving one backwards: an older
    /// use leaves the row, its address and user agent as they are).
    pub async fn record_usage(&self, batch: &[(Arc<str>, LastUse)]) -> Result<(), DbError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        for (id, last) in batch {
            sqlx::query(
                "INSERT INTO token_usage (id, last_used_at, last_used_ip, last_used_user_agent) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO UPDATE SET \
                 last_used_ip = CASE WHEN excluded.last_used_at >= token_usage.last_used_at \
                 THEN excluded.last_used_ip ELSE token_usage.last_used_ip END, \
                 last_used_user_agent = CASE WHEN excluded.last_used_at >= token_usage.last_used_at \
                 THEN excluded.last_used_user_agent ELSE token_usage.last_used_user_agent END, \
                 last_used_at = CASE WHEN excluded.last_used_at > token_usage.last_used_at \
                 THEN excluded.last_used_at ELSE token_usage.last_used_at END",
            )
            .bind(&**id)
            .bind(millis(last.at))
            .bind(last.ip.map(|ip| ip.to_string()))
            .bind(last.user_agent.as_deref().map(str::to_owned))
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)
    }

    /// Last uses of every token that has one.
    pub async fn usage(&self) -> Result<HashMap<String, LastUse>, DbError> {
        let rows = sqlx::query(
            "SELECT id, last_used_at, last_used_ip, last_used_user_agent FROM token_usage",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        let mut out = HashMap::with_capacity(rows.len());
        for r in rows {
            let id: String = r.try_get(0).map_err(unavailable)?;
            let at: i64 = r.try_get(1).map_err(unavailable)?;
            let ip: Option<String> = r.try_get(2).map_err(unavailable)?;
            let user_agent: Option<String> = r.try_get(3).map_err(unavailable)?;
            if let Some(at) = from_millis(at) {
                let last = LastUse {
                    at,
                    ip: ip.and_then(|ip| ip.parse().ok()),
                    user_agent: user_agent.map(Arc::from),
                };
                out.insert(id, last);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
