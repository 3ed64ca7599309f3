//! Layering (defaults ← file ← `TOLLGATE_*` environment ← flags) and validation.

use std::path::Path;
use std::time::Duration;

use serde_yaml_ng::{Mapping, Value};

use super::fields::{as_string, kind_of, Collector, ConfigError, ConfigErrors, Origins, Section};
use super::sections::{
    build_cache, build_hashing, build_limits, build_log, build_public, build_shutdown, build_tls,
    build_tokens, build_upstream, build_verify, proxy_addr, socket_addr, take_rule, url_path,
};
use super::shared_backend::take_rate_limit;
use super::Config;
use crate::token::RateLimitRule;

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
    "public",
    "public_rate_limit",
    "shutdown",
    "tls",
    "limits",
    "trusted_proxies",
    "usage",
    "webhooks",
    "listen_proxy_protocol",
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
    let Some(path) = file else {
        return load_text(None, env, overrides);
    };
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            origin: origin.clone(),
            field: String::new(),
            reason: format!("cannot read file: {e}"),
        }])
    })?;
    load_text(Some((&origin, &text)), env, overrides)
}

/// [`load`] on a file's text already read: `file` is `(origin, text)`, the origin naming the
/// file in messages.
pub fn load_text(
    file: Option<(&str, &str)>,
    env: impl IntoIterator<Item = (String, String)>,
    overrides: &Overrides,
) -> Result<(Config, Vec<String>), ConfigErrors> {
    let mut col = Collector::default();
    let mut warnings = Vec::new();
    let mut root = match file {
        Some((origin, text)) => {
            col.origins.default = origin.to_string();
            serde_yaml_ng::from_str::<Value>(text).map_err(|e| {
                ConfigErrors(vec![ConfigError {
                    origin: origin.to_string(),
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

/// The whole configuration from the merged document: top-level values here, one builder per
/// section in `sections`.
fn build(col: &mut Collector, root: Value) -> Config {
    let source = col.origins.default.clone();
    let mut top = Section::new(col, "", root);
    let listen = top.take_with("listen", ([0, 0, 0, 0], 8080).into(), proxy_addr);
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
    let (rate_limit, rate_limit_backend) = take_rate_limit(
        &mut top,
        RateLimitRule::Limited {
            requests: 1000,
            period: Duration::from_secs(3600),
        },
    );
    let public = build_public(&mut top);
    let public_rate_limit = take_rule(
        &mut top,
        "public_rate_limit",
        RateLimitRule::Limited {
            requests: 600,
            period: Duration::from_secs(60),
        },
    );
    let trusted_proxies = top.take_with(
        "trusted_proxies",
        crate::net::TrustedProxies::default(),
        super::fields::trusted_proxies,
    );
    let listen_proxy_protocol: bool = top.take("listen_proxy_protocol", false);
    if listen_proxy_protocol && trusted_proxies.is_empty() {
        let f = top.field("listen_proxy_protocol");
        top.collector().error(
            &f,
            "needs trusted_proxies: only connections from those peers are read for a PROXY header",
        );
    }
    let shutdown_grace = top.section("shutdown", build_shutdown);
    let tls_given = !matches!(top.peek("tls"), None | Some(Value::Null));
    let tls = top.section("tls", |s| build_tls(s, tls_given));
    let upstream = top.section("upstream", build_upstream);
    let limits = top.section("limits", build_limits);
    let tokens = top.section("tokens", build_tokens);
    let cache = top.section("cache", build_cache);
    let verify = top.section("verify", build_verify);
    let hashing = top.section("hashing", build_hashing);
    let log = top.section("log", build_log);
    let usage = top.section("usage", super::usage::build_usage);
    let webhooks = super::usage::build_webhooks(&mut top);
    let oidc = top.section("oidc", super::oidc::build_oidc);
    if oidc.enabled && tokens.database.is_none() {
        let f = top.field("oidc.enabled");
        top.collector().error(
            &f,
            "trusted publishing needs the token database (tokens.database): minted tokens and \
             used job-token ids live there",
        );
    }
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
        rate_limit_backend,
        public,
        public_rate_limit,
        shutdown_grace,
        tls,
        limits,
        trusted_proxies,
        usage,
        webhooks,
        listen_proxy_protocol,
        oidc,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HashParams;
    use std::path::PathBuf;

    use crate::config::testing::*;

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
        let f = doc(
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
        let (c, w) = load_doc(&f, env, &flags).unwrap();
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
        let f = doc(
            "listen: nowhere\nupstream:\n  url: ftp://x\n  connect_timeout: soon\n  colour: red\ncache: {capacity: -1}\nbogus: 1\n",
        );
        let env = vec![("TOLLGATE_REALM".to_string(), "a\"b".to_string())];
        let errs = load_doc(&f, env, &Overrides::default()).unwrap_err();
        let text = errs.to_string();
        let p = FILE.to_string();
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
    fn unreadable_and_unparseable_files() {
        let e = load(
            Some(Path::new("/nonexistent/t.yaml")),
            vec![],
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("cannot read file"));
        let e = load_doc("listen: [\n", vec![], &Overrides::default()).unwrap_err();
        assert!(e.to_string().contains("not valid YAML"), "{e}");
    }

    /// Every proxy worker binds its own socket: port 0 would give each a different port.
    #[test]
    fn proxy_listen_needs_a_fixed_port() {
        let f = "listen: 127.0.0.1:0\ntls: {listen: '[::1]:0', cert_file: c.pem, key_file: k.pem}\nadmin_listen: 127.0.0.1:0\n";
        let text = load_doc(f, vec![], &Overrides::default())
            .unwrap_err()
            .to_string();
        let p = FILE.to_string();
        for want in [
            format!("{p}: listen: 127.0.0.1:0 has port 0"),
            format!("{p}: tls.listen: [::1]:0 has port 0"),
        ] {
            assert!(text.contains(&want), "missing {want:?} in:\n{text}");
        }
        // The admin listener is one socket: any free port is fine there.
        assert!(!text.contains("admin_listen"), "{text}");
    }

    /// Loading reads the file and the environment only: a name that does not resolve and
    /// certificate files that do not exist are for start-up (and `check-config`) to find.
    #[test]
    fn loading_resolves_nothing_and_reads_no_certificate() {
        let f = doc(
            "upstream: {url: 'https://no-such-host.invalid:8443/repo'}\n\
             tls: {listen: 127.0.0.1:8443, cert_file: /nonexistent/c.pem, key_file: /nonexistent/k.pem}\n",
        );
        let (c, _) = load_doc(&f, vec![], &Overrides::default()).unwrap();
        assert_eq!(c.upstream.host, "no-such-host.invalid");
        assert_eq!(c.upstream.port, 8443);
        assert_eq!(c.tls.unwrap().cert_file, "/nonexistent/c.pem");
        let p = FILE.to_string();
        assert_eq!(c.origins.of("upstream.url"), p);
        let env = vec![(
            "TOLLGATE_UPSTREAM__URL".to_string(),
            "http://no-such-host.invalid".to_string(),
        )];
        let (c, _) = load_doc(&f, env, &Overrides::default()).unwrap();
        assert_eq!(
            c.origins.problem("upstream.url", "x").to_string(),
            "env TOLLGATE_UPSTREAM__URL: upstream.url: x"
        );
    }

    /// `config/tollgate.yaml` with every commented-out field (`# key: value`) written in.
    fn sample_with_every_field() -> String {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/tollgate.yaml"))
                .unwrap();
        text.lines()
            .map(|line| {
                let indent = line.len() - line.trim_start().len();
                match line.trim_start().strip_prefix("# ") {
                    Some(rest)
                        if rest.split_once(':').is_some_and(|(k, _)| {
                            !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                        }) =>
                    {
                        format!("{}{rest}", &line[..indent])
                    }
                    _ => line.to_string(),
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every dotted path of a mapping and its nested mappings.
    fn paths(prefix: &str, v: &Value, out: &mut Vec<String>) {
        if let Value::Mapping(m) = v {
            for (k, v) in m {
                let k = k.as_str().unwrap();
                let p = if prefix.is_empty() {
                    k.to_string()
                } else {
                    format!("{prefix}.{k}")
                };
                paths(&p, v, out);
                out.push(p);
            }
        }
    }

    /// The sample file documents every field the loader reads (some commented out), and,
    /// written in, is a valid configuration.
    #[test]
    fn the_sample_file_names_every_field() {
        let sample = sample_with_every_field();
        let real = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/tollgate.yaml"));
        if let Err(e) = load(Some(real), vec![], &Overrides::default()) {
            panic!("config/tollgate.yaml is refused:\n{e}");
        }
        if let Err(e) = load_doc(&sample, vec![], &Overrides::default()) {
            panic!("the sample, every field written in, is refused:\n{e}\n{sample}");
        }
        let mut documented = Vec::new();
        paths(
            "",
            &serde_yaml_ng::from_str(&sample).unwrap(),
            &mut documented,
        );
        let mut col = Collector::default();
        build(&mut col, Value::Null);
        let missing: Vec<&String> = col
            .taken
            .iter()
            .filter(|f| !documented.contains(f))
            .collect();
        assert!(
            missing.is_empty(),
            "config/tollgate.yaml does not document {missing:?}"
        );
        assert!(col.taken.len() > 40, "{:?}", col.taken);
    }
}
