//! Tollgate: an authenticating reverse proxy for package repositories.
//!
//! The library holds everything; `main.rs` only parses the command line and calls [`app`].
//! Pure parts (token format, routes and path normalization, credentials, policy, config merge)
//! never see a pingora type;
//! only `proxy`, `admin`, `store`, `oidc`, `shared` (Redis), `usage`, `webhook` and `app` do I/O.

pub mod admin;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod conn;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod oidc;
pub mod proxy;
pub mod ratelimit;
pub mod scope;
pub mod shared;
pub mod store;
pub mod sys;
pub mod tls;
pub mod token;
pub mod upstream;
pub mod usage;
pub mod webhook;
