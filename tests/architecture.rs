//! The module boundaries of docs/ARCHITECTURE.md, checked on the source: which top-level
//! module of `src/` may name which (`crate::x` paths outside comments), that they form no
//! cycle, that the configuration does no I/O beyond reading its file, and that long files say
//! why they are long.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The top-level module a file belongs to (`src/proxy/headers.rs` → `proxy`).
fn module_of(path: &Path) -> String {
    let rel = path.strip_prefix(src()).expect("under src");
    let first = rel
        .components()
        .next()
        .expect("a component")
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// The code of a file without `//` comments (doc comments name other modules freely).
fn code(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::a::b…` path in `code`, as its segments (`crate::{a, b::c}` included).
fn crate_paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let segs: Vec<String> = item
                    .trim()
                    .split("::")
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                if !segs.is_empty() {
                    out.push(segs);
                }
            }
            continue;
        }
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        let segs: Vec<String> = rest[..end]
            .split("::")
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if !segs.is_empty() {
            out.push(segs);
        }
    }
    out
}

struct Crate {
    /// module → (module it names → the paths, for messages)
    uses: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
    files: Vec<(PathBuf, String)>,
}

fn read_crate() -> Crate {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files.sort();
    let mut uses: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    let mut texts = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read source");
        let module = module_of(&f);
        let entry = uses.entry(module.clone()).or_default();
        for path in crate_paths(&code(&text)) {
            if path[0] != module {
                entry
                    .entry(path[0].clone())
                    .or_default()
                    .insert(path.join("::"));
            }
        }
        texts.push((f, text));
    }
    Crate { uses, files: texts }
}

#[test]
fn top_level_modules_form_no_cycle() {
    let c = read_crate();
    // Depth-first search for a back edge; report the cycle it closes.
    fn visit(
        m: &str,
        c: &Crate,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == m) {
            let mut cycle = stack[i..].to_vec();
            cycle.push(m.to_string());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        stack.push(m.to_string());
        for next in c
            .uses
            .get(m)
            .map(|u| u.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            if let Some(cycle) = visit(&next, c, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for m in c.uses.keys() {
        if m == "lib" || m == "main" {
            continue;
        }
        if let Some(cycle) = visit(m, &c, &mut Vec::new(), &mut done) {
            let why: Vec<String> = cycle
                .windows(2)
                .map(|w| {
                    let paths = &c.uses[&w[0]][&w[1]];
                    format!("{} → {} ({})", w[0], w[1], paths.iter().next().unwrap())
                })
                .collect();
            panic!("import cycle: {}", why.join(", "));
        }
    }
}

/// `module` may name only `allowed` of Tollgate's other modules.
fn only(c: &Crate, module: &str, allowed: &[&str]) {
    let named = c.uses.get(module).cloned().unwrap_or_default();
    let bad: Vec<String> = named
        .iter()
        .filter(|(m, _)| !allowed.contains(&m.as_str()))
        .map(|(m, paths)| {
            format!(
                "{m} ({})",
                paths.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        })
        .collect();
    assert!(bad.is_empty(), "{module} must not name: {}", bad.join("; "));
}

#[test]
fn each_layer_names_only_the_layers_below_it() {
    let c = read_crate();
    // Leaves: nothing of Tollgate.
    for leaf in [
        "sys",
        "metrics",
        "ratelimit",
        "lifecycle",
        "tls",
        "net",
        "scope",
    ] {
        only(&c, leaf, &[]);
    }
    // The domain: tokens, their routes and names.
    only(&c, "token", &["sys", "scope"]);
    // Configuration: data and validation only.
    only(&c, "config", &["token", "net", "metrics", "scope"]);
    only(&c, "logging", &["config", "net"]);
    only(&c, "store", &["config", "token", "metrics", "sys"]);
    only(
        &c,
        "auth",
        &["config", "token", "store", "ratelimit", "metrics", "sys"],
    );
    only(&c, "conn", &["config", "metrics", "sys"]);
    only(&c, "upstream", &["config", "metrics"]);
    only(
        &c,
        "usage",
        &["config", "metrics", "scope", "store", "token"],
    );
    only(
        &c,
        "webhook",
        &["config", "metrics", "store", "token", "usage"],
    );
    // Trusted publishing: verifies job tokens, keeps its tables, mints through the store.
    only(&c, "oidc", &["config", "token", "store", "metrics"]);
    only(&c, "shared", &["config", "metrics", "ratelimit", "token"]);
    only(
        &c,
        "proxy",
        &[
            "auth",
            "config",
            "lifecycle",
            "logging",
            "metrics",
            "net",
            "oidc",
            "ratelimit",
            "scope",
            "shared",
            "store",
            "token",
            "upstream",
            "usage",
        ],
    );
    only(
        &c,
        "admin",
        &[
            "auth",
            "config",
            "lifecycle",
            "metrics",
            "shared",
            "oidc",
            "store",
            "tls",
            "token",
            "usage",
            "webhook",
        ],
    );
}

#[test]
fn the_proxy_uses_the_store_through_its_front_door_only() {
    let c = read_crate();
    let paths = c
        .uses
        .get("proxy")
        .and_then(|u| u.get("store"))
        .cloned()
        .unwrap_or_default();
    // `crate::store::Store` (a type re-exported at the top of `store`) is the front door;
    // `crate::store::db::…`, `crate::store::live::…` are internals.
    let internal: Vec<&String> = paths
        .iter()
        .filter(|p| {
            p.split("::")
                .nth(1)
                .is_some_and(|s| s.starts_with(|c: char| c.is_lowercase()))
        })
        .collect();
    assert!(
        internal.is_empty(),
        "the proxy reaches into the store: {internal:?}"
    );
}

#[test]
fn the_configuration_does_no_io_beyond_reading_its_file() {
    let c = read_crate();
    let forbidden = [
        "to_socket_addrs",
        "lookup_host",
        "TcpListener",
        "TcpStream",
        "UdpSocket",
        "CertStore",
        "sqlx",
        "fs::write",
        "File::create",
        "OpenOptions",
        "create_dir",
        "tokio::",
    ];
    for (path, text) in &c.files {
        if module_of(path) != "config" {
            continue;
        }
        let code = code(text);
        for word in forbidden {
            assert!(
                !code.contains(word),
                "{} uses {word}: configuration loading reads its file and the environment only",
                path.display()
            );
        }
    }
}

#[test]
fn long_files_say_why_they_are_long() {
    let c = read_crate();
    let mut unexplained = Vec::new();
    for (path, text) in &c.files {
        let lines = text.lines().count();
        if lines <= 500 {
            continue;
        }
        let header: String = text
            .lines()
            .take_while(|l| l.starts_with("//!") || l.trim().is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        if !header.to_lowercase().contains("over 500 lines") {
            unexplained.push(format!("{} ({lines} lines)", path.display()));
        }
    }
    assert!(
        unexplained.is_empty(),
        "files over 500 lines whose `//!` does not say why (\"Over 500 lines: …\"): {}",
        unexplained.join(", ")
    );
}
