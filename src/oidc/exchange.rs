//! One exchange, in order: the job token's size, shape and algorithm → its issuer among the
//! trust policies → the issuer's key (JWKS) → signature and times → audience and claim rules
//! (the policy) → its `jti` recorded as used (database, so across replicas) → a token minted,
//! stored and put in the token set. Each failed check is a refusal with its own code; none
//! repeats the job token.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use super::jwks::KeyError;
use super::{db, mint, policy, verify, Oidc};
use crate::token::Secret;

/// A refused exchange: HTTP status, a code naming the check that failed, and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP status.
    pub status: u16,
    /// Which check failed (`unknown_issuer`, `bad_signature`, `jti_replayed`, …).
    pub code: &'static str,
    /// What happened, for the CI log. Never the job token.
    pub message: String,
}

impl Refusal {
    /// A refusal.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Refusal {
            status,
            code,
            message: message.into(),
        }
    }

    /// Too many exchanges in progress.
    pub fn busy() -> Self {
        Self::new(503, "busy", "too many exchanges in progress; retry")
    }

    /// The exchange took too long.
    pub fn timeout() -> Self {
        Self::new(503, "timeout", "the exchange took too long; retry")
    }

    /// The exchange failed inside Tollgate.
    pub fn internal() -> Self {
        Self::new(500, "internal", "the exchange failed; see the server log")
    }

    /// The JSON body: `{"error": code, "message": …}`.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": self.code, "message": self.message})
    }
}

/// What the client sent: the job token, and optionally the policy it means.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeRequest {
    /// The job token (a JWT); from the body's `token` or `Authorization: Bearer`.
    #[serde(default)]
    pub token: String,
    /// The trust policy to use; absent: the first that matches.
    #[serde(default)]
    pub policy: Option<String>,
}

impl std::fmt::Debug for ExchangeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExchangeRequest")
            .field("token", &"(redacted)")
            .field("policy", &self.policy)
            .finish()
    }
}

/// A minted token.
#[derive(Debug)]
pub struct Minted {
    /// The token (shown once).
    pub token: Secret,
    /// Its id.
    pub id: String,
    /// Its name (`oidc-<policy>-<id>`).
    pub name: String,
    /// When it stops working.
    pub expires_at: chrono::DateTime<chrono::Utc>,
    /// The trust policy that allowed it, and the job's identity.
    pub origin: std::sync::Arc<crate::token::OidcOrigin>,
}

impl Minted {
    /// The JSON answer: the token, its expiry, the policy, its id and name.
    pub fn body(&self) -> serde_json::Value {
        json!({
            "token": self.token.expose(),
            "expires_at": self.expires_at,
            "policy": self.origin.policy,
            "id": self.id,
            "name": self.name,
        })
    }
}

fn unavailable(e: impl std::fmt::Display) -> Refusal {
    tracing::warn!(error = %e, "trusted publishing: the token database failed");
    Refusal::new(
        503,
        "database_unavailable",
        "the token database is unavailable; retry",
    )
}

impl Oidc {
    /// Verifies `req`'s job token and mints a token for it, or says which check failed.
    pub async fn exchange(&self, req: ExchangeRequest) -> Result<Minted, Refusal> {
        let result = self.exchange_inner(&req).await;
        match &result {
            Ok(m) => tracing::info!(
                target: "audit",
                action = "oidc.exchange",
                result = "success",
                policy = %m.origin.policy,
                issuer = %m.origin.issuer,
                subject = %m.origin.subject,
                repository = m.origin.repository.as_deref().unwrap_or(""),
                run_id = m.origin.run_id.as_deref().unwrap_or(""),
                token_id = %m.id,
                token_name = %m.name,
                expires_at = %m.expires_at,
                "trusted publishing: token minted"
            ),
            Err(r) => tracing::info!(
                target: "audit",
                action = "oidc.exchange",
                result = r.code,
                reason = %r.message,
                "trusted publishing: exchange refused"
            ),
        }
        result
    }

