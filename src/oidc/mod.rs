//! Trusted publishing: a CI job presents the OIDC token its provider signed (GitHub Actions,
//! GitLab CI, any OIDC issuer) at `POST /_tollgate/oidc/exchange` on the proxy listener and
//! gets a short-lived `tok_…` token that can do what a trust policy allows.
//!
//! Here: the [`Oidc`] service (shared by the proxy's exchange endpoint, the admin API and the
//! control plane's purge loop). By concern: `verify` (the JWT: size, shape, algorithm,
//! signature, times), `jwks` (discovery and key sets, cached per issuer, fetched with a
//! timeout and a size bound), `policy` (choosing the trust policy whose claim rules match),
//! `exchange` (the whole exchange and its refusals), `mint` (the minted token), `db` (trust
//! policies and used job-token ids in the token database).

mod db;
mod exchange;
mod jwks;
mod mint;
mod policy;
mod verify;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

pub use db::PolicyError;
pub use exchange::{ExchangeRequest, Minted, Refusal};
pub use policy::glob_match;

use crate::config::{Config, HashParams, OidcConfig, TrustPolicy};
use crate::store::Store;

/// Most exchanges in progress at once on one process; beyond it `503 busy`.
const MAX_CONCURRENT: usize = 32;
/// How often expired minted tokens and used job-token ids are deleted.
const PURGE_INTERVAL: Duration = Duration::from_secs(30);

/// The trusted-publishing service.
pub struct Oidc {
    config: OidcConfig,
    hashing: HashParams,
    /// `tokens.max_lifetime`: a minted token never outlives it either.
    token_max_lifetime: Option<Duration>,
    store: Arc<Store>,
    keys: jwks::KeyCache,
    /// The control-plane runtime: exchanges (HTTP fetches, database writes) run there, next
    /// to the database pool, whatever runtime the request arrived on.
    runtime: tokio::runtime::Handle,
    permits: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("policies", &self.config.policies.len())
            .finish()
    }
}

