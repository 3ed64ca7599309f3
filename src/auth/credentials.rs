//! Credentials from the `Authorization` header, in every form package managers send
//! (Basic with a token user or a `tok_` password, Basic `NAME:SECRET`, Bearer, a bare token).
//! Parsing is total: any byte string gives a value or an error, never a panic.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::token::{self, Secret};

/// A credential as presented by the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented {
    /// A generated `tok_…` token (its checksum already checked).
    Token {
        /// The token's public id.
        id: String,
        /// The whole token.
        token: Secret,
    },
    /// Basic `NAME:SECRET`: a custom secret of the token named NAME.
    Named {
        /// The token's name.
        name: String,
        /// The secret as sent.
        secret: Secret,
    },
}

impl Presented {
    /// The secret bytes argon2 checks.
    pub fn secret(&self) -> &Secret {
        match self {
            Presented::Token { token, .. } => token,
            Presented::Named { secret, .. } => secret,
        }
    }

    /// The token id or name the credential claims (what per-token budgets are keyed by).
    pub fn who(&self) -> &str {
        match self {
            Presented::Token { id, .. } => id,
            Presented::Named { name, .. } => name,
        }
    }

    /// SHA-256 over the credential: the verification cache key. Named credentials include the
    /// name, so one secret under two names are two keys.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        match self {
            Presented::Token { token, .. } => {
                h.update([0u8]);
                h.update(token.expose().as_bytes());
            }
            Presented::Named { name, secret } => {
                h.update([1u8]);
                h.update((name.len() as u64).to_le_bytes());
                h.update(name.as_bytes());
                h.update(secret.expose().as_bytes());
            }
        }
        h.finalize().into()
    }
}

/// Why no credential could be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// No `Authorization` header.
    #[error("no credentials were sent")]
    Missing,
    /// A header that is not one of the accepted forms, or a token with a bad shape or checksum.
    #[error("credentials are malformed: {0}")]
    Malformed(&'static str),
}

fn token_from(s: &str) -> Result<Presented, CredentialError> {
    match token::parse(s) {
        Ok(t) => Ok(Presented::Token {
            id: t.id.to_string(),
            token: Secret::new(s),
        }),
        Err(token::ParseError::Checksum) => {
            Err(CredentialError::Malformed("token checksum does not match"))
        }
        Err(_) => Err(CredentialError::Malformed("not a Tollgate token")),
    }
}

fn split_scheme(h: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = h.split_once(' ')?;
    Some((scheme, rest.trim_start_matches(' ')))
}

