//! The ledger in memory: counting, the bound, anomalies, days.

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

#[test]
fn package_keys_are_counted_apart_from_paths_and_read_back() {
    let l = ledger(10, 0);
    let a: Arc<str> = Arc::from("tokA");
    let now = Utc::now();
    let w = "acme/widget";
    for _ in 0..3 {
        l.record_package(
            &a,
            Ecosystem::Composer,
            w,
            Some("2.3.1"),
            10,
            200,
            None,
            now,
        );
    }
    l.record_package(&a, Ecosystem::Composer, w, Some("2.3.2"), 7, 200, None, now);
    l.record_package(&a, Ecosystem::Composer, w, None, 1, 304, None, now);
    l.record_package(
        &a,
        Ecosystem::Npm,
        "@acme/widget",
        Some("1.0.0@x"),
        1,
        200,
        None,
        now,
    );
    l.record(&a, "/p2/acme/widget.json", 1, 200, None, now);
    assert_eq!(l.len(), 5);
    let mut batch = l.drain();
    batch.sort_by(|x, y| x.key.stored().cmp(y.key.stored()));
    let keys: Vec<&str> = batch.iter().map(|e| e.key.stored()).collect();
    assert_eq!(
        keys,
        [
            "/p2/acme/widget.json",
            "pkg:composer/acme/widget",
            "pkg:composer/acme/widget@2.3.1",
            "pkg:composer/acme/widget@2.3.2",
            "pkg:npm/@acme/widget@1.0.0@x",
        ]
    );
    assert_eq!(batch[0].key.parts(), None);
    assert_eq!(batch[2].counters.requests, 3);
    assert_eq!(batch[2].counters.bytes, 30);
    let parts = |i: usize| {
        let p = batch[i].key.parts().unwrap();
        (p.ecosystem, p.package, p.version)
    };
    assert_eq!(parts(1), (Ecosystem::Composer, w, ""));
    assert_eq!(parts(3), (Ecosystem::Composer, w, "2.3.2"));
    assert_eq!(parts(4), (Ecosystem::Npm, "@acme/widget", "1.0.0@x"));
    assert_eq!(UsageKey::Other.parts(), None);
}

#[test]
fn package_keys_count_against_the_bound() {
    let l = ledger(2, 0);
    let a: Arc<str> = Arc::from("tokA");
    let now = Utc::now();
    for v in ["1", "2", "3", "4"] {
        l.record_package(&a, Ecosystem::Cargo, "serde", Some(v), 1, 200, None, now);
    }
    let batch = l.drain();
    assert_eq!(batch.len(), 3, "two versions and the other row");
    let other = batch.iter().find(|e| e.key == UsageKey::Other).unwrap();
    assert_eq!(other.counters.requests, 2);
}
