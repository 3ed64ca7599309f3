//! The usage ledger: who fetched what, when, how often and from how many addresses.
//!
//! The proxy's logging phase calls [`Ledger::record_package`] (a download `upstream.layouts`
//! name the package of) or [`Ledger::record`] (any other path) for every request made with a
//! token: a sharded map keyed by (token, usage key, UTC day) adds to that entry's counters (requests,
//! bytes sent, first/last time, status classes, a capped set of client addresses). The control
//! plane drains the map every `usage.flush_interval` and writes it in one batch (`db`), so
//! there is never a write per request. The map holds at most `usage.max_entries` entries
//! between flushes; beyond that a request is added to its token's `other` row for the day and
//! counted in `tollgate_usage_overflow_total`. Rows older than `usage.retention` are purged in
//! the background (`run`).
//!
//! Beside it, per token, the distinct client addresses of the current hour (at most
//! `usage.anomaly_addresses` + 1): the first time a token passes the bound in an hour, an
//! [`Anomaly`] is queued for the webhooks.

pub mod db;
mod entry;
mod lookup;
mod range;
mod run;

use std::cell::RefCell;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use chrono::{DateTime, Utc};
use dashmap::DashMap;

use crate::config::UsageConfig;
use crate::metrics::METRICS;
use crate::scope::Ecosystem;
use crate::store::db::Database;
use crate::store::Store;

pub use entry::{
    day_number, day_text, package_key, parse_day, Counters, Entry, KeyParts, UsageKey, OTHER_KEY,
    PACKAGE_PREFIX,
};
pub use lookup::{package_usage, packages_named, PackageTokenUsage, VersionUsage};
pub use range::DayRange;
pub use run::run;

/// Longest usage key kept, in bytes (a longer path is cut at a character boundary).
const MAX_KEY: usize = 512;
/// Most anomalies waiting for the webhooks (more in one second are dropped and logged).
const MAX_PENDING_ANOMALIES: usize = 1024;
/// Most entries kept for the next flush when writing a batch failed.
const MAX_RETRY_ENTRIES: usize = 100_000;

/// A token used from more distinct addresses within an hour than the bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anomaly {
    /// The token's id.
    pub token: Arc<str>,
    /// The hour (Unix seconds / 3600).
    pub hour: i64,
    /// The addresses seen in that hour (the bound + 1).
    pub addresses: Vec<IpAddr>,
}

/// Per token: the current hour's distinct addresses.
struct Hour {
    hour: i64,
    addresses: Vec<IpAddr>,
    fired: bool,
}

/// The in-memory ledger and where it is written.
pub struct Ledger {
    /// Entries by a seeded hash of (token, day, key): a hit costs no allocation. The entry
    /// holds its own key; two keys with the same hash (seeded per process, so not chosen by a
    /// client) share the first's entry's `other` row instead.
    entries: DashMap<u64, Entry, foldhash::quality::RandomState>,
    hasher: foldhash::quality::RandomState,
    len: AtomicUsize,
    hours: DashMap<Arc<str>, Hour, foldhash::quality::RandomState>,
    anomalies: Mutex<Vec<Anomaly>>,
    /// A webhook takes the anomalies (else they are only logged).
    anomalies_wanted: std::sync::atomic::AtomicBool,
    /// A batch whose write failed, written again with the next one.
    retry: Mutex<Vec<Entry>>,
    config: UsageConfig,
    store: Arc<Store>,
    /// `usage.database`, once connected (else the token database is used).
    own_db: OnceLock<Database>,
    /// The ecosystems of `upstream.layouts`: what a lookup by package name searches.
    ecosystems: Vec<Ecosystem>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("entries", &self.len.load(Ordering::Relaxed))
            .finish()
    }
}

