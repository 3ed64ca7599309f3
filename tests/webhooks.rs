//! Webhooks through the real binary against a receiver started by the test: token changes are
//! delivered signed (HMAC-SHA256, GitHub's scheme) to the hooks that asked for them; a receiver
//! that is down gets the delivery after retries; `token.expiring` fires once per token and
//! window, also across a restart; `token.anomaly` fires for a token used from 20 addresses and
//! not for a normal one; with two PostgreSQL replicas exactly one sends each event.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::Router;
use common::pg::PgCluster;
use common::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};

const SECRET: &str = "webhook-secret-0123456789";
const FILE_SECRET: &str = "another-secret-from-a-file";

/// One POST the receiver got.
#[derive(Clone, Debug)]
struct Delivery {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Delivery {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
    fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }
    fn event(&self) -> String {
        self.header("x-tollgate-event")
    }
}

/// A receiver recording every POST; stopped when dropped.
struct Receiver {
    got: Arc<Mutex<Vec<Delivery>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    async fn start(addr: SocketAddr) -> Self {
        let got = Arc::new(Mutex::new(Vec::new()));
        let log = got.clone();
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind receiver");
        let app = Router::new().fallback(
            move |uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
                let log = log.clone();
                async move {
                    log.lock().unwrap().push(Delivery {
                        path: uri.path().to_owned(),
                        headers,
                        body,
                    });
                    "ok"
                }
            },
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { got, task }
    }

    fn all(&self) -> Vec<Delivery> {
        self.got.lock().unwrap().clone()
    }

    fn of(&self, event: &str) -> Vec<Delivery> {
        self.all()
            .into_iter()
            .filter(|d| d.event() == event)
            .collect()
    }

    /// Polls until `n` deliveries of `event` arrived (at most 30 s).
    async fn wait(&self, event: &str, n: usize) -> Vec<Delivery> {
        let done = poll_until(Duration::from_secs(30), || async {
            self.of(event).len() >= n
        })
        .await;
        assert!(
            done.is_some(),
            "{n} × {event} never arrived; got {:?}",
            self.all()
        );
        self.of(event)
    }
}

fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex(&mac.finalize().into_bytes()))
}

fn hook(url: &str, events: &[&str]) -> Value {
    json!({"url": url, "secret": SECRET, "events": events})
}

#[tokio::test]
async fn token_changes_are_delivered_signed_to_the_hooks_that_asked() {
    let upstream = Upstream::start();
    let addr = free_addr();
    let rx = Receiver::start(addr).await;
    let secret_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret_file.path(), format!("{FILE_SECRET}\n")).unwrap();
    let t = Setup::new(&upstream.url())
        .with_bootstrap()
        .env("HOOK_SECRET", SECRET)
        .set(
            "webhooks",
            json!([
                {"url": format!("http://{addr}/all"), "secret_env": "HOOK_SECRET",
                 "events": ["token.created", "token.regenerated", "token.revoked"]},
                {"url": format!("http://{addr}/revoked"), "secret_file": secret_file.path(),
                 "events": ["token.revoked"]},
            ]),
        )
        .start()
        .await;
    let created = t
        .api(
            "POST",
            "/api/v1/tokens",
            Some(&boot()),
            Some(&json!({"name": "ci", "permission": "read"})),
        )
        .await
        .expect(201);
    let id = created["id"].as_str().unwrap().to_owned();
    let secret_token = created["token"].as_str().unwrap().to_owned();
    t.api(
        "POST",
        &format!("/api/v1/tokens/{id}/regenerate"),
        Some(&boot()),
        None,
    )
    .await
    .expect(200);
    let r = t
        .api(
            "DELETE",
            &format!("/api/v1/tokens/{id}"),
            Some(&boot()),
            None,
        )
        .await;
    assert_eq!(r.status, 204);

    let made = rx.wait("token.created", 1).await;
    rx.wait("token.regenerated", 1).await;
    let revoked = rx.wait("token.revoked", 2).await;
    let d = &made[0];
    assert_eq!(d.path, "/all");
    assert_eq!(
        d.header("x-tollgate-signature-256"),
        hmac_hex(SECRET, &d.body)
    );
    assert_eq!(d.header("content-type"), "application/json");
    assert!(!d.header("x-tollgate-delivery").is_empty());
    let body = d.json();
    assert_eq!(body["event"], "token.created");
    assert_eq!(body["token"]["id"], id.as_str());
    assert_eq!(body["token"]["name"], "ci");
    assert_eq!(body["actor"]["name"], BOOT_NAME);
    assert!(!String::from_utf8_lossy(&d.body).contains(&secret_token[4..]));
    for d in &revoked {
        let secret = if d.path == "/revoked" {
            FILE_SECRET
        } else {
            SECRET
        };
        assert_eq!(
            d.header("x-tollgate-signature-256"),
            hmac_hex(secret, &d.body),
            "{}",
            d.path
        );
        // A wrong key does not verify.
        assert_ne!(
            d.header("x-tollgate-signature-256"),
            hmac_hex("not-the-secret-at-all", &d.body)
        );
    }
    let mut paths: Vec<String> = revoked.iter().map(|d| d.path.clone()).collect();
    paths.sort();
    assert_eq!(paths, ["/all", "/revoked"]);
    assert_eq!(
        rx.all().len(),
        4,
        "the second hook asked for revocations only"
    );
    assert_eq!(
        t.metric("tollgate_webhook_deliveries_total{result=\"delivered\"}")
            .await,
        4.0
    );
    let logs = t.all_logs();
    assert!(
        !logs.contains(SECRET) && !logs.contains(FILE_SECRET),
        "a secret reached the log"
    );
}

