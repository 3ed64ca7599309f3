//! Per-token rate limits and metrics through the real binary: exact headers, the 429
//! answer, overrides from files, API and CLI, the configured default, whoami, and counters that
//! move by exactly the traffic sent.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::{json, Value};

const RATE_HEADERS: [&str; 7] = [
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-used",
    "x-ratelimit-reset",
    "ratelimit-policy",
    "ratelimit",
    "retry-after",
];

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

fn per_minute(n: u32) -> Value {
    json!({"requests": n, "period": "1m"})
}

/// A header parsed as an integer.
fn int(resp: &Fetched, name: &str) -> i64 {
    resp.header(name)
        .unwrap_or_else(|| panic!("no {name} header; headers: {:?}", resp.headers))
        .parse()
        .unwrap_or_else(|e| panic!("{name} is not an integer: {e}"))
}

/// `"default";r=R;t=T` → (R, T).
fn parse_ratelimit(value: &str) -> (i64, i64) {
    let rest = value
        .strip_prefix("\"default\";")
        .unwrap_or_else(|| panic!("RateLimit {value:?} does not start with \"default\";"));
    let mut r = None;
    let mut t = None;
    for part in rest.split(';') {
        if let Some(v) = part.strip_prefix("r=") {
            r = v.parse().ok();
        } else if let Some(v) = part.strip_prefix("t=") {
            t = v.parse().ok();
        }
    }
    (
        r.unwrap_or_else(|| panic!("no r= in RateLimit {value:?}")),
        t.unwrap_or_else(|| panic!("no t= in RateLimit {value:?}")),
    )
}

/// Check every rate-limit header of a response of a token limited to `limit` per `window`
/// seconds that has `used` requests counted; `before`/`after` bracket the request in Unix time.
/// Returns the `t` of the `RateLimit` field.
fn check_headers(
    what: &str,
    resp: &Fetched,
    limit: i64,
    window: i64,
    used: i64,
    before: f64,
    after: f64,
) -> i64 {
    let per_request = window as f64 / limit as f64;
    assert_eq!(
        int(resp, "x-ratelimit-limit"),
        limit,
        "{what}: X-RateLimit-Limit"
    );
    assert_eq!(
        int(resp, "x-ratelimit-remaining"),
        limit - used,
        "{what}: X-RateLimit-Remaining"
    );
    assert_eq!(
        int(resp, "x-ratelimit-used"),
        used,
        "{what}: X-RateLimit-Used"
    );
    assert_eq!(
        resp.header("ratelimit-policy").as_deref(),
        Some(format!("\"default\";q={limit};w={window}").as_str()),
        "{what}: RateLimit-Policy"
    );
    let (r, t) = parse_ratelimit(
        &resp
            .header("ratelimit")
            .unwrap_or_else(|| panic!("{what}: no RateLimit header")),
    );
    assert_eq!(r, limit - used, "{what}: RateLimit r");
    // The budget is whole again `used` emission intervals from now (less what refilled since
    // the first request: these tests run in well under a second).
    let full = (used as f64 * per_request).ceil() as i64;
    assert!(
        (full - 2..=full).contains(&t),
        "{what}: RateLimit t={t}, want about {full}"
    );
    let reset = int(resp, "x-ratelimit-reset");
    assert!(
        (before.floor() as i64 + t - 1..=after.ceil() as i64 + t + 1).contains(&reset),
        "{what}: X-RateLimit-Reset {reset} is not now ({before:.3}..{after:.3}) + t ({t})"
    );
    t
}

fn assert_no_rate_headers(what: &str, resp: &Fetched) {
    for name in RATE_HEADERS {
        assert!(
            resp.header(name).is_none(),
            "{what}: unexpected {name}: {:?}",
            resp.header(name)
        );
    }
}

