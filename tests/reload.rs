//! Hot reload of token files through the real binary: edits in place, `mv` over the
//! file, a simulated Kubernetes atomic writer, broken files, reloads under load, SIGHUP, the
//! reload endpoint and the token-set gauges.
//!
//! The content poll is set to 60 s in these tests, so a change seen within 2 s was seen through
//! file events. Propagation times are printed (`-- --nocapture`).

mod common;

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// Longest time a file change may take to act.
const PROPAGATION: Duration = Duration::from_secs(2);

fn setup(upstream: &Upstream) -> Setup {
    Setup::new(&upstream.url()).set("tokens.poll_interval", json!("60s"))
}

/// Rewrite `path` in place (same inode): truncate and write.
fn write_in_place(path: &Path, content: &str) {
    use std::io::Write as _;
    let ino = std::fs::metadata(path).expect("stat").ino();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .expect("open for rewrite");
    f.write_all(content.as_bytes()).expect("write");
    f.sync_all().expect("sync");
    drop(f);
    assert_eq!(
        std::fs::metadata(path).expect("stat").ino(),
        ino,
        "in-place write changed the inode"
    );
}

/// Write a new file beside `path` and `mv` it over `path` (new inode).
fn replace_by_mv(path: &Path, content: &str) {
    let ino = std::fs::metadata(path).map(|m| m.ino()).ok();
    let tmp = path.with_extension("yaml.new");
    std::fs::write(&tmp, content).expect("write new file");
    std::fs::rename(&tmp, path).expect("mv over");
    assert_ne!(
        Some(std::fs::metadata(path).expect("stat").ino()),
        ino,
        "mv kept the inode"
    );
}

/// What Kubernetes' AtomicWriter does for a Secret/ConfigMap volume: the data lives in a
/// timestamped directory, `..data` is a symlink to it, and each user-visible file is a symlink
/// through `..data`. An update writes a new timestamped directory, points a temporary symlink at
/// it, renames that over `..data` (atomic), and removes the old directory.
struct AtomicWriter {
    dir: PathBuf,
    current: Option<String>,
    serial: u32,
}

impl AtomicWriter {
    fn new(dir: PathBuf) -> Self {
        std::fs::create_dir_all(&dir).expect("create volume dir");
        Self {
            dir,
            current: None,
            serial: 0,
        }
    }

    /// The user-visible path of `name`.
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn write(&mut self, name: &str, content: &str) {
        self.serial += 1;
        let ts = format!(
            "..2026_01_01_00_00_{:02}.{:09}",
            self.serial % 60,
            self.serial
        );
        let ts_dir = self.dir.join(&ts);
        std::fs::create_dir(&ts_dir).expect("create timestamped dir");
        std::fs::write(ts_dir.join(name), content).expect("write payload");
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&ts, &tmp).expect("symlink ..data_tmp");
        std::fs::rename(&tmp, self.dir.join("..data")).expect("rename ..data_tmp → ..data");
        let visible = self.dir.join(name);
        if std::fs::symlink_metadata(&visible).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(name), &visible)
                .expect("symlink the visible file");
        }
        if let Some(old) = self.current.replace(ts) {
            std::fs::remove_dir_all(self.dir.join(old)).expect("remove old timestamped dir");
        }
        assert_eq!(
            std::fs::read_to_string(&visible).expect("read through the symlinks"),
            content
        );
    }
}

