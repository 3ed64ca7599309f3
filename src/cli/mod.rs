//! The command line: clap types, and the commands. `serve` hands over to [`crate::app`];
//! `check-config` validates without changing anything; `token` is in [`token`].

mod quota;
mod token;
mod token_table;
mod trust;
mod usage;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use chrono::Utc;
use clap::{Args, Parser, Subcommand};

use crate::app::{config_refused, plural, refused, App, ProxyStopped};
use crate::config::{self, Config, Overrides};
use crate::store::{manage, Store};
use crate::token::{HashParams, Permission, Source, Token};

/// Tollgate: an authenticating reverse proxy for package repositories.
#[derive(Debug, Parser)]
#[command(name = "tollgate", version, about)]
pub struct Cli {
    /// Configuration file (default: config/tollgate.yaml if it exists, else built-in defaults).
    #[arg(long, short = 'c', global = true, env = "TOLLGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy and the admin listener.
    Serve(ServeArgs),
    /// Validate the configuration and the token files, print every problem, exit non-zero on any.
    CheckConfig,
    /// Token utilities.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Which tokens fetched a path, when, how often, from how many addresses (the usage ledger).
    Usage(usage::UsageArgs),
    /// Trust policies of trusted publishing (OIDC job tokens exchanged for minted tokens).
    #[command(subcommand)]
    TrustPolicy(trust::TrustCommand),
}

/// Flags of `serve`; they override the file and the environment.
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// Proxy listen address, e.g. 0.0.0.0:8080.
    #[arg(long)]
    pub listen: Option<String>,
    /// Admin listen address, e.g. 127.0.0.1:9180.
    #[arg(long)]
    pub admin_listen: Option<String>,
    /// Upstream package store URL, e.g. http://127.0.0.1:8081.
    #[arg(long)]
    pub upstream: Option<String>,
    /// An in-memory manager token NAME:SECRET for first set-up and repair; never stored.
    /// Prefer the environment variable: arguments show in the process list.
    #[arg(long, env = "TOLLGATE_BOOTSTRAP_TOKEN", hide_env_values = true)]
    pub bootstrap_token: Option<crate::token::Secret>,
}

/// `tollgate token …`: works on the configured database, with or without a running server.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a token-file entry: prints the YAML entry on stdout and the token, once, on stderr.
    Hash(NewTokenArgs),
    /// Create a database token; prints the token once.
    Create(NewTokenArgs),
    /// List tokens (database and files).
    List(OutputArgs),
    /// Show one token.
    Show(TargetArgs),
    /// Revoke (delete) a database token; effective at once.
    Revoke(TargetArgs),
    /// Give a database token a new secret; the old one stops working at once, or with
    /// `--overlap 24h` keeps working until then (or until the new one is first used, see
    /// `tokens.rotation_overlap_ends`). Prints the token once.
    Regenerate(RegenerateArgs),
    /// Rename a database token.
    Rename(RenameArgs),
    /// Change description, permission, routes or rate limit of a database token.
    Modify(ModifyArgs),
    /// Disable a database token: refused (401 token_disabled) from the next request on, but
    /// kept with its id, secret and history until enabled.
    Disable(TargetArgs),
    /// Enable a disabled database token again.
    Enable(TargetArgs),
    /// A token's usage per day (requests, bytes, addresses, statuses) and its most fetched paths.
    Usage(usage::TokenUsageArgs),
}

/// Output format.
#[derive(Debug, Clone, Copy, Default, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    #[default]
    Table,
    /// JSON, as the admin API returns it.
    Json,
}

/// `--output`.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// table or json.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// A token by id or name, plus `--output`.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// The token's id or name.
    pub token: String,
    /// table or json.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// Flags of `token regenerate`.