#[tokio::test]
async fn five_per_minute_gets_five_200s_then_429() {
    let upstream = Upstream::start();
    let limited = TestToken::builder("limited")
        .rate_limit(per_minute(5))
        .build();
    let other = TestToken::builder("other")
        .rate_limit(per_minute(5))
        .build();
    let proxy = Setup::new(&upstream.url())
        .with_tokens(&[&limited, &other])
        .start()
        .await;
    let client = client();

    for used in 1..=5 {
        let before = unix_now();
        let resp = http_get(&client, &proxy.url("/limited"), Some(&limited.auth())).await;
        let after = unix_now();
        assert_eq!(resp.status, 200, "request {used}: {}", resp.body);
        check_headers(
            &format!("request {used}"),
            &resp,
            5,
            60,
            used,
            before,
            after,
        );
        assert!(
            resp.header("retry-after").is_none(),
            "request {used}: Retry-After on a 200"
        );
    }

    for attempt in 6..=7 {
        let before = unix_now();
        let resp = http_get(&client, &proxy.url("/limited"), Some(&limited.auth())).await;
        let after = unix_now();
        let what = format!("request {attempt}");
        assert_eq!(resp.status, 429, "{what}: {}", resp.body);
        assert!(
            resp.header("content-type")
                .is_some_and(|c| c.starts_with("application/json")),
            "{what}: Content-Type"
        );
        let body: Value = serde_json::from_str(&resp.body)
            .unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {}", resp.body));
        assert_eq!(body["error"], "rate_limited", "{what}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {body}"
        );
        let retry_after = int(&resp, "retry-after");
        assert!(
            (1..=12).contains(&retry_after),
            "{what}: Retry-After {retry_after}, want 1..=12 (one request refills every 12 s)"
        );
        assert_eq!(
            body["retry_after"], retry_after,
            "{what}: retry_after in the body vs the header"
        );
        check_headers(&what, &resp, 5, 60, 5, before, after);
        assert!(
            resp.header("www-authenticate").is_none(),
            "{what}: a 429 is no challenge"
        );
    }
    assert_eq!(
        upstream.count_token(&limited.id),
        5,
        "the upstream must see exactly the five allowed requests"
    );

    // Another token is unaffected.
    let before = unix_now();
    let resp = http_get(&client, &proxy.url("/other"), Some(&other.auth())).await;
    let after = unix_now();
    assert_eq!(resp.status, 200, "{}", resp.body);
    check_headers("other token", &resp, 5, 60, 1, before, after);
    assert_eq!(upstream.count_token(&other.id), 1);
    println!("[ratelimit] 5/1m: five 200s (Remaining 4..0), then 429; upstream saw 5");
}

#[tokio::test]
async fn unlimited_token_has_no_rate_limit_headers() {
    let upstream = Upstream::start();
    let free = TestToken::builder("free")
        .rate_limit(json!("unlimited"))
        .build();
    let capped = TestToken::read("capped");
    let proxy = Setup::new(&upstream.url())
        .with_tokens(&[&free, &capped])
        .set("rate_limit", json!({"requests": 2, "period": "1m"}))
        .start()
        .await;
    let client = client();
    for i in 0..6 {
        let resp = http_get(&client, &proxy.url("/free"), Some(&free.auth())).await;
        assert_eq!(resp.status, 200, "unlimited request {i}: {}", resp.body);
        assert_no_rate_headers(&format!("unlimited request {i}"), &resp);
    }
    let whoami = http_get(&client, &proxy.url("/_tollgate/whoami"), Some(&free.auth())).await;
    assert_eq!(whoami.status, 200);
    let body: Value = serde_json::from_str(&whoami.body).expect("whoami JSON");
    assert_eq!(
        body["rate_limit"],
        Value::Null,
        "whoami of an unlimited token: {body}"
    );
    assert_no_rate_headers("whoami (unlimited)", &whoami);

    // The same proxy's default still limits the token without an override.
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(
                http_get(&client, &proxy.url("/capped"), Some(&capped.auth()))
                    .await
                    .status,
            );
        }
        v
    };
    assert_eq!(statuses, vec![200, 200, 429], "config default 2/1m");
    // Refusals before authentication carry no rate-limit state.
    let resp = http_get(&client, &proxy.url("/x"), None).await;
    assert_eq!(resp.status, 401);
    assert_no_rate_headers("401", &resp);
}

#[tokio::test]
async fn config_default_applies_to_tokens_without_an_override() {
    let upstream = Upstream::start();
    let plain = TestToken::read("plain");

    // rate_limit: {requests: 3, period: 1m}
    let proxy = Setup::new(&upstream.url())
        .with_tokens(&[&plain])
        .set("rate_limit", json!({"requests": 3, "period": "1m"}))
        .start()
        .await;
    let client = client();
    for used in 1..=3 {
        let before = unix_now();
        let resp = http_get(&client, &proxy.url("/d"), Some(&plain.auth())).await;
        let after = unix_now();
        assert_eq!(resp.status, 200);
        check_headers(
            &format!("default 3/1m, request {used}"),
            &resp,
            3,
            60,
            used,
            before,
            after,
        );
    }
    let resp = http_get(&client, &proxy.url("/d"), Some(&plain.auth())).await;
    assert_eq!(resp.status, 429, "4th request under a default of 3/1m");
    assert!((1..=20).contains(&int(&resp, "retry-after")));
    drop(proxy);

    // No rate_limit key: 1000 per hour.
    let proxy = Setup::new(&upstream.url())
        .with_tokens(&[&plain])
        .start()
        .await;
    let before = unix_now();
    let resp = http_get(&client, &proxy.url("/d"), Some(&plain.auth())).await;
    let after = unix_now();
    assert_eq!(resp.status, 200);
    check_headers("built-in default", &resp, 1000, 3600, 1, before, after);
    drop(proxy);

    // rate_limit: unlimited
    let proxy = Setup::new(&upstream.url())
        .with_tokens(&[&plain])
        .set("rate_limit", json!("unlimited"))
        .start()
        .await;
    let resp = http_get(&client, &proxy.url("/d"), Some(&plain.auth())).await;
    assert_eq!(resp.status, 200);
    assert_no_rate_headers("config unlimited", &resp);
}

