//! Upstream layouts: which ecosystem each part of the store is (`upstream.layouts`), and where
//! its distribution files live.
//!
//! A layout is a kind, a path prefix and a list of dist patterns. A pattern is a path, relative
//! to the prefix unless it starts with `/`, whose segments may hold placeholders:
//! `{vendor}` and `{package}` (Composer), `{name}` (a whole package name: npm `@scope/name`
//! takes two segments, or one as `@scope%2Fname`), `{version}`, `{file}` (any one segment),
//! `{filename}` (a PyPI distribution file, the project read from its name), and a last
//! segment `**` for any rest of the path. Each kind has defaults (see [`default_dists`]).

use regex::Regex;

use super::name::Ecosystem;

/// Most layouts, and most dist patterns per layout.
pub const MAX_LAYOUTS: usize = 32;

/// One part of the store and its ecosystem, compiled.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The ecosystem of the paths under `prefix`.
    pub kind: Ecosystem,
    /// Normalized path prefix, starting and ending with `/`.
    pub prefix: String,
    /// The dist patterns as written (for messages and `check-config`).
    pub dist_sources: Vec<String>,
    pub(super) dists: Vec<Regex>,
}

/// The default dist patterns of a kind (relative to the layout's prefix).
pub fn default_dists(kind: Ecosystem) -> &'static [&'static str] {
    match kind {
        // Satis archives: dist/{vendor}/{package}/{vendor}-{package}-{ref}.zip
        Ecosystem::Composer => &["dist/{vendor}/{package}/**"],
        // Packuments, versions and tarballs (`{name}/-/{name}-{version}.tgz`, the file name
        // checked against the package) are known without patterns.
        Ecosystem::Npm => &[],
        // pypiserver: /packages/{filename}; PyPI-style: /packages/ab/cd/…/{filename}.
        Ecosystem::Pypi => &["packages/{filename}", "packages/**/{filename}"],
        Ecosystem::Cargo => &[
            "api/v1/crates/{name}/{version}/download",
            "crates/{name}/{version}/download",
            "crates/{name}/{name}-{version}.crate",
            "/crates/{name}/{name}-{version}.crate",
            "{name}-{version}.crate",
        ],
        // Maven paths always carry groupId/artifactId: no patterns needed.
        Ecosystem::Maven => &[],
    }
}

fn placeholder(name: &str) -> Result<&'static str, String> {
    Ok(match name {
        "vendor" => "(?P<vendor>[^/]+)",
        "package" => "(?P<package>[^/]+)",
        "name" => "(?P<name>@[^/]+(?:/|%2[Ff])[^/]+|[^/@][^/]*)",
        "version" => "(?P<version>[^/]+)",
        "file" => "[^/]+",
        "filename" => "(?P<filename>[^/]+)",
        other => {
            return Err(format!(
                "unknown placeholder {{{other}}} (vendor, package, name, version, file, filename)"
            ))
        }
    })
}

/// Compiles one dist pattern under `prefix` into an anchored regex over the normalized path.
fn compile(prefix: &str, pattern: &str) -> Result<Regex, String> {
    let path = match pattern.strip_prefix('/') {
        Some(abs) => abs.to_string(),
        None => format!("{}{pattern}", &prefix[1..]),
    };
    let mut re = String::from("^/");
    let segs: Vec<&str> = path.split('/').collect();
    let mut names = (false, false, false, false); // vendor, package, name, filename
    let mut version = false;
    for (i, seg) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        if *seg == "**" {
            // Last: any rest of the path; elsewhere: zero or more whole segments.
            re.push_str(if last { ".+" } else { "(?:[^/]+/)*" });
            continue;
        }
        let mut rest = *seg;
        while let Some(open) = rest.find('{') {
            re.push_str(&regex::escape(&rest[..open]));
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("{pattern:?}: unclosed {{"))?;
            let ph = &rest[open + 1..open + close];
            let group = placeholder(ph)?;
            let seen = match ph {
                "vendor" => &mut names.0,
                "package" => &mut names.1,
                "name" => &mut names.2,
                "filename" => &mut names.3,
                "version" => &mut version,
                _ => &mut false,
            };
            if *seen {
                // A repeated name must be the same text: a backreference is not available,
                // so a repeat matches any name and the first one counts (checked in `map`).
                re.push_str("[^/]+");
            } else {
                *seen = true;
                re.push_str(group);
            }
            rest = &rest[open + close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("{pattern:?}: unopened }}"));
        }
        re.push_str(&regex::escape(rest));
        if !last {
            re.push('/');
        }
    }
    re.push('$');
    let has_name = names.2 || names.3 || (names.0 && names.1);
    if !has_name {
        return Err(format!(
            "{pattern:?} names no package: use {{name}}, {{filename}}, or {{vendor}} and {{package}}"
        ));
    }
    Regex::new(&re).map_err(|e| format!("{pattern:?}: {e}"))
}

