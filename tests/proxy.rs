//! End-to-end tests: the real `tollgate` binary in front of a real upstream HTTP server.
//!
//! Each test starts its own upstream and proxy process on free ports (see `common`), so tests are
//! independent and may run in parallel.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt as _;
use serde_json::{json, Value};
use sha2::Digest as _;

/// Status + JSON refusal check shared by reqwest and raw responses.
fn check_refusal(
    what: &str,
    status: u16,
    content_type: Option<&str>,
    body: &str,
    want_status: u16,
    want_code: &str,
) {
    assert_eq!(status, want_status, "{what}: status (body: {body})");
    let content_type = content_type.unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "{what}: Content-Type {content_type:?}, want application/json"
    );
    let json: Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("{what}: refusal body is not JSON ({e}): {body}"));
    assert_eq!(json["error"], want_code, "{what}: error code in {body}");
    assert!(json["message"].is_string(), "{what}: no message in {body}");
}

/// Check a reqwest refusal; returns its headers.
async fn expect_refusal(
    what: &str,
    resp: reqwest::Response,
    want_status: u16,
    want_code: &str,
) -> reqwest::header::HeaderMap {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp.text().await.expect("refusal body");
    check_refusal(
        what,
        status,
        content_type.as_deref(),
        &body,
        want_status,
        want_code,
    );
    headers
}

/// Check a 401 refusal including its Basic challenge.
async fn expect_401(what: &str, resp: reqwest::Response, want_code: &str) {
    let headers = expect_refusal(what, resp, 401, want_code).await;
    let challenge = headers
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert_eq!(
        challenge,
        format!("Basic realm=\"{REALM}\""),
        "{what}: WWW-Authenticate"
    );
}

fn expect_raw_refusal(what: &str, resp: &RawResponse, want_status: u16, want_code: &str) {
    check_refusal(
        what,
        resp.status,
        resp.header("content-type"),
        &resp.text(),
        want_status,
        want_code,
    );
}

async fn get(client: &reqwest::Client, url: String, auth: Option<&str>) -> reqwest::Response {
    let mut req = client.get(&url);
    if let Some(auth) = auth {
        req = req.header("authorization", auth);
    }
    req.send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e:?}"))
}

async fn expect_hello(what: &str, resp: reqwest::Response, path: &str) {
    let status = resp.status().as_u16();
    let body = resp.text().await.expect("body");
    assert_eq!(status, 200, "{what}: status (body: {body})");
    assert_eq!(body, format!("hello {path}"), "{what}: body");
}

/// The six credential forms of the contract for token `token` (generated) and `custom` (custom
/// secret): (label, Authorization value).
fn credential_forms(token: &TestToken, custom: &TestToken) -> Vec<(&'static str, String, String)> {
    let t = &token.token;
    vec![
        ("basic-token", basic("token", t), token.id.clone()),
        ("basic-__token__", basic("__token__", t), token.id.clone()),
        (
            "basic-name-secret",
            basic(&custom.name, &custom.token),
            custom.id.clone(),
        ),
        ("bearer", format!("Bearer {t}"), token.id.clone()),
        ("token-scheme", format!("token {t}"), token.id.clone()),
        ("bare", t.clone(), token.id.clone()),
    ]
}

/// A generated token string with one character of its secret part changed (checksum mismatch).
fn corrupt_checksum(token: &str) -> String {
    let mut bytes = token.as_bytes().to_vec();
    let i = 20;
    bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
    String::from_utf8(bytes).expect("ascii token")
}

#[tokio::test]
async fn every_credential_form_lets_a_valid_token_through() {
    let upstream = Upstream::start();
    let reader = TestToken::read("ci-reader");
    let custom = TestToken::builder("custom-user")
        .custom_secret("Custom-S3cret-value-for-tests")
        .build();
    let proxy = Setup::new(&upstream.url())
        .with_tokens(&[&reader, &custom])
        .start()
        .await;
    let client = client();

    for (label, auth, want_id) in credential_forms(&reader, &custom) {
        let path = format!("/forms/{label}");
        let resp = get(&client, proxy.url(&path), Some(&auth)).await;
        expect_hello(label, resp, &path).await;
        let seen = upstream
            .find(&path)
            .unwrap_or_else(|| panic!("{label}: upstream never saw {path}"));
        assert_eq!(seen.method, "GET", "{label}");
        assert_eq!(
            seen.header("x-tollgate-token-id").as_deref(),
            Some(want_id.as_str()),
            "{label}: X-Tollgate-Token-Id at upstream"
        );
    }
    assert_eq!(upstream.count(), 6, "one upstream request per form");
}

#[tokio::test]
async fn bad_credentials_get_401_and_never_reach_upstream() {
    let upstream = Upstream::start();
    let reader = TestToken::read("reader");
    let wrong_secret = TestToken::builder("wrong-secret")
        .stored_secret("this is not the secret that was handed out")
        .build();
    let expired = TestToken::builder("expired")
        .expires_at("2020-01-01T00:00:00Z")
        .build();
    let custom = TestToken::builder("custom-user")
        .custom_secret("Custom-S3cret-value-for-tests")
        .build();
    let proxy = Setup::new(&upstream.url())
        .with_tokens(&[&reader, &wrong_secret, &expired, &custom])
        .start()
        .await;
    let client = client();

    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("missing", None, "credentials_missing"),
        (
            "bad checksum (bearer)",
            Some(format!("Bearer {}", corrupt_checksum(&reader.token))),
            "credentials_malformed",
        ),
        (
            "bad checksum (basic token:)",
            Some(basic("token", &corrupt_checksum(&reader.token))),
            "credentials_malformed",
        ),
        (
            "basic not base64",
            Some("Basic !!!not-base64!!!".to_owned()),
            "credentials_malformed",
        ),
        ("wrong secret", Some(wrong_secret.bearer()), "token_invalid"),
        (
            "unknown id",
            Some(format!("Bearer {}", unknown_token())),
            "token_invalid",
        ),
        (
            "custom name, wrong secret",
            Some(basic(&custom.name, "not-the-custom-secret")),
            "token_invalid",
        ),
        (
            "unknown name",
            Some(basic("nobody-by-this-name", "whatever-secret")),
            "token_invalid",
        ),
        ("expired", Some(expired.bearer()), "token_expired"),
    ];
    for (i, (what, auth, code)) in cases.iter().enumerate() {
        let resp = get(
            &client,
            proxy.url(&format!("/refused/{i}")),
            auth.as_deref(),
        )
        .await;
        expect_401(what, resp, code).await;
    }
    assert_eq!(
        upstream.count(),
        0,
        "upstream saw refused requests: {:?}",
        upstream.requests()
    );
}

