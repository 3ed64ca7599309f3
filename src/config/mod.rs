//! Configuration: the file schema, `TOLLGATE_*` environment overrides, command-line overrides,
//! and validation into a typed [`Config`]. Every problem is collected and reported at once,
//! each naming where the value came from (file, variable or flag), the field and the reason.

mod database_url;
mod fields;
mod load;
mod oidc;
mod scopes;
mod sections;
mod shared_backend;
#[cfg(test)]
pub(crate) mod testing;
mod usage;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The `trusted_proxies` setting (defined with the address handling it drives).
pub use crate::net::TrustedProxies;
/// The `hashing:` section: argon2id cost parameters (defined with the hashing itself).
pub use crate::token::HashParams;
pub use database_url::{backend_of, redact_url, Backend};
pub use fields::{ConfigError, ConfigErrors, Origins};
pub use load::{load, load_text, Overrides, DEFAULT_CONFIG_PATH};
pub use oidc::{fetchable_url, OidcConfig, TrustPolicy, LIFETIME_CEILING};
pub use shared_backend::{BackendUrl, OnBackendError, SharedBackendConfig};
pub use usage::{UsageConfig, WebhookConfig, WebhookEvent, WebhookSecret};

/// The package store Tollgate forwards to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// The URL as configured (`http://127.0.0.1:80`).
    pub url: String,
    /// True for `https`.
    pub tls: bool,
    /// Host name or IP literal of the URL (IPv6 without brackets). Loading never resolves it:
    /// `crate::upstream` does, at start and while running.
    pub host: String,
    /// Port of the URL (80 or 443 when it names none).
    pub port: u16,
    /// `Host` header sent upstream: the URL's authority unless `upstream.host` is set.
    pub host_header: String,
    /// TLS server name: the URL's host unless `upstream.host` is set.
    pub sni: String,
    /// A path the URL carries (`/repo`), prepended to every forwarded path; empty for none.
    pub path_prefix: String,
    /// TCP (and TLS) connect timeout.
    pub connect_timeout: Duration,
    /// Longest wait for the next bytes from the upstream.
    pub read_timeout: Duration,
    /// How often the host is resolved again (`None`: never; an IP literal never is).
    pub resolve_interval: Option<Duration>,
    /// Client-side path of a cargo sparse index (`/index/`): its `config.json` gets
    /// `"auth-required": true`, without which cargo never sends its token.
    pub cargo_index: Option<String>,
    /// Which ecosystem each part of the store is (package scopes); empty: none, and every
    /// request of a token limited to packages is refused.
    pub layouts: crate::scope::Layouts,
    /// The largest listing body filtered for a token limited to packages (a bigger one is
    /// answered 502, never passed unfiltered); also the largest upload such a token may send.
    pub listing_max_body: usize,
}

/// Where tokens come from and how they are presented upstream. `Debug` redacts the database
/// password.
#[derive(Clone, PartialEq, Eq)]
pub struct TokensConfig {
    /// YAML token files.
    pub files: Vec<PathBuf>,
    /// True when `files` is the built-in default, not written in the file, the environment or
    /// a flag: an absent default file is no error (the store skips it).
    pub files_defaulted: bool,
    /// Token database URL (`sqlite://data/tollgate.db`, `postgres://…`); `None` when set to
    /// `none` (no API writes, last-use times in memory only).
    pub database: Option<String>,
    /// How often token files are re-read (content-hash check) in case file events are missed.
    pub poll_interval: Duration,
    /// Add `X-Tollgate-Token-Id` / `-Name` to upstream requests.
    pub identity_headers: bool,
    /// Basic usernames meaning "the password is the token" (`token`, `__token__`).
    pub token_usernames: Vec<String>,
    /// The longest a token may live (`tokens.max_lifetime`): creating or regenerating a token
    /// that expires later, or never, is refused, and so is a token-file entry that does.
    /// `None` (`none`, the default): no limit.
    pub max_lifetime: Option<Duration>,
    /// When the previous secret of a token regenerated with an overlap stops working
    /// (`tokens.rotation_overlap_ends`): at the first use of the new secret, or only at the
    /// overlap's deadline.
    pub rotation_overlap_ends: OverlapEnds,
    /// The longest overlap a regeneration may ask for (`tokens.max_overlap`, default 30d).
    pub max_overlap: Duration,
}

/// When the previous secret of a token regenerated with an overlap stops working.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OverlapEnds {
    /// At the first use of the new secret, or at the deadline, whichever comes first.
    #[default]
    FirstUse,
    /// Only at the deadline: both secrets work until then.
    Deadline,
}

impl OverlapEnds {
    /// The configuration word (`first_use`, `deadline`).
    pub fn as_str(self) -> &'static str {
        match self {
            OverlapEnds::FirstUse => "first_use",
            OverlapEnds::Deadline => "deadline",
        }
    }
}

impl std::fmt::Debug for TokensConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokensConfig")
            .field("files", &self.files)
            .field("files_defaulted", &self.files_defaulted)
            .field("database", &self.database.as_deref().map(redact_url))
            .field("poll_interval", &self.poll_interval)
            .field("identity_headers", &self.identity_headers)
            .field("token_usernames", &self.token_usernames)
            .field("max_lifetime", &self.max_lifetime)
            .field("rotation_overlap_ends", &self.rotation_overlap_ends)
            .field("max_overlap", &self.max_overlap)
            .finish()
    }
}