    async fn exchange_inner(&self, req: &ExchangeRequest) -> Result<Minted, Refusal> {
        if req.token.is_empty() {
            return Err(Refusal::new(
                400,
                "invalid_request",
                "no job token: send {\"token\": JWT} or Authorization: Bearer JWT",
            ));
        }
        let head = verify::peek(&req.token)?;
        let database = self
            .store
            .db()
            .ok_or_else(|| unavailable("not connected"))?;
        let mut candidates: Vec<_> = self
            .policies()
            .await
            .map_err(unavailable)?
            .into_iter()
            .map(|(p, _)| p)
            .filter(|p| p.issuer == head.iss)
            .collect();
        if candidates.is_empty() {
            return Err(Refusal::new(
                401,
                "unknown_issuer",
                "no trust policy names the job token's issuer",
            ));
        }
        if let Some(wanted) = &req.policy {
            candidates.retain(|p| &p.name == wanted);
            if candidates.is_empty() {
                return Err(Refusal::new(
                    403,
                    "unknown_policy",
                    "no trust policy of that name for the job token's issuer",
                ));
            }
        }
        let key = match self.keys.key(&head.iss, &head.kid).await {
            Ok(k) => k,
            Err(KeyError::UnknownKid) => {
                return Err(Refusal::new(
                    401,
                    "unknown_kid",
                    "the job token's key id is not in the issuer's key set (JWKS)",
                ))
            }
            Err(KeyError::Unavailable(e)) => {
                tracing::warn!(issuer = %head.iss, error = %e, "trusted publishing: the issuer's keys cannot be fetched");
                return Err(Refusal::new(
                    503,
                    "jwks_unavailable",
                    "the issuer's signing keys cannot be fetched now; retry",
                ));
            }
        };
        if key.alg != head.alg {
            return Err(Refusal::new(
                401,
                "bad_signature",
                "the job token's algorithm does not fit the issuer's key",
            ));
        }
        let now = chrono::Utc::now();
        let claims = verify::verify(
            &req.token,
            &key.key,
            head.alg,
            &head.iss,
            self.config.leeway.as_secs(),
            now.timestamp(),
        )?;
        let policy = policy::select(&candidates, self.config.audience.as_deref(), &claims)?;
        let jti = claims.get("jti").and_then(|v| v.as_str()).unwrap_or("");
        let exp = claims.get("exp").and_then(|v| v.as_i64()).unwrap_or(0);
        let remember_until = chrono::DateTime::from_timestamp(exp, 0).unwrap_or(now)
            + chrono::Duration::from_std(self.config.leeway).unwrap_or_default();
        if !db::record_jti(database, &head.iss, jti, remember_until)
            .await
            .map_err(unavailable)?
        {
            return Err(Refusal::new(
                409,
                "jti_replayed",
                "this job token was already exchanged (its jti is single-use)",
            ));
        }
        let origin = mint::origin(policy, &head.iss, &claims);
        let lifetime = policy
            .effective_lifetime(self.config.max_lifetime)
            .min(self.token_max_lifetime.unwrap_or(Duration::MAX));
        let (policy, params) = (policy.clone(), self.hashing);
        let (token, secret) = tokio::task::spawn_blocking(move || {
            mint::build(&policy, origin, lifetime, &params, now)
        })
        .await
        .map_err(|_| Refusal::internal())?
        .map_err(|e| {
            tracing::error!(error = %e, "trusted publishing: building the token failed");
            Refusal::internal()
        })?;
        database.insert(&token).await.map_err(unavailable)?;
        if let Err(e) = self.store.rebuild().await {
            // Stored: the database follower will add it; meanwhile say so.
            tracing::warn!(error = %e, "token set rebuild after minting failed");
        }
        let crate::token::Source::Oidc(origin) = &token.source else {
            return Err(Refusal::internal());
        };
        Ok(Minted {
            token: secret,
            id: token.id.to_string(),
            name: token.name.to_string(),
            expires_at: token.expires_at.unwrap_or(now),
            origin: origin.clone(),
        })
    }
}