fn cut(path: &str) -> &str {
    if path.len() <= MAX_KEY {
        return path;
    }
    let mut end = MAX_KEY;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    &path[..end]
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Ledger {
    /// A ledger for `config`, written to `usage.database` or else the token database of
    /// `store`. `None` when usage is off, or there is no database to write it to.
    pub fn new(config: &UsageConfig, store: Arc<Store>) -> Option<Arc<Ledger>> {
        Self::with_ecosystems(config, store, Vec::new())
    }

    /// [`Ledger::new`], for a store whose layouts are of `ecosystems` (what a lookup by
    /// package name searches when it names no ecosystem).
    pub fn with_ecosystems(
        config: &UsageConfig,
        store: Arc<Store>,
        ecosystems: Vec<Ecosystem>,
    ) -> Option<Arc<Ledger>> {
        if !config.enabled {
            return None;
        }
        if config.database.is_none() && !store.has_database() {
            tracing::info!("usage is not recorded: no database (tokens.database is none; name one in usage.database)");
            return None;
        }
        Some(Arc::new(Ledger {
            entries: DashMap::default(),
            hasher: Default::default(),
            len: AtomicUsize::new(0),
            hours: DashMap::default(),
            anomalies: Mutex::new(Vec::new()),
            anomalies_wanted: std::sync::atomic::AtomicBool::new(false),
            retry: Mutex::new(Vec::new()),
            config: config.clone(),
            store,
            own_db: OnceLock::new(),
            ecosystems,
        }))
    }

    /// The ecosystems of `upstream.layouts`.
    pub fn ecosystems(&self) -> &[Ecosystem] {
        &self.ecosystems
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &UsageConfig {
        &self.config
    }

    /// The database the ledger is in, once connected.
    pub fn database(&self) -> Option<&Database> {
        match self.config.database {
            Some(_) => self.own_db.get(),
            None => self.store.db(),
        }
    }

    /// Entries held in memory now.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// True when nothing waits for the next flush.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counts one request made with `token` on `path` (normalized): `bytes` of body sent,
    /// answered `status` (0: none), from `client`. On the request path: two map look-ups, no
    /// allocation once the entry exists.
    pub fn record(
        &self,
        token: &Arc<str>,
        path: &str,
        bytes: u64,
        status: u16,
        client: Option<IpAddr>,
        now: DateTime<Utc>,
    ) {
        self.count(token, cut(path), false, bytes, status, client, now);
    }

    /// Counts one request made with `token` for a package (and version, when the path names
    /// one), as [`Ledger::record`] does for a path. The key's stored form is written into a
    /// buffer of the thread: no allocation once the entry exists.
    #[allow(clippy::too_many_arguments)]
    pub fn record_package(
        &self,
        token: &Arc<str>,
        ecosystem: Ecosystem,
        package: &str,
        version: Option<&str>,
        bytes: u64,
        status: u16,
        client: Option<IpAddr>,
        now: DateTime<Utc>,
    ) {
        thread_local! {
            static KEY: RefCell<String> = const { RefCell::new(String::new()) };
        }
        KEY.with(|k| {
            let mut k = k.borrow_mut();
            k.clear();
            package_key(&mut k, ecosystem, package, version);
            self.count(token, cut(&k), true, bytes, status, client, now);
        });
    }

    /// Adds to the entry of (`token`, key, day): the key is a package key's stored form when
    /// `package`, else a path.
    #[allow(clippy::too_many_arguments)]
    fn count(
        &self,
        token: &Arc<str>,
        key: &str,
        package: bool,
        bytes: u64,
        status: u16,
        client: Option<IpAddr>,
        now: DateTime<Utc>,
    ) {
        let now_ms = now.timestamp_millis();
        let day = day_number(now);
        let cap = self.config.max_addresses;
        let hash = self.hasher.hash_one((&**token, day, key, package));
        let fits = |e: &Entry| {
            *e.token == **token
                && e.day == day
                && match &e.key {
                    UsageKey::Path(p) => !package && **p == *key,
                    UsageKey::Package(p) => package && **p == *key,
                    UsageKey::Other => false,
                }
        };
        let new_key = || {
            if package {
                UsageKey::Package(key.into())
            } else {
                UsageKey::Path(key.into())
            }
        };
        let mut overflow = false;
        match self.entries.get_mut(&hash) {
            Some(mut e) if fits(&e) => e.counters.add(bytes, status, client, now_ms, cap),
            Some(_) => overflow = true,
            None if self.len.load(Ordering::Relaxed) >= self.config.max_entries => overflow = true,
            // A slot is reserved before the insert, so that threads racing for the last ones
            // never take more than the bound.
            None if self.len.fetch_add(1, Ordering::Relaxed) >= self.config.max_entries => {
                self.len.fetch_sub(1, Ordering::Relaxed);
                overflow = true;
            }
            None => {
                let mut fresh = false;
                let mut e = self.entries.entry(hash).or_insert_with(|| {
                    fresh = true;
                    Entry {
                        token: token.clone(),
                        day,
                        key: new_key(),
                        counters: Counters::new(now_ms),
                    }
                });
                if !fresh {
                    // Another thread inserted it meanwhile: the reserved slot is not used.
                    self.len.fetch_sub(1, Ordering::Relaxed);
                }
                if fits(&e) {
                    e.counters.add(bytes, status, client, now_ms, cap);
                } else {
                    overflow = true;
                }
            }
        }
        if overflow {
            METRICS.usage_overflow.inc();
            // One `other` row per token and day, whatever the bound.
            let hash = self.hasher.hash_one((&**token, day, OTHER_KEY, ()));
            let mut e = self.entries.entry(hash).or_insert_with(|| {
                self.len.fetch_add(1, Ordering::Relaxed);
                Entry {
                    token: token.clone(),
                    day,
                    key: UsageKey::Other,
                    counters: Counters::new(now_ms),
                }
            });
            e.counters.add(bytes, status, client, now_ms, cap);
        }
        if let Some(ip) = client {
            self.note_address(token, ip, now);
        }
    }

    /// Notes `ip` in `token`'s current hour; queues an [`Anomaly`] the first time the hour
    /// passes `usage.anomaly_addresses`.
    fn note_address(&self, token: &Arc<str>, ip: IpAddr, now: DateTime<Utc>) {
        let bound = self.config.anomaly_addresses;
        if bound == 0 {
            return;
        }
        let hour = now.timestamp().div_euclid(3600);
        if let Some(h) = self.hours.get(token) {
            if h.hour == hour && (h.fired || h.addresses.contains(&ip)) {
                return;
            }
        }
        let mut h = self.hours.entry(token.clone()).or_insert_with(|| Hour {
            hour,
            addresses: Vec::new(),
            fired: false,
        });
        if h.hour != hour {
            *h = Hour {
                hour,
                addresses: Vec::new(),
                fired: false,
            };
        }
        if h.fired || h.addresses.contains(&ip) {
            return;
        }
        h.addresses.push(ip);
        if h.addresses.len() > bound {
            h.fired = true;
            let anomaly = Anomaly {
                token: token.clone(),
                hour,
                addresses: std::mem::take(&mut h.addresses),
            };
            drop(h);
            tracing::warn!(
                token_id = &**token,
                addresses = anomaly.addresses.len(),
                bound,
                "token used from more distinct addresses within the hour than usage.anomaly_addresses"
            );
            if !self.anomalies_wanted.load(Ordering::Relaxed) {
                return;
            }
            let mut pending = lock(&self.anomalies);
            if pending.len() < MAX_PENDING_ANOMALIES {
                pending.push(anomaly);
            } else {
                tracing::warn!(
                    token_id = &**token,
                    "usage anomaly dropped: too many pending"
                );
            }
        }
    }

    /// From now on anomalies are kept for [`Ledger::take_anomalies`] (a webhook wants them).
    pub fn want_anomalies(&self) {
        self.anomalies_wanted.store(true, Ordering::Relaxed);
    }

    /// The anomalies found since the last call.
    pub fn take_anomalies(&self) -> Vec<Anomaly> {
        std::mem::take(&mut *lock(&self.anomalies))
    }

    /// Takes every entry out of memory (and the batch that failed last time, merged in).
    pub fn drain(&self) -> Vec<Entry> {
        let mut batch = std::mem::take(&mut *lock(&self.retry));
        let mut taken = 0;
        self.entries.retain(|_, e| {
            batch.push(Entry {
                token: e.token.clone(),
                day: e.day,
                key: std::mem::replace(&mut e.key, UsageKey::Other),
                counters: std::mem::replace(&mut e.counters, Counters::new(0)),
            });
            taken += 1;
            false
        });
        self.len.fetch_sub(taken, Ordering::Relaxed);
        merge_same(batch, self.config.max_addresses)
    }

    /// Keeps a batch that could not be written for the next flush (bounded: the rest is
    /// dropped and logged).
    fn keep_for_retry(&self, mut batch: Vec<Entry>) {
        let mut retry = lock(&self.retry);
        batch.extend(retry.drain(..));
        if batch.len() > MAX_RETRY_ENTRIES {
            tracing::warn!(
                dropped = batch.len() - MAX_RETRY_ENTRIES,
                "usage entries dropped: the database stayed unavailable"
            );
            batch.truncate(MAX_RETRY_ENTRIES);
        }
        *retry = batch;
    }

    /// Writes what is in memory now; returns the entries written.
    pub async fn flush(&self) -> Result<usize, crate::store::db::DbError> {
        let Some(db) = self.database() else {
            return Ok(0);
        };
        let batch = self.drain();
        if batch.is_empty() {
            return Ok(0);
        }
        let n = batch.len();
        match db::write(db, &batch, self.config.max_addresses).await {
            Ok(()) => {
                METRICS.usage_flushed.inc_by(n as u64);
                Ok(n)
            }
            Err(e) => {
                self.keep_for_retry(batch);
                Err(e)
            }
        }
    }

    /// Forgets hours that are over.
    fn prune_hours(&self, now: DateTime<Utc>) {
        let hour = now.timestamp().div_euclid(3600);
        self.hours.retain(|_, h| h.hour == hour);
    }
}

/// Entries with the same (token, day, key) merged into one.
fn merge_same(batch: Vec<Entry>, cap: usize) -> Vec<Entry> {
    let mut seen: std::collections::HashMap<(Arc<str>, i64, UsageKey), usize> =
        std::collections::HashMap::with_capacity(batch.len());
    let mut out: Vec<Entry> = Vec::with_capacity(batch.len());
    for e in batch {
        match seen.get(&(e.token.clone(), e.day, e.key.clone())) {
            Some(&i) => out[i].counters.merge(&e.counters, cap),
            None => {
                seen.insert((e.token.clone(), e.day, e.key.clone()), out.len());
                out.push(e);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
