//! Tests of the section builders, through the loader.

use super::*;
use crate::config::testing::*;
use crate::config::{load, Overrides};

#[test]
fn limits_defaults_values_and_refusals() {
    let (c, _) = load(None, vec![], &Overrides::default()).unwrap();
    assert_eq!(c.limits, LimitsConfig::default());
    assert_eq!(c.limits.header_timeout, Duration::from_secs(10));
    assert_eq!(c.limits.keepalive_timeout, Duration::from_secs(60));
    assert_eq!(c.limits.max_connections, None);
    assert_eq!(c.limits.max_connections_per_ip, 256);

    let f = doc(
        "limits: {header_timeout: 2s, keepalive_timeout: 500ms, max_connections: 30, max_connections_per_ip: 0}\n",
    );
    let (c, _) = load_doc(&f, vec![], &Overrides::default()).unwrap();
    assert_eq!(
        c.limits,
        LimitsConfig {
            header_timeout: Duration::from_secs(2),
            keepalive_timeout: Duration::from_millis(500),
            max_connections: Some(30),
            max_connections_per_ip: 0,
        }
    );
    let env = vec![(
        "TOLLGATE_LIMITS__MAX_CONNECTIONS".to_string(),
        "auto".to_string(),
    )];
    let (c, _) = load_doc(&f, env, &Overrides::default()).unwrap();
    assert_eq!(c.limits.max_connections, None);

    let f = doc(
        "limits:\n  header_timeout: 0s\n  keepalive_timeout: 10ms\n  max_connections: 0\n  max_connections_per_ip: -1\n  idle: 5s\n",
    );
    let env = vec![(
        "TOLLGATE_LIMITS__HEADER_TIMEOUT".to_string(),
        "soon".to_string(),
    )];
    let errs = load_doc(&f, env, &Overrides::default()).unwrap_err();
    let text = errs.to_string();
    let p = FILE.to_string();
    for want in [
        "env TOLLGATE_LIMITS__HEADER_TIMEOUT: limits.header_timeout: not a duration".to_string(),
        format!("{p}: limits.keepalive_timeout: must be at least 100ms"),
        format!("{p}: limits.max_connections: must be at least 1, or auto"),
        format!("{p}: limits.max_connections_per_ip: -1 is not a whole number"),
        format!("{p}: limits.idle: unknown field"),
    ] {
        assert!(text.contains(&want), "missing {want:?} in:\n{text}");
    }
    assert_eq!(errs.0.len(), 5, "{text}");
}

#[test]
fn resolve_interval_forms() {
    let interval = |v: &str| {
        let env = vec![(
            "TOLLGATE_UPSTREAM__RESOLVE_INTERVAL".to_string(),
            v.to_string(),
        )];
        load(None, env, &Overrides::default()).map(|(c, _)| c.upstream.resolve_interval)
    };
    let (c, _) = load(None, vec![], &Overrides::default()).unwrap();
    assert_eq!(c.upstream.resolve_interval, Some(Duration::from_secs(30)));
    assert_eq!(interval("2m"), Ok(Some(Duration::from_secs(120))));
    assert_eq!(interval("5"), Ok(Some(Duration::from_secs(5))));
    assert_eq!(interval("0"), Ok(None));
    assert_eq!(interval("0s"), Ok(None));
    assert_eq!(interval("never"), Ok(None));
    let e = interval("100ms").unwrap_err().to_string();
    assert!(
        e.contains("upstream.resolve_interval: must be at least 1s"),
        "{e}"
    );
    assert!(interval("often").is_err());
}

