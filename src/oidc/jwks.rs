//! Issuers' signing keys: the discovery document (`/.well-known/openid-configuration`) names
//! the JWKS, whose RSA and P-256 keys are kept per issuer for `jwks_cache_ttl`. A key id not in
//! the cached set fetches it again, at most once per `jwks_refresh_interval` per issuer (so a
//! flood of made-up key ids costs the issuer one request per interval). Every fetch has a
//! timeout and a size bound, and follows no redirect. Only issuers named by a trust policy are
//! ever fetched (the exchange checks the issuer first), so the cache holds at most one entry
//! per configured issuer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::config::{fetchable_url, OidcConfig};

/// Largest discovery document or JWKS read (GitHub's JWKS is about 2 KiB).
const MAX_DOCUMENT: usize = 256 * 1024;
/// Most keys kept from one JWKS.
const MAX_KEYS: usize = 64;

/// Why no key could be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// The issuer's discovery document or JWKS could not be fetched or read.
    Unavailable(String),
    /// The key id is not in the issuer's JWKS, even after a refresh (or a refresh was made
    /// less than an interval ago).
    UnknownKid,
}

/// One usable key of a JWKS.
#[derive(Clone)]
pub struct Key {
    /// The verification key.
    pub key: DecodingKey,
    /// The algorithm this key is for: RS256 for an RSA key, ES256 for a P-256 key (a JWK's own
    /// `alg`, when it names another, leaves the key out).
    pub alg: Algorithm,
}

struct KeySet {
    keys: HashMap<String, Key>,
    fetched: Instant,
}

#[derive(Default)]
struct Entry {
    /// One fetch per issuer at a time; the others wait for its result.
    fetching: tokio::sync::Mutex<()>,
    keys: Mutex<Option<Arc<KeySet>>>,
    /// When a key id missing from the set last made us fetch it again.
    last_kid_refresh: Mutex<Option<Instant>>,
}

