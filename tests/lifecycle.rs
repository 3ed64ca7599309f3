//! Token lifecycle through the real binary: the admin REST API and the token CLI on
//! the embedded SQLite database, the bootstrap token, expiry, last-use times across a graceful
//! restart, and the refusals of the admin API.
//!
//! Propagation times are printed (`cargo test --test lifecycle -- --nocapture` shows them).

mod common;

use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use common::*;
use serde_json::{json, Value};

/// A proxy with the bootstrap token and the given file tokens (default SQLite database in the
/// temp dir).
async fn start(upstream: &Upstream, files: &[&TestToken]) -> Tollgate {
    Setup::new(&upstream.url())
        .with_tokens(files)
        .with_bootstrap()
        .start()
        .await
}

/// Poll `GET path` with `auth` until the status is `want`; returns how long it took.
async fn wait_status(
    proxy: &Tollgate,
    client: &reqwest::Client,
    path: &str,
    auth: &str,
    want: u16,
    timeout: Duration,
) -> Option<Duration> {
    let url = proxy.url(path);
    poll_until(timeout, || async {
        http_get(client, &url, Some(auth)).await.status == want
    })
    .await
}

/// Two timestamps are the same instant at millisecond precision (the stored precision).
fn assert_same_ms(a: &Value, b: &Value, what: &str) {
    assert_eq!(
        parse_time(a, what).timestamp_millis(),
        parse_time(b, what).timestamp_millis(),
        "{what}: {a} vs {b}"
    );
}

#[tokio::test]
async fn api_created_token_works_through_the_proxy_at_once() {
    let upstream = Upstream::start();
    let proxy = start(&upstream, &[]).await;
    let client = client();

    let before = Utc::now();
    let (record, token) = proxy
        .create_token(
            &boot(),
            json!({"name": "ci-reader", "description": "CI pipeline", "permission": "read"}),
        )
        .await;
    let created = Instant::now();
    let resp = http_get(&client, &proxy.url("/pkg/one"), Some(&bearer(&token))).await;
    let first_use = created.elapsed();
    assert_eq!(
        resp.status, 200,
        "a token created through the API must work on the very next request; got {} {}",
        resp.status, resp.body
    );
    assert_eq!(resp.body, "hello /pkg/one");
    println!("[lifecycle] API create → first 200 through the proxy: {first_use:?}");

    let id = record["id"].as_str().expect("id").to_owned();
    assert_eq!(record["name"], "ci-reader");
    assert_eq!(record["description"], "CI pipeline");
    assert_eq!(record["permission"], "read");
    assert_eq!(record["routes"], json!([]));
    assert_eq!(record["source"], "database");
    assert_eq!(record["expires_at"], Value::Null, "default expiry is never");
    assert_eq!(record["last_used_at"], Value::Null);
    assert_eq!(record["rate_limit"], Value::Null);
    let created_at = parse_time(&record["created_at"], "created_at");
    assert!(
        created_at >= before - chrono::Duration::seconds(1)
            && created_at <= Utc::now() + chrono::Duration::seconds(1),
        "created_at {created_at} is not now"
    );
    assert_eq!(
        upstream
            .find("/pkg/one")
            .expect("forwarded")
            .header("x-tollgate-token-id")
            .as_deref(),
        Some(id.as_str())
    );
    // Every credential form of a generated token works for it.
    let resp = http_get(
        &client,
        &proxy.url("/pkg/two"),
        Some(&basic("token", &token)),
    )
    .await;
    assert_eq!(resp.status, 200, "Basic token:T: {}", resp.body);

    // Show by id and by name: the record, without the token or hash.
    for key in [id.as_str(), "ci-reader"] {
        let resp = proxy
            .api("GET", &format!("/api/v1/tokens/{key}"), Some(&boot()), None)
            .await;
        let shown = resp.expect(200);
        assert_no_hash("GET token", &resp.text);
        assert!(
            !resp.text.contains(&token) && shown.get("token").is_none(),
            "GET /api/v1/tokens/{key} shows the token: {}",
            resp.text
        );
        assert_eq!(shown["id"], id.as_str());
        assert_eq!(shown["name"], "ci-reader");
        for field in [
            "description",
            "permission",
            "routes",
            "created_at",
            "expires_at",
            "last_used_at",
            "rate_limit",
            "source",
        ] {
            assert!(
                shown.get(field).is_some(),
                "record lacks {field}: {}",
                resp.text
            );
        }
    }
    let list = proxy
        .api("GET", "/api/v1/tokens", Some(&boot()), None)
        .await;
    let listed = list.expect(200);
    let names: Vec<&str> = listed["tokens"]
        .as_array()
        .expect("tokens array")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(names.contains(&"ci-reader"), "list: {}", list.text);
}

#[tokio::test]
async fn the_201_answer_is_the_stored_record() {
    let upstream = Upstream::start();
    let proxy = start(&upstream, &[]).await;
    let (created, _) = proxy
        .create_token(
            &boot(),
            json!({"name": "consistent", "permission": "read", "expires_in": "30d"}),
        )
        .await;
    let id = created["id"].as_str().expect("id");
    let shown = proxy
        .api("GET", &format!("/api/v1/tokens/{id}"), Some(&boot()), None)
        .await
        .expect(200);
    // Creation date and expiry cannot change after creation: what the 201 answer said is what
    // every later read says, to the same instant.
    for field in ["created_at", "expires_at"] {
        assert_eq!(
            parse_time(&created[field], field),
            parse_time(&shown[field], field),
            "{field} in the 201 answer ({}) is not the stored {field} ({})",
            created[field],
            shown[field]
        );
    }
    assert_eq!(created, shown, "the 201 record vs GET");
}

#[tokio::test]
async fn expiry_choices_set_expires_at() {
    let upstream = Upstream::start();
    let proxy = start(&upstream, &[]).await;
    for (choice, days) in [("30d", Some(30)), ("90d", Some(90)), ("365d", Some(365))] {
        let now = Utc::now();
        let (record, _) = proxy.create_token(&boot(), json!({"name": format!("exp-{choice}"), "permission": "read", "expires_in": choice}),
        )
        .await;
        let at = parse_time(&record["expires_at"], choice);
        let want = now + chrono::Duration::days(days.expect("days"));
        assert!(
            (at - want).num_seconds().abs() <= 60,
            "expires_in {choice}: expires_at {at}, want about {want}"
        );
    }
    let (record, _) = proxy
        .create_token(
            &boot(),
            json!({"name": "exp-never", "permission": "read", "expires_in": "never"}),
        )
        .await;
    assert_eq!(record["expires_at"], Value::Null);
    let date = "2099-06-01T12:00:00Z";
    let (record, _) = proxy
        .create_token(
            &boot(),
            json!({"name": "exp-date", "permission": "read", "expires_in": date}),
        )
        .await;
    assert_eq!(
        parse_time(&record["expires_at"], "date"),
        parse_time(&json!(date), "want")
    );
}

