//! argon2id PHC hashes: creating them with configured parameters, checking stored ones at
//! load time, and verifying a presented secret (with the parameters stored in the hash).

use std::fmt;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// argon2id cost parameters used when Tollgate creates a hash. Verification always uses the
/// parameters stored in the hash itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    /// Memory cost in KiB (default 19456 = 19 MiB, OWASP's minimum for argon2id).
    pub memory_kib: u32,
    /// Number of passes (default 2).
    pub iterations: u32,
    /// Lanes (default 1).
    pub parallelism: u32,
}

impl Default for HashParams {
    fn default() -> Self {
        HashParams {
            memory_kib: 19456,
            iterations: 2,
            parallelism: 1,
        }
    }
}

impl HashParams {
    /// Very cheap parameters for tests only: never use them for real tokens.
    pub fn cheap() -> Self {
        HashParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        }
    }
}

/// Largest memory cost accepted in a stored hash (1 GiB): a hash is a request-path cost.
const MAX_MEMORY_KIB: u32 = 1024 * 1024;
/// Largest time cost accepted in a stored hash.
const MAX_ITERATIONS: u32 = 64;

/// Why a hash could not be made or was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    /// Not a PHC string.
    #[error("not a PHC hash string ({0})")]
    Syntax(String),
    /// A PHC string of another algorithm.
    #[error("algorithm must be argon2id, found {0}")]
    Algorithm(String),
    /// Parameters out of range.
    #[error("argon2 parameters out of range: {0}")]
    Params(String),
}

/// A validated argon2id PHC string. `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub struct PhcHash(Box<str>);

impl PhcHash {
    /// The PHC string, for storage.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PhcHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PhcHash(***)")
    }
}

fn argon2_with(params: &HashParams) -> Result<Argon2<'static>, HashError> {
    let p = Params::new(
        params.memory_kib,
        params.iterations,
        params.parallelism,
        None,
    )
    .map_err(|e| HashError::Params(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, p))
}

/// Hashes `secret` with argon2id and a fresh random salt.
pub fn hash_secret(secret: &str, params: &HashParams) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    argon2_with(params)?
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError::Params(e.to_string()))
}

/// Checks that `phc` is an argon2id PHC string with sane parameters.
pub fn validate_phc(phc: &str) -> Result<PhcHash, HashError> {
    let parsed = PasswordHash::new(phc).map_err(|e| HashError::Syntax(e.to_string()))?;
    if parsed.algorithm.as_str() != "argon2id" {
        return Err(HashError::Algorithm(parsed.algorithm.as_str().to_string()));
    }
    let params = Params::try_from(&parsed).map_err(|e| HashError::Params(e.to_string()))?;
    if params.m_cost() > MAX_MEMORY_KIB || params.t_cost() > MAX_ITERATIONS {
        return Err(HashError::Params(format!(
            "m={} t={} exceeds the limit m<={MAX_MEMORY_KIB} t<={MAX_ITERATIONS}",
            params.m_cost(),
            params.t_cost()
        )));
    }
    if parsed.hash.is_none() || parsed.salt.is_none() {
        return Err(HashError::Syntax("missing salt or hash".into()));
    }
    Ok(PhcHash(phc.into()))
}

/// Verifies `secret` against a stored hash (constant-time compare inside argon2). CPU-heavy:
/// call from a blocking thread.
pub fn verify_secret(secret: &str, hash: &PhcHash) -> bool {
    match PasswordHash::new(&hash.0) {
        Ok(parsed) => Argon2::default()
            .verify_password(secret.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_then_verify() {
        let h = hash_secret("s3cret", &HashParams::cheap()).unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        let phc = validate_phc(&h).unwrap();
        assert!(verify_secret("s3cret", &phc));
        assert!(!verify_secret("s3cret ", &phc));
        assert_eq!(format!("{phc:?}"), "PhcHash(***)");
    }

    #[test]
    fn refuses_bad_hashes() {
        assert!(matches!(validate_phc("plain"), Err(HashError::Syntax(_))));
        assert!(matches!(
            validate_phc("$argon2i$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"),
            Err(HashError::Algorithm(_))
        ));
        assert!(matches!(
            validate_phc("$argon2id$v=19$m=4194304,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"),
            Err(HashError::Params(_))
        ));
    }
}
