//! `tollgate token list` and `show`: the tokens as a table or as JSON.

use chrono::{DateTime, Utc};

use super::Output;
use crate::store::manage;
use crate::token::Token;

pub(super) fn print_tokens(
    tokens: &[Token],
    usage: &std::collections::HashMap<String, crate::store::LastUse>,
    output: Output,
) {
    let now = Utc::now();
    match output {
        Output::Json => {
            let views: Vec<_> = tokens
                .iter()
                .map(|t| manage::token_view(t, usage.get(&*t.id), now))
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
                "{:<12}  {:<24}  {:<10}  {:<8}  {:<8}  {:<16}  {:<16}  {:<18}  {:<16}  {:<18}  ROUTES",
                "ID",
                "NAME",
                "PERMISSION",
                "SOURCE",
                "STATE",
                "EXPIRES",
                "LAST USED",
                "CLIENTS",
                "PREVIOUS UNTIL",
                "PACKAGES"
            );
            for t in tokens {
                let expires = match t.expires_at {
                    Some(_) if t.is_expired(now) => "expired".to_string(),
                    e => day(e),
                };
                let routes: Vec<String> = t
                    .routes
                    .iter()
                    .map(|r| format!("{}={}", r.pattern.as_str(), r.access.as_str()))
                    .collect();
                println!(
                    "{:<12}  {:<24}  {:<10}  {:<8}  {:<8}  {:<16}  {:<16}  {:<18}  {:<16}  {:<18}  {}",
                    t.id,
                    t.name,
                    t.permission.as_str(),
                    t.source.kind(),
                    if t.disabled { "disabled" } else { "enabled" },
                    expires,
                    day(usage.get(&*t.id).map(|u| u.at)),
                    if t.allowed_ips.is_empty() {
                        "*".to_string()
                    } else {
                        t.allowed_ips.to_string()
                    },
                    // The previous secret of an overlapping rotation: valid until then.
                    day(t.live_previous(now).map(|p| p.valid_until)),
                    if t.packages.is_empty() {
                        "*".to_string()
                    } else {
                        t.packages.to_string()
                    },
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
