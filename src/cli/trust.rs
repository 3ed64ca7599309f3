//! `tollgate trust-policy add|list|remove`: trust policies of trusted publishing in the
//! configured token database (a running server reads them on its next exchange), and the
//! configuration file's policies in `list`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, bail};
use clap::{Args, Subcommand};

use super::{load_config, runtime, Output, OutputArgs, PermissionArg};
use crate::config::{Overrides, TrustPolicy};
use crate::store::db::Database;
use crate::token::Permission;

/// `tollgate trust-policy …`.
#[derive(Debug, Subcommand)]
pub enum TrustCommand {
    /// Store a trust policy in the token database.
    Add(AddArgs),
    /// List the trust policies (configuration file and database).
    List(OutputArgs),
    /// Delete a database trust policy (tokens minted under it run out by themselves).
    Remove(RemoveArgs),
}

/// Flags of `trust-policy add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// Unique name.
    #[arg(long)]
    pub name: String,
    /// The issuer URL, exactly as the job token's `iss`
    /// (https://token.actions.githubusercontent.com, https://gitlab.com).
    #[arg(long)]
    pub issuer: String,
    /// The `aud` job tokens must carry (default: oidc.audience).
    #[arg(long)]
    pub audience: Option<String>,
    /// A claim rule, repeatable: --claim repository=acme/widget --claim 'ref=refs/tags/v*'
    #[arg(long = "claim", required = true)]
    pub claims: Vec<String>,
    /// The minted token's permission (read or write).
    #[arg(long, value_enum)]
    pub permission: PermissionArg,
    /// The minted token's routes, repeatable: --route '/simple/acme-widget/**=write'
    #[arg(long = "route")]
    pub routes: Vec<String>,
    /// The minted token's package scopes, repeatable: --package 'acme-*' (see token create).
    #[arg(long = "package")]
    pub packages: Vec<String>,
    /// The minted token's lifetime (default 15m; at most oidc.max_lifetime).
    #[arg(long)]
    pub lifetime: Option<String>,
}

/// Flags of `trust-policy remove`.
#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// The policy's name.
    pub name: String,
}

fn policy_from(args: AddArgs) -> anyhow::Result<TrustPolicy> {
    let mut claims = BTreeMap::new();
    for c in &args.claims {
        let (k, v) = c
            .split_once('=')
            .ok_or_else(|| anyhow!("--claim {c:?}: expected CLAIM=PATTERN"))?;
        claims.insert(k.to_string(), v.to_string());
    }
    let routes = args
        .routes
        .iter()
        .map(|r| super::token::parse_route(r))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let lifetime = args
        .lifetime
        .as_deref()
        .map(humantime::parse_duration)
        .transpose()
        .map_err(|e| anyhow!("--lifetime: {e}"))?;
    Ok(TrustPolicy {
        name: args.name,
        issuer: args.issuer,
        audience: args.audience,
        claims,
        permission: Permission::from(args.permission),
        routes,
        packages: crate::token::PackagePatterns::parse(&args.packages)
            .map_err(|e| anyhow!("--package: {e}"))?,
        lifetime,
    })
}

/// Runs a `trust-policy` command on the configured database.
pub(super) fn run(explicit: Option<&Path>, cmd: TrustCommand) -> anyhow::Result<()> {
    let config = load_config(explicit, &Overrides::default())?;
    let url = config
        .tokens
        .database
        .clone()
        .ok_or_else(|| anyhow!("trust policies need the token database (tokens.database)"))?;
    runtime()?.block_on(async {
        let db = Database::open(&url).await?;
        let result = async {
            match cmd {
                TrustCommand::Add(args) => {
                    let policy = policy_from(args)?;
                    crate::oidc::add_policy_to(&config.oidc, &db, &policy).await?;
                    eprintln!(
                        "added trust policy {} (issuer {})",
                        policy.name, policy.issuer
                    );
                }
                TrustCommand::List(out) => {
                    let mut all: Vec<(TrustPolicy, &str)> = config
                        .oidc
                        .policies
                        .iter()
                        .cloned()
                        .map(|p| (p, "file"))
                        .collect();
                    all.extend(
                        crate::oidc::policies_in(&db)
                            .await?
                            .into_iter()
                            .map(|p| (p, "database")),
                    );
                    print(&all, out.output);
                }
                TrustCommand::Remove(args) => {
                    if config.oidc.policies.iter().any(|p| p.name == args.name) {
                        bail!(
                            "trust policy {:?} comes from the configuration file: edit the file",
                            args.name
                        );
                    }
                    if !crate::oidc::remove_policy_from(&db, &args.name).await? {
                        bail!("no trust policy {:?} in the database", args.name);
                    }
                    eprintln!("removed trust policy {}", args.name);
                }
            }
            Ok::<(), anyhow::Error>(())
        }
        .await;
        db.close().await;
        result
    })
}

fn print(all: &[(TrustPolicy, &str)], output: Output) {
    match output {
        Output::Json => {
            let items: Vec<serde_json::Value> = all
                .iter()
                .map(|(p, src)| {
                    let mut v = serde_json::to_value(p).unwrap_or_default();
                    v["source"] = serde_json::json!(src);
                    v
                })
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({ "policies": items }))
                    .unwrap_or_default()
            );
        }
        Output::Table => {
            println!(
                "{:<24} {:<9} {:<10} {:<44} CLAIMS",
                "NAME", "SOURCE", "PERMISSION", "ISSUER"
            );
            for (p, src) in all {
                let claims: Vec<String> =
                    p.claims.iter().map(|(k, v)| format!("{k}={v}")).collect();
                println!(
                    "{:<24} {:<9} {:<10} {:<44} {}",
                    p.name,
                    src,
                    p.permission.as_str(),
                    p.issuer,
                    claims.join(" ")
                );
            }
        }
    }
}