/// Poll until `added` is accepted (200) and `removed` refused (401); returns how long each
/// took, or panics naming what did not happen within [`PROPAGATION`].
async fn wait_swap(
    proxy: &Tollgate,
    client: &reqwest::Client,
    added: &TestToken,
    removed: &TestToken,
    what: &str,
) -> (Duration, Duration) {
    let started = Instant::now();
    let url = proxy.url("/swap");
    let (mut accepted, mut refused) = (None, None);
    while started.elapsed() < PROPAGATION {
        if accepted.is_none() && http_get(client, &url, Some(&added.auth())).await.status == 200 {
            accepted = Some(started.elapsed());
        }
        if refused.is_none() && http_get(client, &url, Some(&removed.auth())).await.status == 401 {
            refused = Some(started.elapsed());
        }
        if accepted.is_some() && refused.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    match (accepted, refused) {
        (Some(a), Some(r)) => {
            println!("[reload] {what}: new token accepted after {a:?}, removed token refused after {r:?}");
            (a, r)
        }
        _ => panic!(
            "{what}: within {PROPAGATION:?} the new token was {} and the removed token was {}; log:\n{}",
            if accepted.is_some() { "accepted" } else { "NOT accepted" },
            if refused.is_some() { "refused" } else { "NOT refused" },
            proxy.logs()
        ),
    }
}

async fn expect_ok(proxy: &Tollgate, client: &reqwest::Client, token: &TestToken, what: &str) {
    let resp = http_get(client, &proxy.url("/ok"), Some(&token.auth())).await;
    assert_eq!(resp.status, 200, "{what}: {}", resp.body);
}

#[tokio::test]
async fn edit_in_place_applies_within_two_seconds() {
    let upstream = Upstream::start();
    let stable = TestToken::read("stable");
    let old = TestToken::read("old");
    let new = TestToken::read("new");
    let proxy = setup(&upstream).with_tokens(&[&stable, &old]).start().await;
    let client = client();
    expect_ok(&proxy, &client, &old, "before the edit (warms the cache)").await;

    let path = proxy.setup.tokens_path.clone();
    write_in_place(&path, &tokens_yaml(&[&stable, &new]));
    wait_swap(&proxy, &client, &new, &old, "edit in place").await;
    expect_ok(&proxy, &client, &stable, "unchanged token after the edit").await;

    // And back again: the watch keeps working after the first event.
    write_in_place(&path, &tokens_yaml(&[&stable, &old]));
    wait_swap(&proxy, &client, &old, &new, "second edit in place").await;
    expect_ok(
        &proxy,
        &client,
        &stable,
        "unchanged token after the second edit",
    )
    .await;
}

#[tokio::test]
async fn mv_over_the_file_applies_within_two_seconds() {
    let upstream = Upstream::start();
    let stable = TestToken::read("stable");
    let old = TestToken::read("old");
    let new = TestToken::read("new");
    let proxy = setup(&upstream).with_tokens(&[&stable, &old]).start().await;
    let client = client();
    expect_ok(&proxy, &client, &old, "before the mv").await;

    let path = proxy.setup.tokens_path.clone();
    replace_by_mv(&path, &tokens_yaml(&[&stable, &new]));
    wait_swap(&proxy, &client, &new, &old, "mv over").await;
    expect_ok(&proxy, &client, &stable, "unchanged token after mv").await;

    replace_by_mv(&path, &tokens_yaml(&[&stable, &old]));
    wait_swap(&proxy, &client, &old, &new, "second mv over").await;
    expect_ok(
        &proxy,
        &client,
        &stable,
        "unchanged token after the second mv",
    )
    .await;
}

#[tokio::test]
async fn kubernetes_atomic_writer_swap_applies_within_two_seconds() {
    let upstream = Upstream::start();
    let stable = TestToken::read("stable");
    let old = TestToken::read("old");
    let new = TestToken::read("new");
    let setup = setup(&upstream);
    let mut volume = AtomicWriter::new(setup.dir.path().join("secret-volume"));
    volume.write("tokens.yaml", &tokens_yaml(&[&stable, &old]));
    let visible = volume.path("tokens.yaml");
    assert!(std::fs::symlink_metadata(&visible)
        .expect("lstat")
        .file_type()
        .is_symlink());
    let proxy = setup
        .set(
            "tokens.files",
            json!([visible.to_string_lossy().into_owned()]),
        )
        .start()
        .await;
    let client = client();
    expect_ok(&proxy, &client, &old, "before the swap").await;
    expect_ok(&proxy, &client, &stable, "before the swap").await;

    volume.write("tokens.yaml", &tokens_yaml(&[&stable, &new]));
    wait_swap(&proxy, &client, &new, &old, "Kubernetes ..data swap").await;
    expect_ok(&proxy, &client, &stable, "unchanged token after the swap").await;

    volume.write("tokens.yaml", &tokens_yaml(&[&stable, &old]));
    wait_swap(&proxy, &client, &old, &new, "second Kubernetes ..data swap").await;
    expect_ok(
        &proxy,
        &client,
        &stable,
        "unchanged token after the second swap",
    )
    .await;
}

/// An ERROR log line naming `file` and containing every one of `words`.
fn error_line(logs: &str, file: &str, words: &[&str]) -> Option<String> {
    logs.lines()
        .filter(|l| l.contains(file))
        .filter(|l| {
            serde_json::from_str::<Value>(l)
                .map(|v| v["level"] == "ERROR")
                .unwrap_or(false)
        })
        .find(|l| words.iter().all(|w| l.contains(w)))
        .map(str::to_owned)
}

#[tokio::test]
async fn a_broken_file_keeps_the_last_good_set_until_fixed() {
    let upstream = Upstream::start();
    let stable = TestToken::read("stable");
    let fresh = TestToken::read("fresh");
    let proxy = setup(&upstream).with_tokens(&[&stable]).start().await;
    let client = client();
    let path = proxy.setup.tokens_path.clone();
    let file = path.to_string_lossy().into_owned();
    expect_ok(&proxy, &client, &stable, "before").await;

    let failures = r#"tollgate_reloads_total{source="file",result="failure"}"#;
    let successes = r#"tollgate_reloads_total{source="file",result="success"}"#;

    let mut bad_hash = fresh.entry.clone();
    bad_hash["hash"] = json!("not-a-phc-string");
    let mut unknown_field = fresh.entry.clone();
    unknown_field["colour"] = json!("blue");
    let twin = TestToken::read("stable"); // another id, the same name
    let yaml = |entries: Vec<Value>| {
        serde_yaml_ng::to_string(&json!({ "tokens": entries })).expect("yaml")
    };
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "YAML syntax error",
            format!("{}  - id: [unclosed\n", tokens_yaml(&[&stable, &fresh])),
            vec!["line"],
        ),
        (
            "bad hash",
            yaml(vec![stable.entry.clone(), bad_hash]),
            vec!["hash", "fresh"],
        ),
        (
            "unknown field",
            yaml(vec![
                stable.entry.clone(),
                fresh.entry.clone(),
                unknown_field,
            ]),
            vec!["colour"],
        ),
        (
            "duplicate name",
            yaml(vec![
                stable.entry.clone(),
                fresh.entry.clone(),
                twin.entry.clone(),
            ]),
            vec!["duplicate", "stable"],
        ),
        (
            "duplicate id",
            yaml(vec![stable.entry.clone(), fresh.entry.clone(), {
                let mut e = fresh.entry.clone();
                e["name"] = json!("fresh-copy");
                e
            }]),
            vec!["duplicate", &fresh.id],
        ),
        // Last: it names no token, so the last good ones it dropped are gone (see the loop).
        ("not a token file", "- just\n- a list\n".to_owned(), vec![]),
    ];

    for (what, content, words) in &cases {
        let before = proxy.metric(failures).await;
        replace_by_mv(&path, content);
        let took = poll_until(PROPAGATION, || async {
            proxy.metric(failures).await > before
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "{what}: {failures} did not move within {PROPAGATION:?}; log:\n{}",
                proxy.logs()
            )
        });
        println!("[reload] broken file ({what}) counted as a failure after {took:?}");
        assert_eq!(
            proxy.metric(failures).await,
            before + 1.0,
            "{what}: one failure per broken version"
        );
        if content.contains(&stable.id) {
            expect_ok(
                &proxy,
                &client,
                &stable,
                &format!("{what}: last good token"),
            )
            .await;
        } else {
            // A refused edit still removes what it no longer names (fail closed).
            let resp = http_get(&client, &proxy.url("/x"), Some(&stable.auth())).await;
            assert_eq!(
                resp.status, 401,
                "{what}: a token the edit removed kept working"
            );
        }
        let resp = http_get(&client, &proxy.url("/x"), Some(&fresh.auth())).await;
        assert_eq!(
            resp.status, 401,
            "{what}: a token of the refused file must not be accepted: {}",
            resp.body
        );
        let ready = proxy.api("GET", "/readyz", None, None).await;
        assert_eq!(
            ready.status, 200,
            "{what}: /readyz must stay ready: {}",
            ready.text
        );
        let logs = proxy.logs();
        assert!(
            error_line(&logs, &file, words).is_some(),
            "{what}: no ERROR log line naming {file} and {words:?}; log:\n{logs}"
        );
    }

    // Fixing the file recovers on the next event.
    let before = proxy.metric(successes).await;
    replace_by_mv(&path, &tokens_yaml(&[&stable, &fresh]));
    let took = poll_until(PROPAGATION, || async {
        http_get(&client, &proxy.url("/x"), Some(&fresh.auth()))
            .await
            .status
            == 200
    })
    .await
    .expect("the fixed file's new token is accepted within 2 s");
    println!("[reload] fixed file → new token accepted after {took:?}");
    assert!(proxy.metric(successes).await > before);
    expect_ok(&proxy, &client, &stable, "after the fix").await;
}

