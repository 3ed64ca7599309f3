//! The PROXY protocol (v1 and v2) on the proxy listener (`listen_proxy_protocol: true`),
//! through the real binary: a header from a trusted peer names the client for the allowlist,
//! the upstream's `X-Forwarded-For` and the audit line; from an untrusted peer it is not
//! honoured; a trusted peer without a header, or with a malformed, oversized or slow one, is
//! closed and the server keeps serving. Clients bind source addresses in 127.0.0.0/8.

mod common;

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The load balancer's address (trusted); clients elsewhere in 127.0.0.0/8 are not.
const BALANCER: [u8; 4] = [127, 0, 0, 3];

async fn connect_from(source: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((source, 0)))
        .expect("bind source address");
    socket.connect(to).await.expect("connect")
}

/// Sends `prefix` then a GET of `path` with `auth`; the status and body, or `None` when the
/// server closed without answering.
async fn exchange(
    source: [u8; 4],
    proxy: &Tollgate,
    prefix: &[u8],
    path: &str,
    auth: &str,
) -> Option<(u16, String)> {
    let mut s = connect_from(source, proxy.setup.listen).await;
    let mut bytes = prefix.to_vec();
    bytes.extend_from_slice(
        format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    // The server may close before reading all of it.
    let _ = s.write_all(&bytes).await;
    read_answer(&mut s).await
}

async fn read_answer(s: &mut TcpStream) -> Option<(u16, String)> {
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the server neither answered nor closed");
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, text))
}

fn v1(source: &str, family: &str) -> Vec<u8> {
    let dest = if family == "TCP6" { "::1" } else { "127.0.0.1" };
    format!("PROXY {family} {source} {dest} 40000 8080\r\n").into_bytes()
}

fn v2(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x20 | command);
    h.push(family);
    h.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
    h.extend_from_slice(addresses);
    h
}

fn v2_proxy(source: IpAddr) -> Vec<u8> {
    let mut a = Vec::new();
    match source {
        IpAddr::V4(s) => {
            a.extend_from_slice(&s.octets());
            a.extend_from_slice(&[127, 0, 0, 1]);
            a.extend_from_slice(&[0x9c, 0x40, 0x1f, 0x90]);
            v2(1, 0x11, &a)
        }
        IpAddr::V6(s) => {
            a.extend_from_slice(&s.octets());
            a.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
            a.extend_from_slice(&[0x9c, 0x40, 0x1f, 0x90]);
            v2(1, 0x21, &a)
        }
    }
}

fn error_code(body: &str) -> Option<String> {
    let json = body.split("\r\n\r\n").nth(1)?;
    serde_json::from_str::<serde_json::Value>(json)
        .ok()?
        .get("error")?
        .as_str()
        .map(str::to_owned)
}

async fn start(upstream: &Upstream, token: &TestToken) -> Tollgate {
    Setup::new(&upstream.url())
        .with_tokens(&[token])
        .set("trusted_proxies", json!(["127.0.0.3/32"]))
        .set("listen_proxy_protocol", json!(true))
        .set("limits.header_timeout", json!("1s"))
        .start()
        .await
}

fn fenced() -> TestToken {
    let mut t = TestToken::read("behind-balancer");
    t.entry["allowed_ips"] = json!(["203.0.113.0/24", "2001:db8::/32"]);
    t
}