#[tokio::test]
async fn api_and_cli_overrides_apply() {
    let upstream = Upstream::start();
    let boot = basic("boot", "Bootstrap-secret-for-rate-tests");
    let proxy = Setup::new(&upstream.url())
        .set("rate_limit", json!({"requests": 100, "period": "1h"}))
        .env(
            "TOLLGATE_BOOTSTRAP_TOKEN",
            "boot:Bootstrap-secret-for-rate-tests",
        )
        .start()
        .await;
    let client = client();

    let resp = proxy
        .api(
            "POST",
            "/api/v1/tokens",
            Some(&boot),
            Some(
                &json!({"name": "api-limited", "permission": "read", "rate_limit": per_minute(2)}),
            ),
        )
        .await;
    let record = resp.expect(201);
    assert_eq!(record["rate_limit"], per_minute(2), "{record}");
    let auth = format!("Bearer {}", record["token"].as_str().expect("token"));
    let id = record["id"].as_str().expect("id").to_owned();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let resp = http_get(&client, &proxy.url("/api"), Some(&auth)).await;
        statuses.push(resp.status);
        assert_eq!(int(&resp, "x-ratelimit-limit"), 2);
    }
    assert_eq!(statuses, vec![200, 200, 429], "API-created 2/1m");

    // PATCH to unlimited: the next request passes, without headers.
    proxy
        .api(
            "PATCH",
            &format!("/api/v1/tokens/{id}"),
            Some(&boot),
            Some(&json!({"rate_limit": "unlimited"})),
        )
        .await
        .expect(200);
    let resp = http_get(&client, &proxy.url("/api"), Some(&auth)).await;
    assert_eq!(resp.status, 200, "after PATCH unlimited: {}", resp.body);
    assert_no_rate_headers("after PATCH unlimited", &resp);
    // PATCH null: back to the configured default.
    let v = proxy
        .api(
            "PATCH",
            &format!("/api/v1/tokens/{id}"),
            Some(&boot),
            Some(&json!({"rate_limit": null})),
        )
        .await
        .expect(200);
    assert_eq!(v["rate_limit"], Value::Null);
    let resp = http_get(&client, &proxy.url("/api"), Some(&auth)).await;
    assert_eq!(resp.status, 200);
    assert_eq!(int(&resp, "x-ratelimit-limit"), 100, "back to the default");
    assert_eq!(
        resp.header("ratelimit-policy").as_deref(),
        Some("\"default\";q=100;w=3600")
    );

    // CLI --rate-limit
    let out = proxy
        .cli(
            &[
                "token",
                "create",
                "--name",
                "cli-limited",
                "--permission",
                "read",
                "--rate-limit",
                "1/1m",
                "--output",
                "json",
            ],
            None,
        )
        .await;
    assert!(out.status.success(), "{out:?}");
    let token = out
        .stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .expect("token line")
        .trim()
        .to_owned();
    let auth = format!("Bearer {token}");
    poll_until(Duration::from_secs(1), || async {
        http_get(&client, &proxy.url("/cli-probe"), Some(&auth))
            .await
            .status
            != 401
    })
    .await
    .expect("CLI token visible within 1 s");
    // The probe above used the one allowed request.
    let resp = http_get(&client, &proxy.url("/cli"), Some(&auth)).await;
    assert_eq!(resp.status, 429, "CLI 1/1m, second request: {}", resp.body);
    assert_eq!(int(&resp, "x-ratelimit-limit"), 1);
}

