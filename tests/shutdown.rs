//! Graceful shutdown through the real binary: SIGTERM while slow requests are in
//! flight — they all complete, `/readyz` turns 503, new connections are refused, the process
//! exits 0 within the grace period, and last-use times are flushed. Times are printed
//! (`-- --nocapture`).

mod common;

use std::time::{Duration, Instant};

use chrono::Utc;
use common::*;
use serde_json::{json, Value};

const BOOT: &str = "boot:Bootstrap-secret-for-shutdown";

/// Create a database token with the CLI before the server starts; returns its token.
fn create_db_token(setup: &Setup, name: &str) -> String {
    setup.write();
    let out = run_tollgate(
        &[
            "token",
            "create",
            "--name",
            name,
            "--permission",
            "read",
            "--rate-limit",
            "unlimited",
            "--config",
            &setup.config_str(),
        ],
        None,
        setup.dir.path(),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "token create: {out:?}");
    out.stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .unwrap_or_else(|| panic!("no token line: {out:?}"))
        .trim()
        .to_owned()
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_flushes_last_use() {
    const SLOW_MS: u64 = 2000;
    const N: usize = 8;
    let grace = Duration::from_secs(10);
    let upstream = Upstream::start();
    let setup = Setup::new(&upstream.url())
        .set("shutdown", json!({"grace_period": "10s"}))
        .env("TOLLGATE_BOOTSTRAP_TOKEN", BOOT);
    let token = create_db_token(&setup, "drained");
    let mut proxy = setup.start().await;
    let auth = format!("Bearer {token}");
    let started = Utc::now();

    // N slow requests, each on its own connection.
    let mut tasks = Vec::new();
    for _ in 0..N {
        let url = proxy.url(&format!("/slow?ms={SLOW_MS}"));
        let auth = auth.clone();
        tasks.push(tokio::spawn(async move {
            let resp = http_get(&client(), &url, Some(&auth)).await;
            (resp, Instant::now())
        }));
    }
    poll_until(Duration::from_secs(5), || async {
        upstream.count_path("/slow") == N
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "only {} of {N} slow requests reached the upstream",
            upstream.count_path("/slow")
        )
    });

    let term = Instant::now();
    proxy.signal("TERM");

    // /readyz turns 503 at once.
    let readyz = proxy.admin_url("/readyz");
    let probe = client();
    let not_ready = poll_until(Duration::from_secs(1), || async {
        match probe.get(&readyz).send().await {
            Ok(r) if r.status() == 503 => {
                r.text().await.unwrap_or_default().contains("shutting down")
            }
            _ => false,
        }
    })
    .await;
    let not_ready = not_ready.unwrap_or_else(|| {
        panic!(
            "/readyz did not answer 503 \"shutting down\" within 1 s of SIGTERM; log:\n{}",
            proxy.logs()
        )
    });

    // New connections are refused while the in-flight requests still run.
    let listen = proxy.setup.listen;
    let refused = poll_until(Duration::from_secs(1), || async {
        tokio::net::TcpStream::connect(listen).await.is_err()
    })
    .await;
    let refused_at = term.elapsed();
    let still_running = proxy.try_exit().is_none();
    let in_flight = tasks.iter().filter(|t| !t.is_finished()).count();

    let mut finished = Vec::new();
    for task in tasks {
        let (resp, at) = task.await.expect("request task");
        assert_eq!(
            (resp.status, resp.body.as_str()),
            (200, "hello /slow"),
            "an in-flight request did not complete after SIGTERM"
        );
        finished.push(at);
    }
    let last_done = finished.iter().max().copied().expect("finished");
    let status = proxy.wait_exit(grace + Duration::from_secs(5)).await;
    let exited = term.elapsed();
    println!(
        "[shutdown] SIGTERM with {N} × {SLOW_MS} ms in flight: /readyz 503 after {not_ready:?}, \
         new connections refused after {refused_at:?} ({in_flight} requests still in flight), \
         all {N} completed 200 by {:?}, exit {:?} after {exited:?} ({:?} after the last \
         request)",
        last_done - term,
        status.code(),
        exited.saturating_sub(last_done - term)
    );
    assert!(
        refused.is_some(),
        "new connections were still accepted 1 s after SIGTERM; log:\n{}",
        proxy.logs()
    );
    assert!(
        still_running && in_flight > 0,
        "connections must be refused while draining (process running: {still_running}, \
         requests in flight: {in_flight})"
    );
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        proxy.logs()
    );
    assert!(
        exited < grace,
        "exit took {exited:?}, beyond the grace period {grace:?}"
    );
    assert!(
        exited < (last_done - term) + Duration::from_millis(1500),
        "the process lingered {:?} after the last request finished (exit after {exited:?})",
        exited.saturating_sub(last_done - term)
    );

    // last_used_at was flushed at shutdown (the periodic flush runs every 5 s; this run was
    // shorter than that after the requests).
    let out = proxy
        .cli(&["token", "show", "drained", "--output", "json"], None)
        .await;
    assert!(out.status.success(), "token show: {out:?}");
    let shown: Value = serde_json::from_str(&out.stdout).expect("show JSON");
    let used = parse_time(&shown["last_used_at"], "stored last_used_at");
    assert!(
        used >= started - chrono::Duration::seconds(1) && used <= Utc::now(),
        "stored last_used_at {used} is not the time of the requests (after {started})"
    );

    // And the restarted server reports it.
    proxy.restart().await;
    let (name, secret) = BOOT.split_once(':').expect("bootstrap spec");
    let resp = proxy
        .api(
            "GET",
            "/api/v1/tokens/drained",
            Some(&basic(name, secret)),
            None,
        )
        .await;
    let record = resp.expect(200);
    assert_eq!(
        parse_time(&record["last_used_at"], "last_used_at after restart").timestamp_millis(),
        used.timestamp_millis()
    );
}