#[tokio::test]
async fn permissions_decide_read_and_write() {
    let upstream = Upstream::start();
    let reader = TestToken::read("reader");
    let writer = TestToken::write("writer");
    let proxy = Setup::new(&upstream.url())
        .with_tokens(&[&reader, &writer])
        .start()
        .await;
    let client = client();

    for method in [
        reqwest::Method::PUT,
        reqwest::Method::POST,
        reqwest::Method::DELETE,
    ] {
        let resp = client
            .request(method.clone(), proxy.url("/packages/x.tar.gz"))
            .header("authorization", reader.bearer())
            .body("payload")
            .send()
            .await
            .expect("send");
        expect_refusal(&format!("read token {method}"), resp, 403, "forbidden").await;
    }
    assert_eq!(upstream.count(), 0, "forbidden writes reached upstream");

    let resp = client
        .put(proxy.url("/packages/x.tar.gz"))
        .header("authorization", writer.bearer())
        .body("payload")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200, "write token PUT");
    let json: Value = resp.json().await.expect("upstream JSON");
    assert_eq!(json["len"], 7);
    assert_eq!(json["sha256"], sha256_hex(b"payload"));

    // write implies read
    let resp = get(
        &client,
        proxy.url("/packages/x.tar.gz"),
        Some(&writer.bearer()),
    )
    .await;
    expect_hello("write token GET", resp, "/packages/x.tar.gz").await;
    let resp = get(&client, proxy.url("/packages/y"), Some(&reader.bearer())).await;
    expect_hello("read token GET", resp, "/packages/y").await;
    assert_eq!(upstream.count(), 3);
}

#[tokio::test]
async fn routes_narrow_the_token_on_the_normalized_path() {
    let upstream = Upstream::start();
    let scoped = TestToken::builder("acme-reader")
        .route("/p2/acme/*", "read")
        .build();
    let proxy = Setup::new(&upstream.url())
        .with_tokens(&[&scoped])
        .start()
        .await;
    let auth = scoped.bearer();
    let headers = [("Authorization", auth.as_str())];
    let addr = proxy.setup.listen;

    let inside = raw_request(addr, "GET", "/p2/acme/x", &headers).await;
    assert_eq!(inside.status, 200, "inside the route: {}", inside.text());
    assert_eq!(inside.text(), "hello /p2/acme/x");

    for target in [
        "/p2/other/x",
        "/p2/acme-evil/x",
        "/p2/acme/../other/x",
        "/p2/x",
    ] {
        let resp = raw_request(addr, "GET", target, &headers).await;
        expect_raw_refusal(&format!("GET {target}"), &resp, 403, "forbidden");
    }
    let resp = raw_request(addr, "PUT", "/p2/acme/x", &headers).await;
    expect_raw_refusal("PUT inside a read route", &resp, 403, "forbidden");

    // %61 is an encoded unreserved 'a': decoded, allowed and forwarded decoded.
    let before = upstream.count();
    let encoded = raw_request(addr, "GET", "/p2/%61cme/x", &headers).await;
    assert_eq!(encoded.status, 200, "/p2/%61cme/x: {}", encoded.text());
    assert_eq!(upstream.count(), before + 1);
    assert_eq!(upstream.last().expect("forwarded").uri, "/p2/acme/x");

    let uris: Vec<String> = upstream.requests().into_iter().map(|r| r.uri).collect();
    assert_eq!(
        uris,
        ["/p2/acme/x", "/p2/acme/x"],
        "only the allowed requests reach upstream"
    );
}

#[tokio::test]
async fn suspicious_paths_get_400_and_normalized_paths_are_forwarded() {
    let upstream = Upstream::start();
    let reader = TestToken::read("reader");
    let proxy = Setup::new(&upstream.url())
        .with_tokens(&[&reader])
        .start()
        .await;
    let auth = reader.bearer();
    let headers = [("Authorization", auth.as_str())];
    let addr = proxy.setup.listen;

    for target in [
        "/a/%2f/b",
        "/a/%2F/b",
        "/a/%5c/b",
        "/a/%5C/b",
        "/a/%00/b",
        "/a/%zz/b",
        "/a/b%2",
        "/../etc/passwd",
        "/a/../../etc/passwd",
    ] {
        let resp = raw_request(addr, "GET", target, &headers).await;
        expect_raw_refusal(&format!("GET {target}"), &resp, 400, "bad_path");
    }
    assert_eq!(
        upstream.count(),
        0,
        "bad paths reached upstream: {:?}",
        upstream.requests()
    );

    let resp = raw_request(addr, "GET", "/a/./b//c/../d?x=1&y=%41", &headers).await;
    assert_eq!(resp.status, 200, "normalizable path: {}", resp.text());
    assert_eq!(resp.text(), "hello /a/b/d");
    assert_eq!(upstream.last().expect("forwarded").uri, "/a/b/d?x=1&y=%41");
}

