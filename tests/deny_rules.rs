//! Deny rules (routes with access `none`) through the real binary: they refuse their paths
//! whatever the other routes grant and in any order, from a token file, the admin API and the
//! CLI, and a restricted manager cannot make a token without its own deny rules.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const ALLOWED: &str = "/p2/acme/widget.json";
const DENIED: &str = "/p2/acme/internal-x.json";

/// `GET path` with `auth` answers `want` within `timeout` (the token set may be reloading).
async fn eventually(proxy: &Tollgate, path: &str, auth: &str, want: u16) {
    let client = client();
    let url = proxy.url(path);
    let ok = poll_until(Duration::from_secs(3), || async {
        http_get(&client, &url, Some(auth)).await.status == want
    })
    .await;
    let last = http_get(&client, &url, Some(auth)).await;
    assert!(
        ok.is_some() && last.status == want,
        "GET {path}: {} {}, want {want}",
        last.status,
        last.body
    );
}

/// The allowed path is served (and reaches the upstream); the denied one is 403 `forbidden`
/// and never reaches the upstream.
async fn assert_deny_applies(proxy: &Tollgate, upstream: &Upstream, auth: &str) {
    let client = client();
    let before = upstream.count_path(ALLOWED);
    let ok = http_get(&client, &proxy.url(ALLOWED), Some(auth)).await;
    assert_eq!(ok.status, 200, "{ALLOWED}: {}", ok.body);
    assert_eq!(
        upstream.count_path(ALLOWED),
        before + 1,
        "{ALLOWED} not forwarded"
    );
    for path in [
        DENIED,
        "/p2/acme/internal-x/deeper.json",
        "/p2/acme/./internal-x.json",
    ] {
        let no = http_get(&client, &proxy.url(path), Some(auth)).await;
        assert_eq!(no.status, 403, "{path}: {}", no.body);
        assert_eq!(no.error_code().as_deref(), Some("forbidden"), "{path}");
    }
    assert_eq!(
        upstream.count_path(DENIED),
        0,
        "a denied path reached the upstream"
    );
    assert_eq!(
        upstream.count_path("/p2/acme/internal-x/deeper.json"),
        0,
        "a denied path reached the upstream"
    );
}

#[tokio::test]
async fn deny_wins_over_a_broader_route_in_any_order() {
    let upstream = Upstream::start();
    let deny_last = TestToken::builder("deny-last")
        .route("/p2/acme/*", "read")
        .route("/p2/acme/internal-*", "none")
        .build();
    let deny_first = TestToken::builder("deny-first")
        .route("/p2/acme/internal-*", "none")
        .route("/p2/acme/*", "read")
        .build();
    let deny_only = TestToken::builder("deny-only")
        .route("/p2/acme/internal-*", "none")
        .build();
    let proxy = Setup::new(&upstream.url())
        .with_tokens(&[&deny_last, &deny_first, &deny_only])
        .start()
        .await;
    let client = client();

    for t in [&deny_last, &deny_first, &deny_only] {
        assert_deny_applies(&proxy, &upstream, &t.auth()).await;
    }
    // Outside the allow route: refused; with deny rules only, everything else passes.
    let other = http_get(
        &client,
        &proxy.url("/p2/other/a.json"),
        Some(&deny_last.auth()),
    )
    .await;
    assert_eq!(other.status, 403, "{}", other.body);
    let other = http_get(
        &client,
        &proxy.url("/p2/other/a.json"),
        Some(&deny_only.auth()),
    )
    .await;
    assert_eq!(other.status, 200, "{}", other.body);

    let me = http_get(
        &client,
        &proxy.url("/_tollgate/whoami"),
        Some(&deny_first.auth()),
    )
    .await;
    let me: Value = serde_json::from_str(&me.body).expect("whoami JSON");
    assert_eq!(
        me["routes"],
        json!([
            {"path": "/p2/acme/internal-*", "access": "none"},
            {"path": "/p2/acme/*", "access": "read"}
        ]),
        "{me}"
    );
}

