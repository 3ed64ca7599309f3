//! Wires the commands: loads the configuration, starts the control plane (token store loop
//! and admin listener on their own runtime) and the pingora proxy, and implements the token
//! CLI on the configured database.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use chrono::{DateTime, Utc};
use pingora::listeners::tls::TlsSettings;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use serde::Serialize;
use std::sync::atomic::Ordering;

use crate::admin::{self, AdminState, Health};
use crate::auth::Verifier;
use crate::cli::{
    Cli, Command, ModifyArgs, NewTokenArgs, Output, RenameArgs, ServeArgs, TargetArgs, TokenCommand,
};
use crate::config::{self, Config, HashParams, Overrides};
use crate::proxy::Proxy;
use crate::store::db::{Database, RouteSpec};
use crate::store::manage::{self, NewToken, Patch};
use crate::store::{yaml, Store};
use crate::token::{self, Access, Permission, RateLimitRule, Secret, Source, Token};

/// Exit code for a refused configuration or bad usage.
pub const EXIT_CONFIG: i32 = 2;

/// Runs a parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    let config = cli.config.as_deref();
    let result = match cli.command {
        Command::Serve(args) => serve(config, &args),
        Command::CheckConfig => check_config(config),
        Command::Token(cmd) => token_command(config, cmd),
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

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
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
            plural(errors.0.len())
        )),
    }
}

fn refused(what: &str, errors: Vec<String>) -> anyhow::Error {
    anyhow!(
        "the {what} is refused ({} problem{}):\n{}",
        errors.len(),
        plural(errors.len()),
        errors.join("\n")
    )
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("tollgate-control")
        .enable_all()
        .build()
        .context("starting the control runtime")
}

/// Loads every source into `store` and builds the first snapshot. Bad token files (or a
/// conflict between sources) refuse; an unreachable database refuses only when `strict`,
/// else the server starts not ready and connects in the background.
async fn load_store(store: &Store, strict: bool) -> anyhow::Result<()> {
    if let Err(e) = store.connect().await {
        if strict {
            return Err(refused("token database", e));
        }
        tracing::warn!(error = %e.join("; "), "token database unavailable at start; not ready until it connects");
    }
    store
        .reload_files(true)
        .await
        .map(|_| ())
        .map_err(|e| refused("token set", e))
}

