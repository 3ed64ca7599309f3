//! Trusted publishing, end to end: a local OIDC issuer (`common::oidc`: discovery and JWKS over
//! HTTP, RSA and P-256 keys) signs CI job tokens; the real `tollgate` exchanges them at
//! `POST /_tollgate/oidc/exchange` for minted `tok_…` tokens, which publish through the proxy
//! to a real upstream until they expire. Every refusal has its own code and mints nothing; key
//! rotation costs one JWKS refresh; two replicas on PostgreSQL share minted tokens and used
//! job-token ids.

mod common;

use std::time::Duration;

use common::oidc::{self, Issuer, AUDIENCE};
use common::pg::PgCluster;
use common::*;
use serde_json::{json, Value};

const EXCHANGE: &str = "/_tollgate/oidc/exchange";

/// A refusal case: what, the job token, the status and code expected.
type Case = (&'static str, Option<String>, u16, &'static str);

/// Trust policies for `issuer`: `widget-release` (protected tags of acme/widget, write under
/// /pkg/acme-widget/, default lifetime) and `short` (the same jobs, a 2 s lifetime).
fn policies(issuer: &Issuer) -> Value {
    let claims =
        json!({"repository": "acme/widget", "ref": "refs/tags/v*", "ref_protected": "true"});
    json!([
        {"name": "widget-release", "issuer": issuer.url(), "claims": claims, "permission": "write",
         "routes": [{"path": "/pkg/acme-widget/**", "access": "write"}]},
        {"name": "short", "issuer": issuer.url(), "claims": claims, "permission": "write",
         "routes": [{"path": "/pkg/acme-widget/**", "access": "write"}], "lifetime": "2s"},
    ])
}

fn setup(upstream: &Upstream, issuer: &Issuer) -> Setup {
    Setup::new(&upstream.url()).with_bootstrap().set(
        "oidc",
        json!({
            "enabled": true,
            "audience": AUDIENCE,
            "jwks_refresh_interval": "1h",
            "policies": policies(issuer),
        }),
    )
}

/// POST `body` (and `auth`, if any) to the exchange; the status and the JSON answer.
async fn exchange_raw(tg: &Tollgate, body: Option<String>, auth: Option<&str>) -> (u16, Value) {
    let resp = http_send(&client(), "POST", &tg.url(EXCHANGE), auth, body.as_deref()).await;
    let json = serde_json::from_str(&resp.body)
        .unwrap_or_else(|e| panic!("exchange answer is not JSON ({e}): {}", resp.body));
    assert_eq!(
        resp.header("content-type").as_deref(),
        Some("application/json")
    );
    (resp.status, json)
}

async fn exchange(tg: &Tollgate, body: Value) -> (u16, Value) {
    exchange_raw(tg, Some(body.to_string()), None).await
}

/// Exchange `jwt`, expecting success; the minted token.
async fn mint(tg: &Tollgate, jwt: &str) -> String {
    let (status, body) = exchange(tg, json!({ "token": jwt })).await;
    assert_eq!(status, 200, "exchange refused: {body}");
    body["token"].as_str().expect("token").to_string()
}

/// The minted tokens the admin API lists.
async fn minted_tokens(tg: &Tollgate) -> Vec<Value> {
    let list = tg
        .api("GET", "/api/v1/tokens", Some(&boot()), None)
        .await
        .expect(200);
    list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["source"] == "oidc")
        .cloned()
        .collect()
}

