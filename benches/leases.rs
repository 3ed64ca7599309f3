//! The shared rate limit's fast path next to the in-process limiter it replaces: a request
//! served from this replica's lease (a map lookup and a decrement; every tenth request starts a
//! background refill from Redis) vs one GCRA decision in process. Starts its own
//! `redis-server` on a free port (none installed: the shared case is skipped, said on stderr).
// criterion_group! generates a public function without documentation.
#![allow(missing_docs)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use tollgate::config::{self, Overrides};
use tollgate::ratelimit::{Limit, RateLimiter};
use tollgate::shared::{Backend, SharedLimits};

/// A private redis-server, killed on drop.
struct Redis(Child);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis(dir: &std::path::Path) -> Option<(Redis, u16)> {
    let port = TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    Some((Redis(child), port))
}

fn bench(c: &mut Criterion) {
    let limit = Limit::new(1_000_000_000, Duration::from_secs(3600)).unwrap();
    let id: Arc<str> = Arc::from("AAAAAAAAAAAA");
    let local: RateLimiter = RateLimiter::default();
    c.bench_function("rate limit: in-process GCRA", |b| {
        b.iter(|| black_box(local.check(&id, &limit)))
    });

    let dir = tempfile::tempdir().unwrap();
    let Some((_redis, port)) = start_redis(dir.path()) else {
        eprintln!("redis-server not found: the shared-limit case is skipped");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let env = vec![(
        "TOLLGATE_RATE_LIMIT__BACKEND".to_string(),
        format!("redis://127.0.0.1:{port}/0"),
    )];
    let (config, _) = config::load(None, env, &Overrides::default()).unwrap();
    let backend = Backend::new(config.rate_limit_backend.as_ref().unwrap()).unwrap();
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    rt.spawn(backend.clone().run(stop_rx));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !backend.is_up() {
        assert!(Instant::now() < deadline, "redis-server never answered");
        std::thread::sleep(Duration::from_millis(20));
    }
    let shared = SharedLimits::new(backend);
    c.bench_function("rate limit: shared on Redis, served from the lease", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(shared.check(&id, &limit).await) })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
