//! Overlapping rotation through the real binary: a token regenerated with an overlap accepts
//! both secrets; the first use of the new secret refuses the old one on the next request
//! (cached or not), or the deadline does without any use; the overlap is bounded; the end is
//! logged; across two PostgreSQL replicas the new secret used on one refuses the old one on the
//! other. Secrets never reach the log.

mod common;

use std::time::Duration;

use common::pg::PgCluster;
use common::*;
use serde_json::{json, Value};

/// A server with the bootstrap token and its own SQLite token database.
fn server(upstream: &Upstream) -> Setup {
    Setup::new(&upstream.url())
        .set("tokens.files", json!([]))
        .with_bootstrap()
}

async fn get(proxy: &Tollgate, auth: &str) -> Fetched {
    http_get(&client(), &proxy.url("/pkg/one"), Some(auth)).await
}

/// `POST …/regenerate` with `body` (or none); the answer.
async fn regenerate(proxy: &Tollgate, id: &str, body: Option<Value>) -> ApiResponse {
    proxy
        .api(
            "POST",
            &format!("/api/v1/tokens/{id}/regenerate"),
            Some(&boot()),
            body.as_ref(),
        )
        .await
}

async fn show(proxy: &Tollgate, id: &str) -> Value {
    proxy
        .api("GET", &format!("/api/v1/tokens/{id}"), Some(&boot()), None)
        .await
        .expect(200)
}

/// The audit records of retired previous secrets of token `id`.
fn retirements(proxy: &Tollgate, id: &str) -> Vec<serde_json::Map<String, Value>> {
    proxy
        .audit_records()
        .into_iter()
        .filter(|r| {
            field_str(r, "action").as_deref() == Some("token.previous_retired")
                && field_str(r, "token_id").as_deref() == Some(id)
        })
        .collect()
}

fn assert_secrets_not_logged(proxy: &Tollgate, secrets: &[&str]) {
    let logs = proxy.all_logs();
    for s in secrets {
        let secret_part = &s[s.len() - 38..s.len() - 6];
        assert!(
            !logs.contains(secret_part),
            "a secret is in the log:\n{logs}"
        );
    }
}

#[tokio::test]
async fn both_secrets_work_until_the_new_one_is_first_used() {
    let upstream = Upstream::start();
    let proxy = server(&upstream).start().await;
    let (record, old) = proxy
        .create_token(&boot(), json!({"name": "ci", "permission": "read"}))
        .await;
    let id = record["id"].as_str().expect("id").to_owned();
    let old_auth = bearer(&old);
    assert_eq!(get(&proxy, &old_auth).await.status, 200, "before");

    let resp = regenerate(&proxy, &id, Some(json!({"overlap": "24h"}))).await;
    let body = resp.expect(200);
    let new = body["token"].as_str().expect("new token").to_owned();
    let new_auth = bearer(&new);
    let until = parse_time(&body["previous_valid_until"], "previous_valid_until");
    let left = until - chrono::Utc::now();
    assert!(
        left > chrono::Duration::hours(23) && left <= chrono::Duration::hours(24),
        "previous_valid_until {until} is not 24 h away"
    );
    assert_eq!(
        show(&proxy, &id).await["previous_valid_until"],
        body["previous_valid_until"]
    );

    // The old secret (verified again: the generation changed) and from the cache.
    for round in 0..2 {
        let r = get(&proxy, &old_auth).await;
        assert_eq!(
            r.status, 200,
            "old secret in the overlap, round {round}: {}",
            r.body
        );
    }
    let used = proxy
        .wait_for_audit("a request with the previous secret", |r| {
            field_str(r, "token_id").as_deref() == Some(id.as_str())
                && field_str(r, "secret").as_deref() == Some("previous")
        })
        .await;
    assert_eq!(field_str(&used, "outcome").as_deref(), Some("ok"));
    assert!(
        retirements(&proxy, &id).is_empty(),
        "retired before any use"
    );

    // The first use of the new secret kills the old one: the very next request is refused,
    // although its verification was cached.
    assert_eq!(get(&proxy, &new_auth).await.status, 200, "new secret");
    let refused = get(&proxy, &old_auth).await;
    assert_eq!(refused.status, 401, "old secret after the new one was used");
    assert_eq!(refused.error_code().as_deref(), Some("token_invalid"));
    assert_eq!(get(&proxy, &new_auth).await.status, 200, "new secret again");

    // The end is logged once, with when the old secret was last used; the database is cleared.
    let found = poll_until(Duration::from_secs(10), || async {
        !retirements(&proxy, &id).is_empty()
    })
    .await;
    assert!(
        found.is_some(),
        "no retirement line; log:\n{}",
        proxy.logs()
    );
    let lines = retirements(&proxy, &id);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(
        field_str(&lines[0], "reason").as_deref(),
        Some("new_secret_used")
    );
    let last = field_str(&lines[0], "previous_last_used_at").expect("previous_last_used_at");
    assert!(
        chrono::DateTime::parse_from_rfc3339(&last).is_ok(),
        "{last}"
    );
    assert_eq!(show(&proxy, &id).await["previous_valid_until"], Value::Null);
    let out = proxy
        .cli(&["token", "show", &id, "--output", "json"], None)
        .await;
    assert!(out.status.success(), "{out:?}");
    let shown: Value = serde_json::from_str(&out.stdout).expect("CLI JSON");
    assert_eq!(shown["previous_valid_until"], Value::Null);

    // Still refused after a restart (the database no longer has it).
    let mut proxy = proxy;
    proxy.signal("KILL");
    proxy.wait_exit(Duration::from_secs(10)).await;
    proxy.restart().await;
    assert_eq!(
        get(&proxy, &old_auth).await.status,
        401,
        "old after restart"
    );
    assert_eq!(
        get(&proxy, &new_auth).await.status,
        200,
        "new after restart"
    );
    assert_secrets_not_logged(&proxy, &[&old, &new]);
}