#[tokio::test]
async fn upstream_sees_identity_headers_but_no_credentials() {
    let upstream = Upstream::start();
    let reader = TestToken::read("identity-reader");
    let proxy = Setup::new(&upstream.url())
        .with_tokens(&[&reader])
        .start()
        .await;
    let client = client();

    for (label, auth) in [
        ("bearer", reader.bearer()),
        ("basic", basic("token", &reader.token)),
    ] {
        let path = format!("/identity/{label}");
        let resp = client
            .get(proxy.url(&path))
            .header("authorization", &auth)
            .header("x-tollgate-token-id", "spoofed")
            .header("x-tollgate-token-name", "spoofed-name")
            .header("x-tollgate-anything", "client-chosen")
            .send()
            .await
            .expect("send");
        expect_hello(label, resp, &path).await;
        let seen = upstream.find(&path).expect("forwarded");
        assert!(
            seen.header_all("authorization").is_empty(),
            "{label}: upstream saw Authorization"
        );
        assert_eq!(
            seen.header_all("x-tollgate-token-id"),
            [reader.id.as_str()],
            "{label}"
        );
        assert_eq!(
            seen.header_all("x-tollgate-token-name"),
            [reader.name.as_str()],
            "{label}"
        );
        assert!(
            seen.header_all("x-tollgate-anything").is_empty(),
            "{label}: client X-Tollgate-* header reached upstream"
        );
        let xff = seen.header("x-forwarded-for").unwrap_or_default();
        assert!(
            xff.contains("127.0.0.1"),
            "{label}: X-Forwarded-For {xff:?}"
        );
        assert_eq!(
            seen.header("x-forwarded-proto").as_deref(),
            Some("http"),
            "{label}"
        );
        assert_eq!(
            seen.header("x-forwarded-host").as_deref(),
            Some(proxy.setup.listen.to_string().as_str()),
            "{label}: X-Forwarded-Host is the client's Host"
        );
        assert_eq!(
            seen.header("host").as_deref(),
            Some(upstream.addr.to_string().as_str()),
            "{label}: Host is the upstream's"
        );
    }
}

#[tokio::test]
async fn whoami_answers_without_reaching_upstream() {
    let upstream = Upstream::start();
    let scoped = TestToken::builder("whoami-user")
        .permission("write")
        .route("/releases", "write")
        .description("used by the whoami test")
        .build();
    let proxy = Setup::new(&upstream.url())
        .with_tokens(&[&scoped])
        .start()
        .await;
    let client = client();

    let resp = get(
        &client,
        proxy.url("/_tollgate/whoami"),
        Some(&scoped.bearer()),
    )
    .await;
    assert_eq!(resp.status(), 200, "whoami with a token");
    let json: Value = resp.json().await.expect("whoami JSON");
    assert_eq!(json["id"], scoped.id.as_str(), "{json}");
    assert_eq!(json["name"], scoped.name.as_str(), "{json}");
    assert_eq!(json["permission"], "write", "{json}");
    assert_eq!(json["description"], "used by the whoami test", "{json}");
    assert_eq!(
        json["routes"],
        json!([{"path": "/releases", "access": "write"}]),
        "{json}"
    );

    let resp = get(&client, proxy.url("/_tollgate/whoami"), None).await;
    expect_401("whoami without a token", resp, "credentials_missing").await;
    assert_eq!(upstream.count(), 0, "whoami reached upstream");
}

/// A cargo `config.json` read whole: status, headers, body.
async fn fetch_config(
    client: &reqwest::Client,
    proxy: &Tollgate,
    method: reqwest::Method,
    query: &str,
    auth: &str,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let resp = client
        .request(
            method.clone(),
            proxy.url(&format!("/index/config.json{query}")),
        )
        .header("authorization", auth)
        .header("accept-encoding", "gzip, br")
        .header("if-none-match", "\"v1\"")
        .header("if-modified-since", "Wed, 21 Oct 2015 07:28:00 GMT")
        .header("range", "bytes=0-9")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} config.json{query}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.expect("config.json body").to_vec();
    (status, headers, body)
}

