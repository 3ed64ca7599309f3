//! Authentication and authorization: credentials from the `Authorization` header, token
//! verification (cache + argon2), and the route policy. No HTTP server types here.

mod argon2_pool;
pub mod credentials;
pub mod policy;
pub mod rotation;
pub mod verifier;

pub use credentials::{parse_authorization, CredentialError, Presented};
pub use policy::{normalize_path, required_permission, PathError};
pub use verifier::{AuthError, Authenticated, Caller, Verifier};
