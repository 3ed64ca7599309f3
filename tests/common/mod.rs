//! Harness for the integration tests: a recording upstream HTTP server (plus "down" and "slow"
//! variants), a guard around the real `tollgate` binary, token-file helpers, a CLI runner and a raw
//! HTTP/1.1 client for request targets that `reqwest` would normalise before sending.
//!
//! Every wait in here is a poll with a deadline; nothing sleeps to "let time pass".
#![allow(dead_code)]

pub mod fixed;
pub mod oidc;
pub mod pg;
pub mod stores;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fs::File;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine as _;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate::config::HashParams;

/// Realm every test config uses; refusals must carry `WWW-Authenticate: Basic realm="<this>"`.
pub const REALM: &str = "tollgate-test";
/// Size of the streamed bodies (`GET /big` and the large upload).
pub const BIG_LEN: u64 = 50 * 1024 * 1024;
/// Chunk size of the deterministic pattern; `BIG_LEN` is a multiple of it.
pub const CHUNK_LEN: usize = 64 * 1024;

// ---------------------------------------------------------------------------------------------
// Ports, hex, deterministic bodies
// ---------------------------------------------------------------------------------------------

/// A port that was free a moment ago (bind it on 127.0.0.1, take the port, drop the listener).
///
/// Candidates come from just below the kernel's ephemeral range: a port from `bind(:0)` lies
/// inside that range, where any outgoing connection of this or another test (hundreds per run)
/// can take it as its local port before `tollgate` binds it. Candidates are handed out once per
/// test process, from a per-process offset, so parallel tests never get the same port.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|lo| lo.parse().ok()))
        .unwrap_or(32768);
    let span = ephemeral_low.saturating_sub(10_000).min(12_000);
    if span < 1_000 {
        return TcpListener::bind("127.0.0.1:0")
            .expect("bind 127.0.0.1:0")
            .local_addr()
            .expect("local_addr")
            .port();
    }
    let low = ephemeral_low - span;
    let offset = std::process::id().wrapping_mul(7919) % span;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < span, "no free port left in {low}..{ephemeral_low}");
        let port = u16::try_from(low + (offset + n) % span).expect("port fits u16");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// `127.0.0.1:<free port>`.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of `data` as lower-case hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// Chunk number `index` of the deterministic pattern (xorshift64, seeded by the index), so any
/// reordering, loss or duplication of chunks changes the digest.
pub fn pattern_chunk(index: u64) -> Bytes {
    let mut state = (index.wrapping_add(1)).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut buf = Vec::with_capacity(CHUNK_LEN);
    while buf.len() < CHUNK_LEN {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        buf.extend_from_slice(&state.to_le_bytes());
    }
    Bytes::from(buf)
}

fn chunk_count(total: u64) -> u64 {
    assert_eq!(
        total % CHUNK_LEN as u64,
        0,
        "pattern length must be a multiple of CHUNK_LEN"
    );
    total / CHUNK_LEN as u64
}

/// A lazily generated stream of `total` pattern bytes (never more than one chunk in memory).
pub fn pattern_stream(
    total: u64,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    futures_util::stream::iter((0..chunk_count(total)).map(|i| Ok(pattern_chunk(i))))
}

/// SHA-256 hex of the first `total` pattern bytes, computed chunk by chunk (memoised for
/// [`BIG_LEN`]).
pub fn pattern_sha256(total: u64) -> String {
    static BIG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if total == BIG_LEN {
        return BIG.get_or_init(|| compute_pattern_sha256(BIG_LEN)).clone();
    }
    compute_pattern_sha256(total)
}

fn compute_pattern_sha256(total: u64) -> String {
    let mut hasher = Sha256::new();
    for i in 0..chunk_count(total) {
        hasher.update(pattern_chunk(i));
    }
    hex(&hasher.finalize())
}

// ---------------------------------------------------------------------------------------------
// Background servers
// ---------------------------------------------------------------------------------------------