/// The verification cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Most cached verifications.
    pub capacity: u64,
    /// How long a successful verification is remembered.
    pub ttl: Duration,
    /// How long a failed verification is remembered.
    pub negative_ttl: Duration,
}

/// Bounds on argon2 work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyConfig {
    /// argon2 verifications running at once (0 in the file = number of cores).
    pub max_concurrent: usize,
    /// Verifications allowed to wait for a slot; beyond that the proxy answers 503.
    pub max_queue: usize,
    /// argon2 verifications per client address and token id or name (uncached credentials);
    /// beyond it 429.
    pub token_attempts: crate::token::RateLimitRule,
    /// argon2 verifications per client address over all tokens; beyond it 429.
    pub client_attempts: crate::token::RateLimitRule,
    /// Nice value of the argon2 threads (0 = the proxy's priority; up to 19).
    pub nice: i32,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Output format.
    pub format: LogFormat,
    /// A tracing filter directive (`info`, `tollgate=debug,info`).
    pub level: String,
}

/// The optional HTTPS listener of the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// Address of the HTTPS listener (beside the plain `listen`).
    pub listen: SocketAddr,
    /// PEM certificate chain.
    pub cert_file: String,
    /// PEM private key.
    pub key_file: String,
    /// Serve the admin listener over HTTPS too, with the same certificate.
    pub admin: bool,
}

/// Bounds on downstream (client) connections: deadlines and caps against idle, slow and
/// too many connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Longest time a client may take to send a complete request head (from the connection's
    /// start, or from the first byte of a later request on a kept-alive connection).
    pub header_timeout: Duration,
    /// Longest idle time between requests on a kept-alive connection.
    pub keepalive_timeout: Duration,
    /// Most open client connections at once; `None` derives it from the open-file limit at
    /// start (see `crate::conn::default_max_connections`).
    pub max_connections: Option<usize>,
    /// Most open client connections from one address; 0 for no per-address cap.
    pub max_connections_per_ip: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            header_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
            max_connections: None,
            max_connections_per_ip: 256,
        }
    }
}

/// A path served without credentials (`public:`): a request that carries none, on a
/// normalized path the pattern matches, with a method its access allows, is forwarded
/// anonymously.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicPath {
    /// The paths, written like a token's route (`/packages.json`, `/simple/**`).
    pub pattern: crate::token::RoutePattern,
    /// `Read` (GET, HEAD, OPTIONS) or `Write` (also PUT, POST, PATCH, DELETE).
    pub access: crate::token::Permission,
}

/// The whole, validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where the configuration was read from (`built-in defaults` when no file).
    pub source: String,
    /// Which layer set each field, for problems found after loading.
    pub origins: Origins,
    /// Proxy listener.
    pub listen: SocketAddr,
    /// Admin listener (API, metrics, probes).
    pub admin_listen: SocketAddr,
    /// The package store.
    pub upstream: UpstreamConfig,
    /// Realm in `WWW-Authenticate: Basic realm="…"`.
    pub realm: String,
    /// Path the proxy answers itself with the presenting token's details.
    pub whoami_path: String,
    /// Token sources.
    pub tokens: TokensConfig,
    /// Verification cache.
    pub cache: CacheConfig,
    /// argon2 concurrency bounds.
    pub verify: VerifyConfig,
    /// argon2 parameters for new hashes.
    pub hashing: HashParams,
    /// Logging.
    pub log: LogConfig,
    /// Proxy workers: one thread each, with its own listening sockets, runtime and upstream
    /// connection pool.
    pub threads: usize,
    /// Default per-token rate limit (a token's own `rate_limit` overrides it).
    pub rate_limit: crate::token::RateLimitRule,
    /// The Redis server rate limits and quotas are shared on (`rate_limit.backend`); `None`:
    /// each replica keeps its own, in process.
    pub rate_limit_backend: Option<SharedBackendConfig>,
    /// Paths served without a token (empty: every request needs one).
    pub public: Vec<PublicPath>,
    /// Rate limit of anonymous requests to public paths, per client address (IPv6 by /64).
    pub public_rate_limit: crate::token::RateLimitRule,
    /// Longest wait for in-flight requests after SIGTERM (pingora's own default, 300 s, outlasts
    /// Kubernetes' 30 s termination grace).
    pub shutdown_grace: Duration,
    /// HTTPS listener, when configured.
    pub tls: Option<TlsConfig>,
    /// Client connection deadlines and caps.
    pub limits: LimitsConfig,
    /// Proxies whose `X-Forwarded-For` names the client (`trusted_proxies`; default none):
    /// see [`crate::net::TrustedProxies`].
    pub trusted_proxies: crate::net::TrustedProxies,
    /// The usage ledger.
    pub usage: UsageConfig,
    /// Webhooks notified of token events.
    pub webhooks: Vec<WebhookConfig>,
    /// Connections to `listen` from a `trusted_proxies` peer start with a PROXY protocol v1 or
    /// v2 header, whose source address is the client's (`listen_proxy_protocol`; default
    /// false). The TLS listener never reads one.
    pub listen_proxy_protocol: bool,
    /// Trusted publishing (`oidc:`): the exchange endpoint and the trust policies of the file.
    pub oidc: OidcConfig,
}