#[tokio::test]
async fn cargo_config_json_says_auth_required_through_the_upstream_pool() {
    let upstream = Upstream::start();
    let reader = TestToken::read("cargo-reader");
    let proxy = Setup::new(&upstream.url())
        .set("upstream.cargo_index", json!("/index/"))
        .with_tokens(&[&reader])
        .start()
        .await;
    let client = client();
    let auth = reader.bearer();
    let mut want: Value = serde_json::from_str(CARGO_CONFIG).expect("test config");
    want["auth-required"] = json!(true);

    // Fetched twice, one after the other (a plain and a chunked upstream answer): rewritten,
    // framed consistently, and over one upstream connection taken back into the pool.
    for query in ["", "?chunked"] {
        let (status, headers, body) =
            fetch_config(&client, &proxy, reqwest::Method::GET, query, &auth).await;
        assert_eq!(status, 200, "config.json{query}");
        let got: Value = serde_json::from_slice(&body).expect("config.json is JSON");
        assert_eq!(got, want, "config.json{query}");
        // Fields keep their order; the flag comes last.
        let text = String::from_utf8(body.clone()).expect("UTF-8");
        assert!(text.starts_with(r#"{"dl":"#) && text.ends_with(r#""auth-required":true}"#));
        // The rewritten length is not known when the head goes out: chunked, never the
        // upstream's (shorter) Content-Length.
        if let Some(length) = headers.get("content-length") {
            assert_eq!(length.to_str().unwrap(), body.len().to_string(), "{query}");
        }
        assert_eq!(
            headers
                .get("transfer-encoding")
                .map(|v| v.to_str().unwrap()),
            Some("chunked"),
            "config.json{query}"
        );
        assert!(headers.contains_key("x-ratelimit-limit"), "{query}");
    }
    let seen: Vec<Recorded> = upstream
        .requests()
        .into_iter()
        .filter(|r| r.uri.starts_with("/index/config.json"))
        .collect();
    assert_eq!(seen.len(), 2);
    for r in &seen {
        for name in [
            "accept-encoding",
            "if-none-match",
            "if-modified-since",
            "range",
        ] {
            assert!(
                r.header(name).is_none(),
                "{name} reached the upstream: {r:?}"
            );
        }
        assert!(r.header("authorization").is_none());
        assert_eq!(
            r.header("x-tollgate-token-id").as_deref(),
            Some(reader.id.as_str())
        );
    }
    assert!(seen[0].peer.is_some());
    assert_eq!(
        seen[0].peer, seen[1].peer,
        "the second config.json did not reuse the upstream connection"
    );

    // HEAD: the upstream is asked for a HEAD; no body, no (wrong) length.
    let (status, headers, body) =
        fetch_config(&client, &proxy, reqwest::Method::HEAD, "", &auth).await;
    assert_eq!(status, 200);
    assert!(body.is_empty());
    assert!(!headers.contains_key("content-length"), "{headers:?}");
    assert_eq!(upstream.last().expect("forwarded").method, "HEAD");

    // Not a plain 200: passed through as the upstream sent it.
    let (status, _, body) =
        fetch_config(&client, &proxy, reqwest::Method::GET, "?missing", &auth).await;
    assert_eq!((status, &body[..]), (404, &b"no such index"[..]));
    let (status, headers, body) =
        fetch_config(&client, &proxy, reqwest::Method::GET, "?gzip", &auth).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-encoding"], "gzip");
    assert_eq!(&body[..], b"\x1f\x8b not really gzip");

    // Too large to rewrite, by its Content-Length: 502 before anything is sent.
    let (status, _, body) =
        fetch_config(&client, &proxy, reqwest::Method::GET, "?large", &auth).await;
    assert_eq!(status, 502, "{}", String::from_utf8_lossy(&body));
    let refusal: Value = serde_json::from_slice(&body).expect("a JSON refusal");
    assert_eq!(refusal["error"], "upstream_unavailable");
    // Chunked, past the limit: the same 502 while the head is not written yet, else the
    // connection is closed without a complete answer.
    let sent = client
        .get(proxy.url("/index/config.json?large-chunked"))
        .header("authorization", &auth)
        .send()
        .await;
    if let Ok(resp) = sent {
        let status = resp.status().as_u16();
        let body = resp.bytes().await;
        match status {
            502 => {
                let refusal: Value = serde_json::from_slice(&body.expect("a whole refusal"))
                    .expect("a JSON refusal");
                assert_eq!(refusal["error"], "upstream_unavailable");
            }
            200 => assert!(body.is_err(), "a cut-off body read as complete"),
            other => panic!("large chunked config.json: {other}"),
        }
    }
    proxy
        .wait_for_audit("the large chunked config.json", |r| {
            field_str(r, "path").as_deref() == Some("/index/config.json")
                && field_str(r, "outcome").as_deref() == Some("upstream_unavailable")
        })
        .await;
}

/// RSS growth during a transfer: the peak (VmHWM) if it rose during the transfer, else the
/// current RSS difference.
fn rss_growth_kib(rss_before: u64, hwm_before: u64, proxy: &Tollgate) -> u64 {
    let hwm_after = proxy.peak_rss_kib();
    if hwm_after > hwm_before {
        hwm_after.saturating_sub(rss_before)
    } else {
        proxy.rss_kib().saturating_sub(rss_before)
    }
}

const MAX_RSS_GROWTH_KIB: u64 = 25 * 1024;

/// A store (or a CDN in front of it) may send an informational answer (`103 Early Hints`)
/// before the `200` of `config.json`: the `200` is still the one rewritten.
#[tokio::test]
async fn cargo_config_json_is_rewritten_after_an_informational_answer() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the raw upstream");
    let addr = listener.local_addr().expect("its address");
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 103 Early Hints\r\nLink: </index/1/a>; rel=preload\r\n\r\n\
                     HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{CARGO_CONFIG}",
                    CARGO_CONFIG.len()
                );
                let _ = conn.write_all(answer.as_bytes()).await;
            });
        }
    });
    let reader = TestToken::read("cargo-reader");
    let proxy = Setup::new(&format!("http://{addr}"))
        .set("upstream.cargo_index", json!("/index/"))
        .with_tokens(&[&reader])
        .start()
        .await;
    let (status, _, body) = fetch_config(
        &client(),
        &proxy,
        reqwest::Method::GET,
        "",
        &reader.bearer(),
    )
    .await;
    assert_eq!(status, 200);
    let got: Value = serde_json::from_slice(&body).expect("config.json is JSON");
    assert_eq!(got["auth-required"], json!(true), "{got}");
}

#[tokio::test]
async fn large_download_streams_intact_with_bounded_memory() {
    let upstream = Upstream::start();
    let reader = TestToken::read("downloader");
    let proxy = Setup::new(&upstream.url())
        .with_tokens(&[&reader])
        .start()
        .await;
    let client = client();
    // Warm up: verification, connection pools.
    let resp = get(&client, proxy.url("/warmup"), Some(&reader.bearer())).await;
    expect_hello("warmup", resp, "/warmup").await;

    let rss_before = proxy.rss_kib();
    let hwm_before = proxy.peak_rss_kib();
    let resp = client
        .get(proxy.url("/big"))
        .header("authorization", reader.bearer())
        .timeout(Duration::from_secs(180))
        .send()
        .await
        .expect("GET /big");
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut hasher = sha2::Sha256::new();
    let mut len = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("body chunk");
        len += chunk.len() as u64;
        hasher.update(&chunk);
    }
    assert_eq!(len, BIG_LEN, "downloaded length");
    assert_eq!(
        hex(&hasher.finalize()),
        pattern_sha256(BIG_LEN),
        "downloaded digest"
    );

    let growth = rss_growth_kib(rss_before, hwm_before, &proxy);
    println!("proxy RSS {rss_before} KiB before, growth {growth} KiB");
    assert!(
        growth < MAX_RSS_GROWTH_KIB,
        "proxy RSS grew by {growth} KiB while streaming {BIG_LEN} bytes (limit {MAX_RSS_GROWTH_KIB} KiB)"
    );
}

