//! Several replicas on one PostgreSQL token database (LISTEN/NOTIFY): changes made through
//! one replica (or the CLI) act on every replica within a second, an outage of PostgreSQL leaves
//! the replicas serving their last token set while admin writes answer 503, replicas started
//! together migrate once, and last-use times written behind by several replicas keep the latest.
//!
//! Each test gets its own PostgreSQL (a private cluster from /usr/lib/postgresql/15/bin, or a
//! fresh database on `TOLLGATE_TEST_DATABASE_URL`; the outage test always starts its own).
//! These tests never skip. Measured figures are printed:
//! `cargo test --test postgres -- --nocapture`.

mod common;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::pg::PgCluster;
use common::*;
use serde_json::{json, Value};

/// The promise: a change is effective on every replica within this.
const PROPAGATION: Duration = Duration::from_secs(1);
/// How long a poll for a propagation keeps going (so a miss reports how late it was).
const GIVE_UP: Duration = Duration::from_secs(15);

/// A replica: no token files, the shared database, the bootstrap token.
fn replica(upstream: &Upstream, database_url: &str) -> Setup {
    Setup::new(&upstream.url())
        .set("tokens.files", json!([]))
        .set("tokens.database", json!(database_url))
        .with_bootstrap()
}

/// Status of `GET path` on `proxy`'s proxy listener with `auth`.
async fn status(client: &reqwest::Client, proxy: &Tollgate, path: &str, auth: &str) -> u16 {
    http_get(client, &proxy.url(path), Some(auth)).await.status
}

/// Assert that each `(proxy, path, auth, status)` holds now.
async fn assert_statuses(
    what: &str,
    client: &reqwest::Client,
    checks: &[(&Tollgate, &str, &str, u16)],
) {
    for (i, (proxy, path, auth, want)) in checks.iter().enumerate() {
        let resp = http_get(client, &proxy.url(path), Some(auth)).await;
        assert_eq!(
            resp.status, *want,
            "{what}: check {i} (GET {path} on {}): body {}",
            proxy.setup.listen, resp.body
        );
    }
}

/// Poll until every `(proxy, path, auth, status)` holds at once; print the time it took and
/// assert it is at most `limit` (polls on up to 15 s so a miss says how late it was).
async fn propagation(
    what: &str,
    limit: Duration,
    client: &reqwest::Client,
    checks: &[(&Tollgate, &str, &str, u16)],
) -> Duration {
    let took = poll_until(GIVE_UP, || async {
        for (proxy, path, auth, want) in checks {
            if status(client, proxy, path, auth).await != *want {
                return false;
            }
        }
        true
    })
    .await;
    let Some(took) = took else {
        let mut now = Vec::new();
        for (proxy, path, auth, want) in checks {
            now.push(format!(
                "GET {path} on {}: {} (want {want})",
                proxy.setup.listen,
                status(client, proxy, path, auth).await
            ));
        }
        panic!(
            "{what}: not effective within {GIVE_UP:?}: {}",
            now.join("; ")
        );
    };
    println!("{what}: {} ms", took.as_millis());
    assert!(
        took <= limit,
        "{what}: took {} ms, the promise is {} ms",
        took.as_millis(),
        limit.as_millis()
    );
    took
}

/// Wait until the replica follows NOTIFYs (its log says so).
/// Two replicas on one database, each following its changes.
async fn two_replicas(upstream: &Upstream, database_url: &str) -> (Tollgate, Tollgate) {
    let a = replica(upstream, database_url).start().await;
    let b = replica(upstream, database_url).start().await;
    wait_listening(&a).await;
    wait_listening(&b).await;
    (a, b)
}

async fn wait_listening(proxy: &Tollgate) {
    let found = poll_until(Duration::from_secs(10), || async {
        proxy.logs().contains("listening for token changes")
    })
    .await;
    assert!(
        found.is_some(),
        "the replica never started listening for token changes; log:\n{}",
        proxy.logs()
    );
}

/// Poll until `tollgate_database_up` on `proxy` is `want`; the time it took.
async fn wait_database_up(proxy: &Tollgate, want: f64, timeout: Duration) -> Duration {
    poll_until(timeout, || async {
        proxy.metric("tollgate_database_up").await == want
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "tollgate_database_up on {} is not {want} within {timeout:?}; log:\n{}",
            proxy.setup.admin,
            proxy.logs()
        )
    })
}

async fn assert_ready(proxy: &Tollgate, what: &str) {
    let ready = proxy.api("GET", "/readyz", None, None).await;
    assert_eq!(
        ready.status, 200,
        "{what}: /readyz on {}: {}",
        proxy.setup.admin, ready.text
    );
}

