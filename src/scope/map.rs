//! A request (method, normalized path) mapped to what it touches: a package of an ecosystem, a
//! listing to filter, an upload whose package is in its body, a file that names no package,
//! or nothing Tollgate can tell (refused for scoped tokens).

use http::Method;

use super::layout::{Layout, Layouts};
use super::name::{normalize, Ecosystem};

/// A listing whose body names many packages and is filtered for scoped tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// Composer `packages.json`.
    ComposerRoot,
    /// A Composer file `packages.json` includes (`include/all$….json`, `p/provider-….json`).
    ComposerInclude,
    /// PyPI `/simple/` (PEP 503 HTML or PEP 691 JSON).
    PypiSimple,
    /// npm `/-/v1/search`.
    NpmSearch,
}

/// An upload whose package is named in its body only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upload {
    /// `twine upload`: a multipart form with a `name` field and the file parts.
    Twine,
    /// `cargo publish`: a length-prefixed JSON document with `name`, then the crate.
    CargoPublish,
}

/// What a request touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A package, by every name it could be (normal form): all must be allowed. One name but
    /// for legacy PyPI file names, whose split between name and version is ambiguous.
    Package(Ecosystem, Vec<String>),
    /// A listing of many packages.
    Listing(Ecosystem, Listing),
    /// An upload whose package is in its body.
    Upload(Ecosystem, Upload),
    /// A file that names no package (a cargo index's `config.json`).
    Neutral,
    /// Nothing Tollgate can tell.
    Unknown,
}

fn package(eco: Ecosystem, name: &str) -> Target {
    match normalize(eco, name) {
        Some(n) => Target::Package(eco, vec![n]),
        None => Target::Unknown,
    }
}

/// Maps a request under `layouts`. `path` is normalized (see `token::normalize_path`).
pub fn classify(layouts: &Layouts, method: &Method, path: &str) -> Target {
    read(layouts, method, path).0
}

/// A package and, where the path names it, its version: what the usage ledger counts a
/// download under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// The package's ecosystem.
    pub ecosystem: Ecosystem,
    /// The package's name, in its ecosystem's normal form.
    pub package: String,
    /// The version, as the path writes it; `None` for a package's metadata (Composer `p2`
    /// file, npm packument, PyPI `/simple/{project}/`, cargo index file, `maven-metadata.xml`).
    pub version: Option<String>,
}

/// The artifact a read (`GET`, `HEAD`) fetches, as [`classify`] reads the path: `None` for
/// listings, uploads and other writes, paths no layout tells, and names that are ambiguous
/// (a legacy PyPI sdist whose name could end at more than one `-`).
pub fn artifact(layouts: &Layouts, method: &Method, path: &str) -> Option<Artifact> {
    if !matches!(*method, Method::GET | Method::HEAD) {
        return None;
    }
    match read(layouts, method, path) {
        (Target::Package(ecosystem, mut names), version) if names.len() == 1 => Some(Artifact {
            ecosystem,
            package: names.pop()?,
            version: version.filter(|v| !v.is_empty()).map(str::to_string),
        }),
        _ => None,
    }
}

/// [`classify`], and the version the path names (a part of `path`), if any.
fn read<'a>(layouts: &Layouts, method: &Method, path: &'a str) -> (Target, Option<&'a str>) {
    if let Some((layout, re)) = layouts.dist_of(path) {
        if let Some(c) = re.captures(path) {
            let version = c.name("version").map(|v| v.as_str());
            return match from_captures(layout.kind, &c) {
                (t, Some(v)) => (t, Some(v)),
                (t, None) => (t, version),
            };
        }
    }
    let Some(layout) = layouts.iter().find(|l| {
        path.starts_with(&l.prefix)
            || path.len() + 1 == l.prefix.len() && l.prefix.starts_with(path)
    }) else {
        return (Target::Unknown, None);
    };
    let rel = path.get(layout.prefix.len()..).unwrap_or("");
    let read = matches!(*method, Method::GET | Method::HEAD);
    builtin(layout, method, read, rel)
}

fn from_captures<'a>(kind: Ecosystem, c: &regex::Captures<'a>) -> (Target, Option<&'a str>) {
    if let (Some(v), Some(p)) = (c.name("vendor"), c.name("package")) {
        return (
            package(kind, &format!("{}/{}", v.as_str(), p.as_str())),
            None,
        );
    }
    if let Some(n) = c.name("name") {
        let t = match kind {
            Ecosystem::Npm => npm_name(n.as_str()).map_or(Target::Unknown, |n| package(kind, &n)),
            _ => package(kind, n.as_str()),
        };
        return (t, None);
    }
    if let Some(f) = c.name("filename") {
        return match kind {
            Ecosystem::Pypi => pypi_read(f.as_str()),
            _ => (Target::Unknown, None),
        };
    }
    (Target::Unknown, None)
}