#[tokio::test]
async fn large_upload_streams_intact_with_bounded_memory() {
    let upstream = Upstream::start();
    let writer = TestToken::write("uploader");
    let proxy = Setup::new(&upstream.url())
        .with_tokens(&[&writer])
        .start()
        .await;
    let client = client();
    let resp = client
        .put(proxy.url("/warmup"))
        .header("authorization", writer.bearer())
        .body("warm")
        .send()
        .await
        .expect("warmup PUT");
    assert_eq!(resp.status(), 200, "warmup PUT");

    let rss_before = proxy.rss_kib();
    let hwm_before = proxy.peak_rss_kib();
    let resp = client
        .put(proxy.url("/upload/big.bin"))
        .header("authorization", writer.bearer())
        .header("content-length", BIG_LEN)
        .body(reqwest::Body::wrap_stream(pattern_stream(BIG_LEN)))
        .timeout(Duration::from_secs(180))
        .send()
        .await
        .expect("PUT big body");
    assert_eq!(resp.status(), 200, "big PUT");
    let json: Value = resp.json().await.expect("upstream JSON");
    let want_sha = pattern_sha256(BIG_LEN);
    assert_eq!(json["len"], BIG_LEN, "length the upstream received");
    assert_eq!(
        json["sha256"],
        want_sha.as_str(),
        "digest the upstream received"
    );
    let seen = upstream.find("/upload/big.bin").expect("upload forwarded");
    assert_eq!(seen.body_len, BIG_LEN);

    let growth = rss_growth_kib(rss_before, hwm_before, &proxy);
    println!("proxy RSS {rss_before} KiB before, growth {growth} KiB");
    assert!(
        growth < MAX_RSS_GROWTH_KIB,
        "proxy RSS grew by {growth} KiB while streaming a {BIG_LEN}-byte upload (limit {MAX_RSS_GROWTH_KIB} KiB)"
    );
}

#[tokio::test]
async fn unreachable_upstream_is_502() {
    let reader = TestToken::read("reader");
    let proxy = Setup::new(&down_upstream_url())
        .with_tokens(&[&reader])
        .start()
        .await;
    let resp = get(&client(), proxy.url("/anything"), Some(&reader.bearer())).await;
    expect_refusal("upstream down", resp, 502, "upstream_unavailable").await;
}

#[tokio::test]
async fn silent_upstream_is_504_after_read_timeout() {
    let slow = SlowUpstream::start();
    let reader = TestToken::read("reader");
    let proxy = Setup::new(&slow.url())
        .set("upstream.read_timeout", json!("1s"))
        .with_tokens(&[&reader])
        .start()
        .await;
    let started = Instant::now();
    let resp = client()
        .get(proxy.url("/never-answered"))
        .header("authorization", reader.bearer())
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .expect("a 504, not a client timeout");
    expect_refusal("silent upstream", resp, 504, "upstream_timeout").await;
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(10),
        "504 took {elapsed:?} with read_timeout 1s"
    );
}

#[tokio::test]
async fn concurrent_first_requests_verify_once() {
    let upstream = Upstream::start();
    let reader = TestToken::read("burst");
    let proxy = Setup::new(&upstream.url())
        .with_tokens(&[&reader])
        .start()
        .await;
    let ok_series = r#"tollgate_verifications_total{result="ok"}"#;
    let before = proxy.metric(ok_series).await;

    let client = client();
    let auth = reader.bearer();
    let requests = (0..32).map(|i| {
        let client = client.clone();
        let url = proxy.url(&format!("/burst/{i}"));
        let auth = auth.clone();
        async move {
            let resp = client
                .get(&url)
                .header("authorization", auth)
                .send()
                .await
                .expect("send");
            resp.status().as_u16()
        }
    });
    let statuses = futures_util::future::join_all(requests).await;
    assert!(statuses.iter().all(|&s| s == 200), "statuses: {statuses:?}");
    assert_eq!(upstream.count(), 32);

    let after = proxy.metric(ok_series).await;
    assert_eq!(
        after - before,
        1.0,
        "argon2 runs for 32 concurrent first requests with one token"
    );
}

#[tokio::test]
async fn replayed_wrong_secret_runs_argon2_once() {
    let upstream = Upstream::start();
    let victim = TestToken::builder("victim")
        .stored_secret("the real secret is something else")
        .build();
    let proxy = Setup::new(&upstream.url())
        .with_tokens(&[&victim])
        .start()
        .await;
    let wrong = r#"tollgate_verifications_total{result="wrong_secret"}"#;
    let ok = r#"tollgate_verifications_total{result="ok"}"#;
    let wrong_before = proxy.metric(wrong).await;
    let ok_before = proxy.metric(ok).await;

    let client = client();
    for i in 0..10 {
        let resp = get(&client, proxy.url("/replay"), Some(&victim.bearer())).await;
        expect_401(&format!("replay {i}"), resp, "token_invalid").await;
    }
    assert_eq!(
        proxy.metric(wrong).await - wrong_before,
        1.0,
        "argon2 runs for 10 replays of one wrong secret"
    );
    assert_eq!(proxy.metric(ok).await - ok_before, 0.0);
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn guessing_secrets_for_one_token_is_throttled() {
    let upstream = Upstream::start();
    let victim = TestToken::read("victim");
    let bystander = TestToken::read("bystander");
    let proxy = Setup::new(&upstream.url())
        .set(
            "verify.token_attempts",
            json!({"requests": 3, "period": "1m"}),
        )
        .with_tokens(&[&victim, &bystander])
        .start()
        .await;
    let wrong = r#"tollgate_verifications_total{result="wrong_secret"}"#;
    let client = client();

    // The real token's first use spends one of the id's 3 verifications, then is cached.
    let resp = get(&client, proxy.url("/a"), Some(&victim.bearer())).await;
    assert_eq!(resp.status(), 200);
    // Two guesses: well-formed tokens with the victim's id and new secrets, each verified.
    for i in 0..2 {
        let guess = tollgate::token::generate_with_id(&victim.id);
        let auth = format!("Bearer {}", guess.token.expose());
        let resp = get(&client, proxy.url("/guess"), Some(&auth)).await;
        expect_401(&format!("guess {i}"), resp, "token_invalid").await;
    }
    assert_eq!(proxy.metric(wrong).await, 2.0);

    // The budget is spent: the next new secret for this id is refused without argon2.
    let guess = tollgate::token::generate_with_id(&victim.id);
    let resp = get(
        &client,
        proxy.url("/guess"),
        Some(&format!("Bearer {}", guess.token.expose())),
    )
    .await;
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp
        .headers()
        .get("retry-after")
        .expect("Retry-After on a throttled verification")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "verification_throttled");
    assert_eq!(body["retry_after"], retry);
    assert_eq!(proxy.metric(wrong).await, 2.0, "no argon2 once throttled");

    // The cached real token keeps working, and other tokens are not affected.
    let resp = get(&client, proxy.url("/b"), Some(&victim.bearer())).await;
    assert_eq!(resp.status(), 200);
    let resp = get(&client, proxy.url("/c"), Some(&bystander.bearer())).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(upstream.count(), 2 + 1);
    proxy
        .wait_for_audit("the throttled request", |r| {
            field_str(r, "outcome").as_deref() == Some("verification_throttled")
        })
        .await;
}

