//! Package scopes: which package a request touches, per ecosystem, and the listings filtered
//! down to a token's packages.
//!
//! - [`name`]: package names per ecosystem, their normal forms, and token patterns;
//! - [`layout`]: which ecosystem each part of the store is (`upstream.layouts`) and where its
//!   distribution files live;
//! - [`map`]: a request (method, normalized path) → package, listing, upload, or unknown;
//! - [`upload`]: the package an upload names in its body;
//! - [`filter`]: the listing filters.
//!
//! Pure: no I/O, nothing of the rest of Tollgate.

pub mod filter;
pub mod layout;
pub mod map;
pub mod name;
pub mod upload;

pub use layout::{Layout, Layouts};
pub use map::{artifact, classify, Artifact, Listing, Target, Upload};
pub use name::{Ecosystem, PackagePatterns};
