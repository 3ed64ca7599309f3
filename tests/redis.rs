//! Rate limits shared by replicas on a real `redis-server` (`rate_limit.backend`): three
//! replicas of one 100/min token admit no more than the limit plus the leases outstanding; a
//! rollout keeps the budget used; an outage of Redis falls back to each replica's own limiter
//! (no 5xx) or, with `on_backend_error: deny`, refuses; Redis back, the limit is shared again.

mod common;

use std::time::{Duration, Instant};

use common::redis_server::RedisServer;
use common::*;
use serde_json::{json, Value};

/// Lease cap of a 100/min token: 5 % of it (under the default `rate_limit.lease` of 100).
const LEASE_100: u32 = 5;

fn per_minute(n: u32) -> Value {
    json!({"requests": n, "period": "1m"})
}

/// A replica on `redis`, with the token file `tokens`. The backend timeout is raised from its
/// 50 ms default: on a loaded test machine a debug build can miss 50 ms and fall back to its
/// local limiter, which this file tests separately.
fn replica(upstream: &Upstream, redis: &RedisServer, tokens: &[&TestToken]) -> Setup {
    Setup::new(&upstream.url()).with_tokens(tokens).set(
        "rate_limit",
        json!({"backend": redis.url(), "backend_timeout": "1s"}),
    )
}

/// Waits until `replica` reports the backend up (or down, with `up` false).
async fn wait_backend(replica: &Tollgate, up: bool, within: Duration) {
    let want = if up { 1.0 } else { 0.0 };
    let deadline = Instant::now() + within;
    loop {
        if replica.metric("tollgate_ratelimit_backend_up").await == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "backend_up never became {want} within {within:?}; log:\n{}",
            replica.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn start_replicas(n: usize, setup: impl Fn() -> Setup) -> Vec<Tollgate> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(setup().start().await);
    }
    for r in &out {
        wait_backend(r, true, Duration::from_secs(10)).await;
    }
    out
}

/// Sends `n` GETs spread round-robin over `replicas`; returns the statuses.
async fn spread(replicas: &[Tollgate], token: &TestToken, n: usize) -> Vec<u16> {
    let client = client();
    let mut statuses = Vec::with_capacity(n);
    for i in 0..n {
        let r = &replicas[i % replicas.len()];
        let resp = http_get(&client, &r.url("/pkg/file"), Some(&token.auth())).await;
        statuses.push(resp.status);
    }
    statuses
}

/// Sends `n` GETs spread round-robin over `replicas`, `in_flight` at a time; the statuses.
async fn spread_concurrently(
    replicas: &[Tollgate],
    token: &TestToken,
    n: usize,
    in_flight: usize,
) -> Vec<u16> {
    let client = client();
    let mut statuses = Vec::with_capacity(n);
    let urls: Vec<String> = (0..n)
        .map(|i| replicas[i % replicas.len()].url("/pkg/file"))
        .collect();
    for wave in urls.chunks(in_flight) {
        let auth = token.auth();
        let answers = futures_util::future::join_all(
            wave.iter().map(|url| http_get(&client, url, Some(&auth))),
        )
        .await;
        statuses.extend(answers.iter().map(|a| a.status));
    }
    statuses
}

fn count(statuses: &[u16], status: u16) -> u32 {
    statuses.iter().filter(|s| **s == status).count() as u32
}

/// Requests the budget refills during `elapsed` at `per_minute`, rounded up.
fn refilled(elapsed: Duration, per_minute: u32) -> u32 {
    (elapsed.as_secs_f64() * f64::from(per_minute) / 60.0).ceil() as u32
}