#[tokio::test]
async fn logs_hold_audit_lines_and_no_secrets() {
    let upstream = Upstream::start();
    let reader = TestToken::read("log-reader");
    let writer = TestToken::write("log-writer");
    let custom = TestToken::builder("log-custom")
        .custom_secret("Log-Custom-S3cret-9f8e7d")
        .build();
    let wrong_secret = TestToken::builder("log-wrong")
        .stored_secret("stored-secret-differs")
        .build();
    let expired = TestToken::builder("log-expired")
        .expires_at("2020-01-01T00:00:00Z")
        .build();
    let scoped = TestToken::builder("log-scoped")
        .route("/p2/acme/*", "read")
        .build();
    let proxy = Setup::new(&upstream.url())
        .with_tokens(&[&reader, &writer, &custom, &wrong_secret, &expired, &scoped])
        .start()
        .await;
    let client = client();
    let unknown = unknown_token();
    let malformed = corrupt_checksum(&reader.token);
    let wrong_custom_password = "Wrong-Custom-Password-123xyz";

    let mut authorization_values: Vec<String> = Vec::new();
    // Every accepted form.
    for (label, auth, _) in credential_forms(&reader, &custom) {
        let path = format!("/logged/{label}");
        expect_hello(
            label,
            get(&client, proxy.url(&path), Some(&auth)).await,
            &path,
        )
        .await;
        authorization_values.push(auth);
    }
    // Refusals of every kind.
    let refused = [
        (format!("Bearer {malformed}"), 401),
        (basic("token", &malformed), 401),
        (wrong_secret.bearer(), 401),
        (format!("Bearer {unknown}"), 401),
        (basic(&custom.name, wrong_custom_password), 401),
        (expired.bearer(), 401),
        (reader.bearer(), 403), // PUT below
        (scoped.bearer(), 403), // outside its route
    ];
    for (i, (auth, status)) in refused.iter().enumerate() {
        let url = proxy.url(&format!("/p2/other/{i}"));
        let req = if i == 6 {
            client.put(&url).body("x")
        } else {
            client.get(&url)
        };
        let resp = req
            .header("authorization", auth)
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status().as_u16(), *status, "refusal {i}");
        authorization_values.push(auth.clone());
    }
    // Upload, whoami, bad path.
    let resp = client
        .put(proxy.url("/logged/upload"))
        .header("authorization", writer.bearer())
        .body("body")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    authorization_values.push(writer.bearer());
    let resp = get(
        &client,
        proxy.url("/_tollgate/whoami"),
        Some(&reader.bearer()),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let bad = raw_request(
        proxy.setup.listen,
        "GET",
        "/a/%2f/b",
        &[("Authorization", &reader.bearer())],
    )
    .await;
    assert_eq!(bad.status, 400);

    // The last successful request must be audited with the token id and every contract field.
    let record = proxy
        .wait_for_audit("GET /logged/bare", |r| {
            field_str(r, "token_id").as_deref() == Some(reader.id.as_str())
                && field_str(r, "path").is_some_and(|p| p.starts_with("/logged/bare"))
        })
        .await;
    for field in [
        "token_id",
        "token_name",
        "method",
        "path",
        "status",
        "outcome",
        "client",
        "duration_ms",
    ] {
        assert!(
            record.contains_key(field),
            "audit line lacks {field}: {record:?}"
        );
    }
    assert_eq!(
        field_str(&record, "token_name").as_deref(),
        Some(reader.name.as_str())
    );
    assert_eq!(field_str(&record, "method").as_deref(), Some("GET"));
    assert_eq!(field_str(&record, "status").as_deref(), Some("200"));
    proxy
        .wait_for_audit("the custom-secret token", |r| {
            field_str(r, "token_id").as_deref() == Some(custom.id.as_str())
        })
        .await;
    proxy
        .wait_for_audit("the PUT by the writer", |r| {
            field_str(r, "token_id").as_deref() == Some(writer.id.as_str())
                && field_str(r, "method").as_deref() == Some("PUT")
        })
        .await;
    proxy
        .wait_for_audit("the 403 outside the route", |r| {
            field_str(r, "token_id").as_deref() == Some(scoped.id.as_str())
                && field_str(r, "status").as_deref() == Some("403")
        })
        .await;

    let logs = proxy.logs();
    let mut secrets: Vec<(String, String)> = vec![
        ("reader token".into(), reader.token.clone()),
        ("reader secret part".into(), reader.secret_part().to_owned()),
        ("writer token".into(), writer.token.clone()),
        ("writer secret part".into(), writer.secret_part().to_owned()),
        ("custom secret".into(), custom.token.clone()),
        ("wrong custom password".into(), wrong_custom_password.into()),
        ("wrong-secret token".into(), wrong_secret.token.clone()),
        ("expired token".into(), expired.token.clone()),
        ("scoped token".into(), scoped.token.clone()),
        ("unknown token".into(), unknown.clone()),
        ("malformed token".into(), malformed.clone()),
        ("malformed secret part".into(), malformed[17..49].to_owned()),
    ];
    for auth in &authorization_values {
        // The Basic base64 and the scheme-less value are as secret as the token.
        let value = auth.rsplit(' ').next().unwrap_or(auth).to_owned();
        secrets.push((format!("Authorization value {auth:.12}…"), value));
    }
    for (what, secret) in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "the log contains the {what}; log:\n{logs}"
        );
    }
}