#[tokio::test]
async fn the_deadline_ends_the_overlap_without_any_use() {
    let upstream = Upstream::start();
    let proxy = server(&upstream)
        .set("tokens.rotation_overlap_ends", json!("deadline"))
        .start()
        .await;
    let (record, old) = proxy
        .create_token(&boot(), json!({"name": "slow-ci", "permission": "read"}))
        .await;
    let id = record["id"].as_str().expect("id").to_owned();
    let old_auth = bearer(&old);
    let (other, other_old) = proxy
        .create_token(&boot(), json!({"name": "idle-ci", "permission": "read"}))
        .await;
    let other_id = other["id"].as_str().expect("id").to_owned();
    let other_old_auth = bearer(&other_old);

    // The CLI regenerates one, the API the other.
    let out = proxy
        .cli(
            &[
                "token",
                "regenerate",
                "slow-ci",
                "--overlap",
                "6s",
                "--output",
                "json",
            ],
            None,
        )
        .await;
    assert!(out.status.success(), "{out:?}");
    let new = cli_token(&out);
    let shown: Value = serde_json::from_str(&out.stdout).expect("CLI JSON");
    let until = parse_time(&shown["previous_valid_until"], "CLI previous_valid_until");
    let table = proxy.cli(&["token", "list"], None).await;
    assert!(
        table.stdout.contains("PREVIOUS UNTIL")
            && table
                .stdout
                .contains(&until.format("%Y-%m-%d %H:%M").to_string()),
        "{table:?}"
    );
    let other_new = regenerate(&proxy, &other_id, Some(json!({"overlap": "6s"})))
        .await
        .expect(200);
    let other_until = parse_time(
        &other_new["previous_valid_until"],
        "API previous_valid_until",
    );
    let new_auth = bearer(&new);
    // The server follows the CLI's write; with `deadline`, using the new secret leaves the
    // old one working.
    let took = poll_until(Duration::from_secs(5), || async {
        get(&proxy, &new_auth).await.status == 200
    })
    .await;
    assert!(took.is_some(), "the CLI's new secret never worked");
    assert_eq!(
        get(&proxy, &old_auth).await.status,
        200,
        "old in the overlap"
    );
    assert_eq!(get(&proxy, &new_auth).await.status, 200, "new");
    assert_eq!(get(&proxy, &old_auth).await.status, 200, "old, cached");

    // Past the deadline: refused, cached or not, without any use in between for `idle-ci`.
    let wait = (until.max(other_until) - chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(300)).await;
    let r = get(&proxy, &old_auth).await;
    assert_eq!(r.status, 401, "old after the deadline: {}", r.body);
    assert_eq!(
        get(&proxy, &new_auth).await.status,
        200,
        "new after the deadline"
    );
    assert_eq!(
        get(&proxy, &other_old_auth).await.status,
        401,
        "an overlap nobody used after regenerating"
    );

    for id in [&id, &other_id] {
        let found = poll_until(Duration::from_secs(10), || async {
            !retirements(&proxy, id).is_empty()
        })
        .await;
        assert!(
            found.is_some(),
            "no retirement line; log:\n{}",
            proxy.logs()
        );
        let lines = retirements(&proxy, id);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(field_str(&lines[0], "reason").as_deref(), Some("deadline"));
        assert_eq!(show(&proxy, id).await["previous_valid_until"], Value::Null);
    }
    assert_secrets_not_logged(&proxy, &[&old, &new, &other_old]);
}

