//! Attacks through the real binary: each test is one way through the gate that an attack
//! campaign found (or a sibling of one), and asserts the gate now holds — on the status the
//! client sees and on what the store received.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A token string with `token`'s id and another (valid-looking) secret.
fn wrong_secret_for(token: &TestToken) -> String {
    tollgate::token::generate_with_id(&token.id)
        .token
        .expose()
        .to_owned()
}

/// A client whose connections come from `source` (any 127.0.0.x reaches 127.0.0.1).
fn client_from(source: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .local_address(IpAddr::from(source))
        .build()
        .expect("reqwest client")
}

/// The status of `GET /f` on `proxy` with the Authorization value `auth`.
async fn status_of(c: &reqwest::Client, proxy: &Tollgate, auth: &str) -> u16 {
    http_get(c, &proxy.url("/f"), Some(auth)).await.status
}

/// Writes `request` on a fresh connection and reads until the server closes it or `wait`
/// passes without data.
async fn exchange(addr: SocketAddr, request: &[u8], wait: Duration) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(Ok(n)) = tokio::time::timeout(wait, s.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn path_parameters_never_reach_the_store() {
    let upstream = Upstream::start();
    let reader = TestToken::builder("acme-reader")
        .route("/p2/acme/*", "read")
        .build();
    let writer = TestToken::builder("acme-writer")
        .permission("write")
        .route("/p2/acme/*", "write")
        .build();
    let proxy = Setup::new(&upstream.url())
        .with_tokens(&[&reader, &writer])
        .start()
        .await;
    let ok = raw_request(
        proxy.setup.listen,
        "GET",
        "/p2/acme/widget.json",
        &[("Authorization", &reader.bearer())],
    )
    .await;
    assert_eq!(ok.status, 200, "in scope: {}", ok.text());
    let before = upstream.count();
    for target in [
        "/p2/acme/..;/evil/secret.json",
        "/p2/acme/%2e%2e;/evil/secret.json",
        "/p2/acme/.;/..;/evil/secret.json",
        "/p2/acme/..;jsessionid=1/evil/secret.json",
        "/p2/acme/..%3b/evil/secret.json",
        "/p2/acme/widget;x/../../evil/secret.json",
        "/p2/acme/%252e%252e/evil/secret.json",
        "/p2/acme/%c0%ae%c0%ae/evil/secret.json",
        "/p2/acme/%ef%bc%8e%ef%bc%8e/evil/secret.json",
    ] {
        for (method, token) in [("GET", &reader), ("PUT", &writer)] {
            let resp = raw_request(
                proxy.setup.listen,
                method,
                target,
                &[("Authorization", &token.bearer())],
            )
            .await;
            assert_eq!(resp.status, 400, "{method} {target}: {}", resp.text());
            assert!(resp.text().contains("bad_path"), "{method} {target}");
        }
    }
    assert_eq!(upstream.count(), before, "a refused path reached the store");
}

#[tokio::test]
async fn identity_forwarding_and_override_headers_cannot_be_spoofed() {
    let upstream = Upstream::start();
    let reader = TestToken::read("real-name");
    let proxy = Setup::new(&upstream.url())
        .with_tokens(&[&reader])
        .set("tokens.identity_headers", json!(true))
        .start()
        .await;
    let spoofed = [
        ("X_Tollgate_Token_Name", "x"),
        ("X-Tollgate_Token-Id", "AAAAAAAAAAAA"),
        ("X_Forwarded_For", "6.6.6.6"),
        ("X_Forwarded_Host", "evil.example"),
        ("X-Forwarded-Host", "evil.example"),
        ("X-Forwarded-Port", "1"),
        ("X-HTTP-Method-Override", "DELETE"),
        ("X_HTTP_Method_Override", "DELETE"),
        ("X-HTTP-Method", "DELETE"),
        ("X-Method-Override", "DELETE"),
        ("X-Original-URL", "/admin/secret"),
        ("X-Rewrite-URL", "/admin/secret"),
        ("Forwarded", "for=6.6.6.6;host=evil.example"),
        ("X-Real-IP", "6.6.6.6"),
        ("X_Real_IP", "6.6.6.6"),
        ("X.Tollgate.Token.Id", "AAAAAAAAAAAA"),
        ("X-Remote-User", "admin"),
        ("Remote-User", "admin"),
        ("X-Forwarded-User", "admin"),
        ("X-Auth-Request-User", "admin"),
        ("True-Client-IP", "6.6.6.6"),
        ("CF-Connecting-IP", "6.6.6.6"),
        ("X-Client-IP", "6.6.6.6"),
        ("X-Forwarded-Protocol", "https"),
        ("X-Url-Scheme", "https"),
        ("Front-End-Https", "on"),
        ("X-Forwarded-Uri", "/admin/secret"),
        ("X-Envoy-Original-Path", "/admin/secret"),
    ];
    let mut headers = vec![("Authorization", reader.bearer())];
    headers.extend(spoofed.iter().map(|(k, v)| (*k, v.to_string())));
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let resp = raw_request(proxy.setup.listen, "GET", "/spoof", &headers).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let got = upstream.find("/spoof").expect("the store got the request");
    for (name, _) in &spoofed {
        if name.contains('_') {
            assert!(
                got.header(name).is_none(),
                "{name} reached the store: {:?}",
                got.headers
            );
        }
    }
    assert_eq!(got.header_all("x-tollgate-token-name"), vec!["real-name"]);
    assert_eq!(
        got.header_all("x-tollgate-token-id"),
        vec![reader.id.clone()]
    );
    for name in [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "x-original-url",
        "x-rewrite-url",
        "x-forwarded-port",
        "x.tollgate.token.id",
        "x-remote-user",
        "remote-user",
        "x-forwarded-user",
        "x-auth-request-user",
        "true-client-ip",
        "cf-connecting-ip",
        "x-client-ip",
        "x-forwarded-protocol",
        "x-url-scheme",
        "front-end-https",
        "x-forwarded-uri",
        "x-envoy-original-path",
    ] {
        assert!(got.header(name).is_none(), "{name} reached the store");
    }
    assert_eq!(got.header_all("x-real-ip"), vec!["127.0.0.1"]);
    assert_eq!(
        got.header_all("forwarded"),
        vec!["for=127.0.0.1;proto=http"]
    );
    assert_ne!(
        got.header("x-forwarded-host").as_deref(),
        Some("evil.example")
    );
    assert_eq!(got.method, "GET");
}

#[tokio::test]
async fn a_content_length_list_is_forwarded_as_one_number() {
    let upstream = Upstream::start();
    let writer = TestToken::write("writer");
    let proxy = Setup::new(&upstream.url())
        .with_tokens(&[&writer])
        .start()
        .await;
    let request = format!(
        "PUT /upload/cl HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Length: 5, 5\r\nConnection: close\r\n\r\nhello",
        writer.bearer()
    );
    let answer = exchange(
        proxy.setup.listen,
        request.as_bytes(),
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let got = upstream
        .find("/upload/cl")
        .expect("upload reached the store");
    assert_eq!(got.header_all("content-length"), vec!["5"]);
    assert_eq!(got.body_len, 5);
}

/// A store that accepts `Upgrade`: answers 101 and then records whatever arrives on the
/// tunnel; any other request gets `200 plain`. Records every request head it parses.
struct UpgradingStore {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl UpgradingStore {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut tmp = [0u8; 4096];
                    let mut tunnel = false;
                    loop {
                        let Ok(n) = s.read(&mut tmp).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&tmp[..n]);
                        if tunnel {
                            log.lock()
                                .unwrap()
                                .push(format!("TUNNEL {}", String::from_utf8_lossy(&buf)));
                            buf.clear();
                            continue;
                        }
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                            buf.drain(..end + 4);
                            let upgrade = head.to_ascii_lowercase().contains("\nupgrade:");
                            log.lock().unwrap().push(head);
                            if upgrade {
                                let _ = s
                                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                                    .await;
                                tunnel = true;
                                break;
                            }
                            let _ = s
                                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nplain")
                                .await;
                        }
                    }
                });
            }
        });
        UpgradingStore {
            addr,
            seen,
            _task: task,
        }
    }
}