/// Log lines at WARN or ERROR level (JSON logs), plus anything mentioning a failed migration.
fn bad_log_lines(logs: &str) -> Vec<String> {
    logs.lines()
        .filter(|line| {
            let level = serde_json::from_str::<Value>(line)
                .ok()
                .and_then(|v| v.get("level").and_then(Value::as_str).map(str::to_owned));
            matches!(level.as_deref(), Some("WARN" | "ERROR"))
                || line.starts_with("tollgate: ")
                || line.to_ascii_lowercase().contains("migration failed")
                || line.contains("panicked")
        })
        .map(str::to_owned)
        .collect()
}

/// How many migrations `migrations/postgres` holds (`*.sql`, not counting `*.down.sql`).
fn postgres_migration_files() -> usize {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.ends_with(".sql") && !name.ends_with(".down.sql")
        })
        .count()
}

// ---------------------------------------------------------------------------------------------
// 1. Propagation between two replicas
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn changes_through_one_replica_act_on_the_other_within_a_second() {
    let mut pg = PgCluster::start();
    let url = pg.create_database("propagation");
    let upstream = Upstream::start();
    let (a, b) = two_replicas(&upstream, &url).await;
    let client = client();
    let mut figures: Vec<(String, Duration)> = Vec::new();

    // Create on A → accepted by B.
    let (_, created) = a
        .create_token(
            &boot(),
            json!({"name": "created-on-a", "permission": "read"}),
        )
        .await;
    let auth = bearer(&created);
    let what = "create on A → accepted by B";
    figures.push((
        what.into(),
        propagation(what, PROPAGATION, &client, &[(&b, "/pkg/one", &auth, 200)]).await,
    ));

    // And the other way round.
    let (_, created_b) = b
        .create_token(
            &boot(),
            json!({"name": "created-on-b", "permission": "read"}),
        )
        .await;
    let auth_b = bearer(&created_b);
    let what = "create on B → accepted by A";
    figures.push((
        what.into(),
        propagation(
            what,
            PROPAGATION,
            &client,
            &[(&a, "/pkg/one", &auth_b, 200)],
        )
        .await,
    ));

    // Revoke on A → refused by B, whose verification cache holds the token.
    let (_, doomed) = a
        .create_token(
            &boot(),
            json!({"name": "revoked-on-a", "permission": "read"}),
        )
        .await;
    let doomed = bearer(&doomed);
    propagation(
        "revoke set-up: accepted by B",
        GIVE_UP,
        &client,
        &[(&b, "/pkg/one", &doomed, 200)],
    )
    .await;
    let hits_before = b.metric("tollgate_auth_cache_hits_total").await;
    assert_statuses(
        "B's cache warm",
        &client,
        &[
            (&b, "/pkg/one", &doomed, 200),
            (&b, "/pkg/two", &doomed, 200),
        ],
    )
    .await;
    let hits_after = b.metric("tollgate_auth_cache_hits_total").await;
    println!("B's verification cache hits while warming: {hits_before} → {hits_after}");
    assert!(
        hits_after > hits_before,
        "B answered the revocation's token from its cache before the revoke"
    );
    a.api("DELETE", "/api/v1/tokens/revoked-on-a", Some(&boot()), None)
        .await
        .expect(204);
    let what = "revoke on A → refused by B";
    figures.push((
        what.into(),
        propagation(
            what,
            PROPAGATION,
            &client,
            &[
                (&b, "/pkg/one", &doomed, 401),
                (&a, "/pkg/one", &doomed, 401),
            ],
        )
        .await,
    ));

    // Regenerate on A → B refuses the old secret and accepts the new one.
    let (_, old) = a
        .create_token(
            &boot(),
            json!({"name": "regenerated-on-a", "permission": "read"}),
        )
        .await;
    let old = bearer(&old);
    propagation(
        "regenerate set-up: accepted by B",
        GIVE_UP,
        &client,
        &[(&b, "/pkg/one", &old, 200)],
    )
    .await;
    assert_statuses("B's cache warm", &client, &[(&b, "/pkg/one", &old, 200)]).await;
    let regenerated = a
        .api(
            "POST",
            "/api/v1/tokens/regenerated-on-a/regenerate",
            Some(&boot()),
            None,
        )
        .await
        .expect(200);
    let new = bearer(regenerated["token"].as_str().expect("token in the answer"));
    assert_ne!(old, new);
    let what = "regenerate on A → old refused, new accepted by B";
    figures.push((
        what.into(),
        propagation(
            what,
            PROPAGATION,
            &client,
            &[(&b, "/pkg/one", &old, 401), (&b, "/pkg/one", &new, 200)],
        )
        .await,
    ));

    // PATCH routes on A → B enforces them.
    let (_, patched) = a
        .create_token(
            &boot(),
            json!({"name": "patched-on-a", "permission": "read"}),
        )
        .await;
    let patched = bearer(&patched);
    propagation(
        "patch set-up: accepted by B everywhere",
        GIVE_UP,
        &client,
        &[(&b, "/denied/pkg", &patched, 200)],
    )
    .await;
    a.api(
        "PATCH",
        "/api/v1/tokens/patched-on-a",
        Some(&boot()),
        Some(&json!({"routes": [{"path": "/allowed/*", "access": "read"}]})),
    )
    .await
    .expect(200);
    let what = "PATCH routes on A → enforced by B";
    figures.push((
        what.into(),
        propagation(
            what,
            PROPAGATION,
            &client,
            &[
                (&b, "/denied/pkg", &patched, 403),
                (&b, "/allowed/pkg", &patched, 200),
            ],
        )
        .await,
    ));

    // CLI create (on A's config, i.e. straight into the database) → works on both.
    let out = a
        .cli(
            &[
                "token",
                "create",
                "--name",
                "made-by-cli",
                "--permission",
                "read",
                "--output",
                "json",
            ],
            None,
        )
        .await;
    assert!(out.status.success(), "token create: {}", out.combined());
    let cli_auth = bearer(&cli_token(&out));
    let what = "CLI create → accepted by A and B";
    figures.push((
        what.into(),
        propagation(
            what,
            PROPAGATION,
            &client,
            &[
                (&a, "/pkg/one", &cli_auth, 200),
                (&b, "/pkg/one", &cli_auth, 200),
            ],
        )
        .await,
    ));

    // CLI revoke → refused by both.
    let out = a.cli(&["token", "revoke", "made-by-cli"], None).await;
    assert!(out.status.success(), "token revoke: {}", out.combined());
    let what = "CLI revoke → refused by A and B";
    figures.push((
        what.into(),
        propagation(
            what,
            PROPAGATION,
            &client,
            &[
                (&a, "/pkg/one", &cli_auth, 401),
                (&b, "/pkg/one", &cli_auth, 401),
            ],
        )
        .await,
    ));

    // The API of B shows what A made.
    let shown = b
        .api("GET", "/api/v1/tokens/patched-on-a", Some(&boot()), None)
        .await
        .expect(200);
    assert_eq!(
        shown["routes"],
        json!([{"path": "/allowed/*", "access": "read"}]),
        "B's API shows the routes set on A: {shown}"
    );

    println!(
        "propagation figures (limit {} ms):",
        PROPAGATION.as_millis()
    );
    for (what, took) in &figures {
        println!("  {:>5} ms  {what}", took.as_millis());
    }
    for proxy in [&a, &b] {
        let bad = bad_log_lines(&proxy.logs());
        assert!(
            bad.is_empty(),
            "warnings or errors in a replica's log: {bad:#?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Outage
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn replicas_serve_through_a_postgres_outage_and_catch_up_after() {
    // This test stops the server, so it always runs its own, whatever the environment says.
    let mut pg = PgCluster::private();
    let url = pg.create_database("outage");
    let upstream = Upstream::start();
    let (a, b) = two_replicas(&upstream, &url).await;
    let client = client();

    // Before the outage: `keep` used on both, `fresh` never presented, `gone` used then revoked.
    let (_, keep) = a
        .create_token(&boot(), json!({"name": "keep", "permission": "read"}))
        .await;
    let (_, fresh) = a
        .create_token(&boot(), json!({"name": "fresh", "permission": "read"}))
        .await;
    let (_, gone) = a
        .create_token(&boot(), json!({"name": "gone", "permission": "read"}))
        .await;
    let (keep, fresh, gone) = (bearer(&keep), bearer(&fresh), bearer(&gone));
    propagation(
        "outage set-up: tokens on B",
        GIVE_UP,
        &client,
        &[
            (&a, "/pkg/one", &keep, 200),
            (&b, "/pkg/one", &keep, 200),
            (&a, "/pkg/one", &gone, 200),
            (&b, "/pkg/one", &gone, 200),
        ],
    )
    .await;
    a.api("DELETE", "/api/v1/tokens/gone", Some(&boot()), None)
        .await
        .expect(204);
    propagation(
        "outage set-up: revocation on B",
        GIVE_UP,
        &client,
        &[(&b, "/pkg/one", &gone, 401)],
    )
    .await;
    assert_eq!(a.metric("tollgate_database_up").await, 1.0, "A before");
    assert_eq!(b.metric("tollgate_database_up").await, 1.0, "B before");

    let stopped = pg.stop();
    println!(
        "PostgreSQL stopped (fast shutdown) in {} ms",
        stopped.as_millis()
    );

    let serving = [
        (&a, "/pkg/one", keep.as_str(), 200),
        (&b, "/pkg/one", keep.as_str(), 200),
        (&b, "/pkg/two", fresh.as_str(), 200),
        (&a, "/pkg/one", gone.as_str(), 401),
        (&b, "/pkg/one", gone.as_str(), 401),
    ];
    assert_statuses("right after the stop", &client, &serving).await;
    assert_ready(&a, "right after the stop").await;
    assert_ready(&b, "right after the stop").await;

    // An admin write on A: 503 database_unavailable, within the pool's acquire timeout.
    let started = Instant::now();
    let resp = a
        .api(
            "POST",
            "/api/v1/tokens",
            Some(&boot()),
            Some(&json!({"name": "during-outage", "permission": "read"})),
        )
        .await;
    let write_took = started.elapsed();
    println!(
        "outage: POST /api/v1/tokens answered {} in {} ms: {}",
        resp.status,
        write_took.as_millis(),
        resp.text
    );
    resp.expect_error(503, "database_unavailable");
    assert!(
        write_took <= Duration::from_secs(7),
        "the 503 took {} ms; the pool's acquire timeout is 5 s",
        write_took.as_millis()
    );
    // A revocation cannot be stored either, and must not pretend it was.
    let started = Instant::now();
    let resp = a
        .api("DELETE", "/api/v1/tokens/keep", Some(&boot()), None)
        .await;
    println!(
        "outage: DELETE /api/v1/tokens/keep answered {} in {} ms",
        resp.status,
        started.elapsed().as_millis()
    );
    resp.expect_error(503, "database_unavailable");

    // The CLI cannot write either, and says why.
    let out = a
        .cli(
            &[
                "token",
                "create",
                "--name",
                "cli-during-outage",
                "--permission",
                "read",
            ],
            None,
        )
        .await;
    assert!(
        !out.status.success() && out.stderr.contains("unavailable"),
        "token create during the outage: {}",
        out.combined()
    );

    let down_a = wait_database_up(&a, 0.0, GIVE_UP).await;
    let down_b = wait_database_up(&b, 0.0, GIVE_UP).await;
    println!(
        "outage: tollgate_database_up 0 on A after {} ms more, on B after {} ms more",
        down_a.as_millis(),
        down_b.as_millis()
    );
    // After failed polls, still the last token set; still ready.
    assert_statuses("during the outage", &client, &serving).await;
    assert_ready(&a, "during the outage").await;
    assert_ready(&b, "during the outage").await;

    let up = pg.start_again();
    println!("PostgreSQL started again in {} ms", up.as_millis());
    let restarted = Instant::now();

    // Writes work again on A (each attempt may wait out the pool's acquire timeout).
    let mut attempts = 0;
    let after = loop {
        attempts += 1;
        let resp = a
            .api(
                "POST",
                "/api/v1/tokens",
                Some(&boot()),
                Some(&json!({"name": "after-outage", "permission": "read"})),
            )
            .await;
        if resp.status == 201 {
            break resp.json()["token"]
                .as_str()
                .expect("token in the 201 body")
                .to_owned();
        }
        resp.expect_error(503, "database_unavailable");
        assert!(
            restarted.elapsed() < Duration::from_secs(30),
            "A still refuses writes 30 s after PostgreSQL came back; log:\n{}",
            a.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let recovered = restarted.elapsed();
    println!(
        "recovery: first write on A accepted {} ms after PostgreSQL was back ({attempts} attempt(s))",
        recovered.as_millis()
    );
    let after = bearer(&after);
    propagation(
        "recovery: token created on A after the outage → accepted by B",
        Duration::from_secs(5),
        &client,
        &[(&b, "/pkg/one", &after, 200), (&a, "/pkg/one", &after, 200)],
    )
    .await;
    let up_a = wait_database_up(&a, 1.0, GIVE_UP).await;
    let up_b = wait_database_up(&b, 1.0, GIVE_UP).await;
    println!(
        "recovery: tollgate_database_up 1 on A after {} ms more, on B after {} ms more",
        up_a.as_millis(),
        up_b.as_millis()
    );
    // The change listener reconnects by itself (with backoff) and B follows NOTIFYs again.
    poll_until(Duration::from_secs(45), || async {
        b.logs().matches("listening for token changes").count() >= 2
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "B's change listener did not reconnect within 45 s of the recovery; log:\n{}",
            b.logs()
        )
    });
    println!(
        "recovery: B listens for changes again {} ms after PostgreSQL was back",
        restarted.elapsed().as_millis()
    );
    // Back to instant revocation everywhere.
    a.api("DELETE", "/api/v1/tokens/keep", Some(&boot()), None)
        .await
        .expect(204);
    propagation(
        "recovery: revoke on A → refused by B",
        PROPAGATION,
        &client,
        &[(&b, "/pkg/one", &keep, 401)],
    )
    .await;
    assert_statuses(
        "after the outage",
        &client,
        &[
            (&b, "/pkg/two", &fresh, 200),
            (&a, "/pkg/one", &gone, 401),
            (&b, "/pkg/one", &gone, 401),
        ],
    )
    .await;
    assert_ready(&a, "after the outage").await;
    assert_ready(&b, "after the outage").await;
    // The outage shows in the logs (and the detector used by the other tests sees it).
    assert!(
        !bad_log_lines(&a.logs()).is_empty() && !bad_log_lines(&b.logs()).is_empty(),
        "no warning or error logged for the outage"
    );
    assert!(
        a.logs().contains("token database unavailable"),
        "A's log does not report the outage; log:\n{}",
        a.logs()
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Replicas started together
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn replicas_started_together_migrate_once() {
    let mut pg = PgCluster::start();
    let url = pg.create_database("migrate");
    let upstream = Upstream::start();
    let setups: Vec<Setup> = (0..3).map(|_| replica(&upstream, &url)).collect();
    for setup in &setups {
        setup.write();
    }
    let mut setups = setups.into_iter();
    let (s1, s2, s3) = (
        setups.next().expect("setup"),
        setups.next().expect("setup"),
        setups.next().expect("setup"),
    );
    // Each start() spawns its process on the first poll, so the three start together.
    let started = Instant::now();
    let (r1, r2, r3) = tokio::join!(s1.start(), s2.start(), s3.start());
    println!(
        "3 replicas started together, all ready in {} ms",
        started.elapsed().as_millis()
    );
    let replicas = [&r1, &r2, &r3];

    for (i, r) in replicas.iter().enumerate() {
        let bad = bad_log_lines(&r.logs());
        assert!(
            bad.is_empty(),
            "replica {i} logged warnings or errors at start: {bad:#?}"
        );
    }

    let files = postgres_migration_files();
    assert!(files >= 2, "migrations/postgres holds {files} migrations");
    let rows = pg.psql_url(
        &url,
        "select count(*), count(distinct version), bool_and(success) from _sqlx_migrations",
    );
    println!("_sqlx_migrations: count|distinct|all succeeded = {rows} ({files} migration files)");
    assert_eq!(
        rows,
        format!("{files}|{files}|t"),
        "each migration recorded exactly once, successfully"
    );
    let triggers = pg.psql_url(
        &url,
        "select count(*) from pg_trigger where tgname = 'tollgate_meta_changed'",
    );
    assert_eq!(triggers, "1", "the change trigger exists once");

    // All three share the token set.
    let client = client();
    let (_, token) = r1
        .create_token(&boot(), json!({"name": "shared", "permission": "read"}))
        .await;
    let auth = bearer(&token);
    propagation(
        "create on replica 0 → accepted by all three",
        PROPAGATION,
        &client,
        &[
            (&r1, "/pkg/one", &auth, 200),
            (&r2, "/pkg/one", &auth, 200),
            (&r3, "/pkg/one", &auth, 200),
        ],
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// 4. Last-use times from two replicas
// ---------------------------------------------------------------------------------------------

/// One proxied request; the wall-clock window it happened in.
async fn use_token(
    client: &reqwest::Client,
    proxy: &Tollgate,
    auth: &str,
) -> (DateTime<Utc>, DateTime<Utc>) {
    let before = Utc::now();
    assert_eq!(status(client, proxy, "/pkg/used", auth).await, 200);
    (before, Utc::now())
}

/// Wait until the clock is past `t` by a few milliseconds (so the next window is disjoint).
async fn after(t: DateTime<Utc>) {
    while Utc::now() <= t + chrono::Duration::milliseconds(5) {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn last_used_at_from_two_replicas_keeps_the_latest_use() {
    let mut pg = PgCluster::start();
    let url = pg.create_database("last_used");
    let upstream = Upstream::start();
    let mut a = replica(&upstream, &url).start().await;
    let mut b = replica(&upstream, &url).start().await;
    let client = client();

    let mut tokens = Vec::new();
    for name in ["used-a-then-b", "used-b-then-a", "used-on-a", "used-on-b"] {
        let (_, token) = a
            .create_token(&boot(), json!({"name": name, "permission": "read"}))
            .await;
        tokens.push(bearer(&token));
    }
    let [ab, ba, only_a, only_b] = <[String; 4]>::try_from(tokens).expect("four tokens");
    propagation(
        "last-use set-up: tokens on B",
        GIVE_UP,
        &client,
        &[(&b, "/pkg/x", &ab, 200), (&b, "/pkg/x", &ba, 200)],
    )
    .await;
    // The set-up requests above count as uses on B; the timed uses below come after them,
    // and each replica records a new use only 1 s after its previous one.
    after(Utc::now() + chrono::Duration::milliseconds(1100)).await;

    let ab_on_a = use_token(&client, &a, &ab).await;
    let ba_on_b = use_token(&client, &b, &ba).await;
    let only_a_at = use_token(&client, &a, &only_a).await;
    let only_b_at = use_token(&client, &b, &only_b).await;
    after(only_b_at.1).await;
    let ab_on_b = use_token(&client, &b, &ab).await;
    let ba_on_a = use_token(&client, &a, &ba).await;
    // Many more uses of one token: written behind, not one write per request.
    let burst = 200;
    for _ in 0..burst {
        assert_eq!(status(&client, &a, "/pkg/burst", &only_a).await, 200);
    }
    let burst_end = Utc::now();

    // B (holding the later use of used-a-then-b) stops first, so A writes its older use of
    // that token last: it must not win.
    for (name, proxy) in [("B", &mut b), ("A", &mut a)] {
        let (exit, took) = proxy.stop_gracefully(Duration::from_secs(20)).await;
        println!(
            "replica {name} stopped (SIGTERM) in {} ms: {exit}",
            took.as_millis()
        );
        assert!(
            exit.success(),
            "replica {name} exit: {exit}; log:\n{}",
            proxy.logs()
        );
    }

    let stored = |name: &'static str| {
        let a = &a;
        async move {
            let out = a
                .cli(&["token", "show", name, "--output", "json"], None)
                .await;
            assert!(
                out.status.success(),
                "token show {name}: {}",
                out.combined()
            );
            let v: Value = serde_json::from_str(&out.stdout)
                .unwrap_or_else(|e| panic!("token show {name}: not JSON ({e}): {}", out.stdout));
            parse_time(&v["last_used_at"], &format!("{name} last_used_at"))
        }
    };
    let ms = |t: DateTime<Utc>| t.timestamp_millis();
    let within = |what: &str, got: DateTime<Utc>, (from, to): (DateTime<Utc>, DateTime<Utc>)| {
        println!(
            "{what}: stored {} (window {}..{} ms)",
            got.to_rfc3339(),
            ms(from),
            ms(to)
        );
        assert!(
            ms(from) <= ms(got) && ms(got) <= ms(to),
            "{what}: last_used_at {got} is not the time of that use ({from}..{to})"
        );
    };
    within(
        "used-a-then-b (later use on B)",
        stored("used-a-then-b").await,
        ab_on_b,
    );
    within(
        "used-b-then-a (later use on A)",
        stored("used-b-then-a").await,
        ba_on_a,
    );
    let only_a_stored = stored("used-on-a").await;
    println!(
        "used-on-a: stored {} (first use {}..{} ms, burst until {} ms)",
        only_a_stored.to_rfc3339(),
        ms(only_a_at.0),
        ms(only_a_at.1),
        ms(burst_end)
    );
    assert!(
        ms(only_a_at.0) <= ms(only_a_stored) && ms(only_a_stored) <= ms(burst_end),
        "used-on-a: last_used_at {only_a_stored} outside its uses"
    );
    within("used-on-b", stored("used-on-b").await, only_b_at);
    let _ = (ab_on_a, ba_on_b);

    // Written behind: a handful of upserts for hundreds of requests.
    let writes = pg.psql_url(
        &url,
        "select n_tup_ins + n_tup_upd from pg_stat_user_tables where relname = 'token_usage'",
    );
    println!(
        "token_usage rows written for {} proxied requests: {writes}",
        burst + 10
    );
    let writes: u64 = writes.parse().expect("a count");
    assert!(
        writes < 40,
        "{writes} writes to token_usage for {burst}+ requests: not written behind"
    );

    // A restarted replica loads the stored times.
    a.restart().await;
    let shown = a
        .api("GET", "/api/v1/tokens/used-a-then-b", Some(&boot()), None)
        .await
        .expect(200);
    within(
        "used-a-then-b after A's restart (API)",
        parse_time(&shown["last_used_at"], "API last_used_at"),
        ab_on_b,
    );
}

/// A token-file edit (removing a compromised token) takes effect while the database is down,
/// built on the database rows of the last good read; the admin API answers what needs the
/// database (a change, a reload) with 503 `database_unavailable`, a name conflict with 409.
#[tokio::test]
async fn a_token_file_edit_applies_during_a_postgres_outage() {
    let mut pg = PgCluster::private();
    let url = pg.create_database("file_edit_outage");
    let upstream = Upstream::start();
    let keep = TestToken::read("file-keep");
    let compromised = TestToken::read("file-compromised");
    let setup = replica(&upstream, &url);
    let files = json!([setup.tokens_path]);
    let proxy = setup
        .set("tokens.files", files)
        .with_tokens(&[&keep, &compromised])
        .start()
        .await;
    let (_, stored) = proxy
        .create_token(&boot(), json!({"name": "stored", "permission": "read"}))
        .await;
    let stored = bearer(&stored);
    let client = client();
    propagation(
        "set-up",
        GIVE_UP,
        &client,
        &[
            (&proxy, "/f", &keep.bearer(), 200),
            (&proxy, "/f", &compromised.bearer(), 200),
            (&proxy, "/f", &stored, 200),
        ],
    )
    .await;

    pg.stop();
    std::fs::write(&proxy.setup.tokens_path, tokens_yaml(&[&keep])).unwrap();
    propagation(
        "file edit during the outage",
        GIVE_UP,
        &client,
        &[(&proxy, "/f", &compromised.bearer(), 401)],
    )
    .await;
    assert_statuses(
        "the rest keeps serving",
        &client,
        &[
            (&proxy, "/f", &keep.bearer(), 200),
            (&proxy, "/f", &stored, 200),
        ],
    )
    .await;

    // A change to a database token cannot be stored: 503, the database named as the cause.
    let resp = proxy
        .api(
            "PATCH",
            "/api/v1/tokens/stored",
            Some(&boot()),
            Some(&json!({"description": "during the outage"})),
        )
        .await;
    resp.expect_error(503, "database_unavailable");
    assert!(
        resp.json()["message"]
            .as_str()
            .is_some_and(|m| m.contains("database")),
        "{}",
        resp.text
    );
    // A name conflict is still a conflict, found without the database.
    let resp = proxy
        .api(
            "POST",
            "/api/v1/tokens",
            Some(&boot()),
            Some(&json!({"name": "file-keep", "permission": "read"})),
        )
        .await;
    resp.expect_error(409, "conflict");
    // A reload re-reads the (good) files but cannot read the database: 503, not a refusal of
    // the token files (422), and the last good set keeps serving.
    let resp = proxy
        .api("POST", "/api/v1/reload", Some(&boot()), None)
        .await;
    resp.expect_error(503, "database_unavailable");
    let problems = resp.json()["problems"].clone();
    assert!(
        problems.as_array().is_some_and(|p| !p.is_empty()
            && p.iter()
                .all(|p| p.as_str().is_some_and(|p| p.contains("database")))),
        "{}",
        resp.text
    );
    assert_statuses(
        "after the refused reload",
        &client,
        &[
            (&proxy, "/f", &keep.bearer(), 200),
            (&proxy, "/f", &stored, 200),
            (&proxy, "/f", &compromised.bearer(), 401),
        ],
    )
    .await;
}

#[tokio::test]
async fn disabling_through_one_replica_refuses_on_the_other_within_a_second() {
    let mut pg = PgCluster::start();
    let url = pg.create_database("disable");
    let upstream = Upstream::start();
    let (a, b) = two_replicas(&upstream, &url).await;
    let client = client();

    let (record, token) = a
        .create_token(
            &boot(),
            json!({"name": "paused-on-a", "permission": "read"}),
        )
        .await;
    let id = record["id"].as_str().expect("id").to_owned();
    let auth = bearer(&token);
    propagation(
        "disable set-up: accepted by B",
        GIVE_UP,
        &client,
        &[(&b, "/pkg/one", &auth, 200)],
    )
    .await;
    // B's verification cache holds the token.
    assert_statuses("B's cache warm", &client, &[(&b, "/pkg/one", &auth, 200)]).await;
    a.api(
        "PATCH",
        &format!("/api/v1/tokens/{id}"),
        Some(&boot()),
        Some(&json!({"disabled": true})),
    )
    .await
    .expect(200);
    propagation(
        "disable on A → refused by B",
        PROPAGATION,
        &client,
        &[(&b, "/pkg/one", &auth, 401), (&a, "/pkg/one", &auth, 401)],
    )
    .await;
    let resp = http_get(&client, &b.url("/pkg/one"), Some(&auth)).await;
    assert_eq!(
        resp.error_code().as_deref(),
        Some("token_disabled"),
        "{}",
        resp.body
    );
    let shown = b
        .api("GET", &format!("/api/v1/tokens/{id}"), Some(&boot()), None)
        .await
        .expect(200);
    assert_eq!(shown["disabled"], true);

    a.api(
        "PATCH",
        &format!("/api/v1/tokens/{id}"),
        Some(&boot()),
        Some(&json!({"disabled": false})),
    )
    .await
    .expect(200);
    propagation(
        "enable on A → accepted by B",
        PROPAGATION,
        &client,
        &[(&b, "/pkg/one", &auth, 200)],
    )
    .await;
}

#[tokio::test]
async fn allowed_ips_are_stored_and_enforced_across_replicas() {
    let mut pg = PgCluster::start();
    let url = pg.create_database("allowlist");
    let upstream = Upstream::start();
    let (a, b) = two_replicas(&upstream, &url).await;
    let client = client();

    // The test client connects from 127.0.0.1: outside this list.
    let (record, token) = a
        .create_token(
            &boot(),
            json!({"name": "fenced-on-a", "permission": "read",
                   "allowed_ips": ["127.0.0.2/32", "2001:db8::/32"]}),
        )
        .await;
    let id = record["id"].as_str().expect("id").to_owned();
    let auth = bearer(&token);
    propagation(
        "allowlist set-up: refused by B",
        GIVE_UP,
        &client,
        &[(&b, "/pkg/one", &auth, 403)],
    )
    .await;
    let resp = http_get(&client, &b.url("/pkg/one"), Some(&auth)).await;
    assert_eq!(resp.error_code().as_deref(), Some("ip_not_allowed"));
    let shown = b
        .api("GET", &format!("/api/v1/tokens/{id}"), Some(&boot()), None)
        .await
        .expect(200);
    assert_eq!(
        shown["allowed_ips"],
        json!(["127.0.0.2/32", "2001:db8::/32"])
    );

    a.api(
        "PATCH",
        &format!("/api/v1/tokens/{id}"),
        Some(&boot()),
        Some(&json!({"allowed_ips": ["127.0.0.0/8"]})),
    )
    .await
    .expect(200);
    propagation(
        "widened on A → accepted by B",
        PROPAGATION,
        &client,
        &[(&b, "/pkg/one", &auth, 200)],
    )
    .await;
}

#[tokio::test]
async fn packages_are_stored_and_enforced_across_replicas() {
    let mut pg = PgCluster::start();
    let url = pg.create_database("packages");
    let upstream = Upstream::start();
    let (a, b) = two_replicas(&upstream, &url).await;
    let client = client();

    // No layouts on the replicas: a scoped token can tell no package, so B refuses it.
    let (record, token) = a
        .create_token(
            &boot(),
            json!({"name": "scoped-on-a", "permission": "read", "packages": ["acme/*", "com.acme:*"]}),
        )
        .await;
    let id = record["id"].as_str().expect("id").to_owned();
    let auth = bearer(&token);
    propagation(
        "packages set-up: refused by B",
        GIVE_UP,
        &client,
        &[(&b, "/pkg/one", &auth, 403)],
    )
    .await;
    let resp = http_get(&client, &b.url("/pkg/one"), Some(&auth)).await;
    assert_eq!(resp.error_code().as_deref(), Some("package_unknown"));
    let shown = b
        .api("GET", &format!("/api/v1/tokens/{id}"), Some(&boot()), None)
        .await
        .expect(200);
    assert_eq!(shown["packages"], json!(["acme/*", "com.acme:*"]));

    a.api(
        "PATCH",
        &format!("/api/v1/tokens/{id}"),
        Some(&boot()),
        Some(&json!({"packages": []})),
    )
    .await
    .expect(200);
    propagation(
        "unscoped on A → accepted by B",
        PROPAGATION,
        &client,
        &[(&b, "/pkg/one", &auth, 200)],
    )
    .await;
}
