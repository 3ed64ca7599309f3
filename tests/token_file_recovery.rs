//! Token files that break and come back, through the real binary: putting back the last good
//! text after a refused edit restores what the edit took away (it used to be skipped as
//! "unchanged"), and a token file that is not a regular file (a FIFO, a device) is refused at
//! once instead of holding the loader: later edits still apply.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::json;

/// Longest time an edit may take to act (file events; the content poll is set to 60 s).
const PROPAGATION: Duration = Duration::from_secs(5);
const FAILURES: &str = r#"tollgate_reloads_total{source="file",result="failure"}"#;

/// Writes `content` beside `path` and moves it over `path`.
fn replace(path: &Path, content: &str) {
    let tmp = path.with_extension("yaml.new");
    std::fs::write(&tmp, content).expect("write new file");
    std::fs::rename(&tmp, path).expect("mv over");
}

/// Polls until `GET /x` with `token` answers `want`; panics with the log after [`PROPAGATION`].
async fn expect_status(proxy: &Tollgate, token: &TestToken, want: u16, what: &str) {
    let client = client();
    let url = proxy.url("/x");
    let seen = poll_until(PROPAGATION, || async {
        http_get(&client, &url, Some(&token.auth())).await.status == want
    })
    .await;
    assert!(
        seen.is_some(),
        "{what}: {} did not answer {want} within {PROPAGATION:?}; log:\n{}",
        token.name,
        proxy.logs()
    );
}

#[tokio::test]
async fn putting_back_the_last_good_file_restores_what_a_refused_edit_took_away() {
    let upstream = Upstream::start();
    let kept = TestToken::read("kept");
    let dropped = TestToken::read("dropped");
    let proxy = Setup::new(&upstream.url())
        .set("tokens.poll_interval", json!("60s"))
        .with_tokens(&[&kept, &dropped])
        .start()
        .await;
    let good = tokens_yaml(&[&kept, &dropped]);
    let path = proxy.setup.tokens_path.clone();
    expect_status(&proxy, &dropped, 200, "before").await;

    // A save cut short: the text no longer names `dropped`, so it goes at once (fail closed).
    let cut = good
        .find(dropped.id.as_str())
        .expect("dropped's id in the file");
    replace(&path, &good[..cut]);
    expect_status(&proxy, &dropped, 401, "after the broken save").await;
    expect_status(&proxy, &kept, 200, "after the broken save").await;

    // The good text again, byte for byte: `dropped` serves again, with no SIGHUP.
    replace(&path, &good);
    expect_status(&proxy, &dropped, 200, "after putting the good file back").await;
    expect_status(&proxy, &kept, 200, "after putting the good file back").await;
}

#[tokio::test]
async fn a_fifo_or_device_as_token_file_is_refused_and_later_edits_apply() {
    let upstream = Upstream::start();
    let old = TestToken::read("old");
    let new = TestToken::read("new");
    let proxy = Setup::new(&upstream.url())
        .set("tokens.poll_interval", json!("1s"))
        .with_tokens(&[&old])
        .start()
        .await;
    let path = proxy.setup.tokens_path.clone();
    let dir = path.parent().expect("token dir").to_path_buf();
    expect_status(&proxy, &old, 200, "before").await;

    for (what, target) in [
        ("a FIFO", dir.join("fifo")),
        ("a device", std::path::PathBuf::from("/dev/zero")),
    ] {
        if what == "a FIFO" {
            let made = std::process::Command::new("mkfifo")
                .arg(&target)
                .status()
                .expect("mkfifo");
            assert!(made.success(), "mkfifo failed");
        }
        let before = proxy.metric(FAILURES).await;
        let link = dir.join("link.tmp");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        std::fs::rename(&link, &path).expect("mv the symlink over the token file");
        let refused = poll_until(PROPAGATION, || async {
            proxy.metric(FAILURES).await > before
        })
        .await;
        assert!(
            refused.is_some(),
            "{what}: no refused reload within {PROPAGATION:?}; log:\n{}",
            proxy.logs()
        );
        assert!(
            proxy.logs().contains("not a regular file"),
            "{what}: the refusal does not say why; log:\n{}",
            proxy.logs()
        );
        // The loader is free: a good edit that swaps the tokens applies.
        replace(&path, &tokens_yaml(&[&new]));
        expect_status(&proxy, &new, 200, &format!("after {what}")).await;
        expect_status(&proxy, &old, 401, &format!("after {what}")).await;
        replace(&path, &tokens_yaml(&[&old]));
        expect_status(&proxy, &old, 200, &format!("after {what}, back")).await;
    }
}
