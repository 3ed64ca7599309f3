//! One builder per configuration section: each takes its fields from a [`Section`], converts
//! and checks them, and records every problem in the collector (unknown keys included, when
//! the section finishes).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_yaml_ng::Value;

use super::fields::{as_duration, as_string, kind_of, Section};
use super::{
    CacheConfig, HashParams, LimitsConfig, LogConfig, LogFormat, TlsConfig, TokensConfig,
    UpstreamConfig, VerifyConfig,
};
use crate::token::RateLimitRule;

/// A listen address such as `0.0.0.0:8080`.
pub(super) fn socket_addr(v: Value) -> Result<SocketAddr, String> {
    let s = as_string(v)?;
    s.trim()
        .parse()
        .map_err(|_| format!("{s:?} is not an address such as 0.0.0.0:8080"))
}

/// An absolute URL path without query or fragment.
pub(super) fn url_path(v: Value) -> Result<String, String> {
    let s = as_string(v)?;
    if !s.starts_with('/') || s.contains(['?', '#', ' ']) {
        return Err(format!(
            "{s:?} must be an absolute path such as /_tollgate/whoami"
        ));
    }
    Ok(s)
}

/// A whole number of at least 0 (a count).
fn count(v: Value) -> Result<usize, String> {
    match &v {
        Value::Number(n) => n
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| format!("{n} is not a whole number of at least 0")),
        other => Err(format!("expected a whole number, found {}", kind_of(other))),
    }
}

/// `shutdown`: the grace period for in-flight requests.
pub(super) fn build_shutdown(s: &mut Section<'_>) -> Duration {
    s.take_with("grace_period", Duration::from_secs(10), as_duration)
}

/// `tls`: all of listen, cert_file and key_file when the section is `given`, else `None`.
/// The files are not read here (see `crate::app::preflight`).
pub(super) fn build_tls(s: &mut Section<'_>, given: bool) -> Option<TlsConfig> {
    let listen = s.take_with("listen", None, |v| socket_addr(v).map(Some));
    let cert_file = s.take_with("cert_file", None, |v| as_string(v).map(Some));
    let key_file = s.take_with("key_file", None, |v| as_string(v).map(Some));
    let admin = s.take("admin", false);
    if !given {
        return None;
    }
    let mut missing = |field: &str| {
        let f = s.field(field);
        s.collector().error(&f, "required when tls is set");
    };
    match (listen, cert_file, key_file) {
        (Some(listen), Some(cert_file), Some(key_file)) => Some(TlsConfig {
            listen,
            cert_file,
            key_file,
            admin,
        }),
        (l, c, k) => {
            if l.is_none() {
                missing("listen");
            }
            if c.is_none() {
                missing("cert_file");
            }
            if k.is_none() {
                missing("key_file");
            }
            None
        }
    }
}

/// `tokens`: token files, the database, and how tokens are presented.
pub(super) fn build_tokens(s: &mut Section<'_>) -> TokensConfig {
    let files_defaulted = matches!(s.peek("files"), None | Some(Value::Null));
    let files: Vec<PathBuf> = s.take("files", vec![PathBuf::from("config/tokens.yaml")]);
    let database = s.take_with(
        "database",
        Some("sqlite://data/tollgate.db".to_string()),
        |v| {
            let url = as_string(v)?;
            if url == "none" {
                return Ok(None);
            }
            crate::store::db::backend_of(&url).map_err(|e| e.to_string())?;
            Ok(Some(url))
        },
    );
    let poll_interval = s.take_with("poll_interval", Duration::from_secs(5), as_duration);
    if poll_interval < Duration::from_millis(100) {
        let f = s.field("poll_interval");
        s.collector().error(&f, "must be at least 100ms");
    }
    let identity_headers = s.take("identity_headers", true);
    let token_usernames: Vec<String> = s.take(
        "token_usernames",
        vec!["token".to_string(), "__token__".to_string()],
    );
    if token_usernames
        .iter()
        .any(|u| u.is_empty() || u.contains(':'))
    {
        let f = s.field("token_usernames");
        s.collector()
            .error(&f, "usernames must be non-empty and contain no ':'");
    }
    TokensConfig {
        files,
        files_defaulted,
        database,
        poll_interval,
        identity_headers,
        token_usernames,
    }
}

/// `cache`: the verification cache.
pub(super) fn build_cache(s: &mut Section<'_>) -> CacheConfig {
    CacheConfig {
        capacity: s.take("capacity", 100_000u64),
        ttl: s.take_with("ttl", Duration::from_secs(300), as_duration),
        negative_ttl: s.take_with("negative_ttl", Duration::from_secs(30), as_duration),
    }
}