/// Validates the configuration, token files and database rows without changing anything: no
/// directory or database file is created and no migration runs.
fn check_config(explicit: Option<&Path>) -> anyhow::Result<()> {
    let mut config = load_config(explicit, &Overrides::default())?;
    if let Some(missing) = config
        .tokens
        .database
        .as_deref()
        .and_then(crate::store::db::missing_sqlite_file)
    {
        println!(
            "note: the token database {} does not exist yet; `serve` creates it",
            missing.display()
        );
        config.tokens.database = None;
    }
    let store = Store::new(&config, None).read_only();
    runtime()?.block_on(load_store(&store, true))?;
    let refused = store.refused();
    if !refused.is_empty() {
        return Err(self::refused("token set", refused));
    }
    let n = store.set.load().len();
    println!("config OK: {} ({n} token{})", config.source, plural(n));
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

/// The in-memory manager token of `--bootstrap-token NAME:SECRET`.
fn bootstrap_token(spec: &str, params: &HashParams) -> anyhow::Result<Token> {
    let (name, secret) = spec
        .split_once(':')
        .ok_or_else(|| anyhow!("the bootstrap token must be NAME:SECRET"))?;
    if !yaml::valid_name(name) {
        bail!("the bootstrap token's name must be 1-64 letters, digits, '-', '_', '.' or '@'");
    }
    if secret.len() < manage::MIN_CUSTOM_SECRET {
        bail!(
            "the bootstrap token's secret must be at least {} characters",
            manage::MIN_CUSTOM_SECRET
        );
    }
    // A generated token keeps its id, so it also works as a Bearer token.
    let id = match token::parse(secret) {
        Ok(t) => t.id.to_string(),
        Err(_) => token::generate_id(),
    };
    let hash = token::hash_secret(secret, params).map_err(|e| anyhow!("hashing: {e}"))?;
    Ok(Token {
        id: Arc::from(id.as_str()),
        name: Arc::from(name),
        description: Some("bootstrap token (in memory only)".into()),
        hash: token::validate_phc(&hash).map_err(|e| anyhow!("hashing: {e}"))?,
        permission: Permission::Manager,
        routes: Vec::new(),
        created_at: Some(Utc::now()),
        expires_at: None,
        rate_limit: None,
        generation: 1,
        source: Source::Bootstrap,
    })
}

fn serve(explicit: Option<&Path>, args: &ServeArgs) -> anyhow::Result<()> {
    let config = load_config(explicit, &serve_overrides(args))?;
    let _log_guard = crate::logging::init(&config.log);
    // Raises the open-file limit first: the connection cap is derived from it.
    let limits = crate::conn::start(&config.limits);
    let bootstrap = args
        .bootstrap_token
        .as_ref()
        .map(|b| bootstrap_token(b.expose(), &config.hashing))
        .transpose()?;
    let store = Arc::new(Store::new(&config, bootstrap));
    let control = runtime()?;
    control.block_on(load_store(&store, false))?;
    let admin_listener = std::net::TcpListener::bind(config.admin_listen)
        .with_context(|| format!("cannot listen on admin_listen {}", config.admin_listen))?;
    drop(
        std::net::TcpListener::bind(config.listen)
            .with_context(|| format!("cannot listen on listen {}", config.listen))?,
    );
    let verifier = Arc::new(Verifier::new(&config));
    {
        // Verification budgets that are full again are forgotten off the request path.
        let verifier = verifier.clone();
        control.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                verifier.maintain();
            }
        });
    }
    tracing::info!(
        tokens = store.set.load().len(),
        config = %config.source,
        listen = %config.listen,
        admin_listen = %config.admin_listen,
        upstream = %config.upstream.url,
        "tollgate starting"
    );

    let health = Arc::new(Health::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let state = AdminState {
        store: store.clone(),
        verifier: verifier.clone(),
        token_usernames: config.tokens.token_usernames.clone().into(),
        hashing: config.hashing,
        health: health.clone(),
    };
    let admin_tls = match &config.tls {
        Some(t) if t.admin => Some(
            crate::tls::CertStore::load(&t.cert_file, &t.key_file)
                .map_err(|e| anyhow!("tls: {e}"))?,
        ),
        _ => None,
    };
    if let Some(certs) = &admin_tls {
        control.spawn(certs.clone().watch(Duration::from_secs(2), stop_rx.clone()));
    }
    let admin_task = control.spawn(admin::serve(
        admin_listener,
        state,
        admin_tls,
        stop_rx.clone(),
    ));
    let store_task = {
        let store = store.clone();
        let stop = stop_rx.clone();
        control.spawn(async move { store.run(stop).await })
    };
    {
        let store = store.clone();
        control.spawn(async move { store.watch_files(stop_rx).await });
    }
    control.spawn(probe_listener(config.listen, health.clone()));

    let grace = config.shutdown_grace;
    let conf = ServerConf {
        threads: config.threads,
        // Our own drain below exits as soon as in-flight requests are done; pingora's grace
        // (which always sleeps in full) is only the backstop.
        grace_period_seconds: Some(grace.as_secs().max(1)),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = crate::conn::proxy_service(
        &server.configuration,
        Proxy::new(&config, store.clone(), verifier, health.clone()),
        limits,
    );
    proxy.add_tcp(&config.listen.to_string());
    if let Some(tls) = &config.tls {
        let certs = crate::tls::CertStore::load(&tls.cert_file, &tls.key_file)
            .map_err(|e| anyhow!("tls: {e}"))?;
        drop(
            std::net::TcpListener::bind(tls.listen)
                .with_context(|| format!("cannot listen on tls.listen {}", tls.listen))?,
        );
        let mut settings = TlsSettings::intermediate("", "").map_err(|e| anyhow!("tls: {e}"))?;
        settings.set_cert_resolver(certs.clone());
        settings.enable_h2();
        proxy.add_tls_with_settings(&tls.listen.to_string(), None, settings);
        control.spawn(certs.watch(Duration::from_secs(2), stop_tx.subscribe()));
    }
    server.add_service(proxy);
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<()>();
    let signals = Signals {
        health: health.clone(),
    };
    std::thread::Builder::new()
        .name("tollgate-proxy".into())
        .spawn(move || {
            server.run(RunArgs {
                shutdown_signal: Box::new(signals),
            });
            let _ = done_tx.send(());
        })
        .context("starting the proxy thread")?;

    control.block_on(async {
        // Until a shutdown starts (or pingora stops on its own, e.g. SIGINT).
        loop {
            if health.draining.load(Ordering::Acquire) || done_rx.try_recv().is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if health.draining.load(Ordering::Acquire) {
            drain(&health, grace).await;
        }
    });

    // Stop the control plane, which flushes last-use times.
    let _ = stop_tx.send(true);
    control.block_on(async {
        let _ = tokio::time::timeout(Duration::from_secs(5), store_task).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), admin_task).await;
    });
    control.shutdown_timeout(Duration::from_secs(1));
    tracing::info!("tollgate stopped");
    Ok(())
}

