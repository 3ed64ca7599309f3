//! Package scopes through the real binary: a token limited to `packages` reaches only those
//! packages in every ecosystem (metadata, dists, index files, uploads), a request whose
//! package cannot be told is refused, and listings come back filtered.

mod common;

use std::time::Duration;

use common::fixed::{Fixed, FixedUpstream};
use common::*;
use serde_json::{json, Value};

/// Every ecosystem, each under its own prefix (Composer at the root).
fn layouts() -> Value {
    json!([
        {"kind": "composer", "prefix": "/"},
        {"kind": "npm", "prefix": "/npm/"},
        {"kind": "pypi", "prefix": "/pypi/"},
        {"kind": "cargo", "prefix": "/cargo/"},
        {"kind": "maven", "prefix": "/maven/"},
    ])
}

/// A token with `permission` limited to `packages`.
fn scoped(name: &str, permission: &str, packages: &[&str]) -> TestToken {
    let mut t = TestToken::builder(name).permission(permission).build();
    t.entry["packages"] = json!(packages);
    t
}

const ACME: &[&str] = &["acme/*", "@acme/*", "acme-*", "acme_*", "com.acme:*"];

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("reqwest client")
}

/// `method path` with `auth`: status, error code, body.
async fn send(
    proxy: &Tollgate,
    method: &str,
    path: &str,
    auth: &str,
    body: Option<(&str, Vec<u8>)>,
) -> (u16, Option<String>, reqwest::header::HeaderMap, Vec<u8>) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = client()
        .request(method, proxy.url(path))
        .header("authorization", auth);
    if let Some((ct, b)) = body {
        req = req.header("content-type", ct).body(b);
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.expect("body").to_vec();
    let code = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned));
    (status, code, headers, body)
}

#[tokio::test]
async fn scoped_tokens_reach_only_their_packages_in_every_ecosystem() {
    let upstream = Upstream::start();
    let acme = scoped("acme-reader", "read", ACME);
    let exact = scoped("exact", "read", &["acme-widget"]);
    let open = TestToken::read("open");
    let proxy = Setup::new(&upstream.url())
        .set("upstream.layouts", layouts())
        .with_tokens(&[&acme, &exact, &open])
        .start()
        .await;
    let allowed = [
        "/p2/acme/widget.json",
        "/p2/acme/widget~dev.json",
        "/dist/acme/widget/acme-widget-1.0.0.zip",
        "/npm/@acme%2Fwidget",
        "/npm/@acme%2fwidget",
        "/npm/@acme/widget",
        "/npm/@acme/widget/-/widget-1.0.0.tgz",
        "/pypi/simple/acme-widget/",
        "/pypi/simple/Acme_Widget/",
        "/pypi/simple/acme.widget/",
        "/pypi/packages/acme_widget-1.0-py3-none-any.whl",
        "/cargo/config.json",
        "/cargo/ac/me/acme_widget",
        "/cargo/ac/me/acme-widget",
        "/crates/acme_widget/acme_widget-0.1.0.crate",
        "/maven/com/acme/widget/1.0/widget-1.0.jar",
        "/maven/com/acme/widget/maven-metadata.xml",
    ];
    for path in allowed {
        let before = upstream.count();
        let (status, code, _, _) = send(&proxy, "GET", path, &acme.auth(), None).await;
        assert_eq!((status, code.as_deref()), (200, None), "{path}");
        assert_eq!(upstream.count(), before + 1, "{path} reaches the store");
    }
    let refused = [
        ("/p2/globex/gadget.json", "package_not_allowed"),
        (
            "/dist/globex/gadget/globex-gadget-1.0.0.zip",
            "package_not_allowed",
        ),
        ("/npm/@globex%2Fx", "package_not_allowed"),
        ("/npm/@globex/x/-/x-1.0.0.tgz", "package_not_allowed"),
        ("/npm/@ACME/widget", "package_not_allowed"),
        ("/pypi/simple/globex-gadget/", "package_not_allowed"),
        ("/pypi/simple/Globex_Gadget/", "package_not_allowed"),
        (
            "/pypi/packages/globex_gadget-1.0.tar.gz",
            "package_not_allowed",
        ),
        ("/cargo/gl/ob/globex_gadget", "package_not_allowed"),
        (
            "/crates/globex_gadget/globex_gadget-0.1.0.crate",
            "package_not_allowed",
        ),
        (
            "/maven/com/globex/widget/1.0/widget-1.0.jar",
            "package_not_allowed",
        ),
        (
            "/maven/com/acme/sub/widget/1.0/widget-1.0.jar",
            "package_not_allowed",
        ),
        // Nothing Tollgate can tell a package from.
        ("/index.html", "package_unknown"),
        ("/npm/-/whoami", "package_unknown"),
        ("/pypi/", "package_unknown"),
        ("/maven/com/acme/", "package_unknown"),
        ("/cargo/ac/xx/acme_widget", "package_unknown"),
        ("/elsewhere/x", "package_unknown"),
    ];
    let before = upstream.count();
    for (path, want) in refused {
        let (status, code, _, _) = send(&proxy, "GET", path, &acme.auth(), None).await;
        assert_eq!((status, code.as_deref()), (403, Some(want)), "{path}");
    }
    assert_eq!(
        upstream.count(),
        before,
        "no refused request reaches the store"
    );
    // PEP 503: every spelling of the one allowed project, and nothing else.
    for (path, want) in [
        ("/pypi/simple/ACME_widget/", 200),
        ("/pypi/simple/acme--widget/", 200),
        ("/pypi/simple/acme-widgets/", 403),
        ("/pypi/simple/acme/", 403),
    ] {
        let (status, _, _, _) = send(&proxy, "GET", path, &exact.auth(), None).await;
        assert_eq!(status, want, "{path}");
    }
    // An unscoped token is not affected, known layout or not.
    for path in ["/p2/globex/gadget.json", "/index.html", "/elsewhere/x"] {
        let (status, _, _, _) = send(&proxy, "GET", path, &open.auth(), None).await;
        assert_eq!(status, 200, "{path}");
    }
    // The audit line says why.
    let logs = proxy.all_logs();
    assert!(logs.contains("package_not_allowed") && logs.contains("package_unknown"));
}