#[tokio::test]
async fn cli_writes_while_the_server_runs_take_effect_within_a_second() {
    let upstream = Upstream::start();
    let proxy = start(&upstream, &[]).await;
    let client = client();

    // create
    let out = proxy
        .cli(
            &[
                "token",
                "create",
                "--name",
                "cli-made",
                "--permission",
                "read",
                "--output",
                "json",
            ],
            None,
        )
        .await;
    let written = Instant::now();
    assert!(out.status.success(), "token create failed: {out:?}");
    let token = cli_token(&out);
    let record: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout of --output json is not JSON ({e}): {out:?}"));
    assert_eq!(record["name"], "cli-made");
    assert_eq!(record["source"], "database");
    assert!(
        !out.stdout.contains(&token),
        "the token is on stdout: {out:?}"
    );
    assert_no_hash("CLI create output", &out.combined());
    let took = wait_status(
        &proxy,
        &client,
        "/cli/created",
        &bearer(&token),
        200,
        Duration::from_secs(1),
    )
    .await;
    let took = took.unwrap_or_else(|| {
        panic!(
            "a token created by the CLI while the server runs did not work within 1 s (waited \
             {:?} since the CLI exited)",
            written.elapsed()
        )
    });
    println!("[lifecycle] CLI create → first 200: {took:?}");

    // custom secret from stdin
    let secret = "Cli-Custom-S3cret-from-stdin";
    let out = proxy
        .cli(
            &[
                "token",
                "create",
                "--name",
                "cli-custom",
                "--permission",
                "read",
                "--secret",
                "-",
                "--output",
                "json",
            ],
            Some(secret),
        )
        .await;
    assert!(out.status.success(), "token create --secret -: {out:?}");
    assert!(
        !out.combined().contains(secret),
        "the custom secret is echoed: {out:?}"
    );
    let took = wait_status(
        &proxy,
        &client,
        "/cli/custom",
        &basic("cli-custom", secret),
        200,
        Duration::from_secs(1),
    )
    .await
    .expect("custom-secret token created by the CLI works within 1 s (Basic name:secret)");
    println!("[lifecycle] CLI create (custom secret) → first 200: {took:?}");

    // regenerate: old refused, new accepted
    let out = proxy
        .cli(
            &["token", "regenerate", "cli-made", "--output", "json"],
            None,
        )
        .await;
    assert!(out.status.success(), "token regenerate failed: {out:?}");
    let new_token = cli_token(&out);
    assert_ne!(new_token, token);
    let took = wait_status(
        &proxy,
        &client,
        "/cli/regen",
        &bearer(&token),
        401,
        Duration::from_secs(1),
    )
    .await
    .expect("the old secret is refused within 1 s of a CLI regenerate");
    println!("[lifecycle] CLI regenerate → old token 401: {took:?}");
    let resp = http_get(&client, &proxy.url("/cli/regen"), Some(&bearer(&new_token))).await;
    assert_eq!(resp.status, 200, "regenerated token: {}", resp.body);

    // modify: rights change within a second
    let out = proxy
        .cli(
            &[
                "token",
                "modify",
                "cli-made",
                "--route",
                "/only/**=read",
                "--output",
                "json",
            ],
            None,
        )
        .await;
    assert!(out.status.success(), "token modify failed: {out:?}");
    let took = wait_status(
        &proxy,
        &client,
        "/cli/regen",
        &bearer(&new_token),
        403,
        Duration::from_secs(1),
    )
    .await
    .expect("a CLI route change applies within 1 s");
    println!("[lifecycle] CLI modify routes → 403 outside the route: {took:?}");
    let resp = http_get(&client, &proxy.url("/only/x"), Some(&bearer(&new_token))).await;
    assert_eq!(resp.status, 200, "inside the new route: {}", resp.body);

    // revoke
    let out = proxy.cli(&["token", "revoke", "cli-made"], None).await;
    assert!(out.status.success(), "token revoke failed: {out:?}");
    let took = wait_status(
        &proxy,
        &client,
        "/only/x",
        &bearer(&new_token),
        401,
        Duration::from_secs(1),
    )
    .await
    .expect("a token revoked by the CLI is refused within 1 s");
    println!("[lifecycle] CLI revoke → 401: {took:?}");

    // unknown names are clear errors
    let out = proxy.cli(&["token", "show", "no-such-token"], None).await;
    assert!(
        !out.status.success() && out.stderr.contains("no-such-token"),
        "token show of an unknown name must fail naming it: {out:?}"
    );
}

#[tokio::test]
async fn regenerate_refuses_the_old_secret_on_the_next_request() {
    let upstream = Upstream::start();
    let proxy = start(&upstream, &[]).await;
    let client = client();
    let (record, old) = proxy
        .create_token(&boot(), json!({"name": "rotating", "permission": "read"}))
        .await;
    let id = record["id"].as_str().expect("id");
    for _ in 0..2 {
        // warm the verification cache
        let resp = http_get(&client, &proxy.url("/r"), Some(&bearer(&old))).await;
        assert_eq!(resp.status, 200, "before regenerate: {}", resp.body);
    }

    let resp = proxy
        .api(
            "POST",
            &format!("/api/v1/tokens/{id}/regenerate"),
            Some(&boot()),
            None,
        )
        .await;
    let body = resp.expect(200);
    assert_no_hash("regenerate body", &resp.text);
    let new = body["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token in the regenerate answer: {}", resp.text))
        .to_owned();
    assert!(
        new.starts_with(&format!("tok_{id}_")),
        "the id stays: {new}"
    );
    assert_ne!(new, old);
    assert_same_ms(
        &body["created_at"],
        &record["created_at"],
        "created_at after regenerate",
    );

    let resp = http_get(&client, &proxy.url("/r"), Some(&bearer(&old))).await;
    assert_eq!(
        (resp.status, resp.error_code().as_deref()),
        (401, Some("token_invalid")),
        "the old secret on the very next request: {}",
        resp.body
    );
    let resp = http_get(&client, &proxy.url("/r"), Some(&bearer(&new))).await;
    assert_eq!(resp.status, 200, "the new token: {}", resp.body);
    // The old one stays refused (not a one-off).
    let resp = http_get(&client, &proxy.url("/r"), Some(&basic("token", &old))).await;
    assert_eq!(resp.status, 401, "old secret again: {}", resp.body);
}

#[tokio::test]
async fn delete_revokes_on_the_next_request_even_when_cached() {
    let upstream = Upstream::start();
    let proxy = start(&upstream, &[]).await;
    let client = client();
    let (record, token) = proxy
        .create_token(&boot(), json!({"name": "doomed", "permission": "read"}))
        .await;
    let id = record["id"].as_str().expect("id");
    for _ in 0..3 {
        let resp = http_get(&client, &proxy.url("/d"), Some(&bearer(&token))).await;
        assert_eq!(resp.status, 200, "before delete: {}", resp.body);
    }
    let resp = proxy
        .api(
            "DELETE",
            &format!("/api/v1/tokens/{id}"),
            Some(&boot()),
            None,
        )
        .await;
    assert!(
        resp.status == 204 || resp.status == 200,
        "DELETE: status {} body {}",
        resp.status,
        resp.text
    );
    let resp = http_get(&client, &proxy.url("/d"), Some(&bearer(&token))).await;
    assert_eq!(
        (resp.status, resp.error_code().as_deref()),
        (401, Some("token_invalid")),
        "a deleted (cached) token on the next request: {}",
        resp.body
    );
    assert_eq!(
        resp.header("www-authenticate").as_deref(),
        Some(format!("Basic realm=\"{REALM}\"").as_str())
    );
    proxy
        .api("GET", &format!("/api/v1/tokens/{id}"), Some(&boot()), None)
        .await
        .expect_error(404, "not_found");
    proxy
        .api(
            "DELETE",
            &format!("/api/v1/tokens/{id}"),
            Some(&boot()),
            None,
        )
        .await
        .expect_error(404, "not_found");
}

