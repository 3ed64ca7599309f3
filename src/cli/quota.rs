//! Download quotas on the command line: `--quota` and the usage `token show` prints.

use anyhow::anyhow;
use chrono::Utc;

use super::Output;
use crate::config::Config;
use crate::store::db::Database;
use crate::store::{manage, LastUse};
use crate::token::{Quota, Token};

/// `none`, or `requests=N,bytes=SIZE,period=DURATION` (`requests=10000,bytes=50GiB,period=30d`;
/// either of requests and bytes may be left out).
/// The `--quota` flag: absent, `none` (`Some(None)`), or a quota.
pub(super) fn flag(s: Option<&str>) -> anyhow::Result<Option<Option<Quota>>> {
    s.map(parse_quota).transpose()
}

fn parse_quota(s: &str) -> anyhow::Result<Option<Quota>> {
    if s == "none" {
        return Ok(None);
    }
    let bad =
        |why: String| anyhow!("--quota {s:?}: {why} (e.g. requests=10000,bytes=50GiB,period=30d)");
    let (mut requests, mut bytes, mut period) = (None, None, None);
    for part in s.split(',') {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| bad(format!("{part:?} is not KEY=VALUE")))?;
        match k.trim() {
            "requests" => {
                requests = Some(
                    v.trim()
                        .parse()
                        .map_err(|_| bad(format!("{v:?} is not a number")))?,
                )
            }
            "bytes" => bytes = Some(crate::token::parse_bytes(v).map_err(bad)?),
            "period" => {
                period = Some(humantime::parse_duration(v.trim()).map_err(|e| bad(e.to_string()))?)
            }
            other => return Err(bad(format!("unknown key {other:?}"))),
        }
    }
    let period = period.ok_or_else(|| bad("period is required".into()))?;
    Quota {
        requests,
        bytes,
        period,
    }
    .validate()
    .map(Some)
    .map_err(bad)
}

/// A token's quota usage in the current period and the period's end (Unix seconds): from
/// Redis when `rate_limit.backend` is set, else from the database. Counts a replica has not
/// flushed yet (at most 200 ms of them) are not included.
async fn quota_usage(
    config: &Config,
    db: &Database,
    id: &str,
    quota: &Quota,
) -> anyhow::Result<((u64, u64), u64)> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let (window, resets_at) = quota.window(now);
    let used = match &config.rate_limit_backend {
        Some(b) => crate::shared::Backend::new(b)
            .map_err(|e| anyhow!(e))?
            .read_usage_once(id, quota)
            .await
            .map_err(|e| anyhow!("quota usage from {}: {e}", b.url))?,
        None => {
            db.add_quota_usage(id, quota.period.as_secs(), window, (0, 0))
                .await?
        }
    };
    Ok((used, resets_at))
}

/// `token show`: the record, and for a token with a quota the period's usage.
pub(super) async fn show(
    config: &Config,
    db: &Database,
    t: &Token,
    last: Option<&LastUse>,
    output: Output,
) -> anyhow::Result<()> {
    let usage: std::collections::HashMap<String, LastUse> = last
        .map(|l| (t.id.to_string(), l.clone()))
        .into_iter()
        .collect();
    let Some(q) = &t.quota else {
        super::token_table::print_tokens(std::slice::from_ref(t), &usage, output);
        return Ok(());
    };
    let (used, resets_at) = quota_usage(config, db, &t.id, q).await?;
    match output {
        Output::Json => {
            let mut v = manage::token_view(t, last, Utc::now());
            v["quota"]["used"] = serde_json::json!({"requests": used.0, "bytes": used.1});
            v["quota"]["resets_at"] = resets_at.into();
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Output::Table => {
            super::token_table::print_tokens(std::slice::from_ref(t), &usage, Output::Table);
            let of = |n: Option<u64>| n.map_or_else(|| "-".to_string(), |n| n.to_string());
            let resets = chrono::DateTime::from_timestamp(resets_at as i64, 0)
                .map(|d| d.format("%Y-%m-%d %H:%M UTC").to_string())
                .unwrap_or_default();
            println!(
                "quota: {}/{} requests, {}/{} bytes this period (resets {resets})",
                used.0,
                of(q.requests),
                used.1,
                of(q.bytes)
            );
        }
    }
    Ok(())
}