/// Reads the credential from an `Authorization` header value.
/// `token_usernames` are the Basic usernames meaning "the password is the token".
pub fn parse_authorization(
    header: Option<&[u8]>,
    token_usernames: &[String],
) -> Result<Presented, CredentialError> {
    let raw = header.ok_or(CredentialError::Missing)?;
    let h = std::str::from_utf8(raw)
        .map_err(|_| CredentialError::Malformed("header is not UTF-8"))?
        .trim_matches(|c| c == ' ' || c == '\t');
    if h.is_empty() {
        return Err(CredentialError::Missing);
    }
    let Some((scheme, rest)) = split_scheme(h) else {
        // No scheme: cargo sends the bare token.
        return token_from(h);
    };
    if scheme.eq_ignore_ascii_case("basic") {
        let bytes = STANDARD
            .decode(rest)
            .or_else(|_| STANDARD_NO_PAD.decode(rest))
            .map_err(|_| CredentialError::Malformed("Basic credentials are not base64"))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| CredentialError::Malformed("Basic credentials are not UTF-8"))?;
        let (user, pass) = text
            .split_once(':')
            .ok_or(CredentialError::Malformed("Basic credentials have no ':'"))?;
        if pass.starts_with(token::PREFIX) {
            if let Ok(t) = token_from(pass) {
                return Ok(t);
            }
        }
        if token_usernames.iter().any(|u| u == user) {
            return token_from(pass);
        }
        if user.is_empty() || pass.is_empty() {
            return Err(CredentialError::Malformed(
                "Basic credentials need a name and a secret",
            ));
        }
        return Ok(Presented::Named {
            name: user.to_string(),
            secret: Secret::new(pass),
        });
    }
    if scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token") {
        return token_from(rest.trim());
    }
    Err(CredentialError::Malformed(
        "unsupported authorization scheme",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> Vec<String> {
        vec!["token".into(), "__token__".into()]
    }

    fn basic(s: &str) -> Vec<u8> {
        format!("Basic {}", STANDARD.encode(s)).into_bytes()
    }

    #[test]
    fn every_accepted_form() {
        let g = token::generate();
        let t = g.token.expose();
        let want = Presented::Token {
            id: g.id.clone(),
            token: g.token.clone(),
        };
        let forms: Vec<Vec<u8>> = vec![
            basic(&format!("token:{t}")),
            basic(&format!("__token__:{t}")),
            basic(&format!("anyone:{t}")),
            format!("basic {}", STANDARD_NO_PAD.encode(format!("token:{t}"))).into_bytes(),
            format!("Bearer {t}").into_bytes(),
            format!("bearer  {t}").into_bytes(),
            format!("token {t}").into_bytes(),
            format!("Token {t}").into_bytes(),
            t.as_bytes().to_vec(),
            format!("  {t}\t").into_bytes(),
        ];
        for f in forms {
            assert_eq!(
                parse_authorization(Some(&f), &users()),
                Ok(want.clone()),
                "{}",
                String::from_utf8_lossy(&f)
            );
        }
        assert_eq!(
            parse_authorization(Some(&basic("reposilite:my secret:with colon")), &users()),
            Ok(Presented::Named {
                name: "reposilite".into(),
                secret: Secret::new("my secret:with colon"),
            })
        );
    }

    #[test]
    fn refusals() {
        use CredentialError::*;
        let g = token::generate();
        let t = g.token.expose();
        let mut bad = t.to_string();
        bad.replace_range(20..21, if &t[20..21] == "a" { "b" } else { "a" });
        let cases: Vec<(Option<Vec<u8>>, CredentialError)> = vec![
            (None, Missing),
            (Some(b"".to_vec()), Missing),
            (Some(b"   ".to_vec()), Missing),
            (Some(b"Basic".to_vec()), Malformed("not a Tollgate token")),
            (
                Some(b"Basic !!!".to_vec()),
                Malformed("Basic credentials are not base64"),
            ),
            (
                Some(basic("nocolon")),
                Malformed("Basic credentials have no ':'"),
            ),
            (
                Some(basic("token:notatoken")),
                Malformed("not a Tollgate token"),
            ),
            (
                Some(basic(&format!("token:{bad}"))),
                Malformed("token checksum does not match"),
            ),
            (
                Some(basic(":secret")),
                Malformed("Basic credentials need a name and a secret"),
            ),
            (
                Some(basic("name:")),
                Malformed("Basic credentials need a name and a secret"),
            ),
            (
                Some(format!("Bearer {bad}").into_bytes()),
                Malformed("token checksum does not match"),
            ),
            (Some(b"Bearer ".to_vec()), Malformed("not a Tollgate token")),
            (
                Some(b"Digest abc".to_vec()),
                Malformed("unsupported authorization scheme"),
            ),
            (Some(vec![0xff, 0xfe]), Malformed("header is not UTF-8")),
            (Some(b"tok_".to_vec()), Malformed("not a Tollgate token")),
        ];
        for (h, want) in cases {
            assert_eq!(
                parse_authorization(h.as_deref(), &users()),
                Err(want),
                "{h:?}"
            );
        }
    }

    #[test]
    fn total_on_arbitrary_bytes() {
        // A cheap deterministic fuzz: every prefix of noisy inputs must not panic.
        let mut seed: u64 = 0x9e3779b97f4a7c15;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 80) as usize;
            let mut v: Vec<u8> = (0..len)
                .map(|i| (seed.rotate_left(i as u32) & 0xff) as u8)
                .collect();
            if seed % 3 == 0 {
                let mut p = b"Basic ".to_vec();
                p.append(&mut v);
                v = p;
            }
            let _ = parse_authorization(Some(&v), &users());
        }
    }

    #[test]
    fn digests_separate_names_and_kinds() {
        let a = Presented::Named {
            name: "a".into(),
            secret: Secret::new("bc"),
        };
        let b = Presented::Named {
            name: "ab".into(),
            secret: Secret::new("c"),
        };
        assert_ne!(a.digest(), b.digest());
        assert_eq!(a.digest(), a.clone().digest());
    }

    #[test]
    fn debug_hides_secrets() {
        let g = token::generate();
        let p = parse_authorization(
            Some(format!("Bearer {}", g.token.expose()).as_bytes()),
            &users(),
        )
        .unwrap();
        assert!(!format!("{p:?}").contains(g.token.expose()));
    }
}