#[tokio::test]
async fn patch_rights_apply_on_the_next_request() {
    let upstream = Upstream::start();
    let proxy = start(&upstream, &[]).await;
    let client = client();
    let (record, token) = proxy.create_token(&boot(), json!({"name": "scoped", "permission": "read", "routes": [{"path": "/a/**", "access": "read"}]}),
    )
    .await;
    let id = record["id"].as_str().expect("id").to_owned();
    let auth = bearer(&token);
    let status = |path: &'static str| {
        let (client, url, auth) = (client.clone(), proxy.url(path), auth.clone());
        async move { http_get(&client, &url, Some(&auth)).await.status }
    };
    assert_eq!(status("/a/x").await, 200, "inside the route");
    assert_eq!(status("/b/x").await, 403, "outside the route");

    let patch = |body: Value| {
        let (id, body) = (id.clone(), body);
        let proxy = &proxy;
        async move {
            let resp = proxy
                .api(
                    "PATCH",
                    &format!("/api/v1/tokens/{id}"),
                    Some(&boot()),
                    Some(&body),
                )
                .await;
            let v = resp.expect(200);
            assert_no_hash("PATCH body", &resp.text);
            v
        }
    };
    let v = patch(json!({"routes": [{"path": "/b/**", "access": "read"}]})).await;
    assert_eq!(v["routes"], json!([{"path": "/b/**", "access": "read"}]));
    assert_eq!(status("/b/x").await, 200, "new route on the next request");
    assert_eq!(
        status("/a/x").await,
        403,
        "old route gone on the next request"
    );

    // permission write, no routes: PUT anywhere
    let put = |path: &'static str| {
        let (client, url, auth) = (client.clone(), proxy.url(path), auth.clone());
        async move {
            http_send(&client, "PUT", &url, Some(&auth), Some("data"))
                .await
                .status
        }
    };
    assert_eq!(put("/a/up").await, 403, "read token PUT");
    let v = patch(json!({"permission": "write", "routes": []})).await;
    assert_eq!(v["permission"], "write");
    assert_eq!(
        put("/a/up").await,
        200,
        "write permission on the next request"
    );
    assert_eq!(status("/c/x").await, 200, "no routes: every path");
    patch(json!({"permission": "read"})).await;
    assert_eq!(put("/a/up").await, 403, "back to read on the next request");
    assert_eq!(status("/c/x").await, 200);

    // Expiry and creation date never change with a PATCH.
    let shown = proxy
        .api("GET", &format!("/api/v1/tokens/{id}"), Some(&boot()), None)
        .await
        .expect(200);
    assert_same_ms(
        &shown["created_at"],
        &record["created_at"],
        "created_at after PATCHes",
    );
    assert_eq!(shown["expires_at"], Value::Null, "expiry after PATCHes");
}

#[tokio::test]
async fn patch_renames_and_describes() {
    let upstream = Upstream::start();
    let proxy = start(&upstream, &[]).await;
    let client = client();
    let (record, token) = proxy.create_token(&boot(), json!({"name": "old-name", "description": "first", "permission": "read", "expires_in": "30d"}),
    )
    .await;
    let id = record["id"].as_str().expect("id").to_owned();
    let resp = http_get(&client, &proxy.url("/n1"), Some(&bearer(&token))).await;
    assert_eq!(resp.status, 200);

    let resp = proxy
        .api(
            "PATCH",
            "/api/v1/tokens/old-name",
            Some(&boot()),
            Some(&json!({"name": "new-name", "description": "second"})),
        )
        .await;
    let v = resp.expect(200);
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["name"], "new-name");
    assert_eq!(v["description"], "second");
    assert_same_ms(
        &v["expires_at"],
        &record["expires_at"],
        "expires_at after PATCH",
    );
    assert_same_ms(
        &v["created_at"],
        &record["created_at"],
        "created_at after PATCH",
    );

    proxy
        .api("GET", "/api/v1/tokens/old-name", Some(&boot()), None)
        .await
        .expect_error(404, "not_found");
    let shown = proxy
        .api("GET", "/api/v1/tokens/new-name", Some(&boot()), None)
        .await
        .expect(200);
    assert_eq!(shown["id"], id.as_str());

    let resp = http_get(&client, &proxy.url("/n2"), Some(&bearer(&token))).await;
    assert_eq!(resp.status, 200, "a rename keeps the token working");
    assert_eq!(
        upstream
            .find("/n2")
            .expect("forwarded")
            .header("x-tollgate-token-name")
            .as_deref(),
        Some("new-name"),
        "the upstream sees the new name on the next request"
    );

    let v = proxy
        .api(
            "PATCH",
            &format!("/api/v1/tokens/{id}"),
            Some(&boot()),
            Some(&json!({"description": null})),
        )
        .await
        .expect(200);
    assert_eq!(v["description"], Value::Null, "null clears the description");
    assert_eq!(v["name"], "new-name");
}

#[tokio::test]
async fn file_and_bootstrap_tokens_are_read_only_through_the_api() {
    let upstream = Upstream::start();
    let from_file = TestToken::read("from-file");
    let proxy = start(&upstream, &[&from_file]).await;
    let client = client();

    let shown = proxy
        .api("GET", "/api/v1/tokens/from-file", Some(&boot()), None)
        .await
        .expect(200);
    assert_eq!(shown["source"], "file");
    assert_eq!(shown["id"], from_file.id.as_str());

    for target in [from_file.id.as_str(), BOOT_NAME] {
        let cases = [
            (
                "PATCH",
                format!("/api/v1/tokens/{target}"),
                Some(json!({"description": "changed"})),
            ),
            ("DELETE", format!("/api/v1/tokens/{target}"), None),
            ("POST", format!("/api/v1/tokens/{target}/regenerate"), None),
        ];
        for (method, path, body) in cases {
            let resp = proxy.api(method, &path, Some(&boot()), body.as_ref()).await;
            resp.expect_error(409, "read_only");
            if target != BOOT_NAME {
                let message = resp.json()["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                assert!(
                    message.contains("file"),
                    "{method} {path}: the message should say to edit the file: {message}"
                );
            }
        }
    }
    let resp = http_get(&client, &proxy.url("/f"), Some(&from_file.auth())).await;
    assert_eq!(
        resp.status, 200,
        "the file token still works: {}",
        resp.body
    );
    let resp = proxy
        .api("GET", "/api/v1/tokens", Some(&boot()), None)
        .await;
    assert_eq!(resp.status, 200, "the bootstrap token still works");
}