/// Waits until no proxy request is in flight (seen twice, 50 ms apart, so a connection just
/// accepted gets its request counted) or `grace` has passed.
async fn drain(health: &Health, grace: Duration) {
    let deadline = tokio::time::Instant::now() + grace;
    let mut idle_seen = 0;
    while tokio::time::Instant::now() < deadline {
        if health.in_flight.load(Ordering::Acquire) == 0 {
            idle_seen += 1;
            if idle_seen >= 2 {
                tracing::info!("drained: no request in flight");
                return;
            }
        } else {
            idle_seen = 0;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::warn!(
        in_flight = health.in_flight.load(Ordering::Acquire),
        "grace period over with requests still in flight"
    );
}

/// Marks the proxy listening once it accepts a connection (pingora binds it after start).
async fn probe_listener(listen: std::net::SocketAddr, health: Arc<Health>) {
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            health.proxy_listening.store(true, Ordering::Release);
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SIGTERM (and SIGQUIT) start a graceful shutdown: `/readyz` turns 503 at once, listeners
/// close, in-flight requests finish. SIGINT stops at once.
struct Signals {
    health: Arc<Health>,
}

#[async_trait::async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut quit), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::quit()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return std::future::pending().await;
        };
        let graceful = tokio::select! {
            _ = term.recv() => true,
            _ = quit.recv() => true,
            _ = int.recv() => false,
        };
        if graceful {
            self.health.draining.store(true, Ordering::Release);
            tracing::info!("shutdown requested: not ready, draining in-flight requests");
            ShutdownSignal::GracefulTerminate
        } else {
            tracing::info!("interrupted: stopping now");
            ShutdownSignal::FastShutdown
        }
    }
}

// ---- token CLI -------------------------------------------------------------------------

fn parse_route(s: &str) -> anyhow::Result<RouteSpec> {
    let (path, access) = s
        .rsplit_once('=')
        .ok_or_else(|| anyhow!("--route {s:?} must be PATH=ACCESS, e.g. /p2/acme/*=read"))?;
    let access = match access {
        "read" => Access::Read,
        "write" => Access::Write,
        other => bail!("--route {s:?}: access {other:?} is not read or write"),
    };
    Ok(RouteSpec {
        path: path.to_string(),
        access,
    })
}