#[test]
fn upstream_url_forms() {
    let ok = |u: &str| parse_upstream(u, None).unwrap();
    assert_eq!(ok("http://127.0.0.1").port, 80);
    assert_eq!(ok("https://127.0.0.1").port, 443);
    assert!(ok("https://127.0.0.1").tls);
    assert_eq!(ok("http://localhost:9000/").path_prefix, "");
    assert_eq!(ok("http://[::1]:9000/").host, "::1");
    let p = parse_upstream("http://127.0.0.1:9", Some("repo.example:8443")).unwrap();
    assert_eq!(
        (p.host_header.as_str(), p.sni.as_str()),
        ("repo.example:8443", "repo.example")
    );
    assert!(parse_upstream("127.0.0.1:80", None).is_err());
    assert!(parse_upstream("http://u:p@127.0.0.1", None).is_err());
}

/// Every section, the nested rate-limit rules included, refuses a key it does not know,
/// naming the file and the field.
#[test]
fn every_section_refuses_unknown_keys() {
    let f = doc("upstream: {colour: 1}\n\
         tokens: {colour: 1}\n\
         cache: {colour: 1}\n\
         verify:\n  colour: 1\n  token_attempts: {requests: 1, period: 1m, colour: 1}\n  \
         client_attempts: {requests: 1, period: 1m, colour: 1}\n\
         hashing: {colour: 1}\n\
         log: {colour: 1}\n\
         shutdown: {colour: 1}\n\
         tls: {listen: 127.0.0.1:8443, cert_file: c, key_file: k, colour: 1}\n\
         limits: {colour: 1}\n\
         rate_limit: {requests: 5, period: 1h, colour: red}\n\
         colour: 1\n");
    let errs = load_doc(&f, vec![], &Overrides::default()).unwrap_err();
    let p = FILE.to_string();
    let mut got: Vec<String> = errs.0.iter().map(ToString::to_string).collect();
    got.sort();
    let mut want: Vec<String> = [
        "upstream.colour",
        "tokens.colour",
        "cache.colour",
        "verify.colour",
        "verify.token_attempts.colour",
        "verify.client_attempts.colour",
        "hashing.colour",
        "log.colour",
        "shutdown.colour",
        "tls.colour",
        "limits.colour",
        "rate_limit.colour",
        "colour",
    ]
    .iter()
    .map(|field| format!("{p}: {field}: unknown field"))
    .collect();
    want.sort();
    assert_eq!(got, want);

    // From the environment too.
    let f = doc("rate_limit: {requests: 5, period: 1h}\n");
    let env = vec![("TOLLGATE_RATE_LIMIT__COLOUR".to_string(), "x".to_string())];
    let errs = load_doc(&f, env, &Overrides::default()).unwrap_err();
    assert_eq!(
        errs.to_string(),
        "env TOLLGATE_RATE_LIMIT__COLOUR: rate_limit.colour: unknown field"
    );
}

#[test]
fn rate_limit_backend() {
    let load = |text: &str, env: Vec<(String, String)>| {
        load_doc(&doc(text), env, &Overrides::default())
            .map(|(c, _)| (c.rate_limit, c.rate_limit_backend))
            .map_err(|e| e.to_string())
    };
    let (rule, backend) = load(
        "rate_limit: {backend: 'redis://:s3cret@127.0.0.1:6379/0', on_backend_error: deny, lease: 7}\n",
        vec![],
    )
    .unwrap();
    // Without requests and period, the default limit stays.
    assert_eq!(
        rule,
        RateLimitRule::Limited {
            requests: 1000,
            period: std::time::Duration::from_secs(3600)
        }
    );
    let backend = backend.unwrap();
    assert_eq!(backend.url.expose(), "redis://:s3cret@127.0.0.1:6379/0");
    assert_eq!(backend.on_error, crate::config::OnBackendError::Deny);
    assert_eq!(backend.lease_max, 7);
    assert_eq!(backend.timeout, std::time::Duration::from_millis(50));
    // The password shows nowhere.
    assert!(!format!("{backend:?}").contains("s3cret"));
    assert!(!backend.url.to_string().contains("s3cret"));

    // From the environment, beside a file's limit.
    let (rule, backend) = load(
        "rate_limit: {requests: 5, period: 1m}\n",
        vec![(
            "TOLLGATE_RATE_LIMIT__BACKEND".into(),
            "rediss://redis.internal:6380".into(),
        )],
    )
    .unwrap();
    assert!(matches!(rule, RateLimitRule::Limited { requests: 5, .. }));
    assert_eq!(
        backend.unwrap().on_error,
        crate::config::OnBackendError::Local
    );

    // None without one.
    assert_eq!(load("rate_limit: unlimited\n", vec![]).unwrap().1, None);

    for (text, error) in [
        (
            "rate_limit: {backend: 'mysql://u:pw@x'}\n",
            "rate_limit.backend: \"mysql://u:***@x\" is not redis://",
        ),
        (
            "rate_limit: {backend: 'redis://x', on_backend_error: maybe}\n",
            "rate_limit.on_backend_error: \"maybe\" is not local or deny",
        ),
        (
            "rate_limit: {backend: 'redis://x', lease: 0}\n",
            "rate_limit.lease: must be between 1 and 10000",
        ),
        (
            "rate_limit: {backend: 'redis://x', requests: 5}\n",
            "rate_limit.period: required",
        ),
    ] {
        let got = load(text, vec![]).unwrap_err();
        assert!(got.contains(error), "{text}: {got}");
        assert!(!got.contains("pw@"), "{got}");
    }
}

