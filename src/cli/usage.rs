//! `tollgate token usage NAME` and `tollgate usage --path PATH|--package NAME`: the usage ledger
//! read straight from its database (`usage.database`, else `tokens.database`), with or without a
//! running server. What the server has not flushed yet (at most `usage.flush_interval`) is not shown.

use std::path::Path;

use anyhow::{anyhow, bail};
use chrono::Utc;
use clap::Args;
use serde_json::json;

use super::{load_config, runtime, Output};
use crate::config::{Config, Overrides};
use crate::store::db::Database;
use crate::usage::{db, DayRange};

/// Flags of `token usage`.
#[derive(Debug, Args)]
pub struct TokenUsageArgs {
    /// The token's id or name (a revoked token: its id).
    pub token: String,
    /// First day (YYYY-MM-DD; default: 30 days before --to).
    #[arg(long)]
    pub from: Option<String>,
    /// Last day (YYYY-MM-DD; default: today, UTC).
    #[arg(long)]
    pub to: Option<String>,
    /// table or json.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// Flags of `usage`.
#[derive(Debug, Args)]
pub struct UsageArgs {
    /// The path fetched (normalized like a request's: /p2/acme/widget.json).
    #[arg(long)]
    pub path: Option<String>,
    /// A package (acme/widget, @acme/widget, acme-widget, com.acme:widget), read in its
    /// ecosystem's normal form.
    #[arg(long, conflicts_with = "path")]
    pub package: Option<String>,
    /// With --package: only this ecosystem (composer, npm, pypi, cargo, maven; default: every
    /// ecosystem of upstream.layouts whose rules accept the name).
    #[arg(long, requires = "package")]
    pub ecosystem: Option<String>,
    /// With --package: only this version (as the paths write it).
    #[arg(long = "version", requires = "package")]
    pub version: Option<String>,
    /// First day (YYYY-MM-DD; default: 30 days before --to).
    #[arg(long)]
    pub from: Option<String>,
    /// Last day (YYYY-MM-DD; default: today, UTC).
    #[arg(long)]
    pub to: Option<String>,
    /// table or json.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

fn ledger_url(config: &Config) -> anyhow::Result<String> {
    config
        .usage
        .database
        .clone()
        .or_else(|| config.tokens.database.clone())
        .ok_or_else(|| {
            anyhow!("no usage database: tokens.database is none and usage.database is not set")
        })
}

fn with_db<T>(
    config: &Config,
    f: impl AsyncFnOnce(&Database) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let url = ledger_url(config)?;
    runtime()?.block_on(async {
        let database = Database::open(&url).await?;
        let out = f(&database).await;
        database.close().await;
        out
    })
}

fn human_bytes(n: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn addresses(n: i64, capped: bool) -> String {
    if capped {
        format!("{n}+")
    } else {
        n.to_string()
    }
}

/// `token usage NAME`.
pub(super) fn token_usage(explicit: Option<&Path>, args: TokenUsageArgs) -> anyhow::Result<()> {
    let config = load_config(explicit, &Overrides::default())?;
    let range = DayRange::parse(args.from.as_deref(), args.to.as_deref(), Utc::now())
        .map_err(|e| anyhow!(e))?;
    let max = config.usage.max_addresses;
    // The id: a file token's or a database token's by name, else what was given.
    let mut id = args.token.clone();
    let mut name = None;
    let files = crate::store::token_files(&config.tokens);
    for f in files {
        if let Ok(loaded) = crate::store::yaml::load_file(&f) {
            if let Some(t) = loaded
                .iter()
                .find(|t| *t.name == *args.token || *t.id == *args.token)
            {
                id = t.id.to_string();
                name = Some(t.name.to_string());
            }
        }
    }
    let token_db = config.tokens.database.clone();
    let (days, keys) = with_db(&config, async |database| {
        if name.is_none() {
            let lookup = match &token_db {
                Some(url) if Some(url) != config.usage.database.as_ref() => {
                    let t = Database::open(url).await?;
                    let found = t.find(&args.token).await.ok();
                    t.close().await;
                    found
                }
                Some(_) => database.find(&args.token).await.ok(),
                None => None,
            };
            if let Some(t) = lookup {
                id = t.id.to_string();
                name = Some(t.name.to_string());
            }
        }
        Ok(db::token_usage(database, &id, &range.from, &range.to, max).await?)
    })?;
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "token": {"id": id, "name": name},
                "from": range.from, "to": range.to, "granularity": "day",
                "days": days, "paths": keys,
            }))?
        ),
        Output::Table => {
            println!(
                "token {id}{} from {} to {}",
                name.map(|n| format!(" ({n})")).unwrap_or_default(),
                range.from,
                range.to
            );
            println!(
                "{:<12} {:>10} {:>12} {:>9} {:>6} {:>6} {:>6} {:>6}",
                "DAY", "REQUESTS", "SENT", "ADDRESSES", "2XX", "3XX", "4XX", "5XX"
            );
            for d in &days {
                let t = &d.totals;
                println!(
                    "{:<12} {:>10} {:>12} {:>9} {:>6} {:>6} {:>6} {:>6}",
                    d.day,
                    t.requests,
                    human_bytes(t.bytes_sent),
                    addresses(t.addresses, t.addresses_capped),
                    t.status.s2xx,
                    t.status.s3xx,
                    t.status.s4xx,
                    t.status.s5xx
                );
            }
            if !keys.is_empty() {
                println!("\n{:>10} {:>12}  PATH", "REQUESTS", "SENT");
                for k in &keys {
                    println!(
                        "{:>10} {:>12}  {}",
                        k.requests,
                        human_bytes(k.bytes_sent),
                        k.key
                    );
                }
            }
        }
    }
    Ok(())
}

