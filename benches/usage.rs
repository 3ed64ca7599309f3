//! The usage ledger's per-request cost (`Ledger::record`, called in the proxy's logging phase
//! for every request made with a token): an entry that exists (the common case: a client
//! fetching the same files again), a new path each time until the bound and then the overflow
//! row, and with the anomaly tracking off. Compare with `auth`'s cache-hit path in the same
//! run: the ledger must stay a small fraction of it.
// criterion_group! generates a public function without documentation.
#![allow(missing_docs)]

use std::net::IpAddr;
use std::sync::Arc;

use chrono::Utc;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use tollgate::config::{self, Overrides};
use tollgate::store::Store;
use tollgate::usage::Ledger;

fn ledger(max_entries: usize, anomaly_addresses: usize) -> Arc<Ledger> {
    let (mut c, _) = config::load(None, vec![], &Overrides::default()).unwrap();
    c.usage.max_entries = max_entries;
    c.usage.anomaly_addresses = anomaly_addresses;
    Ledger::new(&c.usage, Arc::new(Store::new(&c, None))).unwrap()
}

fn bench(c: &mut Criterion) {
    let token: Arc<str> = Arc::from("Xb3kQ9aLmP2r");
    let ip = Some(IpAddr::from([10, 1, 2, 3]));
    let now = Utc::now();

    let l = ledger(100_000, 10);
    c.bench_function("usage_record_existing_entry", |b| {
        b.iter(|| {
            l.record(
                &token,
                black_box("/p2/acme/widget.json"),
                1024,
                200,
                ip,
                now,
            )
        })
    });

    let l = ledger(100_000, 0);
    c.bench_function("usage_record_existing_entry_no_anomaly", |b| {
        b.iter(|| {
            l.record(
                &token,
                black_box("/p2/acme/widget.json"),
                1024,
                200,
                ip,
                now,
            )
        })
    });

    let l = ledger(10_000, 10);
    let paths: Vec<String> = (0..50_000).map(|i| format!("/flood/{i}")).collect();
    let mut i = 0;
    c.bench_function("usage_record_distinct_paths_past_the_bound", |b| {
        b.iter(|| {
            i = (i + 1) % paths.len();
            l.record(&token, &paths[i], 1024, 200, ip, now)
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