/// An npm name as it appears in a path: `name`, `@scope/name`, `@scope%2Fname`, with `@`
/// possibly as `%40`. Any other encoded byte: not a name.
pub fn npm_name(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3)?;
        match code {
            "40" => out.push('@'),
            "2F" | "2f" => out.push('/'),
            _ => return None,
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// The project of a PyPI distribution file: a wheel's (or egg's) first field; for an sdist
/// every split at a `-` followed by a digit (legacy names hold `-`, so the name's end is
/// ambiguous: all readings must be allowed). Signatures (`.asc`) and PEP 658 metadata
/// (`.metadata`) count as their file.
pub fn pypi_file(file: &str) -> Target {
    pypi_read(file).0
}

/// [`pypi_file`], and the version: a wheel's second field, an sdist's rest after the name
/// when there is one reading.
fn pypi_read(file: &str) -> (Target, Option<&str>) {
    let file = file.strip_suffix(".asc").unwrap_or(file);
    let file = file.strip_suffix(".metadata").unwrap_or(file);
    if file.contains('%') {
        return (Target::Unknown, None);
    }
    if file.ends_with(".whl") || file.ends_with(".egg") {
        return match file.split_once('-') {
            Some((name, rest)) => {
                let version = rest
                    .split('-')
                    .next()
                    .map(|v| v.trim_end_matches(".egg").trim_end_matches(".whl"));
                (package(Ecosystem::Pypi, name), version)
            }
            None => (Target::Unknown, None),
        };
    }
    let stem = [".tar.gz", ".zip", ".tar.bz2", ".tgz", ".tar.xz", ".tar"]
        .iter()
        .find_map(|ext| file.strip_suffix(ext));
    let Some(stem) = stem else {
        return (Target::Unknown, None);
    };
    let b = stem.as_bytes();
    let mut names = Vec::new();
    let mut version = None;
    for i in 1..b.len() {
        if b[i - 1] == b'-' && b[i].is_ascii_digit() {
            match normalize(Ecosystem::Pypi, &stem[..i - 1]) {
                Some(n) if !names.contains(&n) => {
                    names.push(n);
                    version = Some(&stem[i..]);
                }
                Some(_) => {}
                None => return (Target::Unknown, None),
            }
        }
    }
    match names.len() {
        0 => (Target::Unknown, None),
        1 => (Target::Package(Ecosystem::Pypi, names), version),
        _ => (Target::Package(Ecosystem::Pypi, names), None),
    }
}

fn builtin<'a>(
    layout: &Layout,
    method: &Method,
    read: bool,
    rel: &'a str,
) -> (Target, Option<&'a str>) {
    let segs: Vec<&str> = rel.split('/').collect();
    match layout.kind {
        Ecosystem::Composer => (composer(read, &segs), None),
        Ecosystem::Npm => npm(read, &segs),
        Ecosystem::Pypi => (pypi(method, read, &segs), None),
        Ecosystem::Cargo => cargo(method, &segs),
        Ecosystem::Maven => maven(&segs),
    }
}

fn composer(read: bool, segs: &[&str]) -> Target {
    let eco = Ecosystem::Composer;
    match segs {
        ["packages.json"] if read => Target::Listing(eco, Listing::ComposerRoot),
        ["include", file] | ["p", file]
            if read
                && file.ends_with(".json")
                && (segs[0] == "include" || file.starts_with("provider-")) =>
        {
            Target::Listing(eco, Listing::ComposerInclude)
        }
        ["p2", vendor, file] => match file.strip_suffix(".json") {
            Some(p) => package(
                eco,
                &format!("{vendor}/{}", p.strip_suffix("~dev").unwrap_or(p)),
            ),
            None => Target::Unknown,
        },
        ["p", vendor, file] => match file.strip_suffix(".json") {
            // `p/vendor/package$<sha256>.json` (Composer 1 providers).
            Some(p) => package(
                eco,
                &format!("{vendor}/{}", p.split('$').next().unwrap_or(p)),
            ),
            None => Target::Unknown,
        },
        _ => Target::Unknown,
    }
}

/// The npm package a path's leading segments name, and how many segments it took.
fn npm_lead(segs: &[&str]) -> Option<(String, usize)> {
    let first = npm_name(segs.first()?)?;
    if first.starts_with('@') && !first.contains('/') {
        let second = npm_name(segs.get(1)?)?;
        if second.contains('/') || second.starts_with('@') {
            return None;
        }
        return Some((format!("{first}/{second}"), 2));
    }
    Some((first, 1))
}