/// `usage --path PATH` or `usage --package NAME`.
pub(super) fn path_usage(explicit: Option<&Path>, args: UsageArgs) -> anyhow::Result<()> {
    if args.package.is_some() {
        return package_usage(explicit, args);
    }
    let Some(raw) = args.path.as_deref() else {
        bail!("--path or --package is required (/p2/acme/widget.json, acme/widget)");
    };
    let path = crate::token::normalize_path(raw)
        .map_err(|e| anyhow!("--path: {e}"))?
        .into_owned();
    let config = load_config(explicit, &Overrides::default())?;
    let range = DayRange::parse(args.from.as_deref(), args.to.as_deref(), Utc::now())
        .map_err(|e| anyhow!(e))?;
    let max = config.usage.max_addresses;
    let rows = with_db(&config, async |database| {
        Ok(db::path_usage(database, &path, &range.from, &range.to, max).await?)
    })?;
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "path": path, "from": range.from, "to": range.to, "tokens": rows,
            }))?
        ),
        Output::Table => {
            println!("{path} from {} to {}", range.from, range.to);
            token_header();
            for r in &rows {
                token_row(&r.token_id, r.days, &r.totals);
            }
        }
    }
    Ok(())
}

/// The head of the reverse lookups' table.
fn token_header() {
    println!(
        "{:<14} {:>10} {:>12} {:>5} {:>9}  {:<25} LAST",
        "TOKEN", "REQUESTS", "SENT", "DAYS", "ADDRESSES", "FIRST"
    );
}

/// One token's line in the reverse lookups' table.
fn token_row(token_id: &str, days: i64, t: &db::Totals) {
    println!(
        "{:<14} {:>10} {:>12} {:>5} {:>9}  {:<25} {}",
        token_id,
        t.requests,
        human_bytes(t.bytes_sent),
        days,
        addresses(t.addresses, t.addresses_capped),
        at(t.first_at),
        at(t.last_at)
    );
}

fn at(v: Option<chrono::DateTime<Utc>>) -> String {
    v.map(|v| v.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// `usage --package NAME [--ecosystem E] [--version V]`.
fn package_usage(explicit: Option<&Path>, args: UsageArgs) -> anyhow::Result<()> {
    let name = args.package.as_deref().unwrap_or_default();
    let config = load_config(explicit, &Overrides::default())?;
    let packages = crate::usage::packages_named(
        name,
        args.ecosystem.as_deref(),
        config.upstream.layouts.iter().map(|l| l.kind),
    )
    .map_err(|e| anyhow!("--{e}"))?;
    let version = args.version.as_deref().map(str::trim);
    if version == Some("") {
        bail!("--version: empty");
    }
    let range = DayRange::parse(args.from.as_deref(), args.to.as_deref(), Utc::now())
        .map_err(|e| anyhow!(e))?;
    let max = config.usage.max_addresses;
    let rows = with_db(&config, async |database| {
        Ok(
            crate::usage::package_usage(database, &packages, version, &range.from, &range.to, max)
                .await?,
        )
    })?;
    let searched: Vec<String> = packages.iter().map(|(e, n)| format!("{e} {n}")).collect();
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "package": name,
                "packages": packages.iter().map(|(e, n)| json!({"ecosystem": e.as_str(), "package": n})).collect::<Vec<_>>(),
                "version": version, "from": range.from, "to": range.to, "tokens": rows,
            }))?
        ),
        Output::Table => {
            println!(
                "{}{} from {} to {}",
                searched.join(", "),
                version.map(|v| format!(" version {v}")).unwrap_or_default(),
                range.from,
                range.to
            );
            token_header();
            for r in &rows {
                token_row(&r.token_id, r.days, &r.totals);
                for v in &r.versions {
                    println!(
                        "  {:<12} {:>10} {:>12}  {} {}",
                        v.version.as_deref().unwrap_or("(metadata)"),
                        v.requests,
                        human_bytes(v.bytes_sent),
                        v.ecosystem,
                        at(v.last_at)
                    );
                }
            }
        }
    }
    Ok(())
}