#[tokio::test]
async fn twenty_reloads_under_load_fail_no_request() {
    let upstream = Upstream::start();
    // Unlimited: the load below is far beyond the default 1000 requests per hour.
    let stable = TestToken::builder("stable")
        .rate_limit(json!("unlimited"))
        .build();
    let toggled = TestToken::read("toggled");
    let proxy = setup(&upstream).with_tokens(&[&stable]).start().await;
    let path = proxy.setup.tokens_path.clone();
    let generation = "tollgate_snapshot_generation";
    let gen_before = proxy.metric(generation).await;

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for n in 0..4 {
        let (stop, ok, failed, failures) =
            (stop.clone(), ok.clone(), failed.clone(), failures.clone());
        let url = proxy.url(&format!("/load/{n}"));
        let auth = stable.auth();
        clients.push(tokio::spawn(async move {
            let client = client();
            while !stop.load(Ordering::Relaxed) {
                match client.get(&url).header("authorization", &auth).send().await {
                    Ok(resp) if resp.status() == 200 => {
                        let _ = resp.bytes().await;
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(resp) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        let status = resp.status();
                        let body = resp.text().await.unwrap_or_default();
                        failures
                            .lock()
                            .expect("lock")
                            .push(format!("{status} {body}"));
                    }
                    Err(e) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        failures.lock().expect("lock").push(format!("{e:?}"));
                    }
                }
            }
        }));
    }

    let client = client();
    let started = Instant::now();
    let mut times = Vec::new();
    for i in 0..20 {
        let add = i % 2 == 0;
        let content = if add {
            tokens_yaml(&[&stable, &toggled])
        } else {
            tokens_yaml(&[&stable])
        };
        if i % 4 < 2 {
            write_in_place(&path, &content);
        } else {
            replace_by_mv(&path, &content);
        }
        let want = if add { 200 } else { 401 };
        let took = poll_until(PROPAGATION, || async {
            http_get(&client, &proxy.url("/toggle"), Some(&toggled.auth()))
                .await
                .status
                == want
        })
        .await
        .unwrap_or_else(|| panic!("reload {i}: the toggled token did not turn {want} within 2 s"));
        times.push(took);
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client task");
    }
    let elapsed = started.elapsed();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    let gen_after = proxy.metric(generation).await;
    times.sort();
    println!(
        "[reload] 20 reloads in {elapsed:?}: {ok} requests OK, {failed} failed, generation \
         {gen_before} → {gen_after}; propagation min {:?} median {:?} max {:?}",
        times[0], times[10], times[19]
    );
    let failures = failures.lock().expect("lock");
    assert_eq!(
        failed,
        0,
        "requests with a stable token failed during reloads: {:?}",
        &failures[..failures.len().min(10)]
    );
    assert!(ok >= 100, "too few requests to mean anything: {ok}");
    assert!(
        gen_after - gen_before >= 20.0,
        "20 reloads but the generation moved {gen_before} → {gen_after}"
    );
}