#[tokio::test]
async fn a_receiver_that_is_down_gets_the_delivery_after_retries() {
    let upstream = Upstream::start();
    let addr = free_addr();
    let t = Setup::new(&upstream.url())
        .with_bootstrap()
        .set(
            "webhooks",
            json!([hook(&format!("http://{addr}/h"), &["token.created"])]),
        )
        .start()
        .await;
    t.api(
        "POST",
        "/api/v1/tokens",
        Some(&boot()),
        Some(&json!({"name": "late", "permission": "read"})),
    )
    .await
    .expect(201);
    let retried = poll_until(Duration::from_secs(20), || async {
        t.metric("tollgate_webhook_deliveries_total{result=\"retry\"}")
            .await
            >= 2.0
    })
    .await;
    assert!(retried.is_some(), "no retries: {}", t.logs());
    let rx = Receiver::start(addr).await;
    let got = rx.wait("token.created", 1).await;
    assert_eq!(got[0].json()["token"]["name"], "late");
    assert_eq!(
        got[0].header("x-tollgate-signature-256"),
        hmac_hex(SECRET, &got[0].body)
    );
    assert_eq!(
        t.metric("tollgate_webhook_deliveries_total{result=\"delivered\"}")
            .await,
        1.0
    );
    assert_eq!(
        t.metric("tollgate_webhook_deliveries_total{result=\"failed\"}")
            .await,
        0.0
    );
    assert_eq!(rx.all().len(), 1);
}