#[tokio::test]
async fn a_job_token_buys_a_short_lived_token_that_publishes() {
    let upstream = Upstream::start();
    let issuer = Issuer::start();
    let tg = setup(&upstream, &issuer).start().await;
    let c = client();

    let jwt = issuer.sign("rsa-1", &issuer.claims());
    let (status, body) = exchange(&tg, json!({ "token": jwt })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["policy"], "widget-release");
    let token = body["token"].as_str().unwrap().to_string();
    let id = body["id"].as_str().unwrap();
    assert!(token.starts_with(&format!("tok_{id}_")), "{token}");
    let expires: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(body["expires_at"].clone()).unwrap();
    let left = expires - chrono::Utc::now();
    assert!(
        left > chrono::Duration::minutes(14) && left <= chrono::Duration::minutes(15),
        "the default lifetime is 15 minutes: {left}"
    );

    // It publishes under the policy's routes, and nowhere else.
    let put = http_send(
        &c,
        "PUT",
        &tg.url("/pkg/acme-widget/acme-widget-1.0.tar.gz"),
        Some(&bearer(&token)),
        Some("tarball bytes"),
    )
    .await;
    assert_eq!(put.status, 200, "{}", put.body);
    let got = upstream
        .find("/pkg/acme-widget/acme-widget-1.0.tar.gz")
        .expect("the upload reached the store");
    assert_eq!(got.method, "PUT");
    assert!(got.header("authorization").is_none());
    let elsewhere = http_send(
        &c,
        "PUT",
        &tg.url("/pkg/other/x.tar.gz"),
        Some(&bearer(&token)),
        Some("x"),
    )
    .await;
    assert_eq!(elsewhere.status, 403, "{}", elsewhere.body);
    assert!(upstream.find("/pkg/other/x.tar.gz").is_none());

    // An ordinary token: whoami, list and show name its origin.
    let who = http_get(&c, &tg.url("/_tollgate/whoami"), Some(&bearer(&token))).await;
    assert_eq!(who.status, 200);
    let who: Value = serde_json::from_str(&who.body).unwrap();
    assert_eq!(who["source"], "oidc");
    assert_eq!(who["permission"], "write");
    let listed = minted_tokens(&tg).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let shown = tg
        .api("GET", &format!("/api/v1/tokens/{id}"), Some(&boot()), None)
        .await
        .expect(200);
    assert_eq!(shown["oidc"]["policy"], "widget-release");
    assert_eq!(shown["oidc"]["repository"], "acme/widget");
    assert_eq!(shown["oidc"]["run_id"], "9000001");
    assert_eq!(
        shown["oidc"]["subject"],
        "repo:acme/widget:ref:refs/tags/v1.0"
    );
    assert_eq!(shown["oidc"]["issuer"], issuer.url());
    assert_eq!(shown["name"], format!("oidc-widget-release-{id}"));

    // Never in a token file, never in a log, never upstream.
    assert_eq!(
        std::fs::read_to_string(&tg.setup.tokens_path).unwrap(),
        "tokens: []\n"
    );
    // The log is written in batches: wait for the exchange's line before reading it.
    poll_until(Duration::from_secs(3), || async {
        tg.logs().contains("oidc.exchange")
    })
    .await;
    let logs = tg.logs();
    let secret = token.rsplit('_').next().unwrap();
    assert!(!logs.contains(secret), "the minted token is logged");
    assert!(!logs.contains(&jwt), "the job token is logged");
    assert!(
        logs.contains("oidc.exchange"),
        "no audit line for the exchange"
    );
    assert!(
        upstream
            .requests()
            .iter()
            .all(|r| !format!("{r:?}").contains(&jwt)),
        "the job token reached the store"
    );
    assert_eq!(
        tg.metric("tollgate_oidc_exchanges_total{result=\"success\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn es256_tokens_in_the_authorization_header_work_and_minted_tokens_expire() {
    let upstream = Upstream::start();
    let issuer = Issuer::start();
    let tg = setup(&upstream, &issuer).start().await;
    let c = client();

    let jwt = issuer.sign("ec-1", &issuer.claims());
    let (status, body) = exchange_raw(
        &tg,
        Some(json!({"policy": "short"}).to_string()),
        Some(&format!("Bearer {jwt}")),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["policy"], "short");
    let token = body["token"].as_str().unwrap().to_string();
    let url = tg.url("/pkg/acme-widget/index.json");
    let first = http_get(&c, &url, Some(&bearer(&token))).await;
    assert_eq!(first.status, 200, "{}", first.body);
    // The policy's lifetime is 2 s: then the token is refused, and the store sees nothing.
    let expired = poll_until(Duration::from_secs(15), || async {
        let r = http_get(&c, &url, Some(&bearer(&token))).await;
        r.status == 401 && r.body.contains("token_expired")
    })
    .await;
    assert!(expired.is_some(), "the minted token never expired");
    let seen = upstream.count_path("/pkg/acme-widget/index.json");
    let again = http_get(&c, &url, Some(&bearer(&token))).await;
    assert_eq!(again.status, 401);
    assert_eq!(upstream.count_path("/pkg/acme-widget/index.json"), seen);
}

#[tokio::test]
async fn every_refused_job_token_says_which_check_failed_and_mints_nothing() {
    let upstream = Upstream::start();
    let issuer = Issuer::start();
    let tg = setup(&upstream, &issuer).start().await;
    let now = chrono::Utc::now().timestamp();
    let with = |changes: Value| {
        let mut c = issuer.claims();
        for (k, v) in changes.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let valid = issuer.sign("rsa-1", &issuer.claims());
    let other_valid = issuer.sign("rsa-1", &issuer.claims());
    // A valid header and signature around another token's payload.
    let tampered = {
        let a: Vec<&str> = valid.split('.').collect();
        let evil = issuer.sign("rsa-1", &with(json!({"repository": "evil/widget"})));
        let b: Vec<&str> = evil.split('.').collect();
        format!("{}.{}.{}", a[0], b[1], a[2])
    };
    let mut jwts = Vec::new();
    let cases: Vec<Case> = vec![
        (
            "unknown issuer",
            Some(issuer.sign("rsa-1", &with(json!({"iss": "https://elsewhere.example"})))),
            401,
            "unknown_issuer",
        ),
        (
            "wrong audience",
            Some(issuer.sign("rsa-1", &with(json!({"aud": "someone-else"})))),
            401,
            "wrong_audience",
        ),
        (
            "expired",
            Some(issuer.sign(
                "rsa-1",
                &with(json!({"iat": now - 900, "nbf": now - 900, "exp": now - 600})),
            )),
            401,
            "jwt_expired",
        ),
        (
            "not yet valid",
            Some(issuer.sign("rsa-1", &with(json!({"nbf": now + 600})))),
            401,
            "jwt_not_yet_valid",
        ),
        (
            "issued in the future",
            Some(issuer.sign("rsa-1", &with(json!({"iat": now + 600})))),
            401,
            "jwt_not_yet_valid",
        ),
        (
            "ES256 header naming an RSA key",
            Some(oidc::sign_as("ec-1", "rsa-1", &issuer.claims())),
            401,
            "bad_signature",
        ),
        (
            "signed by another key",
            Some(oidc::sign_as("rsa-2", "rsa-1", &issuer.claims())),
            401,
            "bad_signature",
        ),
        ("payload swapped", Some(tampered), 401, "bad_signature"),
        (
            "alg none",
            Some(oidc::unsigned("rsa-1", &issuer.claims())),
            401,
            "alg_not_allowed",
        ),
        (
            "HS256 with the public key",
            Some(oidc::hmac_with_public_key("rsa-1", &issuer.claims())),
            401,
            "alg_not_allowed",
        ),
        (
            "another repository",
            Some(issuer.sign("rsa-1", &with(json!({"repository": "evil/widget"})))),
            403,
            "claim_mismatch",
        ),
        (
            "an unprotected branch",
            Some(issuer.sign(
                "rsa-1",
                &with(json!({"ref": "refs/heads/feature", "ref_protected": "false"})),
            )),
            403,
            "claim_mismatch",
        ),
        (
            "oversized",
            Some(format!("{}.{}.sig", "e".repeat(10), "A".repeat(9000))),
            400,
            "jwt_too_large",
        ),
        ("malformed", Some("not-a-jwt".into()), 400, "jwt_malformed"),
        (
            "no jti",
            Some(issuer.sign("rsa-1", &{
                let mut c = issuer.claims();
                c.as_object_mut().unwrap().remove("jti");
                c
            })),
            400,
            "jwt_malformed",
        ),
    ];
    for (what, jwt, status, code) in &cases {
        let jwt = jwt.clone().unwrap();
        let (got, body) = exchange(&tg, json!({ "token": jwt })).await;
        assert_eq!(
            (got, body["error"].as_str().unwrap_or("")),
            (*status, *code),
            "{what}: {body}"
        );
        assert!(body["message"].is_string(), "{what}: {body}");
        assert!(
            !body.to_string().contains(&jwt),
            "{what}: the answer repeats the job token"
        );
        jwts.push(jwt);
    }

    // Unknown key id: one JWKS refresh, then refused; a second unknown key id within the
    // interval fetches nothing.
    let before = issuer.jwks_fetches();
    let (got, body) = exchange(
        &tg,
        json!({"token": issuer.sign("rsa-2", &issuer.claims())}),
    )
    .await;
    assert_eq!(
        (got, body["error"].as_str().unwrap()),
        (401, "unknown_kid"),
        "{body}"
    );
    assert_eq!(
        issuer.jwks_fetches(),
        before + 1,
        "one refresh for an unknown kid"
    );
    let (got, body) = exchange(
        &tg,
        json!({"token": oidc::sign_as("rsa-2", "made-up", &issuer.claims())}),
    )
    .await;
    assert_eq!(
        (got, body["error"].as_str().unwrap()),
        (401, "unknown_kid"),
        "{body}"
    );
    assert_eq!(
        issuer.jwks_fetches(),
        before + 1,
        "refreshes are at most one per interval"
    );

    // Request-level refusals.
    let (got, body) = exchange_raw(&tg, Some("x".repeat(17 * 1024)), None).await;
    assert_eq!(
        (got, body["error"].as_str().unwrap()),
        (413, "payload_too_large")
    );
    let (got, body) = exchange_raw(&tg, Some("{not json".into()), None).await;
    assert_eq!(
        (got, body["error"].as_str().unwrap()),
        (400, "invalid_request")
    );
    let (got, body) = exchange_raw(&tg, None, None).await;
    assert_eq!(
        (got, body["error"].as_str().unwrap()),
        (400, "invalid_request")
    );
    let (got, body) = exchange_raw(
        &tg,
        Some(json!({"token": valid}).to_string()),
        Some(&format!("Bearer {valid}")),
    )
    .await;
    assert_eq!(
        (got, body["error"].as_str().unwrap()),
        (400, "invalid_request"),
        "{body}"
    );
    let (got, body) = exchange(&tg, json!({"token": valid, "policy": "nope"})).await;
    assert_eq!(
        (got, body["error"].as_str().unwrap()),
        (403, "unknown_policy")
    );
    let get = http_get(&client(), &tg.url(EXCHANGE), None).await;
    assert_eq!(get.status, 405, "{}", get.body);
    assert!(get.body.contains("method_not_allowed"));

    // Nothing was minted, nothing reached the store.
    assert!(minted_tokens(&tg).await.is_empty());
    assert_eq!(upstream.count(), 0);

    // The first valid exchange works; the same job token again is a replay.
    mint(&tg, &valid).await;
    let (got, body) = exchange(&tg, json!({ "token": valid })).await;
    assert_eq!(
        (got, body["error"].as_str().unwrap()),
        (409, "jti_replayed"),
        "{body}"
    );
    mint(&tg, &other_valid).await;
    assert_eq!(minted_tokens(&tg).await.len(), 2);

    // Counted by result; no job token in the log.
    for code in [
        "unknown_issuer",
        "bad_signature",
        "jti_replayed",
        "unknown_kid",
        "payload_too_large",
    ] {
        let n = tg
            .metric(&format!(
                "tollgate_oidc_exchanges_total{{result=\"{code}\"}}"
            ))
            .await;
        assert!(n >= 1.0, "{code}: {n}");
    }
    let logs = tg.logs();
    for jwt in jwts.iter().chain([&valid]) {
        assert!(!logs.contains(jwt.as_str()), "a job token is in the log");
    }
}

#[tokio::test]
async fn an_issuer_that_is_down_gets_503_and_nothing_is_minted() {
    let upstream = Upstream::start();
    let issuer = Issuer::start();
    issuer.set_down(true);
    let tg = setup(&upstream, &issuer).start().await;
    let jwt = issuer.sign("rsa-1", &issuer.claims());
    let (got, body) = exchange(&tg, json!({ "token": jwt })).await;
    assert_eq!(
        (got, body["error"].as_str().unwrap()),
        (503, "jwks_unavailable"),
        "{body}"
    );
    assert!(minted_tokens(&tg).await.is_empty());
    // The job token was not used up: once the issuer answers, it exchanges.
    issuer.set_down(false);
    mint(&tg, &jwt).await;
    assert_eq!(minted_tokens(&tg).await.len(), 1);
}

#[tokio::test]
async fn a_rotated_key_is_found_with_one_jwks_refresh() {
    let upstream = Upstream::start();
    let issuer = Issuer::start();
    let tg = setup(&upstream, &issuer).start().await;
    mint(&tg, &issuer.sign("rsa-1", &issuer.claims())).await;
    assert_eq!(issuer.jwks_fetches(), 1);
    // The key set is cached.
    mint(&tg, &issuer.sign("rsa-1", &issuer.claims())).await;
    assert_eq!(issuer.jwks_fetches(), 1);
    issuer.publish(&["rsa-2", "ec-1"]);
    mint(&tg, &issuer.sign("rsa-2", &issuer.claims())).await;
    assert_eq!(issuer.jwks_fetches(), 2, "one refresh for the new key");
    // The retired key is gone with the refreshed set.
    let (got, body) = exchange(
        &tg,
        json!({"token": issuer.sign("rsa-1", &issuer.claims())}),
    )
    .await;
    assert_eq!(
        (got, body["error"].as_str().unwrap()),
        (401, "unknown_kid"),
        "{body}"
    );
}

#[tokio::test]
async fn without_oidc_enabled_the_path_is_an_ordinary_path_and_a_database_is_required() {
    let upstream = Upstream::start();
    let tg = Setup::new(&upstream.url()).start().await;
    let r = http_send(&client(), "POST", &tg.url(EXCHANGE), None, Some("{}")).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("credentials_missing"), "{}", r.body);

    let issuer = Issuer::start();
    let s = setup(&upstream, &issuer).set("tokens.database", json!("none"));
    s.write();
    let out = run_tollgate(
        &["check-config", "--config", &s.config_str()],
        None,
        s.dir.path(),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2), "{}", out.combined());
    assert!(
        out.combined().contains("oidc.enabled") && out.combined().contains("tokens.database"),
        "{}",
        out.combined()
    );
}

#[tokio::test]
async fn two_replicas_on_postgres_share_minted_tokens_and_used_job_token_ids() {
    let mut pg = PgCluster::start();
    let url = pg.create_database("oidc");
    let upstream = Upstream::start();
    let issuer = Issuer::start();
    let replica = || {
        setup(&upstream, &issuer)
            .set("tokens.files", json!([]))
            .set("tokens.database", json!(url))
    };
    let a = replica().start().await;
    let b = replica().start().await;
    let c = client();

    // Minted on A, used on B.
    let token = mint(&a, &issuer.sign("rsa-1", &issuer.claims())).await;
    let url_b = b.url("/pkg/acme-widget/from-b.json");
    let on_b = poll_until(Duration::from_secs(10), || async {
        http_get(&c, &url_b, Some(&bearer(&token))).await.status == 200
    })
    .await;
    assert!(on_b.is_some(), "the token minted on A never worked on B");
    println!("a token minted on A worked on B after {on_b:?}");

    // A job token exchanged on A is a replay on B.
    let jwt = issuer.sign("ec-1", &issuer.claims());
    mint(&a, &jwt).await;
    let (got, body) = exchange(&b, json!({ "token": jwt })).await;
    assert_eq!(
        (got, body["error"].as_str().unwrap()),
        (409, "jti_replayed"),
        "{body}"
    );
    // And the other way round.
    let jwt = issuer.sign("rsa-1", &issuer.claims());
    mint(&b, &jwt).await;
    let (got, body) = exchange(&a, json!({ "token": jwt })).await;
    assert_eq!(
        (got, body["error"].as_str().unwrap()),
        (409, "jti_replayed"),
        "{body}"
    );
    assert_eq!(minted_tokens(&a).await.len(), 3);
}

#[tokio::test]
async fn trust_policies_are_managed_through_the_admin_api_and_the_cli() {
    let upstream = Upstream::start();
    let issuer = Issuer::start();
    let tg = setup(&upstream, &issuer).start().await;
    let auth = boot();

    let list = tg
        .api("GET", "/api/v1/trust-policies", Some(&auth), None)
        .await
        .expect(200);
    let names: Vec<(&str, &str)> = list["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["source"].as_str().unwrap()))
        .collect();
    assert_eq!(names, [("widget-release", "file"), ("short", "file")]);
    tg.api("GET", "/api/v1/trust-policies", None, None)
        .await
        .expect_error(401, "unauthenticated");

    // A database policy for another repository: its jobs exchange from then on.
    let other = json!({"name": "other-read", "issuer": issuer.url(),
        "claims": {"repository": "acme/other"}, "permission": "read", "lifetime": "5m"});
    let created = tg
        .api("POST", "/api/v1/trust-policies", Some(&auth), Some(&other))
        .await
        .expect(201);
    assert_eq!(created["source"], "database");
    let mut claims = issuer.claims();
    claims["repository"] = json!("acme/other");
    let (status, body) = exchange(&tg, json!({"token": issuer.sign("rsa-1", &claims)})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["policy"], "other-read");
    // Refused: a duplicate (of a file policy too), no claim rule, manager permission.
    for (bad, status, code) in [
        (other.clone(), 409, "conflict"),
        (
            json!({"name": "short", "issuer": issuer.url(), "claims": {"repository": "x"}, "permission": "read"}),
            409,
            "conflict",
        ),
        (
            json!({"name": "open", "issuer": issuer.url(), "claims": {}, "permission": "read"}),
            400,
            "invalid_request",
        ),
        (
            json!({"name": "boss", "issuer": issuer.url(), "claims": {"repository": "x"}, "permission": "manager"}),
            400,
            "invalid_request",
        ),
    ] {
        tg.api("POST", "/api/v1/trust-policies", Some(&auth), Some(&bad))
            .await
            .expect_error(status, code);
    }
    tg.api("DELETE", "/api/v1/trust-policies/short", Some(&auth), None)
        .await
        .expect_error(409, "read_only");
    let gone = tg
        .api(
            "DELETE",
            "/api/v1/trust-policies/other-read",
            Some(&auth),
            None,
        )
        .await;
    assert_eq!(gone.status, 204, "{}", gone.text);
    claims["jti"] = json!(oidc::unique_jti());
    let (status, body) = exchange(&tg, json!({"token": issuer.sign("rsa-1", &claims)})).await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (403, "claim_mismatch"),
        "{body}"
    );

    // The CLI, on the same database.
    let issuer_url = issuer.url();
    let out = tg
        .cli(
            &[
                "trust-policy",
                "add",
                "--name",
                "cli-pol",
                "--issuer",
                &issuer_url,
                "--claim",
                "repository=acme/cli",
                "--claim",
                "ref=refs/tags/*",
                "--permission",
                "write",
                "--route",
                "/pkg/acme-cli/**=write",
                "--lifetime",
                "10m",
            ],
            None,
        )
        .await;
    assert!(out.status.success(), "{}", out.combined());
    let out = tg.cli(&["trust-policy", "list", "-o", "json"], None).await;
    assert!(out.status.success(), "{}", out.combined());
    let listed: Value = serde_json::from_str(&out.stdout).unwrap();
    let cli_pol = listed["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "cli-pol")
        .expect("cli-pol listed");
    assert_eq!(cli_pol["source"], "database");
    assert_eq!(cli_pol["lifetime"], "10m");
    assert_eq!(cli_pol["routes"][0]["path"], "/pkg/acme-cli/**");
    let api = tg
        .api("GET", "/api/v1/trust-policies/cli-pol", Some(&auth), None)
        .await
        .expect(200);
    assert_eq!(api["claims"]["ref"], "refs/tags/*");
    let out = tg
        .cli(
            &[
                "trust-policy",
                "add",
                "--name",
                "x",
                "--issuer",
                "http://evil.example",
                "--claim",
                "a=b",
                "--permission",
                "read",
            ],
            None,
        )
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", out.combined());
    assert!(out.combined().contains("issuer"), "{}", out.combined());
    let out = tg.cli(&["trust-policy", "remove", "cli-pol"], None).await;
    assert!(out.status.success(), "{}", out.combined());
    tg.api("GET", "/api/v1/trust-policies/cli-pol", Some(&auth), None)
        .await
        .expect_error(404, "not_found");
}

#[tokio::test]
async fn a_body_that_never_arrives_is_answered_408_within_the_bound() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = Upstream::start();
    let issuer = Issuer::start();
    let tg = setup(&upstream, &issuer).start().await;
    let mut conn = tokio::net::TcpStream::connect(tg.setup.listen)
        .await
        .unwrap();
    conn.write_all(
        format!(
            "POST {EXCHANGE} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: 200\r\n\r\n{{\"token\": \""
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), conn.read_to_end(&mut answer))
        .await
        .expect("the connection is answered and closed")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(upstream.count(), 0);
}

/// A policy's `packages` scope the minted token like a token's own: under a PyPI layout it
/// reads `acme-*` projects (any spelling PEP 503 folds into one) and nothing of another vendor.
#[tokio::test]
async fn a_policys_packages_scope_the_minted_token() {
    let upstream = Upstream::start();
    let issuer = Issuer::start();
    let claims = json!({"repository": "acme/widget"});
    let tg = setup(&upstream, &issuer)
        .set("upstream.layouts", json!([{"kind": "pypi", "prefix": "/"}]))
        .set(
            "oidc.policies",
            json!([{"name": "acme-only", "issuer": issuer.url(), "claims": claims,
                    "permission": "read", "packages": ["acme-*"]}]),
        )
        .start()
        .await;
    let token = mint(&tg, &issuer.sign("rsa-1", &issuer.claims())).await;
    let listed = minted_tokens(&tg).await;
    assert_eq!(listed[0]["packages"], json!(["acme-*"]), "{listed:?}");
    let c = client();
    let bearer = format!("Bearer {token}");
    for (path, want) in [
        ("/simple/acme-widget/", 200),
        ("/simple/Acme_Widget/", 200),
        ("/simple/globex-gadget/", 403),
    ] {
        let resp = http_get(&c, &tg.url(path), Some(&bearer)).await;
        assert_eq!(resp.status, want, "{path}: {}", resp.body);
    }
    assert_eq!(upstream.count_path("/simple/globex-gadget/"), 0);
}