#[tokio::test]
async fn overlaps_are_bounded_and_a_plain_regenerate_ends_any_overlap() {
    let upstream = Upstream::start();
    let proxy = server(&upstream)
        .set("tokens.max_lifetime", json!("7d"))
        .set("tokens.max_overlap", json!("3d"))
        .start()
        .await;
    let (record, old) = proxy
        .create_token(
            &boot(),
            json!({"name": "bounded", "permission": "read", "expires_in": "7d"}),
        )
        .await;
    let id = record["id"].as_str().expect("id").to_owned();
    let refused = regenerate(&proxy, &id, Some(json!({"overlap": "4d"}))).await;
    refused.expect_error(400, "invalid_request");
    assert!(
        refused.text.contains("tokens.max_overlap (3d)"),
        "{}",
        refused.text
    );
    for bad in [
        json!({"overlap": "0s"}),
        json!({"overlap": "soon"}),
        json!({"overlap": 5}),
        json!({"overlap": "1h", "other": 1}),
    ] {
        regenerate(&proxy, &id, Some(bad.clone()))
            .await
            .expect_error(400, "invalid_request");
    }
    let out = proxy
        .cli(
            &["token", "regenerate", "bounded", "--overlap", "30d"],
            None,
        )
        .await;
    assert!(!out.status.success(), "{out:?}");
    assert!(out.stderr.contains("tokens.max_overlap"), "{out:?}");
    // Nothing changed: the original secret still works, alone.
    assert_eq!(get(&proxy, &bearer(&old)).await.status, 200);
    assert_eq!(show(&proxy, &id).await["previous_valid_until"], Value::Null);

    // With an overlap, then a plain regenerate: both earlier secrets die at once.
    let second = regenerate(&proxy, &id, Some(json!({"overlap": "2d"})))
        .await
        .expect(200);
    let second = second["token"].as_str().expect("token").to_owned();
    assert_eq!(
        get(&proxy, &bearer(&old)).await.status,
        200,
        "old in the overlap"
    );
    let third = regenerate(&proxy, &id, None).await.expect(200);
    assert_eq!(third["previous_valid_until"], Value::Null);
    let third = third["token"].as_str().expect("token").to_owned();
    assert_eq!(get(&proxy, &bearer(&old)).await.status, 401, "first secret");
    assert_eq!(
        get(&proxy, &bearer(&second)).await.status,
        401,
        "second secret"
    );
    assert_eq!(
        get(&proxy, &bearer(&third)).await.status,
        200,
        "third secret"
    );
}

#[tokio::test]
async fn a_token_file_entry_cannot_carry_a_previous_secret() {
    let upstream = Upstream::start();
    let setup = Setup::new(&upstream.url()).with_tokens_yaml(format!(
        "tokens:\n- name: filed\n  permission: read\n  hash: '{}'\n  previous_hash: '{}'\n",
        hash("first-secret-0123456789"),
        hash("second-secret-0123456789")
    ));
    setup.write();
    let out = run_tollgate(
        &["check-config", "--config", &setup.config_str()],
        None,
        setup.dir.path(),
        Duration::from_secs(30),
    );
    assert!(!out.status.success(), "{out:?}");
    assert!(out.combined().contains("previous_hash"), "{out:?}");
}