/// The expiry gauges of `GET /metrics`: (7d, 30d, expired).
async fn expiry_gauges(proxy: &Tollgate) -> (f64, f64, f64) {
    let text = client()
        .get(proxy.admin_url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    let get = |series: &str| {
        metric_value(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    };
    (
        get(r#"tollgate_tokens_expiring{within="7d"}"#),
        get(r#"tollgate_tokens_expiring{within="30d"}"#),
        get("tollgate_tokens_expired"),
    )
}

#[tokio::test]
async fn expiring_and_expired_tokens_are_counted_in_metrics() {
    let upstream = Upstream::start();
    let at = |days: i64| {
        (Utc::now() + chrono::Duration::days(days)).to_rfc3339_opts(SecondsFormat::Secs, true)
    };
    let tokens = [
        TestToken::builder("in-3-days").expires_at(&at(3)).build(),
        TestToken::builder("in-20-days").expires_at(&at(20)).build(),
        TestToken::builder("in-100-days")
            .expires_at(&at(100))
            .build(),
        TestToken::builder("expired").expires_at(&at(-1)).build(),
        TestToken::read("never"),
    ];
    let proxy = start(&upstream, &tokens.iter().collect::<Vec<_>>()).await;
    assert_eq!(expiry_gauges(&proxy).await, (1.0, 2.0, 1.0));

    // A new snapshot (a token made through the API) updates them at once.
    proxy
        .create_token(
            &boot(),
            json!({"name": "in-5-days", "permission": "read", "expires_in": at(5)}),
        )
        .await;
    assert_eq!(expiry_gauges(&proxy).await, (2.0, 3.0, 1.0));
    let text = client()
        .get(proxy.admin_url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    for t in &tokens {
        assert!(!text.contains(&t.id), "a token id in the metrics");
    }
}

#[tokio::test]
async fn a_short_expiry_turns_into_token_expired() {
    let upstream = Upstream::start();
    let proxy = start(&upstream, &[]).await;
    let client = client();
    // Whole seconds, at least 2 s ahead.
    let expires = (Utc::now() + chrono::Duration::seconds(3))
        .to_rfc3339_opts(SecondsFormat::Secs, true)
        .parse::<DateTime<Utc>>()
        .expect("parse");
    let expires_text = expires.to_rfc3339_opts(SecondsFormat::Secs, true);
    let (record, token) = proxy
        .create_token(
            &boot(),
            json!({"name": "short-lived", "permission": "read", "expires_in": expires_text}),
        )
        .await;
    assert_eq!(parse_time(&record["expires_at"], "expires_at"), expires);
    let resp = http_get(&client, &proxy.url("/e"), Some(&bearer(&token))).await;
    assert_eq!(resp.status, 200, "before expiry: {}", resp.body);

    let url = proxy.url("/e");
    let auth = bearer(&token);
    let mut last = None;
    let deadline = expires + chrono::Duration::milliseconds(2500);
    while Utc::now() < deadline {
        let resp = http_get(&client, &url, Some(&auth)).await;
        if resp.status == 401 {
            last = Some((Utc::now(), resp));
            break;
        }
        assert_eq!(resp.status, 200, "before expiry: {}", resp.body);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (at, resp) = last.expect("the token still works 2.5 s after its expiry");
    assert!(
        at >= expires,
        "refused before its expiry ({at} < {expires})"
    );
    assert_eq!(
        resp.error_code().as_deref(),
        Some("token_expired"),
        "refusal body: {}",
        resp.body
    );
    assert_eq!(
        resp.header("www-authenticate").as_deref(),
        Some(format!("Basic realm=\"{REALM}\"").as_str())
    );
    println!(
        "[lifecycle] expiry → first token_expired after {} ms",
        (at - expires).num_milliseconds()
    );
    let shown = proxy
        .api("GET", "/api/v1/tokens/short-lived", Some(&boot()), None)
        .await
        .expect(200);
    assert_eq!(shown["expired"], true, "record: {shown}");
}

#[tokio::test]
async fn last_used_at_survives_a_graceful_restart() {
    let upstream = Upstream::start();
    let mut proxy = start(&upstream, &[]).await;
    let client = client();
    let (record, token) = proxy
        .create_token(&boot(), json!({"name": "used", "permission": "read"}))
        .await;
    assert_eq!(record["last_used_at"], Value::Null, "unused so far");
    let id = record["id"].as_str().expect("id").to_owned();

    let before = Utc::now();
    let resp = http_get(&client, &proxy.url("/u"), Some(&bearer(&token))).await;
    assert_eq!(resp.status, 200);
    let after = Utc::now();
    let shown = proxy
        .api("GET", &format!("/api/v1/tokens/{id}"), Some(&boot()), None)
        .await
        .expect(200);
    let used = parse_time(&shown["last_used_at"], "last_used_at after use");
    assert!(
        used >= before - chrono::Duration::milliseconds(5)
            && used <= after + chrono::Duration::milliseconds(5),
        "last_used_at {used} is not the time of the request ({before}..{after})"
    );

    let (status, took) = proxy.stop_gracefully(Duration::from_secs(15)).await;
    assert!(status.success(), "exit status after SIGTERM: {status}");
    println!("[lifecycle] SIGTERM → exit 0 (idle): {took:?}");

    // The stored value, read by the CLI while no server runs.
    let out = proxy
        .cli(&["token", "show", &id, "--output", "json"], None)
        .await;
    assert!(out.status.success(), "token show: {out:?}");
    let stored: Value = serde_json::from_str(&out.stdout).expect("show JSON");
    assert_eq!(
        parse_time(&stored["last_used_at"], "stored last_used_at").timestamp_millis(),
        used.timestamp_millis(),
        "the CLI sees the flushed last_used_at: {}",
        out.stdout
    );

    proxy.restart().await;
    let shown = proxy
        .api("GET", &format!("/api/v1/tokens/{id}"), Some(&boot()), None)
        .await
        .expect(200);
    assert_eq!(
        parse_time(&shown["last_used_at"], "last_used_at after restart").timestamp_millis(),
        used.timestamp_millis(),
        "last_used_at after the restart: {shown}"
    );
    let resp = http_get(&client, &proxy.url("/u2"), Some(&bearer(&token))).await;
    assert_eq!(resp.status, 200, "the token works after the restart");
}

#[tokio::test]
async fn bootstrap_token_manages_tokens_and_is_gone_after_a_restart_without_it() {
    let upstream = Upstream::start();
    let mut proxy = start(&upstream, &[]).await;
    let client = client();

    let list = proxy
        .api("GET", "/api/v1/tokens", Some(&boot()), None)
        .await;
    let listed = list.expect(200);
    let boot_record = listed["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .find(|t| t["name"] == BOOT_NAME)
        .cloned()
        .unwrap_or_else(|| panic!("the bootstrap token is not listed: {}", list.text));
    assert_eq!(boot_record["permission"], "manager");
    assert_eq!(boot_record["source"], "bootstrap");

    let (mgr, mgr_token) = proxy
        .create_token(
            &boot(),
            json!({"name": "second-manager", "permission": "manager"}),
        )
        .await;
    assert_eq!(mgr["permission"], "manager");
    let (_, reader) = proxy
        .create_token(
            &bearer(&mgr_token),
            json!({"name": "made-by-manager", "permission": "read"}),
        )
        .await;

    let (status, _) = proxy.stop_gracefully(Duration::from_secs(15)).await;
    assert!(status.success(), "exit status: {status}");
    proxy.setup.env.clear();
    proxy.restart().await;

    proxy
        .api("GET", "/api/v1/tokens", Some(&boot()), None)
        .await
        .expect_error(401, "unauthenticated");
    let list = proxy
        .api("GET", "/api/v1/tokens", Some(&bearer(&mgr_token)), None)
        .await;
    let listed = list.expect(200);
    let names: Vec<&str> = listed["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        !names.contains(&BOOT_NAME),
        "the bootstrap token survived a restart without it: {names:?}"
    );
    assert!(names.contains(&"second-manager") && names.contains(&"made-by-manager"));
    let resp = http_get(&client, &proxy.url("/b"), Some(&bearer(&reader))).await;
    assert_eq!(resp.status, 200);

    // Never persisted: the CLI does not see it either.
    let out = proxy
        .cli(&["token", "list", "--output", "json"], None)
        .await;
    assert!(out.status.success(), "token list: {out:?}");
    assert!(
        !out.stdout.contains(BOOT_NAME),
        "the bootstrap token is in the database: {}",
        out.stdout
    );
    let logs = proxy.all_logs();
    assert!(
        !logs.contains(BOOT_SECRET),
        "the bootstrap secret is in the logs"
    );

    // A too-short bootstrap secret is refused at start.
    let setup = Setup::new(&upstream.url());
    setup.write();
    let config = setup.config_str();
    let cwd = setup.dir.path().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        run_tollgate_env(
            &["serve", "--config", &config],
            None,
            &cwd,
            Duration::from_secs(20),
            &[("TOLLGATE_BOOTSTRAP_TOKEN", "admin:short")],
        )
    })
    .await
    .expect("join");
    assert!(
        !out.status.success() && out.stderr.contains("16"),
        "a bootstrap secret under 16 characters must be refused naming the minimum: {out:?}"
    );
    assert!(!out.combined().contains("admin:short"), "echoes the secret");
}

#[tokio::test]
async fn admin_api_needs_a_manager_token() {
    let upstream = Upstream::start();
    let reader = TestToken::read("reader");
    let writer = TestToken::write("writer");
    let manager = TestToken::builder("manager").permission("manager").build();
    let wrong = TestToken::builder("wrong-manager")
        .permission("manager")
        .stored_secret("not the secret that was handed out")
        .build();
    let proxy = Setup::new(&upstream.url())
        .with_tokens(&[&reader, &writer, &manager, &wrong])
        .start()
        .await;
    let reader_path = format!("/api/v1/tokens/{}", reader.id);
    let cases: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", "/api/v1/tokens".into(), None),
        (
            "POST",
            "/api/v1/tokens".into(),
            Some(json!({"name": "sneaky", "permission": "manager"})),
        ),
        ("GET", reader_path.clone(), None),
        (
            "PATCH",
            "/api/v1/tokens/nosuchtoken".into(),
            Some(json!({"description": "x"})),
        ),
        ("DELETE", "/api/v1/tokens/nosuchtoken".into(), None),
        ("POST", "/api/v1/tokens/nosuchtoken/regenerate".into(), None),
        ("POST", "/api/v1/reload".into(), None),
    ];
    let mut failures = Vec::new();
    for (method, path, body) in &cases {
        let body = body.as_ref();
        let resp = proxy.api(method, path, None, body).await;
        if resp.status != 401
            || resp.header("www-authenticate").is_none()
            || serde_json::from_str::<Value>(&resp.text)
                .map(|v| v["error"] != "unauthenticated")
                .unwrap_or(true)
        {
            failures.push(format!(
                "{method} {path} without a token: want 401 unauthenticated + WWW-Authenticate, \
                 got {} {:?} {}",
                resp.status,
                resp.header("www-authenticate"),
                resp.text
            ));
        }
        let resp = proxy.api(method, path, Some(&wrong.auth()), body).await;
        if resp.status != 401 {
            failures.push(format!(
                "{method} {path} with a wrong secret: want 401, got {} {}",
                resp.status, resp.text
            ));
        }
        for (label, token) in [("read", &reader), ("write", &writer)] {
            let resp = proxy.api(method, path, Some(&token.auth()), body).await;
            let code = serde_json::from_str::<Value>(&resp.text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned));
            if resp.status != 403 || code.as_deref() != Some("forbidden") {
                failures.push(format!(
                    "{method} {path} with a {label} token: want 403 forbidden, got {} {}",
                    resp.status, resp.text
                ));
            }
        }
        let resp = proxy.api(method, path, Some(&manager.auth()), body).await;
        if matches!(resp.status, 401 | 403) || resp.status >= 500 {
            failures.push(format!(
                "{method} {path} with a manager token: got {} {}",
                resp.status, resp.text
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The refused create left nothing behind; only the manager's did.
    let listed = proxy
        .api("GET", "/api/v1/tokens", Some(&manager.auth()), None)
        .await
        .expect(200);
    let count = listed["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .filter(|t| t["name"] == "sneaky")
        .count();
    assert_eq!(count, 1, "only the manager's create succeeded: {listed}");

    // Probes and metrics need no token.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let resp = proxy.api("GET", path, None, None).await;
        assert_eq!(resp.status, 200, "{path}: {}", resp.text);
    }
}

/// A body for a bad-input case.
enum Body {
    None,
    Json(Value),
    Raw(&'static str, Vec<u8>),
}

/// POSTs `len` bytes of JSON whitespace to the admin API over a raw connection, ignoring write
/// errors once the server has answered; returns the status and body of its answer.
async fn oversized_post(admin: std::net::SocketAddr, auth: &str, len: usize) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = tokio::net::TcpStream::connect(admin)
        .await
        .expect("connect");
    let (mut rd, mut wr) = s.into_split();
    // Read while writing: the answer arrives before the server closes the connection.
    let reader = tokio::spawn(async move {
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(10), rd.read(&mut buf)).await
        {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        out
    });
    let head = format!(
        "POST /api/v1/tokens HTTP/1.1\r\nHost: {admin}\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    );
    let chunk = vec![b' '; 64 * 1024];
    if wr.write_all(head.as_bytes()).await.is_ok() {
        let mut sent = 0;
        while sent < len {
            if wr.write_all(&chunk).await.is_err() {
                break;
            }
            sent += chunk.len();
        }
    }
    let out = reader.await.expect("reader");
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

#[tokio::test]
async fn bad_admin_inputs_get_4xx_json_and_never_5xx() {
    let upstream = Upstream::start();
    let file_token = TestToken::read("file-tok");
    let proxy = start(&upstream, &[&file_token]).await;
    let (taken, _) = proxy
        .create_token(
            &boot(),
            json!({"name": "taken", "description": "keep me", "permission": "read"}),
        )
        .await;
    let taken_path = format!("/api/v1/tokens/{}", taken["id"].as_str().expect("id"));
    let tp = taken_path.as_str();
    // The stored record (the 201 answer's timestamps are more precise than the stored ones).
    let taken = proxy.api("GET", tp, Some(&boot()), None).await.expect(200);
    let ok = |extra: Value| {
        let mut base = json!({"name": "fresh", "permission": "read"});
        for (k, v) in extra.as_object().expect("object").iter() {
            base[k] = v.clone();
        }
        Body::Json(base)
    };
    let huge = "x".repeat(100_000);
    type Case = (&'static str, &'static str, String, Body, u16, &'static str);
    let cases: Vec<Case> = vec![
        (
            "unknown field",
            "POST",
            "/api/v1/tokens".into(),
            ok(json!({"colour": "blue"})),
            400,
            "invalid_request",
        ),
        (
            "bad permission",
            "POST",
            "/api/v1/tokens".into(),
            ok(json!({"permission": "admin"})),
            400,
            "invalid_request",
        ),
        (
            "route path without a slash",
            "POST",
            "/api/v1/tokens".into(),
            ok(json!({"routes": [{"path": "no-slash", "access": "read"}]})),
            400,
            "invalid_request",
        ),
        (
            "route with a bad access",
            "POST",
            "/api/v1/tokens".into(),
            ok(json!({"routes": [{"path": "/x", "access": "execute"}]})),
            400,
            "invalid_request",
        ),
        (
            "route with an unknown field",
            "POST",
            "/api/v1/tokens".into(),
            ok(json!({"routes": [{"path": "/x", "access": "read", "methods": ["GET"]}]})),
            400,
            "invalid_request",
        ),
        (
            "routes not a list",
            "POST",
            "/api/v1/tokens".into(),
            ok(json!({"routes": "/x"})),
            400,
            "invalid_request",
        ),
        (
            "expiry that is no expiry",
            "POST",
            "/api/v1/tokens".into(),
            ok(json!({"expires_in": "tomorrow"})),
            400,
            "invalid_request",
        ),
        (
            "expiry in the past",
            "POST",
            "/api/v1/tokens".into(),
            ok(json!({"expires_in": "2020-01-01T00:00:00Z"})),
            400,
            "invalid_request",
        ),
        (
            "expiry of 0 days",
            "POST",
            "/api/v1/tokens".into(),
            ok(json!({"expires_in": "0d"})),
            400,
            "invalid_request",
        ),
        (
            "missing permission",
            "POST",
            "/api/v1/tokens".into(),
            Body::Json(json!({"name": "fresh"})),
            400,
            "invalid_request",
        ),
        (
            "missing name",
            "POST",
            "/api/v1/tokens".into(),
            Body::Json(json!({"permission": "read"})),
            400,
            "invalid_request",
        ),
        (
            "name with spaces",
            "POST",
            "/api/v1/tokens".into(),
            ok(json!({"name": "has spaces"})),
            400,
            "invalid_request",
        ),
        (
            "empty name",
            "POST",
            "/api/v1/tokens".into(),
            ok(json!({"name": ""})),
            400,
            "invalid_request",
        ),
        (
            "name of 65 characters",
            "POST",
            "/api/v1/tokens".into(),
            ok(json!({"name": "n".repeat(65)})),
            400,
            "invalid_request",
        ),
        (
            "name that is a number",
            "POST",
            "/api/v1/tokens".into(),
            ok(json!({"name": 42})),
            400,
            "invalid_request",
        ),
        (
            "huge description (100 kB, over the 64 KiB body limit)",
            "POST",
            "/api/v1/tokens".into(),
            ok(json!({"description": huge})),
            413,
            "payload_too_large",
        ),
        (
            "secret field",
            "POST",
            "/api/v1/tokens".into(),
            ok(json!({"secret": "my-own-secret-123456789"})),
            400,
            "invalid_request",
        ),
        (
            "hash field",
            "POST",
            "/api/v1/tokens".into(),
            ok(json!({"hash": hash("whatever-secret-1234")})),
            400,
            "invalid_request",
        ),
        (
            "token field",
            "POST",
            "/api/v1/tokens".into(),
            ok(json!({"token": unknown_token()})),
            400,
            "invalid_request",
        ),
        (
            "rate limit of 0 requests",
            "POST",
            "/api/v1/tokens".into(),
            ok(json!({"rate_limit": {"requests": 0, "period": "1m"}})),
            400,
            "invalid_request",
        ),
        (
            "rate limit word",
            "POST",
            "/api/v1/tokens".into(),
            ok(json!({"rate_limit": "sometimes"})),
            400,
            "invalid_request",
        ),
        (
            "rate limit period",
            "POST",
            "/api/v1/tokens".into(),
            ok(json!({"rate_limit": {"requests": 5, "period": "forever"}})),
            400,
            "invalid_request",
        ),
        (
            "empty body",
            "POST",
            "/api/v1/tokens".into(),
            Body::None,
            400,
            "invalid_request",
        ),
        (
            "form body",
            "POST",
            "/api/v1/tokens".into(),
            Body::Raw(
                "application/x-www-form-urlencoded",
                b"name=fresh&permission=read".to_vec(),
            ),
            400,
            "invalid_request",
        ),
        (
            "truncated JSON",
            "POST",
            "/api/v1/tokens".into(),
            Body::Raw("application/json", b"{\"name\": \"fresh\", ".to_vec()),
            400,
            "invalid_request",
        ),
        (
            "invalid UTF-8",
            "POST",
            "/api/v1/tokens".into(),
            Body::Raw("application/json", b"{\"name\": \"\xff\xfe\"}".to_vec()),
            400,
            "invalid_request",
        ),
        (
            "JSON array",
            "POST",
            "/api/v1/tokens".into(),
            Body::Json(json!([])),
            400,
            "invalid_request",
        ),
        (
            "JSON null",
            "POST",
            "/api/v1/tokens".into(),
            Body::Json(Value::Null),
            400,
            "invalid_request",
        ),
        (
            "duplicate name (database)",
            "POST",
            "/api/v1/tokens".into(),
            ok(json!({"name": "taken"})),
            409,
            "conflict",
        ),
        (
            "duplicate name (token file)",
            "POST",
            "/api/v1/tokens".into(),
            ok(json!({"name": "file-tok"})),
            409,
            "conflict",
        ),
        (
            "duplicate name (bootstrap)",
            "POST",
            "/api/v1/tokens".into(),
            ok(json!({"name": BOOT_NAME})),
            409,
            "conflict",
        ),
        (
            "expires_in in PATCH",
            "PATCH",
            tp.into(),
            Body::Json(json!({"expires_in": "30d"})),
            400,
            "invalid_request",
        ),
        (
            "expires_at in PATCH",
            "PATCH",
            tp.into(),
            Body::Json(json!({"expires_at": "2099-01-01T00:00:00Z"})),
            400,
            "invalid_request",
        ),
        (
            "created_at in PATCH",
            "PATCH",
            tp.into(),
            Body::Json(json!({"created_at": "2000-01-01T00:00:00Z"})),
            400,
            "invalid_request",
        ),
        (
            "id in PATCH",
            "PATCH",
            tp.into(),
            Body::Json(json!({"id": "AAAAAAAAAAAA"})),
            400,
            "invalid_request",
        ),
        (
            "unknown field in PATCH",
            "PATCH",
            tp.into(),
            Body::Json(json!({"colour": "blue"})),
            400,
            "invalid_request",
        ),
        (
            "bad permission in PATCH",
            "PATCH",
            tp.into(),
            Body::Json(json!({"permission": "root"})),
            400,
            "invalid_request",
        ),
        (
            "bad name in PATCH",
            "PATCH",
            tp.into(),
            Body::Json(json!({"name": "bad name"})),
            400,
            "invalid_request",
        ),
        (
            "bad route in PATCH",
            "PATCH",
            tp.into(),
            Body::Json(json!({"routes": [{"path": "relative/path", "access": "read"}]})),
            400,
            "invalid_request",
        ),
        (
            "huge description in PATCH",
            "PATCH",
            tp.into(),
            Body::Json(json!({"description": "y".repeat(5000)})),
            400,
            "invalid_request",
        ),
        (
            "empty PATCH body",
            "PATCH",
            tp.into(),
            Body::None,
            400,
            "invalid_request",
        ),
        (
            "rename onto a file token's name",
            "PATCH",
            tp.into(),
            Body::Json(json!({"name": "file-tok"})),
            409,
            "conflict",
        ),
        (
            "rename onto the bootstrap token's name",
            "PATCH",
            tp.into(),
            Body::Json(json!({"name": BOOT_NAME})),
            409,
            "conflict",
        ),
        (
            "unknown id: GET",
            "GET",
            "/api/v1/tokens/nosuchtoken0".into(),
            Body::None,
            404,
            "not_found",
        ),
        (
            "unknown id: PATCH",
            "PATCH",
            "/api/v1/tokens/nosuchtoken0".into(),
            Body::Json(json!({"description": "x"})),
            404,
            "not_found",
        ),
        (
            "unknown id: DELETE",
            "DELETE",
            "/api/v1/tokens/nosuchtoken0".into(),
            Body::None,
            404,
            "not_found",
        ),
        (
            "unknown id: regenerate",
            "POST",
            "/api/v1/tokens/nosuchtoken0/regenerate".into(),
            Body::None,
            404,
            "not_found",
        ),
        (
            "encoded NUL as id",
            "GET",
            "/api/v1/tokens/%00".into(),
            Body::None,
            404,
            "not_found",
        ),
        (
            "unknown endpoint",
            "GET",
            "/api/v1/nothing".into(),
            Body::None,
            404,
            "not_found",
        ),
    ];
    assert!(cases.len() >= 12);

    let mut failures = Vec::new();
    for (label, method, path, body, want_status, want_code) in &cases {
        let resp = match body {
            Body::None => proxy.api(method, path, Some(&boot()), None).await,
            Body::Json(v) => proxy.api(method, path, Some(&boot()), Some(v)).await,
            Body::Raw(ct, bytes) => {
                proxy
                    .api_raw(method, path, Some(&boot()), Some(ct), Some(bytes.clone()))
                    .await
            }
        };
        let json = serde_json::from_str::<Value>(&resp.text).ok();
        let code = json
            .as_ref()
            .and_then(|v| v["error"].as_str().map(str::to_owned));
        let has_message = json
            .as_ref()
            .is_some_and(|v| v["message"].as_str().is_some_and(|m| !m.is_empty()));
        let ct_json = resp
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/json"));
        if resp.status >= 500 {
            failures.push(format!(
                "{label}: {method} {path} → {} (a 5xx for bad input): {}",
                resp.status, resp.text
            ));
        } else if resp.status != *want_status
            || code.as_deref() != Some(*want_code)
            || !has_message
            || !ct_json
        {
            failures.push(format!(
                "{label}: {method} {path} → want {want_status} {{error: {want_code}, message}} \
                 (JSON), got {} content-type {:?}: {}",
                resp.status,
                resp.header("content-type"),
                resp.text.chars().take(300).collect::<String>()
            ));
        }
    }

    // Bodies above any sane size and methods the API does not have: still a 4xx JSON answer.
    // Sent raw: the server answers 413 after 64 KiB and may close while the client still
    // writes (a broken pipe then is expected, the answer is what counts).
    let (status, text) = oversized_post(proxy.setup.admin, &boot(), 3 * 1024 * 1024).await;
    let json_error = serde_json::from_str::<Value>(&text)
        .ok()
        .is_some_and(|v| v["error"].is_string() && v["message"].is_string());
    if !(400..500).contains(&status) || !json_error {
        failures.push(format!(
            "3 MiB body: want a 4xx {{error, message}} JSON answer, got {status}: {}",
            text.chars().take(200).collect::<String>()
        ));
    }
    let resp = proxy
        .api(
            "PUT",
            "/api/v1/tokens",
            Some(&boot()),
            Some(&json!({"name": "x", "permission": "read"})),
        )
        .await;
    let json_error = serde_json::from_str::<Value>(&resp.text)
        .ok()
        .is_some_and(|v| v["error"].is_string() && v["message"].is_string());
    if resp.status != 405 || !json_error {
        failures.push(format!(
            "PUT /api/v1/tokens: want 405 with an {{error, message}} JSON body, got {} {:?}: {:?}",
            resp.status,
            resp.header("content-type"),
            resp.text
        ));
    }

    // Nothing was created or changed by the refused requests.
    let listed = proxy
        .api("GET", "/api/v1/tokens", Some(&boot()), None)
        .await
        .expect(200);
    let mut names: Vec<String> = listed["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    let mut want = vec![
        BOOT_NAME.to_owned(),
        "file-tok".to_owned(),
        "taken".to_owned(),
    ];
    want.sort();
    if names != want {
        failures.push(format!(
            "tokens after the bad requests: {names:?}, want {want:?}"
        ));
    }
    let shown = proxy.api("GET", tp, Some(&boot()), None).await.expect(200);
    if shown != taken {
        failures.push(format!(
            "refused PATCHes changed the record: before {taken}, after {shown}"
        ));
    }
    println!("[lifecycle] {} bad-input cases checked", cases.len() + 2);
    assert!(
        failures.is_empty(),
        "{} bad-input case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn no_hash_or_secret_in_list_output_cli_output_or_logs() {
    let upstream = Upstream::start();
    let file_token = TestToken::read("file-tok");
    let proxy = start(&upstream, &[&file_token]).await;
    let client = client();

    let (api_rec, api_token) = proxy
        .create_token(&boot(), json!({"name": "api-tok", "permission": "write"}))
        .await;
    let api_id = api_rec["id"].as_str().expect("id").to_owned();
    let out = proxy
        .cli(
            &[
                "token",
                "create",
                "--name",
                "cli-tok",
                "--permission",
                "read",
                "--output",
                "json",
            ],
            None,
        )
        .await;
    assert!(out.status.success(), "{out:?}");
    let cli_token_value = cli_token(&out);
    let custom_secret = "Custom-S3cret-never-logged-42";
    let out = proxy
        .cli(
            &[
                "token",
                "create",
                "--name",
                "cli-custom",
                "--permission",
                "read",
                "--secret",
                "-",
            ],
            Some(custom_secret),
        )
        .await;
    assert!(out.status.success(), "{out:?}");
    let regen = proxy
        .api(
            "POST",
            &format!("/api/v1/tokens/{api_id}/regenerate"),
            Some(&boot()),
            None,
        )
        .await
        .expect(200);
    let regen_token = regen["token"].as_str().expect("token").to_owned();

    // Use every token, in several credential forms, including failures.
    for (auth, works) in [
        (bearer(&regen_token), true),
        (basic("token", &regen_token), true),
        (bearer(&api_token), false), // old secret
        (bearer(&cli_token_value), true),
        (basic("cli-custom", custom_secret), true),
        (basic("cli-custom", "Wrong-custom-secret-0000"), false),
        (file_token.auth(), true),
    ] {
        if works {
            wait_status(&proxy, &client, "/s", &auth, 200, Duration::from_secs(1))
                .await
                .expect("token works within 1 s");
        } else {
            let resp = http_get(&client, &proxy.url("/s"), Some(&auth)).await;
            assert_eq!(resp.status, 401, "{}", resp.body);
        }
    }
    proxy
        .api(
            "PATCH",
            "/api/v1/tokens/cli-tok",
            Some(&boot()),
            Some(&json!({"description": "patched"})),
        )
        .await
        .expect(200);

    let secrets = [
        ("API token (old)", api_token.as_str()),
        ("API token (regenerated)", regen_token.as_str()),
        ("CLI token", cli_token_value.as_str()),
        ("custom secret", custom_secret),
        ("bootstrap secret", BOOT_SECRET),
        ("file token", file_token.token.as_str()),
    ];
    let list = proxy
        .api("GET", "/api/v1/tokens", Some(&boot()), None)
        .await;
    assert_eq!(list.status, 200);
    let cli_json = proxy
        .cli(&["token", "list", "--output", "json"], None)
        .await;
    let cli_table = proxy.cli(&["token", "list"], None).await;
    let cli_show = proxy
        .cli(&["token", "show", "api-tok", "--output", "json"], None)
        .await;
    assert!(cli_json.status.success() && cli_table.status.success() && cli_show.status.success());
    assert!(cli_table.stdout.contains("cli-custom"), "{cli_table:?}");

    proxy
        .api("DELETE", "/api/v1/tokens/cli-custom", Some(&boot()), None)
        .await;

    // The audit lines of the admin changes name actor and token, never a secret.
    for action in [
        "token.create",
        "token.regenerate",
        "token.modify",
        "token.revoke",
    ] {
        let record = proxy
            .wait_for_audit(action, |r| {
                field_str(r, "action").as_deref() == Some(action)
            })
            .await;
        assert!(
            field_str(&record, "token_id").is_some(),
            "audit line of {action} has no token_id: {record:?}"
        );
        assert!(
            record.values().any(|v| v.as_str() == Some(BOOT_NAME)),
            "audit line of {action} does not name the actor: {record:?}"
        );
    }

    let logs = proxy.all_logs();
    for (what, text) in [
        ("API list", list.text.as_str()),
        ("CLI list --output json", cli_json.combined().as_str()),
        ("CLI list", cli_table.combined().as_str()),
        ("CLI show", cli_show.combined().as_str()),
        ("server logs", logs.as_str()),
    ] {
        assert!(
            !text.contains("$argon2"),
            "{what} contains an argon2 hash:\n{text}"
        );
        for (secret_name, secret) in secrets {
            assert!(!text.contains(secret), "{what} contains the {secret_name}");
            // Not even the secret part of a generated token.
            if let Some(part) = secret.strip_prefix("tok_").and_then(|s| s.get(13..45)) {
                assert!(
                    !text.contains(part),
                    "{what} contains the secret part of the {secret_name}"
                );
            }
        }
    }
}

/// `GET path` with `auth` on the proxy: status and error code.
async fn refusal(
    proxy: &Tollgate,
    client: &reqwest::Client,
    path: &str,
    auth: &str,
) -> (u16, Option<String>) {
    let resp = http_get(client, &proxy.url(path), Some(auth)).await;
    (resp.status, resp.error_code())
}

/// The same id with another (well-formed) secret.
fn wrong_secret_for(id: &str) -> String {
    bearer(tollgate::token::generate_with_id(id).token.expose())
}

#[tokio::test]
async fn patch_disabled_refuses_on_the_next_request_and_enable_restores() {
    let upstream = Upstream::start();
    let proxy = start(&upstream, &[]).await;
    let client = client();
    let (record, token) = proxy
        .create_token(
            &boot(),
            json!({"name": "pausable", "permission": "manager"}),
        )
        .await;
    assert_eq!(record["disabled"], false);
    let id = record["id"].as_str().expect("id").to_owned();
    let auth = bearer(&token);
    // Cached: several uses before the change.
    for _ in 0..3 {
        assert_eq!(refusal(&proxy, &client, "/p", &auth).await, (200, None));
    }
    let path = format!("/api/v1/tokens/{id}");
    let off = proxy
        .api(
            "PATCH",
            &path,
            Some(&boot()),
            Some(&json!({"disabled": true})),
        )
        .await
        .expect(200);
    assert_eq!(off["disabled"], true);
    assert_eq!(
        (off["id"].as_str(), off["name"].as_str()),
        (Some(id.as_str()), Some("pausable"))
    );
    let disabled = (401, Some("token_disabled".to_string()));
    assert_eq!(
        refusal(&proxy, &client, "/p", &auth).await,
        disabled,
        "the very next request"
    );
    assert_eq!(
        refusal(&proxy, &client, "/_tollgate/whoami", &auth).await,
        disabled,
        "whoami"
    );
    // No oracle: a wrong secret for the disabled token is just invalid.
    assert_eq!(
        refusal(&proxy, &client, "/p", &wrong_secret_for(&id)).await,
        (401, Some("token_invalid".to_string()))
    );
    // The admin API refuses the disabled manager token too.
    proxy
        .api("GET", "/api/v1/tokens", Some(&auth), None)
        .await
        .expect_error(401, "token_disabled");
    let shown = proxy
        .api("GET", &path, Some(&boot()), None)
        .await
        .expect(200);
    assert_eq!(shown["disabled"], true);
    let counted = poll_until(Duration::from_secs(5), || async {
        proxy
            .metric(r#"tollgate_requests_total{outcome="token_disabled",method="GET"}"#)
            .await
            >= 2.0
    })
    .await;
    assert!(counted.is_some(), "{}", proxy.metrics_text().await);

    let on = proxy
        .api(
            "PATCH",
            &path,
            Some(&boot()),
            Some(&json!({"disabled": false})),
        )
        .await
        .expect(200);
    assert_eq!(on["disabled"], false);
    assert_eq!(
        refusal(&proxy, &client, "/p", &auth).await,
        (200, None),
        "enabled again"
    );
    proxy
        .api("GET", "/api/v1/tokens", Some(&auth), None)
        .await
        .expect(200);
    proxy
        .api(
            "PATCH",
            &path,
            Some(&boot()),
            Some(&json!({"disabled": "yes"})),
        )
        .await
        .expect_error(400, "invalid_request");
}

#[tokio::test]
async fn disabling_needs_the_acting_token_to_be_within_its_rights() {
    let upstream = Upstream::start();
    let proxy = start(&upstream, &[]).await;
    let (_, narrow) = proxy
        .create_token(
            &boot(),
            json!({"name": "narrow-mgr", "permission": "manager",
                   "routes": [{"path": "/p2/acme/*", "access": "write"}]}),
        )
        .await;
    let (wide, wide_token) = proxy
        .create_token(&boot(), json!({"name": "wide", "permission": "read"}))
        .await;
    let id = wide["id"].as_str().expect("id");
    proxy
        .api(
            "PATCH",
            &format!("/api/v1/tokens/{id}"),
            Some(&bearer(&narrow)),
            Some(&json!({"disabled": true})),
        )
        .await
        .expect_error(403, "exceeds_actor");
    let client = client();
    assert_eq!(
        refusal(&proxy, &client, "/p", &bearer(&wide_token)).await,
        (200, None)
    );
}

#[tokio::test]
async fn cli_disable_and_enable() {
    let upstream = Upstream::start();
    let proxy = start(&upstream, &[]).await;
    let client = client();
    let (record, token) = proxy
        .create_token(&boot(), json!({"name": "cli-pause", "permission": "read"}))
        .await;
    let id = record["id"].as_str().expect("id").to_owned();
    let auth = bearer(&token);
    assert_eq!(refusal(&proxy, &client, "/c", &auth).await, (200, None));

    let out = proxy
        .cli(&["token", "disable", "cli-pause", "--output", "json"], None)
        .await;
    assert!(out.status.success(), "token disable: {out:?}");
    let shown: Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(
        (shown["disabled"].as_bool(), shown["id"].as_str()),
        (Some(true), Some(id.as_str()))
    );
    let disabled = (401, Some("token_disabled".to_string()));
    let took = poll_until(Duration::from_secs(1), || async {
        refusal(&proxy, &client, "/c", &auth).await == disabled
    })
    .await
    .expect("a token disabled by the CLI is refused within 1 s");
    println!("[lifecycle] CLI disable → first token_disabled: {took:?}");
    assert_eq!(
        refusal(&proxy, &client, "/c", &wrong_secret_for(&id)).await,
        (401, Some("token_invalid".to_string()))
    );
    let table = proxy.cli(&["token", "list"], None).await;
    let line = table
        .stdout
        .lines()
        .find(|l| l.contains("cli-pause"))
        .unwrap_or_else(|| panic!("{table:?}"));
    assert!(line.contains("disabled"), "{line}");
    let json = proxy
        .cli(&["token", "list", "--output", "json"], None)
        .await;
    let listed: Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert!(listed["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .any(|t| t["name"] == "cli-pause" && t["disabled"] == true));

    let out = proxy.cli(&["token", "enable", &id], None).await;
    assert!(out.status.success(), "token enable: {out:?}");
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains("cli-pause"))
        .unwrap_or_default()
        .to_string();
    assert!(line.contains("enabled"), "{out:?}");
    poll_until(Duration::from_secs(1), || async {
        refusal(&proxy, &client, "/c", &auth).await == (200, None)
    })
    .await
    .expect("an enabled token works again within 1 s");

    let out = proxy
        .cli(&["token", "disable", "no-such-token"], None)
        .await;
    assert!(!out.status.success(), "{out:?}");
}

#[tokio::test]
async fn tokens_max_lifetime_refuses_longer_or_endless_tokens() {
    let upstream = Upstream::start();
    let proxy = Setup::new(&upstream.url())
        .set("tokens.max_lifetime", json!("365d"))
        .with_bootstrap()
        .start()
        .await;
    for expires in [
        json!("366d"),
        json!("never"),
        json!("2099-01-01"),
        Value::Null,
    ] {
        let resp = proxy
            .api(
                "POST",
                "/api/v1/tokens",
                Some(&boot()),
                Some(&json!({"name": "too-long", "permission": "read", "expires_in": expires})),
            )
            .await;
        resp.expect_error(400, "invalid_request");
        let message = resp.json()["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            message.starts_with("tokens.max_lifetime is 365d: "),
            "{expires}: {message}"
        );
    }
    for (name, expires) in [("year", "365d"), ("month", "30d")] {
        let (record, token) = proxy
            .create_token(
                &boot(),
                json!({"name": name, "permission": "read", "expires_in": expires}),
            )
            .await;
        assert!(record["expires_at"].is_string(), "{record}");
        let resp = http_get(&client(), &proxy.url("/p"), Some(&bearer(&token))).await;
        assert_eq!(resp.status, 200, "{name}: {}", resp.body);
    }
    proxy
        .api(
            "POST",
            "/api/v1/tokens/year/regenerate",
            Some(&boot()),
            None,
        )
        .await
        .expect(200);

    let out = proxy
        .cli(
            &[
                "token",
                "create",
                "--name",
                "cli-forever",
                "--permission",
                "read",
                "--expires-in",
                "never",
            ],
            None,
        )
        .await;
    assert!(!out.status.success(), "{out:?}");
    assert!(
        out.stderr.contains("tokens.max_lifetime is 365d: "),
        "{out:?}"
    );
    let out = proxy
        .cli(
            &[
                "token",
                "create",
                "--name",
                "cli-year",
                "--permission",
                "read",
                "--expires-in",
                "365d",
            ],
            None,
        )
        .await;
    assert!(out.status.success(), "{out:?}");
}

#[tokio::test]
async fn last_used_ip_and_user_agent_are_shown_and_stored() {
    let upstream = Upstream::start();
    let proxy = start(&upstream, &[]).await;
    let (record, token) = proxy
        .create_token(&boot(), json!({"name": "pip-user", "permission": "read"}))
        .await;
    assert_eq!(record["last_used_ip"], Value::Null, "unused so far");
    assert_eq!(record["last_used_user_agent"], Value::Null, "unused so far");
    let id = record["id"].as_str().expect("id").to_owned();

    let from_2 = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .expect("reqwest client");
    let resp = from_2
        .get(proxy.url("/simple/"))
        .header("authorization", bearer(&token))
        .header("user-agent", "pip/24.0")
        .send()
        .await
        .expect("GET through the proxy");
    assert_eq!(resp.status().as_u16(), 200);

    let shown = proxy
        .api("GET", &format!("/api/v1/tokens/{id}"), Some(&boot()), None)
        .await
        .expect(200);
    assert_eq!(shown["last_used_ip"], "127.0.0.2", "{shown}");
    assert_eq!(shown["last_used_user_agent"], "pip/24.0", "{shown}");
    let listed = proxy
        .api("GET", "/api/v1/tokens", Some(&boot()), None)
        .await
        .expect(200);
    let entry = listed["tokens"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["id"] == id.as_str()).cloned())
        .unwrap_or_else(|| panic!("token listed: {listed}"));
    assert_eq!(entry["last_used_ip"], "127.0.0.2", "{entry}");
    assert_eq!(entry["last_used_user_agent"], "pip/24.0", "{entry}");

    // Written behind: the database (read by the CLI) has both after the next flush.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = proxy
            .cli(&["token", "show", &id, "--output", "json"], None)
            .await;
        assert!(out.status.success(), "token show: {out:?}");
        let stored: Value = serde_json::from_str(&out.stdout).expect("show JSON");
        if stored["last_used_ip"] == "127.0.0.2" {
            assert_eq!(stored["last_used_user_agent"], "pip/24.0", "{stored}");
            break;
        }
        assert!(Instant::now() < deadline, "never flushed: {stored}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