/// `verify`: bounds on argon2 work.
pub(super) fn build_verify(s: &mut Section<'_>) -> VerifyConfig {
    let max_concurrent: usize = s.take("max_concurrent", 0);
    let max_queue: usize = s.take("max_queue", 256);
    let token_attempts = take_rule(
        s,
        "token_attempts",
        RateLimitRule::Limited {
            requests: 10,
            period: Duration::from_secs(60),
        },
    );
    let client_attempts = take_rule(
        s,
        "client_attempts",
        RateLimitRule::Limited {
            requests: 60,
            period: Duration::from_secs(60),
        },
    );
    let nice = s.take_with("nice", 10i32, |v| {
        let n: i32 = serde_yaml_ng::from_value(v).map_err(|e| e.to_string())?;
        if (0..=19).contains(&n) {
            Ok(n)
        } else {
            Err(format!("{n} is not a nice value from 0 to 19"))
        }
    });
    VerifyConfig {
        token_attempts,
        client_attempts,
        nice,
        max_concurrent: if max_concurrent == 0 {
            num_cpus::get().max(1)
        } else {
            max_concurrent
        },
        max_queue,
    }
}

/// `hashing`: argon2id parameters for new hashes.
pub(super) fn build_hashing(s: &mut Section<'_>) -> HashParams {
    let d = HashParams::default();
    let p = HashParams {
        memory_kib: s.take("memory_kib", d.memory_kib),
        iterations: s.take("iterations", d.iterations),
        parallelism: s.take("parallelism", d.parallelism),
    };
    if let Err(e) = argon2::Params::new(p.memory_kib, p.iterations, p.parallelism, None) {
        let f = s.field("memory_kib");
        s.collector()
            .error(&f, format!("invalid argon2 parameters: {e}"));
    }
    p
}

/// `log`: format and filter.
pub(super) fn build_log(s: &mut Section<'_>) -> LogConfig {
    LogConfig {
        format: s.take_with("format", LogFormat::Json, |v| {
            match as_string(v)?.as_str() {
                "json" => Ok(LogFormat::Json),
                "text" => Ok(LogFormat::Text),
                other => Err(format!("{other:?} is not one of json, text")),
            }
        }),
        level: s.take_with("level", "info".to_string(), |v| {
            let s = as_string(v)?;
            tracing_subscriber::EnvFilter::try_new(&s)
                .map(|_| s.clone())
                .map_err(|e| format!("not a log filter: {e}"))
        }),
    }
}

/// A rate-limit rule (`rate_limit`, `verify.token_attempts`, `verify.client_attempts`):
/// `unlimited`, or `{requests: N, period: 1h}` taken as a section of its own, so that a key
/// other than those two is refused like anywhere else.
pub(super) fn take_rule(s: &mut Section<'_>, key: &str, default: RateLimitRule) -> RateLimitRule {
    if !matches!(s.peek(key), Some(Value::Mapping(_))) {
        return s.take(key, default);
    }
    s.section(key, |r| {
        let given = |r: &Section<'_>, k: &str| r.peek(k).is_some_and(|v| !v.is_null());
        let required = [
            ("requests", given(r, "requests")),
            ("period", given(r, "period")),
        ];
        let requests: Option<u32> = r.take_with("requests", None, |v| match count(v) {
            Ok(0) => Err("must be at least 1".into()),
            Ok(n) => u32::try_from(n)
                .map(Some)
                .map_err(|_| format!("{n} is more than {}", u32::MAX)),
            Err(e) => Err(e),
        });
        let period = r.take_with("period", None, |v| match as_duration(v)? {
            p if p < Duration::from_secs(1) || p > Duration::from_secs(366 * 86400) => {
                Err("must be between 1s and 366d".into())
            }
            p => Ok(Some(p)),
        });
        match (requests, period) {
            (Some(requests), Some(period)) => RateLimitRule::Limited { requests, period },
            _ => {
                for (name, present) in required {
                    if !present {
                        let f = r.field(name);
                        r.collector()
                            .error(&f, "required (or write `unlimited` for no limit)");
                    }
                }
                default
            }
        }
    })
}

