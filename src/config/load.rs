//! Layering (defaults ← file ← `TOLLGATE_*` environment ← flags) and validation.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_yaml_ng::{Mapping, Value};

use super::fields::{
    as_duration, as_string, kind_of, Collector, ConfigError, ConfigErrors, Origins, Section,
};
use super::{
    CacheConfig, Config, HashParams, LimitsConfig, LogConfig, LogFormat, TlsConfig, TokensConfig,
    UpstreamConfig, VerifyConfig,
};

/// The configuration file used when none is named and it exists.
pub const DEFAULT_CONFIG_PATH: &str = "config/tollgate.yaml";

/// Top-level keys; an environment variable `TOLLGATE_<KEY>…` outside these is not ours (Kubernetes
/// injects `TOLLGATE_PORT`, `TOLLGATE_SERVICE_HOST`… for a Service named tollgate) and is ignored.
const TOP_LEVEL: &[&str] = &[
    "listen",
    "admin_listen",
    "upstream",
    "realm",
    "whoami_path",
    "tokens",
    "cache",
    "verify",
    "hashing",
    "log",
    "threads",
    "rate_limit",
    "shutdown",
    "tls",
    "limits",
];

/// Values given on the command line, as `(dotted.field, value)` pairs with the flag's name.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `(flag, field, value)`: e.g. `("--listen", "listen", "0.0.0.0:8080")`.
    pub values: Vec<(String, String, String)>,
}

fn set_path(root: &mut Value, path: &[&str], value: Value) -> Result<(), String> {
    let mut cur = root;
    for (i, key) in path.iter().enumerate() {
        if cur.is_null() {
            *cur = Value::Mapping(Mapping::new());
        }
        let map = match cur {
            Value::Mapping(m) => m,
            other => {
                return Err(format!(
                    "cannot set {}: {} is {}",
                    path.join("."),
                    path[..i].join("."),
                    kind_of(other)
                ))
            }
        };
        let k = Value::String((*key).to_string());
        if i + 1 == path.len() {
            map.insert(k, value);
            return Ok(());
        }
        cur = map.entry(k).or_insert(Value::Null);
    }
    Ok(())
}

/// A value from the environment or a flag: YAML syntax where it parses (lists, numbers),
/// else the plain string.
fn scalar(raw: &str) -> Value {
    match serde_yaml_ng::from_str::<Value>(raw) {
        Ok(Value::String(_)) | Err(_) => Value::String(raw.to_string()),
        Ok(v @ (Value::Sequence(_) | Value::Number(_) | Value::Bool(_))) => v,
        Ok(_) => Value::String(raw.to_string()),
    }
}

/// Loads the configuration from `file` (if any), the environment `env`, and `overrides`.
/// Returns the config and warnings (e.g. ignored environment variables), or every problem.
pub fn load(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    overrides: &Overrides,
) -> Result<(Config, Vec<String>), ConfigErrors> {
    let mut col = Collector::default();
    let mut warnings = Vec::new();
    let mut root = match file {
        Some(path) => {
            col.origins.default = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigErrors(vec![ConfigError {
                    origin: path.display().to_string(),
                    field: String::new(),
                    reason: format!("cannot read file: {e}"),
                }])
            })?;
            serde_yaml_ng::from_str::<Value>(&text).map_err(|e| {
                ConfigErrors(vec![ConfigError {
                    origin: path.display().to_string(),
                    field: String::new(),
                    reason: format!("not valid YAML: {e}"),
                }])
            })?
        }
        None => {
            col.origins.default = "built-in defaults".into();
            Value::Null
        }
    };

    let mut env: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("TOLLGATE_"))
        .collect();
    env.sort();
    for (name, raw) in env {
        let lower = name["TOLLGATE_".len()..].to_ascii_lowercase();
        let path: Vec<&str> = lower.split("__").collect();
        if !TOP_LEVEL.contains(&path[0]) {
            if !matches!(path[0], "config" | "bootstrap_token") && !path[0].starts_with("test_") {
                warnings.push(format!(
                    "ignoring environment variable {name}: not a config field"
                ));
            }
            continue;
        }
        let field = path.join(".");
        col.origins
            .by_field
            .insert(field.clone(), format!("env {name}"));
        if let Err(reason) = set_path(&mut root, &path, scalar(&raw)) {
            col.error(&field, reason);
        }
    }
    for (flag, field, raw) in &overrides.values {
        col.origins.by_field.insert(field.clone(), flag.clone());
        let path: Vec<&str> = field.split('.').collect();
        if let Err(reason) = set_path(&mut root, &path, scalar(raw)) {
            col.error(field, reason);
        }
    }

    let mut config = build(&mut col, root);
    if col.errors.is_empty() {
        config.origins = col.origins;
        Ok((config, warnings))
    } else {
        Err(ConfigErrors(col.errors))
    }
}

