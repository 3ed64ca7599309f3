//! The rate-limit fields every response of a limited token carries (the default: every token
//! has the default limit): rendering them, and adding them to an upstream response the way the
//! proxy's `response_filter` does. Before timing, prints the heap allocations (and bytes) each
//! takes, counted by a wrapping global allocator: allocations are the part of this cost that
//! does not shrink with a faster machine.
//!
//!   cargo bench --bench headers
// criterion_group! generates a public function without documentation.
#![allow(missing_docs)]

use std::alloc::System;
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use pingora::http::ResponseHeader;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use tollgate::proxy::rate_headers;
use tollgate::ratelimit::{Decision, Limit, RateLimiter};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Heap allocations (reallocations included) and bytes per call of `f`, over `n` calls.
fn allocations(n: u64, mut f: impl FnMut()) -> (f64, f64) {
    let region = Region::new(GLOBAL);
    for _ in 0..n {
        f();
    }
    let s = region.change();
    (
        (s.allocations + s.reallocations) as f64 / n as f64,
        (s.bytes_allocated + s.bytes_reallocated.max(0) as usize) as f64 / n as f64,
    )
}

/// A response as pingora parses it from the upstream: case-preserving, five fields.
fn upstream_response() -> ResponseHeader {
    let mut r = ResponseHeader::build(200, Some(8)).unwrap();
    for (k, v) in [
        ("Server", "nginx"),
        ("Date", "Wed, 02 Dec 2026 14:00:00 GMT"),
        ("Content-Type", "application/octet-stream"),
        ("Content-Length", "1024"),
        ("ETag", "\"6560a1b2-400\""),
    ] {
        r.append_header(k, v).unwrap();
    }
    r
}

/// A decision for a token under the default limit, mid-budget.
fn decision() -> Decision {
    let limiter = RateLimiter::default();
    let limit = Limit::new(1000, Duration::from_secs(3600)).unwrap();
    let id = String::from("tok-bench");
    for _ in 0..10 {
        limiter.check(&id, &limit);
    }
    limiter.check(&id, &limit)
}

fn bench(c: &mut Criterion) {
    let d = decision();
    let now = Duration::from_secs(1_796_000_000);
    const N: u64 = 10_000;

    let (render_a, render_b) = allocations(N, || {
        black_box(rate_headers::render(black_box(&d), now));
    });
    let (setup_a, setup_b) = allocations(N, || {
        black_box(upstream_response());
    });
    let (both_a, both_b) = allocations(N, || {
        let mut r = upstream_response();
        rate_headers::apply(&mut r, black_box(&d), now).unwrap();
        black_box(r);
    });
    eprintln!("allocations per call (bytes):");
    eprintln!("  render (list, for refusals):      {render_a:.1} ({render_b:.0} B)");
    eprintln!(
        "  apply to an upstream response:    {:.1} ({:.0} B)",
        both_a - setup_a,
        both_b - setup_b
    );

    c.bench_function("rate headers: render", |b| {
        b.iter(|| rate_headers::render(black_box(&d), now))
    });
    c.bench_function("rate headers: apply to an upstream response", |b| {
        b.iter_batched(
            upstream_response,
            |mut r| {
                rate_headers::apply(&mut r, black_box(&d), now).unwrap();
                r
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
