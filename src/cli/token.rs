//! The `token` subcommands: create, list, show, regenerate, revoke, rename and modify tokens
//! in the configured database, and `token hash` for token-file entries. Names are checked
//! against every source the server reads (token files, database, bootstrap token).

use std::io::{Read, Write};
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::token_table::print_tokens;
use super::{
    load_config, runtime, ModifyArgs, NewTokenArgs, Output, RegenerateArgs, RenameArgs, TargetArgs,
    TokenCommand,
};
use crate::app::refused;
use crate::config::{Config, Overrides};
use crate::scope::PackagePatterns;
use crate::store::db::Database;
use crate::store::manage::{self, NewToken, Patch};
use crate::store::yaml;
use crate::token::{
    route_specs, Access, AllowedIps, Permission, RateLimitRule, RouteSpec, Secret, Token,
};

pub(super) fn parse_route(s: &str) -> anyhow::Result<RouteSpec> {
    let (path, access) = s
        .rsplit_once('=')
        .ok_or_else(|| anyhow!("--route {s:?} must be PATH=ACCESS, e.g. /p2/acme/*=read"))?;
    let access = match access {
        "read" => Access::Read,
        "write" => Access::Write,
        "none" => Access::None,
        other => bail!("--route {s:?}: access {other:?} is not read, write or none"),
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
        quota: super::quota::flag(args.quota.as_deref())?.flatten(),
        allowed_ips: parse_allow_ips(&args.allow_ips)?,
        packages: parse_packages(&args.packages)?,
        secret: read_secret(args.secret.as_deref())?,
    })
}

fn parse_packages(items: &[String]) -> anyhow::Result<PackagePatterns> {
    PackagePatterns::parse(items).map_err(|e| anyhow!("--package: {e}"))
}

fn parse_allow_ips(items: &[String]) -> anyhow::Result<AllowedIps> {
    AllowedIps::parse(items).map_err(|e| anyhow!("--allow-ip: {e}"))
}

pub(super) fn run(explicit: Option<&Path>, cmd: TokenCommand) -> anyhow::Result<()> {
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
    #[serde(skip_serializing_if = "Option::is_none")]
    quota: Option<crate::token::Quota>,
    #[serde(skip_serializing_if = "AllowedIps::is_empty")]
    allowed_ips: AllowedIps,
    #[serde(skip_serializing_if = "PackagePatterns::is_empty")]
    packages: PackagePatterns,
    created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<DateTime<Utc>>,
}

fn token_hash(config: &Config, args: &NewTokenArgs) -> anyhow::Result<()> {
    let req = new_token_request(args)?;
    let custom = req.secret.is_some();
    let (t, secret) =
        manage::build_new(req, &config.hashing, Utc::now(), config.tokens.max_lifetime)
            .map_err(|e| anyhow!(e))?;
    let entry = EntryOut {
        id: t.id.to_string(),
        name: t.name.to_string(),
        description: t.description.clone(),
        hash: t.hash.as_str().to_string(),
        permission: t.permission,
        routes: route_specs(&t.routes),
        rate_limit: t.rate_limit,
        quota: t.quota,
        allowed_ips: t.allowed_ips.clone(),
        packages: t.packages.clone(),
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
    for f in &crate::store::token_files(&config.tokens) {
        match yaml::load_file(f) {
            Ok(mut t) => all.append(&mut t),
            Err(e) => return Err(refused("token file", &e.problems)),
        }
    }
    Ok(all)
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
        TokenCommand::Hash(_) | TokenCommand::Usage(_) => {
            unreachable!("handled before opening the database")
        }
        TokenCommand::Create(args) => {
            let req = new_token_request(&args)?;
            name_taken(&req.name, None)?;
            let custom = req.secret.is_some();
            let (t, secret) =
                manage::build_new(req, &config.hashing, Utc::now(), config.tokens.max_lifetime)
                    .map_err(|e| anyhow!(e))?;
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
                    .map(|t| manage::token_view(t, usage.get(&*t.id), now))
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
            super::quota::show(config, db, &t, usage.get(&*t.id), output).await?;
        }
        TokenCommand::Revoke(TargetArgs { token, .. }) => {
            let t = db.find(&token).await?;
            db.delete(&t.id).await?;
            audit_cli("token.revoke", &t);
            eprintln!("revoked {} ({})", t.name, t.id);
        }
        TokenCommand::Regenerate(RegenerateArgs {
            token,
            overlap,
            output,
        }) => {
            let overlap = overlap
                .as_deref()
                .map(|o| {
                    crate::store::rotation::parse_overlap(
                        o,
                        config.tokens.max_overlap,
                        config.tokens.max_lifetime,
                    )
                })
                .transpose()
                .map_err(|e| anyhow!(e))?;
            let current = db.find(&token).await?;
            let now = Utc::now();
            let (t, secret) =
                manage::regenerate(&current, &config.hashing, now, config.tokens.max_lifetime)
                    .map_err(|e| anyhow!(e))?;
            let t = match overlap {
                Some(o) => crate::store::rotation::with_overlap(&current, t, o, now),
                None => t,
            };
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
                quota,
                allow_ips,
                no_allow_ip,
                packages,
                no_package,
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
                quota: super::quota::flag(quota.as_deref())?,
                disabled: None,
                allowed_ips: if no_allow_ip {
                    Some(None)
                } else if allow_ips.is_empty() {
                    None
                } else {
                    Some(Some(parse_allow_ips(&allow_ips)?))
                },
                packages: if no_package {
                    Some(None)
                } else if packages.is_empty() {
                    None
                } else {
                    Some(Some(parse_packages(&packages)?))
                },
            };
            let t = manage::apply_patch(&current, patch).map_err(|e| anyhow!(e))?;
            db.update(&t, current.generation).await?;
            audit_cli("token.modify", &t);
            one(&t, output);
        }
        TokenCommand::Disable(target) => {
            one(&set_disabled(db, &target.token, true).await?, target.output)
        }
        TokenCommand::Enable(target) => one(
            &set_disabled(db, &target.token, false).await?,
            target.output,
        ),
    }
    Ok(())
}

/// `token disable` / `token enable`: the database token `token` (id or name) with its flag set.
async fn set_disabled(db: &Database, token: &str, disabled: bool) -> anyhow::Result<Token> {
    let current = db.find(token).await?;
    let patch = Patch {
        disabled: Some(disabled),
        ..Patch::default()
    };
    let t = manage::apply_patch(&current, patch).map_err(|e| anyhow!(e))?;
    db.update(&t, current.generation).await?;
    let action = if disabled {
        "token.disable"
    } else {
        "token.enable"
    };
    audit_cli(action, &t);
    Ok(t)
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
