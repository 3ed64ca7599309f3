//! Tollgate in-process: `App::build` + `App::run(shutdown)` with a shutdown future the test
//! controls, as an embedding program would use it (the other suites start the binary).

mod common;

use std::time::Duration;

use common::*;
use tollgate::app::App;
use tollgate::config::{self, Overrides};
use tollgate::lifecycle::Shutdown;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_server_serves_and_stops_when_its_shutdown_future_resolves() {
    let upstream = Upstream::start();
    let reader = TestToken::read("reader");
    let setup = Setup::new(&upstream.url()).with_tokens(&[&reader]);
    setup.write();
    let (config, _warnings) = config::load(
        Some(&setup.config_path),
        std::iter::empty(),
        &Overrides::default(),
    )
    .expect("the test configuration loads");

    let app = App::build(config, None).await.expect("build");
    let health = app.health();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let running = tokio::spawn(app.run(async move { stop_rx.await.unwrap_or(Shutdown::Graceful) }));

    let client = client();
    let url = format!("http://{}/embedded/a.json", setup.listen);
    let listening = poll_until(Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(setup.listen).await.is_ok()
    })
    .await;
    assert!(listening.is_some(), "the embedded proxy never listened");
    let served = http_get(&client, &url, Some(&reader.auth())).await;
    assert_eq!(served.status, 200);
    assert!(upstream.find("/embedded/a.json").is_some());
    // Readiness follows the listener probe, which may see the listener a moment later.
    let ready = poll_until(Duration::from_secs(5), || async {
        health.ready(true).is_ok()
    })
    .await;
    assert!(ready.is_some(), "ready while serving");
    let refused = http_get(&client, &url, None).await;
    assert_eq!(refused.status, 401, "the gate holds in-process too");

    stop_tx.send(Shutdown::Graceful).expect("run is waiting");
    let result = tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("run returns within 5 s of its shutdown future")
        .expect("join");
    assert!(
        result.is_ok(),
        "a requested shutdown is a clean end: {result:?}"
    );
    assert!(health.is_draining(), "not ready after the shutdown started");
    assert!(health.live().is_ok(), "a requested stop is not a failure");
}