/// The key sets of every issuer seen, fetched on demand.
pub struct KeyCache {
    http: reqwest::Client,
    entries: Mutex<HashMap<String, Arc<Entry>>>,
    ttl: Duration,
    refresh_interval: Duration,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl KeyCache {
    /// An empty cache with the `oidc:` bounds.
    pub fn new(config: &OidcConfig) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(config.fetch_timeout)
            .connect_timeout(config.fetch_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tollgate/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(KeyCache {
            http,
            entries: Mutex::new(HashMap::new()),
            ttl: config.jwks_cache_ttl,
            refresh_interval: config.jwks_refresh_interval,
        })
    }

    /// The key `kid` of `issuer` (whose URL a trust policy names).
    pub async fn key(&self, issuer: &str, kid: &str) -> Result<Key, KeyError> {
        let entry = lock(&self.entries)
            .entry(issuer.to_string())
            .or_default()
            .clone();
        let _one_fetch = entry.fetching.lock().await;
        let current = lock(&entry.keys).clone();
        let mut fresh = false;
        let set = match current {
            Some(set) if set.fetched.elapsed() < self.ttl => set,
            stale => match self.fetch(issuer).await {
                Ok(set) => {
                    fresh = true;
                    let set = Arc::new(set);
                    *lock(&entry.keys) = Some(set.clone());
                    set
                }
                Err(e) => match stale {
                    Some(set) => {
                        tracing::warn!(issuer, error = %e, "JWKS refresh failed; using the keys fetched before");
                        set
                    }
                    None => return Err(KeyError::Unavailable(e)),
                },
            },
        };
        if let Some(k) = set.keys.get(kid) {
            return Ok(k.clone());
        }
        if fresh {
            return Err(KeyError::UnknownKid);
        }
        {
            let mut last = lock(&entry.last_kid_refresh);
            if last.is_some_and(|t| t.elapsed() < self.refresh_interval) {
                return Err(KeyError::UnknownKid);
            }
            *last = Some(Instant::now());
        }
        let set = Arc::new(self.fetch(issuer).await.map_err(KeyError::Unavailable)?);
        *lock(&entry.keys) = Some(set.clone());
        set.keys.get(kid).cloned().ok_or(KeyError::UnknownKid)
    }

    /// Discovery, then the JWKS it names.
    async fn fetch(&self, issuer: &str) -> Result<KeySet, String> {
        let discovery_url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let discovery = self.get_json(&discovery_url).await?;
        if discovery.get("issuer").and_then(|v| v.as_str()) != Some(issuer) {
            return Err("the discovery document names another issuer".into());
        }
        let jwks_uri = discovery
            .get("jwks_uri")
            .and_then(|v| v.as_str())
            .ok_or("the discovery document has no jwks_uri")?;
        if !fetchable_url(jwks_uri) {
            return Err("the discovery document's jwks_uri is not https".into());
        }
        let jwks = self.get_json(jwks_uri).await?;
        let items = jwks
            .get("keys")
            .and_then(|k| k.as_array())
            .ok_or("the JWKS has no keys list")?;
        let mut keys = HashMap::new();
        for item in items.iter().take(MAX_KEYS) {
            // A key of a kind Tollgate does not use (or cannot read) is skipped, not fatal.
            let Ok(jwk) = serde_json::from_value::<Jwk>(item.clone()) else {
                continue;
            };
            if let Some((kid, key)) = usable(&jwk) {
                keys.insert(kid, key);
            }
        }
        if keys.is_empty() {
            return Err("the JWKS holds no RS256 or ES256 key with a key id".into());
        }
        Ok(KeySet {
            keys,
            fetched: Instant::now(),
        })
    }

    /// GET `url` as JSON: 200 only, at most [`MAX_DOCUMENT`] bytes (read in chunks, stopping
    /// past the bound), within the client's timeout.
    async fn get_json(&self, url: &str) -> Result<serde_json::Value, String> {
        let mut resp = self
            .http
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| format!("GET {url}: {}", without_url(&e)))?;
        if !resp.status().is_success() {
            return Err(format!("GET {url}: status {}", resp.status().as_u16()));
        }
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_DOCUMENT as u64)
        {
            return Err(format!("GET {url}: larger than {MAX_DOCUMENT} bytes"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("GET {url}: {}", without_url(&e)))?
        {
            if body.len() + chunk.len() > MAX_DOCUMENT {
                return Err(format!("GET {url}: larger than {MAX_DOCUMENT} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| format!("GET {url}: not JSON: {e}"))
    }
}

fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(url) = e.url() {
        s = s.replace(&format!(" ({url})"), "");
    }
    if e.is_timeout() {
        s = "timed out".into();
    }
    s
}

/// The key id and verification key of `jwk`, if it is an RSA or P-256 signing key with an id.
fn usable(jwk: &Jwk) -> Option<(String, Key)> {
    let kid = jwk.common.key_id.clone().filter(|k| !k.is_empty())?;
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != jsonwebtoken::jwk::PublicKeyUse::Signature)
    {
        return None;
    }
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        _ => return None,
    };
    let named = match alg {
        Algorithm::RS256 => KeyAlgorithm::RS256,
        _ => KeyAlgorithm::ES256,
    };
    if jwk.common.key_algorithm.is_some_and(|a| a != named) {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some((kid, Key { key, alg }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_rsa_and_p256_signing_keys_are_used() {
        let jwk = |v: serde_json::Value| serde_json::from_value::<Jwk>(v).unwrap();
        let rsa = serde_json::json!({"kty": "RSA", "kid": "r", "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw", "e": "AQAB"});
        let (kid, key) = usable(&jwk(rsa.clone())).unwrap();
        assert_eq!((kid.as_str(), key.alg), ("r", Algorithm::RS256));
        let mut enc = rsa.clone();
        enc["use"] = "enc".into();
        assert!(usable(&jwk(enc)).is_none());
        let mut other_alg = rsa.clone();
        other_alg["alg"] = "RS512".into();
        assert!(usable(&jwk(other_alg)).is_none());
        let mut no_kid = rsa;
        no_kid.as_object_mut().unwrap().remove("kid");
        assert!(usable(&jwk(no_kid)).is_none());
        // A symmetric key is never a verification key here (no HMAC with a public key).
        let oct = jwk(serde_json::json!({"kty": "oct", "kid": "h", "k": "c2VjcmV0"}));
        assert!(usable(&oct).is_none());
    }
}
