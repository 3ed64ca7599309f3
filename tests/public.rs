//! Public paths through the real binary: what a request without credentials may reach, what
//! it may not, that credentials are still checked when sent, and the per-address limit of
//! anonymous requests.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::*;
use serde_json::json;

/// A client whose connections come from `source` (any 127.0.0.x reaches 127.0.0.1).
fn client_from(source: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .local_address(IpAddr::from(source))
        .build()
        .expect("reqwest client")
}

fn public_rules() -> serde_json::Value {
    json!([{"path": "/packages.json", "access": "read"}, {"path": "/health"}])
}

#[tokio::test]
async fn public_paths_are_served_without_a_token_and_nothing_else_is() {
    let upstream = Upstream::start();
    let reader = TestToken::read("reader");
    let proxy = Setup::new(&upstream.url())
        .with_tokens(&[&reader])
        .set("public", public_rules())
        .start()
        .await;
    let c = client();

    // No credentials on a public path: forwarded, without any identity.
    let resp = http_get(&c, &proxy.url("/packages.json"), None).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let seen = upstream
        .find("/packages.json")
        .expect("reached the upstream");
    let identity: Vec<_> = seen
        .headers
        .keys()
        .filter(|k| k.as_str().starts_with("x-tollgate-"))
        .collect();
    assert!(identity.is_empty(), "identity headers sent: {identity:?}");
    // The default anonymous limit, 600 a minute, with the usual headers.
    assert_eq!(
        resp.header("x-ratelimit-limit").as_deref(),
        Some("600"),
        "{:?}",
        resp.headers
    );
    // Below a public pattern too.
    let resp = http_get(&c, &proxy.url("/health/live"), None).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let record = proxy
        .wait_for_audit("the public request", |r| {
            r.get("path").and_then(|p| p.as_str()) == Some("/packages.json")
        })
        .await;
    assert_eq!(record["token_id"], "");
    assert_eq!(record["outcome"], "public");
    assert_eq!(record["status"], 200);

    // No credentials elsewhere: refused as always.
    let before = upstream.count();
    let resp = http_get(&c, &proxy.url("/private"), None).await;
    assert_eq!(resp.status, 401, "{}", resp.body);
    assert_eq!(resp.error_code().as_deref(), Some("credentials_missing"));
    assert!(resp.header("www-authenticate").is_some());

    // Credentials on a public path are checked: a wrong token is no anonymous request.
    let resp = http_get(
        &c,
        &proxy.url("/packages.json"),
        Some(&basic("token", &unknown_token())),
    )
    .await;
    assert_eq!(resp.status, 401, "{}", resp.body);
    assert_eq!(resp.error_code().as_deref(), Some("token_invalid"));

    // Writing to a read-only public path needs a token.
    let resp = http_send(&c, "PUT", &proxy.url("/packages.json"), None, Some("x")).await;
    assert_eq!(resp.status, 401, "{}", resp.body);
    assert_eq!(resp.error_code().as_deref(), Some("credentials_missing"));

    // An encoded dot-dot out of a public pattern is refused or judged where it leads.
    for escape in [
        "/health/%2e%2e/private",
        "/health/%2E%2E/private",
        "/health/../private",
    ] {
        let resp = http_get(&c, &proxy.url(escape), None).await;
        assert!(
            resp.status == 400 || resp.status == 401,
            "{escape}: {} {}",
            resp.status,
            resp.body
        );
    }
    // whoami has no anonymous answer.
    let resp = http_get(&c, &proxy.url("/_tollgate/whoami"), None).await;
    assert_eq!(resp.status, 401, "{}", resp.body);
    assert_eq!(upstream.count(), before, "{:?}", upstream.requests());

    // A valid token on a public path is an ordinary, identified request.
    let resp = http_get(&c, &proxy.url("/packages.json"), Some(&reader.auth())).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let seen = upstream.last().expect("reached the upstream");
    assert_eq!(
        seen.header("x-tollgate-token-id").as_deref(),
        Some(reader.id.as_str())
    );

    let metrics = proxy.metrics_text().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("tollgate_requests_total") && l.contains("outcome=\"public\"")),
        "{metrics}"
    );
}

#[tokio::test]
async fn write_access_admits_uploads() {
    let upstream = Upstream::start();
    let proxy = Setup::new(&upstream.url())
        .set("public", json!([{"path": "/drop", "access": "write"}]))
        .start()
        .await;
    let c = client();
    let resp = http_send(&c, "PUT", &proxy.url("/drop/a.txt"), None, Some("hi")).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(upstream.count_path("/drop/a.txt"), 1);
}

#[tokio::test]
async fn anonymous_requests_are_limited_per_address() {
    let upstream = Upstream::start();
    let proxy = Setup::new(&upstream.url())
        .set("public", public_rules())
        .set("public_rate_limit", json!({"requests": 3, "period": "1m"}))
        .start()
        .await;
    let first = client();
    for n in 1..=3 {
        let resp = http_get(&first, &proxy.url("/packages.json"), None).await;
        assert_eq!(resp.status, 200, "request {n}: {}", resp.body);
    }
    let resp = http_get(&first, &proxy.url("/packages.json"), None).await;
    assert_eq!(resp.status, 429, "{}", resp.body);
    assert_eq!(resp.error_code().as_deref(), Some("rate_limited"));
    assert!(resp.header("retry-after").is_some(), "{:?}", resp.headers);
    assert_eq!(upstream.count_path("/packages.json"), 3);

    // Another address has a budget of its own.
    let second = client_from([127, 0, 0, 2]);
    let resp = http_get(&second, &proxy.url("/packages.json"), None).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(upstream.count_path("/packages.json"), 4);
}
