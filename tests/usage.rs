//! The usage ledger through the real binary: downloads by two tokens are counted exactly per
//! day (API and CLI), the reverse lookup by path names both tokens, rows past the retention are
//! purged, and a restart keeps what was flushed. The flood of distinct paths is in
//! `usage/flood.rs`, the ledger keyed by package in `usage/packages.rs`.

mod common;
#[path = "usage/flood.rs"]
mod flood;
#[path = "usage/packages.rs"]
mod packages;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use sqlx::Row;

fn today() -> String {
    chrono::Utc::now().date_naive().to_string()
}

/// The ledger's SQLite database of a test's server.
async fn sqlite(t: &Tollgate) -> sqlx::SqlitePool {
    let path = t.setup.dir.path().join("data/tollgate.db");
    sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("open the ledger database")
}

async fn token_usage(t: &Tollgate, id: &str) -> Value {
    t.api(
        "GET",
        &format!("/api/v1/tokens/{id}/usage"),
        Some(&boot()),
        None,
    )
    .await
    .expect(200)
}

/// Polls the usage API until the token's requests today reach `n`.
async fn wait_requests(t: &Tollgate, id: &str, n: i64) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = t
            .api(
                "GET",
                &format!("/api/v1/tokens/{id}/usage"),
                Some(&boot()),
                None,
            )
            .await;
        // 503 while a separate usage database is still being opened (migrated) at start.
        let last = if r.status == 503 {
            Value::Null
        } else {
            r.expect(200)
        };
        if last["days"][0]["requests"].as_i64() == Some(n) {
            return last;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "usage of {id} never reached {n}: {last}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn downloads_by_two_tokens_are_counted_exactly_and_the_reverse_lookup_names_both() {
    let upstream = Upstream::start();
    let a = TestToken::read("alice");
    let b = TestToken::builder("bob")
        .route("/files/a.txt", "read")
        .build();
    let t = Setup::new(&upstream.url())
        .with_tokens(&[&a, &b])
        .with_bootstrap()
        .set("usage", json!({"flush_interval": "200ms"}))
        .start()
        .await;
    let client = client();
    for _ in 0..5 {
        let r = http_get(&client, &t.url("/files/a.txt"), Some(&a.auth())).await;
        assert_eq!(r.status, 200);
    }
    for _ in 0..3 {
        assert_eq!(
            http_get(&client, &t.url("/files/a.txt"), Some(&b.auth()))
                .await
                .status,
            200
        );
    }
    // Normalized before counting: the same path.
    assert_eq!(
        http_get(&client, &t.url("/files/./a.txt"), Some(&b.auth()))
            .await
            .status,
        200
    );
    // Refused after verification: counted as a 4xx of its path.
    assert_eq!(
        http_get(&client, &t.url("/files/b.txt"), Some(&b.auth()))
            .await
            .status,
        403
    );
    // A wrong token is nobody's usage.
    assert_eq!(
        http_get(&client, &t.url("/files/a.txt"), Some(&unknown_token()))
            .await
            .status,
        401
    );
    let body_len = "hello /files/a.txt".len() as i64;

    let ua = wait_requests(&t, &a.id, 5).await;
    let day = &ua["days"][0];
    assert_eq!(ua["days"].as_array().unwrap().len(), 1, "{ua}");
    assert_eq!(day["day"], today());
    assert_eq!(day["bytes_sent"].as_i64(), Some(5 * body_len), "{ua}");
    assert_eq!(day["status"]["2xx"], 5);
    assert_eq!(day["addresses"], 1);
    assert_eq!(ua["token"]["name"], "alice");
    assert_eq!(ua["paths"][0]["key"], "/files/a.txt");

    let ub = wait_requests(&t, &b.id, 5).await;
    let day = &ub["days"][0];
    assert_eq!(day["status"]["2xx"], 4, "{ub}");
    assert_eq!(day["status"]["4xx"], 1, "{ub}");
    // The four files and the 403's JSON body.
    assert!(day["bytes_sent"].as_i64().unwrap() > 4 * body_len, "{ub}");

    let rev = t
        .api(
            "GET",
            "/api/v1/usage?path=/files/a.txt",
            Some(&boot()),
            None,
        )
        .await
        .expect(200);
    let tokens = rev["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 2, "{rev}");
    assert_eq!(tokens[0]["token_id"], a.id.as_str());
    assert_eq!(tokens[0]["token_name"], "alice");
    assert_eq!(tokens[0]["requests"], 5);
    assert_eq!(tokens[0]["bytes_sent"].as_i64(), Some(5 * body_len));
    assert_eq!(tokens[0]["days"], 1);
    assert_eq!(tokens[0]["addresses"], 1);
    assert_eq!(tokens[1]["token_id"], b.id.as_str());
    assert_eq!(tokens[1]["requests"], 4);
    assert!(tokens[0]["first_at"].is_string() && tokens[0]["last_at"].is_string());
    // Nobody fetched it, or not in that range.
    let none = t
        .api("GET", "/api/v1/usage?path=/files/zzz", Some(&boot()), None)
        .await
        .expect(200);
    assert_eq!(none["tokens"], json!([]));
    let old = t
        .api(
            "GET",
            "/api/v1/usage?path=/files/a.txt&from=2020-01-01&to=2020-01-31",
            Some(&boot()),
            None,
        )
        .await
        .expect(200);
    assert_eq!(old["tokens"], json!([]));
    // Without layouts every download is keyed by path: a package lookup finds nobody.
    let none = t
        .api(
            "GET",
            "/api/v1/usage?package=acme/widget",
            Some(&boot()),
            None,
        )
        .await
        .expect(200);
    assert_eq!(none["tokens"], json!([]));

    // Bad input is a clear 400; the API needs a manager.
    for bad in [
        "/api/v1/usage",
        "/api/v1/usage?path=/x&from=yesterday",
        "/api/v1/usage?path=/x&from=2026-12-02&to=2026-01-01",
        "/api/v1/usage?path=/x;y",
    ] {
        t.api("GET", bad, Some(&boot()), None)
            .await
            .expect_error(400, "invalid_request");
    }
    t.api(
        "GET",
        &format!("/api/v1/tokens/{}/usage?granularity=hour", a.id),
        Some(&boot()),
        None,
    )
    .await
    .expect_error(400, "invalid_request");
    let r = t
        .api(
            "GET",
            "/api/v1/usage?path=/files/a.txt",
            Some(&a.auth()),
            None,
        )
        .await;
    assert_eq!(r.status, 403);

    // The CLI reads the same rows.
    let out = t
        .cli(&["token", "usage", "alice", "--output", "json"], None)
        .await;
    assert!(out.status.success(), "{}", out.stderr);
    let cli: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(cli["days"], ua["days"]);
    let out = t.cli(&["usage", "--path", "/files/a.txt"], None).await;
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        out.stdout.contains(&a.id) && out.stdout.contains(&b.id),
        "{}",
        out.stdout
    );
    let out = t.cli(&["token", "usage", "alice"], None).await;
    assert!(
        out.stdout.contains(&today()) && out.stdout.contains("/files/a.txt"),
        "{}",
        out.stdout
    );
}

