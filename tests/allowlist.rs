//! Per-token client allowlists (`allowed_ips`) and client addresses behind trusted proxies,
//! through the real binary. Clients bind source addresses in 127.0.0.0/8 (all of them reach
//! the listeners on 127.0.0.1).

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// A client whose connections come from `source`.
fn client_from(source: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .local_address(IpAddr::from(source))
        .build()
        .expect("reqwest client")
}

/// A read token that may be used only from `allowed`.
fn fenced(name: &str, allowed: &[&str]) -> TestToken {
    let mut t = TestToken::read(name);
    t.entry["allowed_ips"] = json!(allowed);
    t
}

/// `GET path` from `client` with `extra` headers: status and error code.
async fn get(
    client: &reqwest::Client,
    proxy: &Tollgate,
    path: &str,
    auth: &str,
    extra: &[(&str, &str)],
) -> (u16, Option<String>) {
    let mut req = client.get(proxy.url(path)).header("authorization", auth);
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    let code = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned));
    (status, code)
}

fn wrong_secret_for(t: &TestToken) -> String {
    bearer(tollgate::token::generate_with_id(&t.id).token.expose())
}

#[tokio::test]
async fn allowlist_refuses_other_addresses_after_the_secret_verifies() {
    let upstream = Upstream::start();
    let only_one = fenced("only-one", &["127.0.0.1/32"]);
    let v6_form = fenced(
        "v6-form",
        &["::ffff:127.0.0.1/128", "2001:db8::/32", "127.0.0.1"],
    );
    let proxy = Setup::new(&upstream.url())
        .with_tokens(&[&only_one, &v6_form])
        .start()
        .await;
    let (one, two) = (client_from([127, 0, 0, 1]), client_from([127, 0, 0, 2]));

    assert_eq!(get(&one, &proxy, "/a", &only_one.auth(), &[]).await.0, 200);
    assert_eq!(upstream.count_token(&only_one.id), 1);
    assert_eq!(
        get(&two, &proxy, "/b", &only_one.auth(), &[]).await,
        (403, Some("ip_not_allowed".into()))
    );
    assert_eq!(upstream.count_path("/b"), 0, "the upstream never sees it");
    // A wrong secret from the wrong address is still just a wrong secret: no oracle.
    assert_eq!(
        get(&two, &proxy, "/c", &wrong_secret_for(&only_one), &[]).await,
        (401, Some("token_invalid".into()))
    );
    // A spoofed X-Forwarded-For from an untrusted peer changes nothing.
    assert_eq!(
        get(
            &two,
            &proxy,
            "/d",
            &only_one.auth(),
            &[("x-forwarded-for", "127.0.0.1")]
        )
        .await,
        (403, Some("ip_not_allowed".into()))
    );
    assert_eq!(upstream.count_path("/d"), 0);
    // IPv6 rule forms are accepted; IPv4 peers match IPv4(-mapped) rules.
    assert_eq!(get(&one, &proxy, "/e", &v6_form.auth(), &[]).await.0, 200);
    assert_eq!(
        get(&two, &proxy, "/f", &v6_form.auth(), &[])
            .await
            .1
            .as_deref(),
        Some("ip_not_allowed")
    );
    // whoami says the list and the address it was checked against.
    let who = http_get(
        &one,
        &proxy.url("/_tollgate/whoami"),
        Some(&only_one.auth()),
    )
    .await;
    let who: Value = serde_json::from_str(&who.body).expect("whoami JSON");
    assert_eq!(who["allowed_ips"], json!(["127.0.0.1/32"]));
    assert_eq!(who["client"], "127.0.0.1");
    let refused = proxy
        .wait_for_audit("the refusal", |r| r["outcome"] == "ip_not_allowed")
        .await;
    assert_eq!(refused["client"], "127.0.0.2");
}

