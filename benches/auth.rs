//! Micro benchmarks of the per-request auth path (the cost that must stay small next to
//! pingora's own per request): the whole path on a
//! cache hit (credential parse, token check, digest, cache lookup, generation/expiry check,
//! path normalization, route match, rate-limit decision), route matching with 1 and 100 routes,
//! path normalization, and a cache miss with the default argon2 parameters.
// criterion_group! generates a public function without documentation.
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use chrono::Utc;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use tollgate::auth::policy::allows;
use tollgate::auth::{normalize_path, parse_authorization, required_permission, Caller, Verifier};
use tollgate::config::{self, HashParams, Overrides};
use tollgate::ratelimit::{Limit, RateLimiter};
use tollgate::store::Snapshot;
use tollgate::token::{self, Access, Permission, Route, RoutePattern, Source, Token};

fn token_with(params: &HashParams, routes: Vec<Route>) -> (Token, String) {
    let g = token::generate();
    let hash = token::hash_secret(g.token.expose(), params).unwrap();
    let t = Token {
        id: Arc::from(g.id.as_str()),
        name: Arc::from("bench"),
        description: None,
        hash: token::validate_phc(&hash).unwrap(),
        permission: Permission::Read,
        routes,
        created_at: None,
        expires_at: None,
        rate_limit: None,
        generation: 1,
        disabled: false,
        allowed_ips: Default::default(),
        previous: None,
        packages: Default::default(),
        source: Source::Database,
    };
    (t, g.token.expose().to_string())
}

fn routes(n: usize) -> Vec<Route> {
    (0..n)
        .map(|i| Route {
            pattern: RoutePattern::parse(&format!("/p2/vendor{i}/*")).unwrap(),
            access: Access::Read,
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (config, _) =
        config::load(None, Vec::<(String, String)>::new(), &Overrides::default()).unwrap();
    let users = config.tokens.token_usernames.clone();
    let params = config.hashing;

    // The whole path on a cache hit, with Basic (Composer) credentials and 1 route.
    let (tok, secret) = token_with(&params, routes(1));
    let snapshot = Snapshot::build(vec![tok], 1).unwrap();
    let verifier = Verifier::new(&config);
    let header = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("token:{secret}"))
    );
    let bearer = format!("Bearer {secret}");
    let limiter = RateLimiter::default();
    let limit = Limit {
        requests: u32::MAX,
        period: Duration::from_secs(3600),
    };
    let method = http::Method::GET;
    // Warm the cache (one argon2 run).
    rt.block_on(async {
        let p = parse_authorization(Some(header.as_bytes()), &users).unwrap();
        verifier
            .authenticate(&p, &snapshot, Utc::now(), Caller::default())
            .await
            .unwrap();
    });
    let hit = |h: &str| {
        let h = h.to_string();
        let (snapshot, verifier, limiter, users, method) =
            (&snapshot, &verifier, &limiter, &users, &method);
        move || {
            let h = h.clone();
            async move {
                let p = parse_authorization(Some(black_box(h.as_bytes())), users).unwrap();
                let t = verifier
                    .authenticate(&p, snapshot, Utc::now(), Caller::default())
                    .await
                    .unwrap();
                let path = normalize_path(black_box("/p2/vendor0/package.json")).unwrap();
                assert!(allows(&t, required_permission(method), &path));
                black_box(limiter.check(&t.id, &limit));
            }
        }
    };
    c.bench_function("auth path, cache hit, Basic token:T", |b| {
        b.to_async(&rt).iter(hit(&header))
    });
    c.bench_function("auth path, cache hit, Bearer T", |b| {
        b.to_async(&rt).iter(hit(&bearer))
    });

    // Route matching.
    for n in [1usize, 100] {
        let (t, _) = token_with(&HashParams::cheap(), routes(n));
        let last = format!("/p2/vendor{}/package.json", n - 1);
        c.bench_function(&format!("route match, {n} routes (last matches)"), |b| {
            b.iter(|| allows(black_box(&t), Permission::Read, black_box(&last)))
        });
    }

    // Path normalization.
    c.bench_function("normalize, clean path", |b| {
        b.iter(|| normalize_path(black_box("/p2/acme/widget~dev.json")))
    });
    c.bench_function("normalize, dots and escapes", |b| {
        b.iter(|| normalize_path(black_box("/p2/./acme//x/../%77idget%7edev.json")))
    });

    // A cache miss: one argon2id verification with the configured (default) parameters.
    let (miss, miss_secret) = token_with(&params, vec![]);
    let phc = miss.hash.clone();
    let mut group = c.benchmark_group("cache miss");
    group.sample_size(10);
    group.bench_function("argon2id verify, default params (m=19456,t=2,p=1)", |b| {
        b.iter(|| assert!(token::verify_secret(black_box(&miss_secret), &phc)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