#[derive(Debug, Args)]
pub struct RegenerateArgs {
    /// The token's id or name.
    pub token: String,
    /// Keep the old secret working this long (`24h`, `7d`; at most `tokens.max_overlap`),
    /// or until the new secret is first used when `tokens.rotation_overlap_ends` is
    /// `first_use` (the default).
    #[arg(long)]
    pub overlap: Option<String>,
    /// table or json.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// Flags of `token rename`.
#[derive(Debug, Args)]
pub struct RenameArgs {
    /// The token's id or current name.
    pub token: String,
    /// The new name.
    pub new_name: String,
    /// table or json.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// Flags of `token modify`.
#[derive(Debug, Args)]
pub struct ModifyArgs {
    /// The token's id or name.
    pub token: String,
    /// New description ("" clears it).
    #[arg(long)]
    pub description: Option<String>,
    /// New permission.
    #[arg(long, value_enum)]
    pub permission: Option<PermissionArg>,
    /// Replace the routes, repeatable: --route /p2/acme/*=read (access read, write or none)
    #[arg(long = "route")]
    pub routes: Vec<String>,
    /// Remove every route (the permission then applies to every path).
    #[arg(long, conflicts_with = "routes")]
    pub no_routes: bool,
    /// `unlimited`, `default`, or REQUESTS/PERIOD such as 100/1h.
    #[arg(long)]
    pub rate_limit: Option<String>,
    /// Download quota: `requests=10000,bytes=50GiB,period=30d` (either limit may be left
    /// out), or `none`.
    #[arg(long)]
    pub quota: Option<String>,
    /// Replace the client allowlist, repeatable: --allow-ip 10.0.0.0/8 --allow-ip 2001:db8::/32
    #[arg(long = "allow-ip", value_name = "CIDR")]
    pub allow_ips: Vec<String>,
    /// Remove the client allowlist (the token works from any address).
    #[arg(long, conflicts_with = "allow_ips")]
    pub no_allow_ip: bool,
    /// Replace the package patterns, repeatable: --package 'acme/*' --package '@acme/*'
    #[arg(long = "package", value_name = "PATTERN")]
    pub packages: Vec<String>,
    /// Remove the package patterns (the token reaches every package).
    #[arg(long, conflicts_with = "packages")]
    pub no_package: bool,
    /// table or json.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// Flags of `token hash` and `token create`.
#[derive(Debug, Args)]
pub struct NewTokenArgs {
    /// Unique token name.
    #[arg(long)]
    pub name: String,
    /// read, write or manager.
    #[arg(long, value_enum)]
    pub permission: PermissionArg,
    /// A route rule PATH=ACCESS (access read, write or none: a deny rule), repeatable:
    /// --route /p2/acme/*=read --route '/p2/acme/internal-*=none'
    #[arg(long = "route")]
    pub routes: Vec<String>,
    /// Free-text description.
    #[arg(long)]
    pub description: Option<String>,
    /// 30d, 90d, 365d, never, or an RFC 3339 date.
    #[arg(long, default_value = "never")]
    pub expires_in: String,
    /// `unlimited`, or REQUESTS/PERIOD such as 100/1h (default: the configured limit).
    #[arg(long)]
    pub rate_limit: Option<String>,
    /// Download quota: `requests=10000,bytes=50GiB,period=30d` (either limit may be left
    /// out; default: none).
    #[arg(long)]
    pub quota: Option<String>,
    /// A client network (CIDR) or address the token may be used from, repeatable:
    /// --allow-ip 10.0.0.0/8 --allow-ip 203.0.113.7 (default: any address).
    #[arg(long = "allow-ip", value_name = "CIDR")]
    pub allow_ips: Vec<String>,
    /// A package pattern the token is limited to, repeatable, in the ecosystem's own naming:
    /// --package 'acme/*' --package '@acme/*' --package 'acme-*' --package 'com.acme:*'
    /// (default: every package).
    #[arg(long = "package", value_name = "PATTERN")]
    pub packages: Vec<String>,
    /// Read a custom secret from stdin (`-`) instead of generating a token; the client then
    /// sends Basic NAME:SECRET.
    #[arg(long)]
    pub secret: Option<String>,
    /// table or json (create only).
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// Permission as a command-line value.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum PermissionArg {
    /// Read.
    Read,
    /// Write (implies read).
    Write,
    /// Manager (everything).
    Manager,
}

impl From<PermissionArg> for Permission {
    fn from(p: PermissionArg) -> Self {
        match p {
            PermissionArg::Read => Permission::Read,
            PermissionArg::Write => Permission::Write,
            PermissionArg::Manager => Permission::Manager,
        }
    }
}

/// Exit code for a refused configuration or bad usage.
pub const EXIT_CONFIG: i32 = 2;

/// Exit code when the server fails while running (the proxy stopped on its own).
pub const EXIT_FAILURE: i32 = 1;

/// Runs a parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    let config = cli.config.as_deref();
    let result = match cli.command {
        Command::Serve(args) => serve(config, &args),
        Command::CheckConfig => check_config(config),
        Command::Token(TokenCommand::Usage(args)) => usage::token_usage(config, args),
        Command::Token(cmd) => token::run(config, cmd),
        Command::Usage(args) => usage::path_usage(config, args),
        Command::TrustPolicy(cmd) => trust::run(config, cmd),
    };
    match result {
        Ok(()) => 0,
        Err(e) if e.is::<ProxyStopped>() => {
            eprintln!("tollgate: {e:#}");
            EXIT_FAILURE
        }
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
pub(crate) fn load_config(
    explicit: Option<&Path>,
    overrides: &Overrides,
) -> anyhow::Result<Config> {
    let path = config_path(explicit);
    match config::load(path.as_deref(), std::env::vars(), overrides) {
        Ok((config, warnings)) => {
            for w in warnings {
                eprintln!("tollgate: warning: {w}");
            }
            Ok(config)
        }
        Err(errors) => Err(config_refused(&errors)),
    }
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("tollgate-control")
        .enable_all()
        .build()
        .context("starting the control runtime")
}

/// Validates the configuration, what it names outside itself (the upstream's name resolves,
/// the certificate pair loads), token files and database rows without changing anything: no
/// directory or database file is created and no migration runs.
fn check_config(explicit: Option<&Path>) -> anyhow::Result<()> {
    let mut config = load_config(explicit, &Overrides::default())?;
    let control = runtime()?;
    control.block_on(crate::app::preflight(&config))?;
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
    control.block_on(crate::app::load_store(&store, true))?;
    let refused = store.refused();
    if !refused.is_empty() {
        return Err(self::refused("token set", &refused));
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
    if !crate::token::valid_name(name) {
        bail!(
            "the bootstrap token's name must be {}",
            crate::token::NAME_RULE
        );
    }
    if secret.len() < manage::MIN_CUSTOM_SECRET {
        bail!(
            "the bootstrap token's secret must be at least {} characters",
            manage::MIN_CUSTOM_SECRET
        );
    }
    // A generated token keeps its id, so it also works as a Bearer token.
    let id = match crate::token::parse(secret) {
        Ok(t) => t.id.to_string(),
        Err(_) => crate::token::generate_id(),
    };
    let hash = crate::token::hash_secret(secret, params).map_err(|e| anyhow!("hashing: {e}"))?;
    Ok(Token {
        id: Arc::from(id.as_str()),
        name: Arc::from(name),
        description: Some("bootstrap token (in memory only)".into()),
        hash: crate::token::validate_phc(&hash).map_err(|e| anyhow!("hashing: {e}"))?,
        permission: Permission::Manager,
        routes: Vec::new(),
        created_at: Some(Utc::now()),
        expires_at: None,
        rate_limit: None,
        quota: None,
        disabled: false,
        allowed_ips: Default::default(),
        previous: None,
        packages: Default::default(),
        generation: 1,
        source: Source::Bootstrap,
    })
}

/// `serve`: builds the server and runs it until a signal asks it to stop.
fn serve(explicit: Option<&Path>, args: &ServeArgs) -> anyhow::Result<()> {
    let config = load_config(explicit, &serve_overrides(args))?;
    let _log_guard = crate::logging::init(&config.log);
    let bootstrap = args
        .bootstrap_token
        .as_ref()
        .map(|b| bootstrap_token(b.expose(), &config.hashing))
        .transpose()?;
    let control = runtime()?;
    let result = control.block_on(async {
        let app = App::build(config, bootstrap).await?;
        app.run(crate::lifecycle::signals()).await
    });
    control.shutdown_timeout(Duration::from_secs(1));
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_bootstrap_secret() {
        let cli = Cli::parse_from([
            "tollgate",
            "serve",
            "--bootstrap-token",
            "admin:verysecretvalue1234",
        ]);
        assert!(!format!("{cli:?}").contains("verysecretvalue1234"));
    }
}
