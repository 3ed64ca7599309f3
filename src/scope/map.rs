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
    for layout in layouts.iter() {
        for re in &layout.dists {
            if let Some(c) = re.captures(path) {
                return from_captures(layout.kind, &c);
            }
        }
    }
    let Some(layout) = layouts.iter().find(|l| {
        path.starts_with(&l.prefix)
            || path.len() + 1 == l.prefix.len() && l.prefix.starts_with(path)
    }) else {
        return Target::Unknown;
    };
    let rel = path.get(layout.prefix.len()..).unwrap_or("");
    let read = matches!(*method, Method::GET | Method::HEAD);
    builtin(layout, method, read, rel)
}

fn from_captures(kind: Ecosystem, c: &regex::Captures<'_>) -> Target {
    if let (Some(v), Some(p)) = (c.name("vendor"), c.name("package")) {
        return package(kind, &format!("{}/{}", v.as_str(), p.as_str()));
    }
    if let Some(n) = c.name("name") {
        return match kind {
            Ecosystem::Npm => npm_name(n.as_str()).map_or(Target::Unknown, |n| package(kind, &n)),
            _ => package(kind, n.as_str()),
        };
    }
    if let Some(f) = c.name("filename") {
        return match kind {
            Ecosystem::Pypi => pypi_file(f.as_str()),
            _ => Target::Unknown,
        };
    }
    Target::Unknown
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
    let file = file.strip_suffix(".asc").unwrap_or(file);
    let file = file.strip_suffix(".metadata").unwrap_or(file);
    if file.contains('%') {
        return Target::Unknown;
    }
    if file.ends_with(".whl") || file.ends_with(".egg") {
        return match file.split_once('-') {
            Some((name, _)) => package(Ecosystem::Pypi, name),
            None => Target::Unknown,
        };
    }
    let stem = [".tar.gz", ".zip", ".tar.bz2", ".tgz", ".tar.xz", ".tar"]
        .iter()
        .find_map(|ext| file.strip_suffix(ext));
    let Some(stem) = stem else {
        return Target::Unknown;
    };
    let b = stem.as_bytes();
    let mut names = Vec::new();
    for i in 1..b.len() {
        if b[i - 1] == b'-' && b[i].is_ascii_digit() {
            match normalize(Ecosystem::Pypi, &stem[..i - 1]) {
                Some(n) if !names.contains(&n) => names.push(n),
                Some(_) => {}
                None => return Target::Unknown,
            }
        }
    }
    if names.is_empty() {
        Target::Unknown
    } else {
        Target::Package(Ecosystem::Pypi, names)
    }
}

fn builtin(layout: &Layout, method: &Method, read: bool, rel: &str) -> Target {
    let segs: Vec<&str> = rel.split('/').collect();
    match layout.kind {
        Ecosystem::Composer => composer(read, &segs),
        Ecosystem::Npm => npm(read, &segs),
        Ecosystem::Pypi => pypi(method, read, &segs),
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

fn npm(read: bool, segs: &[&str]) -> Target {
    let eco = Ecosystem::Npm;
    match segs {
        ["-", "v1", "search"] if read => return Target::Listing(eco, Listing::NpmSearch),
        ["-", "package", rest @ ..] => {
            // `/-/package/{name}/dist-tags[/{tag}]`
            return match npm_lead(rest) {
                Some((name, n)) if rest.get(n) == Some(&"dist-tags") => package(eco, &name),
                _ => Target::Unknown,
            };
        }
        _ => {}
    }
    let Some((name, n)) = npm_lead(segs) else {
        return Target::Unknown;
    };
    if name.starts_with('-') {
        return Target::Unknown;
    }
    let bare = name.rsplit('/').next().unwrap_or(&name);
    // A tarball's file is `{bare}-{version}.tgz` (npm itself names it so); another file name
    // under this package's path is refused, in case a store serves files by name alone.
    let tarball = |file: &str| {
        file.strip_prefix(bare)
            .is_some_and(|rest| rest.starts_with('-') && rest.ends_with(".tgz"))
    };
    match &segs[n..] {
        // Packument, publish (PUT), unpublish of all (DELETE …/-rev/…), a version's manifest.
        [] | [_] | ["-rev", _] => package(eco, &name),
        ["-", file] | ["-", file, "-rev", _] if tarball(file) => package(eco, &name),
        // `/@scope/name/-/@scope/name-1.0.0.tgz`, as `npm publish` writes tarball URLs.
        ["-", scope, file] if name.split('/').next() == Some(*scope) && tarball(file) => {
            package(eco, &name)
        }
        _ => Target::Unknown,
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

fn cargo(method: &Method, segs: &[&str]) -> Target {
    let eco = Ecosystem::Cargo;
    match segs {
        ["config.json"] => Target::Neutral,
        ["api", "v1", "crates", "new"] if *method == Method::PUT => {
            Target::Upload(eco, Upload::CargoPublish)
        }
        ["api", "v1", "crates", name, _, "yank" | "unyank" | "download"]
        | ["api", "v1", "crates", name, "owners"] => package(eco, name),
        _ => match cargo_index(segs) {
            Some(name) => package(eco, &name),
            None => Target::Unknown,
        },
    }
}

fn maven(segs: &[&str]) -> Target {
    let eco = Ecosystem::Maven;
    let n = segs.len();
    let Some(file) = segs.last() else {
        return Target::Unknown;
    };
    if file.is_empty() || segs.iter().any(|s| s.contains('%')) {
        return Target::Unknown;
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
            return coords(&segs[..n - 3], segs[n - 3]);
        }
        if n >= 3 {
            return coords(&segs[..n - 2], segs[n - 2]);
        }
        return Target::Unknown;
    }
    // `{group}/{artifact}/{version}/{artifact}-{version}[-classifier].{ext}`
    if n >= 4 {
        let artifact = segs[n - 3];
        if file
            .strip_prefix(artifact)
            .is_some_and(|rest| rest.starts_with('-'))
        {
            return coords(&segs[..n - 3], artifact);
        }
    }
    Target::Unknown
}

#[cfg(test)]
mod tests;
