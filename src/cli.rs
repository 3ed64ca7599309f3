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
}

/// `tollgate token …`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a token-file entry: prints the YAML entry on stdout and the token, once, on stderr.
    Hash(HashArgs),
}

/// Flags of `token hash`.
#[derive(Debug, Args)]
pub struct HashArgs {
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
    /// Read a custom secret from stdin (`-`) instead of generating a token; the client then
    /// sends Basic NAME:SECRET.
    #[arg(long)]
    pub secret: Option<String>,
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
