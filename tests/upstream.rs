//! The upstream's name through the real binary: an upstream that does not resolve and a
//! certificate that does not load are refused by `check-config` and by `serve` the way
//! configuration problems are (file, field, reason); a name that moves to another address while
//! Tollgate runs is followed without a restart (the debug-build `TOLLGATE_TEST_HOSTS` seam
//! stands in for DNS).

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// `check-config` and `serve` refuse, naming the file, the field and the reason, an upstream
/// name that does not resolve and a certificate pair that cannot be read, both at once.
#[test]
fn unresolvable_upstream_and_unreadable_certificate_are_refused() {
    let setup = Setup::new("http://no-such-host.invalid:8081")
        .set("tokens.database", json!("none"))
        .set(
            "tls",
            json!({
                "listen": free_addr().to_string(),
                "cert_file": "/nonexistent/tls.crt",
                "key_file": "/nonexistent/tls.key",
            }),
        );
    setup.write();
    let file = setup.config_str();
    for command in ["check-config", "serve"] {
        let out = run_tollgate(
            &[command, "--config", &file],
            None,
            setup.dir.path(),
            CLI_TIMEOUT,
        );
        assert_eq!(out.status.code(), Some(2), "{command}: {out:?}");
        let text = out.combined();
        for want in [
            "the configuration is refused (2 problems)".to_string(),
            format!("{file}: upstream.url: cannot resolve no-such-host.invalid: "),
            format!("{file}: tls.cert_file: /nonexistent/tls.crt: "),
        ] {
            assert!(
                text.contains(&want),
                "{command}: missing {want:?} in:\n{text}"
            );
        }
    }

    // Set by the environment, the problem names the variable.
    let setup = Setup::new("http://127.0.0.1:9").set("tokens.database", json!("none"));
    setup.write();
    let out = run_tollgate_env(
        &["check-config", "--config", &setup.config_str()],
        None,
        setup.dir.path(),
        CLI_TIMEOUT,
        &[("TOLLGATE_UPSTREAM__URL", "http://also-not.invalid")],
    );
    let text = out.combined();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        text.contains(
            "env TOLLGATE_UPSTREAM__URL: upstream.url: cannot resolve also-not.invalid: "
        ),
        "{text}"
    );
}

/// Two recording upstreams on the same port of 127.0.0.2 and 127.0.0.3, so that one URL
/// (`http://store.test:PORT`) reaches either, depending on what the name resolves to.
fn two_upstreams() -> (Upstream, Upstream) {
    for _ in 0..20 {
        let a = Upstream::start_on("127.0.0.2:0".parse().unwrap());
        let port = a.addr.port();
        if std::net::TcpListener::bind(("127.0.0.3", port)).is_ok() {
            let b = Upstream::start_on(std::net::SocketAddr::from(([127, 0, 0, 3], port)));
            return (a, b);
        }
    }
    panic!("no port free on both 127.0.0.2 and 127.0.0.3");
}

/// The test hosts file of `setup` (`TOLLGATE_TEST_HOSTS`), pointing `store.test` at `ips`.
fn point_store_at(setup: &Setup, ips: &[&str]) {
    let text: String = ips.iter().map(|ip| format!("{ip} store.test\n")).collect();
    let path = setup.dir.path().join("hosts");
    // Written whole and renamed: a resolution never reads half a file.
    let tmp = setup.dir.path().join("hosts.tmp");
    std::fs::write(&tmp, text).expect("write hosts");
    std::fs::rename(&tmp, &path).expect("rename hosts");
}

/// A setup whose upstream is `http://store.test:PORT`, resolved through its own hosts file.
fn store_setup(port: u16, token: &TestToken) -> Setup {
    let setup = Setup::new(&format!("http://store.test:{port}"))
        .with_tokens(&[token])
        .set("tokens.database", json!("none"));
    point_store_at(&setup, &["127.0.0.2"]);
    let hosts = setup.dir.path().join("hosts");
    setup.env("TOLLGATE_TEST_HOSTS", &hosts.to_string_lossy())
}

async fn get_ok(tg: &Tollgate, token: &TestToken, path: &str) {
    let resp = client()
        .get(tg.url(path))
        .header("authorization", token.bearer())
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e:?}"));
    let status = resp.status().as_u16();
    let body = resp.text().await.expect("body");
    assert_eq!(
        (status, body.as_str()),
        (200, format!("hello {path}").as_str()),
        "GET {path}; log:\n{}",
        tg.logs()
    );
}

