//! Last-used client address and user agent under concurrent use, through the real binary: one
//! token used at once from 127.0.0.1 and 127.0.0.2 with different user agents; what is shown
//! (in memory, through the API) and what is written behind to the database (read by the CLI)
//! is always one of the pairs actually used, never the address of one request with the agent
//! of another.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn client_from(source: [u8; 4], agent: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .local_address(IpAddr::from(source))
        .user_agent(agent)
        .build()
        .expect("reqwest client")
}

const PAIRS: [([u8; 4], &str, &str); 2] = [
    ([127, 0, 0, 1], "127.0.0.1", "agent-one/1.0"),
    ([127, 0, 0, 2], "127.0.0.2", "agent-two/2.0"),
];

fn assert_a_real_pair(what: &str, v: &Value) {
    let pair = (
        v["last_used_ip"].as_str().unwrap_or_default(),
        v["last_used_user_agent"].as_str().unwrap_or_default(),
    );
    assert!(
        PAIRS.iter().any(|(_, ip, agent)| pair == (*ip, *agent)),
        "{what}: last use {pair:?} mixes two requests (or is missing): {v}"
    );
}

#[tokio::test]
async fn the_last_use_is_always_one_request_s_address_and_agent() {
    let upstream = Upstream::start();
    let proxy = Setup::new(&upstream.url())
        .set("tokens.files", json!([]))
        .with_bootstrap()
        .start()
        .await;
    let (record, token) = proxy
        .create_token(&boot(), json!({"name": "shared-ci", "permission": "read"}))
        .await;
    let id = record["id"].as_str().expect("id").to_owned();
    let auth = bearer(&token);
    let clients: Vec<(reqwest::Client, &str)> = PAIRS
        .iter()
        .map(|(src, ip, agent)| (client_from(*src, agent), *ip))
        .collect();

    let mut stored_before: Option<String> = None;
    for round in 0..3 {
        // Both addresses at once, many requests each, interleaved by the scheduler.
        let mut tasks = Vec::new();
        for (client, _) in &clients {
            for i in 0..20 {
                let client = client.clone();
                let url = proxy.url(&format!("/pkg/{round}-{i}"));
                let auth = auth.clone();
                tasks.push(tokio::spawn(async move {
                    http_get(&client, &url, Some(&auth)).await.status
                }));
            }
        }
        for t in tasks {
            assert_eq!(t.await.expect("task"), 200);
        }
        let shown = proxy
            .api("GET", &format!("/api/v1/tokens/{id}"), Some(&boot()), None)
            .await
            .expect(200);
        assert_a_real_pair(&format!("round {round}, in memory"), &shown);

        // Written behind (every 5 s): the database row, as the CLI reads it, changes to a pair
        // that was used.
        let mut stored = Value::Null;
        let mut found = false;
        for _ in 0..150 {
            let out = proxy
                .cli(&["token", "show", &id, "--output", "json"], None)
                .await;
            stored = serde_json::from_str(&out.stdout).unwrap_or_default();
            let at = stored["last_used_at"].as_str().map(str::to_owned);
            if at.is_some() && at != stored_before {
                found = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(found, "round {round}: no last use written: {stored}");
        assert_a_real_pair(&format!("round {round}, in the database"), &stored);
        stored_before = stored["last_used_at"].as_str().map(str::to_owned);
        // The next round starts at least a second later, so its last use is a new time.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
}