#[tokio::test]
async fn rows_past_the_retention_are_purged_and_a_kill_keeps_what_was_flushed() {
    let upstream = Upstream::start();
    let a = TestToken::read("kept");
    let mut t = Setup::new(&upstream.url())
        .with_tokens(&[&a])
        .with_bootstrap()
        .set(
            "usage",
            json!({"flush_interval": "200ms", "retention": "3d"}),
        )
        .start()
        .await;
    let client = client();
    for _ in 0..4 {
        assert_eq!(
            http_get(&client, &t.url("/files/k"), Some(&a.auth()))
                .await
                .status,
            200
        );
    }
    wait_requests(&t, &a.id, 4).await;
    // SIGKILL: no flush on the way out, but what was written stays.
    t.signal("KILL");
    t.wait_exit(Duration::from_secs(10)).await;

    let db = sqlite(&t).await;
    let day = |ago: i64| {
        (chrono::Utc::now() - chrono::Duration::days(ago))
            .date_naive()
            .to_string()
    };
    for (ago, key) in [(10, "/old"), (3, "/old-too"), (2, "/recent")] {
        sqlx::query(
            "INSERT INTO usage_daily (token_id, day, usage_key, requests, bytes_sent, first_at, last_at, \
             status_2xx, status_3xx, status_4xx, status_5xx) VALUES (?, ?, ?, 1, 1, 0, 0, 1, 0, 0, 0)",
        )
        .bind(&a.id)
        .bind(day(ago))
        .bind(key)
        .execute(&db)
        .await
        .unwrap();
        sqlx::query("INSERT INTO usage_addresses (token_id, day, usage_key, address) VALUES (?, ?, ?, '10.0.0.1')")
            .bind(&a.id)
            .bind(day(ago))
            .bind(key)
            .execute(&db)
            .await
            .unwrap();
    }
    t.restart().await;
    let keys = || async {
        let rows = sqlx::query("SELECT usage_key FROM usage_daily ORDER BY usage_key")
            .fetch_all(&db)
            .await
            .unwrap();
        rows.iter()
            .map(|r| r.get::<String, _>(0))
            .collect::<Vec<_>>()
    };
    let purged = poll_until(Duration::from_secs(10), || async {
        keys().await.len() == 2
    })
    .await;
    assert!(purged.is_some(), "not purged: {:?}", keys().await);
    assert_eq!(keys().await, ["/files/k", "/recent"]);
    let addrs: i64 =
        sqlx::query("SELECT COUNT(*) FROM usage_addresses WHERE usage_key LIKE '/old%'")
            .fetch_one(&db)
            .await
            .unwrap()
            .get(0);
    assert_eq!(addrs, 0);
    let u = token_usage(&t, &a.id).await;
    assert_eq!(u["days"][1]["requests"], 4, "{u}");
    db.close().await;
}