#[tokio::test]
async fn sighup_reloads_the_token_set() {
    let upstream = Upstream::start();
    let stable = TestToken::read("stable");
    let proxy = setup(&upstream).with_tokens(&[&stable]).start().await;
    let client = client();
    let generation = "tollgate_snapshot_generation";
    let successes = r#"tollgate_reloads_total{source="file",result="success"}"#;
    for round in 0..2 {
        let before = proxy.metric(generation).await;
        let ok_before = proxy.metric(successes).await;
        proxy.signal("HUP");
        let took = poll_until(PROPAGATION, || async {
            proxy.metric(generation).await > before
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "SIGHUP {round}: the generation stayed {before}; log:\n{}",
                proxy.logs()
            )
        });
        println!(
            "[reload] SIGHUP {round} → generation {before} → {} after {took:?}",
            proxy.metric(generation).await
        );
        assert!(
            proxy.metric(successes).await > ok_before,
            "a SIGHUP reload counts as a file reload"
        );
        expect_ok(&proxy, &client, &stable, "after SIGHUP").await;
    }
    let ready = proxy.api("GET", "/readyz", None, None).await;
    assert_eq!(ready.status, 200, "still serving after SIGHUP");
}

#[tokio::test]
async fn reload_endpoint_answers_422_for_a_broken_file() {
    let upstream = Upstream::start();
    let manager = TestToken::builder("manager").permission("manager").build();
    let stable = TestToken::read("stable");
    let fresh = TestToken::read("fresh");
    let proxy = setup(&upstream)
        .with_tokens(&[&manager, &stable])
        .start()
        .await;
    let client = client();
    let path = proxy.setup.tokens_path.clone();
    let file = path.to_string_lossy().into_owned();

    let resp = proxy
        .api("POST", "/api/v1/reload", Some(&manager.auth()), None)
        .await;
    let body = resp.expect(200);
    let generation = body["generation"]
        .as_u64()
        .unwrap_or_else(|| panic!("generation: {body}"));
    assert_eq!(body["tokens"], 2, "{body}");
    assert_eq!(
        proxy.metric("tollgate_snapshot_generation").await,
        generation as f64
    );

    let mut broken = fresh.entry.clone();
    broken["hash"] = json!("$argon2id$broken");
    std::fs::write(
        &path,
        serde_yaml_ng::to_string(&json!({"tokens": [manager.entry, stable.entry, broken]}))
            .expect("yaml"),
    )
    .expect("write");
    let resp = proxy
        .api("POST", "/api/v1/reload", Some(&manager.auth()), None)
        .await;
    resp.expect_error(422, "reload_failed");
    let problems = resp.json()["problems"].clone();
    let listed = problems
        .as_array()
        .unwrap_or_else(|| panic!("problems is not a list: {}", resp.text));
    assert!(
        listed.iter().any(|p| p
            .as_str()
            .is_some_and(|p| p.contains(&file) && p.contains("hash"))),
        "no problem names {file} and the hash: {}",
        resp.text
    );
    let after = proxy.metric("tollgate_snapshot_generation").await;
    assert_eq!(after, generation as f64, "a refused reload swaps nothing");
    expect_ok(&proxy, &client, &stable, "after the refused reload").await;

    std::fs::write(&path, tokens_yaml(&[&manager, &stable, &fresh])).expect("write");
    let resp = proxy
        .api("POST", "/api/v1/reload", Some(&manager.auth()), None)
        .await;
    let body = resp.expect(200);
    assert!(body["generation"].as_u64().expect("generation") > generation);
    assert_eq!(body["tokens"], 3, "{body}");
    expect_ok(&proxy, &client, &fresh, "after the good reload").await;

    let resp = proxy.api("POST", "/api/v1/reload", None, None).await;
    resp.expect_error(401, "unauthenticated");
    let resp = proxy
        .api("POST", "/api/v1/reload", Some(&stable.auth()), None)
        .await;
    resp.expect_error(403, "forbidden");
}