/// The store's name moves from 127.0.0.2 to 127.0.0.3 and the old store stops: the first
/// request after that fails to connect, resolves the name again and is retried on the new
/// address, so every request succeeds, without a restart (and long before the 30 s interval).
#[tokio::test]
async fn a_connect_failure_resolves_again_and_retries_on_the_new_address() {
    let (old, new) = two_upstreams();
    let token = TestToken::read("reader");
    let tg = store_setup(old.addr.port(), &token).start().await;

    get_ok(&tg, &token, "/before").await;
    assert_eq!(old.count_path("/before"), 1);
    assert_eq!(tg.metric("tollgate_upstream_addresses").await, 1.0);

    point_store_at(&tg.setup, &["127.0.0.3"]);
    drop(old);
    for i in 0..5 {
        let path = format!("/after/{i}");
        get_ok(&tg, &token, &path).await;
        assert_eq!(new.count_path(&path), 1, "{path} reached the new store");
    }
    // Info lines reach the log a few milliseconds late (the log writer batches them).
    let logged = poll_until(Duration::from_secs(5), || async {
        tg.logs().contains("the upstream's addresses changed")
    })
    .await;
    assert!(logged.is_some(), "the change is logged:\n{}", tg.logs());
    assert!(
        tg.metric(r#"tollgate_upstream_resolutions_total{result="ok"}"#)
            .await
            >= 1.0
    );
}

/// With `upstream.resolve_interval` set, a name that gains and loses addresses is followed
/// without any failure: every address is used in turn, the gauge counts them.
#[tokio::test]
async fn the_name_is_resolved_again_on_the_interval() {
    let (a, b) = two_upstreams();
    let token = TestToken::read("reader");
    let tg = store_setup(a.addr.port(), &token)
        .set("upstream.resolve_interval", json!("1s"))
        .start()
        .await;
    get_ok(&tg, &token, "/one").await;
    assert_eq!(a.count_path("/one"), 1);

    point_store_at(&tg.setup, &["127.0.0.2", "127.0.0.3"]);
    let seen = poll_until(Duration::from_secs(10), || async {
        tg.metric("tollgate_upstream_addresses").await == 2.0
    })
    .await;
    assert!(
        seen.is_some(),
        "both addresses were never taken; log:\n{}",
        tg.logs()
    );
    for i in 0..4 {
        get_ok(&tg, &token, &format!("/both/{i}")).await;
    }
    let on_a = (0..4)
        .filter(|i| a.count_path(&format!("/both/{i}")) == 1)
        .count();
    let on_b = (0..4)
        .filter(|i| b.count_path(&format!("/both/{i}")) == 1)
        .count();
    assert_eq!((on_a, on_b), (2, 2), "the addresses are taken in turn");

    point_store_at(&tg.setup, &["127.0.0.3"]);
    let seen = poll_until(Duration::from_secs(10), || async {
        tg.metric("tollgate_upstream_addresses").await == 1.0
    })
    .await;
    assert!(
        seen.is_some(),
        "the old address was never dropped; log:\n{}",
        tg.logs()
    );
    for i in 0..3 {
        let path = format!("/last/{i}");
        get_ok(&tg, &token, &path).await;
        assert_eq!(b.count_path(&path), 1, "{path} reached the remaining store");
    }
    assert_eq!(a.count(), 3, "nothing more reached the dropped address");
}

/// An IP-literal upstream can lead nowhere else on a second try: a failed connection is
/// answered 502 after one attempt, with no resolution and no retry.
#[tokio::test]
async fn an_ip_literal_upstream_is_not_retried() {
    let token = TestToken::read("reader");
    let tg = Setup::new(&down_upstream_url())
        .with_tokens(&[&token])
        .start()
        .await;
    let resp = client()
        .get(tg.url("/down"))
        .header("authorization", token.bearer())
        .send()
        .await
        .expect("an answer");
    assert_eq!(resp.status().as_u16(), 502);
    // The audit line comes after any retry line in the same ordered log.
    let audited = poll_until(Duration::from_secs(5), || async {
        tg.logs().contains("\"path\":\"/down\"")
    })
    .await;
    assert!(audited.is_some(), "{}", tg.logs());
    let logs = tg.logs();
    assert!(
        !logs.contains("retrying on its addresses"),
        "a literal upstream was retried:\n{logs}"
    );
    assert_eq!(
        tg.metric(r#"tollgate_upstream_resolutions_total{result="ok"}"#)
            .await,
        0.0
    );
}
