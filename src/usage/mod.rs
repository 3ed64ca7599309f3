//! The usage ledger: who fetched what, when, how often and from how many addresses.
//!
//! The proxy's logging phase calls [`Ledger::record`] for every request made with a token: a
//! sharded map keyed by (token, usage key, UTC day) adds to that entry's counters (requests,
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
mod range;
mod run;

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use chrono::{DateTime, Utc};
use dashmap::DashMap;

use crate::config::UsageConfig;
use crate::metrics::METRICS;
use crate::store::db::Database;
use crate::store::Store;

pub use entry::{day_number, day_text, parse_day, Counters, Entry, UsageKey, OTHER_KEY};
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
        }))
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
        let now_ms = now.timestamp_millis();
        let day = day_number(now);
        let path = cut(path);
        let cap = self.config.max_addresses;
        let hash = self.hasher.hash_one((&**token, day, path));
        let fits = |e: &Entry| {
            *e.token == **token
                && e.day == day
                && matches!(&e.key, UsageKey::Path(p) if &**p == path)
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
                        key: UsageKey::Path(path.into()),
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
mod tests {
    use super::*;

    fn ledger(max_entries: usize, anomaly: usize) -> Arc<Ledger> {
        let (mut c, _) = crate::config::load(None, vec![], &Default::default()).unwrap();
        c.usage.max_entries = max_entries;
        c.usage.anomaly_addresses = anomaly;
        c.usage.max_addresses = 3;
        let store = Arc::new(Store::new(&c, None));
        Ledger::new(&c.usage, store).unwrap()
    }

    #[test]
    fn counts_per_token_key_and_day_and_overflows_into_other() {
        let l = ledger(3, 0);
        let a: Arc<str> = Arc::from("tokA");
        let now = Utc::now();
        let ip = |n: u8| Some(IpAddr::from([127, 0, 0, n]));
        l.record(&a, "/x", 10, 200, ip(1), now);
        l.record(&a, "/x", 5, 404, ip(2), now);
        for n in 3..8 {
            l.record(&a, "/x", 1, 200, ip(n), now);
        }
        l.record(&a, "/y", 1, 304, ip(1), now);
        l.record(&a, "/z", 1, 502, ip(1), now);
        assert_eq!(l.len(), 3);
        // full: new keys go to the token's `other` row (one more entry, not one per key)
        for p in ["/p1", "/p2", "/p3"] {
            l.record(&a, p, 2, 200, None, now);
        }
        assert_eq!(l.len(), 4);
        let mut batch = l.drain();
        assert!(l.is_empty());
        batch.sort_by(|x, y| x.key.stored().cmp(y.key.stored()));
        let keys: Vec<&str> = batch.iter().map(|e| e.key.stored()).collect();
        assert_eq!(keys, ["/x", "/y", "/z", "other"]);
        let x = &batch[0].counters;
        assert_eq!((x.requests, x.bytes, x.status), (7, 20, [6, 0, 1, 0]));
        assert_eq!(x.addresses.len(), 3, "capped");
        assert_eq!(batch[1].counters.status, [0, 1, 0, 0]);
        assert_eq!(batch[2].counters.status, [0, 0, 0, 1]);
        assert_eq!(
            (batch[3].counters.requests, batch[3].counters.bytes),
            (3, 6)
        );
        let long = "/".to_string() + &"é".repeat(400);
        l.record(&a, &long, 0, 200, None, now);
        assert!(l.drain()[0].key.stored().len() <= MAX_KEY);
    }

    #[test]
    fn an_anomaly_fires_once_per_token_and_hour() {
        let l = ledger(100, 3);
        l.want_anomalies();
        let a: Arc<str> = Arc::from("tokA");
        let b: Arc<str> = Arc::from("tokB");
        let now = Utc::now();
        for n in 1..=3 {
            l.record(&a, "/x", 0, 200, Some(IpAddr::from([10, 0, 0, n])), now);
        }
        for _ in 0..10 {
            l.record(&b, "/x", 0, 200, Some(IpAddr::from([10, 0, 0, 1])), now);
        }
        assert!(l.take_anomalies().is_empty());
        for n in 4..=9 {
            l.record(&a, "/x", 0, 200, Some(IpAddr::from([10, 0, 0, n])), now);
        }
        let found = l.take_anomalies();
        assert_eq!(found.len(), 1);
        assert_eq!(&*found[0].token, "tokA");
        assert_eq!(found[0].addresses.len(), 4);
        let next_hour = now + chrono::Duration::hours(1);
        l.prune_hours(next_hour);
        l.record(
            &a,
            "/x",
            0,
            200,
            Some(IpAddr::from([10, 0, 0, 1])),
            next_hour,
        );
        assert!(l.take_anomalies().is_empty());
    }

    #[test]
    fn days_round_trip() {
        let d = parse_day("2026-12-02").unwrap();
        assert_eq!(day_text(d), "2026-12-02");
        assert_eq!(parse_day("2026-13-02"), None);
    }
}