impl Oidc {
    /// The service for `config`, on the current tokio runtime (the control plane's).
    pub fn new(config: &Config, store: Arc<Store>) -> anyhow::Result<Self> {
        Ok(Oidc {
            keys: jwks::KeyCache::new(&config.oidc)?,
            config: config.oidc.clone(),
            hashing: config.hashing,
            token_max_lifetime: config.tokens.max_lifetime,
            store,
            runtime: tokio::runtime::Handle::current(),
            permits: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT)),
        })
    }

    /// The settings in force.
    pub fn config(&self) -> &OidcConfig {
        &self.config
    }

    /// The exchange path on the proxy listener.
    pub fn exchange_path(&self) -> &str {
        &self.config.exchange_path
    }

    /// Every trust policy: the configuration file's (`source: file`), then the database's.
    pub async fn policies(&self) -> Result<Vec<(TrustPolicy, &'static str)>, PolicyError> {
        let mut all: Vec<(TrustPolicy, &'static str)> = self
            .config
            .policies
            .iter()
            .cloned()
            .map(|p| (p, "file"))
            .collect();
        if let Some(database) = self.store.db() {
            all.extend(
                db::policies(database)
                    .await?
                    .into_iter()
                    .map(|p| (p, "database")),
            );
        } else if self.store.has_database() {
            return Err(PolicyError::Unavailable(
                "the token database is not connected yet".into(),
            ));
        }
        Ok(all)
    }

    /// Stores a new trust policy in the database (validated; a name already used, in the file
    /// or the database, is refused).
    pub async fn add_policy(&self, policy: TrustPolicy) -> Result<(), PolicyError> {
        self.check_policy(&policy)?;
        if self.config.policies.iter().any(|p| p.name == policy.name) {
            return Err(PolicyError::Duplicate(policy.name));
        }
        let database = self.database()?;
        db::insert_policy(database, &policy, Utc::now()).await
    }

    /// Checks a policy as the database would take it.
    pub fn check_policy(&self, policy: &TrustPolicy) -> Result<(), PolicyError> {
        check_policy(&self.config, policy)
    }

    /// Deletes a database trust policy (tokens already minted under it run out by themselves).
    pub async fn remove_policy(&self, name: &str) -> Result<(), PolicyError> {
        if self.config.policies.iter().any(|p| p.name == name) {
            return Err(PolicyError::ReadOnly(name.to_string()));
        }
        let database = self.database()?;
        if db::delete_policy(database, name).await? {
            Ok(())
        } else {
            Err(PolicyError::NotFound(name.to_string()))
        }
    }

    fn database(&self) -> Result<&crate::store::db::Database, PolicyError> {
        if !self.store.has_database() {
            return Err(PolicyError::NoDatabase);
        }
        self.store.db().ok_or_else(|| {
            PolicyError::Unavailable("the token database is not connected yet".into())
        })
    }

    /// Runs one exchange on the control-plane runtime, bounded in time and in concurrency;
    /// awaitable from any runtime (the proxy's).
    pub async fn exchange_detached(
        self: &Arc<Self>,
        req: ExchangeRequest,
    ) -> Result<Minted, Refusal> {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            return Err(Refusal::busy());
        };
        let me = self.clone();
        // The whole exchange: discovery + JWKS (each under `fetch_timeout`), a database insert
        // or two, one argon2 hash.
        let limit = self.config.fetch_timeout * 2 + Duration::from_secs(10);
        let task = self.runtime.spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(limit, me.exchange(req)).await {
                Ok(r) => r,
                Err(_) => Err(Refusal::timeout()),
            }
        });
        let result = task.await.unwrap_or_else(|_| Err(Refusal::internal()));
        let label = match &result {
            Ok(_) => "success",
            Err(r) => r.code,
        };
        crate::metrics::METRICS
            .oidc_exchanges
            .with_label_values(&[label])
            .inc();
        result
    }

    /// Control-plane loop: deletes expired minted tokens and used job-token ids every
    /// [`PURGE_INTERVAL`] until `stop` fires.
    pub async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(PURGE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.purge().await,
                _ = stop.changed() => return,
            }
        }
    }

    /// Deletes expired minted tokens (rebuilding the token set when any went) and used
    /// job-token ids whose job token has expired.
    pub async fn purge(&self) {
        let Some(database) = self.store.db() else {
            return;
        };
        let now = Utc::now();
        match database.purge_expired_minted(now).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(tokens = n, "expired minted tokens deleted");
                if let Err(e) = self.store.rebuild().await {
                    tracing::warn!(error = %e, "token set rebuild after the purge failed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "deleting expired minted tokens failed"),
        }
        if let Err(e) = db::purge_jti(database, now).await {
            tracing::warn!(error = %e, "deleting expired job-token ids failed");
        }
    }
}

/// Checks `policy` against the `oidc:` settings (its own rules, and an audience from it or
/// from `oidc.audience`).
pub fn check_policy(config: &OidcConfig, policy: &TrustPolicy) -> Result<(), PolicyError> {
    policy
        .validate(config.max_lifetime)
        .map_err(PolicyError::Invalid)?;
    if policy.audience.is_none() && config.audience.is_none() {
        return Err(PolicyError::Invalid(
            "audience: required when oidc.audience is not set (the aud job tokens must carry)"
                .into(),
        ));
    }
    Ok(())
}

/// Stores a trust policy straight in `database` (the CLI, without a running server).
pub async fn add_policy_to(
    config: &OidcConfig,
    database: &crate::store::db::Database,
    policy: &TrustPolicy,
) -> Result<(), PolicyError> {
    check_policy(config, policy)?;
    if config.policies.iter().any(|p| p.name == policy.name) {
        return Err(PolicyError::Duplicate(policy.name.clone()));
    }
    db::insert_policy(database, policy, Utc::now()).await
}

/// The trust policies stored in `database` (the CLI).
pub async fn policies_in(
    database: &crate::store::db::Database,
) -> Result<Vec<TrustPolicy>, PolicyError> {
    db::policies(database).await
}

/// Deletes a trust policy from `database` (the CLI); false if there was none.
pub async fn remove_policy_from(
    database: &crate::store::db::Database,
    name: &str,
) -> Result<bool, PolicyError> {
    db::delete_policy(database, name).await
}