#[tokio::test]
async fn without_layouts_a_scoped_token_is_refused_everywhere() {
    let upstream = Upstream::start();
    let acme = scoped("acme", "read", ACME);
    let proxy = Setup::new(&upstream.url())
        .with_tokens(&[&acme])
        .start()
        .await;
    let (status, code, _, _) =
        send(&proxy, "GET", "/p2/acme/widget.json", &acme.auth(), None).await;
    assert_eq!((status, code.as_deref()), (403, Some("package_unknown")));
    assert_eq!(upstream.count(), 0);
}

/// A `twine upload` form for `name`, with its file named `file`.
fn twine_form(name: &str, file: &str) -> (String, Vec<u8>) {
    let b = "----tollgateBoundary7MA4YWxk";
    let mut body = Vec::new();
    for (k, v) in [
        (":action", "file_upload"),
        ("protocol_version", "1"),
        ("name", name),
        ("version", "1.0"),
    ] {
        body.extend_from_slice(
            format!("--{b}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!("--{b}\r\nContent-Disposition: form-data; name=\"content\"; filename=\"{file}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
    );
    // A file bigger than one read, so the body arrives in pieces.
    body.extend((0..300_000u32).map(|i| (i % 251) as u8));
    body.extend_from_slice(format!("\r\n--{b}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={b}"), body)
}

fn cargo_publish(name: &str) -> Vec<u8> {
    let json = json!({"name": name, "vers": "0.1.0", "deps": []}).to_string();
    let mut body = (json.len() as u32).to_le_bytes().to_vec();
    body.extend_from_slice(json.as_bytes());
    body.extend_from_slice(&4u32.to_le_bytes());
    body.extend_from_slice(b"CRAT");
    body
}

#[tokio::test]
async fn uploads_outside_the_patterns_never_reach_the_store() {
    let upstream = Upstream::start();
    let acme = scoped("acme-writer", "write", ACME);
    let proxy = Setup::new(&upstream.url())
        .set("upstream.layouts", layouts())
        .with_tokens(&[&acme])
        .start()
        .await;
    let multipart = |(ct, b): (String, Vec<u8>)| (ct, b);
    // Allowed: the whole body reaches the store, unchanged.
    let (ct, body) = multipart(twine_form(
        "Acme_Widget",
        "acme_widget-1.0-py3-none-any.whl",
    ));
    let (status, _, _, answer) = send(
        &proxy,
        "POST",
        "/pypi/",
        &acme.auth(),
        Some((&ct, body.clone())),
    )
    .await;
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_slice(&answer).expect("upstream JSON");
    assert_eq!(answer["len"], body.len());
    assert_eq!(answer["sha256"], sha256_hex(&body));
    let (status, _, _, _) = send(
        &proxy,
        "PUT",
        "/cargo/api/v1/crates/new",
        &acme.auth(),
        Some(("application/octet-stream", cargo_publish("acme_widget"))),
    )
    .await;
    assert_eq!(status, 200);
    for path in [
        "/npm/@acme%2Fwidget",
        "/maven/com/acme/widget/1.0/widget-1.0.jar",
    ] {
        let (status, _, _, _) = send(
            &proxy,
            "PUT",
            path,
            &acme.auth(),
            Some(("application/octet-stream", b"data".to_vec())),
        )
        .await;
        assert_eq!(status, 200, "{path}");
    }
    let stored = upstream.count();
    // Refused: by the form's name, by a file part's name, by a body that names nothing.
    let cases: Vec<(&str, &str, String, Vec<u8>, &str)> = vec![
        {
            let (ct, b) = twine_form("globex-gadget", "globex_gadget-1.0.tar.gz");
            ("POST", "/pypi/", ct, b, "package_not_allowed")
        },
        {
            let (ct, b) = twine_form("acme-widget", "globex_gadget-1.0.tar.gz");
            ("POST", "/pypi/", ct, b, "package_not_allowed")
        },
        {
            let (ct, b) = twine_form("Globex.Gadget", "acme_widget-1.0.tar.gz");
            ("POST", "/pypi/", ct, b, "package_not_allowed")
        },
        (
            "POST",
            "/pypi/",
            "application/json".into(),
            b"{}".to_vec(),
            "package_unknown",
        ),
        (
            "PUT",
            "/cargo/api/v1/crates/new",
            "application/octet-stream".into(),
            cargo_publish("globex_gadget"),
            "package_not_allowed",
        ),
        (
            "PUT",
            "/npm/@globex%2Fx",
            "application/json".into(),
            b"{}".to_vec(),
            "package_not_allowed",
        ),
        (
            "PUT",
            "/maven/com/globex/w/1.0/w-1.0.jar",
            "application/octet-stream".into(),
            b"jar".to_vec(),
            "package_not_allowed",
        ),
    ];
    for (method, path, ct, body, want) in cases {
        let (status, code, _, _) =
            send(&proxy, method, path, &acme.auth(), Some((&ct, body))).await;
        assert_eq!(
            (status, code.as_deref()),
            (403, Some(want)),
            "{method} {path}"
        );
    }
    // The held bodies never reached the store: at most a request head, never a byte of body
    // (the store's connection is dropped before the body is sent).
    let after: Vec<Recorded> = upstream.requests().into_iter().skip(stored).collect();
    assert!(after.iter().all(|r| r.body_len == 0), "{after:?}");
    // An upload larger than the bound cannot be checked: refused before anything is read.
    let proxy2 = Setup::new(&upstream.url())
        .set("upstream.layouts", layouts())
        .set("upstream.listing_max_body", json!("64KiB"))
        .with_tokens(&[&acme])
        .start()
        .await;
    let before = upstream.count();
    let (ct, body) = twine_form("acme-widget", "acme_widget-1.0.tar.gz");
    let (status, code, _, _) =
        send(&proxy2, "POST", "/pypi/", &acme.auth(), Some((&ct, body))).await;
    assert_eq!((status, code.as_deref()), (403, Some("package_unknown")));
    assert_eq!(upstream.count(), before);
}

const PACKAGES_JSON: &str = r#"{
  "packages": {"acme/inline": {"1.0": {"name": "acme/inline"}}, "globex/inline": {"1.0": {"name": "globex/inline"}}},
  "metadata-url": "/p2/%package%.json",
  "available-packages": ["acme/widget", "globex/gadget", "ACME/Other"],
  "available-package-patterns": ["acme/*", "globex/*", "*"],
  "includes": {"include/all$0123abcd.json": {"sha1": "0123abcd"}},
  "provider-includes": {"p/provider-x$%hash%.json": {"sha256": "ff"}}
}"#;

const INCLUDE_JSON: &str =
    r#"{"packages": {"acme/widget": {"1.0": {}}, "globex/gadget": {"1.0": {}}}}"#;

const SIMPLE_HTML: &str = "<!DOCTYPE html>\n<html><body>\n<a href=\"/pypi/simple/acme-widget/\">acme-widget</a><br/>\n<a href=\"/pypi/simple/globex-gadget/\">globex-gadget</a><br/>\n<A HREF=\"/pypi/simple/acme.tools/\">Acme.Tools</A>\n<a href=\"/pypi/simple/x/\">globex_<b>x</b></a>\n</body></html>\n";

const SIMPLE_JSON: &str = r#"{"meta": {"api-version": "1.0"}, "projects": [{"name": "acme-widget"}, {"name": "Globex_Gadget"}, {"name": "acme.tools"}]}"#;

const NPM_SEARCH: &str = r#"{"objects": [{"package": {"name": "@acme/widget"}}, {"package": {"name": "@globex/x"}}, {"package": {"name": "left-pad"}}], "total": 3, "time": "now"}"#;

#[tokio::test]
async fn listings_are_filtered_for_scoped_tokens_only() {
    let upstream = FixedUpstream::start(vec![
        (
            "/packages.json",
            Fixed::ok("application/json", PACKAGES_JSON),
        ),
        (
            "/include/all$0123abcd.json",
            Fixed::ok("application/json", INCLUDE_JSON),
        ),
        ("/pypi/simple/", Fixed::ok("text/html", SIMPLE_HTML)),
        (
            "/npm/-/v1/search",
            Fixed::ok("application/json", NPM_SEARCH),
        ),
    ]);
    let acme = scoped("acme", "read", ACME);
    let open = TestToken::read("open");
    let proxy = Setup::new(&upstream.url())
        .set("upstream.layouts", layouts())
        .with_tokens(&[&acme, &open])
        .start()
        .await;
    let get = |path: &'static str, auth: String| {
        let proxy = &proxy;
        async move {
            let resp = client()
                .get(proxy.url(path))
                .header("authorization", auth)
                .header("accept-encoding", "gzip")
                .header("if-none-match", "\"upstream-etag\"")
                .send()
                .await
                .expect("request");
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            (status, headers, resp.bytes().await.expect("body"))
        }
    };

    // Composer root.
    let (status, headers, body) = get("/packages.json", acme.auth()).await;
    assert_eq!(status, 200);
    assert!(headers.get("etag").is_none());
    assert_eq!(headers["vary"], "Authorization");
    let v: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(
        v["packages"],
        json!({"acme/inline": {"1.0": {"name": "acme/inline"}}})
    );
    assert_eq!(
        v["available-packages"],
        json!(["acme/widget", "ACME/Other"])
    );
    assert_eq!(v["available-package-patterns"], json!(["acme/*"]));
    assert_eq!(v["includes"], json!({"include/all$0123abcd.json": {}}));
    assert!(v.get("provider-includes").is_none());
    assert_eq!(v["metadata-url"], "/p2/%package%.json");
    let sent = upstream.to_path("/packages.json");
    let last = sent.last().expect("reached the store");
    assert!(
        last.header("accept-encoding").is_none(),
        "identity asked for"
    );
    assert!(last.header("if-none-match").is_none());
    // Its include.
    let (_, _, body) = get("/include/all$0123abcd.json", acme.auth()).await;
    let v: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(v["packages"], json!({"acme/widget": {"1.0": {}}}));
    // PyPI HTML: the anchors of other projects are gone, with their line breaks.
    let (status, headers, body) = get("/pypi/simple/", acme.auth()).await;
    assert_eq!(status, 200);
    let html = String::from_utf8(body.to_vec()).expect("UTF-8");
    assert!(
        html.contains(">acme-widget</a>") && html.contains(">Acme.Tools</A>"),
        "{html}"
    );
    assert!(!html.contains("globex"), "{html}");
    assert!(html.starts_with("<!DOCTYPE html>") && html.ends_with("</body></html>\n"));
    assert!(
        headers.get("content-length").is_none()
            || headers["content-length"] == html.len().to_string().as_str()
    );
    // npm search.
    let (_, _, body) = get("/npm/-/v1/search", acme.auth()).await;
    let v: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(v["objects"], json!([{"package": {"name": "@acme/widget"}}]));
    assert_eq!(v["total"], 1);
    // Unscoped: the store's bytes and headers as they are.
    let (status, headers, body) = get("/packages.json", open.auth()).await;
    assert_eq!(status, 200);
    assert_eq!(&body[..], PACKAGES_JSON.as_bytes());
    assert_eq!(headers["etag"], "\"upstream-etag\"");
    assert!(headers.get("vary").is_none());
    let (_, _, body) = get("/pypi/simple/", open.auth()).await;
    assert_eq!(&body[..], SIMPLE_HTML.as_bytes());
    let last = upstream.to_path("/pypi/simple/").pop().expect("reached");
    assert_eq!(
        last.header("accept-encoding").as_deref(),
        Some("gzip"),
        "unscoped requests keep their headers"
    );
}