const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// A line of `output` that mentions `file` and `field`.
fn problem_line<'a>(output: &'a str, file: &str, field: &str) -> Option<&'a str> {
    output
        .lines()
        .find(|line| line.contains(file) && line.contains(field))
}

fn bad_config(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("bad.yaml");
    std::fs::write(
        &path,
        "listen: 127.0.0.1:0\n\
         bogus_key: 1\n\
         upstream:\n  url: \"not a url\"\n  read_timeout: forever\n",
    )
    .expect("write bad config");
    path
}

fn assert_names_every_problem(what: &str, output: &str, file: &str) {
    for field in ["bogus_key", "read_timeout"] {
        assert!(
            problem_line(output, file, field).is_some(),
            "{what}: no `{file}: …{field}…` line; output:\n{output}"
        );
    }
    assert!(
        output
            .lines()
            .any(|l| l.contains(file) && l.contains("url") && !l.contains("read_timeout")),
        "{what}: no `{file}: upstream.url: …` line; output:\n{output}"
    );
}

#[test]
fn check_config_reports_every_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = bad_config(dir.path());
    let file = config.to_string_lossy().into_owned();
    let out = run_tollgate(
        &["check-config", "--config", &file],
        None,
        dir.path(),
        CLI_TIMEOUT,
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "check-config exit status; {out:?}"
    );
    assert_names_every_problem("check-config", &out.combined(), &file);

    // A good config passes.
    let setup = Setup::new("http://127.0.0.1:1");
    setup.write();
    let out = run_tollgate(
        &["check-config", "--config", &setup.config_str()],
        None,
        setup.dir.path(),
        CLI_TIMEOUT,
    );
    assert!(out.status.success(), "good config rejected: {out:?}");
    assert!(out.combined().contains("config OK"), "{out:?}");
}

/// Unknown keys are refused inside sections and rate-limit rules too, not only at the top.
#[test]
fn check_config_refuses_unknown_keys_in_sections() {
    let setup = Setup::new("http://127.0.0.1:9")
        .set("tokens.database", json!("none"))
        .set(
            "rate_limit",
            json!({"requests": 5, "period": "1h", "colour": "x"}),
        )
        .set(
            "verify.token_attempts",
            json!({"requests": 5, "period": "1m", "colour": "red"}),
        )
        .set("log.colour", json!("red"));
    setup.write();
    let file = setup.config_str();
    let out = run_tollgate(
        &["check-config", "--config", &file],
        None,
        setup.dir.path(),
        CLI_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let text = out.combined();
    assert!(
        text.contains("the configuration is refused (3 problems)"),
        "{text}"
    );
    for field in [
        "rate_limit.colour",
        "verify.token_attempts.colour",
        "log.colour",
    ] {
        let want = format!("{file}: {field}: unknown field");
        assert!(text.contains(&want), "missing {want:?} in:\n{text}");
    }
}

#[test]
fn serve_refuses_a_bad_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = bad_config(dir.path());
    let file = config.to_string_lossy().into_owned();
    let out = run_tollgate(&["serve", "--config", &file], None, dir.path(), CLI_TIMEOUT);
    assert_eq!(out.status.code(), Some(2), "serve exit status; {out:?}");
    assert_names_every_problem("serve", &out.stderr, &file);
}

#[test]
fn serve_refuses_a_broken_token_file() {
    let good = TestToken::read("good-entry");
    let bad_hash = TestToken::read("bad-hash-entry");
    let bad_permission = TestToken::read("bad-permission-entry");
    let mut bad_hash_entry = bad_hash.entry.clone();
    bad_hash_entry["hash"] = json!("not-a-phc-string");
    let mut bad_permission_entry = bad_permission.entry.clone();
    bad_permission_entry["permission"] = json!("superuser");

    for (broken, entry) in [
        (&bad_hash, bad_hash_entry),
        (&bad_permission, bad_permission_entry),
    ] {
        let yaml = serde_yaml_ng::to_string(&json!({"tokens": [good.entry.clone(), entry]}))
            .expect("token yaml");
        let setup = Setup::new("http://127.0.0.1:1").with_tokens_yaml(yaml);
        setup.write();
        let out = run_tollgate(
            &["serve", "--config", &setup.config_str()],
            None,
            setup.dir.path(),
            CLI_TIMEOUT,
        );
        let output = out.combined();
        assert!(
            !out.status.success() && out.status.code().is_some(),
            "{}: serve must exit non-zero; {out:?}",
            broken.name
        );
        let tokens_file = setup.tokens_path.to_string_lossy();
        assert!(
            output.contains(tokens_file.as_ref()),
            "{}: the error does not name {tokens_file}; output:\n{output}",
            broken.name
        );
        // The broken entry is the second one: named by its name, its id or its index.
        assert!(
            output.contains(&broken.name)
                || output.contains(&broken.id)
                || output.contains("tokens[1]"),
            "{}: the error names neither the entry's name, its id ({}) nor tokens[1]; \
             output:\n{output}",
            broken.name,
            broken.id
        );
    }
}