#[tokio::test]
async fn trusted_proxy_forwards_the_client_address() {
    let upstream = Upstream::start();
    let only_one = fenced("behind-proxy", &["127.0.0.1/32"]);
    let proxy = Setup::new(&upstream.url())
        .with_tokens(&[&only_one])
        .set("trusted_proxies", json!(["127.0.0.3/32"]))
        .start()
        .await;
    let (two, three) = (client_from([127, 0, 0, 2]), client_from([127, 0, 0, 3]));
    let xff = [("x-forwarded-for", "127.0.0.1")];

    assert_eq!(
        get(&three, &proxy, "/via", &only_one.auth(), &xff).await.0,
        200
    );
    let seen = upstream.find("/via").expect("forwarded");
    assert_eq!(
        seen.header("x-forwarded-for").as_deref(),
        Some("127.0.0.1, 127.0.0.3")
    );
    assert_eq!(seen.header("x-real-ip").as_deref(), Some("127.0.0.1"));
    let line = proxy
        .wait_for_audit("the forwarded request", |r| r["path"] == "/via")
        .await;
    assert_eq!(line["client"], "127.0.0.1");
    // The trusted proxy's own requests (no header) are its own address: refused.
    assert_eq!(
        get(&three, &proxy, "/own", &only_one.auth(), &[]).await,
        (403, Some("ip_not_allowed".into()))
    );
    // An untrusted peer's header is still ignored.
    assert_eq!(
        get(&two, &proxy, "/spoof", &only_one.auth(), &xff).await,
        (403, Some("ip_not_allowed".into()))
    );
    // A chain that names another client behind the trusted proxy: the rightmost untrusted.
    assert_eq!(
        get(
            &three,
            &proxy,
            "/chain",
            &only_one.auth(),
            &[("x-forwarded-for", "127.0.0.1, 127.0.0.9")]
        )
        .await
        .1
        .as_deref(),
        Some("ip_not_allowed")
    );
}

/// A token fenced to the network its ingress proxy is in: a client outside it, whose request
/// comes through the proxy, must not pass by padding `X-Forwarded-For` (the proxy appends the
/// client's real address after whatever the client sent).
#[tokio::test]
async fn a_long_forwarded_chain_does_not_make_the_client_the_proxy() {
    let upstream = Upstream::start();
    let internal = fenced("internal-only", &["127.0.0.0/30"]);
    let proxy = Setup::new(&upstream.url())
        .with_tokens(&[&internal])
        .set("trusted_proxies", json!(["127.0.0.3/32"]))
        .start()
        .await;
    let ingress = client_from([127, 0, 0, 3]);
    // The chain the ingress sends for an outside client 127.0.0.9 that sent a header itself.
    let padding = vec!["127.0.0.1"; 80].join(", ");
    for (path, chain) in [
        ("/short", "127.0.0.9".to_string()),
        ("/padded", format!("{padding}, 127.0.0.9")),
        ("/wide", format!("{}, 127.0.0.9", " ".repeat(9000))),
    ] {
        assert_eq!(
            get(
                &ingress,
                &proxy,
                path,
                &internal.auth(),
                &[("x-forwarded-for", &chain)]
            )
            .await,
            (403, Some("ip_not_allowed".into())),
            "{path}"
        );
        assert_eq!(upstream.count_path(path), 0, "{path}");
    }
}