#[test]
fn rate_limit_rule_forms() {
    let rule = |yaml: &str| {
        let f = doc(yaml);
        load_doc(&f, vec![], &Overrides::default())
            .map(|(c, _)| c.rate_limit)
            .map_err(|e| e.to_string())
    };
    let limited = |requests, secs| RateLimitRule::Limited {
        requests,
        period: Duration::from_secs(secs),
    };
    assert_eq!(
        rule("rate_limit: unlimited\n"),
        Ok(RateLimitRule::Unlimited)
    );
    assert_eq!(
        rule("rate_limit: {requests: 5, period: 1m}\n"),
        Ok(limited(5, 60))
    );
    assert_eq!(
        rule("rate_limit: {requests: 5, period: 90}\n"),
        Ok(limited(5, 90))
    );
    assert_eq!(rule("rate_limit:\n"), Ok(limited(1000, 3600)));
    let refused = |yaml: &str, want: &str| {
        let e = rule(yaml).unwrap_err();
        assert!(e.contains(want), "{yaml}: want {want:?} in {e}");
    };
    refused(
        "rate_limit: often\n",
        "rate_limit: rate_limit \"often\" is not",
    );
    refused(
        "rate_limit: {requests: 0, period: 1m}\n",
        "rate_limit.requests: must be at least 1",
    );
    refused(
        "rate_limit: {requests: 1, period: 0s}\n",
        "rate_limit.period: must be between 1s and 366d",
    );
    refused("rate_limit: {requests: 1}\n", "rate_limit.period: required");
    refused("rate_limit: {}\n", "rate_limit.requests: required");
    refused(
        "verify: {token_attempts: {period: soon, requests: -1}}\n",
        "verify.token_attempts.period: not a duration",
    );
}

/// Whether `tokens.files` was written (then every file named must exist) or defaulted.
#[test]
fn token_files_defaulted_or_named() {
    let (c, _) = load(None, vec![], &Overrides::default()).unwrap();
    assert!(c.tokens.files_defaulted);
    assert_eq!(c.tokens.files, [PathBuf::from("config/tokens.yaml")]);
    let env = vec![(
        "TOLLGATE_TOKENS__FILES".to_string(),
        "[config/tokens.yaml]".to_string(),
    )];
    let (c, _) = load(None, env, &Overrides::default()).unwrap();
    assert!(!c.tokens.files_defaulted);
    let (c, _) = load_doc("tokens: {files: []}\n", vec![], &Overrides::default()).unwrap();
    assert!(!c.tokens.files_defaulted && c.tokens.files.is_empty());
}