#[tokio::test]
async fn rate_headers_on_refusals_and_upstream_errors() {
    let upstream = Upstream::start();
    let scoped = TestToken::builder("scoped")
        .route("/a/**", "read")
        .rate_limit(per_minute(5))
        .build();
    let proxy = Setup::new(&upstream.url())
        .with_tokens(&[&scoped])
        .start()
        .await;
    let client = client();
    let before = unix_now();
    let resp = http_get(&client, &proxy.url("/b/x"), Some(&scoped.auth())).await;
    let after = unix_now();
    assert_eq!(resp.status, 403);
    check_headers("403", &resp, 5, 60, 1, before, after);
    drop(proxy);

    let proxy = Setup::new(&down_upstream_url())
        .with_tokens(&[&scoped])
        .start()
        .await;
    let before = unix_now();
    let resp = http_get(&client, &proxy.url("/a/x"), Some(&scoped.auth())).await;
    let after = unix_now();
    assert_eq!(resp.status, 502, "{}", resp.body);
    check_headers("502", &resp, 5, 60, 1, before, after);
}

#[tokio::test]
async fn whoami_shows_the_rate_limit_state() {
    let upstream = Upstream::start();
    let limited = TestToken::builder("limited")
        .rate_limit(per_minute(5))
        .build();
    let proxy = Setup::new(&upstream.url())
        .with_tokens(&[&limited])
        .start()
        .await;
    let client = client();
    for _ in 0..2 {
        assert_eq!(
            http_get(&client, &proxy.url("/x"), Some(&limited.auth()))
                .await
                .status,
            200
        );
    }
    for round in 0..2 {
        let before = unix_now();
        let resp = http_get(
            &client,
            &proxy.url("/_tollgate/whoami"),
            Some(&limited.auth()),
        )
        .await;
        let after = unix_now();
        assert_eq!(resp.status, 200, "{}", resp.body);
        let body: Value = serde_json::from_str(&resp.body).expect("whoami JSON");
        let rate = &body["rate_limit"];
        assert_eq!(rate["limit"], 5, "whoami {round}: {body}");
        assert_eq!(
            rate["remaining"], 3,
            "whoami {round} (whoami itself is not counted): {body}"
        );
        assert_eq!(rate["used"], 2, "whoami {round}: {body}");
        assert_eq!(rate["period_seconds"], 60, "whoami {round}: {body}");
        let reset = rate["reset"]
            .as_i64()
            .unwrap_or_else(|| panic!("reset: {body}"));
        assert!(
            (before as i64 + 22..=after.ceil() as i64 + 25).contains(&reset),
            "whoami {round}: reset {reset}, want about now + 24 ({before:.0})"
        );
        check_headers(&format!("whoami {round}"), &resp, 5, 60, 2, before, after);
    }
    assert_eq!(upstream.count(), 2, "whoami never reaches the upstream");

    for _ in 0..4 {
        let _ = http_get(&client, &proxy.url("/x"), Some(&limited.auth())).await;
    }
    let resp = http_get(
        &client,
        &proxy.url("/_tollgate/whoami"),
        Some(&limited.auth()),
    )
    .await;
    assert_eq!(
        resp.status, 200,
        "whoami works with a spent budget: {}",
        resp.body
    );
    let body: Value = serde_json::from_str(&resp.body).expect("whoami JSON");
    assert_eq!(body["rate_limit"]["remaining"], 0, "{body}");
    assert_eq!(body["rate_limit"]["used"], 5, "{body}");
}