/// `limits`: client connection deadlines and caps.
pub(super) fn build_limits(s: &mut Section<'_>) -> LimitsConfig {
    let d = LimitsConfig::default();
    let timeout = |v: Value| {
        let t = as_duration(v)?;
        if t < Duration::from_millis(100) {
            return Err("must be at least 100ms".to_string());
        }
        Ok(t)
    };
    let header_timeout = s.take_with("header_timeout", d.header_timeout, timeout);
    let keepalive_timeout = s.take_with("keepalive_timeout", d.keepalive_timeout, timeout);
    let max_connections = s.take_with("max_connections", d.max_connections, |v| {
        if matches!(&v, Value::String(a) if a.trim() == "auto") {
            return Ok(None);
        }
        match count(v) {
            Ok(0) => Err("must be at least 1, or auto (derived from the open-file limit)".into()),
            Ok(n) => Ok(Some(n)),
            Err(e) => Err(format!("{e}, or auto")),
        }
    });
    let max_connections_per_ip =
        s.take_with("max_connections_per_ip", d.max_connections_per_ip, |v| {
            count(v).map_err(|e| format!("{e} (0 turns the per-address cap off)"))
        });
    LimitsConfig {
        header_timeout,
        keepalive_timeout,
        max_connections,
        max_connections_per_ip,
    }
}

/// `upstream`: the package store (its host is not resolved here).
pub(super) fn build_upstream(s: &mut Section<'_>) -> UpstreamConfig {
    let url = s.take_with("url", "http://127.0.0.1:80".to_string(), as_string);
    let host: Option<String> = s.take("host", None);
    let connect_timeout = s.take_with("connect_timeout", Duration::from_secs(2), as_duration);
    let read_timeout = s.take_with("read_timeout", Duration::from_secs(60), as_duration);
    let resolve_interval = s.take_with("resolve_interval", Some(Duration::from_secs(30)), |v| {
        if matches!(&v, Value::String(w) if w.trim() == "never") {
            return Ok(None);
        }
        match as_duration(v)? {
            Duration::ZERO => Ok(None),
            d if d < Duration::from_secs(1) => {
                Err("must be at least 1s, or 0 (never) to resolve only at start".into())
            }
            d => Ok(Some(d)),
        }
    });
    let cargo_index = s.take_with("cargo_index", None, |v| {
        let p = url_path(v)?;
        match crate::auth::normalize_path(&p) {
            Ok(n) if n.trim_end_matches('/') == p.trim_end_matches('/') => Ok(Some(p)),
            _ => Err(format!("{p:?} must be a normalized path such as /index/")),
        }
    });
    let field = s.field("url");
    let parsed = parse_upstream(&url, host.as_deref()).unwrap_or_else(|reason| {
        s.collector().error(&field, reason);
        ParsedUpstream {
            tls: false,
            host: "127.0.0.1".into(),
            port: 80,
            host_header: String::new(),
            sni: String::new(),
            path_prefix: String::new(),
        }
    });
    UpstreamConfig {
        url,
        tls: parsed.tls,
        host: parsed.host,
        port: parsed.port,
        host_header: parsed.host_header,
        sni: parsed.sni,
        path_prefix: parsed.path_prefix,
        connect_timeout,
        read_timeout,
        resolve_interval,
        cargo_index,
    }
}

/// The parts of an upstream URL (and `upstream.host`) the proxy needs. The host is kept as
/// written: resolving it is not the loader's business (see `crate::upstream`).
#[derive(Debug)]
struct ParsedUpstream {
    tls: bool,
    host: String,
    port: u16,
    host_header: String,
    sni: String,
    path_prefix: String,
}

