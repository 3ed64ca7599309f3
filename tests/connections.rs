//! Client connection limits through the real binary: the keep-alive idle timeout (also after a
//! 401), the request-head deadline against slowloris, the per-address and total connection caps
//! (refusal, metrics, recovery), and the token reload and database at the cap when the process
//! runs under a small open-file limit. Every wait is a poll with a deadline.

mod common;

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const OPEN: &str = "tollgate_connections_open";
const MAX: &str = "tollgate_connections_max";
const REFUSED_TOTAL: &str = r#"tollgate_connections_refused_total{reason="max_connections"}"#;
const REFUSED_PER_IP: &str =
    r#"tollgate_connections_refused_total{reason="max_connections_per_ip"}"#;
const HEADER_TIMEOUTS: &str = r#"tollgate_connection_timeouts_total{kind="header"}"#;
const KEEPALIVE_TIMEOUTS: &str = r#"tollgate_connection_timeouts_total{kind="keepalive"}"#;

/// A TCP connection to `dst` from the loopback address `src`.
async fn connect_from(src: Ipv4Addr, dst: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((src, 0)))
        .unwrap_or_else(|e| panic!("bind {src}: {e}"));
    socket
        .connect(dst)
        .await
        .unwrap_or_else(|e| panic!("connect {dst} from {src}: {e}"))
}

/// How a connection ended, as the client saw it.
#[derive(Debug)]
enum End {
    /// The server closed (FIN) after sending these bytes (maybe none).
    Closed(Vec<u8>),
    /// The connection was reset after these bytes.
    Reset(Vec<u8>),
    /// Still open at the deadline, with these bytes so far.
    Open(Vec<u8>),
}

impl End {
    fn bytes(&self) -> &[u8] {
        match self {
            End::Closed(b) | End::Reset(b) | End::Open(b) => b,
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(self.bytes()).into_owned()
    }

    fn is_open(&self) -> bool {
        matches!(self, End::Open(_))
    }
}

/// Reads until the server ends the connection or `within` passes.
async fn read_until_end(stream: &mut TcpStream, within: Duration) -> End {
    let deadline = tokio::time::Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return End::Open(got),
            Ok(Ok(0)) => return End::Closed(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Ok(Err(_)) => return End::Reset(got),
        }
    }
}

/// Reads one response (head and a Content-Length body) from a kept-alive connection.
async fn read_response(stream: &mut TcpStream) -> (u16, String, String) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let head_end = loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .expect("a response within 10 s")
            .expect("read response");
        assert!(
            n > 0,
            "closed before a response: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&got[..head_end]).into_owned();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no Content-Length in {head:?}"));
    while got.len() < head_end + length {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .expect("the body within 10 s")
            .expect("read body");
        assert!(n > 0, "closed inside the body");
        got.extend_from_slice(&buf[..n]);
    }
    let body = String::from_utf8_lossy(&got[head_end..head_end + length]).into_owned();
    (status, head, body)
}

fn limits(
    header_timeout: &str,
    keepalive: &str,
    max: Option<u64>,
    per_ip: u64,
) -> serde_json::Value {
    let mut l = json!({
        "header_timeout": header_timeout,
        "keepalive_timeout": keepalive,
        "max_connections_per_ip": per_ip,
    });
    if let Some(max) = max {
        l["max_connections"] = json!(max);
    }
    l
}

async fn poll_metric(proxy: &Tollgate, series: &str, what: &str, want: impl Fn(f64) -> bool) {
    let last = Cell::new(0.0);
    let ok = poll_until(Duration::from_secs(10), || {
        let (last, want) = (&last, &want);
        async move {
            last.set(proxy.metric(series).await);
            want(last.get())
        }
    })
    .await;
    assert!(
        ok.is_some(),
        "{what}: {series} is {} after 10 s; log:\n{}",
        last.get(),
        proxy.logs()
    );
}

