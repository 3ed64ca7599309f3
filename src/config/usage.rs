//! The `usage:` section (the per-token usage ledger) and the `webhooks:` list: data and
//! validation only. A webhook's secret file is read, and its environment variable looked up,
//! when the server starts (`crate::webhook`), not here.

use std::path::PathBuf;
use std::time::Duration;

use serde_yaml_ng::Value;

use super::fields::{as_duration, as_string, kind_of, Section};

/// The usage ledger: per token, key (normalized path) and UTC day, requests, bytes sent, first
/// and last time, status classes and distinct client addresses; aggregated in memory and written
/// to the database in batches.
#[derive(Clone, PartialEq, Eq)]
pub struct UsageConfig {
    /// Record usage at all.
    pub enabled: bool,
    /// The database the ledger is written to; `None`: the token database (`tokens.database`).
    /// With neither, there is no ledger (the start log says so).
    pub database: Option<String>,
    /// Days of usage kept; older rows are purged in the background.
    pub retention: Duration,
    /// How often the in-memory aggregate is written (a crash loses at most this much).
    pub flush_interval: Duration,
    /// Most distinct (token, key, day) entries held in memory between two flushes; beyond it a
    /// token's requests are counted in its `other` row.
    pub max_entries: usize,
    /// Most distinct client addresses remembered per entry and day (a bounded set: beyond it
    /// the count is shown as "at least").
    pub max_addresses: usize,
    /// `token.anomaly` fires when a token is used from more distinct client addresses than this
    /// within one hour (0: never).
    pub anomaly_addresses: usize,
}

impl std::fmt::Debug for UsageConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageConfig")
            .field("enabled", &self.enabled)
            .field("database", &self.database.as_deref().map(super::redact_url))
            .field("retention", &self.retention)
            .field("flush_interval", &self.flush_interval)
            .field("max_entries", &self.max_entries)
            .field("max_addresses", &self.max_addresses)
            .field("anomaly_addresses", &self.anomaly_addresses)
            .finish()
    }
}

impl Default for UsageConfig {
    fn default() -> Self {
        UsageConfig {
            enabled: true,
            database: None,
            retention: Duration::from_secs(90 * 86_400),
            flush_interval: Duration::from_secs(10),
            max_entries: 100_000,
            max_addresses: 16,
            anomaly_addresses: 10,
        }
    }
}

/// `usage`: the ledger.
pub(super) fn build_usage(s: &mut Section<'_>) -> UsageConfig {
    let d = UsageConfig::default();
    let enabled = s.take("enabled", d.enabled);
    let database = s.take_with("database", None, |v| {
        let url = as_string(v)?;
        super::backend_of(&url).map_err(|e| format!("database URL: {e}"))?;
        Ok(Some(url))
    });
    let retention = s.take_with("retention", d.retention, |v| match as_duration(v)? {
        r if r < Duration::from_secs(86_400) => Err("must be at least 1d".to_string()),
        r => Ok(r),
    });
    let flush_interval = s.take_with("flush_interval", d.flush_interval, |v| {
        match as_duration(v)? {
            f if f < Duration::from_millis(100) => Err("must be at least 100ms".to_string()),
            f => Ok(f),
        }
    });
    let bounded = |min: usize, max: usize| {
        move |v: Value| {
            let n: usize = serde_yaml_ng::from_value(v).map_err(|e| e.to_string())?;
            if (min..=max).contains(&n) {
                Ok(n)
            } else {
                Err(format!("{n} is not from {min} to {max}"))
            }
        }
    };
    UsageConfig {
        enabled,
        database,
        retention,
        flush_interval,
        max_entries: s.take_with("max_entries", d.max_entries, bounded(1, 10_000_000)),
        max_addresses: s.take_with("max_addresses", d.max_addresses, bounded(1, 1024)),
        anomaly_addresses: s.take_with(
            "anomaly_addresses",
            d.anomaly_addresses,
            bounded(0, 1_000_000),
        ),
    }
}

/// An event a webhook can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WebhookEvent {
    /// A token was created through the admin API.
    Created,
    /// A token's secret was regenerated through the admin API.
    Regenerated,
    /// A token was revoked through the admin API.
    Revoked,
    /// A token expires within 30 days, then within 7 (once each).
    Expiring,
    /// A token was used from more distinct client addresses within an hour than
    /// `usage.anomaly_addresses`.
    Anomaly,
}

impl WebhookEvent {
    /// Every event.
    pub const ALL: [WebhookEvent; 5] = [
        WebhookEvent::Created,
        WebhookEvent::Regenerated,
        WebhookEvent::Revoked,
        WebhookEvent::Expiring,
        WebhookEvent::Anomaly,
    ];

    /// The event's name, as configured and sent (`token.created`).
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookEvent::Created => "token.created",
            WebhookEvent::Regenerated => "token.regenerated",
            WebhookEvent::Revoked => "token.revoked",
            WebhookEvent::Expiring => "token.expiring",
            WebhookEvent::Anomaly => "token.anomaly",
        }
    }

    /// The event named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == s)
    }
}

/// Where a webhook's signing secret comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum WebhookSecret {
    /// Written in the configuration (`secret:`).
    Value(crate::token::Secret),
    /// An environment variable named by `secret_env:`, read at start.
    Env(String),
    /// A file named by `secret_file:` (surrounding whitespace trimmed), read at start.
    File(PathBuf),
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WebhookSecret::Value(_) => f.write_str("Value(***)"),
            WebhookSecret::Env(name) => f.debug_tuple("Env").field(name).finish(),
            WebhookSecret::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

