//! Wires the commands: loads the configuration, builds the pingora `Server` with the proxy
//! and admin services, and implements the small CLI utilities.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use chrono::Utc;
use pingora::proxy::http_proxy_service;
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::services::background::background_service;
use serde::Serialize;

use crate::admin::{AdminService, AdminState};
use crate::auth::{RoutePattern, Verifier};
use crate::cli::{Cli, Command, HashArgs, ServeArgs, TokenCommand};
use crate::config::{self, Config, Overrides};
use crate::metrics::METRICS;
use crate::proxy::Proxy;
use crate::store::{self, yaml, TokenSet};
use crate::token::{self, Access, Permission, Secret};

/// Exit code for a refused configuration or bad usage.
pub const EXIT_CONFIG: i32 = 2;

/// Runs a parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    let result = match cli.command {
        Command::Serve(args) => serve(cli.config.as_deref(), &args),
        Command::CheckConfig => check_config(cli.config.as_deref()),
        Command::Token(TokenCommand::Hash(args)) => token_hash(cli.config.as_deref(), &args),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("tollgate: {e:#}");
            EXIT_CONFIG
        }
    }
}

fn config_path(explicit: Option<&Path>) -> Option<PathBuf> {
    match explicit {
        Some(p) => Some(p.to_path_buf()),
        None => {
            let default = Path::new(config::DEFAULT_CONFIG_PATH);
            default.exists().then(|| default.to_path_buf())
        }
    }
}

/// Loads and validates the configuration, printing warnings to stderr.
fn load_config(explicit: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Config> {
    let path = config_path(explicit);
    match config::load(path.as_deref(), std::env::vars(), overrides) {
        Ok((config, warnings)) => {
            for w in warnings {
                eprintln!("tollgate: warning: {w}");
            }
            Ok(config)
        }
        Err(errors) => Err(anyhow!(
            "the configuration is refused ({} problem{}):\n{errors}",
            errors.0.len(),
            if errors.0.len() == 1 { "" } else { "s" }
        )),
    }
}

fn load_tokens(config: &Config) -> anyhow::Result<store::Snapshot> {
    store::load_snapshot(config, 1).map_err(|errors| {
        anyhow!(
            "the token set is refused ({} problem{}):\n{}",
            errors.len(),
            if errors.len() == 1 { "" } else { "s" },
            errors.join("\n")
        )
    })
}

fn check_config(explicit: Option<&Path>) -> anyhow::Result<()> {
    let config = load_config(explicit, &Overrides::default())?;
    let snapshot = load_tokens(&config)?;
    println!(
        "config OK: {} ({} token{})",
        config.source,
        snapshot.len(),
        if snapshot.len() == 1 { "" } else { "s" }
    );
    Ok(())
}

fn serve_overrides(args: &ServeArgs) -> Overrides {
    let mut o = Overrides::default();
    let mut add = |flag: &str, field: &str, v: &Option<String>| {
        if let Some(v) = v {
            o.values.push((flag.into(), field.into(), v.clone()));
        }
    };
    add("--listen", "listen", &args.listen);
    add("--admin-listen", "admin_listen", &args.admin_listen);
    add("--upstream", "upstream.url", &args.upstream);
    o
}

fn serve(explicit: Option<&Path>, args: &ServeArgs) -> anyhow::Result<()> {
    let config = load_config(explicit, &serve_overrides(args))?;
    crate::logging::init(&config.log);
    let snapshot = load_tokens(&config)?;
    let admin_listener = std::net::TcpListener::bind(config.admin_listen)
        .with_context(|| format!("cannot listen on admin_listen {}", config.admin_listen))?;
    drop(
        std::net::TcpListener::bind(config.listen)
            .with_context(|| format!("cannot listen on listen {}", config.listen))?,
    );

    let tokens = Arc::new(TokenSet::default());
    METRICS
        .tokens
        .with_label_values(&["file"])
        .set(snapshot.len() as i64);
    METRICS.snapshot_generation.set(snapshot.generation as i64);
    tracing::info!(
        tokens = snapshot.len(),
        config = %config.source,
        listen = %config.listen,
        admin_listen = %config.admin_listen,
        upstream = %config.upstream.url,
        "tollgate starting"
    );
    tokens.store(snapshot);
    let verifier = Arc::new(Verifier::new(&config));

    let conf = ServerConf {
        threads: config.threads,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(10),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = http_proxy_service(
        &server.configuration,
        Proxy::new(&config, tokens.clone(), verifier),
    );
    proxy.add_tcp(&config.listen.to_string());
    server.add_service(proxy);
    server.add_service(background_service(
        "admin",
        AdminService::new(admin_listener, AdminState { tokens }),
    ));
    server.run_forever()
}

/// A token-file entry as `token hash` prints it.
#[derive(Serialize)]
struct EntryOut {
    id: String,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    hash: String,
    permission: Permission,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    routes: Vec<RouteOut>,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
}

#[derive(Serialize)]
struct RouteOut {
    path: String,
    access: Access,
}

fn parse_route(s: &str) -> anyhow::Result<RouteOut> {
    let (path, access) = s
        .rsplit_once('=')
        .ok_or_else(|| anyhow!("--route {s:?} must be PATH=ACCESS, e.g. /p2/acme/*=read"))?;
    RoutePattern::parse(path).map_err(|e| anyhow!("--route: {e}"))?;
    let access = match access {
        "read" => Access::Read,
        "write" => Access::Write,
        other => bail!("--route {s:?}: access {other:?} is not read or write"),
    };
    Ok(RouteOut {
        path: path.to_string(),
        access,
    })
}

fn token_hash(explicit: Option<&Path>, args: &HashArgs) -> anyhow::Result<()> {
    let config = load_config(explicit, &Overrides::default())?;
    if !yaml::valid_name(&args.name) {
        bail!("--name must be 1-64 letters, digits, '-', '_', '.' or '@'");
    }
    let routes = args
        .routes
        .iter()
        .map(|r| parse_route(r))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let now = Utc::now();
    let expires_at =
        token::parse_expiry(&args.expires_in, now).map_err(|e| anyhow!("--expires-in: {e}"))?;
    let (id, secret, custom) = match args.secret.as_deref() {
        None => {
            let g = token::generate();
            (g.id, g.token, false)
        }
        Some("-") => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading the secret from stdin")?;
            let s = s.trim_end_matches(['\r', '\n']).to_string();
            if s.len() < 16 {
                bail!("a custom secret must be at least 16 characters");
            }
            (token::generate_id(), Secret::new(s), true)
        }
        Some(_) => {
            bail!("--secret takes only '-' (read from stdin): secrets never go in arguments")
        }
    };
    let hash = token::hash_secret(secret.expose(), &config.hashing)
        .map_err(|e| anyhow!("hashing failed: {e}"))?;
    let entry = EntryOut {
        id,
        name: args.name.clone(),
        description: args.description.clone(),
        hash,
        permission: args.permission.into(),
        routes,
        created_at: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        expires_at: expires_at.map(|e| e.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
    };
    let yaml = serde_yaml_ng::to_string(&vec![entry]).context("rendering the entry")?;
    let mut out = std::io::stdout().lock();
    for line in yaml.lines() {
        writeln!(out, "  {line}")?;
    }
    out.flush()?;
    if custom {
        eprintln!(
            "custom secret hashed; clients send Basic {}:<secret>",
            args.name
        );
    } else {
        eprintln!("token: {}", secret.expose());
        eprintln!("(shown once: it cannot be read back from the hash)");
    }
    Ok(())
}
