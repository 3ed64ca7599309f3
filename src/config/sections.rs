//! One builder per configuration section: each takes its fields from a [`Section`], converts
//! and checks them, and records every problem in the collector (unknown keys included, when
//! the section finishes).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_yaml_ng::Value;

use super::fields::{as_duration, as_string, kind_of, Section};
use super::{
    CacheConfig, HashParams, LimitsConfig, LogConfig, LogFormat, PublicPath, TlsConfig,
    TokensConfig, UpstreamConfig, VerifyConfig,
};
use crate::token::{Permission, RateLimitRule, RoutePattern};

/// A listen address such as `0.0.0.0:8080`.
pub(super) fn socket_addr(v: Value) -> Result<SocketAddr, String> {
    let s = as_string(v)?;
    s.trim()
        .parse()
        .map_err(|_| format!("{s:?} is not an address such as 0.0.0.0:8080"))
}

/// A proxy listening address: as [`socket_addr`], with a port. Port 0 (any free port) would
/// give every proxy worker a port of its own (each binds its own socket, `conn::Guarded`).
pub(super) fn proxy_addr(v: Value) -> Result<SocketAddr, String> {
    let addr = socket_addr(v)?;
    if addr.port() == 0 {
        return Err(format!(
            "{addr} has port 0: the proxy needs a fixed port (every proxy thread listens on it)"
        ));
    }
    Ok(addr)
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
    let listen = s.take_with("listen", None, |v| proxy_addr(v).map(Some));
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
            super::backend_of(&url).map_err(|e| format!("database URL: {e}"))?;
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
    let max_lifetime = s.take_with("max_lifetime", None, |v| {
        if matches!(&v, Value::String(w) if w.trim() == "none") {
            return Ok(None);
        }
        match as_duration(v)? {
            d if d < Duration::from_secs(1) => Err("must be at least 1s, or none".to_string()),
            d => Ok(Some(d)),
        }
    });
    let rotation_overlap_ends = s.take_with(
        "rotation_overlap_ends",
        super::OverlapEnds::FirstUse,
        |v| match as_string(v)?.as_str() {
            "first_use" => Ok(super::OverlapEnds::FirstUse),
            "deadline" => Ok(super::OverlapEnds::Deadline),
            other => Err(format!("{other:?} is not first_use or deadline")),
        },
    );
    let max_overlap =
        s.take_with(
            "max_overlap",
            Duration::from_secs(30 * 86_400),
            |v| match as_duration(v)? {
                d if d < Duration::from_secs(1) || d > Duration::from_secs(366 * 86_400) => {
                    Err("must be between 1s and 366d".to_string())
                }
                d => Ok(d),
            },
        );
    TokensConfig {
        files,
        files_defaulted,
        database,
        poll_interval,
        identity_headers,
        token_usernames,
        max_lifetime,
        rotation_overlap_ends,
        max_overlap,
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
    s.section(key, |r| rule_fields(r, default, false))
}

/// `requests` and `period` of a rule section; both may be absent (giving `default`) only when
/// `optional`.
pub(super) fn rule_fields(
    r: &mut Section<'_>,
    default: RateLimitRule,
    optional: bool,
) -> RateLimitRule {
    {
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
            _ if optional && !required[0].1 && !required[1].1 => default,
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
    }
}

/// `public`: a list of `{path, access}`, paths served without a token. Each entry is a section
/// of its own (`public[0].path`), so that an unknown key is refused like anywhere else.
pub(super) fn build_public(top: &mut Section<'_>) -> Vec<PublicPath> {
    let field = top.field("public");
    let items = top.take_with("public", Vec::new(), |v| match v {
        Value::Sequence(items) => Ok(items),
        other => Err(format!(
            "expected a list of {{path, access}}, found {}",
            kind_of(&other)
        )),
    });
    let col = top.collector();
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let mut s = Section::new(col, &format!("{field}[{i}]"), item);
        let given = s.peek("path").is_some_and(|v| !v.is_null());
        let pattern = s.take_with("path", None, |v| {
            RoutePattern::parse(&as_string(v)?).map(Some)
        });
        let access = s.take_with("access", Permission::Read, |v| match as_string(v)?.trim() {
            "read" => Ok(Permission::Read),
            "write" => Ok(Permission::Write),
            other => Err(format!("{other:?} is not one of read, write")),
        });
        match pattern {
            Some(pattern) => out.push(PublicPath { pattern, access }),
            None if !given => {
                let f = s.field("path");
                s.collector().error(&f, "required");
            }
            None => {}
        }
        s.finish();
    }
    out
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
        match crate::token::normalize_path(&p) {
            Ok(n) if n.trim_end_matches('/') == p.trim_end_matches('/') => Ok(Some(p)),
            _ => Err(format!("{p:?} must be a normalized path such as /index/")),
        }
    });
    let layouts = super::scopes::build_layouts(s);
    let listing_max_body = super::scopes::build_listing_max_body(s);
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
        layouts,
        listing_max_body,
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
mod tests;
