//! At `log.level: debug` (pingora's own records are bridged into the log as well), no secret
//! reaches the log: not from a request that pingora cannot parse (its debug record quotes the
//! whole request head, `Authorization` included), nor from ordinary requests.

mod common;

use base64::Engine as _;
use common::*;
use serde_json::json;

#[tokio::test]
async fn a_debug_log_holds_no_credential_even_for_a_head_pingora_refuses() {
    let upstream = Upstream::start();
    let reader = TestToken::read("debug-reader");
    let proxy = Setup::new(&upstream.url())
        .set("log.level", json!("debug"))
        .with_tokens(&[&reader])
        .start()
        .await;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("token:{}", reader.token));
    let authorization = format!("Basic {basic}");

    // An invalid header name (a space before the colon): pingora answers 400 and logs why.
    let bad = raw_request(
        proxy.setup.listen,
        "GET",
        "/x",
        &[("X-Broken ", "sp"), ("Authorization", &authorization)],
    )
    .await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    // And an ordinary request with the same credential.
    let ok = raw_request(
        proxy.setup.listen,
        "GET",
        "/x",
        &[("Authorization", &authorization)],
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text());

    let logs = poll_until(std::time::Duration::from_secs(3), || async {
        proxy.logs().contains("\"status\":200")
    })
    .await
    .map(|_| proxy.logs())
    .unwrap_or_else(|| proxy.logs());
    assert!(
        logs.contains("DEBUG"),
        "not a debug log (the test checks nothing):\n{logs}"
    );
    for secret in [reader.token.as_str(), basic.as_str(), &basic[..24]] {
        assert!(!logs.contains(secret), "{secret:?} is in the log:\n{logs}");
    }
}