#[tokio::test]
async fn pep691_json_listing_is_filtered() {
    let upstream = FixedUpstream::start(vec![(
        "/pypi/simple/",
        Fixed::ok("application/vnd.pypi.simple.v1+json", SIMPLE_JSON),
    )]);
    let acme = scoped("acme", "read", &["acme-*"]);
    let proxy = Setup::new(&upstream.url())
        .set("upstream.layouts", layouts())
        .with_tokens(&[&acme])
        .start()
        .await;
    let (status, _, headers, body) = send(&proxy, "GET", "/pypi/simple/", &acme.auth(), None).await;
    assert_eq!(status, 200);
    assert_eq!(headers["vary"], "Authorization");
    let v: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(
        v["projects"],
        json!([{"name": "acme-widget"}, {"name": "acme.tools"}])
    );
    assert_eq!(v["meta"]["api-version"], "1.0");
}

#[tokio::test]
async fn listings_that_cannot_be_filtered_are_502_never_unfiltered() {
    let big = format!(
        "{{\"available-packages\": [{}\"globex/x\"]}}",
        "\"globex/pad\",".repeat(10_000)
    );
    let upstream = FixedUpstream::start(vec![
        ("/packages.json", Fixed::ok("application/json", big.clone())),
        (
            "/include/all$1.json",
            Fixed::ok("application/json", "not json"),
        ),
        (
            "/npm/-/v1/search",
            Fixed::ok("application/json", big.clone()).chunked(),
        ),
        (
            "/pypi/simple/",
            Fixed::ok("text/html", &b"\x1f\x8b compressed"[..]).header("content-encoding", "gzip"),
        ),
    ]);
    let acme = scoped("acme", "read", ACME);
    let open = TestToken::read("open");
    let proxy = Setup::new(&upstream.url())
        .set("upstream.layouts", layouts())
        .set("upstream.listing_max_body", json!("64KiB"))
        .with_tokens(&[&acme, &open])
        .start()
        .await;
    assert!(big.len() > 64 * 1024);
    // Known before anything is sent (by Content-Length, by Content-Encoding): a clear 502.
    for (path, want) in [
        ("/packages.json", "listing_too_large"),
        ("/pypi/simple/", "listing_unfilterable"),
    ] {
        let (status, code, _, _) = send(&proxy, "GET", path, &acme.auth(), None).await;
        assert_eq!((status, code.as_deref()), (502, Some(want)), "{path}");
    }
    // Known only at the body's end: a 502 when the head is not out yet, else a cut body;
    // never one of the store's bytes.
    let resp = client()
        .get(proxy.url("/include/all$1.json"))
        .header("authorization", acme.auth())
        .send()
        .await;
    if let Ok(resp) = resp {
        let status = resp.status().as_u16();
        match resp.bytes().await {
            Ok(body) => {
                assert_eq!(status, 502);
                let v: Value = serde_json::from_slice(&body).expect("JSON refusal");
                assert_eq!(v["error"], "listing_unfilterable");
            }
            Err(_) => assert_eq!(status, 200, "a cut body after the head"),
        }
    }
    assert!(proxy.all_logs().contains("listing_unfilterable"));
    // Chunked, growing past the bound: never a byte of it.
    let resp = client()
        .get(proxy.url("/npm/-/v1/search"))
        .header("authorization", acme.auth())
        .send()
        .await;
    if let Ok(resp) = resp {
        let status = resp.status().as_u16();
        match resp.bytes().await {
            Ok(body) => {
                assert_eq!(status, 502, "{}", String::from_utf8_lossy(&body));
                let v: Value = serde_json::from_slice(&body).expect("JSON refusal");
                assert_eq!(v["error"], "listing_too_large");
            }
            Err(_) => assert_eq!(status, 200, "a cut body after the head"),
        }
    }
    // The unscoped token gets them as they are.
    let (status, _, _, body) = send(&proxy, "GET", "/packages.json", &open.auth(), None).await;
    assert_eq!((status, body.len()), (200, big.len()));
}