#[tokio::test]
async fn a_trusted_balancer_names_the_client_with_v1_and_v2() {
    let upstream = Upstream::start();
    let token = fenced();
    let proxy = start(&upstream, &token).await;
    let auth = token.auth();

    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("/v1-tcp4", v1("203.0.113.7", "TCP4"), "203.0.113.7"),
        ("/v1-tcp6", v1("2001:db8::7", "TCP6"), "2001:db8::7"),
        (
            "/v2-ipv4",
            v2_proxy("203.0.113.8".parse().unwrap()),
            "203.0.113.8",
        ),
        (
            "/v2-ipv6",
            v2_proxy("2001:db8::8".parse().unwrap()),
            "2001:db8::8",
        ),
    ];
    for (path, header, client) in &cases {
        let answer = exchange(BALANCER, &proxy, header, path, &auth).await;
        assert_eq!(
            answer.as_ref().map(|a| a.0),
            Some(200),
            "{path}: {answer:?}"
        );
        let seen = upstream.find(path).expect("forwarded");
        assert_eq!(
            seen.header("x-forwarded-for").as_deref(),
            Some(*client),
            "{path}"
        );
        assert_eq!(seen.header("x-real-ip").as_deref(), Some(*client), "{path}");
        let line = proxy.wait_for_audit(path, |r| r["path"] == *path).await;
        assert_eq!(line["client"], *client, "{path}");
    }

    // The allowlist judges the address the header names.
    let outside = exchange(
        BALANCER,
        &proxy,
        &v1("198.51.100.1", "TCP4"),
        "/v1-out",
        &auth,
    )
    .await
    .expect("an answer");
    assert_eq!(outside.0, 403, "{}", outside.1);
    assert_eq!(error_code(&outside.1).as_deref(), Some("ip_not_allowed"));
    let outside = exchange(
        BALANCER,
        &proxy,
        &v2_proxy("198.51.100.2".parse().unwrap()),
        "/v2-out",
        &auth,
    )
    .await
    .expect("an answer");
    assert_eq!(outside.0, 403, "{}", outside.1);
    // v2 LOCAL (the balancer's own health check): the balancer's address, not allowed here.
    let local = exchange(BALANCER, &proxy, &v2(0, 0, &[]), "/local", &auth)
        .await
        .expect("an answer");
    assert_eq!(local.0, 403, "{}", local.1);
    // whoami reports the named client.
    let who = exchange(
        BALANCER,
        &proxy,
        &v1("203.0.113.9", "TCP4"),
        "/_tollgate/whoami",
        &auth,
    )
    .await
    .expect("an answer");
    assert!(who.1.contains("\"client\":\"203.0.113.9\""), "{}", who.1);
    // Later requests on the same connection keep the client the header named.
    let mut s = connect_from(BALANCER, proxy.setup.listen).await;
    let mut bytes = v1("203.0.113.10", "TCP4");
    bytes.extend_from_slice(
        format!("GET /kept-1 HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n").as_bytes(),
    );
    s.write_all(&bytes).await.expect("write");
    let mut first = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&first).contains("hello /kept-1") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("first answer in time")
            .expect("read");
        assert!(n > 0, "closed after the first request");
        first.extend_from_slice(&buf[..n]);
    }
    let closing = format!(
        "GET /kept-2 HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(closing.as_bytes()).await.expect("write");
    let second = read_answer(&mut s).await.expect("second answer");
    assert_eq!(second.0, 200, "{}", second.1);
    for path in ["/kept-1", "/kept-2"] {
        let seen = upstream.find(path).expect("forwarded");
        assert_eq!(
            seen.header("x-real-ip").as_deref(),
            Some("203.0.113.10"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn untrusted_peers_and_bad_headers_are_not_honoured() {
    let upstream = Upstream::start();
    let token = fenced();
    let mut proxy = start(&upstream, &token).await;
    let auth = token.auth();
    let before = upstream.count();

    // From an untrusted peer a PROXY header is garbage: 400, nothing forwarded.
    for (name, header) in [
        ("v1", v1("203.0.113.7", "TCP4")),
        ("v2", v2_proxy("203.0.113.7".parse().unwrap())),
    ] {
        let answer = exchange([127, 0, 0, 2], &proxy, &header, "/spoofed", &auth).await;
        let (status, text) = answer.unwrap_or_else(|| panic!("{name}: closed without an answer"));
        assert_eq!(status, 400, "{name}: {text}");
    }
    // The untrusted peer itself, without a header, is judged by its own address.
    let own = exchange([127, 0, 0, 2], &proxy, b"", "/own", &auth)
        .await
        .expect("an answer");
    assert_eq!(own.0, 403, "{}", own.1);

    // A trusted peer must send a header: without one, or with a malformed one, it is closed.
    for (name, prefix) in [
        ("no header", Vec::new()),
        (
            "malformed v1",
            b"PROXY TCP4 999.1.1.1 127.0.0.1 1 2\r\n".to_vec(),
        ),
        ("v1 without its fields", b"PROXY TCP4\r\n".to_vec()),
        ("unknown v2 command", v2(7, 0x11, &[0; 12])),
        (
            "v1 line too long",
            [b"PROXY TCP4 ".as_slice(), &[b'1'; 300]].concat(),
        ),
    ] {
        let answer = exchange(BALANCER, &proxy, &prefix, "/bad", &auth).await;
        assert_eq!(answer, None, "{name}: answered");
    }
    // Oversized: a v2 header declaring 60000 bytes of TLVs.
    let mut huge = v2(1, 0x11, &[]);
    huge[14..16].copy_from_slice(&60000u16.to_be_bytes());
    huge.extend(std::iter::repeat_n(0u8, 8000));
    let answer = exchange(BALANCER, &proxy, &huge, "/huge", &auth).await;
    assert_eq!(answer, None, "oversized: answered");
    // Slow: half a header, then nothing; closed after header_timeout (1 s).
    let mut slow = connect_from(BALANCER, proxy.setup.listen).await;
    slow.write_all(b"PROXY TCP4 203.0.113.7 ")
        .await
        .expect("write");
    let started = Instant::now();
    let answer = read_answer(&mut slow).await;
    assert_eq!(answer, None);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a slow header held the connection {:?}",
        started.elapsed()
    );
    assert_eq!(upstream.count(), before, "nothing reached the upstream");
    // Each closed connection is counted (no header, four malformed, oversized, slow).
    let closed = proxy
        .metric("tollgate_connections_refused_total{reason=\"proxy_protocol\"}")
        .await;
    assert_eq!(closed, 7.0);

    // The server still serves.
    let fine = exchange(
        BALANCER,
        &proxy,
        &v1("203.0.113.7", "TCP4"),
        "/after",
        &auth,
    )
    .await;
    assert_eq!(fine.map(|a| a.0), Some(200));
    assert!(proxy.try_exit().is_none(), "tollgate exited");
}

#[tokio::test]
async fn the_option_needs_trusted_proxies() {
    let upstream = Upstream::start();
    let setup = Setup::new(&upstream.url()).set("listen_proxy_protocol", json!(true));
    setup.write();
    let out = run_tollgate(
        &["check-config", "--config", &setup.config_str()],
        None,
        setup.dir.path(),
        Duration::from_secs(30),
    );
    assert!(!out.status.success(), "{out:?}");
    assert!(
        out.combined().contains("listen_proxy_protocol")
            && out.combined().contains("trusted_proxies"),
        "{out:?}"
    );
}