#[tokio::test]
async fn the_new_secret_used_on_one_replica_refuses_the_old_one_on_the_other() {
    let mut pg = PgCluster::start();
    let url = pg.create_database("rotation");
    let upstream = Upstream::start();
    let replica = |upstream: &Upstream| {
        Setup::new(&upstream.url())
            .set("tokens.files", json!([]))
            .set("tokens.database", json!(url))
            .with_bootstrap()
    };
    let a = replica(&upstream).start().await;
    let b = replica(&upstream).start().await;
    for r in [&a, &b] {
        let listening = poll_until(Duration::from_secs(10), || async {
            r.logs().contains("listening for token changes")
        })
        .await;
        assert!(listening.is_some(), "not following; log:\n{}", r.logs());
    }
    let (record, old) = a
        .create_token(&boot(), json!({"name": "fleet", "permission": "read"}))
        .await;
    let id = record["id"].as_str().expect("id").to_owned();
    let old_auth = bearer(&old);
    let seen = poll_until(Duration::from_secs(10), || async {
        get(&b, &old_auth).await.status == 200
    })
    .await;
    assert!(seen.is_some(), "B never accepted the token");

    let new = regenerate(&a, &id, Some(json!({"overlap": "1h"})))
        .await
        .expect(200);
    let new_auth = bearer(new["token"].as_str().expect("token"));
    let followed = poll_until(Duration::from_secs(10), || async {
        show(&b, &id).await["previous_valid_until"].is_string()
    })
    .await;
    assert!(followed.is_some(), "B never saw the overlap");
    // B holds the old secret as the previous one, cached.
    assert_eq!(
        get(&b, &old_auth).await.status,
        200,
        "old on B in the overlap"
    );
    assert_eq!(get(&b, &old_auth).await.status, 200, "old on B, cached");

    assert_eq!(get(&a, &new_auth).await.status, 200, "new on A");
    assert_eq!(
        get(&a, &old_auth).await.status,
        401,
        "old on A, next request"
    );
    let took = poll_until(Duration::from_secs(10), || async {
        get(&b, &old_auth).await.status == 401
    })
    .await
    .unwrap_or_else(|| panic!("B still accepts the old secret; B log:\n{}", b.logs()));
    println!(
        "new secret used on A → old refused on B: {} ms",
        took.as_millis()
    );
    assert!(took <= Duration::from_secs(2), "took {took:?}");
    assert_eq!(get(&b, &new_auth).await.status, 200, "new on B");
    assert_eq!(show(&b, &id).await["previous_valid_until"], Value::Null);
    let count = || {
        [&a, &b]
            .iter()
            .map(|r| retirements(r, &id).len())
            .sum::<usize>()
    };
    let logged = poll_until(Duration::from_secs(10), || async { count() > 0 }).await;
    assert!(logged.is_some(), "no retirement line; A log:\n{}", a.logs());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count(), 1, "one retirement line across the replicas");
}

#[tokio::test]
async fn the_old_secret_refused_for_its_address_stays_valid_from_an_allowed_one() {
    let upstream = Upstream::start();
    let proxy = server(&upstream).start().await;
    let (record, old) = proxy
        .create_token(
            &boot(),
            json!({"name": "fenced-ci", "permission": "read", "allowed_ips": ["127.0.0.1/32"]}),
        )
        .await;
    let id = record["id"].as_str().expect("id").to_owned();
    let old_auth = bearer(&old);
    regenerate(&proxy, &id, Some(json!({"overlap": "1h"})))
        .await
        .expect(200);
    let from_two = reqwest::Client::builder()
        .no_proxy()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .expect("client");
    // Verified (so cached as the previous secret), then refused for the address, twice: the
    // second time from the cache.
    for round in 0..2 {
        let r = http_get(&from_two, &proxy.url("/pkg/one"), Some(&old_auth)).await;
        assert_eq!(r.status, 403, "round {round}: {}", r.body);
        assert_eq!(r.error_code().as_deref(), Some("ip_not_allowed"));
    }
    // That refusal is the allowlist's, not the end of the overlap.
    let r = get(&proxy, &old_auth).await;
    assert_eq!(
        r.status, 200,
        "old secret from the allowed address: {}",
        r.body
    );
}