/// Keep-alive works (a second request on the connection is answered), and a connection left
/// idle after a refusal is closed by the server once the keep-alive timeout passes. Before the
/// fix pingora waited for the next request forever.
#[tokio::test]
async fn idle_keepalive_connection_after_a_401_is_closed() {
    let upstream = Upstream::start();
    let proxy = Setup::new(&upstream.url())
        .set("limits", limits("10s", "1s", None, 256))
        .start()
        .await;
    let mut stream = TcpStream::connect(proxy.setup.listen)
        .await
        .expect("connect");
    let request = format!(
        "GET /files/a HTTP/1.1\r\nHost: {}\r\n\r\n",
        proxy.setup.listen
    );
    for round in 1..=2 {
        stream.write_all(request.as_bytes()).await.expect("write");
        let (status, head, body) = read_response(&mut stream).await;
        assert_eq!(status, 401, "round {round}: {head}{body}");
        assert!(
            head.to_ascii_lowercase().contains("connection: keep-alive"),
            "round {round}: the 401 keeps the connection: {head}"
        );
    }
    let idle_from = Instant::now();
    let end = read_until_end(&mut stream, Duration::from_secs(10)).await;
    assert!(
        !end.is_open(),
        "an idle connection after a 401 was still open 10 s later (keepalive_timeout 1s); log:\n{}",
        proxy.logs()
    );
    assert!(
        end.bytes().is_empty(),
        "closed with bytes: {:?}",
        end.text()
    );
    println!(
        "idle connection closed {:?} after the 401",
        idle_from.elapsed()
    );
    poll_metric(&proxy, KEEPALIVE_TIMEOUTS, "keep-alive timeouts", |v| {
        v >= 1.0
    })
    .await;
    assert_eq!(
        upstream.count(),
        0,
        "a refused request reached the upstream"
    );
}