#[tokio::test]
async fn packages_through_the_admin_api_and_whoami() {
    let upstream = Upstream::start();
    let proxy = Setup::new(&upstream.url())
        .set("upstream.layouts", layouts())
        .with_bootstrap()
        .start()
        .await;
    proxy
        .api(
            "POST",
            "/api/v1/tokens",
            Some(&boot()),
            Some(&json!({"name": "bad", "permission": "read", "packages": ["acme/<x>"]})),
        )
        .await
        .expect_error(400, "invalid_request");
    let (mgr, mgr_token) = proxy
        .create_token(
            &boot(),
            json!({"name": "acme-mgr", "permission": "manager", "packages": ["acme/*", "@acme/*"]}),
        )
        .await;
    assert_eq!(mgr["packages"], json!(["acme/*", "@acme/*"]));
    let auth = bearer(&mgr_token);
    // A manager limited to packages makes only tokens inside them.
    for body in [
        json!({"name": "wide", "permission": "read"}),
        json!({"name": "wide", "permission": "read", "packages": ["globex/*"]}),
        json!({"name": "wide", "permission": "read", "packages": ["acme-*"]}),
    ] {
        proxy
            .api("POST", "/api/v1/tokens", Some(&auth), Some(&body))
            .await
            .expect_error(403, "exceeds_actor");
    }
    let (child, child_token) = proxy
        .create_token(
            &auth,
            json!({"name": "narrow", "permission": "read", "packages": ["acme/widget"]}),
        )
        .await;
    assert_eq!(child["packages"], json!(["acme/widget"]));
    let child_auth = bearer(&child_token);
    let (s1, _, _, _) = send(&proxy, "GET", "/p2/acme/widget.json", &child_auth, None).await;
    let (s2, _, _, _) = send(&proxy, "GET", "/p2/acme/other.json", &child_auth, None).await;
    assert_eq!((s1, s2), (200, 403));
    let path = format!("/api/v1/tokens/{}", child["id"].as_str().expect("id"));
    let patched = proxy
        .api(
            "PATCH",
            &path,
            Some(&boot()),
            Some(&json!({"packages": ["acme/*"]})),
        )
        .await
        .expect(200);
    assert_eq!(patched["packages"], json!(["acme/*"]));
    let (_, _, _, who) = send(&proxy, "GET", "/_tollgate/whoami", &child_auth, None).await;
    let who: Value = serde_json::from_slice(&who).expect("whoami JSON");
    assert_eq!(who["packages"], json!(["acme/*"]));
    let (s2, _, _, _) = send(&proxy, "GET", "/p2/acme/other.json", &child_auth, None).await;
    assert_eq!(s2, 200, "the patch applies on the next request");
    let cleared = proxy
        .api(
            "PATCH",
            &path,
            Some(&boot()),
            Some(&json!({"packages": null})),
        )
        .await
        .expect(200);
    assert_eq!(cleared["packages"], json!([]));
}