#[tokio::test]
async fn three_replicas_share_one_budget_within_the_lease_bound() {
    let redis = RedisServer::start();
    let upstream = Upstream::start();
    let token = TestToken::builder("shared")
        .rate_limit(per_minute(100))
        .build();
    let replicas = start_replicas(3, || replica(&upstream, &redis, &[&token])).await;

    let started = Instant::now();
    // 30 requests in flight at a time: replicas ask for leases concurrently.
    let statuses = spread_concurrently(&replicas, &token, 300, 30).await;
    let elapsed = started.elapsed();
    let admitted = count(&statuses, 200);
    let refused = count(&statuses, 429);
    assert_eq!(admitted + refused, 300, "only 200 and 429: {statuses:?}");
    // The documented bound: the limit, plus one lease per replica, plus what refilled meanwhile.
    let bound = 100 + 3 * LEASE_100 + refilled(elapsed, 100);
    eprintln!("3 replicas, 100/min: {admitted} of 300 admitted in {elapsed:?} (bound {bound})");
    assert!(
        admitted <= bound,
        "{admitted} admitted across 3 replicas in {elapsed:?}; bound {bound}"
    );
    // Unspent leases are lost, never more than one per replica.
    assert!(
        admitted >= 100 - 3 * LEASE_100,
        "only {admitted} admitted of a budget of 100"
    );
    assert_eq!(
        upstream.count() as u32,
        admitted,
        "the upstream saw each admitted request"
    );
    // Every replica refuses now, with the rate-limit fields of a spent budget.
    let client = client();
    for r in &replicas {
        let resp = http_get(&client, &r.url("/pkg/file"), Some(&token.auth())).await;
        assert_eq!(resp.status, 429, "{}", resp.body);
        assert_eq!(resp.error_code().as_deref(), Some("rate_limited"));
        assert_eq!(resp.header("x-ratelimit-limit").as_deref(), Some("100"));
        assert_eq!(resp.header("x-ratelimit-remaining").as_deref(), Some("0"));
        assert!(resp.header("retry-after").is_some());
        assert_eq!(
            resp.header("ratelimit-policy").as_deref(),
            Some("\"default\";q=100;w=60")
        );
    }
    // The state lives in Redis, under the token's id.
    let keys = redis.command(&format!("KEYS tollgate:rl:{}:*", token.id));
    assert!(keys.contains(&*token.id), "no key in Redis: {keys}");

    // After the window, the whole budget is back, on every replica.
    tokio::time::sleep(Duration::from_secs(61)).await;
    let again = spread(&replicas, &token, 90).await;
    assert_eq!(count(&again, 200), 90, "after the window: {again:?}");
}

#[tokio::test]
async fn a_rollout_keeps_the_budget_used() {
    let redis = RedisServer::start();
    let upstream = Upstream::start();
    let token = TestToken::builder("rolled")
        .rate_limit(per_minute(100))
        .build();
    let mut replicas = start_replicas(2, || replica(&upstream, &redis, &[&token])).await;
    let started = Instant::now();
    let before = spread(&replicas, &token, 80).await;
    assert_eq!(count(&before, 200), 80, "{before:?}");

    // Every replica restarts (a Kubernetes rollout).
    for r in &mut replicas {
        r.stop_gracefully(Duration::from_secs(10)).await;
        r.restart().await;
    }
    for r in &replicas {
        wait_backend(r, true, Duration::from_secs(10)).await;
    }
    let after = spread(&replicas, &token, 100).await;
    let admitted = count(&after, 200);
    // 20 were left (less up to one unspent lease per replica before the restart), plus what
    // refilled meanwhile, plus the new leases: never the 100 of a fresh budget.
    let bound = 20 + 2 * LEASE_100 + refilled(started.elapsed(), 100);
    assert!(
        admitted <= bound,
        "{admitted} admitted after the rollout; at most {bound} were left"
    );
    assert!(
        admitted >= 1,
        "nothing admitted after the rollout: {after:?}"
    );
    assert_eq!(count(&after, 429), 100 - admitted, "{after:?}");
}