/// Slowloris: a request head dripped one byte every 500 ms is cut at the 2 s header deadline
/// (answered 408, or closed). Before the fix each byte restarted pingora's per-read timeout.
#[tokio::test]
async fn slowloris_is_cut_at_the_header_deadline() {
    let upstream = Upstream::start();
    let proxy = Setup::new(&upstream.url())
        .set("limits", limits("2s", "60s", None, 256))
        .start()
        .await;
    let stream = TcpStream::connect(proxy.setup.listen)
        .await
        .expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let started = Instant::now();
    let dripper = tokio::spawn(async move {
        let head = b"GET /files/a HTTP/1.1\r\nHost: slow\r\nX-Slow: ";
        let mut sent = 0usize;
        loop {
            let byte = head.get(sent).copied().unwrap_or(b'a');
            if wr.write_all(&[byte]).await.is_err() {
                return sent;
            }
            sent += 1;
            tokio::time::sleep(Duration::from_millis(500)).await;
            if sent > 60 {
                return sent;
            }
        }
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let end = loop {
        match tokio::time::timeout_at(deadline, rd.read(&mut buf)).await {
            Err(_) => break End::Open(got),
            Ok(Ok(0)) => break End::Closed(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Ok(Err(_)) => break End::Reset(got),
        }
    };
    let cut_after = started.elapsed();
    dripper.abort();
    assert!(
        !end.is_open(),
        "a head dripped at 1 byte / 500 ms was still being read after 15 s (header_timeout 2s); log:\n{}",
        proxy.logs()
    );
    println!("slowloris cut after {cut_after:?}: {:?}", end.text());
    let text = end.text();
    if !text.is_empty() {
        assert!(text.starts_with("HTTP/1.1 408"), "answer: {text}");
        assert!(text.contains("\"request_timeout\""), "answer: {text}");
    }
    poll_metric(&proxy, HEADER_TIMEOUTS, "header timeouts", |v| v >= 1.0).await;
    assert_eq!(upstream.count(), 0);
}

/// With `max_connections_per_ip: 20`, 50 idle connections from 127.0.0.1 get 20 slots and 30
/// refusals (503 `too_many_connections`, counted), while a client on 127.0.0.2 is served.
#[tokio::test]
async fn per_address_cap_refuses_one_client_and_serves_another() {
    let upstream = Upstream::start();
    let token = TestToken::read("reader");
    let proxy = Setup::new(&upstream.url())
        .with_tokens(&[&token])
        .set("limits", limits("25s", "60s", Some(1000), 20))
        .start()
        .await;
    let listen = proxy.setup.listen;
    // The harness's readiness probes are gone before the count starts.
    poll_metric(&proxy, OPEN, "no connection yet", |v| v == 0.0).await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let mut s = connect_from(Ipv4Addr::LOCALHOST, listen).await;
        tasks.push(tokio::spawn(async move {
            let end = read_until_end(&mut s, Duration::from_secs(3)).await;
            (s, end)
        }));
    }
    let mut held = Vec::new();
    let mut refused = 0;
    for t in tasks {
        let (s, end) = t.await.expect("join");
        if end.is_open() {
            held.push(s);
        } else {
            assert!(
                end.text().starts_with("HTTP/1.1 503")
                    && end.text().contains("too_many_connections"),
                "a refused connection: {end:?}"
            );
            refused += 1;
        }
    }
    assert_eq!(
        (held.len(), refused),
        (20, 30),
        "50 connections from one address with max_connections_per_ip 20; log:\n{}",
        proxy.logs()
    );
    poll_metric(&proxy, REFUSED_PER_IP, "per-address refusals", |v| {
        v >= 30.0
    })
    .await;
    poll_metric(&proxy, OPEN, "open connections", |v| v == 20.0).await;

    let other = reqwest::Client::builder()
        .no_proxy()
        .local_address(IpAddr::from([127, 0, 0, 2]))
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let resp = http_get(&other, &proxy.url("/files/a"), Some(&token.bearer())).await;
    assert_eq!(
        (resp.status, resp.body.as_str()),
        (200, "hello /files/a"),
        "from 127.0.0.2 while 127.0.0.1 is at its cap"
    );
    let seen = upstream.last().expect("the request reached the upstream");
    assert_eq!(seen.header("x-forwarded-for").as_deref(), Some("127.0.0.2"));
    drop(held);
}

/// With `max_connections: 30`, the 31st connection is refused (503, counted) while 30 idle ones
/// hold the slots; the idle ones are closed at the header deadline, and a legitimate request
/// works again.
#[tokio::test]
async fn total_cap_refuses_counts_and_recovers() {
    let upstream = Upstream::start();
    let token = TestToken::read("reader");
    let proxy = Setup::new(&upstream.url())
        .with_tokens(&[&token])
        .set("limits", limits("3s", "60s", Some(30), 0))
        .start()
        .await;
    let listen = proxy.setup.listen;
    poll_metric(&proxy, MAX, "the cap", |v| v == 30.0).await;
    poll_metric(&proxy, OPEN, "no connection yet", |v| v == 0.0).await;
    let mut idle = Vec::new();
    for _ in 0..30 {
        idle.push(TcpStream::connect(listen).await.expect("connect"));
    }
    poll_metric(&proxy, OPEN, "open connections", |v| v == 30.0).await;

    let mut extra = TcpStream::connect(listen).await.expect("connect");
    let end = read_until_end(&mut extra, Duration::from_secs(5)).await;
    assert!(
        matches!(end, End::Closed(_)),
        "the 31st connection: {end:?}"
    );
    let text = end.text();
    assert!(text.starts_with("HTTP/1.1 503"), "answer: {text}");
    let body: Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(body["error"], "too_many_connections", "{text}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    poll_metric(&proxy, REFUSED_TOTAL, "refusals", |v| v >= 1.0).await;

    // The silent connections are closed at the header deadline; then requests pass again.
    let client = client();
    let last = RefCell::new(String::new());
    let recovered = poll_until(Duration::from_secs(15), || {
        let (client, last, url, auth) = (&client, &last, proxy.url("/files/b"), token.bearer());
        async move {
            let r = client.get(url).header("authorization", auth).send().await;
            let ok = matches!(&r, Ok(r) if r.status() == 200);
            *last.borrow_mut() = format!("{r:?}");
            ok
        }
    })
    .await;
    assert!(
        recovered.is_some(),
        "no 200 within 15 s after the idle connections' deadline; last: {}; log:\n{}",
        last.borrow(),
        proxy.logs()
    );
    for mut s in idle {
        let end = read_until_end(&mut s, Duration::from_secs(5)).await;
        assert!(
            !end.is_open(),
            "an idle connection outlived the header deadline"
        );
    }
    poll_metric(&proxy, HEADER_TIMEOUTS, "header timeouts", |v| v >= 30.0).await;
}

/// The flood below holds 600 sockets in this process: raise its own soft limit to the hard one.
fn raise_own_open_file_limit() {
    if let Ok((soft, hard)) = tollgate::sys::open_file_limit() {
        if soft < hard {
            let _ = tollgate::sys::set_open_file_limit(hard, hard);
        }
    }
}

/// A `tollgate serve` started under a given open-file limit (soft and hard), killed on drop.
struct Limited {
    child: Child,
    setup: Setup,
    log: std::path::PathBuf,
}

impl Limited {
    async fn start(setup: Setup, nofile: u64) -> Self {
        setup.write();
        let log = setup.dir.path().join("tollgate.log");
        let file = std::fs::File::create(&log).expect("log file");
        let mut cmd = tollgate_command(setup.dir.path());
        cmd.arg("serve")
            .arg("--config")
            .arg(&setup.config_path)
            .envs(setup.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone().expect("clone")))
            .stderr(Stdio::from(file));
        // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
        #[allow(unsafe_code)] // test-only: a child under a chosen limit
        unsafe {
            cmd.pre_exec(move || {
                let r = libc::rlimit {
                    rlim_cur: nofile,
                    rlim_max: nofile,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut me = Limited {
            child: cmd.spawn().expect("spawn tollgate"),
            setup,
            log,
        };
        let client = client();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = me.child.try_wait() {
                panic!("tollgate exited ({status}); log:\n{}", me.logs());
            }
            let ready = client
                .get(me.admin_url("/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ready && TcpStream::connect(me.setup.listen).await.is_ok() {
                return me;
            }
            assert!(
                Instant::now() < deadline,
                "not ready in 30 s; log:\n{}",
                me.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn logs(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.setup.admin, path)
    }

    async fn metric(&self, series: &str) -> f64 {
        let text = client()
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body");
        metric_value(&text, series).unwrap_or(0.0)
    }

    async fn poll_metric(&self, series: &str, what: &str, want: impl Fn(f64) -> bool) {
        let last = Cell::new(0.0);
        let ok = poll_until(Duration::from_secs(10), || {
            let (last, want) = (&last, &want);
            async move {
                last.set(self.metric(series).await);
                want(last.get())
            }
        })
        .await;
        assert!(
            ok.is_some(),
            "{what}: {series} is {} after 10 s; log:\n{}",
            last.get(),
            self.logs()
        );
    }
}

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Under an open-file limit of 512 the derived cap is 128 connections. A flood of 600
/// connections (more than the process has descriptors) is refused past the cap without the
/// process running out of descriptors: while it is at the cap, a token-file reload takes effect,
/// the admin API writes to the token database, and once the flood ends both new tokens work.
#[tokio::test]
async fn reload_and_database_keep_working_at_the_cap_under_a_small_descriptor_limit() {
    const BOOT: &str = "boot:Bootstrap-secret-for-connections";
    let upstream = Upstream::start();
    let first = TestToken::read("first");
    let added = TestToken::read("added");
    let setup = Setup::new(&upstream.url())
        .with_tokens(&[&first])
        .set("limits", limits("25s", "60s", None, 0))
        .env("TOLLGATE_BOOTSTRAP_TOKEN", BOOT);
    let tokens_path = setup.tokens_path.clone();
    let listen = setup.listen;
    raise_own_open_file_limit();
    let proxy = Limited::start(setup, 512).await;
    proxy
        .poll_metric(MAX, "the cap derived from 512 descriptors", |v| v == 128.0)
        .await;
    proxy
        .poll_metric(OPEN, "no connection yet", |v| v == 0.0)
        .await;

    let mut flood = Vec::new();
    for i in 0..600 {
        // Spread over a few source addresses: one address has only so many ports to spare.
        let src = Ipv4Addr::new(127, 0, 1, (i % 8) as u8 + 1);
        flood.push(connect_from(src, listen).await);
    }
    proxy
        .poll_metric(REFUSED_TOTAL, "refusals past the cap", |v| v >= 472.0)
        .await;
    proxy
        .poll_metric(OPEN, "open connections", |v| v == 128.0)
        .await;

    // At the cap: the token-file reload, the admin API and the database still work.
    std::fs::write(&tokens_path, tokens_yaml(&[&first, &added])).expect("rewrite token file");
    proxy
        .poll_metric(
            r#"tollgate_tokens{source="file"}"#,
            "reloaded token set",
            |v| v == 2.0,
        )
        .await;
    let (user, secret) = BOOT.split_once(':').expect("NAME:SECRET");
    let admin = client();
    let created = admin
        .post(proxy.admin_url("/api/v1/tokens"))
        .basic_auth(user, Some(secret))
        .json(&json!({"name": "from-api", "permission": "read"}))
        .send()
        .await
        .expect("POST /api/v1/tokens at the cap");
    let status = created.status().as_u16();
    let body: Value = created.json().await.expect("JSON");
    assert_eq!(
        status,
        201,
        "create at the cap: {body}; log:\n{}",
        proxy.logs()
    );
    let db_token = body["token"].as_str().expect("token").to_owned();
    assert_eq!(
        proxy.metric(OPEN).await,
        128.0,
        "still at the cap during the reload"
    );

    drop(flood);
    proxy
        .poll_metric(OPEN, "connections after the flood", |v| v == 0.0)
        .await;
    let client = client();
    for (what, auth) in [
        ("the reloaded file token", added.bearer()),
        ("the database token", format!("Bearer {db_token}")),
    ] {
        let r = http_get(&client, &format!("http://{listen}/files/c"), Some(&auth)).await;
        assert_eq!(r.status, 200, "{what}: {r:?}; log:\n{}", proxy.logs());
    }
    let logs = proxy.logs();
    assert!(
        !logs.contains("Too many open files") && !logs.contains("os error 24"),
        "the process ran out of descriptors:\n{logs}"
    );
    assert!(
        logs.contains("\"open_file_limit\":512"),
        "the limit in force is logged:\n{logs}"
    );
}

/// `check-config` names the file, the field and the reason for every bad limit.
#[test]
fn check_config_refuses_bad_limits() {
    let setup = Setup::new("http://127.0.0.1:9")
        .set(
            "limits",
            json!({
                "header_timeout": "0s",
                "keepalive_timeout": "soon",
                "max_connections": 0,
                "max_connections_per_ip": "many",
                "idle_timeout": "5s",
            }),
        )
        .set("tokens.database", json!("none"));
    setup.write();
    let file = setup.config_str();
    let out = run_tollgate(
        &["check-config", "--config", &file],
        None,
        setup.dir.path(),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let text = out.combined();
    for want in [
        format!("{file}: limits.header_timeout: must be at least 100ms"),
        format!("{file}: limits.keepalive_timeout: not a duration"),
        format!("{file}: limits.max_connections: must be at least 1, or auto"),
        format!("{file}: limits.max_connections_per_ip: expected a whole number, found a string"),
        format!("{file}: limits.idle_timeout: unknown field"),
    ] {
        assert!(text.contains(&want), "missing {want:?} in:\n{text}");
    }
}

/// Upstream connections are reused: 16 kept-alive clients, 60 requests each, through two proxy
/// threads. Each thread keeps its own upstream pool, so at most one upstream connection per
/// client connection is ever needed. When one pingora server ran both threads, the watcher of
/// an idle upstream connection ran on either thread, and reusing the connection raced the
/// watcher's exit, which closed it: pingora logged "failed to acquire reusable stream" and the
/// proxy connected again (136 times in 87,452 requests of a release build under `wrk`; this
/// debug-build test did not hit the race, so it guards reuse, and `benches/syscalls.sh` the
/// threads).
#[tokio::test]
async fn upstream_connections_are_reused_across_proxy_threads() {
    const CLIENTS: usize = 16;
    const REQUESTS: usize = 60;
    let upstream = Upstream::start();
    let token = TestToken::read("reader");
    let proxy = Setup::new(&upstream.url())
        .set("threads", json!(2))
        .with_tokens(&[&token])
        .start()
        .await;
    let listen = proxy.setup.listen;
    let request = format!(
        "GET /files/a.tgz HTTP/1.1\r\nHost: {listen}\r\nAuthorization: {}\r\n\r\n",
        token.bearer()
    );
    let clients = (0..CLIENTS).map(|_| {
        let request = request.clone();
        tokio::spawn(async move {
            let mut stream = TcpStream::connect(listen).await.expect("connect");
            for n in 0..REQUESTS {
                stream.write_all(request.as_bytes()).await.expect("write");
                let (status, head, body) = read_response(&mut stream).await;
                assert_eq!(status, 200, "request {n}: {head}{body}");
            }
        })
    });
    for client in clients.collect::<Vec<_>>() {
        client.await.expect("client task");
    }
    let requests = upstream.requests();
    assert_eq!(requests.len(), CLIENTS * REQUESTS, "requests upstream");
    let connections: std::collections::HashSet<_> =
        requests.iter().filter_map(|r| r.peer).collect();
    println!(
        "{} requests upstream over {} upstream connections",
        requests.len(),
        connections.len()
    );
    let logs = proxy.logs();
    assert!(
        !logs.contains("failed to acquire reusable stream"),
        "an upstream connection was dropped instead of reused; log:\n{logs}"
    );
    assert!(
        connections.len() <= CLIENTS,
        "{} upstream connections for {CLIENTS} client connections",
        connections.len()
    );
}

/// The workers share the listening port with `SO_REUSEPORT`, but a second Tollgate on the same
/// `listen` is still refused at start (file, field and reason), and never takes a share of the
/// first one's connections: every request after the attempt reaches the first one's upstream.
#[tokio::test]
async fn a_second_process_on_the_same_listen_address_is_refused() {
    let upstream = Upstream::start();
    let other_upstream = Upstream::start();
    let token = TestToken::read("reader");
    let proxy = Setup::new(&upstream.url())
        .with_tokens(&[&token])
        .start()
        .await;
    let second = Setup::new(&other_upstream.url())
        .set("listen", json!(proxy.setup.listen.to_string()))
        .with_tokens(&[&token]);
    second.write();
    let out = run_tollgate(
        &["serve", "--config", &second.config_str()],
        None,
        second.dir.path(),
        Duration::from_secs(30),
    );
    assert!(
        !out.status.success(),
        "a second process on the same listen address started: {out:?}"
    );
    let said = out.combined();
    assert!(
        said.contains(&format!("cannot listen on listen {}", proxy.setup.listen)),
        "no clear reason: {said}"
    );
    for n in 0..20 {
        // A new connection each time: the kernel would spread them over every socket.
        let fresh = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .expect("client");
        let got = http_get(&fresh, &proxy.url("/files/x"), Some(&token.bearer())).await;
        assert_eq!(got.status, 200, "request {n}");
    }
    assert_eq!(upstream.count(), 20, "requests at the first one's upstream");
    assert_eq!(
        other_upstream.count(),
        0,
        "requests at the second one's upstream"
    );
}
