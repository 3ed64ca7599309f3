//! Tokens: the generated format, argon2id hashing, the token record, its route rules and the
//! path normalization they are written in. Pure, no I/O; names nothing else of the crate.

mod expiry;
mod format;
mod hash;
mod ips;
mod path;
mod record;
mod route;
mod secret;

/// A token's package patterns (package scopes); their matching is `crate::scope`'s.
pub use crate::scope::PackagePatterns;
pub use expiry::parse_expiry;
pub use format::{
    generate, generate_id, generate_with_id, is_valid_id, parse, Generated, ParseError,
    ParsedToken, ID_LEN, PREFIX, SECRET_LEN, TOKEN_LEN,
};
pub use hash::{hash_secret, validate_phc, verify_secret, HashError, HashParams, PhcHash};
pub use ips::{canonical_ip, parse_network, AllowedIps, MAX_ALLOWED_IPS};
pub use path::{normalize_path, PathError};
pub use record::{
    valid_name, Access, OidcOrigin, Permission, PreviousSecret, RateLimitRule, Route, Source,
    Token, NAME_RULE,
};
pub use route::{
    compile_routes, route_specs, segments, RoutePattern, RouteSpec, MAX_ROUTE_LEN,
    MAX_ROUTE_SEGMENTS,
};
pub use secret::Secret;