fn parse_upstream(url: &str, host_override: Option<&str>) -> Result<ParsedUpstream, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        Some(other) => return Err(format!("scheme {other:?} is not http or https")),
        None => return Err(format!("{url:?} needs a scheme, e.g. http://{url}")),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| format!("{url:?} has no host"))?;
    if authority.as_str().contains('@') {
        return Err("credentials in the upstream URL are not supported".into());
    }
    if uri.query().is_some() {
        return Err("the upstream URL cannot have a query".into());
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let path_prefix = uri.path().trim_end_matches('/').to_string();
    let (host_header, sni) = match host_override {
        Some(h) if h.is_empty() || http::HeaderValue::from_str(h).is_err() || h.contains(' ') => {
            return Err(format!("upstream.host {h:?} is not a valid Host header"))
        }
        Some(h) => (h.to_string(), h.split(':').next().unwrap_or(h).to_string()),
        None => (authority.as_str().to_string(), host.to_string()),
    };
    Ok(ParsedUpstream {
        tls,
        host: host.to_string(),
        port,
        host_header,
        sni,
        path_prefix,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{load, Overrides};

    fn write(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn limits_defaults_values_and_refusals() {
        let (c, _) = load(None, vec![], &Overrides::default()).unwrap();
        assert_eq!(c.limits, LimitsConfig::default());
        assert_eq!(c.limits.header_timeout, Duration::from_secs(10));
        assert_eq!(c.limits.keepalive_timeout, Duration::from_secs(60));
        assert_eq!(c.limits.max_connections, None);
        assert_eq!(c.limits.max_connections_per_ip, 256);

        let f = write(
            "limits: {header_timeout: 2s, keepalive_timeout: 500ms, max_connections: 30, max_connections_per_ip: 0}\n",
        );
        let (c, _) = load(Some(f.path()), vec![], &Overrides::default()).unwrap();
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
        let (c, _) = load(Some(f.path()), env, &Overrides::default()).unwrap();
        assert_eq!(c.limits.max_connections, None);

        let f = write(
            "limits:\n  header_timeout: 0s\n  keepalive_timeout: 10ms\n  max_connections: 0\n  max_connections_per_ip: -1\n  idle: 5s\n",
        );
        let env = vec![(
            "TOLLGATE_LIMITS__HEADER_TIMEOUT".to_string(),
            "soon".to_string(),
        )];
        let errs = load(Some(f.path()), env, &Overrides::default()).unwrap_err();
        let text = errs.to_string();
        let p = f.path().display().to_string();
        for want in [
            "env TOLLGATE_LIMITS__HEADER_TIMEOUT: limits.header_timeout: not a duration"
                .to_string(),
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
        let f = write(
            "upstream: {colour: 1}\n\
             tokens: {colour: 1}\n\
             cache: {colour: 1}\n\
             verify:\n  colour: 1\n  token_attempts: {requests: 1, period: 1m, colour: 1}\n  \
             client_attempts: {requests: 1, period: 1m, colour: 1}\n\
             hashing: {colour: 1}\n\
             log: {colour: 1}\n\
             shutdown: {colour: 1}\n\
             tls: {listen: 127.0.0.1:0, cert_file: c, key_file: k, colour: 1}\n\
             limits: {colour: 1}\n\
             rate_limit: {requests: 5, period: 1h, backend: x, colour: red}\n\
             colour: 1\n",
        );
        let errs = load(Some(f.path()), vec![], &Overrides::default()).unwrap_err();
        let p = f.path().display().to_string();
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
            "rate_limit.backend",
            "rate_limit.colour",
            "colour",
        ]
        .iter()
        .map(|field| format!("{p}: {field}: unknown field"))
        .collect();
        want.sort();
        assert_eq!(got, want);

        // From the environment too.
        let f = write("rate_limit: {requests: 5, period: 1h}\n");
        let env = vec![("TOLLGATE_RATE_LIMIT__BACKEND".to_string(), "x".to_string())];
        let errs = load(Some(f.path()), env, &Overrides::default()).unwrap_err();
        assert_eq!(
            errs.to_string(),
            "env TOLLGATE_RATE_LIMIT__BACKEND: rate_limit.backend: unknown field"
        );
    }

    #[test]
    fn rate_limit_rule_forms() {
        let rule = |yaml: &str| {
            let f = write(yaml);
            load(Some(f.path()), vec![], &Overrides::default())
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

    /// The default token file may be absent; a file the user named, even the same path,
    /// may not.
    #[test]
    fn an_absent_default_token_file_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let absent = dir.path().join("config/tokens.yaml");
        let (c, _) = load(None, vec![], &Overrides::default()).unwrap();
        assert!(c.tokens.files_defaulted);
        let defaulted = crate::config::TokensConfig {
            files: vec![absent.clone()],
            ..c.tokens.clone()
        };
        assert!(defaulted.files_to_read().is_empty());
        std::fs::create_dir_all(absent.parent().unwrap()).unwrap();
        std::fs::write(&absent, "tokens: []\n").unwrap();
        assert_eq!(defaulted.files_to_read(), [absent]);

        let env = vec![(
            "TOLLGATE_TOKENS__FILES".to_string(),
            "[config/tokens.yaml]".to_string(),
        )];
        let (c, _) = load(None, env, &Overrides::default()).unwrap();
        assert!(!c.tokens.files_defaulted);
        let named = crate::config::TokensConfig {
            files: vec![dir.path().join("nowhere.yaml")],
            ..c.tokens
        };
        assert_eq!(named.files_to_read(), [dir.path().join("nowhere.yaml")]);
    }
}