#[tokio::test]
async fn bad_layouts_and_patterns_are_reported_with_their_field() {
    let upstream = Upstream::start();
    let setup = Setup::new(&upstream.url()).set(
        "upstream.layouts",
        json!([{"kind": "rubygems", "prefix": "/"}, {"kind": "composer", "dist": ["dist/{version}"]}]),
    );
    setup.write();
    let out = run_tollgate(
        &["check-config", "--config", &setup.config_str()],
        None,
        setup.dir.path(),
        Duration::from_secs(30),
    );
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("upstream.layouts[0].kind"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("upstream.layouts[1].dist"),
        "{}",
        out.stderr
    );
    // A bad pattern in a token file: the file is refused, saying where and why.
    let mut bad = scoped("bad", "read", &["acme/*"]);
    bad.entry["packages"] = json!(["acme/<x>"]);
    let setup = Setup::new(&upstream.url())
        .set("upstream.layouts", layouts())
        .with_tokens(&[&bad]);
    setup.write();
    let out = run_tollgate(
        &["serve", "--config", &setup.config_str()],
        None,
        setup.dir.path(),
        Duration::from_secs(30),
    );
    assert!(!out.status.success());
    let text = out.combined();
    assert!(
        text.contains(
            "tokens[0] (name \\\"bad\\\"): packages: \\\"acme/<x>\\\" is not a package pattern"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn cli_sets_shows_and_clears_packages() {
    let upstream = Upstream::start();
    let proxy = Setup::new(&upstream.url())
        .set("upstream.layouts", layouts())
        .start()
        .await;
    let out = proxy
        .cli(
            &[
                "token",
                "create",
                "--name",
                "cli-scoped",
                "--permission",
                "read",
                "--package",
                "acme/*",
                "--package",
                "@acme/*",
                "-o",
                "json",
            ],
            None,
        )
        .await;
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(v["packages"], json!(["acme/*", "@acme/*"]));
    let token = out
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .expect("the token, on stderr")
        .trim()
        .to_owned();
    let shown = proxy.cli(&["token", "list"], None).await;
    assert!(shown.stdout.contains("acme/*,@acme/*"), "{shown:?}");
    // The running proxy follows the database: the new token is scoped there too.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (s, _, _, _) = send(&proxy, "GET", "/p2/acme/w.json", &bearer(&token), None).await;
        if s == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never accepted: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (s, code, _, _) = send(&proxy, "GET", "/p2/globex/w.json", &bearer(&token), None).await;
    assert_eq!((s, code.as_deref()), (403, Some("package_not_allowed")));
    let cleared = proxy
        .cli(
            &[
                "token",
                "modify",
                "cli-scoped",
                "--no-package",
                "-o",
                "json",
            ],
            None,
        )
        .await;
    assert!(cleared.status.success(), "{cleared:?}");
    let v: Value = serde_json::from_str(&cleared.stdout).expect("JSON");
    assert_eq!(v["packages"], json!([]));
    let bad = proxy
        .cli(&["token", "modify", "cli-scoped", "--package", "a b"], None)
        .await;
    assert!(
        !bad.status.success() && bad.stderr.contains("--package"),
        "{bad:?}"
    );
    // A token-file entry from `token hash` carries its packages.
    let hashed = proxy
        .cli(
            &[
                "token",
                "hash",
                "--name",
                "filed",
                "--permission",
                "read",
                "--package",
                "com.acme:*",
            ],
            None,
        )
        .await;
    assert!(hashed.status.success(), "{hashed:?}");
    assert!(
        hashed.stdout.contains("packages:") && hashed.stdout.contains("com.acme:*"),
        "{hashed:?}"
    );
}