#[tokio::test]
async fn cli_token_hash_entry_works_through_the_proxy() {
    let upstream = Upstream::start();
    let setup = Setup::new(&upstream.url());
    setup.write();
    let config = setup.config_str();
    let cwd = setup.dir.path().to_owned();

    let generated = tokio::task::spawn_blocking({
        let (config, cwd) = (config.clone(), cwd.clone());
        move || {
            run_tollgate(
                &[
                    "token",
                    "hash",
                    "--name",
                    "x",
                    "--permission",
                    "read",
                    "--config",
                    &config,
                ],
                None,
                &cwd,
                CLI_TIMEOUT,
            )
        }
    })
    .await
    .expect("join");
    assert!(
        generated.status.success(),
        "token hash failed: {generated:?}"
    );
    assert!(
        generated.stdout.starts_with("  - id: "),
        "stdout is not a token-file list entry: {:?}",
        generated.stdout
    );
    assert!(
        generated.stdout.contains("$argon2id$v=19$m=64,t=1,p=1$"),
        "hash does not use the config's hashing params: {}",
        generated.stdout
    );
    let token = generated
        .stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .unwrap_or_else(|| panic!("no `token: …` line on stderr: {:?}", generated.stderr))
        .trim()
        .to_owned();
    assert!(
        token.starts_with("tok_") && token.len() == 55,
        "token {token:?}"
    );
    assert!(
        !generated.stdout.contains(&token),
        "the token itself is on stdout (it would land in the token file)"
    );

    let custom_secret = "Stdin-Custom-S3cret-from-cli";
    let custom = tokio::task::spawn_blocking({
        let (config, cwd) = (config.clone(), cwd.clone());
        move || {
            run_tollgate(
                &[
                    "token",
                    "hash",
                    "--name",
                    "y",
                    "--permission",
                    "read",
                    "--secret",
                    "-",
                    "--config",
                    &config,
                ],
                Some(custom_secret),
                &cwd,
                CLI_TIMEOUT,
            )
        }
    })
    .await
    .expect("join");
    assert!(
        custom.status.success(),
        "token hash --secret - failed: {custom:?}"
    );
    assert!(custom.stdout.starts_with("  - id: "), "{custom:?}");
    assert!(
        !custom.stdout.contains(custom_secret) && !custom.stderr.contains(custom_secret),
        "the custom secret is echoed: {custom:?}"
    );

    let mut file = String::from("tokens:\n");
    for entry in [&generated.stdout, &custom.stdout] {
        file.push_str(entry);
        if !entry.ends_with('\n') {
            file.push('\n');
        }
    }
    let proxy = setup.with_tokens_yaml(file).start().await;
    let client = client();

    let resp = get(
        &client,
        proxy.url("/via-cli"),
        Some(&format!("Bearer {token}")),
    )
    .await;
    expect_hello("CLI-generated token", resp, "/via-cli").await;
    assert_eq!(
        upstream
            .find("/via-cli")
            .expect("forwarded")
            .header("x-tollgate-token-name")
            .as_deref(),
        Some("x")
    );
    let resp = get(
        &client,
        proxy.url("/via-cli-custom"),
        Some(&basic("y", custom_secret)),
    )
    .await;
    expect_hello("CLI custom-secret token", resp, "/via-cli-custom").await;
    let resp = client
        .put(proxy.url("/via-cli"))
        .header("authorization", format!("Bearer {token}"))
        .body("x")
        .send()
        .await
        .expect("send");
    expect_refusal("CLI read token PUT", resp, 403, "forbidden").await;
}

#[tokio::test]
async fn the_log_filter_can_turn_audit_lines_off() {
    let upstream = Upstream::start();
    let reader = TestToken::read("quiet-reader");
    let proxy = Setup::new(&upstream.url())
        .with_tokens(&[&reader])
        .set("log.level", json!("info,audit=off"))
        .start()
        .await;
    let client = client();
    expect_hello(
        "quiet",
        get(&client, proxy.url("/quiet/a"), Some(&reader.bearer())).await,
        "/quiet/a",
    )
    .await;
    // Lines reach the log in order: once an info line logged after the request is there, an
    // audit line of the request would be too.
    proxy.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !proxy.logs().contains("SIGHUP: reloading the token set") {
        assert!(
            Instant::now() < deadline,
            "no SIGHUP line within 10 s; log:\n{}",
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        proxy.audit_records(),
        Vec::new(),
        "audit lines despite audit=off; log:\n{}",
        proxy.logs()
    );
}

/// A client that gives up on a download is normal (cancelled installs, parallel fetches): it is
/// counted in `tollgate_client_aborts_total`, and neither pingora's ERROR line (with its source
/// path) nor any warning is logged for it.
#[tokio::test]
async fn a_client_that_aborts_a_download_is_counted_not_logged_as_an_error() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = Upstream::start();
    let reader = TestToken::read("reader");
    let tg = Setup::new(&upstream.url())
        .with_tokens(&[&reader])
        .start()
        .await;
    for _ in 0..3 {
        let mut conn = tokio::net::TcpStream::connect(tg.setup.listen)
            .await
            .expect("connect");
        let head = format!(
            "GET /big HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\r\n",
            reader.bearer()
        );
        conn.write_all(head.as_bytes()).await.expect("send");
        let mut got = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        while got < 512 * 1024 {
            let n = conn.read(&mut buf).await.expect("read");
            assert!(n > 0, "the download ended early");
            got += n;
        }
        drop(conn); // gone, 50 MiB not read
    }
    let counted = poll_until(Duration::from_secs(10), || async {
        tg.metric("tollgate_client_aborts_total").await >= 3.0
    })
    .await;
    assert!(
        counted.is_some(),
        "aborts counted: {}; log:\n{}",
        tg.metric("tollgate_client_aborts_total").await,
        tg.logs()
    );
    // The audit line still records each aborted request (info lines are written in batches).
    let audited = |logs: &str| {
        logs.lines()
            .filter(|l| l.contains("\"path\":\"/big\"") && l.contains("client_error"))
            .count()
    };
    let all_audited = poll_until(Duration::from_secs(5), || async {
        audited(&tg.logs()) == 3
    })
    .await;
    let logs = tg.logs();
    assert!(all_audited.is_some(), "three audit lines:\n{logs}");
    let loud: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("\"level\":\"ERROR\"") || l.contains("\"level\":\"WARN\""))
        .collect();
    assert!(loud.is_empty(), "client aborts logged loudly: {loud:#?}");
    assert!(
        !logs.contains("Fail to proxy"),
        "pingora's own line:\n{logs}"
    );
}