#[tokio::test]
async fn upgrade_never_turns_a_connection_into_a_tunnel() {
    let store = UpgradingStore::start().await;
    let reader = TestToken::read("reader");
    let proxy = Setup::new(&format!("http://{}", store.addr))
        .with_tokens(&[&reader])
        .start()
        .await;
    let mut s = tokio::net::TcpStream::connect(proxy.setup.listen)
        .await
        .unwrap();
    let first = format!(
        "GET /ws HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        reader.bearer()
    );
    s.write_all(first.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("first answer")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let first_answer = String::from_utf8_lossy(&got).into_owned();
    assert!(
        !first_answer.starts_with("HTTP/1.1 101"),
        "the connection was upgraded: {first_answer}"
    );
    // A second request on the same connection, without any token.
    let _ = s
        .write_all(b"GET /secret HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut rest = Vec::new();
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        rest.extend_from_slice(&buf[..n]);
        if String::from_utf8_lossy(&rest).contains("credentials_missing") {
            break;
        }
    }
    let seen = store.seen.lock().unwrap().clone();
    assert!(
        seen.iter().all(|h| !h.contains("/secret")),
        "a request without a token reached the store: {seen:?}"
    );
    assert!(
        seen.iter()
            .all(|h| !h.to_ascii_lowercase().contains("\nupgrade:")),
        "Upgrade reached the store: {seen:?}"
    );
}

#[tokio::test]
async fn guessing_spends_only_the_guessers_budget() {
    let upstream = Upstream::start();
    let owner = TestToken::read("owner");
    let proxy = Setup::new(&upstream.url())
        .with_tokens(&[&owner])
        .set(
            "verify.token_attempts",
            json!({"requests": 5, "period": "1h"}),
        )
        .env(
            "TOLLGATE_BOOTSTRAP_TOKEN",
            &format!("{BOOT_NAME}:{BOOT_SECRET}"),
        )
        .start()
        .await;
    let attacker = client_from([127, 0, 0, 2]);
    let url = proxy.url("/p2/acme/widget.json");

    // Wrong secrets for the owner's id from the attacker's address: throttled after 5.
    let mut statuses = Vec::new();
    for _ in 0..8 {
        // A distinct wrong secret each time (a replayed one is answered from the cache).
        let wrong = format!("Bearer {}", wrong_secret_for(&owner));
        statuses.push(http_get(&attacker, &url, Some(&wrong)).await.status);
    }
    assert_eq!(&statuses[..5], &[401; 5], "{statuses:?}");
    assert_eq!(&statuses[5..], &[429; 3], "{statuses:?}");

    // The owner's correct, never-cached credential from its own address still works.
    let resp = http_get(&client(), &url, Some(&owner.bearer())).await;
    assert_eq!(resp.status, 200, "the owner was locked out: {}", resp.body);

    // An unknown id is answered exactly like a known one: 401, then 429 after the budget.
    let unknown_id = "ZZZZZZZZZZZZ";
    let from3 = client_from([127, 0, 0, 3]);
    let mut unknown = Vec::new();
    for _ in 0..8 {
        let t = tollgate::token::generate_with_id(unknown_id);
        let auth = format!("Bearer {}", t.token.expose());
        unknown.push(http_get(&from3, &url, Some(&auth)).await.status);
    }
    assert_eq!(unknown, statuses, "unknown and known ids are told apart");

    // The bootstrap token is not a proxy credential at all, and guesses at its name on the
    // proxy port do not lock the operator out of the admin API.
    let resp = http_get(&client(), &url, Some(&boot())).await;
    assert_eq!(resp.status, 401, "the bootstrap token works on the proxy");
    for i in 0..8 {
        let guess = basic(BOOT_NAME, &format!("wrong-guess-number-{i:04}"));
        let s = http_get(&client(), &url, Some(&guess)).await.status;
        assert!(s == 401 || s == 429, "{s}");
    }
    let resp = proxy
        .api("GET", "/api/v1/tokens", Some(&boot()), None)
        .await;
    assert_eq!(resp.status, 200, "operator locked out: {}", resp.text);
    // The admin API's own throttling answers with Retry-After.
    let mut last = None;
    for i in 0..8 {
        let guess = basic(BOOT_NAME, &format!("admin-wrong-guess-{i:04}"));
        let r = proxy.api("GET", "/api/v1/tokens", Some(&guess), None).await;
        last = Some(r);
    }
    let last = last.unwrap();
    assert_eq!(last.status, 429, "{}", last.text);
    assert!(last.header("retry-after").is_some(), "no Retry-After");
}

/// Starts a proxy with the bootstrap token, a SQLite database and no file tokens.
async fn with_database(upstream: &Upstream) -> Tollgate {
    Setup::new(&upstream.url())
        .env(
            "TOLLGATE_BOOTSTRAP_TOKEN",
            &format!("{BOOT_NAME}:{BOOT_SECRET}"),
        )
        .start()
        .await
}

async fn create(proxy: &Tollgate, auth: &str, body: Value) -> (u16, Value) {
    let r = proxy
        .api("POST", "/api/v1/tokens", Some(auth), Some(&body))
        .await;
    (r.status, r.json())
}

#[tokio::test]
async fn a_restricted_manager_cannot_grant_or_take_more_than_it_has() {
    let upstream = Upstream::start();
    let proxy = with_database(&upstream).await;
    let (status, mgr) = create(
        &proxy,
        &boot(),
        json!({"name": "acme-manager", "permission": "manager",
               "routes": [{"path": "/p2/acme/*", "access": "write"}],
               "expires_in": "30d", "rate_limit": {"requests": 100, "period": "1h"}}),
    )
    .await;
    assert_eq!(status, 201, "{mgr}");
    let mgr_auth = format!("Bearer {}", mgr["token"].as_str().unwrap());
    let mgr_id = mgr["id"].as_str().unwrap().to_owned();

    let broader = [
        json!({"name": "x1", "permission": "manager", "expires_in": "7d",
               "rate_limit": {"requests": 10, "period": "1h"}}),
        json!({"name": "x2", "permission": "read", "routes": [{"path": "/p2/*", "access": "read"}],
               "expires_in": "7d", "rate_limit": {"requests": 10, "period": "1h"}}),
        json!({"name": "x3", "permission": "read", "routes": [{"path": "/p2/acme/*", "access": "read"}],
               "expires_in": "never", "rate_limit": {"requests": 10, "period": "1h"}}),
        json!({"name": "x4", "permission": "read", "routes": [{"path": "/p2/acme/*", "access": "read"}],
               "expires_in": "7d", "rate_limit": "unlimited"}),
        json!({"name": "x5", "permission": "read", "routes": [{"path": "/p2/acme/*", "access": "read"}],
               "expires_in": "7d", "rate_limit": {"requests": 1000, "period": "1h"}}),
        json!({"name": "x6", "permission": "read", "routes": [{"path": "/p2/acme-evil/*", "access": "read"}],
               "expires_in": "7d", "rate_limit": {"requests": 10, "period": "1h"}}),
    ];
    for body in broader {
        let (status, answer) = create(&proxy, &mgr_auth, body.clone()).await;
        assert_eq!(status, 403, "{body} → {answer}");
        assert_eq!(answer["error"], "exceeds_actor", "{answer}");
    }
    // Narrower is fine.
    let (status, narrow) = create(
        &proxy,
        &mgr_auth,
        json!({"name": "acme-widget-reader", "permission": "read",
               "routes": [{"path": "/p2/acme/widget", "access": "read"}],
               "expires_in": "7d", "rate_limit": {"requests": 10, "period": "1h"}}),
    )
    .await;
    assert_eq!(status, 201, "{narrow}");

    // It cannot widen itself.
    for patch in [
        json!({"routes": []}),
        json!({"routes": [{"path": "/", "access": "write"}]}),
        json!({"rate_limit": null}),
        json!({"rate_limit": "unlimited"}),
    ] {
        let r = proxy
            .api(
                "PATCH",
                &format!("/api/v1/tokens/{mgr_id}"),
                Some(&mgr_auth),
                Some(&patch),
            )
            .await;
        assert_eq!(r.status, 403, "{patch} → {}", r.text);
    }
    // Nor touch a broader token: the bootstrap-created unrestricted one.
    let (_, wide) = create(
        &proxy,
        &boot(),
        json!({"name": "wide", "permission": "write"}),
    )
    .await;
    let wide_id = wide["id"].as_str().unwrap();
    let r = proxy
        .api(
            "POST",
            &format!("/api/v1/tokens/{wide_id}/regenerate"),
            Some(&mgr_auth),
            None,
        )
        .await;
    assert_eq!(r.status, 403, "regenerated a broader token: {}", r.text);
    let r = proxy
        .api(
            "DELETE",
            &format!("/api/v1/tokens/{wide_id}"),
            Some(&mgr_auth),
            None,
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
}

#[tokio::test]
async fn a_conflict_never_keeps_a_revoked_token() {
    let upstream = Upstream::start();
    let mut proxy = with_database(&upstream).await;
    let cwd = proxy.setup.dir.path().to_owned();
    let config = proxy.setup.config_str();
    // The CLI refuses the bootstrap token's name (it reads the server's environment variable).
    let out = tokio::task::spawn_blocking(move || {
        let boot = format!("{BOOT_NAME}:{BOOT_SECRET}");
        run_tollgate_env(
            &[
                "token",
                "create",
                "--name",
                BOOT_NAME,
                "--permission",
                "read",
                "--config",
                &config,
            ],
            None,
            &cwd,
            Duration::from_secs(30),
            &[("TOLLGATE_BOOTSTRAP_TOKEN", &boot)],
        )
    })
    .await
    .unwrap();
    assert!(
        !out.status.success(),
        "created a second {BOOT_NAME:?}: {out:?}"
    );
    assert!(out.combined().contains("bootstrap"), "{out:?}");

    let (status, victim) = create(
        &proxy,
        &boot(),
        json!({"name": "victim", "permission": "read"}),
    )
    .await;
    assert_eq!(status, 201);
    let victim_auth = format!("Bearer {}", victim["token"].as_str().unwrap());
    let victim_id = victim["id"].as_str().unwrap().to_owned();
    // A name may not be another token's id (lookups by id or name would be ambiguous).
    let (status, answer) = create(
        &proxy,
        &boot(),
        json!({"name": victim_id, "permission": "read"}),
    )
    .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (409, Some("conflict")),
        "{answer}"
    );
    let (_, other) = create(
        &proxy,
        &boot(),
        json!({"name": "dup", "permission": "read"}),
    )
    .await;
    let other_auth = format!("Bearer {}", other["token"].as_str().unwrap());
    let c = client();
    assert_eq!(status_of(&c, &proxy, &victim_auth).await, 200);
    // A token file now claims the name "dup" too: a conflict that used to fail every rebuild.
    let file_dup = TestToken::read("dup");
    let file_ok = TestToken::read("from-file");
    std::fs::write(
        &proxy.setup.tokens_path,
        tokens_yaml(&[&file_dup, &file_ok]),
    )
    .unwrap();
    let refused = poll_until(Duration::from_secs(10), || async {
        proxy.metric("tollgate_tokens_refused").await >= 1.0
            && status_of(&c, &proxy, &file_ok.bearer()).await == 200
    })
    .await;
    assert!(refused.is_some(), "logs:\n{}", proxy.logs());
    // Both records of the conflict are out; nothing else is.
    assert_eq!(status_of(&c, &proxy, &other_auth).await, 401);
    assert_eq!(status_of(&c, &proxy, &file_dup.bearer()).await, 401);
    // Revoking through the API takes effect at once and the API says so.
    let r = proxy
        .api(
            "DELETE",
            &format!("/api/v1/tokens/{victim_id}"),
            Some(&boot()),
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(
        status_of(&c, &proxy, &victim_auth).await,
        401,
        "a revoked token keeps working"
    );
    // check-config reports the conflict.
    let out = proxy.cli(&["check-config"], None).await;
    assert!(!out.status.success(), "{out:?}");
    assert!(out.combined().contains("dup"), "{out:?}");
    proxy.stop_gracefully(Duration::from_secs(10)).await;
    proxy.restart().await;
    assert_eq!(
        status_of(&c, &proxy, &file_ok.bearer()).await,
        200,
        "a conflict stopped the restart"
    );
}

#[tokio::test]
async fn a_broken_token_file_edit_still_removes_what_it_removed() {
    let upstream = Upstream::start();
    let keep = TestToken::read("keep");
    let compromised = TestToken::read("compromised");
    let proxy = Setup::new(&upstream.url())
        .with_tokens(&[&keep, &compromised])
        .start()
        .await;
    let c = client();
    assert_eq!(status_of(&c, &proxy, &compromised.bearer()).await, 200);
    // The operator deletes the compromised entry and, in the same save, breaks another one.
    let mut text = tokens_yaml(&[&keep]);
    text.push_str("  - id: BROKEN\n    name: [oops\n");
    std::fs::write(&proxy.setup.tokens_path, text).unwrap();
    let gone = poll_until(Duration::from_secs(10), || async {
        status_of(&c, &proxy, &compromised.bearer()).await == 401
    })
    .await;
    assert!(
        gone.is_some(),
        "the removed token kept working; logs:\n{}",
        proxy.logs()
    );
    assert_eq!(
        status_of(&c, &proxy, &keep.bearer()).await,
        200,
        "the rest of the last good file must keep serving"
    );
}

#[tokio::test]
async fn the_database_is_private_and_check_config_changes_nothing() {
    let upstream = Upstream::start();
    let setup =
        Setup::new(&upstream.url()).set("tokens.database", json!("sqlite://private/dir/tokens.db"));
    setup.write();
    let dir = setup.dir.path().to_owned();
    let config = setup.config_str();
    let out = run_tollgate(
        &["check-config", "--config", &config],
        None,
        &dir,
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{out:?}");
    assert!(
        !dir.join("private").exists(),
        "check-config created the database directory"
    );
    let mut proxy = setup.start().await;
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&dir.join("private/dir")), 0o700);
    assert_eq!(mode(&dir.join("private/dir/tokens.db")), 0o600);
    proxy.stop_gracefully(Duration::from_secs(10)).await;
    // check-config on an existing database opens it read-only and migrates nothing.
    let before = std::fs::read(dir.join("private/dir/tokens.db")).unwrap();
    let out = run_tollgate(
        &["check-config", "--config", &config],
        None,
        &dir,
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        std::fs::read(dir.join("private/dir/tokens.db")).unwrap(),
        before,
        "check-config wrote to the database"
    );
}