#[test]
fn tokens_max_lifetime() {
    let (c, _) = load(None, vec![], &Overrides::default()).unwrap();
    assert_eq!(c.tokens.max_lifetime, None, "no limit by default");
    let lifetime = |text: &str| {
        load_doc(&doc(text), vec![], &Overrides::default()).map(|(c, _)| c.tokens.max_lifetime)
    };
    assert_eq!(
        lifetime("tokens: {max_lifetime: 365d}\n").unwrap(),
        Some(Duration::from_secs(365 * 86_400))
    );
    assert_eq!(lifetime("tokens: {max_lifetime: none}\n").unwrap(), None);
    for bad in [
        "tokens: {max_lifetime: 0s}\n",
        "tokens: {max_lifetime: forever}\n",
    ] {
        let e = lifetime(bad).unwrap_err().to_string();
        assert!(e.contains("tokens.max_lifetime"), "{e}");
    }
}

#[test]
fn tokens_rotation_settings() {
    use crate::config::OverlapEnds;
    let (c, _) = load(None, vec![], &Overrides::default()).unwrap();
    assert_eq!(c.tokens.rotation_overlap_ends, OverlapEnds::FirstUse);
    assert_eq!(c.tokens.max_overlap, Duration::from_secs(30 * 86_400));
    let (c, _) = load_doc(
        &doc("tokens: {rotation_overlap_ends: deadline, max_overlap: 2d}\n"),
        vec![],
        &Overrides::default(),
    )
    .unwrap();
    assert_eq!(c.tokens.rotation_overlap_ends, OverlapEnds::Deadline);
    assert_eq!(c.tokens.max_overlap, Duration::from_secs(2 * 86_400));
    for (bad, field) in [
        (
            "tokens: {rotation_overlap_ends: never}\n",
            "tokens.rotation_overlap_ends",
        ),
        ("tokens: {max_overlap: 0s}\n", "tokens.max_overlap"),
        ("tokens: {max_overlap: 400d}\n", "tokens.max_overlap"),
    ] {
        let e = load_doc(&doc(bad), vec![], &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains(field), "{bad}: {e}");
    }
}

#[test]
fn public_paths_defaults_values_and_refusals() {
    let (c, _) = load(None, vec![], &Overrides::default()).unwrap();
    assert!(c.public.is_empty());
    assert_eq!(
        c.public_rate_limit,
        RateLimitRule::Limited {
            requests: 600,
            period: Duration::from_secs(60)
        }
    );

    let f = doc("public: [{path: /packages.json, access: read}, {path: /health}, {path: '/drop/**', access: write}]\npublic_rate_limit: unlimited\n");
    let (c, _) = load_doc(&f, vec![], &Overrides::default()).unwrap();
    let got: Vec<(&str, Permission)> = c
        .public
        .iter()
        .map(|p| (p.pattern.as_str(), p.access))
        .collect();
    assert_eq!(
        got,
        [
            ("/packages.json", Permission::Read),
            ("/health", Permission::Read),
            ("/drop/**", Permission::Write)
        ]
    );
    assert_eq!(c.public_rate_limit, RateLimitRule::Unlimited);

    let env = vec![(
        "TOLLGATE_PUBLIC".to_string(),
        "[{path: /simple}]".to_string(),
    )];
    let (c, _) = load(None, env, &Overrides::default()).unwrap();
    assert_eq!(c.public.len(), 1);

    let f = doc(concat!(
        "public: [{path: /a, acces: read}, {access: read}, {path: a}, {path: /b, access: none},",
        " {path: '/x/../y'}]\n",
        "public_rate_limit: {requests: 0, period: 1m}\n"
    ));
    let e = load_doc(&f, vec![], &Overrides::default())
        .unwrap_err()
        .to_string();
    for expected in [
        "public[0].acces: unknown field",
        "public[1].path: required",
        "public[2].path",
        "public[3].access: \"none\" is not one of read, write",
        "public[4].path",
        "public_rate_limit.requests",
    ] {
        assert!(e.contains(expected), "{expected} in {e}");
    }
    let e = load_doc("public: /health\n", vec![], &Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("public: expected a list"), "{e}");
}