#[tokio::test]
async fn gauges_show_generation_token_counts_and_last_reload() {
    let upstream = Upstream::start();
    let a = TestToken::read("a");
    let b = TestToken::read("b");
    let c = TestToken::read("c");
    let proxy = setup(&upstream)
        .with_tokens(&[&a, &b])
        .env(
            "TOLLGATE_BOOTSTRAP_TOKEN",
            "boot:Bootstrap-secret-for-gauges",
        )
        .start()
        .await;
    let client = client();
    let text = proxy.metrics_text().await;
    let get = |series: &str| metric_value(&text, series);
    assert_eq!(
        get(r#"tollgate_tokens{source="file"}"#),
        Some(2.0),
        "{text}"
    );
    assert_eq!(get(r#"tollgate_tokens{source="database"}"#), Some(0.0));
    assert_eq!(get(r#"tollgate_tokens{source="bootstrap"}"#), Some(1.0));
    let generation = get("tollgate_snapshot_generation").expect("generation gauge");
    assert!(generation >= 1.0);
    let last = get("tollgate_last_reload_timestamp_seconds").expect("last reload gauge");
    let now = chrono::Utc::now().timestamp() as f64;
    assert!(
        (now - 60.0..=now + 1.0).contains(&last),
        "last reload timestamp {last} is not recent (now {now})"
    );

    replace_by_mv(&proxy.setup.tokens_path, &tokens_yaml(&[&a, &b, &c]));
    let took = poll_until(PROPAGATION, || async {
        proxy.metric(r#"tollgate_tokens{source="file"}"#).await == 3.0
    })
    .await
    .expect("tokens{source=file} becomes 3 within 2 s");
    println!("[reload] token gauge updated after {took:?}");
    let text = proxy.metrics_text().await;
    let get = |series: &str| metric_value(&text, series);
    assert!(get("tollgate_snapshot_generation").expect("generation") > generation);
    assert!(get("tollgate_last_reload_timestamp_seconds").expect("last reload") >= last);
    let resp = http_get(&client, &proxy.url("/c"), Some(&c.auth())).await;
    assert_eq!(resp.status, 200);

    // A database token counts under its own source.
    let resp = proxy
        .api(
            "POST",
            "/api/v1/tokens",
            Some(&basic("boot", "Bootstrap-secret-for-gauges")),
            Some(&json!({"name": "in-db", "permission": "read"})),
        )
        .await;
    resp.expect(201);
    assert_eq!(
        proxy.metric(r#"tollgate_tokens{source="database"}"#).await,
        1.0
    );
}

#[tokio::test]
async fn not_ready_and_503_until_the_first_good_load() {
    let upstream = Upstream::start();
    let stable = TestToken::read("stable");
    // A database nobody listens on: the server starts, but has no token set yet.
    let db = format!("postgres://tollgate:x@{}/tollgate", free_addr());
    let proxy = setup(&upstream)
        .with_tokens(&[&stable])
        .set("tokens.database", json!(db))
        .start_unready()
        .await;
    let ready = proxy.api("GET", "/readyz", None, None).await;
    assert_eq!(
        ready.status, 503,
        "/readyz before any token set: {}",
        ready.text
    );
    let resp = http_get(&client(), &proxy.url("/x"), Some(&stable.auth())).await;
    assert_eq!(
        (resp.status, resp.error_code().as_deref()),
        (503, Some("not_ready")),
        "before the first load the proxy answers 503, not 401: {}",
        resp.body
    );
    assert!(
        resp.header("retry-after").is_some(),
        "503 without Retry-After"
    );
    assert_eq!(upstream.count(), 0);
}