/// A future running on its own thread and multi-thread tokio runtime, so it keeps serving whatever
/// the test's runtime does (including blocking calls). Stopped on drop.
struct Background {
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Background {
    fn spawn<F, Fut>(make: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("build upstream runtime");
            runtime.block_on(async move {
                tokio::select! {
                    _ = make() => {}
                    _ = rx => {}
                }
            });
            // Dropping the runtime cancels connection tasks still running.
        });
        Self {
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn bind_std() -> (std::net::TcpListener, SocketAddr) {
    bind_std_on(SocketAddr::from(([127, 0, 0, 1], 0)))
}

fn bind_std_on(addr: SocketAddr) -> (std::net::TcpListener, SocketAddr) {
    let listener =
        std::net::TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind upstream {addr}: {e}"));
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("local_addr");
    (listener, addr)
}

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Path and query exactly as received (the request target).
    pub uri: String,
    pub headers: HeaderMap,
    pub body_len: u64,
    pub body_sha256: String,
    /// The client end of the connection it came on (one port per upstream connection).
    pub peer: Option<SocketAddr>,
}

impl Recorded {
    /// The first value of header `name`, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    /// Every value of header `name`.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }
}

/// A real HTTP server (axum) on a free port that records every request and serves:
/// `GET /big` → 50 MiB streamed pattern; `PUT`/`POST` anything → JSON `{len, sha256}` of the body
/// (consumed streaming); `GET /slow?ms=N` → 200 `hello /slow` after N ms (recorded on arrival);
/// `GET`/`HEAD …/config.json` → a cargo index config (see [`CARGO_CONFIG`] and
/// [`cargo_config`] for the variants its query picks); anything else → 200 `hello <path>`.
pub struct Upstream {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    _server: Background,
}

impl Upstream {
    pub fn start() -> Self {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// [`Upstream::start`] on `addr`: another loopback address (`127.0.0.2`…) and, unless 0,
    /// a chosen port.
    pub fn start_on(addr: SocketAddr) -> Self {
        let (listener, addr) = bind_std_on(addr);
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        let server = Background::spawn(move || async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            let app = Router::new().fallback(move |req: Request| {
                let log = log.clone();
                async move { upstream_handler(log, req).await }
            });
            let app = app.into_make_service_with_connect_info::<SocketAddr>();
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            requests,
            _server: server,
        }
    }

    /// `http://<address>:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far, in arrival order of their completion.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("upstream log").clone()
    }

    pub fn count(&self) -> usize {
        self.requests.lock().expect("upstream log").len()
    }

    /// The last request whose target is exactly `uri`.
    pub fn find(&self, uri: &str) -> Option<Recorded> {
        self.requests().into_iter().rev().find(|r| r.uri == uri)
    }

    /// The most recent request.
    pub fn last(&self) -> Option<Recorded> {
        self.requests().pop()
    }

    /// How many requests had exactly this path (the target without its query).
    pub fn count_path(&self, path: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.uri.split('?').next() == Some(path))
            .count()
    }

    /// How many requests carried `X-Tollgate-Token-Id: <id>`.
    pub fn count_token(&self, id: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.header("x-tollgate-token-id").as_deref() == Some(id))
            .count()
    }
}