impl Layout {
    /// Builds a layout: `prefix` must be a normalized path (a trailing `/` is added); `dists`
    /// replaces the kind's defaults when given.
    pub fn new(kind: Ecosystem, prefix: &str, dists: Option<&[String]>) -> Result<Layout, String> {
        if !prefix.starts_with('/') {
            return Err(format!("prefix {prefix:?} must start with /"));
        }
        let mut prefix = prefix.to_string();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        let dist_sources: Vec<String> = match dists {
            Some(d) => d.to_vec(),
            None => default_dists(kind).iter().map(|s| s.to_string()).collect(),
        };
        if dist_sources.len() > MAX_LAYOUTS {
            return Err(format!("at most {MAX_LAYOUTS} dist patterns"));
        }
        let dists = dist_sources
            .iter()
            .map(|p| compile(&prefix, p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Layout {
            kind,
            prefix,
            dist_sources,
            dists,
        })
    }
}

/// The configured layouts, longest prefix first, and every dist pattern of them in one set
/// (one pass over a path tells which pattern, if any, it matches first).
#[derive(Debug, Clone)]
pub struct Layouts {
    layouts: Vec<Layout>,
    dists: regex::RegexSet,
    /// Per pattern of the set: its layout, and its index in that layout's `dists`.
    owners: Vec<(usize, usize)>,
}

impl Default for Layouts {
    fn default() -> Self {
        Layouts {
            layouts: Vec::new(),
            dists: regex::RegexSet::empty(),
            owners: Vec::new(),
        }
    }
}

impl Layouts {
    /// Orders the layouts by prefix, longest first; two layouts may not share a prefix.
    pub fn new(mut layouts: Vec<Layout>) -> Result<Layouts, String> {
        if layouts.len() > MAX_LAYOUTS {
            return Err(format!("at most {MAX_LAYOUTS} layouts"));
        }
        layouts.sort_by(|a, b| {
            b.prefix
                .len()
                .cmp(&a.prefix.len())
                .then(a.prefix.cmp(&b.prefix))
        });
        if let Some(w) = layouts.windows(2).find(|w| w[0].prefix == w[1].prefix) {
            return Err(format!("two layouts share the prefix {:?}", w[0].prefix));
        }
        let mut owners = Vec::new();
        let mut sources = Vec::new();
        for (i, l) in layouts.iter().enumerate() {
            for (j, re) in l.dists.iter().enumerate() {
                owners.push((i, j));
                sources.push(re.as_str().to_string());
            }
        }
        let dists = regex::RegexSet::new(&sources).map_err(|e| e.to_string())?;
        Ok(Layouts {
            layouts,
            dists,
            owners,
        })
    }

    /// No layout configured.
    pub fn is_empty(&self) -> bool {
        self.layouts.is_empty()
    }

    /// The layouts, longest prefix first.
    pub fn iter(&self) -> impl Iterator<Item = &Layout> {
        self.layouts.iter()
    }

    /// The first dist pattern (layouts longest prefix first, then as written) that matches
    /// `path`, with its layout.
    pub(super) fn dist_of(&self, path: &str) -> Option<(&Layout, &Regex)> {
        if self.owners.is_empty() {
            return None;
        }
        let first = self.dists.matches(path).into_iter().next()?;
        let (i, j) = self.owners[first];
        let layout = &self.layouts[i];
        Some((layout, &layout.dists[j]))
    }
}

impl PartialEq for Layout {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
            && self.prefix == other.prefix
            && self.dist_sources == other.dist_sources
    }
}

impl Eq for Layout {}

impl PartialEq for Layouts {
    fn eq(&self, other: &Self) -> bool {
        self.layouts == other.layouts
    }
}

impl Eq for Layouts {}