#[tokio::test]
async fn without_any_database_the_usage_api_says_so() {
    let upstream = Upstream::start();
    let a = TestToken::read("files-only");
    let t = Setup::new(&upstream.url())
        .with_tokens(&[&a])
        .with_bootstrap()
        .set("tokens.database", json!("none"))
        .start()
        .await;
    assert!(t.logs().contains("usage is not recorded"), "{}", t.logs());
    t.api(
        "GET",
        &format!("/api/v1/tokens/{}/usage", a.id),
        Some(&boot()),
        None,
    )
    .await
    .expect_error(409, "no_ledger");
}

#[tokio::test]
async fn two_postgres_replicas_add_into_the_same_rows() {
    let upstream = Upstream::start();
    let mut pg = common::pg::PgCluster::start();
    let url = pg.create_database("usage");
    let a = TestToken::read("shared");
    let replica = || {
        Setup::new(&upstream.url())
            .with_tokens(&[&a])
            .set("tokens.database", json!(url))
            .with_bootstrap()
            .set(
                "usage",
                json!({"flush_interval": "200ms", "max_addresses": 2}),
            )
    };
    let r1 = replica().start().await;
    let r2 = replica().start().await;
    let client = client();
    let from = |n: u8| {
        reqwest::Client::builder()
            .no_proxy()
            .local_address(std::net::IpAddr::from([127, 0, 0, n]))
            .build()
            .unwrap()
    };
    for _ in 0..3 {
        assert_eq!(
            http_get(&client, &r1.url("/files/p"), Some(&a.auth()))
                .await
                .status,
            200
        );
    }
    for n in 2..=4 {
        assert_eq!(
            http_get(&from(n), &r2.url("/files/p"), Some(&a.auth()))
                .await
                .status,
            200
        );
    }
    // Both replicas' batches land in the same row, read back from either.
    let u = wait_requests(&r2, &a.id, 6).await;
    assert_eq!(
        u["days"][0]["bytes_sent"].as_i64(),
        Some(6 * "hello /files/p".len() as i64)
    );
    assert_eq!(u["days"][0]["status"]["2xx"], 6);
    // At most max_addresses kept per row: at least 2 of the 4, shown as capped.
    assert_eq!(u["days"][0]["addresses"], 2, "{u}");
    assert_eq!(u["days"][0]["addresses_capped"], true, "{u}");
    let rev = r1
        .api("GET", "/api/v1/usage?path=/files/p", Some(&boot()), None)
        .await
        .expect(200);
    assert_eq!(rev["tokens"][0]["token_id"], a.id.as_str());
    assert_eq!(rev["tokens"][0]["requests"], 6);
    assert_eq!(rev["tokens"][0]["addresses_capped"], true);
}

#[tokio::test]
async fn files_only_tokens_record_usage_in_their_own_usage_database() {
    let upstream = Upstream::start();
    let a = TestToken::read("files-only");
    let t = Setup::new(&upstream.url())
        .with_tokens(&[&a])
        .with_bootstrap()
        .set("tokens.database", json!("none"))
        .set(
            "usage",
            json!({"database": "sqlite://ledger/usage.db", "flush_interval": "200ms"}),
        )
        .start()
        .await;
    let client = client();
    for _ in 0..2 {
        assert_eq!(
            http_get(&client, &t.url("/files/f"), Some(&a.auth()))
                .await
                .status,
            200
        );
    }
    let u = wait_requests(&t, &a.id, 2).await;
    assert_eq!(u["token"]["name"], "files-only");
    assert!(t.setup.dir.path().join("ledger/usage.db").exists());
    assert!(!t.setup.dir.path().join("data/tollgate.db").exists());
    let out = t
        .cli(&["usage", "--path", "/files/f", "-o", "json"], None)
        .await;
    assert!(out.status.success(), "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["tokens"][0]["requests"], 2);
}