fn top_value<'a>(s: &'a Section<'_>, key: &str) -> Option<&'a Value> {
    s.peek(key)
}

fn socket_addr(v: Value) -> Result<SocketAddr, String> {
    let s = as_string(v)?;
    s.trim()
        .parse()
        .map_err(|_| format!("{s:?} is not an address such as 0.0.0.0:8080"))
}

fn url_path(v: Value) -> Result<String, String> {
    let s = as_string(v)?;
    if !s.starts_with('/') || s.contains(['?', '#', ' ']) {
        return Err(format!(
            "{s:?} must be an absolute path such as /_tollgate/whoami"
        ));
    }
    Ok(s)
}

fn build(col: &mut Collector, root: Value) -> Config {
    let source = col.origins.default.clone();
    let mut top = Section::new(col, "", root);
    let listen = top.take_with("listen", ([0, 0, 0, 0], 8080).into(), socket_addr);
    let admin_listen = top.take_with("admin_listen", ([127, 0, 0, 1], 9180).into(), socket_addr);
    let realm = top.take_with("realm", "packages".to_string(), |v| {
        let s = as_string(v)?;
        if s.is_empty() || s.chars().any(|c| c == '"' || c == '\\' || c.is_control()) {
            return Err(
                "must be non-empty without quotes, backslashes or control characters".into(),
            );
        }
        Ok(s)
    });
    let whoami_path = top.take_with("whoami_path", "/_tollgate/whoami".to_string(), url_path);
    let threads = top.take_with("threads", 0usize, |v| {
        serde_yaml_ng::from_value::<usize>(v).map_err(|e| e.to_string())
    });
    let rate_limit = top.take(
        "rate_limit",
        crate::token::RateLimitRule::Limited {
            requests: 1000,
            period: Duration::from_secs(3600),
        },
    );
    let shutdown_grace = top.section("shutdown", |s| {
        s.take_with("grace_period", Duration::from_secs(10), as_duration)
    });
    let tls_given = !matches!(top_value(&top, "tls"), None | Some(Value::Null));
    let tls = top.section("tls", |s| {
        let listen = s.take_with("listen", None, |v| socket_addr(v).map(Some));
        let cert_file = s.take_with("cert_file", None, |v| as_string(v).map(Some));
        let key_file = s.take_with("key_file", None, |v| as_string(v).map(Some));
        let admin = s.take("admin", false);
        if !tls_given {
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
    });
    let upstream = top.section("upstream", build_upstream);
    let limits = top.section("limits", build_limits);
    let tokens = top.section("tokens", |s| {
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
            database,
            poll_interval,
            identity_headers,
            token_usernames,
        }
    });
    let cache = top.section("cache", |s| CacheConfig {
        capacity: s.take("capacity", 100_000u64),
        ttl: s.take_with("ttl", Duration::from_secs(300), as_duration),
        negative_ttl: s.take_with("negative_ttl", Duration::from_secs(30), as_duration),
    });
    let verify = top.section("verify", |s| {
        let max_concurrent: usize = s.take("max_concurrent", 0);
        let max_queue: usize = s.take("max_queue", 256);
        let token_attempts = s.take(
            "token_attempts",
            crate::token::RateLimitRule::Limited {
                requests: 10,
                period: Duration::from_secs(60),
            },
        );
        let client_attempts = s.take(
            "client_attempts",
            crate::token::RateLimitRule::Limited {
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
    });
    let hashing = top.section("hashing", |s| {
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
    });
    let log = top.section("log", |s| LogConfig {
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
    });
    top.finish();
    Config {
        source,
        origins: Origins::default(),
        listen,
        admin_listen,
        upstream,
        realm,
        whoami_path,
        tokens,
        cache,
        verify,
        hashing,
        log,
        threads: if threads == 0 {
            num_cpus::get().max(1)
        } else {
            threads
        },
        rate_limit,
        shutdown_grace,
        tls,
        limits,
    }
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

fn build_limits(s: &mut Section<'_>) -> LimitsConfig {
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

fn build_upstream(s: &mut Section<'_>) -> UpstreamConfig {
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

    fn write(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn defaults_without_a_file() {
        let (c, w) = load(None, vec![], &Overrides::default()).unwrap();
        assert!(w.is_empty());
        assert_eq!(c.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.admin_listen, "127.0.0.1:9180".parse().unwrap());
        assert_eq!(c.upstream.host_header, "127.0.0.1:80");
        assert_eq!(c.tokens.token_usernames, ["token", "__token__"]);
        assert_eq!(c.hashing, HashParams::default());
        assert_eq!(c.source, "built-in defaults");
    }

    #[test]
    fn debug_redacts_the_database_password() {
        let env = vec![(
            "TOLLGATE_TOKENS__DATABASE".to_string(),
            "postgres://tollgate:hunter2secret@db/tollgate".to_string(),
        )];
        let (c, _) = load(None, env, &Overrides::default()).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2secret"), "{shown}");
        assert!(
            shown.contains("postgres://tollgate:***@db/tollgate"),
            "{shown}"
        );
    }

    #[test]
    fn env_over_file_and_flags_over_env() {
        let f = write(
            "listen: 127.0.0.1:1000\nrealm: file\nupstream: {url: 'http://127.0.0.1:81/repo/'}\n",
        );
        let env = vec![
            ("TOLLGATE_LISTEN".to_string(), "127.0.0.1:2000".to_string()),
            ("TOLLGATE_REALM".to_string(), "env".to_string()),
            ("TOLLGATE_CACHE__TTL".to_string(), "10s".to_string()),
            (
                "TOLLGATE_TOKENS__FILES".to_string(),
                "[a.yaml, b.yaml]".to_string(),
            ),
            ("TOLLGATE_PORT".to_string(), "tcp://10.0.0.1:80".to_string()),
            ("OTHER".to_string(), "x".to_string()),
        ];
        let flags = Overrides {
            values: vec![("--listen".into(), "listen".into(), "127.0.0.1:3000".into())],
        };
        let (c, w) = load(Some(f.path()), env, &flags).unwrap();
        assert_eq!(c.listen, "127.0.0.1:3000".parse().unwrap());
        assert_eq!(c.realm, "env");
        assert_eq!(c.cache.ttl, Duration::from_secs(10));
        assert_eq!(
            c.tokens.files,
            [PathBuf::from("a.yaml"), PathBuf::from("b.yaml")]
        );
        assert_eq!(c.upstream.path_prefix, "/repo");
        assert_eq!(c.upstream.host_header, "127.0.0.1:81");
        assert_eq!(w.len(), 1, "{w:?}");
    }

    #[test]
    fn every_problem_at_once_with_origin() {
        let f = write(
            "listen: nowhere\nupstream:\n  url: ftp://x\n  connect_timeout: soon\n  colour: red\ncache: {capacity: -1}\nbogus: 1\n",
        );
        let env = vec![("TOLLGATE_REALM".to_string(), "a\"b".to_string())];
        let errs = load(Some(f.path()), env, &Overrides::default()).unwrap_err();
        let text = errs.to_string();
        let p = f.path().display().to_string();
        for want in [
            format!("{p}: listen: "),
            format!("{p}: upstream.url: scheme \"ftp\""),
            format!("{p}: upstream.connect_timeout: not a duration"),
            format!("{p}: upstream.colour: unknown field"),
            format!("{p}: cache.capacity: "),
            format!("{p}: bogus: unknown field"),
            "env TOLLGATE_REALM: realm: ".to_string(),
        ] {
            assert!(text.contains(&want), "missing {want:?} in:\n{text}");
        }
        assert_eq!(errs.0.len(), 7, "{text}");
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
    fn unreadable_and_unparseable_files() {
        let e = load(
            Some(Path::new("/nonexistent/t.yaml")),
            vec![],
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("cannot read file"));
        let f = write("listen: [\n");
        let e = load(Some(f.path()), vec![], &Overrides::default()).unwrap_err();
        assert!(e.to_string().contains("not valid YAML"), "{e}");
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

    /// Loading reads the file and the environment only: a name that does not resolve and
    /// certificate files that do not exist are for start-up (and `check-config`) to find.
    #[test]
    fn loading_resolves_nothing_and_reads_no_certificate() {
        let f = write(
            "upstream: {url: 'https://no-such-host.invalid:8443/repo'}\n\
             tls: {listen: 127.0.0.1:0, cert_file: /nonexistent/c.pem, key_file: /nonexistent/k.pem}\n",
        );
        let (c, _) = load(Some(f.path()), vec![], &Overrides::default()).unwrap();
        assert_eq!(c.upstream.host, "no-such-host.invalid");
        assert_eq!(c.upstream.port, 8443);
        assert_eq!(c.tls.unwrap().cert_file, "/nonexistent/c.pem");
        let p = f.path().display().to_string();
        assert_eq!(c.origins.of("upstream.url"), p);
        let env = vec![(
            "TOLLGATE_UPSTREAM__URL".to_string(),
            "http://no-such-host.invalid".to_string(),
        )];
        let (c, _) = load(Some(f.path()), env, &Overrides::default()).unwrap();
        assert_eq!(
            c.origins.problem("upstream.url", "x").to_string(),
            "env TOLLGATE_UPSTREAM__URL: upstream.url: x"
        );
    }
}
