//! Package names per ecosystem, and the token patterns matched against them.
//!
//! Every name is brought to the form its ecosystem's store treats as one package, and a
//! pattern is brought to the same form before it is matched, so that spellings the store
//! reads as the same package (PyPI `Acme_Widget`, `acme.widget`, `ACME-widget`) can never get
//! past a pattern that refuses one of them, and spellings it reads as different packages are
//! never folded together:
//!
//! | Ecosystem | Name | Normal form |
//! |---|---|---|
//! | Composer | `vendor/package` | lowercase (Composer names are lowercase; stores fold case) |
//! | npm | `name` or `@scope/name` | as written: the registry is case-sensitive, and legacy names with capitals exist |
//! | PyPI | project name | PEP 503: lowercase, every run of `-`, `_`, `.` → `-` |
//! | cargo | crate name | lowercase, `_` → `-` (crates.io treats them as one name) |
//! | Maven | `groupId:artifactId` | as written (Maven paths are case-sensitive) |
//!
//! A pattern is a name in which `*` stands for any run of characters (none included). Which
//! ecosystems a pattern speaks of follows from its shape: with a `:` it is a Maven pattern,
//! with a leading `@` an npm scope, with a `/` a Composer name; a plain name (`left-pad`,
//! `acme-*`, `acme_*`) is matched against npm, PyPI and cargo names, each in its own normal
//! form.

use std::fmt;

/// The package ecosystems Tollgate knows the layout of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ecosystem {
    /// Composer (Satis, Packagist-style repositories).
    Composer,
    /// npm registries.
    Npm,
    /// PyPI simple repositories (pypiserver, devpi, …).
    Pypi,
    /// cargo sparse registries.
    Cargo,
    /// Maven repositories.
    Maven,
}

impl Ecosystem {
    /// Every ecosystem.
    pub const ALL: [Ecosystem; 5] = [
        Ecosystem::Composer,
        Ecosystem::Npm,
        Ecosystem::Pypi,
        Ecosystem::Cargo,
        Ecosystem::Maven,
    ];

    /// The lowercase name used in configuration (`composer`, `npm`, `pypi`, `cargo`, `maven`).
    pub fn as_str(self) -> &'static str {
        match self {
            Ecosystem::Composer => "composer",
            Ecosystem::Npm => "npm",
            Ecosystem::Pypi => "pypi",
            Ecosystem::Cargo => "cargo",
            Ecosystem::Maven => "maven",
        }
    }

    /// Parses a configuration name (see [`Ecosystem::as_str`]).
    pub fn parse(s: &str) -> Option<Ecosystem> {
        Ecosystem::ALL.into_iter().find(|e| e.as_str() == s)
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Ecosystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Most patterns one token may hold (all are tried on every request of the token).
pub const MAX_PATTERNS: usize = 64;
/// Longest pattern, in bytes.
pub const MAX_PATTERN_LEN: usize = 214;

/// The normal form of `name` in `eco` (see the module table), or `None` when it is not a
/// name of that ecosystem at all (wrong shape, characters no store accepts in a name).
pub fn normalize(eco: Ecosystem, name: &str) -> Option<String> {
    if name.is_empty() || name.len() > MAX_PATTERN_LEN {
        return None;
    }
    normalize_shape(eco, name, false)
}

/// Characters a name part may hold (`*` too in a pattern).
fn name_char(b: u8, pattern: bool) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') || (pattern && b == b'*')
}

fn part_ok(part: &str, pattern: bool) -> bool {
    !part.is_empty() && part.bytes().all(|b| name_char(b, pattern))
}

fn normalize_shape(eco: Ecosystem, name: &str, pattern: bool) -> Option<String> {
    match eco {
        Ecosystem::Composer => {
            let (vendor, package) = name.split_once('/')?;
            (part_ok(vendor, pattern) && part_ok(package, pattern))
                .then(|| name.to_ascii_lowercase())
        }
        Ecosystem::Npm => {
            let ok = match name.strip_prefix('@') {
                Some(scoped) => {
                    let (scope, bare) = scoped.split_once('/')?;
                    part_ok(scope, pattern) && part_ok(bare, pattern)
                }
                None => part_ok(name, pattern),
            };
            // `.` and `..` are path segments, never packages.
            (ok && !name.starts_with('.')).then(|| name.to_string())
        }
        Ecosystem::Pypi => part_ok(name, pattern).then(|| pep503(name)),
        Ecosystem::Cargo => part_ok(name, pattern).then(|| {
            name.bytes()
                .map(|b| match b {
                    b'_' => '-',
                    b => b.to_ascii_lowercase() as char,
                })
                .collect()
        }),
        Ecosystem::Maven => {
            let (group, artifact) = name.split_once(':')?;
            let ok = !group.is_empty()
                && group.split('.').all(|p| part_ok(p, pattern))
                && part_ok(artifact, pattern);
            ok.then(|| name.to_string())
        }
    }
}

/// PEP 503 normalization: lowercase, every run of `-`, `_`, `.` becomes one `-`.
pub fn pep503(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_run = false;
    for b in name.bytes() {
        if matches!(b, b'-' | b'_' | b'.') {
            if !in_run {
                out.push('-');
            }
            in_run = true;
        } else {
            out.push(b.to_ascii_lowercase() as char);
            in_run = false;
        }
    }
    out
}

