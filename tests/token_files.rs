//! Hostile token files through the real binary: files that nest thousands of levels deep or
//! expand aliases into gigabytes, a token pasted into the wrong field, and a file of thousands of
//! bad entries. `check-config` refuses them with exit code 2 and a message naming the file and
//! the reason; a running server refuses the reload, stays up with bounded memory, keeps serving
//! its last good tokens, and never writes a pasted token into its log.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// How long a reload of a hostile file may take to be counted (a debug build).
const RELOAD: Duration = Duration::from_secs(30);
const CLI_TIMEOUT: Duration = Duration::from_secs(60);
/// Peak resident memory a server may reach while refusing any of these files. Refusing them
/// takes a few tens of MiB; before the limits, the alias bomb alone took gigabytes.
const PEAK_RSS_CEILING_KIB: u64 = 300 * 1024;
const FAILURES: &str = r#"tollgate_reloads_total{source="file",result="failure"}"#;
/// Problems listed per file before the "… and N more problems" line.
const LISTED: usize = 100;

/// A good token file holding `good`, followed by the list items `items` (each starting with
/// `- ` at the first column, as `tokens_yaml` writes its entries). Keeping the good entry in the
/// file keeps it serving whatever the server makes of a refused edit.
fn file_with(good: &TestToken, items: &str) -> String {
    let text = tokens_yaml(&[good]);
    assert!(
        text.starts_with("tokens:\n- "),
        "unexpected layout of a token file: {text}"
    );
    format!("{text}{items}")
}

/// Files of about 32 KB nesting thousands of levels deep (written after a good entry), and what
/// a refusal must say.
fn nesting_bombs(good: &TestToken) -> Vec<(&'static str, String)> {
    let n = 16_000;
    // Each anchor nests the one before 200 levels deeper: few events, 8,000 levels.
    let mut aliases = String::from("- rate_limit: [&a0 x");
    for i in 1..40 {
        aliases += &format!(", &a{i} {}*a{}{}", "[".repeat(200), i - 1, "]".repeat(200));
    }
    aliases += "]\n";
    vec![
        (
            "block sequences",
            file_with(good, &format!("- rate_limit:\n  {}x\n", "- ".repeat(n))),
        ),
        (
            "block mapping keys",
            file_with(good, &format!("- rate_limit:\n  {}x\n", "? ".repeat(n))),
        ),
        ("anchors nesting through aliases", file_with(good, &aliases)),
        (
            "flow sequences",
            file_with(
                good,
                &format!("- rate_limit: {}{}\n", "[".repeat(n), "]".repeat(n)),
            ),
        ),
    ]
}

/// "Billion laughs" with long strings: a quoted 8 KiB string (with an escape, so each copy is
/// a fresh allocation), then lists of 64 aliases of the level before. A few KB of text; fully
/// expanded, 64^4 copies of the string (128 GiB).
fn alias_bomb(good: &TestToken) -> String {
    let mut items = format!("- &l0 \"{}\\t\"\n", "x".repeat(8 * 1024));
    for level in 1..=5 {
        let aliases = vec![format!("*l{}", level - 1); 64].join(", ");
        items += &format!("- &l{level} [{aliases}]\n");
    }
    file_with(good, &items)
}

/// Every bomb: what it is, its text, and the reason its refusal must give.
fn bombs(good: &TestToken) -> Vec<(&'static str, String, &'static str)> {
    let mut bombs: Vec<_> = nesting_bombs(good)
        .into_iter()
        .map(|(what, text)| (what, text, "nested more than 64 levels deep"))
        .collect();
    bombs.push((
        "alias bomb",
        alias_bomb(good),
        "anchors and aliases expand to too much data",
    ));
    bombs
}

/// `tollgate check-config` on a setup whose token file is `text`.
fn check_config(upstream: &Upstream, text: &str) -> (CliOutput, String) {
    let setup = Setup::new(&upstream.url()).with_tokens_yaml(text);
    setup.write();
    let out = run_tollgate(
        &["check-config", "--config", &setup.config_str()],
        None,
        setup.dir.path(),
        CLI_TIMEOUT,
    );
    (out, setup.tokens_path.to_string_lossy().into_owned())
}

