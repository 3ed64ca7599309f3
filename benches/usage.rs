//! The usage ledger's per-request cost (`Ledger::record`, called in the proxy's logging phase
//! for every request made with a token): an entry that exists (the common case: a client
//! fetching the same files again), a new path each time until the bound and then the overflow
//! row, and with the anomaly tracking off. With `upstream.layouts`, a download is keyed by
//! package: the mapping (`scope::artifact`) and `Ledger::record_package` together, as the
//! logging phase runs them, and a path that maps to no package (the mapping's miss, then
//! `record`). Compare with `auth`'s cache-hit path in the same run: the ledger must stay a small
//! fraction of it.
//!
//! Before timing, prints the memory one entry holds: the bytes allocated (net of frees,
//! counted by a wrapping global allocator) by filling a ledger with N path entries, then N
//! package entries, divided by N. `usage.max_entries` × that is the ledger's bound.
//!
//!   cargo bench --bench usage
// criterion_group! generates a public function without documentation.
#![allow(missing_docs)]

use std::alloc::System;
use std::net::IpAddr;
use std::sync::Arc;

use chrono::Utc;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::Method;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use tollgate::config::{self, Overrides};
use tollgate::scope::{self, Ecosystem, Layout, Layouts};
use tollgate::store::Store;
use tollgate::usage::Ledger;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn ledger(max_entries: usize, anomaly_addresses: usize) -> Arc<Ledger> {
    let (mut c, _) = config::load(None, vec![], &Overrides::default()).unwrap();
    c.usage.max_entries = max_entries;
    c.usage.anomaly_addresses = anomaly_addresses;
    Ledger::new(&c.usage, Arc::new(Store::new(&c, None))).unwrap()
}

/// Every ecosystem under its own prefix, Composer at the root with a versioned dist pattern.
fn layouts() -> Layouts {
    let dist = ["dist/{vendor}/{package}/{version}/{file}".to_string()];
    Layouts::new(vec![
        Layout::new(Ecosystem::Composer, "/", Some(&dist)).unwrap(),
        Layout::new(Ecosystem::Npm, "/npm/", None).unwrap(),
        Layout::new(Ecosystem::Pypi, "/pypi/", None).unwrap(),
        Layout::new(Ecosystem::Cargo, "/cargo/", None).unwrap(),
        Layout::new(Ecosystem::Maven, "/maven/", None).unwrap(),
    ])
    .unwrap()
}

/// Net bytes allocated per entry by `fill(i)` for i in 0..n on a fresh ledger.
fn bytes_per_entry(n: usize, fill: impl Fn(&Ledger, usize)) -> f64 {
    let region = Region::new(GLOBAL);
    let l = ledger(n + 1, 0);
    for i in 0..n {
        fill(&l, i);
    }
    assert_eq!(l.len(), n);
    let s = region.change();
    let net = (s.bytes_allocated + s.bytes_reallocated.max(0) as usize) as f64
        - s.bytes_deallocated as f64;
    drop(l);
    net / n as f64
}

fn memory(token: &Arc<str>, ip: Option<IpAddr>) {
    let now = Utc::now();
    const N: usize = 100_000;
    // Paths and versions as long as real ones; the strings themselves are made outside the
    // counted region only where the proxy would not make them either.
    let paths: Vec<String> = (0..N)
        .map(|i| format!("/dist/acme/widget-{i}/acme-widget-{i}-2.3.1.zip"))
        .collect();
    let path = bytes_per_entry(N, |l, i| l.record(token, &paths[i], 1024, 200, ip, now));
    let names: Vec<String> = (0..N).map(|i| format!("acme/widget-{i}")).collect();
    let package = bytes_per_entry(N, |l, i| {
        l.record_package(
            token,
            Ecosystem::Composer,
            &names[i],
            Some("2.3.1"),
            1024,
            200,
            ip,
            now,
        )
    });
    println!(
        "usage ledger memory per entry ({N} entries, one address each): path key {path:.0} B \
         (path of {} B), package key {package:.0} B (key of {} B)",
        paths[0].len(),
        "pkg:composer/acme/widget-0@2.3.1".len()
    );
}

fn bench(c: &mut Criterion) {
    let token: Arc<str> = Arc::from("Xb3kQ9aLmP2r");
    let ip = Some(IpAddr::from([10, 1, 2, 3]));
    let now = Utc::now();
    memory(&token, ip);

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

    // What the logging phase does for a download under layouts: map, then count.
    let layouts = layouts();
    let l = ledger(100_000, 10);
    for (name, path) in [
        (
            "usage_package_key_composer_dist",
            "/dist/acme/widget/2.3.1/acme-widget-2.3.1.zip",
        ),
        (
            "usage_package_key_npm_tarball",
            "/npm/@acme/widget/-/widget-2.3.1.tgz",
        ),
        (
            "usage_package_key_pypi_wheel",
            "/pypi/packages/ab/cd/acme_widget-2.3.1-py3-none-any.whl",
        ),
        (
            "usage_package_key_maven_jar",
            "/maven/com/acme/widget/2.3.1/widget-2.3.1.jar",
        ),
        // No package: the mapping misses, the path is counted.
        ("usage_package_key_miss_path", "/maven/com/acme/"),
    ] {
        c.bench_function(name, |b| {
            b.iter(
                || match scope::artifact(&layouts, &Method::GET, black_box(path)) {
                    Some(a) => l.record_package(
                        &token,
                        a.ecosystem,
                        &a.package,
                        a.version.as_deref(),
                        1024,
                        200,
                        ip,
                        now,
                    ),
                    None => l.record(&token, path, 1024, 200, ip, now),
                },
            )
        });
    }
    // The count alone, the mapping done: the ledger's share of the above.
    c.bench_function("usage_record_package_existing_entry", |b| {
        b.iter(|| {
            l.record_package(
                &token,
                Ecosystem::Composer,
                black_box("acme/widget"),
                Some("2.3.1"),
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
