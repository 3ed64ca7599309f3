//! Minted (trusted-publishing) tokens in the database: deleting the expired ones.

use chrono::{DateTime, Utc};

use super::row::millis;
use super::{unavailable, Database, DbError};

impl Database {
    /// Deletes minted (trusted-publishing) tokens that expired before `now`; how many.
    pub async fn purge_expired_minted(&self, now: DateTime<Utc>) -> Result<u64, DbError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let done = sqlx::query(
            "DELETE FROM tokens WHERE oidc IS NOT NULL AND expires_at IS NOT NULL AND expires_at < $1",
        )
        .bind(millis(now))
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        if done.rows_affected() > 0 {
            Self::bump(&mut tx).await.map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::token::{self, OidcOrigin, Permission, Source, Token};

    fn token(name: &str, expires_at: DateTime<Utc>, source: Source) -> Token {
        let g = token::generate();
        Token {
            id: Arc::from(g.id.as_str()),
            name: Arc::from(name),
            description: None,
            hash: token::validate_phc(
                &token::hash_secret(g.token.expose(), &token::HashParams::cheap()).unwrap(),
            )
            .unwrap(),
            permission: Permission::Write,
            routes: vec![],
            created_at: Some(Utc::now()),
            expires_at: Some(expires_at),
            rate_limit: None,
            disabled: false,
            allowed_ips: Default::default(),
            generation: 1,
            previous: None,
            packages: Default::default(),
            source,
        }
    }

    #[tokio::test]
    async fn only_expired_minted_tokens_are_purged() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(&format!("sqlite://{}/t.db", dir.path().display()))
            .await
            .unwrap();
        let now = Utc::now();
        let origin = Arc::new(OidcOrigin {
            policy: "p".into(),
            issuer: "https://i.example".into(),
            subject: "s".into(),
            repository: Some("acme/widget".into()),
            run_id: None,
        });
        let past = now - chrono::Duration::seconds(5);
        let future = now + chrono::Duration::minutes(5);
        db.insert(&token("minted-old", past, Source::Oidc(origin.clone())))
            .await
            .unwrap();
        db.insert(&token("minted-new", future, Source::Oidc(origin.clone())))
            .await
            .unwrap();
        // An ordinary token that expired stays listed (the API shows it as expired).
        db.insert(&token("plain-old", past, Source::Database))
            .await
            .unwrap();
        let changes = db.changes().await.unwrap();
        assert_eq!(db.purge_expired_minted(now).await.unwrap(), 1);
        assert!(db.changes().await.unwrap() > changes);
        let mut names: Vec<String> = db
            .tokens()
            .await
            .unwrap()
            .iter()
            .map(|t| t.name.to_string())
            .collect();
        names.sort();
        assert_eq!(names, ["minted-new", "plain-old"]);
        let back = db.find("minted-new").await.unwrap();
        assert_eq!(back.source, Source::Oidc(origin));
        assert_eq!(db.purge_expired_minted(now).await.unwrap(), 0);
    }
}