/// A proxy that adds its own `X-Forwarded-For` line (HAProxy does) after the one the client
/// sent: the store gets the whole chain, not the client's line with the peer appended.
#[tokio::test]
async fn every_forwarded_for_line_reaches_the_store() {
    let upstream = Upstream::start();
    let reader = TestToken::read("lines");
    let proxy = Setup::new(&upstream.url())
        .with_tokens(&[&reader])
        .set("trusted_proxies", json!(["127.0.0.1/32"]))
        .start()
        .await;
    let auth = reader.auth();
    let resp = raw_request(
        proxy.setup.listen,
        "GET",
        "/lines",
        &[
            ("Authorization", &auth),
            ("X-Forwarded-For", "6.6.6.6"),
            ("X-Forwarded-For", "192.0.2.7"),
        ],
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = upstream.find("/lines").expect("forwarded");
    assert_eq!(seen.header("x-real-ip").as_deref(), Some("192.0.2.7"));
    assert_eq!(
        seen.header_all("x-forwarded-for"),
        vec!["6.6.6.6, 192.0.2.7, 127.0.0.1"]
    );
}

#[tokio::test]
async fn api_validates_and_keeps_managers_within_their_allowlist() {
    let upstream = Upstream::start();
    let proxy = Setup::new(&upstream.url()).with_bootstrap().start().await;
    proxy
        .api(
            "POST",
            "/api/v1/tokens",
            Some(&boot()),
            Some(&json!({"name": "bad", "permission": "read", "allowed_ips": ["10.0.0.0/33"]})),
        )
        .await
        .expect_error(400, "invalid_request");
    let (mgr, mgr_token) = proxy
        .create_token(
            &boot(),
            json!({"name": "fenced-mgr", "permission": "manager",
                   "allowed_ips": ["127.0.0.0/24", "2001:db8::/32"]}),
        )
        .await;
    assert_eq!(mgr["allowed_ips"], json!(["127.0.0.0/24", "2001:db8::/32"]));
    let auth = bearer(&mgr_token);
    // Wider, or none (any address): refused.
    for body in [
        json!({"name": "wide", "permission": "read"}),
        json!({"name": "wide", "permission": "read", "allowed_ips": ["127.0.0.0/8"]}),
    ] {
        proxy
            .api("POST", "/api/v1/tokens", Some(&auth), Some(&body))
            .await
            .expect_error(403, "exceeds_actor");
    }
    let (child, _) = proxy
        .create_token(
            &auth,
            json!({"name": "narrow", "permission": "read", "allowed_ips": ["127.0.0.1"]}),
        )
        .await;
    let path = format!("/api/v1/tokens/{}", child["id"].as_str().expect("id"));
    for ips in [json!(null), json!([]), json!(["10.0.0.0/8"])] {
        proxy
            .api(
                "PATCH",
                &path,
                Some(&auth),
                Some(&json!({"allowed_ips": ips})),
            )
            .await
            .expect_error(403, "exceeds_actor");
    }
    let patched = proxy
        .api(
            "PATCH",
            &path,
            Some(&auth),
            Some(&json!({"allowed_ips": ["127.0.0.2/32", "2001:db8:1::/48"]})),
        )
        .await
        .expect(200);
    assert_eq!(
        patched["allowed_ips"],
        json!(["127.0.0.2/32", "2001:db8:1::/48"])
    );
    proxy
        .api(
            "PATCH",
            &path,
            Some(&boot()),
            Some(&json!({"allowed_ips": ["nope"]})),
        )
        .await
        .expect_error(400, "invalid_request");
    // The manager token itself is refused from outside its allowlist, after verification.
    let outside = client_from([127, 0, 1, 1]);
    let resp = outside
        .get(proxy.admin_url("/api/v1/tokens"))
        .header("authorization", &auth)
        .send()
        .await
        .expect("admin request");
    assert_eq!(resp.status().as_u16(), 403);
    let body: Value = resp.json().await.expect("JSON");
    assert_eq!(body["error"], "ip_not_allowed");
}

#[tokio::test]
async fn cli_sets_and_clears_the_allowlist() {
    let upstream = Upstream::start();
    let proxy = Setup::new(&upstream.url()).start().await;
    let out = proxy
        .cli(
            &[
                "token",
                "create",
                "--name",
                "cli-fenced",
                "--permission",
                "read",
                "--allow-ip",
                "127.0.0.1",
                "--allow-ip",
                "2001:db8::/32",
                "-o",
                "json",
            ],
            None,
        )
        .await;
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(v["allowed_ips"], json!(["127.0.0.1/32", "2001:db8::/32"]));
    let shown = proxy.cli(&["token", "list"], None).await;
    assert!(
        shown.stdout.contains("127.0.0.1/32,2001:db8::/32"),
        "{shown:?}"
    );
    let cleared = proxy
        .cli(
            &[
                "token",
                "modify",
                "cli-fenced",
                "--no-allow-ip",
                "-o",
                "json",
            ],
            None,
        )
        .await;
    assert!(cleared.status.success(), "{cleared:?}");
    let v: Value = serde_json::from_str(&cleared.stdout).expect("JSON");
    assert_eq!(v["allowed_ips"], json!([]));
    let bad = proxy
        .cli(
            &["token", "modify", "cli-fenced", "--allow-ip", "10.0.0.1/8"],
            None,
        )
        .await;
    assert!(
        !bad.status.success() && bad.stderr.contains("host bits"),
        "{bad:?}"
    );
}
