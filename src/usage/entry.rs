//! A ledger entry: its key (token, [`UsageKey`], UTC day) and its [`Counters`]; package keys'
//! stored form; days as numbers and as stored text.

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};

use crate::scope::Ecosystem;

/// What a ledger row counts usage of: a package (and version) when `upstream.layouts` tell it
/// from the path, else the normalized path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UsageKey {
    /// A normalized request path (`/p2/acme/widget.json`), without the query.
    Path(Box<str>),
    /// A package and maybe its version, as stored ([`package_key`]:
    /// `pkg:composer/acme/widget@2.3.1`).
    Package(Box<str>),
    /// Everything that did not fit in memory between two flushes.
    Other,
}

/// The stored form of [`UsageKey::Other`]: paths start with `/`, so it never names one.
pub const OTHER_KEY: &str = "other";

/// The prefix of a package key's stored form: neither a path (`/…`) nor `other`.
pub const PACKAGE_PREFIX: &str = "pkg:";

/// Writes the stored form of a package key into `out`: `pkg:{ecosystem}/{package}`, then
/// `@{version}` when there is one. A package name holds `@` only as its first character (npm
/// scopes), so the first `@` after it starts the version: the form reads back unambiguously.
pub fn package_key(out: &mut String, ecosystem: Ecosystem, package: &str, version: Option<&str>) {
    out.push_str(PACKAGE_PREFIX);
    out.push_str(ecosystem.as_str());
    out.push('/');
    out.push_str(package);
    if let Some(v) = version {
        out.push('@');
        out.push_str(v);
    }
}

/// A package key's parts (ecosystem, package, version; `""` when none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyParts<'a> {
    /// The ecosystem.
    pub ecosystem: Ecosystem,
    /// The package, in its ecosystem's normal form.
    pub package: &'a str,
    /// The version as the path wrote it, `""` for the package's metadata.
    pub version: &'a str,
}

impl UsageKey {
    /// The key as stored (`/path…`, `pkg:…` or `other`).
    pub fn stored(&self) -> &str {
        match self {
            UsageKey::Path(p) | UsageKey::Package(p) => p,
            UsageKey::Other => OTHER_KEY,
        }
    }

    /// A package key's parts; `None` for a path or `other`.
    pub fn parts(&self) -> Option<KeyParts<'_>> {
        let UsageKey::Package(k) = self else {
            return None;
        };
        let (eco, rest) = k.strip_prefix(PACKAGE_PREFIX)?.split_once('/')?;
        let ecosystem = Ecosystem::parse(eco)?;
        let (package, version) = match rest.get(1..).and_then(|r| r.find('@')) {
            Some(i) => (&rest[..i + 1], &rest[i + 2..]),
            None => (rest, ""),
        };
        Some(KeyParts {
            ecosystem,
            package,
            version,
        })
    }
}

/// A day as days since 1970-01-01 (UTC).
pub fn day_number(t: DateTime<Utc>) -> i64 {
    t.timestamp().div_euclid(86_400)
}

/// A day number as stored and shown (`2026-12-02`).
pub fn day_text(day: i64) -> String {
    DateTime::<Utc>::from_timestamp(day * 86_400, 0)
        .map(|t| t.date_naive().to_string())
        .unwrap_or_default()
}

/// `YYYY-MM-DD` as a day number.
pub fn parse_day(s: &str) -> Option<i64> {
    let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    Some(day_number(d.and_hms_opt(0, 0, 0)?.and_utc()))
}

/// One entry's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counters {
    /// Requests.
    pub requests: u64,
    /// Response body bytes sent to the client.
    pub bytes: u64,
    /// First request (Unix milliseconds).
    pub first_ms: i64,
    /// Last request (Unix milliseconds).
    pub last_ms: i64,
    /// Responses by class: 2xx, 3xx, 4xx, 5xx (anything else, such as a client gone before
    /// the answer, only in `requests`).
    pub status: [u64; 4],
    /// Distinct client addresses, at most `usage.max_addresses`.
    pub addresses: Vec<IpAddr>,
}

impl Counters {
    pub(super) fn new(now_ms: i64) -> Self {
        Counters {
            requests: 0,
            bytes: 0,
            first_ms: now_ms,
            last_ms: now_ms,
            status: [0; 4],
            addresses: Vec::new(),
        }
    }

    pub(super) fn add(
        &mut self,
        bytes: u64,
        status: u16,
        client: Option<IpAddr>,
        now_ms: i64,
        cap: usize,
    ) {
        self.requests += 1;
        self.bytes += bytes;
        self.first_ms = self.first_ms.min(now_ms);
        self.last_ms = self.last_ms.max(now_ms);
        if let 200..=599 = status {
            self.status[usize::from(status / 100 - 2)] += 1;
        }
        if let Some(ip) = client {
            if self.addresses.len() < cap && !self.addresses.contains(&ip) {
                self.addresses.push(ip);
            }
        }
    }

    pub(super) fn merge(&mut self, other: &Counters, cap: usize) {
        self.requests += other.requests;
        self.bytes += other.bytes;
        self.first_ms = self.first_ms.min(other.first_ms);
        self.last_ms = self.last_ms.max(other.last_ms);
        for (a, b) in self.status.iter_mut().zip(other.status) {
            *a += b;
        }
        for ip in &other.addresses {
            if self.addresses.len() < cap && !self.addresses.contains(ip) {
                self.addresses.push(*ip);
            }
        }
    }
}

/// One ledger entry: whose, what, which day, how much.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The token's id.
    pub token: Arc<str>,
    /// Days since 1970-01-01 (UTC).
    pub day: i64,
    /// What was fetched.
    pub key: UsageKey,
    /// How much.
    pub counters: Counters,
}