/// One webhook: where to POST, how to sign, which events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// `http://` or `https://` URL the events are POSTed to.
    pub url: String,
    /// The HMAC-SHA256 key of `X-Tollgate-Signature-256`.
    pub secret: WebhookSecret,
    /// The events sent to it (at least one).
    pub events: Vec<WebhookEvent>,
}

/// Most webhooks configured.
const MAX_WEBHOOKS: usize = 32;

/// `webhooks`: a list of `{url, secret | secret_env | secret_file, events}`.
pub(super) fn build_webhooks(top: &mut Section<'_>) -> Vec<WebhookConfig> {
    let field = top.field("webhooks");
    let items = top.take_with("webhooks", Vec::new(), |v| match v {
        Value::Sequence(items) if items.len() <= MAX_WEBHOOKS => Ok(items),
        Value::Sequence(_) => Err(format!("at most {MAX_WEBHOOKS} webhooks")),
        other => Err(format!(
            "expected a list of {{url, secret, events}}, found {}",
            kind_of(&other)
        )),
    });
    let col = top.collector();
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let mut s = Section::new(col, &format!("{field}[{i}]"), item);
        let url = s.take_with("url", None, |v| {
            let url = as_string(v)?;
            match url.parse::<http::Uri>() {
                Ok(u)
                    if matches!(u.scheme_str(), Some("http" | "https"))
                        && u.host().is_some_and(|h| !h.is_empty()) =>
                {
                    Ok(Some(url))
                }
                _ => Err(format!("{url:?} is not an http:// or https:// URL")),
            }
        });
        let mut secrets = Vec::new();
        if let Some(v) = s.take_with("secret", None, |v| {
            let v = as_string(v)?;
            if v.len() < 16 {
                return Err("must be at least 16 characters".into());
            }
            Ok(Some(crate::token::Secret::new(v)))
        }) {
            secrets.push(WebhookSecret::Value(v));
        }
        if let Some(v) = s.take_with("secret_env", None, |v| as_string(v).map(Some)) {
            secrets.push(WebhookSecret::Env(v));
        }
        if let Some(v) = s.take_with("secret_file", None, |v| as_string(v).map(Some)) {
            secrets.push(WebhookSecret::File(PathBuf::from(v)));
        }
        let events = s.take_with("events", Vec::new(), |v| {
            let names: Vec<String> = serde_yaml_ng::from_value(v).map_err(|e| e.to_string())?;
            names
                .iter()
                .map(|n| {
                    WebhookEvent::parse(n.trim()).ok_or_else(|| {
                        let all: Vec<&str> = WebhookEvent::ALL.iter().map(|e| e.as_str()).collect();
                        format!("{n:?} is not one of {}", all.join(", "))
                    })
                })
                .collect()
        });
        let problem = if url.is_none() && s.peek("url").is_none() {
            Some(("url", "required"))
        } else if secrets.len() != 1 {
            Some((
                "secret",
                "give exactly one of secret, secret_env, secret_file",
            ))
        } else if events.is_empty() {
            Some(("events", "name at least one event"))
        } else {
            None
        };
        if let Some((f, reason)) = problem {
            let f = s.field(f);
            s.collector().error(&f, reason);
        } else if let (Some(url), Some(secret)) = (url, secrets.pop()) {
            out.push(WebhookConfig {
                url,
                secret,
                events,
            });
        }
        s.finish();
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::config::testing::load_doc;
    use crate::config::{Overrides, WebhookEvent, WebhookSecret};

    #[test]
    fn usage_and_webhooks_load_and_bad_values_are_named() {
        let doc = "usage: {retention: 30d, flush_interval: 1s, max_entries: 10, anomaly_addresses: 3}\n\
                   webhooks:\n  - {url: 'https://hooks.example.com/x', secret: 'sixteen-chars-at-least', events: [token.created, token.anomaly]}\n";
        let (c, _) = load_doc(doc, vec![], &Overrides::default()).unwrap();
        assert_eq!(c.usage.retention.as_secs(), 30 * 86_400);
        assert_eq!(c.usage.max_entries, 10);
        assert_eq!(c.webhooks.len(), 1);
        assert_eq!(
            c.webhooks[0].events,
            [WebhookEvent::Created, WebhookEvent::Anomaly]
        );
        let shown = format!("{c:?}");
        assert!(!shown.contains("sixteen-chars"), "{shown}");
        assert!(matches!(c.webhooks[0].secret, WebhookSecret::Value(_)));

        let bad = "usage: {retention: 1h, max_entries: 0}\n\
                   webhooks:\n  - {url: 'ftp://x', secret: s, events: [token.nope]}\n  - {url: 'http://x', events: [token.revoked]}\n";
        let e = load_doc(bad, vec![], &Overrides::default())
            .unwrap_err()
            .to_string();
        for needle in [
            "usage.retention: must be at least 1d",
            "usage.max_entries: 0 is not from 1",
            "webhooks[0].url:",
            "webhooks[0].secret: must be at least 16",
            "webhooks[0].events: \"token.nope\" is not one of",
            "webhooks[1].secret: give exactly one of",
        ] {
            assert!(e.contains(needle), "{needle} not in {e}");
        }
    }
}
