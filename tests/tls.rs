//! The HTTPS listener: a client trusting only a test CA reaches the upstream through it with
//! a token, `X-Forwarded-Proto: https` is sent upstream, TLS 1.1 is refused, and a new
//! certificate written over the old files is served without a restart (a broken one is not).

mod common;

use std::process::Command;
use std::time::Duration;

use common::pki::make_pki;
use common::*;
use serde_json::json;

fn https_client(ca_pem: &[u8]) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem).expect("CA pem"))
        .tls_built_in_root_certs(false)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

#[tokio::test]
async fn https_listener_serves_and_reloads_its_certificate() {
    let upstream = Upstream::start();
    let pki = tempfile::tempdir().unwrap();
    make_pki(pki.path(), "a-", "First");
    make_pki(pki.path(), "b-", "Second");
    let cert = pki.path().join("tls.crt");
    let key = pki.path().join("tls.key");
    std::fs::copy(pki.path().join("a-leaf.crt"), &cert).unwrap();
    std::fs::copy(pki.path().join("a-leaf.key"), &key).unwrap();
    let tls_addr = free_addr();
    let token = TestToken::read("tls-reader");
    let tg = Setup::new(&upstream.url())
        .with_tokens(&[&token])
        .set(
            "tls",
            json!({"listen": tls_addr.to_string(), "cert_file": cert, "key_file": key}),
        )
        .start()
        .await;
    let url = format!("https://localhost:{}/pkg/a.json", tls_addr.port());

    // Wait for the TLS listener (it starts beside the plain one).
    let first = https_client(&std::fs::read(pki.path().join("a-ca.crt")).unwrap());
    let took = poll_until(Duration::from_secs(10), || {
        let c = first.clone();
        let u = url.clone();
        let auth = token.bearer();
        async move {
            matches!(c.get(&u).header("Authorization", auth).send().await, Ok(r) if r.status() == 200)
        }
    })
    .await;
    assert!(
        took.is_some(),
        "HTTPS request never succeeded: {}",
        tg.logs()
    );
    let seen = upstream.last().expect("upstream saw the request");
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("https"));
    assert!(seen.header("authorization").is_none());

    // No token → 401 over TLS too.
    let r = first.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);

    // TLS 1.1 is refused (rustls speaks 1.2 and 1.3 only).
    let old = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "--tls-max", "1.1", "--cacert"])
        .arg(pki.path().join("a-ca.crt"))
        .arg(&url)
        .status()
        .expect("curl runs");
    assert!(!old.success(), "a TLS 1.1 handshake succeeded");

    // A broken certificate file is refused; the old pair keeps serving.
    std::fs::write(&cert, "not a certificate\n").unwrap();
    let refused = poll_until(Duration::from_secs(10), || async {
        tg.logs().contains("new TLS certificate refused")
    })
    .await;
    assert!(
        refused.is_some(),
        "the broken file was never refused: {}",
        tg.logs()
    );
    let r = first
        .get(&url)
        .header("Authorization", token.bearer())
        .send()
        .await
        .expect("old certificate still served");
    assert_eq!(r.status(), 200);

    // The second pair, written over the files, is served without a restart.
    std::fs::copy(pki.path().join("b-leaf.key"), &key).unwrap();
    std::fs::copy(pki.path().join("b-leaf.crt"), &cert).unwrap();
    let second = https_client(&std::fs::read(pki.path().join("b-ca.crt")).unwrap());
    let took = poll_until(Duration::from_secs(8), || {
        let c = second.clone();
        let u = url.clone();
        let auth = token.bearer();
        async move {
            matches!(c.get(&u).header("Authorization", auth).send().await, Ok(r) if r.status() == 200)
        }
    })
    .await
    .expect("the new certificate was never served");
    println!("certificate change picked up after {took:?}");
    // ...and a client trusting only the first CA no longer connects.
    let fresh_first = https_client(&std::fs::read(pki.path().join("a-ca.crt")).unwrap());
    assert!(fresh_first.get(&url).send().await.is_err());
}

#[tokio::test]
async fn admin_listener_can_serve_https_too() {
    let upstream = Upstream::start();
    let pki = tempfile::tempdir().unwrap();
    make_pki(pki.path(), "", "Admin");
    let tls_addr = free_addr();
    let setup = Setup::new(&upstream.url()).set(
        "tls",
        json!({
            "listen": tls_addr.to_string(),
            "cert_file": pki.path().join("leaf.crt"),
            "key_file": pki.path().join("leaf.key"),
            "admin": true,
        }),
    );
    let admin = setup.admin;
    setup.write();
    let mut child = tollgate_command(setup.dir.path())
        .arg("serve")
        .arg("--config")
        .arg(&setup.config_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn tollgate");
    let https = https_client(&std::fs::read(pki.path().join("ca.crt")).unwrap());
    let readyz = format!("https://localhost:{}/readyz", admin.port());
    let ready = poll_until(Duration::from_secs(20), || {
        let (c, u) = (https.clone(), readyz.clone());
        async move { matches!(c.get(&u).send().await, Ok(r) if r.status() == 200) }
    })
    .await;
    // Plain HTTP on the admin port gets no answer once it speaks TLS.
    let plain = client()
        .get(format!("http://127.0.0.1:{}/readyz", admin.port()))
        .timeout(Duration::from_secs(3))
        .send()
        .await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(ready.is_some(), "admin /readyz never answered over HTTPS");
    assert!(
        !matches!(plain, Ok(ref r) if r.status() == 200),
        "the admin listener answered plain HTTP"
    );
}