#[tokio::test]
async fn the_grace_period_bounds_the_drain() {
    let upstream = Upstream::start();
    let reader = TestToken::read("reader");
    let mut proxy = Setup::new(&upstream.url())
        .with_tokens(&[&reader])
        .set("shutdown", json!({"grace_period": "1s"}))
        .start()
        .await;
    let url = proxy.url("/slow?ms=8000");
    let auth = reader.auth();
    let task = tokio::spawn(async move {
        client()
            .get(&url)
            .header("authorization", auth)
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    poll_until(Duration::from_secs(5), || async {
        upstream.count_path("/slow") == 1
    })
    .await
    .expect("the slow request reached the upstream");
    let term = Instant::now();
    proxy.signal("TERM");
    let status = proxy.wait_exit(Duration::from_secs(10)).await;
    let exited = term.elapsed();
    let outcome = task.await.expect("task");
    println!(
        "[shutdown] grace 1 s, one 8 s request in flight: exit {:?} after {exited:?}; the \
         request ended with {outcome:?}",
        status.code()
    );
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        proxy.logs()
    );
    assert!(
        exited < Duration::from_millis(2500),
        "exit took {exited:?} with a grace period of 1 s"
    );
}

#[tokio::test]
async fn idle_sigterm_exits_promptly_even_with_keepalive_connections() {
    let upstream = Upstream::start();
    let reader = TestToken::read("reader");
    let mut proxy = Setup::new(&upstream.url())
        .with_tokens(&[&reader])
        .start()
        .await;
    // An idle keep-alive connection stays in this client's pool.
    let client = client();
    let resp = http_get(&client, &proxy.url("/warm"), Some(&reader.auth())).await;
    assert_eq!(resp.status, 200);
    let (status, took) = proxy.stop_gracefully(Duration::from_secs(15)).await;
    println!(
        "[shutdown] idle SIGTERM (one idle keep-alive connection): exit {:?} after {took:?}",
        status.code()
    );
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        proxy.logs()
    );
    assert!(
        took < Duration::from_millis(1500),
        "an idle server took {took:?} to exit after SIGTERM"
    );
    drop(client);
}

/// The proxy thread dying is not a quiet state: the process exits non-zero at once (a
/// supervisor restarts it) instead of staying up with `/healthz` ok. Debug builds can make
/// pingora's server loop panic on demand (`TOLLGATE_TEST_FAULT`), which no request can.
#[tokio::test]
async fn a_dead_proxy_thread_ends_the_process_with_an_error() {
    const PANIC_AFTER_MS: u64 = 1500;
    let upstream = Upstream::start();
    let reader = TestToken::read("reader");
    let mut proxy = Setup::new(&upstream.url())
        .with_tokens(&[&reader])
        .env(
            "TOLLGATE_TEST_FAULT",
            &format!("proxy_panic_after_ms:{PANIC_AFTER_MS}"),
        )
        .start()
        .await;
    let started = Instant::now();
    let client = client();
    let resp = http_get(&client, &proxy.url("/alive"), Some(&reader.auth())).await;
    assert_eq!(resp.status, 200, "the proxy serves before the fault");
    // Watch /healthz until the process is gone: it may answer 200 (before the panic) or 503
    // (after it), never 200 once the proxy is down for more than the exit takes.
    let mut last_ok = started;
    let status = loop {
        if let Some(status) = proxy.try_exit() {
            break status;
        }
        let health = client
            .get(proxy.admin_url("/healthz"))
            .timeout(Duration::from_millis(500))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .ok();
        if health == Some(200) {
            last_ok = Instant::now();
        }
        assert!(
            started.elapsed() < Duration::from_secs(PANIC_AFTER_MS / 1000 + 10),
            "the process is still up {:?} after start, long after the proxy thread died; log:\n{}",
            started.elapsed(),
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let exited_after_last_ok = last_ok.elapsed();
    println!(
        "[shutdown] dead proxy thread: exit {:?}, {exited_after_last_ok:?} after the last healthy /healthz",
        status.code()
    );
    assert_eq!(
        status.code(),
        Some(1),
        "exit status; log:\n{}",
        proxy.logs()
    );
    assert!(
        exited_after_last_ok < Duration::from_secs(1),
        "the process exited {exited_after_last_ok:?} after /healthz last said ok"
    );
    let logs = proxy.logs();
    assert!(
        logs.contains("the proxy stopped unexpectedly"),
        "log says why:\n{logs}"
    );
}

/// SIGTERM the moment the proxy accepts connections still drains and exits 0: the handlers are
/// installed before any proxy worker starts (`lifecycle::signals`). They used to be installed
/// when the run loop first polled them, after the proxy had started; while workers were still
/// being built one after another with the first already serving, a SIGTERM sent as soon as it
/// accepted met the default action and killed the process (2 runs in 8 in a shell loop). Both
/// the early handlers and building every worker before starting any close that window.
#[tokio::test]
async fn sigterm_as_soon_as_the_proxy_accepts_is_graceful() {
    let upstream = Upstream::start();
    for run in 1..=5 {
        let mut proxy = Setup::new(&upstream.url())
            .set("threads", json!(4))
            .start_unready()
            .await;
        let (status, took) = proxy.stop_gracefully(Duration::from_secs(15)).await;
        assert!(
            status.success(),
            "run {run}: exit status after SIGTERM: {status}; log:\n{}",
            proxy.logs()
        );
        assert!(
            proxy.logs().contains("tollgate stopped"),
            "run {run}: no orderly stop; log:\n{}",
            proxy.logs()
        );
        println!("run {run}: SIGTERM at first accept → exit 0 after {took:?}");
    }
}