/// `unlimited`, or REQUESTS/PERIOD (`100/1h`).
fn parse_rate_limit(s: &str) -> anyhow::Result<RateLimitRule> {
    if s == "unlimited" {
        return Ok(RateLimitRule::Unlimited);
    }
    let (n, period) = s.split_once('/').ok_or_else(|| {
        anyhow!("--rate-limit {s:?} must be unlimited or REQUESTS/PERIOD, e.g. 100/1h")
    })?;
    let requests: u32 = n
        .parse()
        .map_err(|_| anyhow!("--rate-limit {s:?}: {n:?} is not a number"))?;
    let period =
        humantime::parse_duration(period).map_err(|e| anyhow!("--rate-limit {s:?}: {e}"))?;
    RateLimitRule::Limited { requests, period }
        .validate()
        .map_err(|e| anyhow!("--rate-limit {s:?}: {e}"))
}

fn read_secret(flag: Option<&str>) -> anyhow::Result<Option<Secret>> {
    match flag {
        None => Ok(None),
        Some("-") => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading the secret from stdin")?;
            Ok(Some(Secret::new(s.trim_end_matches(['\r', '\n']))))
        }
        Some(_) => {
            bail!("--secret takes only '-' (read from stdin): secrets never go in arguments")
        }
    }
}

fn new_token_request(args: &NewTokenArgs) -> anyhow::Result<NewToken> {
    Ok(NewToken {
        name: args.name.clone(),
        description: args.description.clone(),
        permission: args.permission.into(),
        routes: args
            .routes
            .iter()
            .map(|r| parse_route(r))
            .collect::<anyhow::Result<_>>()?,
        expires_in: Some(args.expires_in.clone()),
        rate_limit: args
            .rate_limit
            .as_deref()
            .map(parse_rate_limit)
            .transpose()?,
        secret: read_secret(args.secret.as_deref())?,
    })
}

fn token_command(explicit: Option<&Path>, cmd: TokenCommand) -> anyhow::Result<()> {
    let config = load_config(explicit, &Overrides::default())?;
    if let TokenCommand::Hash(args) = &cmd {
        return token_hash(&config, args);
    }
    let url = config.tokens.database.clone().ok_or_else(|| {
        anyhow!("no token database is configured (tokens.database: none): use `token hash` and a token file")
    })?;
    let rt = runtime()?;
    rt.block_on(async {
        let db = Database::open(&url).await?;
        let result = db_command(&config, &db, cmd).await;
        db.close().await;
        result
    })
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
    routes: Vec<RouteSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rate_limit: Option<RateLimitRule>,
    created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<DateTime<Utc>>,
}

fn token_hash(config: &Config, args: &NewTokenArgs) -> anyhow::Result<()> {
    let req = new_token_request(args)?;
    let custom = req.secret.is_some();
    let (t, secret) =
        manage::build_new(req, &config.hashing, Utc::now()).map_err(|e| anyhow!(e))?;
    let entry = EntryOut {
        id: t.id.to_string(),
        name: t.name.to_string(),
        description: t.description.clone(),
        hash: t.hash.as_str().to_string(),
        permission: t.permission,
        routes: crate::store::db::route_specs(&t.routes),
        rate_limit: t.rate_limit,
        created_at: t.created_at.unwrap_or_else(Utc::now),
        expires_at: t.expires_at,
    };
    let yaml = serde_yaml_ng::to_string(&vec![entry]).context("rendering the entry")?;
    let mut out = std::io::stdout().lock();
    for line in yaml.lines() {
        writeln!(out, "  {line}")?;
    }
    out.flush()?;
    print_secret(&t, &secret, custom);
    Ok(())
}

fn print_secret(t: &Token, secret: &Secret, custom: bool) {
    if custom {
        eprintln!(
            "custom secret hashed; clients send Basic {}:<secret>",
            t.name
        );
    } else {
        eprintln!("token: {}", secret.expose());
        eprintln!("(shown once: it cannot be read back)");
    }
}