/// Replaces the token file by `text` (write beside it, `mv` over it) and waits until the server
/// has counted the reload as a failure; panics with the log if the process exits meanwhile.
async fn replace_and_wait_refused(proxy: &mut Tollgate, text: &str, what: &str) {
    let before = proxy.metric(FAILURES).await;
    let path = proxy.setup.tokens_path.clone();
    let tmp = path.with_extension("yaml.new");
    std::fs::write(&tmp, text).expect("write the new token file");
    std::fs::rename(&tmp, &path).expect("mv it over the token file");
    let deadline = std::time::Instant::now() + RELOAD;
    loop {
        if let Some(status) = proxy.try_exit() {
            panic!(
                "{what}: tollgate exited ({status}) reading the file; log:\n{}",
                tail(&proxy.logs())
            );
        }
        // Read without panicking: a server that died is reported above, with its log.
        let failures = match reqwest::get(proxy.admin_url("/metrics")).await {
            Ok(resp) => resp.text().await.ok(),
            Err(_) => None,
        };
        if failures
            .and_then(|t| metric_value(&t, FAILURES))
            .unwrap_or(0.0)
            > before
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: no failed reload counted within {RELOAD:?}; log:\n{}",
            tail(&proxy.logs())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The end of a long log, for failure messages.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let from = lines.len().saturating_sub(40);
    lines[from..]
        .iter()
        .map(|l| l.chars().take(600).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Polls the server log until a line holds `needle` (10 s), returning the log.
async fn wait_log(proxy: &Tollgate, needle: &str, what: &str) -> String {
    let found = poll_until(Duration::from_secs(10), || async {
        proxy.logs().contains(needle)
    })
    .await;
    let log = proxy.logs();
    assert!(
        found.is_some(),
        "{what}: no log line with {needle:?} within 10 s; log:\n{}",
        tail(&log)
    );
    log
}

async fn expect_served(proxy: &Tollgate, client: &reqwest::Client, token: &TestToken, what: &str) {
    let resp = http_get(client, &proxy.url("/still-here"), Some(&token.auth())).await;
    assert_eq!(resp.status, 200, "{what}: {}", resp.body);
    assert_eq!(
        resp.body, "hello /still-here",
        "{what}: not the upstream's answer"
    );
}

#[test]
fn check_config_refuses_nesting_and_alias_bombs_with_file_and_reason() {
    let upstream = Upstream::start();
    let good = TestToken::read("good");
    for (what, text, reason) in bombs(&good) {
        let (out, file) = check_config(&upstream, &text);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{what}: check-config must refuse with the config exit code, not die ({}); stderr:\n{}",
            out.status,
            tail(&out.stderr)
        );
        let line = out
            .stderr
            .lines()
            .find(|l| l.starts_with(&format!("{file}: ")))
            .unwrap_or_else(|| panic!("{what}: no line naming {file}:\n{}", out.stderr));
        assert!(
            line.contains(reason) && line.contains(" at line "),
            "{what}: {line}"
        );
    }
}

#[tokio::test]
async fn a_server_survives_every_bomb_and_keeps_its_tokens() {
    let upstream = Upstream::start();
    let good = TestToken::read("good");
    let mut proxy = Setup::new(&upstream.url())
        .set("tokens.poll_interval", json!("60s"))
        .with_tokens(&[&good])
        .start()
        .await;
    let client = client();
    let file = proxy.setup.tokens_path.to_string_lossy().into_owned();
    expect_served(&proxy, &client, &good, "before").await;

    for (what, text, reason) in bombs(&good) {
        replace_and_wait_refused(&mut proxy, &text, what).await;
        wait_log(&proxy, &format!("{file}: {reason}"), what).await;
        expect_served(&proxy, &client, &good, what).await;
        let peak = proxy.peak_rss_kib();
        println!("[token_files] {what}: refused; peak RSS so far {peak} KiB");
        assert!(
            peak < PEAK_RSS_CEILING_KIB,
            "{what}: peak RSS {peak} KiB, over the {PEAK_RSS_CEILING_KIB} KiB ceiling"
        );
    }
    // The file fixed: served as before, by a server that never restarted.
    let other = TestToken::read("other");
    let successes = r#"tollgate_reloads_total{source="file",result="success"}"#;
    let before = proxy.metric(successes).await;
    std::fs::write(&proxy.setup.tokens_path, tokens_yaml(&[&good, &other])).expect("fix");
    poll_until(RELOAD, || async { proxy.metric(successes).await > before })
        .await
        .unwrap_or_else(|| {
            panic!(
                "the fixed file was not loaded; log:\n{}",
                tail(&proxy.logs())
            )
        });
    expect_served(&proxy, &client, &other, "after the fix").await;
    expect_served(&proxy, &client, &good, "after the fix").await;
}

#[tokio::test]
async fn a_token_pasted_into_a_field_is_never_echoed() {
    let upstream = Upstream::start();
    let good = TestToken::read("good");
    let pasted = TestToken::read("pasted");
    let secret = pasted.secret_part().to_owned();
    // The token where the id belongs (a bad entry), and as the name of an otherwise good entry
    // (which would put it into every log line naming the token).
    let mut as_id = pasted.entry.clone();
    as_id["id"] = json!(pasted.token);
    as_id["name"] = json!("as-id");
    let mut as_name = pasted.entry.clone();
    as_name["name"] = json!(pasted.token);
    let mut as_permission = pasted.entry.clone();
    as_permission["id"] = json!("PERMISSION01");
    as_permission["name"] = json!("as-permission");
    as_permission["permission"] = json!(pasted.token);
    let text = serde_yaml_ng::to_string(&json!({
        "tokens": [good.entry.clone(), as_id, as_name, as_permission]
    }))
    .expect("yaml");
    assert!(text.contains(&secret));

    let (out, file) = check_config(&upstream, &text);
    assert_eq!(out.status.code(), Some(2), "check-config: {out:?}");
    let output = out.combined();
    assert!(
        !output.contains(&secret),
        "check-config echoed the pasted token:\n{output}"
    );
    for needle in [
        format!("{file}: tokens[1] (name \"as-id\"): id \"tok_…(redacted)\""),
        format!("{file}: tokens[2] (name \"tok_…(redacted)\"): name holds a Tollgate token"),
        format!("{file}: tokens[3] (name \"as-permission\"): permission: unknown variant `tok_…(redacted)`"),
    ] {
        assert!(output.contains(&needle), "no {needle:?} in:\n{output}");
    }

    // A running server: the reload refused, the log names the entries but not the token.
    let mut proxy = Setup::new(&upstream.url())
        .set("tokens.poll_interval", json!("60s"))
        .with_tokens(&[&good])
        .start()
        .await;
    let client = client();
    replace_and_wait_refused(&mut proxy, &text, "pasted token").await;
    let log = wait_log(&proxy, "tokens[3]", "pasted token").await;
    assert!(log.contains("tok_…(redacted)"), "{}", tail(&log));
    assert!(
        !log.contains(&secret),
        "the server log holds the pasted token:\n{}",
        tail(&log)
    );
    expect_served(&proxy, &client, &good, "after the refused reload").await;
    let resp = http_get(&client, &proxy.url("/x"), Some(&pasted.auth())).await;
    assert_eq!(
        resp.status, 401,
        "the entry named by a token must not be taken in"
    );
}

/// Counts the lines of `text` that report a problem in `file`.
fn problem_lines(text: &str, file: &str) -> usize {
    text.lines()
        .filter(|l| {
            l.starts_with(&format!("{file}: ")) || l.contains(&format!("\"problem\":\"{file}: "))
        })
        .count()
}

#[tokio::test]
async fn the_problems_of_a_file_are_capped() {
    let upstream = Upstream::start();
    let good = TestToken::read("good");
    let bad = 5_000;
    let mut items = String::new();
    for i in 0..bad {
        items += &format!("- {{id: short{i}, name: bad-{i}, hash: x, permission: read}}\n");
    }
    let text = file_with(&good, &items);
    // Two problems per bad entry (id and hash).
    let more = 2 * bad - LISTED;
    let last = |file: &str| format!("{file}: … and {more} more problems in this file");

    let (out, file) = check_config(&upstream, &text);
    assert_eq!(
        out.status.code(),
        Some(2),
        "check-config: {}",
        tail(&out.stderr)
    );
    assert_eq!(
        problem_lines(&out.stderr, &file),
        LISTED + 1,
        "{}",
        tail(&out.stderr)
    );
    assert!(out.stderr.contains(&last(&file)), "{}", tail(&out.stderr));

    let manager = "admin:a-long-bootstrap-secret-for-tests";
    let mut proxy = Setup::new(&upstream.url())
        .set("tokens.poll_interval", json!("60s"))
        .env("TOLLGATE_BOOTSTRAP_TOKEN", manager)
        .with_tokens(&[&good])
        .start()
        .await;
    let file = proxy.setup.tokens_path.to_string_lossy().into_owned();
    replace_and_wait_refused(&mut proxy, &text, "5,000 bad entries").await;
    let log = wait_log(&proxy, &last(&file), "5,000 bad entries").await;
    assert_eq!(problem_lines(&log, &file), LISTED + 1, "{}", tail(&log));

    // The admin API's answer to a reload is capped the same way.
    let (user, secret) = manager.split_once(':').expect("NAME:SECRET");
    let resp = proxy
        .api("POST", "/api/v1/reload", Some(&basic(user, secret)), None)
        .await;
    assert_eq!(resp.status, 422, "{}", resp.text);
    let problems = resp.json()["problems"].clone();
    let problems = problems.as_array().expect("problems");
    assert_eq!(problems.len(), LISTED + 1, "{}", resp.text);
    assert_eq!(problems[LISTED], Value::String(last(&file)));
}

#[tokio::test]
async fn a_disabled_entry_is_refused_after_its_secret_verifies_and_enabled_by_an_edit() {
    let upstream = Upstream::start();
    let good = TestToken::read("good");
    let mut paused = TestToken::read("paused");
    paused.entry["disabled"] = json!(true);
    let (out, _) = check_config(&upstream, &tokens_yaml(&[&good, &paused]));
    assert!(out.status.success(), "check-config: {out:?}");
    let proxy = Setup::new(&upstream.url())
        .with_tokens(&[&good, &paused])
        .start()
        .await;
    let client = client();
    expect_served(&proxy, &client, &good, "beside a disabled entry").await;
    let resp = http_get(&client, &proxy.url("/x"), Some(&paused.auth())).await;
    assert_eq!(
        (resp.status, resp.error_code().as_deref()),
        (401, Some("token_disabled")),
        "{}",
        resp.body
    );
    let wrong = bearer(tollgate::token::generate_with_id(&paused.id).token.expose());
    let resp = http_get(&client, &proxy.url("/x"), Some(&wrong)).await;
    assert_eq!(
        (resp.status, resp.error_code().as_deref()),
        (401, Some("token_invalid")),
        "a wrong secret for a disabled entry: {}",
        resp.body
    );

    // Enabled by editing the file: served again after the reload.
    paused.entry["disabled"] = json!(false);
    std::fs::write(&proxy.setup.tokens_path, tokens_yaml(&[&good, &paused])).expect("write");
    poll_until(RELOAD, || async {
        http_get(&client, &proxy.url("/x"), Some(&paused.auth()))
            .await
            .status
            == 200
    })
    .await
    .expect("the entry enabled in the file is served after the reload");
}

#[tokio::test]
async fn entries_beyond_tokens_max_lifetime_are_refused_by_check_config_and_at_reload() {
    let upstream = Upstream::start();
    let soon = (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339();
    let late = (chrono::Utc::now() + chrono::Duration::days(400)).to_rfc3339();
    let good = TestToken::builder("within").expires_at(&soon).build();
    let forever = TestToken::read("forever");
    let far = TestToken::builder("far").expires_at(&late).build();
    // Made "in 300 days", expiring in 400: within 365 days of its own created_at, but not of
    // today.
    let mut postdated = TestToken::builder("postdated").expires_at(&late).build();
    postdated.entry["created_at"] =
        json!((chrono::Utc::now() + chrono::Duration::days(300)).to_rfc3339());
    let check = |tokens: &[&TestToken]| {
        let setup = Setup::new(&upstream.url())
            .set("tokens.max_lifetime", json!("365d"))
            .with_tokens(tokens);
        setup.write();
        let out = run_tollgate(
            &["check-config", "--config", &setup.config_str()],
            None,
            setup.dir.path(),
            CLI_TIMEOUT,
        );
        (out, setup.tokens_path.to_string_lossy().into_owned())
    };
    let (out, _) = check(&[&good]);
    assert!(out.status.success(), "check-config: {out:?}");
    for bad in [&forever, &far, &postdated] {
        let (out, file) = check(&[&good, bad]);
        assert_eq!(out.status.code(), Some(2), "{}: {out:?}", bad.name);
        let line = out
            .stderr
            .lines()
            .find(|l| l.starts_with(&format!("{file}: ")))
            .unwrap_or_else(|| panic!("no line naming {file}:\n{}", out.stderr));
        assert!(
            line.contains(&format!("token {:?}", bad.name))
                && line.contains("tokens.max_lifetime is 365d: "),
            "{line}"
        );
    }
    // Without the policy the same entries are fine.
    let (out, _) = check_config(&upstream, &tokens_yaml(&[&good, &forever, &far]));
    assert!(out.status.success(), "check-config: {out:?}");

    // A running server refuses the edit and keeps serving its last good tokens.
    let mut proxy = Setup::new(&upstream.url())
        .set("tokens.max_lifetime", json!("365d"))
        .set("tokens.poll_interval", json!("60s"))
        .with_tokens(&[&good])
        .start()
        .await;
    let client = client();
    expect_served(&proxy, &client, &good, "before the edit").await;
    replace_and_wait_refused(&mut proxy, &tokens_yaml(&[&good, &forever]), "max_lifetime").await;
    let log = wait_log(&proxy, "tokens.max_lifetime is 365d", "max_lifetime").await;
    assert!(log.contains("forever"), "{}", tail(&log));
    expect_served(&proxy, &client, &good, "after the refused edit").await;
    let resp = http_get(&client, &proxy.url("/x"), Some(&forever.auth())).await;
    assert_eq!(
        resp.status, 401,
        "the entry beyond the policy is not taken in"
    );
}
