//! A local OIDC issuer for the trusted-publishing tests: discovery
//! (`/.well-known/openid-configuration`) and JWKS over HTTP on 127.0.0.1, signing job tokens
//! like a CI provider's with the RSA and P-256 keys of `tests/fixtures/oidc`. The test picks
//! which keys the JWKS publishes (key rotation), can make both endpoints answer 503 (an
//! outage), and counts JWKS fetches.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use super::Background;

/// The audience the test configurations require.
pub const AUDIENCE: &str = "tollgate-test";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/oidc")
        .join(name)
}

/// The public JWK of fixture key `kid` (`rsa-1`, `rsa-2`, `ec-1`).
pub fn jwk(kid: &str) -> Value {
    let text = std::fs::read_to_string(fixture(&format!("{kid}.jwk.json"))).expect("jwk fixture");
    serde_json::from_str(&text).expect("jwk JSON")
}

/// The PEM of fixture key `name` (`rsa-1.pem`, `rsa-1.pub.pem`, …).
pub fn pem(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).expect("pem fixture")
}

struct Shared {
    keys: Mutex<Vec<String>>,
    down: AtomicBool,
    jwks_fetches: AtomicUsize,
    issuer: String,
}

/// A running issuer; stopped on drop.
pub struct Issuer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    _server: Background,
}

async fn discovery(State(s): State<Arc<Shared>>) -> Response {
    if s.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    Json(json!({
        "issuer": s.issuer,
        "jwks_uri": format!("{}/.well-known/jwks", s.issuer),
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
    }))
    .into_response()
}

async fn jwks(State(s): State<Arc<Shared>>) -> Response {
    s.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    if s.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let keys: Vec<Value> = s.keys.lock().unwrap().iter().map(|k| jwk(k)).collect();
    Json(json!({ "keys": keys })).into_response()
}

impl Issuer {
    /// An issuer publishing `rsa-1` and `ec-1`.
    pub fn start() -> Self {
        let (listener, addr) = super::bind_std();
        let shared = Arc::new(Shared {
            keys: Mutex::new(vec!["rsa-1".into(), "ec-1".into()]),
            down: AtomicBool::new(false),
            jwks_fetches: AtomicUsize::new(0),
            issuer: format!("http://{addr}"),
        });
        let state = shared.clone();
        let server = Background::spawn(move || async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            let app = Router::new()
                .route("/.well-known/openid-configuration", get(discovery))
                .route("/.well-known/jwks", get(jwks))
                .with_state(state);
            let _ = axum::serve(listener, app).await;
        });
        Issuer {
            addr,
            shared,
            _server: server,
        }
    }

    /// The issuer URL (`iss`), `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.shared.issuer.clone()
    }

    /// Publish exactly these keys from now on (`rsa-1`, `rsa-2`, `ec-1`).
    pub fn publish(&self, kids: &[&str]) {
        *self.shared.keys.lock().unwrap() = kids.iter().map(|k| k.to_string()).collect();
    }

    /// Discovery and JWKS answer 503 while `down`.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// JWKS requests so far.
    pub fn jwks_fetches(&self) -> usize {
        self.shared.jwks_fetches.load(Ordering::SeqCst)
    }

    /// GitHub-Actions-like claims of a job of `acme/widget` on tag `v1.0`, valid for 5 minutes
    /// from now, with a fresh `jti`.
    pub fn claims(&self) -> Value {
        let now = chrono::Utc::now().timestamp();
        json!({
            "iss": self.url(),
            "aud": AUDIENCE,
            "sub": "repo:acme/widget:ref:refs/tags/v1.0",
            "repository": "acme/widget",
            "repository_owner_id": "4242",
            "ref": "refs/tags/v1.0",
            "ref_protected": "true",
            "workflow_ref": "acme/widget/.github/workflows/release.yml@refs/tags/v1.0",
            "run_id": "9000001",
            "jti": unique_jti(),
            "iat": now,
            "nbf": now - 5,
            "exp": now + 300,
        })
    }

    /// `claims` signed with fixture key `kid` (RS256 for `rsa-*`, ES256 for `ec-*`), the
    /// header naming `kid`.
    pub fn sign(&self, kid: &str, claims: &Value) -> String {
        sign_as(kid, kid, claims)
    }
}

/// A job-token id not used before (process, time and a counter).
pub fn unique_jti() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "jti-{}-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

/// `claims` signed with fixture key `key`, the header naming key id `kid`.
pub fn sign_as(key: &str, kid: &str, claims: &Value) -> String {
    let (alg, enc) = if key.starts_with("ec") {
        (
            Algorithm::ES256,
            EncodingKey::from_ec_pem(&pem(&format!("{key}.pem"))).expect("ec key"),
        )
    } else {
        (
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(&pem(&format!("{key}.pem"))).expect("rsa key"),
        )
    };
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, claims, &enc).expect("sign")
}

/// `claims` as an unsigned token (`alg: none`, empty signature).
pub fn unsigned(kid: &str, claims: &Value) -> String {
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "kid": kid, "typ": "JWT"})),
        b64(claims)
    )
}

/// `claims` signed HS256 with the RSA public key's PEM as the HMAC secret (the classic
/// algorithm-confusion attack).
pub fn hmac_with_public_key(kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_secret(&pem("rsa-1.pub.pem")),
    )
    .expect("sign")
}

use base64::Engine as _;