fn npm<'a>(read: bool, segs: &[&'a str]) -> (Target, Option<&'a str>) {
    let eco = Ecosystem::Npm;
    match segs {
        ["-", "v1", "search"] if read => return (Target::Listing(eco, Listing::NpmSearch), None),
        ["-", "package", rest @ ..] => {
            // `/-/package/{name}/dist-tags[/{tag}]`
            let t = match npm_lead(rest) {
                Some((name, n)) if rest.get(n) == Some(&"dist-tags") => package(eco, &name),
                _ => Target::Unknown,
            };
            return (t, None);
        }
        _ => {}
    }
    let Some((name, n)) = npm_lead(segs) else {
        return (Target::Unknown, None);
    };
    if name.starts_with('-') {
        return (Target::Unknown, None);
    }
    let bare = name.rsplit('/').next().unwrap_or(&name);
    // A tarball's file is `{bare}-{version}.tgz` (npm itself names it so); another file name
    // under this package's path is refused, in case a store serves files by name alone.
    let tarball = |file: &'a str| {
        file.strip_prefix(bare)
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|rest| rest.strip_suffix(".tgz"))
    };
    match &segs[n..] {
        // Packument, publish (PUT), unpublish of all (DELETE …/-rev/…).
        [] | ["-rev", _] => (package(eco, &name), None),
        // A version's manifest (`/{name}/{version}`, or a dist-tag such as `latest`).
        [version] => (package(eco, &name), Some(*version)),
        ["-", file] | ["-", file, "-rev", _] if tarball(file).is_some() => {
            (package(eco, &name), tarball(file))
        }
        // `/@scope/name/-/@scope/name-1.0.0.tgz`, as `npm publish` writes tarball URLs.
        ["-", scope, file] if name.split('/').next() == Some(*scope) && tarball(file).is_some() => {
            (package(eco, &name), tarball(file))
        }
        _ => (Target::Unknown, None),
    }
}

fn pypi(method: &Method, read: bool, segs: &[&str]) -> Target {
    let eco = Ecosystem::Pypi;
    match segs {
        ["simple"] | ["simple", ""] if read => Target::Listing(eco, Listing::PypiSimple),
        ["simple", project] | ["simple", project, ""] if read => {
            if project.contains('%') {
                Target::Unknown
            } else {
                package(eco, project)
            }
        }
        [""] | ["legacy", ""] | ["legacy"] if *method == Method::POST => {
            Target::Upload(eco, Upload::Twine)
        }
        _ => Target::Unknown,
    }
}

/// The sparse-index file of a crate (`1/a`, `2/ab`, `3/a/abc`, `ab/cd/abcd…`), its
/// directories checked against the name.
fn cargo_index(segs: &[&str]) -> Option<String> {
    let (name, dirs) = segs.split_last()?;
    let lower = name.to_ascii_lowercase();
    let want: Vec<String> = match lower.len() {
        0 => return None,
        1 => vec!["1".into()],
        2 => vec!["2".into()],
        3 => vec!["3".into(), lower[..1].to_string()],
        _ => vec![lower.get(..2)?.to_string(), lower.get(2..4)?.to_string()],
    };
    let same = dirs.len() == want.len()
        && dirs
            .iter()
            .zip(&want)
            .all(|(d, w)| d.eq_ignore_ascii_case(w));
    same.then(|| name.to_string())
}

fn cargo<'a>(method: &Method, segs: &[&'a str]) -> (Target, Option<&'a str>) {
    let eco = Ecosystem::Cargo;
    match segs {
        ["config.json"] => (Target::Neutral, None),
        ["api", "v1", "crates", "new"] if *method == Method::PUT => {
            (Target::Upload(eco, Upload::CargoPublish), None)
        }
        ["api", "v1", "crates", name, version, "yank" | "unyank" | "download"] => {
            (package(eco, name), Some(*version))
        }
        ["api", "v1", "crates", name, "owners"] => (package(eco, name), None),
        _ => match cargo_index(segs) {
            Some(name) => (package(eco, &name), None),
            None => (Target::Unknown, None),
        },
    }
}

fn maven<'a>(segs: &[&'a str]) -> (Target, Option<&'a str>) {
    let eco = Ecosystem::Maven;
    let n = segs.len();
    let Some(file) = segs.last() else {
        return (Target::Unknown, None);
    };
    if file.is_empty() || segs.iter().any(|s| s.contains('%')) {
        return (Target::Unknown, None);
    }
    let coords = |group: &[&str], artifact: &str| {
        if group.is_empty() {
            Target::Unknown
        } else {
            package(eco, &format!("{}:{artifact}", group.join(".")))
        }
    };
    if file.starts_with("maven-metadata.xml") {
        // `{group}/{artifact}/maven-metadata.xml`, or a SNAPSHOT version's
        // `{group}/{artifact}/{version}-SNAPSHOT/maven-metadata.xml`.
        if n >= 4 && segs[n - 2].ends_with("-SNAPSHOT") {
            return (coords(&segs[..n - 3], segs[n - 3]), Some(segs[n - 2]));
        }
        if n >= 3 {
            return (coords(&segs[..n - 2], segs[n - 2]), None);
        }
        return (Target::Unknown, None);
    }
    // `{group}/{artifact}/{version}/{artifact}-{version}[-classifier].{ext}`
    if n >= 4 {
        let artifact = segs[n - 3];
        if file
            .strip_prefix(artifact)
            .is_some_and(|rest| rest.starts_with('-'))
        {
            return (coords(&segs[..n - 3], artifact), Some(segs[n - 2]));
        }
    }
    (Target::Unknown, None)
}

#[cfg(test)]
mod tests;