#[tokio::test]
async fn a_deny_rule_from_the_api_applies_on_the_next_request() {
    let upstream = Upstream::start();
    let proxy = Setup::new(&upstream.url()).with_bootstrap().start().await;
    let client = client();

    let (record, token) = proxy
        .create_token(
            &boot(),
            json!({"name": "api-deny", "permission": "read",
                   "routes": [{"path": "/p2/acme/internal-*", "access": "none"},
                              {"path": "/p2/acme/*", "access": "read"}]}),
        )
        .await;
    assert_eq!(record["routes"][0]["access"], "none", "{record}");
    assert_deny_applies(&proxy, &upstream, &bearer(&token)).await;

    // A token without the deny rule, given one by PATCH: refused from the next request.
    let (_, open) = proxy
        .create_token(
            &boot(),
            json!({"name": "api-open", "permission": "read",
                   "routes": [{"path": "/p2/acme/*", "access": "read"}]}),
        )
        .await;
    let r = http_get(&client, &proxy.url(DENIED), Some(&bearer(&open))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let patched = proxy
        .api(
            "PATCH",
            "/api/v1/tokens/api-open",
            Some(&boot()),
            Some(&json!({"routes": [{"path": "/p2/acme/*", "access": "read"},
                                    {"path": "/p2/acme/internal-*", "access": "none"}]})),
        )
        .await
        .expect(200);
    assert_eq!(patched["routes"][1]["access"], "none", "{patched}");
    let r = http_get(&client, &proxy.url(DENIED), Some(&bearer(&open))).await;
    assert_eq!(
        r.status, 403,
        "the PATCHed deny rule on the next request: {}",
        r.body
    );

    // An unknown access is still refused.
    proxy
        .api(
            "POST",
            "/api/v1/tokens",
            Some(&boot()),
            Some(&json!({"name": "api-bad", "permission": "read",
                         "routes": [{"path": "/p2", "access": "deny"}]})),
        )
        .await
        .expect_error(400, "invalid_request");
}

#[tokio::test]
async fn a_deny_rule_from_the_cli_applies_and_is_listed() {
    let upstream = Upstream::start();
    let proxy = Setup::new(&upstream.url()).start().await;

    let out = proxy
        .cli(
            &[
                "token",
                "create",
                "--name",
                "cli-deny",
                "--permission",
                "read",
                "--route",
                "/p2/acme/*=read",
                "--route",
                "/p2/acme/internal-*=none",
                "--output",
                "json",
            ],
            None,
        )
        .await;
    assert!(out.status.success(), "token create: {out:?}");
    let token = cli_token(&out);
    let record: Value = serde_json::from_str(&out.stdout).expect("JSON record");
    assert_eq!(
        record["routes"][1],
        json!({"path": "/p2/acme/internal-*", "access": "none"})
    );
    eventually(&proxy, ALLOWED, &bearer(&token), 200).await;
    assert_deny_applies(&proxy, &upstream, &bearer(&token)).await;

    let list = proxy.cli(&["token", "list"], None).await;
    assert!(list.status.success(), "token list: {list:?}");
    assert!(
        list.stdout
            .contains("/p2/acme/*=read,/p2/acme/internal-*=none"),
        "{}",
        list.stdout
    );

    // modify drops the deny rule: the path is served again.
    let out = proxy
        .cli(
            &["token", "modify", "cli-deny", "--route", "/p2/acme/*=read"],
            None,
        )
        .await;
    assert!(out.status.success(), "token modify: {out:?}");
    eventually(&proxy, DENIED, &bearer(&token), 200).await;

    let bad = proxy
        .cli(
            &[
                "token",
                "create",
                "--name",
                "cli-bad",
                "--permission",
                "read",
                "--route",
                "/p2=deny",
            ],
            None,
        )
        .await;
    assert!(!bad.status.success(), "an unknown access was accepted");
    assert!(bad.stderr.contains("read, write or none"), "{bad:?}");
}

#[tokio::test]
async fn a_restricted_manager_cannot_drop_its_deny_rule() {
    let upstream = Upstream::start();
    let proxy = Setup::new(&upstream.url()).with_bootstrap().start().await;
    let (_, mgr) = proxy
        .create_token(
            &boot(),
            json!({"name": "acme-manager", "permission": "manager",
                   "routes": [{"path": "/p2/acme/*", "access": "write"},
                              {"path": "/p2/acme/internal-*", "access": "none"}]}),
        )
        .await;
    let mgr = bearer(&mgr);

    for routes in [
        json!([{"path": "/p2/acme/*", "access": "read"}]),
        json!([{"path": "/p2/acme/*", "access": "read"},
               {"path": "/p2/acme/internal-x", "access": "none"}]),
        json!([{"path": "/p2/acme/internal-*", "access": "none"}]),
    ] {
        proxy
            .api(
                "POST",
                "/api/v1/tokens",
                Some(&mgr),
                Some(&json!({"name": "child", "permission": "read", "routes": routes})),
            )
            .await
            .expect_error(403, "exceeds_actor");
    }
    // Keeping the deny rule, in any order: created, and it works.
    let (_, child) = proxy
        .create_token(
            &mgr,
            json!({"name": "child", "permission": "read",
                   "routes": [{"path": "/p2/acme/internal-*", "access": "none"},
                              {"path": "/p2/acme/*", "access": "read"}]}),
        )
        .await;
    assert_deny_applies(&proxy, &upstream, &bearer(&child)).await;
    // Nor can it drop the rule later, from the child or from itself.
    proxy
        .api(
            "PATCH",
            "/api/v1/tokens/child",
            Some(&mgr),
            Some(&json!({"routes": [{"path": "/p2/acme/*", "access": "read"}]})),
        )
        .await
        .expect_error(403, "exceeds_actor");
    proxy
        .api(
            "PATCH",
            "/api/v1/tokens/acme-manager",
            Some(&mgr),
            Some(&json!({"routes": [{"path": "/p2/acme/*", "access": "write"}]})),
        )
        .await
        .expect_error(403, "exceeds_actor");
    let r = http_get(&client(), &proxy.url(DENIED), Some(&bearer(&child))).await;
    assert_eq!(r.status, 403, "{}", r.body);
}

/// A deny rule holds for every spelling of its path that a store reads as the same file:
/// reserved characters percent-encoded (`%40` for `@`, `%21` for `!`, `%2B` for `+`) and npm's
/// `%2F` between scope and name, in both directions. The store is reached only by the allowed
/// package, and receives it in the one normal spelling.
#[tokio::test]
async fn a_deny_rule_holds_for_every_spelling_of_its_path() {
    let upstream = Upstream::start();
    let reader = TestToken::builder("npm-reader")
        .route("/@acme/internal-*", "none")
        .route("/secret!", "none")
        .route("/v1+internal", "none")
        .build();
    // The same deny rule written in npm's one-segment form.
    let encoded_rule = TestToken::builder("npm-reader-2")
        .route("/@acme%2Finternal-*", "none")
        .build();
    let proxy = Setup::new(&upstream.url())
        .with_tokens(&[&reader, &encoded_rule])
        .start()
        .await;
    let get = |target: &'static str, token: &TestToken| {
        let auth = token.bearer();
        let addr = proxy.setup.listen;
        async move { raw_request(addr, "GET", target, &[("Authorization", &auth)]).await }
    };

    for target in [
        "/@acme/internal-x",
        "/%40acme/internal-x",
        "/@acme%2Finternal-x",
        "/@acme%2finternal-x",
        "/%40acme%2Finternal-x/-/internal-x-1.0.0.tgz",
        "/@acme/%69nternal-x",
    ] {
        for token in [&reader, &encoded_rule] {
            let resp = get(target, token).await;
            assert_eq!(
                resp.status,
                403,
                "{} GET {target}: {}",
                token.name,
                resp.text()
            );
        }
    }
    for target in [
        "/secret!",
        "/secret%21",
        "/v1+internal",
        "/v1%2Binternal",
        "/v1%2binternal/x",
    ] {
        let resp = get(target, &reader).await;
        assert_eq!(resp.status, 403, "GET {target}: {}", resp.text());
    }
    assert_eq!(upstream.count(), 0, "a denied spelling reached the store");

    // Allowed packages pass, in the normal spelling (pchars decoded, the npm `%2F` kept).
    let ok = get("/%40acme%2fwidget", &reader).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(upstream.last().expect("forwarded").uri, "/@acme%2Fwidget");
    let ok = get("/a/%5bx%5D%21", &reader).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(upstream.last().expect("forwarded").uri, "/a/%5Bx%5D!");
}
