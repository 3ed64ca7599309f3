//! Trusted publishing's own tables in the token database: the trust policies managed through
//! the admin API and the CLI, and the job-token ids already exchanged (one exchange per job
//! token, across every replica: a second insert of the same issuer and `jti` inserts nothing).

use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::config::TrustPolicy;
use crate::store::db::Database;

/// What went wrong with a trust policy change or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The policy is not valid.
    #[error("invalid trust policy: {0}")]
    Invalid(String),
    /// A policy of that name exists (in the file or the database).
    #[error("a trust policy named {0:?} already exists")]
    Duplicate(String),
    /// No such database policy.
    #[error("no trust policy {0:?} in the database")]
    NotFound(String),
    /// The policy comes from the configuration file.
    #[error("trust policy {0:?} comes from the configuration file: edit the file to change it")]
    ReadOnly(String),
    /// No token database is configured.
    #[error("no token database is configured (tokens.database: none)")]
    NoDatabase,
    /// The database does not answer.
    #[error("the token database is unavailable: {0}")]
    Unavailable(String),
}

fn unavailable(e: sqlx::Error) -> PolicyError {
    PolicyError::Unavailable(e.to_string())
}

/// Every database trust policy, by name. A row that no longer reads as a valid policy is left
/// out (logged): it never trusts anyone.
pub async fn policies(db: &Database) -> Result<Vec<TrustPolicy>, PolicyError> {
    let rows = sqlx::query("SELECT name, spec FROM trust_policies ORDER BY name")
        .fetch_all(db.pool())
        .await
        .map_err(unavailable)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let name: String = row.try_get(0).map_err(unavailable)?;
        let spec: String = row.try_get(1).map_err(unavailable)?;
        match serde_json::from_str::<TrustPolicy>(&spec) {
            Ok(p) if p.name == name => out.push(p),
            Ok(_) => tracing::error!(policy = %name, "stored trust policy names another; left out"),
            Err(e) => {
                tracing::error!(policy = %name, error = %e, "stored trust policy is invalid; left out")
            }
        }
    }
    Ok(out)
}

/// Stores a new policy (already validated).
pub async fn insert_policy(
    db: &Database,
    policy: &TrustPolicy,
    now: DateTime<Utc>,
) -> Result<(), PolicyError> {
    let spec = serde_json::to_string(policy).map_err(|e| PolicyError::Invalid(e.to_string()))?;
    sqlx::query("INSERT INTO trust_policies (name, spec, created_at) VALUES ($1, $2, $3)")
        .bind(&policy.name)
        .bind(spec)
        .bind(now.timestamp_millis())
        .execute(db.pool())
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                PolicyError::Duplicate(policy.name.clone())
            }
            _ => unavailable(e),
        })
        .map(|_| ())
}

/// Deletes a policy; false if there was none.
pub async fn delete_policy(db: &Database, name: &str) -> Result<bool, PolicyError> {
    sqlx::query("DELETE FROM trust_policies WHERE name = $1")
        .bind(name)
        .execute(db.pool())
        .await
        .map(|d| d.rows_affected() > 0)
        .map_err(unavailable)
}

/// Records that `issuer`'s job token `jti` was exchanged, until `expires_at`. False when it
/// was already recorded (a replay), here or on another replica.
pub async fn record_jti(
    db: &Database,
    issuer: &str,
    jti: &str,
    expires_at: DateTime<Utc>,
) -> Result<bool, PolicyError> {
    sqlx::query(
        "INSERT INTO oidc_jti (issuer, jti, expires_at) VALUES ($1, $2, $3) \
         ON CONFLICT (issuer, jti) DO NOTHING",
    )
    .bind(issuer)
    .bind(jti)
    .bind(expires_at.timestamp_millis())
    .execute(db.pool())
    .await
    .map(|d| d.rows_affected() == 1)
    .map_err(unavailable)
}

/// Forgets job-token ids whose job token expired before `now` (it can no longer be replayed:
/// verification refuses it).
pub async fn purge_jti(db: &Database, now: DateTime<Utc>) -> Result<u64, PolicyError> {
    sqlx::query("DELETE FROM oidc_jti WHERE expires_at < $1")
        .bind(now.timestamp_millis())
        .execute(db.pool())
        .await
        .map(|d| d.rows_affected())
        .map_err(unavailable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jti_is_single_use_and_policies_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/t.db", dir.path().display());
        let db = Database::open(&url).await.unwrap();
        let exp = Utc::now() + chrono::Duration::minutes(5);
        assert!(record_jti(&db, "https://i", "j1", exp).await.unwrap());
        assert!(!record_jti(&db, "https://i", "j1", exp).await.unwrap());
        // Another issuer's same jti is another token.
        assert!(record_jti(&db, "https://other", "j1", exp).await.unwrap());
        assert_eq!(
            purge_jti(&db, exp + chrono::Duration::seconds(1))
                .await
                .unwrap(),
            2
        );
        assert!(record_jti(&db, "https://i", "j1", exp).await.unwrap());

        let p: TrustPolicy = serde_yaml_ng::from_str(
            "{name: gh, issuer: 'https://token.actions.githubusercontent.com', audience: a, \
             claims: {repository: acme/widget}, permission: write, lifetime: 5m}",
        )
        .unwrap();
        insert_policy(&db, &p, Utc::now()).await.unwrap();
        assert_eq!(
            insert_policy(&db, &p, Utc::now()).await,
            Err(PolicyError::Duplicate("gh".into()))
        );
        assert_eq!(policies(&db).await.unwrap(), vec![p]);
        assert!(delete_policy(&db, "gh").await.unwrap());
        assert!(!delete_policy(&db, "gh").await.unwrap());
        assert!(policies(&db).await.unwrap().is_empty());
    }
}
