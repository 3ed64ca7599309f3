//! The generated token format `tok_<id>_<secret><check>`: a public id, a random secret, and
//! a CRC32 check that lets the proxy and secret scanners reject mistyped or random strings without
//! any lookup.
//!
//! `id` is 12 base62 characters and public; `secret` is 32 base62 characters from the OS
//! CSPRNG (~190 bits); `check` is the CRC32 of everything before it, as 6 base62 digits.
//! [`parse`] rejects a string with the wrong prefix, length, alphabet or checksum without any
//! lookup or hashing.

use rand::rngs::OsRng;
use rand::Rng;

use super::Secret;

/// The prefix of every generated token; secret scanners key on it.
pub const PREFIX: &str = "tok_";
/// Length of the public id part.
pub const ID_LEN: usize = 12;
/// Length of the random secret part.
pub const SECRET_LEN: usize = 32;
const CHECK_LEN: usize = 6;
/// Total length of a generated token.
pub const TOKEN_LEN: usize = PREFIX.len() + ID_LEN + 1 + SECRET_LEN + CHECK_LEN;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A freshly generated token: its public id and the whole token (shown once).
#[derive(Debug, Clone)]
pub struct Generated {
    /// The public id (also the record id).
    pub id: String,
    /// The full token string.
    pub token: Secret,
}

/// A string that has the shape of a generated token; borrowed from the presented credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedToken<'a> {
    /// The public id part.
    pub id: &'a str,
}

/// Why a string is not a generated token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Does not start with `tok_`.
    #[error("token does not start with {PREFIX}")]
    Prefix,
    /// Wrong total length.
    #[error("token has the wrong length")]
    Length,
    /// A character outside base62, or the `_` separator missing.
    #[error("token contains an invalid character")]
    Alphabet,
    /// The CRC32 check digits do not match.
    #[error("token checksum does not match")]
    Checksum,
}

fn random_base62(n: usize) -> String {
    let mut rng = OsRng;
    (0..n)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Generates a new public id (12 base62 characters), e.g. for a custom-secret token.
pub fn generate_id() -> String {
    random_base62(ID_LEN)
}

fn check_digits(body: &[u8]) -> [u8; CHECK_LEN] {
    let mut n = crc32fast::hash(body) as u64;
    let mut out = [b'0'; CHECK_LEN];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(n % 62) as usize];
        n /= 62;
    }
    out
}

/// Generates a new token from the OS CSPRNG.
pub fn generate() -> Generated {
    generate_with_id(&generate_id())
}

/// Generates a new secret for an existing id (regeneration keeps the id).
pub fn generate_with_id(id: &str) -> Generated {
    let id = id.to_string();
    let mut token = String::with_capacity(TOKEN_LEN);
    token.push_str(PREFIX);
    token.push_str(&id);
    token.push('_');
    token.push_str(&random_base62(SECRET_LEN));
    let check = check_digits(token.as_bytes());
    token.extend(check.iter().map(|&b| b as char));
    Generated {
        id,
        token: Secret::new(token),
    }
}

/// Checks the shape and checksum of a presented token and returns its id.
pub fn parse(s: &str) -> Result<ParsedToken<'_>, ParseError> {
    let b = s.as_bytes();
    if !b.starts_with(PREFIX.as_bytes()) {
        return Err(ParseError::Prefix);
    }
    if b.len() != TOKEN_LEN {
        return Err(ParseError::Length);
    }
    let sep = PREFIX.len() + ID_LEN;
    if b[sep] != b'_' {
        return Err(ParseError::Alphabet);
    }
    if !b[PREFIX.len()..sep]
        .iter()
        .chain(&b[sep + 1..])
        .all(u8::is_ascii_alphanumeric)
    {
        return Err(ParseError::Alphabet);
    }
    let body_len = TOKEN_LEN - CHECK_LEN;
    if check_digits(&b[..body_len]) != b[body_len..] {
        return Err(ParseError::Checksum);
    }
    Ok(ParsedToken {
        id: &s[PREFIX.len()..sep],
    })
}

/// True if `s` is a plausible public id (12 base62 characters).
pub fn is_valid_id(s: &str) -> bool {
    s.len() == ID_LEN && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_and_carry_their_id() {
        for _ in 0..200 {
            let g = generate();
            let t = g.token.expose();
            assert_eq!(t.len(), TOKEN_LEN);
            assert_eq!(parse(t), Ok(ParsedToken { id: &g.id }));
            assert!(is_valid_id(&g.id));
        }
    }

    #[test]
    fn generated_tokens_differ() {
        assert_ne!(generate().token, generate().token);
    }

    #[test]
    fn rejects_malformed_tokens_without_lookup() {
        let g = generate();
        let good = g.token.expose().to_string();
        let mut flipped = good.clone().into_bytes();
        // change one secret character to another base62 character
        flipped[30] = if flipped[30] == b'a' { b'b' } else { b'a' };
        let flipped = String::from_utf8(flipped).unwrap();
        let mut bad_alpha = good.clone().into_bytes();
        bad_alpha[30] = b'-';
        let bad_alpha = String::from_utf8(bad_alpha).unwrap();
        let no_sep = good.replacen('_', "", 2) + "xx";
        let cases: Vec<(&str, ParseError)> = vec![
            ("", ParseError::Prefix),
            ("tok", ParseError::Prefix),
            ("TOK_abc", ParseError::Prefix),
            ("pat_0123456789ab_0123", ParseError::Prefix),
            ("tok_short", ParseError::Length),
            (&good[..good.len() - 1], ParseError::Length),
            (&flipped, ParseError::Checksum),
            (&bad_alpha, ParseError::Alphabet),
        ];
        for (input, want) in cases {
            assert_eq!(parse(input), Err(want), "input {input:?}");
        }
        let long = format!("{good}x");
        assert_eq!(parse(&long), Err(ParseError::Length));
        assert!(parse(&no_sep).is_err());
        assert!(parse("tok_ééééééééééééééééééééééééééé").is_err());
    }

    #[test]
    fn check_digits_are_crc32_in_base62() {
        // crc32("") == 0 → all zeros
        assert_eq!(&check_digits(b""), b"000000");
        // crc32("a") == 0xe8b7be43 == 3904355907
        let mut n: u64 = 3904355907;
        let mut want = [b'0'; 6];
        for slot in want.iter_mut().rev() {
            *slot = ALPHABET[(n % 62) as usize];
            n /= 62;
        }
        assert_eq!(check_digits(b"a"), want);
    }
}