async fn upstream_handler(log: Arc<Mutex<Vec<Recorded>>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let peer = parts
        .extensions
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let uri = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_else(|| parts.uri.to_string());
    let mut hasher = Sha256::new();
    let mut body_len = 0u64;
    let mut stream = body.into_data_stream();
    let mut body_error = false;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => {
                body_len += chunk.len() as u64;
                hasher.update(&chunk);
            }
            Err(_) => {
                body_error = true;
                break;
            }
        }
    }
    let body_sha256 = hex(&hasher.finalize());
    log.lock().expect("upstream log").push(Recorded {
        method: parts.method.to_string(),
        uri: uri.clone(),
        headers: parts.headers.clone(),
        body_len,
        body_sha256: body_sha256.clone(),
        peer,
    });
    if body_error {
        return (StatusCode::BAD_REQUEST, "body read failed").into_response();
    }
    let path = parts.uri.path().to_owned();
    if path == "/slow" {
        // `GET /slow?ms=N`: recorded on arrival (above), answered `hello /slow` after N ms.
        let ms: u64 = parts
            .uri
            .query()
            .unwrap_or_default()
            .split('&')
            .find_map(|kv| kv.strip_prefix("ms="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if parts.method == Method::PUT || parts.method == Method::POST {
        return axum::Json(json!({"len": body_len, "sha256": body_sha256})).into_response();
    }
    if (parts.method == Method::GET || parts.method == Method::HEAD)
        && path.ends_with("/config.json")
    {
        return cargo_config(parts.uri.query().unwrap_or_default());
    }
    if parts.method == Method::GET && path == "/big" {
        return Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::CONTENT_LENGTH, BIG_LEN)
            .body(Body::from_stream(pattern_stream(BIG_LEN)))
            .expect("big response");
    }
    (StatusCode::OK, format!("hello {path}")).into_response()
}

/// The cargo index `config.json` the test upstream serves: no `auth-required`.
pub const CARGO_CONFIG: &str =
    r#"{"dl":"https://store.example/api/v1/crates","api":"https://store.example"}"#;

/// A cargo `config.json` answer, by query: `chunked` (in two chunks, no Content-Length),
/// `large` (a valid config of 70 KiB, with its Content-Length), `large-chunked` (the same,
/// chunked), `gzip` (`Content-Encoding: gzip`, bytes that are not JSON), `missing` (404);
/// anything else: [`CARGO_CONFIG`] with its Content-Length.
pub fn cargo_config(query: &str) -> Response {
    let json = |body: Body| {
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    };
    let large = || {
        let padding = "x".repeat(70 * 1024);
        format!(r#"{{"dl":"https://store.example/api/v1/crates","padding":"{padding}"}}"#)
    };
    let chunked = |text: String| {
        let (a, b) = text.split_at(text.len() / 2);
        let pieces = [Bytes::from(a.to_owned()), Bytes::from(b.to_owned())];
        Body::from_stream(futures_util::stream::iter(pieces.map(Ok::<_, Infallible>)))
    };
    match query {
        "chunked" => json(chunked(CARGO_CONFIG.to_owned())),
        "large" => json(Body::from(large())),
        "large-chunked" => json(chunked(large())),
        "gzip" => (
            StatusCode::OK,
            [(header::CONTENT_ENCODING, "gzip")],
            &b"\x1f\x8b not really gzip"[..],
        )
            .into_response(),
        "missing" => (StatusCode::NOT_FOUND, "no such index").into_response(),
        _ => json(Body::from(CARGO_CONFIG)),
    }
}

/// An upstream URL nobody listens on (connections are refused).
pub fn down_upstream_url() -> String {
    format!("http://{}", free_addr())
}

/// An upstream that accepts connections, reads whatever arrives and never answers.
pub struct SlowUpstream {
    pub addr: SocketAddr,
    _server: Background,
}

impl SlowUpstream {
    pub fn start() -> Self {
        let (listener, addr) = bind_std();
        let server = Background::spawn(move || async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = socket.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            _server: server,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

// ---------------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------------

/// A token as the tests know it: its file entry and what a client presents.
#[derive(Clone, Debug)]
pub struct TestToken {
    pub id: String,
    pub name: String,
    /// The generated `tok_…` token, or for a custom-secret token the secret itself.
    pub token: String,
    /// Whether `token` is a custom secret (presented as Basic `name:secret`).
    pub custom: bool,
    /// The token-file entry (serialised into YAML by [`Setup`]).
    pub entry: Value,
}

impl TestToken {
    pub fn builder(name: &str) -> TokenBuilder {
        TokenBuilder {
            name: name.to_owned(),
            permission: "read".to_owned(),
            routes: Vec::new(),
            expires_at: None,
            description: None,
            custom_secret: None,
            stored_secret: None,
            rate_limit: None,
        }
    }

    /// A generated read token without routes.
    pub fn read(name: &str) -> Self {
        Self::builder(name).build()
    }

    /// A generated write token without routes.
    pub fn write(name: &str) -> Self {
        Self::builder(name).permission("write").build()
    }

    /// The 32-character secret part of a generated token (`tok_<12>_<32><6>`).
    pub fn secret_part(&self) -> &str {
        assert!(!self.custom, "custom tokens have no generated secret part");
        &self.token[17..49]
    }

    /// `Authorization: Bearer <token>`.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// The Authorization value a client would send for this token in its most natural form.
    pub fn auth(&self) -> String {
        if self.custom {
            basic(&self.name, &self.token)
        } else {
            self.bearer()
        }
    }
}

/// Builder for [`TestToken`].
pub struct TokenBuilder {
    name: String,
    permission: String,
    routes: Vec<(String, String)>,
    expires_at: Option<String>,
    description: Option<String>,
    custom_secret: Option<String>,
    stored_secret: Option<String>,
    rate_limit: Option<Value>,
}

impl TokenBuilder {
    pub fn permission(mut self, permission: &str) -> Self {
        self.permission = permission.to_owned();
        self
    }

    pub fn route(mut self, path: &str, access: &str) -> Self {
        self.routes.push((path.to_owned(), access.to_owned()));
        self
    }

    /// RFC 3339 expiry, e.g. `2020-01-01T00:00:00Z`.
    pub fn expires_at(mut self, at: &str) -> Self {
        self.expires_at = Some(at.to_owned());
        self
    }

    pub fn description(mut self, description: &str) -> Self {
        self.description = Some(description.to_owned());
        self
    }

    /// The token's own rate limit, as written in a token file: `json!("unlimited")` or
    /// `json!({"requests": 5, "period": "1m"})`.
    pub fn rate_limit(mut self, rule: Value) -> Self {
        self.rate_limit = Some(rule);
        self
    }

    /// A person-chosen secret: the client sends Basic `name:secret`.
    pub fn custom_secret(mut self, secret: &str) -> Self {
        self.custom_secret = Some(secret.to_owned());
        self
    }

    /// Store the hash of `secret` instead of the hash of the presented token (a known id whose
    /// presented secret is wrong).
    pub fn stored_secret(mut self, secret: &str) -> Self {
        self.stored_secret = Some(secret.to_owned());
        self
    }

    pub fn build(self) -> TestToken {
        let generated = tollgate::token::generate();
        let id = generated.id.clone();
        let (token, custom) = match &self.custom_secret {
            Some(secret) => (secret.clone(), true),
            None => (generated.token.expose().to_owned(), false),
        };
        let hashed = self.stored_secret.as_deref().unwrap_or(&token);
        let hash = hash(hashed);
        let mut entry = Map::new();
        entry.insert("id".into(), json!(id));
        entry.insert("name".into(), json!(self.name));
        entry.insert("hash".into(), json!(hash));
        entry.insert("permission".into(), json!(self.permission));
        if !self.routes.is_empty() {
            let routes: Vec<Value> = self
                .routes
                .iter()
                .map(|(path, access)| json!({"path": path, "access": access}))
                .collect();
            entry.insert("routes".into(), Value::Array(routes));
        }
        if let Some(at) = &self.expires_at {
            entry.insert("expires_at".into(), json!(at));
        }
        if let Some(description) = &self.description {
            entry.insert("description".into(), json!(description));
        }
        if let Some(rule) = &self.rate_limit {
            entry.insert("rate_limit".into(), rule.clone());
        }
        TestToken {
            id,
            name: self.name,
            token,
            custom,
            entry: Value::Object(entry),
        }
    }
}

/// argon2id PHC string of `secret` with the cheap test parameters.
pub fn hash(secret: &str) -> String {
    tollgate::token::hash_secret(secret, &HashParams::cheap())
        .unwrap_or_else(|e| panic!("hash_secret failed: {e:?}"))
}

/// A generated token that is in no token file.
pub fn unknown_token() -> String {
    tollgate::token::generate().token.expose().to_owned()
}

/// `Basic base64(user:pass)`.
pub fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

/// A `tokens:` YAML document holding `tokens`.
pub fn tokens_yaml(tokens: &[&TestToken]) -> String {
    let entries: Vec<Value> = tokens.iter().map(|t| t.entry.clone()).collect();
    serde_yaml_ng::to_string(&json!({ "tokens": entries })).expect("serialise token file")
}

// ---------------------------------------------------------------------------------------------
// Config + process
// ---------------------------------------------------------------------------------------------

/// A temp directory holding a config file and a token file for one `tollgate` process.
pub struct Setup {
    pub dir: TempDir,
    pub config_path: PathBuf,
    pub tokens_path: PathBuf,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    /// Extra environment variables for `tollgate serve` (e.g. `TOLLGATE_BOOTSTRAP_TOKEN`); kept
    /// across [`Tollgate::restart`], so clear or change them there to restart without.
    pub env: Vec<(String, String)>,
    config: Value,
    tokens: String,
}

impl Setup {
    /// Free ports for both listeners, the given upstream, cheap hashing, JSON logs, an empty
    /// token file.
    pub fn new(upstream_url: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("tollgate.yaml");
        let tokens_path = dir.path().join("tokens.yaml");
        let listen = free_addr();
        let admin = free_addr();
        let config = json!({
            "listen": listen.to_string(),
            "admin_listen": admin.to_string(),
            "upstream": {
                "url": upstream_url,
                "connect_timeout": "2s",
                "read_timeout": "30s",
            },
            "realm": REALM,
            "tokens": { "files": [tokens_path.to_string_lossy()] },
            "hashing": { "memory_kib": 64, "iterations": 1, "parallelism": 1 },
            "log": { "format": "json", "level": "info" },
            "threads": 2,
        });
        Self {
            dir,
            config_path,
            tokens_path,
            listen,
            admin,
            env: Vec::new(),
            config,
            tokens: "tokens: []\n".to_owned(),
        }
    }

    /// Configures the bootstrap manager token [`BOOT_NAME`]:[`BOOT_SECRET`] (see [`boot`]).
    pub fn with_bootstrap(self) -> Self {
        self.env(
            "TOLLGATE_BOOTSTRAP_TOKEN",
            &format!("{BOOT_NAME}:{BOOT_SECRET}"),
        )
    }

    /// Pass `key=value` in the environment of `tollgate serve`.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn with_tokens(mut self, tokens: &[&TestToken]) -> Self {
        self.tokens = tokens_yaml(tokens);
        self
    }

    /// Raw token-file content.
    pub fn with_tokens_yaml(mut self, yaml: impl Into<String>) -> Self {
        self.tokens = yaml.into();
        self
    }

    /// Set a config value by dotted path, e.g. `set("upstream.read_timeout", json!("1s"))`.
    pub fn set(mut self, dotted: &str, value: Value) -> Self {
        let mut node = &mut self.config;
        let mut keys = dotted.split('.').peekable();
        while let Some(key) = keys.next() {
            let map = node.as_object_mut().expect("config node is a map");
            if keys.peek().is_none() {
                map.insert(key.to_owned(), value);
                break;
            }
            node = map.entry(key.to_owned()).or_insert_with(|| json!({}));
        }
        self
    }

    /// Write the config and token files.
    pub fn write(&self) {
        let config = serde_yaml_ng::to_string(&self.config).expect("serialise config");
        std::fs::write(&self.config_path, config).expect("write config");
        std::fs::write(&self.tokens_path, &self.tokens).expect("write token file");
    }

    pub fn config_str(&self) -> String {
        self.config_path.to_string_lossy().into_owned()
    }

    /// Write the files and start `tollgate serve` on them.
    pub async fn start(self) -> Tollgate {
        self.write();
        Tollgate::spawn(self).await
    }

    /// Write the files and start `tollgate serve`, waiting only until the admin listener answers
    /// `/healthz` and the proxy listener accepts connections, not for readiness.
    pub async fn start_unready(self) -> Tollgate {
        self.write();
        let (child, log_path) = Tollgate::spawn_child(&self);
        let mut tollgate = Tollgate {
            child,
            setup: self,
            log_path,
            client: client(),
        };
        let url = tollgate.admin_url("/healthz");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = tollgate.try_exit() {
                panic!(
                    "tollgate exited ({status}) at start; log:\n{}",
                    tollgate.logs()
                );
            }
            let alive = tollgate
                .client
                .get(&url)
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .map(|r| r.status() == 200)
                .unwrap_or(false);
            if alive
                && tokio::net::TcpStream::connect(tollgate.setup.listen)
                    .await
                    .is_ok()
            {
                return tollgate;
            }
            assert!(
                Instant::now() < deadline,
                "tollgate not alive within 30 s; log:\n{}",
                tollgate.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A running `tollgate serve`; killed on drop.
pub struct Tollgate {
    child: Child,
    pub setup: Setup,
    log_path: PathBuf,
    client: reqwest::Client,
}

/// The `tollgate` binary under test, with any `TOLLGATE_*` / `RUST_LOG` of the caller removed.
pub fn tollgate_command(cwd: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    cmd.current_dir(cwd);
    for (key, _) in std::env::vars_os() {
        let key_str = key.to_string_lossy();
        if key_str.starts_with("TOLLGATE_") || key_str == "RUST_LOG" {
            cmd.env_remove(&key);
        }
    }
    cmd
}

impl Tollgate {
    /// Start `tollgate serve` on `setup` (files already written), logging to a file of its own
    /// in the temp dir (`tollgate.log`, then `tollgate.2.log`… for restarts).
    fn spawn_child(setup: &Setup) -> (Child, PathBuf) {
        let mut n = 1;
        let log_path = loop {
            let name = if n == 1 {
                "tollgate.log".to_owned()
            } else {
                format!("tollgate.{n}.log")
            };
            let path = setup.dir.path().join(name);
            if !path.exists() {
                break path;
            }
            n += 1;
        };
        let log = File::create(&log_path).expect("create log file");
        let child = tollgate_command(setup.dir.path())
            .arg("serve")
            .arg("--config")
            .arg(&setup.config_path)
            .envs(setup.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("clone log file")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn tollgate");
        (child, log_path)
    }

    async fn spawn(setup: Setup) -> Self {
        let (child, log_path) = Self::spawn_child(&setup);
        let mut tollgate = Self {
            child,
            setup,
            log_path,
            client: client(),
        };
        tollgate.wait_ready().await;
        tollgate
    }

    /// Wait until `/readyz` answers 200 and the proxy listener accepts connections (tollgate
    /// binds the proxy listener a few milliseconds after the admin one answers).
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = self.admin_url("/readyz");
        let mut ready = false;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "tollgate exited ({status}) before it was ready; log:\n{}",
                    self.logs()
                );
            }
            if !ready {
                ready = self
                    .client
                    .get(&url)
                    .timeout(Duration::from_secs(1))
                    .send()
                    .await
                    .map(|r| r.status() == 200)
                    .unwrap_or(false);
            }
            if ready
                && tokio::net::TcpStream::connect(self.setup.listen)
                    .await
                    .is_ok()
            {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "tollgate not ready within 30 s (/readyz 200: {ready}, proxy listener not \
                     accepting); log:\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send signal `sig` (`TERM`, `HUP`, …) to the process with `kill(1)`.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(
            status.success(),
            "kill -{sig} {} failed: {status}",
            self.pid()
        );
    }

    /// The exit status if the process has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Wait (polling) until the process exits; panics with the log after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "tollgate (pid {}) still running {timeout:?} after being asked to stop; log:\n{}",
                    self.pid(),
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGTERM, then wait for the exit; returns the status and how long the exit took.
    pub async fn stop_gracefully(&mut self, timeout: Duration) -> (ExitStatus, Duration) {
        let started = Instant::now();
        self.signal("TERM");
        let status = self.wait_exit(timeout).await;
        (status, started.elapsed())
    }

    /// Start `tollgate serve` again on the same temp dir, config, token files and database
    /// (nothing is rewritten), with `setup.env` as it is now. The old process must have exited.
    pub async fn restart(&mut self) {
        assert!(
            self.try_exit().is_some(),
            "restart: the previous tollgate process is still running"
        );
        let (child, log_path) = Self::spawn_child(&self.setup);
        self.child = child;
        self.log_path = log_path;
        self.wait_ready().await;
    }

    /// The logs of every process started on this temp dir (including earlier runs).
    pub fn all_logs(&self) -> String {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(self.setup.dir.path())
            .expect("read temp dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("tollgate") && n.ends_with(".log"))
            })
            .collect();
        paths.sort();
        paths
            .iter()
            .map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// One admin API request with an optional JSON body.
    pub async fn api(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: Option<&Value>,
    ) -> ApiResponse {
        let bytes = body.map(|b| serde_json::to_vec(b).expect("serialise body"));
        let content_type = body.map(|_| "application/json");
        self.api_raw(method, path, auth, content_type, bytes).await
    }

    /// One admin API request with a raw body.
    pub async fn api_raw(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> ApiResponse {
        self.api_raw_on(&self.client, method, path, auth, content_type, body)
            .await
    }

    /// [`Tollgate::api_raw`] on the given client (e.g. a fresh one, for a request after which
    /// the server may close the connection).
    pub async fn api_raw_on(
        &self,
        client: &reqwest::Client,
        method: &str,
        path: &str,
        auth: Option<&str>,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> ApiResponse {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = client.request(method.clone(), self.admin_url(path));
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        if let Some(body) = body {
            req = req.body(body);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e:?}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("admin body");
        ApiResponse {
            what: format!("{method} {path}"),
            status,
            headers,
            text,
        }
    }

    /// Run `tollgate <args> --config <this config>` in the temp dir (so it uses the same
    /// database), off the async runtime.
    pub async fn cli(&self, args: &[&str], stdin: Option<&str>) -> CliOutput {
        let mut all: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        all.push("--config".into());
        all.push(self.setup.config_str());
        let cwd = self.setup.dir.path().to_owned();
        let stdin = stdin.map(str::to_owned);
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = all.iter().map(String::as_str).collect();
            run_tollgate(&args, stdin.as_deref(), &cwd, Duration::from_secs(30))
        })
        .await
        .expect("join CLI runner")
    }

    /// `http://<proxy listener><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.setup.listen, path)
    }

    /// `http://<admin listener><path>`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.setup.admin, path)
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn logs(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }

    /// The `/metrics` text.
    pub async fn metrics_text(&self) -> String {
        let resp = self
            .client
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(resp.status(), 200, "/metrics status");
        resp.text().await.expect("metrics body")
    }

    /// Value of one series, e.g. `tollgate_verifications_total{result="ok"}` (label order does not
    /// matter). A series not (yet) exported counts as 0.
    pub async fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics_text().await, series).unwrap_or(0.0)
    }

    fn proc_status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }

    /// Current resident set size (VmRSS) in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.proc_status_kib("VmRSS:")
    }

    /// Peak resident set size since start (VmHWM) in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.proc_status_kib("VmHWM:")
    }

    /// Parsed JSON log lines with `"target":"audit"`, with `fields`/`span`/`spans` flattened into
    /// one map.
    pub fn audit_records(&self) -> Vec<Map<String, Value>> {
        audit_records(&self.logs())
    }

    /// Poll the log until `pred` holds for some audit record (10 s deadline).
    pub async fn wait_for_audit<F>(&self, what: &str, pred: F) -> Map<String, Value>
    where
        F: Fn(&Map<String, Value>) -> bool,
    {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(record) = self.audit_records().into_iter().find(|r| pred(r)) {
                return record;
            }
            if Instant::now() > deadline {
                panic!(
                    "no audit line for {what} within 10 s; log:\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// An admin API answer.
#[derive(Debug)]
pub struct ApiResponse {
    /// `METHOD path`, for messages.
    pub what: String,
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl ApiResponse {
    /// The body as JSON; panics (naming the request) when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| {
            panic!(
                "{}: body is not JSON ({e}); status {}, body {:?}",
                self.what, self.status, self.text
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    /// Assert the status, returning the JSON body.
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(
            self.status, status,
            "{}: status (body: {})",
            self.what, self.text
        );
        if self.text.is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }

    /// Assert an `{error, message}` JSON refusal with this status and code.
    pub fn expect_error(&self, status: u16, code: &str) {
        assert_eq!(
            self.status, status,
            "{}: status (body: {})",
            self.what, self.text
        );
        let ct = self.header("content-type").unwrap_or_default();
        assert!(
            ct.starts_with("application/json"),
            "{}: Content-Type {ct:?}, want application/json",
            self.what
        );
        let body = self.json();
        assert_eq!(
            body["error"], code,
            "{}: error code in {}",
            self.what, self.text
        );
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{}: no message in {}",
            self.what,
            self.text
        );
    }
}

/// Poll `check` every 10 ms until it holds; `Some(time it took)`, or `None` after `timeout`.
pub async fn poll_until<F, Fut>(timeout: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return Some(started.elapsed());
        }
        if started.elapsed() > timeout {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

impl Drop for Tollgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Audit records out of JSON log text (see [`Tollgate::audit_records`]).
pub fn audit_records(logs: &str) -> Vec<Map<String, Value>> {
    logs.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|value| match value {
            Value::Object(map) => Some(map),
            _ => None,
        })
        .filter(|map| map.get("target").and_then(Value::as_str) == Some("audit"))
        .map(|map| {
            let mut flat = Map::new();
            for nested in ["spans", "span", "fields"] {
                match map.get(nested) {
                    Some(Value::Object(inner)) => flat.extend(inner.clone()),
                    Some(Value::Array(items)) => {
                        for item in items {
                            if let Value::Object(inner) = item {
                                flat.extend(inner.clone());
                            }
                        }
                    }
                    _ => {}
                }
            }
            for (k, v) in map {
                flat.entry(k).or_insert(v);
            }
            flat
        })
        .collect()
}

/// A string field of an audit record, also accepting numbers (e.g. `status`).
pub fn field_str(record: &Map<String, Value>, key: &str) -> Option<String> {
    match record.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// Metrics text
// ---------------------------------------------------------------------------------------------

/// Split `name{a="b",c="d"}` into the name and its labels.
pub fn parse_series(series: &str) -> (String, BTreeMap<String, String>) {
    let series = series.trim();
    let Some(open) = series.find('{') else {
        return (series.to_owned(), BTreeMap::new());
    };
    let name = series[..open].to_owned();
    let inner = series[open + 1..].trim_end_matches('}');
    let mut labels = BTreeMap::new();
    let mut chars = inner.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(',') | Some(' ')) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        if key.is_empty() {
            break;
        }
        assert_eq!(
            chars.next(),
            Some('"'),
            "label value must be quoted in {series}"
        );
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => break,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(key.trim().to_owned(), value);
    }
    (name, labels)
}

/// The sum of every series named `name` (any labels) in Prometheus text `text`.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let split = match line.rfind('}') {
                Some(close) => close + 1,
                None => line.find(' ')?,
            };
            let (series_part, rest) = line.split_at(split);
            (parse_series(series_part).0 == name)
                .then(|| rest.split_whitespace().next()?.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// The value of `series` in Prometheus text `text`, if exported.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    let wanted = parse_series(series);
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .find_map(|line| {
            // The value is the first token after the series; labels may contain spaces.
            let split = match line.rfind('}') {
                Some(close) => close + 1,
                None => line.find(' ')?,
            };
            let (series_part, rest) = line.split_at(split);
            if parse_series(series_part) != wanted {
                return None;
            }
            rest.split_whitespace().next()?.parse().ok()
        })
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

/// A reqwest client that ignores proxy environment variables, with a 30 s default timeout.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("reqwest client")
}

/// A proxy answer read whole by [`http_get`] / [`http_send`].
#[derive(Debug)]
pub struct Fetched {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Fetched {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    /// The `error` code of a JSON refusal body, if any.
    pub fn error_code(&self) -> Option<String> {
        serde_json::from_str::<Value>(&self.body)
            .ok()?
            .get("error")?
            .as_str()
            .map(str::to_owned)
    }
}

/// `GET url` with an optional Authorization value, read whole.
pub async fn http_get(client: &reqwest::Client, url: &str, auth: Option<&str>) -> Fetched {
    http_send(client, "GET", url, auth, None).await
}

/// One request with an optional Authorization value and body, read whole.
pub async fn http_send(
    client: &reqwest::Client,
    method: &str,
    url: &str,
    auth: Option<&str>,
    body: Option<&str>,
) -> Fetched {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = client.request(method.clone(), url);
    if let Some(auth) = auth {
        req = req.header("authorization", auth);
    }
    if let Some(body) = body {
        req = req.body(body.to_owned());
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e:?}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.text().await.unwrap_or_default();
    Fetched {
        status,
        headers,
        body,
    }
}

/// A response read by [`raw_request`].
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Send one HTTP/1.1 request with the request target exactly as given (no client-side
/// normalisation of `..`, `%xx` or `\`) and read the response (10 s deadline).
pub async fn raw_request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> RawResponse {
    tokio::time::timeout(
        Duration::from_secs(10),
        raw_request_inner(addr, method, target, headers),
    )
    .await
    .unwrap_or_else(|_| panic!("raw {method} {target}: no complete response within 10 s"))
}

async fn raw_request_inner(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> RawResponse {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let mut request =
        format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if method != "GET"
        && method != "HEAD"
        && !headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    {
        request.push_str("Content-Length: 0\r\n");
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write request");

    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let header_end = loop {
        if let Some(pos) = find(&buf, b"\r\n\r\n") {
            break pos;
        }
        let n = stream.read(&mut tmp).await.expect("read response");
        assert!(
            n > 0,
            "connection closed before response headers: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = buf[header_end + 4..].to_vec();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let chunked =
        get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length: Option<usize> = get("content-length").and_then(|v| v.parse().ok());
    if method == "HEAD" || status == 204 || status == 304 {
        body.clear();
    } else if chunked {
        loop {
            if let Some(decoded) = decode_chunked(&body) {
                body = decoded;
                break;
            }
            let n = stream.read(&mut tmp).await.expect("read chunked body");
            assert!(n > 0, "connection closed inside a chunked body");
            body.extend_from_slice(&tmp[..n]);
        }
    } else if let Some(length) = length {
        while body.len() < length {
            let n = stream.read(&mut tmp).await.expect("read body");
            assert!(
                n > 0,
                "connection closed after {} of {length} body bytes",
                body.len()
            );
            body.extend_from_slice(&tmp[..n]);
        }
        body.truncate(length);
    } else {
        stream
            .read_to_end(&mut body)
            .await
            .expect("read body to end");
    }
    RawResponse {
        status,
        headers,
        body,
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The decoded body if `data` holds a complete chunked body, else `None`.
fn decode_chunked(data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        let line_end = pos + find(&data[pos..], b"\r\n")?;
        let size_text = String::from_utf8_lossy(&data[pos..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        pos = line_end + 2;
        if size == 0 {
            // Trailers (if any) end with an empty line.
            find(&data[pos..], b"\r\n")?;
            return Some(out);
        }
        if data.len() < pos + size + 2 {
            return None;
        }
        out.extend_from_slice(&data[pos..pos + size]);
        pos += size + 2;
    }
}

// ---------------------------------------------------------------------------------------------
// CLI
// ---------------------------------------------------------------------------------------------

/// The result of one CLI run.
#[derive(Debug)]
pub struct CliOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// stdout followed by stderr.
    pub fn combined(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Run `tollgate <args>` in `cwd`, feeding `stdin`; killed and reported if it does not exit within
/// `timeout`.
pub fn run_tollgate(
    args: &[&str],
    stdin: Option<&str>,
    cwd: &Path,
    timeout: Duration,
) -> CliOutput {
    run_tollgate_env(args, stdin, cwd, timeout, &[])
}

/// [`run_tollgate`] with extra environment variables.
pub fn run_tollgate_env(
    args: &[&str],
    stdin: Option<&str>,
    cwd: &Path,
    timeout: Duration,
    env: &[(&str, &str)],
) -> CliOutput {
    let mut child = tollgate_command(cwd)
        .args(args)
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tollgate");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        pipe.write_all(input.as_bytes()).expect("write stdin");
    }
    let mut out_pipe = child.stdout.take().expect("stdout pipe");
    let mut err_pipe = child.stderr.take().expect("stderr pipe");
    let out_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out_pipe.read_to_end(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err_pipe.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stdout =
                String::from_utf8_lossy(&out_reader.join().unwrap_or_default()).into_owned();
            let stderr =
                String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
            panic!(
                "tollgate {args:?} did not exit within {timeout:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = String::from_utf8_lossy(&out_reader.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
    CliOutput {
        status,
        stdout,
        stderr,
    }
}

// ---- shared helpers of the admin API and CLI suites ---------------------------------------

/// Name of the bootstrap manager token that [`Setup::with_bootstrap`] configures.
pub const BOOT_NAME: &str = "admin";
/// Its secret (24+ characters, as the server requires).
pub const BOOT_SECRET: &str = "Bootstrap-S3cret-tests-000001";

/// Basic credentials of the bootstrap token.
pub fn boot() -> String {
    basic(BOOT_NAME, BOOT_SECRET)
}

/// `Authorization: Bearer <token>`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// An RFC 3339 timestamp of a JSON answer.
pub fn parse_time(v: &Value, what: &str) -> chrono::DateTime<chrono::Utc> {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("{what}: not a timestamp: {v}"));
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{what}: {s:?} is not RFC 3339: {e}"))
        .with_timezone(&chrono::Utc)
}

/// The `token: tok_…` line the CLI prints on stderr.
pub fn cli_token(out: &CliOutput) -> String {
    out.stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .unwrap_or_else(|| panic!("no `token: …` line on stderr: {out:?}"))
        .trim()
        .to_owned()
}

/// Fails if an answer or output shows a password hash.
pub fn assert_no_hash(what: &str, text: &str) {
    assert!(
        !text.contains("$argon2") && !text.contains("\"hash\""),
        "{what} contains a hash: {text}"
    );
}

impl Tollgate {
    /// `POST /api/v1/tokens` with `auth`; checks the 201 answer (Location, no hash, the token's
    /// form) and returns the record (without `token`) and the token.
    pub async fn create_token(&self, auth: &str, body: Value) -> (Value, String) {
        let resp = self
            .api("POST", "/api/v1/tokens", Some(auth), Some(&body))
            .await;
        let mut record = resp.expect(201);
        let id = record["id"].as_str().expect("id in 201 body").to_owned();
        assert_eq!(
            resp.header("location").as_deref(),
            Some(format!("/api/v1/tokens/{id}").as_str()),
            "Location of the created token"
        );
        assert_no_hash("201 body", &resp.text);
        let token = record["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token in the 201 body: {}", resp.text))
            .to_owned();
        assert!(
            token.starts_with(&format!("tok_{id}_")) && token.len() == 55,
            "token {token:?} does not have the form tok_<id>_<secret><check> for id {id}"
        );
        record
            .as_object_mut()
            .expect("record is an object")
            .remove("token");
        (record, token)
    }
}