#[tokio::test]
async fn metrics_move_by_exactly_the_traffic_sent() {
    let upstream = Upstream::start();
    let small = TestToken::builder("small")
        .rate_limit(per_minute(2))
        .build();
    let reader = TestToken::read("reader");
    let wrong = TestToken::builder("wrong")
        .stored_secret("not the secret that was handed out")
        .build();
    let proxy = Setup::new(&upstream.url())
        .with_tokens(&[&small, &reader, &wrong])
        .start()
        .await;
    let client = client();
    let before = proxy.metrics_text().await;

    // small: 2 × 200, 1 × 429.
    for _ in 0..3 {
        http_get(&client, &proxy.url("/m/small"), Some(&small.auth())).await;
    }
    // reader: 4 × GET 200, 1 × HEAD 200, 1 × PUT 403.
    for _ in 0..4 {
        http_get(&client, &proxy.url("/m/reader"), Some(&reader.auth())).await;
    }
    assert_eq!(
        http_send(
            &client,
            "HEAD",
            &proxy.url("/m/head"),
            Some(&reader.auth()),
            None
        )
        .await
        .status,
        200
    );
    assert_eq!(
        http_send(
            &client,
            "PUT",
            &proxy.url("/m/put"),
            Some(&reader.auth()),
            Some("x")
        )
        .await
        .status,
        403
    );
    // 2 × no credentials, 1 × wrong secret.
    for _ in 0..2 {
        assert_eq!(
            http_get(&client, &proxy.url("/m/none"), None).await.status,
            401
        );
    }
    assert_eq!(
        http_get(&client, &proxy.url("/m/wrong"), Some(&wrong.auth()))
            .await
            .status,
        401
    );
    let total_requests = 12.0;

    // Metrics are recorded as each request is logged, just after its response: wait for all.
    let counted = poll_until(Duration::from_secs(5), || async {
        metric_sum(&proxy.metrics_text().await, "tollgate_requests_total")
            - metric_sum(&before, "tollgate_requests_total")
            >= total_requests
    })
    .await;
    let after = proxy.metrics_text().await;
    assert!(
        counted.is_some(),
        "requests_total did not reach +{total_requests}:\n{after}"
    );
    let delta = |series: &str| {
        metric_value(&after, series).unwrap_or(0.0) - metric_value(&before, series).unwrap_or(0.0)
    };
    let sum_delta = |name: &str| metric_sum(&after, name) - metric_sum(&before, name);

    let expected: Vec<(&str, f64)> = vec![
        (r#"tollgate_requests_total{outcome="ok",method="GET"}"#, 6.0),
        (
            r#"tollgate_requests_total{outcome="ok",method="HEAD"}"#,
            1.0,
        ),
        (
            r#"tollgate_requests_total{outcome="rate_limited",method="GET"}"#,
            1.0,
        ),
        (
            r#"tollgate_requests_total{outcome="forbidden",method="PUT"}"#,
            1.0,
        ),
        (
            r#"tollgate_requests_total{outcome="credentials_missing",method="GET"}"#,
            2.0,
        ),
        (
            r#"tollgate_requests_total{outcome="token_invalid",method="GET"}"#,
            1.0,
        ),
        ("tollgate_rate_limited_total", 1.0),
        (r#"tollgate_verifications_total{result="ok"}"#, 2.0),
        (
            r#"tollgate_verifications_total{result="wrong_secret"}"#,
            1.0,
        ),
        // small: 1 miss + 2 hits; reader: 1 miss + 5 hits; wrong: 1 miss.
        ("tollgate_auth_cache_hits_total", 7.0),
        ("tollgate_auth_cache_misses_total", 3.0),
        ("tollgate_upstream_duration_seconds_count", 7.0),
    ];
    let mut failures = Vec::new();
    for (series, want) in &expected {
        let got = delta(series);
        if got != *want {
            failures.push(format!("{series}: moved by {got}, want {want}"));
        }
    }
    for (name, want) in [
        ("tollgate_requests_total", total_requests),
        ("tollgate_request_duration_seconds_count", total_requests),
        ("tollgate_upstream_errors_total", 0.0),
        ("tollgate_verification_duration_seconds_count", 3.0),
    ] {
        let got = sum_delta(name);
        if got != want {
            failures.push(format!("sum of {name}: moved by {got}, want {want}"));
        }
    }
    let version = env!("CARGO_PKG_VERSION");
    if metric_value(
        &after,
        &format!("tollgate_build_info{{version=\"{version}\"}}"),
    ) != Some(1.0)
    {
        failures.push(format!(
            "tollgate_build_info{{version=\"{version}\"}} is not 1"
        ));
    }
    // Bounded labels: no token ids, names or paths.
    for needle in [
        small.id.as_str(),
        reader.id.as_str(),
        "\"small\"",
        "\"reader\"",
        "/m/",
    ] {
        if after.contains(needle) {
            failures.push(format!("metrics contain {needle:?}"));
        }
    }
    assert_eq!(upstream.count(), 7, "forwarded requests");
    println!(
        "[ratelimit] metrics after 12 requests: {} series checked, {} mismatches",
        expected.len() + 5,
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{}\nmetrics:\n{after}",
        failures.join("\n")
    );

    // Upstream failures are counted by kind.
    let down = Setup::new(&down_upstream_url())
        .with_tokens(&[&reader])
        .start()
        .await;
    let resp = http_get(&client, &down.url("/m/down"), Some(&reader.auth())).await;
    assert_eq!(resp.status, 502);
    let counted = poll_until(Duration::from_secs(5), || async {
        down.metric(r#"tollgate_requests_total{outcome="upstream_unavailable",method="GET"}"#)
            .await
            == 1.0
    })
    .await;
    let text = down.metrics_text().await;
    assert!(
        counted.is_some(),
        "requests_total{{outcome=upstream_unavailable}}:\n{text}"
    );
    assert_eq!(
        metric_value(&text, r#"tollgate_upstream_errors_total{kind="connect"}"#),
        Some(1.0),
        "{text}"
    );
}