#[tokio::test]
async fn expiring_fires_once_per_token_and_window_also_across_a_restart() {
    let upstream = Upstream::start();
    let addr = free_addr();
    let rx = Receiver::start(addr).await;
    let at = |days: i64| (chrono::Utc::now() + chrono::Duration::days(days)).to_rfc3339();
    let soon = TestToken::builder("soon").expires_at(&at(5)).build();
    let month = TestToken::builder("month").expires_at(&at(20)).build();
    let later = TestToken::builder("later").expires_at(&at(60)).build();
    let never = TestToken::read("never");
    let mut t = Setup::new(&upstream.url())
        .with_tokens(&[&soon, &month, &later, &never])
        .set(
            "webhooks",
            json!([hook(&format!("http://{addr}/h"), &["token.expiring"])]),
        )
        .start()
        .await;
    let got = rx.wait("token.expiring", 2).await;
    let mut seen: Vec<(String, String)> = got
        .iter()
        .map(|d| {
            let b = d.json();
            (
                b["token"]["name"].as_str().unwrap().to_owned(),
                b["window"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [("month".into(), "30d".into()), ("soon".into(), "7d".into())]
    );
    // Three more checks, then a restart and three more: nothing new (claims in the database).
    tokio::time::sleep(Duration::from_secs(6)).await;
    t.stop_gracefully(Duration::from_secs(20)).await;
    t.restart().await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(rx.of("token.expiring").len(), 2, "{:?}", rx.all());
}

/// A client whose connections come from `127.0.0.<n>`.
fn client_from(n: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(IpAddr::from([127, 0, 0, n]))
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[tokio::test]
async fn anomaly_fires_for_a_token_used_from_20_addresses_and_not_for_a_normal_one() {
    let upstream = Upstream::start();
    let addr = free_addr();
    let rx = Receiver::start(addr).await;
    let leaked = TestToken::read("leaked");
    let normal = TestToken::read("normal");
    let t = Setup::new(&upstream.url())
        .with_tokens(&[&leaked, &normal])
        .set("rate_limit", json!("unlimited"))
        .set(
            "usage",
            json!({"anomaly_addresses": 10, "flush_interval": "200ms"}),
        )
        .set(
            "webhooks",
            json!([hook(&format!("http://{addr}/h"), &["token.anomaly"])]),
        )
        .start()
        .await;
    // The normal token: many requests from its two usual addresses.
    for n in [1u8, 2] {
        let c = client_from(n);
        for _ in 0..20 {
            assert_eq!(
                http_get(&c, &t.url("/files/x"), Some(&normal.auth()))
                    .await
                    .status,
                200
            );
        }
    }
    for n in 1..=20u8 {
        let c = client_from(n);
        assert_eq!(
            http_get(&c, &t.url("/files/x"), Some(&leaked.auth()))
                .await
                .status,
            200
        );
    }
    let got = rx.wait("token.anomaly", 1).await;
    let b = got[0].json();
    assert_eq!(b["token"]["name"], "leaked");
    assert_eq!(b["token"]["id"], leaked.id.as_str());
    assert_eq!(b["threshold"], 10);
    assert_eq!(b["addresses"], 11, "fired as the bound was passed");
    // Two more collection rounds: nothing for the normal token, nothing more for the leaked one.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(rx.of("token.anomaly").len(), 1, "{:?}", rx.all());
}

#[tokio::test]
async fn with_two_postgres_replicas_exactly_one_sends_each_event() {
    let upstream = Upstream::start();
    let mut pg = PgCluster::start();
    let url = pg.create_database("webhooks");
    let addr = free_addr();
    let rx = Receiver::start(addr).await;
    let replica = || {
        Setup::new(&upstream.url())
            .set("tokens.files", json!([]))
            .set("tokens.database", json!(url))
            .with_bootstrap()
            .set(
                "webhooks",
                json!([hook(
                    &format!("http://{addr}/h"),
                    &["token.created", "token.expiring"]
                )]),
            )
    };
    let a = replica().start().await;
    let b = replica().start().await;
    let created = a
        .api(
            "POST",
            "/api/v1/tokens",
            Some(&boot()),
            Some(&json!({"name": "short", "permission": "read", "expires_in": "5d"})),
        )
        .await
        .expect(201);
    // Both replicas see the token expiring (b within its poll of the change counter).
    let seen_by_b = poll_until(Duration::from_secs(10), || async {
        b.api("GET", "/api/v1/tokens/short", Some(&boot()), None)
            .await
            .status
            == 200
    })
    .await;
    assert!(seen_by_b.is_some());
    rx.wait("token.created", 1).await;
    let got = rx.wait("token.expiring", 1).await;
    assert_eq!(got[0].json()["token"]["id"], created["id"]);
    // Several checks on both replicas later: still one of each.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(rx.of("token.expiring").len(), 1, "{:?}", rx.all());
    assert_eq!(rx.of("token.created").len(), 1, "{:?}", rx.all());
    let sent = a
        .metric("tollgate_webhook_deliveries_total{result=\"delivered\"}")
        .await
        + b.metric("tollgate_webhook_deliveries_total{result=\"delivered\"}")
            .await;
    assert_eq!(sent, 2.0);
}
