//! Tokens: the generated format, argon2id hashing, and the token record. Pure, no I/O.

mod expiry;
mod format;
mod hash;
mod record;
mod secret;

pub use expiry::parse_expiry;
pub use format::{
    generate, generate_id, generate_with_id, is_valid_id, parse, Generated, ParseError,
    ParsedToken, ID_LEN, PREFIX, SECRET_LEN, TOKEN_LEN,
};
pub use hash::{hash_secret, validate_phc, verify_secret, HashError, PhcHash};
pub use record::{Access, Permission, RateLimitRule, Route, Source, Token};
pub use secret::Secret;
