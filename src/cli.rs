//! Command-line types (clap) only; the work happens in [`crate::app`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::token::Permission;

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
    /// Give a database token a new secret; the old one stops working at once. Prints the token once.
    Regenerate(TargetArgs),
    /// Rename a database token.
    Rename(RenameArgs),
    /// Change description, permission, routes or rate limit of a database token.
    Modify(ModifyArgs),
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
    /// Replace the routes, repeatable: --route /p2/acme/*=read
    #[arg(long = "route")]
    pub routes: Vec<String>,
    /// Remove every route (the permission then applies to every path).
    #[arg(long, conflicts_with = "routes")]
    pub no_routes: bool,
    /// `unlimited`, `default`, or REQUESTS/PERIOD such as 100/1h.
    #[arg(long)]
    pub rate_limit: Option<String>,
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
    /// A route rule PATH=ACCESS (access read or write), repeatable: --route /p2/acme/*=read
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