#[tokio::test]
async fn a_redis_outage_falls_back_to_local_limits_and_sharing_resumes() {
    let mut redis = RedisServer::start();
    let upstream = Upstream::start();
    let busy = TestToken::builder("busy")
        .rate_limit(per_minute(1000))
        .build();
    let small = TestToken::builder("small")
        .rate_limit(per_minute(10))
        .build();
    let replicas = start_replicas(2, || replica(&upstream, &redis, &[&busy, &small])).await;
    let first = spread(&replicas, &busy, 20).await;
    assert_eq!(count(&first, 200), 20, "{first:?}");

    redis.kill();
    // Requests keep being answered from the start of the outage: never a 5xx.
    let during = spread(&replicas, &busy, 60).await;
    assert_eq!(count(&during, 200), 60, "during the outage: {during:?}");
    for r in &replicas {
        wait_backend(r, false, Duration::from_secs(5)).await;
    }
    let during = spread(&replicas, &busy, 20).await;
    assert_eq!(count(&during, 200), 20, "during the outage: {during:?}");
    // The local limiter applies meanwhile: each replica has the small token's whole budget.
    let client = client();
    for r in &replicas {
        for i in 0..10 {
            let resp = http_get(&client, &r.url("/pkg/x"), Some(&small.auth())).await;
            assert_eq!(resp.status, 200, "local request {i}: {}", resp.body);
        }
        let resp = http_get(&client, &r.url("/pkg/x"), Some(&small.auth())).await;
        assert_eq!(resp.status, 429, "the local limit: {}", resp.body);
    }

    redis.resume();
    for r in &replicas {
        wait_backend(r, true, Duration::from_secs(5)).await;
    }
    // Shared again: ten requests of a fresh 10/min token through one replica spend its budget
    // for the other too.
    let fresh = TestToken::builder("fresh")
        .rate_limit(per_minute(10))
        .build();
    for r in &replicas {
        std::fs::write(&r.setup.tokens_path, tokens_yaml(&[&busy, &small, &fresh]))
            .expect("write token file");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for r in &replicas {
        while http_get(&client, &r.url("/_tollgate/whoami"), Some(&fresh.auth()))
            .await
            .status
            != 200
        {
            assert!(Instant::now() < deadline, "the new token never loaded");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for i in 0..10 {
        let resp = http_get(&client, &replicas[0].url("/pkg/y"), Some(&fresh.auth())).await;
        assert_eq!(resp.status, 200, "shared request {i}: {}", resp.body);
    }
    let resp = http_get(&client, &replicas[1].url("/pkg/y"), Some(&fresh.auth())).await;
    assert_eq!(
        resp.status, 429,
        "the other replica shares the spent budget: {}",
        resp.body
    );

    // One warning for the outage per replica, one line when it was back.
    for r in &replicas {
        let logs = r.logs();
        assert_eq!(
            logs.matches("rate-limit backend unreachable").count(),
            1,
            "log:\n{logs}"
        );
        assert!(logs.matches("rate-limit backend reachable").count() >= 2);
    }
}

#[tokio::test]
async fn deny_refuses_limited_requests_during_an_outage_and_hides_the_password() {
    let mut redis = RedisServer::start_with_password(Some("s3cretRedisPw"));
    let upstream = Upstream::start();
    let limited = TestToken::builder("limited")
        .rate_limit(per_minute(1000))
        .build();
    let free = TestToken::builder("free")
        .rate_limit(json!("unlimited"))
        .build();
    let replicas = start_replicas(1, || {
        replica(&upstream, &redis, &[&limited, &free]).set(
            "rate_limit",
            json!({"backend": redis.url(), "backend_timeout": "1s", "on_backend_error": "deny"}),
        )
    })
    .await;
    let r = &replicas[0];
    let client = client();
    assert_eq!(
        http_get(&client, &r.url("/a"), Some(&limited.auth()))
            .await
            .status,
        200
    );

    redis.kill();
    wait_backend(r, false, Duration::from_secs(5)).await;
    // What this replica had already leased (paid for in Redis) it still serves, then refuses.
    let mut served = 0;
    let resp = loop {
        let resp = http_get(&client, &r.url("/a"), Some(&limited.auth())).await;
        if resp.status != 200 {
            break resp;
        }
        served += 1;
        assert!(
            served <= 50,
            "more than one lease (the cap of a 1000/min token: 50) served during the outage"
        );
    };
    assert_eq!(resp.status, 429, "{}", resp.body);
    assert_eq!(resp.error_code().as_deref(), Some("rate_limit_unavailable"));
    let again = http_get(&client, &r.url("/a"), Some(&limited.auth())).await;
    assert_eq!(
        again.error_code().as_deref(),
        Some("rate_limit_unavailable")
    );
    assert_eq!(resp.header("retry-after").as_deref(), Some("1"));
    // An unlimited token needs no limiter.
    let resp = http_get(&client, &r.url("/a"), Some(&free.auth())).await;
    assert_eq!(resp.status, 200, "{}", resp.body);

    redis.resume();
    wait_backend(r, true, Duration::from_secs(5)).await;
    let resp = http_get(&client, &r.url("/a"), Some(&limited.auth())).await;
    assert_eq!(resp.status, 200, "{}", resp.body);

    let metrics = r.metrics_text().await;
    assert!(metrics.contains("tollgate_ratelimit_backend_duration_seconds_count"));
    for text in [r.logs(), metrics] {
        assert!(
            !text.contains("s3cretRedisPw"),
            "the password leaked:\n{text}"
        );
    }
    assert!(r.logs().contains("redis://:***@127.0.0.1"), "{}", r.logs());
}

#[tokio::test]
async fn a_rediss_backend_shares_limits_over_tls() {
    let redis = RedisServer::start_tls();
    let upstream = Upstream::start();
    let token = TestToken::builder("tls").rate_limit(per_minute(10)).build();
    // The client trusts the test CA through SSL_CERT_FILE (rustls-native-certs reads it).
    let ca = redis.ca_path().to_string_lossy().into_owned();
    let replicas = start_replicas(2, || {
        replica(&upstream, &redis, &[&token]).env("SSL_CERT_FILE", &ca)
    })
    .await;
    let client = client();
    for i in 0..10 {
        let resp = http_get(&client, &replicas[0].url("/t"), Some(&token.auth())).await;
        assert_eq!(resp.status, 200, "request {i}: {}", resp.body);
    }
    let resp = http_get(&client, &replicas[1].url("/t"), Some(&token.auth())).await;
    assert_eq!(
        resp.status, 429,
        "the budget is shared over TLS: {}",
        resp.body
    );
}

// ---------------------------------------------------------------------------------------------
// Quotas
// ---------------------------------------------------------------------------------------------

/// A read token with `quota` (and no rate limit).
fn quota_token(name: &str, quota: Value) -> TestToken {
    let mut t = TestToken::builder(name)
        .rate_limit(json!("unlimited"))
        .build();
    t.entry["quota"] = quota;
    t
}

/// The `quota` object of the token's whoami document.
async fn whoami_quota(replica: &Tollgate, token: &TestToken) -> Value {
    let resp = http_get(
        &client(),
        &replica.url("/_tollgate/whoami"),
        Some(&token.auth()),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let v: Value = serde_json::from_str(&resp.body).expect("whoami JSON");
    v["quota"].clone()
}

/// Waits until Redis holds at least `bytes` bytes and `requests` requests of the token's quota
/// (the replicas flush every 200 ms).
async fn wait_redis_usage(redis: &RedisServer, token: &TestToken, requests: u64, bytes: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let keys = redis.command(&format!("KEYS tollgate:quota:{}:*", token.id));
        let key = keys
            .lines()
            .find(|l| l.starts_with("tollgate:quota:"))
            .map(str::to_owned);
        if let Some(key) = key {
            let reply = redis.command(&format!("HMGET {key} requests bytes"));
            let numbers: Vec<u64> = reply
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect();
            if numbers.len() >= 2 && numbers[0] >= requests && numbers[1] >= bytes {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "Redis never held {requests} requests and {bytes} bytes: {keys}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn assert_quota_refusal(resp: &Fetched, period_secs: u64) {
    assert_eq!(resp.status, 429, "{}", resp.body);
    assert_eq!(
        resp.error_code().as_deref(),
        Some("quota_exceeded"),
        "{}",
        resp.body
    );
    let retry: u64 = resp
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("Retry-After seconds");
    // The period's end: periods are windows counted from the Unix epoch.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let end = (now / period_secs + 1) * period_secs;
    assert!(
        (end - now).saturating_sub(2) <= retry && retry <= end - now + 2,
        "Retry-After {retry}, the period ends in {}",
        end - now
    );
}

#[tokio::test]
async fn a_byte_quota_lets_a_600_kib_download_through_once_across_replicas() {
    let redis = RedisServer::start();
    let upstream = Upstream::start();
    let token = quota_token("downloads", json!({"bytes": "1MiB", "period": "1d"}));
    let replicas = start_replicas(2, || replica(&upstream, &redis, &[&token])).await;
    let client = client();
    let url = "/pattern?len=614400";

    let first = client
        .get(replicas[0].url(url))
        .header("authorization", token.auth())
        .send()
        .await
        .expect("first download");
    assert_eq!(first.status(), 200);
    assert_eq!(first.bytes().await.expect("body").len(), 614_400);
    wait_redis_usage(&redis, &token, 1, 614_400).await;

    // The other replica knows: a second 600 KiB would go over 1 MiB.
    for r in [&replicas[1], &replicas[0]] {
        let second = http_get(&client, &r.url(url), Some(&token.auth())).await;
        assert_quota_refusal(&second, 86_400);
    }
    let quota = whoami_quota(&replicas[1], &token).await;
    assert_eq!(quota["bytes"], 1_048_576);
    assert_eq!(quota["used"]["bytes"], 614_400, "{quota}");
    assert!(
        quota["resets_at"].as_u64().is_some_and(|t| t % 86_400 == 0),
        "{quota}"
    );
    // A small file still fits.
    let small = http_get(
        &client,
        &replicas[1].url("/pattern?len=1000"),
        Some(&token.auth()),
    )
    .await;
    assert_eq!(small.status, 200);
    assert!(
        replicas[1]
            .metric("tollgate_quota_exceeded_total{kind=\"bytes\"}")
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn a_request_quota_is_shared_and_shown_in_whoami() {
    let redis = RedisServer::start();
    let upstream = Upstream::start();
    let token = quota_token("counted", json!({"requests": 5, "period": "1h"}));
    let replicas = start_replicas(2, || replica(&upstream, &redis, &[&token])).await;
    let client = client();
    for _ in 0..3 {
        let resp = http_get(&client, &replicas[0].url("/a"), Some(&token.auth())).await;
        assert_eq!(resp.status, 200, "{}", resp.body);
    }
    wait_redis_usage(&redis, &token, 3, 0).await;
    for _ in 0..2 {
        let resp = http_get(&client, &replicas[1].url("/a"), Some(&token.auth())).await;
        assert_eq!(resp.status, 200, "{}", resp.body);
    }
    wait_redis_usage(&redis, &token, 5, 0).await;
    // whoami counts nothing; the replicas learn the total within a flush or two (polled: a
    // loaded machine can take longer than two 200 ms flushes).
    for r in &replicas {
        poll_until(Duration::from_secs(5), || async {
            whoami_quota(r, &token).await["used"]["requests"] == 5
        })
        .await;
        let quota = whoami_quota(r, &token).await;
        assert_eq!(quota["used"]["requests"], 5, "{quota}");
        assert_eq!(quota["requests"], 5);
        let resp = http_get(&client, &r.url("/a"), Some(&token.auth())).await;
        assert_quota_refusal(&resp, 3600);
    }
    assert_eq!(
        upstream.count(),
        5,
        "refused requests never reach the upstream"
    );
    assert_eq!(
        replicas[0]
            .metric("tollgate_quota_exceeded_total{kind=\"requests\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn with_token_files_only_quotas_are_counted_in_memory() {
    let upstream = Upstream::start();
    let token = quota_token(
        "local",
        json!({"requests": 2, "bytes": 2000, "period": "1h"}),
    );
    let proxy = Setup::new(&upstream.url())
        .set("tokens.database", json!("none"))
        .with_tokens(&[&token])
        .start()
        .await;
    let client = client();
    // A chunked response has no announced size: it goes through and is charged as sent.
    let chunked = http_get(
        &client,
        &proxy.url("/pattern?len=1500&chunked"),
        Some(&token.auth()),
    )
    .await;
    assert_eq!(chunked.status, 200);
    // 1500 + 1000 announced > 2000: refused before any byte of it is sent.
    let over = http_get(
        &client,
        &proxy.url("/pattern?len=1000"),
        Some(&token.auth()),
    )
    .await;
    assert_quota_refusal(&over, 3600);
    let quota = whoami_quota(&proxy, &token).await;
    assert_eq!(quota["used"]["bytes"], 1500, "{quota}");
    assert_eq!(quota["used"]["requests"], 2, "{quota}");
    let third = http_get(&client, &proxy.url("/a"), Some(&token.auth())).await;
    assert_quota_refusal(&third, 3600);
}

#[tokio::test]
async fn an_aborted_download_is_charged_what_was_sent_not_the_file_size() {
    let redis = RedisServer::start();
    let upstream = Upstream::start();
    let token = quota_token("aborts", json!({"bytes": "1GiB", "period": "1d"}));
    let replicas = start_replicas(1, || replica(&upstream, &redis, &[&token])).await;
    let r = &replicas[0];
    let client = client();
    let mut resp = client
        .get(r.url("/big"))
        .header("authorization", token.auth())
        .send()
        .await
        .expect("GET /big");
    assert_eq!(resp.status(), 200);
    let mut received = 0u64;
    while received < 1024 * 1024 {
        let chunk = resp.chunk().await.expect("chunk").expect("more body");
        received += chunk.len() as u64;
    }
    drop(resp);
    drop(client);

    // The charge settles once the proxy notices the client is gone.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = 0;
    let charged = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let used = whoami_quota(r, &token).await["used"]["bytes"]
            .as_u64()
            .expect("used bytes");
        if used == last && used > 0 {
            break used;
        }
        last = used;
        assert!(Instant::now() < deadline, "the charge never settled");
    };
    eprintln!("aborted download: received {received}, charged {charged}");
    // Charged what left the proxy: what the client read, plus what sat in the socket buffers
    // (both ends' kernel buffers and one chunk in flight) — never the 50 MiB file.
    assert!(
        charged >= received,
        "charged {charged} < received {received}"
    );
    assert!(
        charged <= received + 16 * 1024 * 1024,
        "charged {charged} for {received} received"
    );
    assert!(
        charged < BIG_LEN / 2,
        "charged {charged} of a {BIG_LEN}-byte file"
    );
}

#[tokio::test]
async fn without_redis_quotas_are_counted_in_the_database_set_by_api_and_cli() {
    let upstream = Upstream::start();
    let mut proxy = Setup::new(&upstream.url()).with_bootstrap().start().await;
    // Refused: a quota without a period, or without a limit.
    for quota in [json!({"requests": 3}), json!({"period": "1h"})] {
        proxy
            .api(
                "POST",
                "/api/v1/tokens",
                Some(&boot()),
                Some(&json!({"name": "bad", "permission": "read", "quota": quota})),
            )
            .await
            .expect_error(400, "invalid_request");
    }
    let (record, token) = proxy
        .create_token(
            &boot(),
            json!({"name": "metered", "permission": "read",
                   "quota": {"requests": 3, "bytes": "1MiB", "period": "1h"}}),
        )
        .await;
    let id = record["id"].as_str().unwrap().to_owned();
    assert_eq!(record["quota"]["requests"], 3, "{record}");
    assert_eq!(record["quota"]["bytes"], 1_048_576, "{record}");
    let client = client();
    for _ in 0..2 {
        let resp = http_get(
            &client,
            &proxy.url("/pattern?len=1000"),
            Some(&bearer(&token)),
        )
        .await;
        assert_eq!(resp.status, 200, "{}", resp.body);
    }
    // The counts reach the database within a flush; a restart keeps them.
    tokio::time::sleep(Duration::from_millis(600)).await;
    proxy.stop_gracefully(Duration::from_secs(10)).await;
    proxy.restart().await;
    let shown = proxy
        .api("GET", &format!("/api/v1/tokens/{id}"), Some(&boot()), None)
        .await
        .expect(200);
    assert_eq!(
        shown["quota"]["used"],
        json!({"requests": 2, "bytes": 2000}),
        "{shown}"
    );
    assert!(shown["quota"]["resets_at"]
        .as_u64()
        .is_some_and(|t| t % 3600 == 0));
    let resp = http_get(&client, &proxy.url("/a"), Some(&bearer(&token))).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let resp = http_get(&client, &proxy.url("/a"), Some(&bearer(&token))).await;
    assert_quota_refusal(&resp, 3600);

    // The CLI shows the definition and the usage; it changes and removes quotas.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let out = proxy
        .cli(&["token", "show", "metered", "-o", "json"], None)
        .await;
    assert!(out.status.success(), "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).expect("CLI JSON");
    assert_eq!(v["quota"]["used"]["requests"], 3, "{v}");
    let out = proxy.cli(&["token", "show", "metered"], None).await;
    assert!(
        out.stdout
            .contains("quota: 3/3 requests, 2008/1048576 bytes"),
        "{}",
        out.stdout
    );
    let out = proxy
        .cli(
            &[
                "token",
                "modify",
                "metered",
                "--quota",
                "requests=100,period=1h",
            ],
            None,
        )
        .await;
    assert!(out.status.success(), "{}", out.stderr);
    let out = proxy
        .cli(
            &[
                "token",
                "modify",
                "metered",
                "--quota",
                "requests=lots,period=1h",
            ],
            None,
        )
        .await;
    assert!(!out.status.success());
    assert!(out.stderr.contains("--quota"), "{}", out.stderr);
    let deadline = Instant::now() + Duration::from_secs(5);
    while http_get(&client, &proxy.url("/a"), Some(&bearer(&token)))
        .await
        .status
        != 200
    {
        assert!(Instant::now() < deadline, "the raised quota never applied");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = proxy
        .cli(
            &[
                "token",
                "create",
                "--name",
                "cli-metered",
                "--permission",
                "read",
                "--quota",
                "bytes=50GiB,period=30d",
                "-o",
                "json",
            ],
            None,
        )
        .await;
    assert!(out.status.success(), "{}", out.stderr);
    let created: Value = serde_json::from_str(&out.stdout).expect("CLI JSON");
    assert_eq!(created["quota"]["bytes"], 50u64 << 30, "{created}");
    // PATCH null removes it.
    let patched = proxy
        .api(
            "PATCH",
            &format!("/api/v1/tokens/{id}"),
            Some(&boot()),
            Some(&json!({"quota": null})),
        )
        .await
        .expect(200);
    assert!(patched["quota"].is_null(), "{patched}");
}
