//! Package scopes: the cost of mapping a request to its package (what every request of a
//! scoped token pays), and of filtering the big listings (a 10 MB Composer `packages.json`, a
//! PyPI `/simple/` page of 100,000 projects, HTML and JSON): throughput in MB/s from criterion,
//! and the peak memory of one filter run, printed once (Linux: the process's peak resident set
//! reset through /proc/self/clear_refs, read back from VmHWM).
// criterion_group! generates a public function without documentation.
#![allow(missing_docs)]

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use http::Method;
use tollgate::scope::filter::filter;
use tollgate::scope::{classify, Ecosystem, Layout, Layouts, Listing, PackagePatterns};

fn layouts() -> Layouts {
    Layouts::new(vec![
        Layout::new(Ecosystem::Composer, "/", None).unwrap(),
        Layout::new(Ecosystem::Npm, "/npm/", None).unwrap(),
        Layout::new(Ecosystem::Pypi, "/pypi/", None).unwrap(),
        Layout::new(Ecosystem::Cargo, "/cargo/", None).unwrap(),
        Layout::new(Ecosystem::Maven, "/maven/", None).unwrap(),
    ])
    .unwrap()
}

fn patterns() -> PackagePatterns {
    PackagePatterns::parse(&["acme/*", "@acme/*", "acme-*", "acme_*", "com.acme:*"]).unwrap()
}

/// A `packages.json` of about `bytes` bytes: inline metadata and `available-packages` over
/// many vendors, one in a hundred of them `acme`.
fn packages_json(bytes: usize) -> Vec<u8> {
    let mut packages = serde_json::Map::new();
    let mut names = Vec::new();
    let mut i = 0;
    let mut size = 0;
    while size < bytes {
        let vendor = if i % 100 == 0 {
            "acme".to_string()
        } else {
            format!("vendor{}", i % 997)
        };
        let name = format!("{vendor}/package-{i}");
        let meta = serde_json::json!({"1.0.0": {"name": name, "version": "1.0.0",
            "dist": {"type": "zip", "url": format!("https://store.example/dist/{name}/1.0.0.zip"),
                     "shasum": "0123456789abcdef0123456789abcdef01234567"}}});
        size += name.len() * 3 + 180;
        packages.insert(name.clone(), meta);
        names.push(name);
        i += 1;
    }
    serde_json::to_vec(&serde_json::json!({
        "packages": packages,
        "available-packages": names,
        "metadata-url": "/p2/%package%.json",
    }))
    .unwrap()
}

fn simple_html(n: usize) -> Vec<u8> {
    let mut s =
        String::from("<!DOCTYPE html>\n<html><head><title>Simple index</title></head><body>\n");
    for i in 0..n {
        let name = if i % 100 == 0 {
            format!("acme-project-{i}")
        } else {
            format!("project-{i}")
        };
        s.push_str(&format!("<a href=\"/simple/{name}/\">{name}</a><br/>\n"));
    }
    s.push_str("</body></html>\n");
    s.into_bytes()
}

fn simple_json(n: usize) -> Vec<u8> {
    let projects: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let name = if i % 100 == 0 {
                format!("acme-project-{i}")
            } else {
                format!("project-{i}")
            };
            serde_json::json!({"name": name})
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({"meta": {"api-version": "1.0"}, "projects": projects}))
        .unwrap()
}

/// The growth of the peak resident set while `f` runs once, in MiB (None off Linux).
fn peak_mib(f: impl FnOnce()) -> Option<f64> {
    let read = |key: &str| -> Option<f64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with(key))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    };
    std::fs::write("/proc/self/clear_refs", "5").ok()?;
    let before = read("VmRSS:")?;
    f();
    Some(read("VmHWM:")? - before)
}

fn bench(c: &mut Criterion) {
    let l = layouts();
    let allowed = patterns();
    let requests = [
        (Method::GET, "/p2/acme/widget.json"),
        (Method::GET, "/dist/acme/widget/acme-widget-1.0.0.zip"),
        (Method::GET, "/npm/@acme%2Fwidget"),
        (Method::GET, "/npm/@acme/widget/-/widget-1.0.0.tgz"),
        (Method::GET, "/pypi/simple/acme-widget/"),
        (
            Method::GET,
            "/pypi/packages/acme_widget-1.0-py3-none-any.whl",
        ),
        (Method::GET, "/cargo/ac/me/acme_widget"),
        (Method::GET, "/maven/com/acme/widget/1.0/widget-1.0.jar"),
    ];
    let mut g = c.benchmark_group("scope_map");
    for (m, p) in &requests {
        g.bench_function(*p, |b| {
            b.iter(|| {
                let t = classify(&l, black_box(m), black_box(p));
                black_box(matches!(t, tollgate::scope::Target::Package(e, ref n)
                    if n.iter().all(|n| allowed.allows_normal(e, n))))
            })
        });
    }
    g.finish();

    let cases = [
        (
            "packages_json_10MB",
            Listing::ComposerRoot,
            Some("application/json"),
            packages_json(10 << 20),
        ),
        (
            "simple_html_100k",
            Listing::PypiSimple,
            Some("text/html"),
            simple_html(100_000),
        ),
        (
            "simple_json_100k",
            Listing::PypiSimple,
            Some("application/vnd.pypi.simple.v1+json"),
            simple_json(100_000),
        ),
    ];
    let mut g = c.benchmark_group("scope_filter");
    g.sample_size(10);
    for (name, listing, ct, body) in &cases {
        if let Some(mib) = peak_mib(|| {
            black_box(filter(*listing, *ct, body, &allowed).unwrap());
        }) {
            eprintln!(
                "{name}: body {:.1} MiB, peak memory growth of one filter run {mib:.1} MiB",
                body.len() as f64 / (1 << 20) as f64
            );
        }
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(*name, |b| {
            b.iter(|| black_box(filter(*listing, *ct, black_box(body), &allowed).unwrap()))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