/// Which ecosystems a pattern of this shape speaks of (see the module comment).
fn ecosystems_of(pattern: &str) -> &'static [Ecosystem] {
    if pattern.contains(':') {
        &[Ecosystem::Maven]
    } else if pattern.starts_with('@') {
        &[Ecosystem::Npm]
    } else if pattern.contains('/') {
        &[Ecosystem::Composer]
    } else {
        &[Ecosystem::Npm, Ecosystem::Pypi, Ecosystem::Cargo]
    }
}

/// `*`-glob match of `text` against `pattern` (`*` = any run, none included). Iterative with
/// one backtrack point: O(len(pattern) · len(text)) at worst, both bounded by
/// [`MAX_PATTERN_LEN`]. Hand-written: `*` is the whole syntax, and a glob crate's character
/// classes and escapes would be syntax a token file could use by mistake.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// A token's package patterns: the text as written, and per ecosystem the patterns in that
/// ecosystem's normal form. Empty: the token is not scoped (every package).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackagePatterns {
    source: Vec<String>,
    by_ecosystem: [Vec<String>; 5],
}

impl PackagePatterns {
    /// Parses a list of patterns; each must have the shape of a name of some ecosystem
    /// (`acme/*`, `@acme/*`, `left-pad`, `acme-*`, `com.acme:*`). Duplicates are kept once.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Self, String> {
        if items.len() > MAX_PATTERNS {
            return Err(format!("at most {MAX_PATTERNS} patterns"));
        }
        let mut out = PackagePatterns::default();
        for item in items {
            let p = item.as_ref().trim();
            if p.is_empty() || p.len() > MAX_PATTERN_LEN {
                return Err(format!("{p:?} must be 1-{MAX_PATTERN_LEN} characters"));
            }
            let mut any = false;
            for &eco in ecosystems_of(p) {
                if let Some(n) = normalize_shape(eco, p, true) {
                    any = true;
                    let list = &mut out.by_ecosystem[eco.index()];
                    if !list.contains(&n) {
                        list.push(n);
                    }
                }
            }
            if !any {
                return Err(format!(
                    "{p:?} is not a package pattern (e.g. acme/*, @acme/*, acme-*, com.acme:*): letters, digits, - _ . ~ and * in a name"
                ));
            }
            if !out.source.iter().any(|s| s == p) {
                out.source.push(p.to_string());
            }
        }
        Ok(out)
    }

    /// Parses the stored form: the patterns joined by commas (empty: not scoped).
    pub fn parse_stored(s: &str) -> Result<Self, String> {
        let items: Vec<&str> = s.split(',').filter(|p| !p.trim().is_empty()).collect();
        Self::parse(&items)
    }

    /// Not scoped: every package is allowed.
    pub fn is_empty(&self) -> bool {
        self.source.is_empty()
    }

    /// The patterns as written.
    pub fn patterns(&self) -> &[String] {
        &self.source
    }

    /// The patterns that speak of `eco`, in its normal form.
    pub fn for_ecosystem(&self, eco: Ecosystem) -> &[String] {
        &self.by_ecosystem[eco.index()]
    }

    /// Whether the package `name` of `eco` (any spelling; it is normalized here) is allowed.
    /// An unscoped set allows everything; a name that is not a name of `eco` is refused.
    pub fn allows(&self, eco: Ecosystem, name: &str) -> bool {
        if self.is_empty() {
            return true;
        }
        match normalize(eco, name) {
            Some(n) => self.allows_normal(eco, &n),
            None => false,
        }
    }

    /// [`PackagePatterns::allows`] for a name already in its normal form.
    pub fn allows_normal(&self, eco: Ecosystem, normal: &str) -> bool {
        self.is_empty()
            || self.by_ecosystem[eco.index()]
                .iter()
                .any(|p| glob_match(p.as_bytes(), normal.as_bytes()))
    }

    /// Whether every package `self` allows is allowed by `outer` too: an unscoped `outer`
    /// allows everything; a scoped one needs `self` scoped, each of its patterns (per
    /// ecosystem) covered by one of `outer`'s.
    pub fn within(&self, outer: &PackagePatterns) -> bool {
        if outer.is_empty() {
            return true;
        }
        !self.is_empty()
            && Ecosystem::ALL
                .iter()
                .all(|&eco| self.for_ecosystem(eco).iter().all(|p| outer.covers(eco, p)))
    }

    /// Whether every name the repository pattern `pattern` (Composer's
    /// `available-package-patterns`, in normal form) can match is allowed: some token pattern
    /// matches it with its `*` taken as plain characters.
    pub fn covers(&self, eco: Ecosystem, pattern: &str) -> bool {
        self.is_empty()
            || self.by_ecosystem[eco.index()]
                .iter()
                .any(|p| glob_match(p.as_bytes(), pattern.as_bytes()))
    }
}

impl fmt::Display for PackagePatterns {
    /// The stored form: the patterns joined by commas.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source.join(","))
    }
}

impl serde::Serialize for PackagePatterns {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.source.serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for PackagePatterns {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let items = Vec::<String>::deserialize(d)?;
        PackagePatterns::parse(&items).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
