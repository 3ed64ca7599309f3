//! A first run through the real binary: a configuration that names only a database starts
//! although the default token file does not exist, says how to make the first token, and
//! serves the token made with the CLI, then the default file once it is created; a token file
//! the configuration names is still required.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// `tokens: {database: …}` and nothing else about tokens: the default `config/tokens.yaml` is
/// absent in the working directory, which is logged, not refused.
fn database_only(upstream: &Upstream) -> Setup {
    Setup::new(&upstream.url()).set("tokens", json!({"database": "sqlite://tokens.db"}))
}

#[tokio::test]
async fn a_database_only_configuration_starts_and_serves_the_first_token() {
    let upstream = Upstream::start();
    let tg = database_only(&upstream).start().await;
    assert!(
        !tg.setup.dir.path().join("config/tokens.yaml").exists(),
        "the default token file must be absent for this test"
    );
    let logs = tg.logs();
    assert!(
        logs.contains("the default token file does not exist (yet); it is read once created"),
        "the absent default file is logged:\n{logs}"
    );
    let hints: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("no tokens yet"))
        .collect();
    assert_eq!(hints.len(), 1, "one hint line:\n{logs}");
    assert!(
        hints[0].contains("tollgate token create --name NAME --permission manager")
            && hints[0].contains("TOLLGATE_BOOTSTRAP_TOKEN"),
        "{}",
        hints[0]
    );

    // The CLI works on the same configuration (no token file either) and makes the first token.
    let out = tg
        .cli(
            &["token", "create", "--name", "first", "--permission", "read"],
            None,
        )
        .await;
    assert!(out.status.success(), "token create: {out:?}");
    let token = out
        .stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .unwrap_or_else(|| panic!("no `token: …` line: {out:?}"))
        .trim()
        .to_owned();
    let client = client();
    let served = poll_until(Duration::from_secs(10), || async {
        client
            .get(tg.url("/first"))
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(
        served.is_some(),
        "the new token never worked; log:\n{}",
        tg.logs()
    );
    assert_eq!(upstream.count_path("/first"), 1);

    let out = tg.cli(&["check-config"], None).await;
    assert!(out.status.success(), "check-config: {out:?}");
    assert!(out.stdout.contains("(1 token)"), "{out:?}");

    // The default file, created later, is read without a restart.
    let from_file = TestToken::read("from-file");
    let dir = tg.setup.dir.path().join("config");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tokens.yaml"), tokens_yaml(&[&from_file])).unwrap();
    let served = poll_until(Duration::from_secs(10), || async {
        client
            .get(tg.url("/from-file"))
            .header("authorization", from_file.auth())
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(
        served.is_some(),
        "a default token file created after start was never read; log:\n{}",
        tg.logs()
    );
}

/// The same path, named by the user, must exist: `serve` and `check-config` refuse, naming it.
#[test]
fn a_named_token_file_that_is_absent_still_refuses() {
    let upstream = Upstream::start();
    let setup = database_only(&upstream).set("tokens.files", json!(["config/tokens.yaml"]));
    setup.write();
    let file = setup.config_str();
    for command in ["serve", "check-config"] {
        let out = run_tollgate(
            &[command, "--config", &file],
            None,
            setup.dir.path(),
            CLI_TIMEOUT,
        );
        assert_eq!(out.status.code(), Some(2), "{command}: {out:?}");
        assert!(
            out.combined()
                .contains("config/tokens.yaml: cannot read token file"),
            "{command}: {out:?}"
        );
    }
}
