//! The upstream's name through the real binary: an upstream that does not resolve and a
//! certificate that does not load are refused by `check-config` and by `serve` the way
//! configuration problems are (file, field, reason); a name that moves to another address while
//! Tollgate runs is followed without a restart (the debug-build `TOLLGATE_TEST_HOSTS` seam
//! stands in for DNS).

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// `check-config` and `serve` refuse, naming the file, the field and the reason, an upstream
/// name that does not resolve and a certificate pair that cannot be read, both at once.
#[test]
fn unresolvable_upstream_and_unreadable_certificate_are_refused() {
    let setup = Setup::new("http://no-such-host.invalid:8081")
        .set("tokens.database", json!("none"))
        .set(
            "tls",
            json!({
                "listen": free_addr().to_string(),
                "cert_file": "/nonexistent/tls.crt",
                "key_file": "/nonexistent/tls.key",
            }),
        );
    setup.write();
    let file = setup.config_str();
    for command in ["check-config", "serve"] {
        let out = run_tollgate(
            &[command, "--config", &file],
            None,
            setup.dir.path(),
            CLI_TIMEOUT,
        );
        assert_eq!(out.status.code(), Some(2), "{command}: {out:?}");
        let text = out.combined();
        for want in [
            "the configuration is refused (2 problems)".to_string(),
            format!("{file}: upstream.url: cannot resolve no-such-host.invalid: "),
            format!("{file}: tls.cert_file: /nonexistent/tls.crt: "),
        ] {
            assert!(
                text.contains(&want),
                "{command}: missing {want:?} in:\n{text}"
            );
        }
    }

    // Set by the environment, the problem names the variable.
    let setup = Setup::new("http://127.0.0.1:9").set("tokens.database", json!("none"));
    setup.write();
    let out = run_tollgate_env(
        &["check-config", "--config", &setup.config_str()],
        None,
        setup.dir.path(),
        CLI_TIMEOUT,
        &[("TOLLGATE_UPSTREAM__URL", "http://also-not.invalid")],
    );
    let text = out.combined();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        text.contains(
            "env TOLLGATE_UPSTREAM__URL: upstream.url: cannot resolve also-not.invalid: "
        ),
        "{text}"
    );
}