/// Tokens from the files, for name checks and listing.
fn file_tokens(config: &Config) -> anyhow::Result<Vec<Token>> {
    let mut all = Vec::new();
    for f in &config.tokens.files {
        match yaml::load_file(f) {
            Ok(mut t) => all.append(&mut t),
            Err(e) => return Err(refused("token file", e)),
        }
    }
    Ok(all)
}

fn print_tokens(
    tokens: &[Token],
    usage: &std::collections::HashMap<String, DateTime<Utc>>,
    output: Output,
) {
    let now = Utc::now();
    match output {
        Output::Json => {
            let views: Vec<_> = tokens
                .iter()
                .map(|t| manage::token_view(t, usage.get(&*t.id).copied(), now))
                .collect();
            let v = if views.len() == 1 {
                views.into_iter().next().unwrap_or_default()
            } else {
                serde_json::json!({ "tokens": views })
            };
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        Output::Table => {
            let day = |d: Option<DateTime<Utc>>| {
                d.map(|d| d.format("%Y-%m-%d %H:%M").to_string())
                    .unwrap_or_else(|| "-".into())
            };
            println!(
                "{:<12}  {:<24}  {:<10}  {:<8}  {:<16}  {:<16}  ROUTES",
                "ID", "NAME", "PERMISSION", "SOURCE", "EXPIRES", "LAST USED"
            );
            for t in tokens {
                let expires = match t.expires_at {
                    Some(_) if t.is_expired(now) => "expired".to_string(),
                    e => day(e),
                };
                let routes: Vec<String> = t
                    .routes
                    .iter()
                    .map(|r| {
                        format!(
                            "{}={}",
                            r.pattern.as_str(),
                            r.access.as_permission().as_str()
                        )
                    })
                    .collect();
                println!(
                    "{:<12}  {:<24}  {:<10}  {:<8}  {:<16}  {:<16}  {}",
                    t.id,
                    t.name,
                    t.permission.as_str(),
                    t.source.kind(),
                    expires,
                    day(usage.get(&*t.id).copied()),
                    if routes.is_empty() {
                        "*".to_string()
                    } else {
                        routes.join(",")
                    }
                );
            }
        }
    }
}

async fn db_command(config: &Config, db: &Database, cmd: TokenCommand) -> anyhow::Result<()> {
    let usage = db.usage().await.unwrap_or_default();
    // Names are unique across the token files, the database and the bootstrap token (the
    // server refuses both records of a conflict), and never another token's id.
    let stored = db
        .tokens_with_problems()
        .await
        .map(|(tokens, _)| tokens)
        .unwrap_or_default();
    let name_taken = |name: &str, except: Option<&str>| -> anyhow::Result<()> {
        let files = file_tokens(config)?;
        for t in files.iter().chain(stored.iter()) {
            if Some(&*t.id) == except {
                continue;
            }
            if &*t.name == name {
                bail!(
                    "a token named {name:?} already exists in {}",
                    t.source.describe()
                );
            }
            if &*t.id == name {
                bail!(
                    "{name:?} is the id of a token in {}: a name cannot be another token's id",
                    t.source.describe()
                );
            }
        }
        if let Some(boot) = bootstrap_name() {
            if boot == name {
                bail!("{name:?} is the name of the bootstrap token (TOLLGATE_BOOTSTRAP_TOKEN)");
            }
        }
        Ok(())
    };
    let one = |t: &Token, output| print_tokens(std::slice::from_ref(t), &usage, output);
    match cmd {
        TokenCommand::Hash(_) => unreachable!("handled before opening the database"),
        TokenCommand::Create(args) => {
            let req = new_token_request(&args)?;
            name_taken(&req.name, None)?;
            let custom = req.secret.is_some();
            let (t, secret) =
                manage::build_new(req, &config.hashing, Utc::now()).map_err(|e| anyhow!(e))?;
            db.insert(&t).await?;
            audit_cli("token.create", &t);
            one(&t, args.output);
            print_secret(&t, &secret, custom);
        }
        TokenCommand::List(args) => {
            let mut all = file_tokens(config)?;
            all.extend(db.tokens().await.map_err(|e| {
                anyhow!(e
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("\n"))
            })?);
            all.sort_by(|a, b| a.name.cmp(&b.name));
            if let Output::Json = args.output {
                let now = Utc::now();
                let views: Vec<_> = all
                    .iter()
                    .map(|t| manage::token_view(t, usage.get(&*t.id).copied(), now))
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({"tokens": views}))?
                );
            } else {
                print_tokens(&all, &usage, Output::Table);
            }
        }
        TokenCommand::Show(TargetArgs { token, output }) => {
            let t = match db.find(&token).await {
                Ok(t) => t,
                Err(e) => file_tokens(config)?
                    .into_iter()
                    .find(|t| *t.id == *token || *t.name == *token)
                    .ok_or(e)?,
            };
            one(&t, output);
        }
        TokenCommand::Revoke(TargetArgs { token, .. }) => {
            let t = db.find(&token).await?;
            db.delete(&t.id).await?;
            audit_cli("token.revoke", &t);
            eprintln!("revoked {} ({})", t.name, t.id);
        }
        TokenCommand::Regenerate(TargetArgs { token, output }) => {
            let current = db.find(&token).await?;
            let (t, secret) =
                manage::regenerate(&current, &config.hashing).map_err(|e| anyhow!(e))?;
            db.update(&t, current.generation).await?;
            audit_cli("token.regenerate", &t);
            one(&t, output);
            print_secret(&t, &secret, false);
        }
        TokenCommand::Rename(RenameArgs {
            token,
            new_name,
            output,
        }) => {
            let current = db.find(&token).await?;
            name_taken(&new_name, Some(&current.id))?;
            let patch = Patch {
                name: Some(new_name),
                ..Patch::default()
            };
            let t = manage::apply_patch(&current, patch).map_err(|e| anyhow!(e))?;
            db.update(&t, current.generation).await?;
            audit_cli("token.modify", &t);
            one(&t, output);
        }
        TokenCommand::Modify(args) => {
            let ModifyArgs {
                token,
                description,
                permission,
                routes,
                no_routes,
                rate_limit,
                output,
            } = args;
            let current = db.find(&token).await?;
            let patch = Patch {
                name: None,
                description: description.map(|d| (!d.is_empty()).then_some(d)),
                permission: permission.map(Into::into),
                routes: if no_routes {
                    Some(Vec::new())
                } else if routes.is_empty() {
                    None
                } else {
                    Some(
                        routes
                            .iter()
                            .map(|r| parse_route(r))
                            .collect::<anyhow::Result<_>>()?,
                    )
                },
                rate_limit: match rate_limit.as_deref() {
                    None => None,
                    Some("default") => Some(None),
                    Some(r) => Some(Some(parse_rate_limit(r)?)),
                },
            };
            let t = manage::apply_patch(&current, patch).map_err(|e| anyhow!(e))?;
            db.update(&t, current.generation).await?;
            audit_cli("token.modify", &t);
            one(&t, output);
        }
    }
    Ok(())
}

/// The bootstrap token's name, when this environment sets one for the server.
fn bootstrap_name() -> Option<String> {
    let spec = std::env::var("TOLLGATE_BOOTSTRAP_TOKEN").ok()?;
    spec.split_once(':').map(|(name, _)| name.to_string())
}

fn audit_cli(action: &str, t: &Token) {
    let user = std::env::var("USER").unwrap_or_default();
    eprintln!(
        "audit: {action} token_id={} token_name={} by cli user={user:?}",
        t.id, t.name
    );
}
