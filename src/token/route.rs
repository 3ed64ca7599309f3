//! Route rules: compiled path patterns, and the form routes take in the database and the API.
//!
//! Route patterns match the segments of a normalized path (see [`normalize_path`]) as prefixes:
//! `/releases` covers `/releases/x` but not `/releases-old`; `*` is one segment (or a glob
//! inside a segment), `**` any number of segments.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::normalize_path;
use super::{Access, Route};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SegKind {
    Literal,
    Glob,
    AnyDeep,
}

/// One segment of a pattern: its kind and its byte range in the pattern's source (no string of
/// its own: a token set can hold hundreds of thousands of routes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seg {
    kind: SegKind,
    start: u32,
    end: u32,
}

/// Longest route pattern, in bytes.
pub const MAX_ROUTE_LEN: usize = 1024;
/// Most segments in a route pattern (the matcher keeps one bit per segment in a `u64`).
pub const MAX_ROUTE_SEGMENTS: usize = 48;

/// A compiled route pattern.
#[derive(Clone, PartialEq, Eq)]
pub struct RoutePattern {
    source: Box<str>,
    segs: Box<[Seg]>,
}

impl fmt::Debug for RoutePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RoutePattern({:?})", self.source)
    }
}

impl RoutePattern {
    /// Compiles a pattern such as `/p2/acme/*`, `/releases`, `/dist/**/*.zip`.
    pub fn parse(source: &str) -> Result<Self, String> {
        if !source.starts_with('/') {
            return Err(format!("route {source:?} must start with /"));
        }
        if source.contains(['?', '#']) {
            return Err(format!("route {source:?} cannot hold ? or #"));
        }
        if source.len() > MAX_ROUTE_LEN {
            return Err(format!(
                "a route is at most {MAX_ROUTE_LEN} bytes (this one has {})",
                source.len()
            ));
        }
        // Checked with every `*` as a plain name character, so that an npm scope pattern such
        // as `/@acme%2F*` (exactly the scope `@acme`, not `@acme-evil`) is a normal path.
        let probe = source.replace('*', "x");
        let normalized = normalize_path(&probe).map_err(|e| format!("route {source:?}: {e}"))?;
        if normalized != probe && normalized.trim_end_matches('/') != probe.trim_end_matches('/') {
            let suggestion = normalize_path(source).map_or(normalized, |n| n.into_owned().into());
            return Err(format!(
                "route {source:?} is not in normal form (write it as {suggestion:?})"
            ));
        }
        // The source differs from its normal form at most in trailing slashes: same segments.
        let mut segs = Vec::new();
        for (start, s) in segment_spans(source) {
            let end = start + s.len();
            let kind = if s == "**" {
                SegKind::AnyDeep
            } else if s.contains("**") {
                return Err(format!("route {source:?}: ** must be a whole segment"));
            } else if s.contains('*') {
                SegKind::Glob
            } else {
                SegKind::Literal
            };
            // In range: the source's length fits in u32 (checked above).
            segs.push(Seg {
                kind,
                start: start as u32,
                end: end as u32,
            });
        }
        if segs.len() > MAX_ROUTE_SEGMENTS {
            return Err(format!(
                "route {source:?} has more than {MAX_ROUTE_SEGMENTS} segments"
            ));
        }
        Ok(RoutePattern {
            source: source.into(),
            segs: segs.into_boxed_slice(),
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// True if the normalized `path` is under this pattern.
    pub fn matches(&self, path: &str) -> bool {
        match_segs(&self.source, &self.segs, segments(path))
    }

    /// Like [`RoutePattern::matches`], on a path already split into segments.
    pub fn matches_segments(&self, segs: &[&str]) -> bool {
        match_segs(&self.source, &self.segs, segs.iter().copied())
    }

    fn text(&self, seg: &Seg) -> &str {
        self.source
            .get(seg.start as usize..seg.end as usize)
            .unwrap_or_default()
    }

    /// True if every path this pattern matches is also matched by `wider`. Sound but not
    /// complete: it may answer false for some globs that are in fact narrower (then a
    /// restricted manager must write the narrower rule more plainly), never true wrongly.
    pub fn within(&self, wider: &RoutePattern) -> bool {
        let (a, t) = (&wider.segs[..], &self.segs[..]);
        // covers[i][j]: wider's segments from i cover this pattern's segments from j.
        let mut covers = vec![vec![false; t.len() + 1]; a.len() + 1];
        for i in (0..=a.len()).rev() {
            for j in (0..=t.len()).rev() {
                covers[i][j] = if i == a.len() {
                    // The rest of wider is empty: it covers everything below (prefix rule).
                    true
                } else if a[i].kind == SegKind::AnyDeep {
                    // `**` matches none of the rest, or absorbs one more segment of any kind.
                    covers[i + 1][j] || (j < t.len() && covers[i][j + 1])
                } else if j == t.len() {
                    // This pattern ends (matching everything below) where wider needs more.
                    false
                } else {
                    let (aw, tw) = (wider.text(&a[i]), self.text(&t[j]));
                    let one = match (a[i].kind, t[j].kind) {
                        (_, SegKind::AnyDeep) => false,
                        (SegKind::Literal, SegKind::Literal) => aw == tw,
                        (SegKind::Literal, SegKind::Glob) => false,
                        (SegKind::Glob, SegKind::Literal) => glob(aw.as_bytes(), tw.as_bytes()),
                        (SegKind::Glob, SegKind::Glob) => aw == "*" || aw == tw,
                        // Handled by the branch above.
                        (SegKind::AnyDeep, _) => false,
                    };
                    one && covers[i + 1][j + 1]
                };
            }
        }
        covers[0][0]
    }
}

/// Matches `path` against the pattern `pat` as a prefix (a pattern covers everything below
/// what it matches). A simulation of the pattern's automaton: one bit per pattern position,
/// one pass over the path's segments, so the cost is linear in the path for any pattern (a
/// backtracking matcher is polynomial in the path with one exponent per `**`: 13 000 segments
/// against two `**` took seconds).
fn match_segs<'a>(source: &str, pat: &[Seg], path: impl IntoIterator<Item = &'a str>) -> bool {
    debug_assert!(pat.len() < 64, "patterns are limited to MAX_ROUTE_SEGMENTS");
    let accept = 1u64 << pat.len();
    // `**` also matches no segment: whoever reaches it also reaches the position after it.
    let close = |mut set: u64| {
        for (i, seg) in pat.iter().enumerate() {
            if seg.kind == SegKind::AnyDeep && set & (1 << i) != 0 {
                set |= 1 << (i + 1);
            }
        }
        set
    };
    let mut current = close(1);
    for segment in path {
        if current & accept != 0 {
            return true;
        }
        let mut next = 0u64;
        for (i, seg) in pat.iter().enumerate() {
            if current & (1 << i) == 0 {
                continue;
            }
            let text = source
                .get(seg.start as usize..seg.end as usize)
                .unwrap_or_default();
            match seg.kind {
                SegKind::AnyDeep => next |= 1 << i,
                SegKind::Literal if text == segment => next |= 1 << (i + 1),
                SegKind::Glob if glob(text.as_bytes(), segment.as_bytes()) => next |= 1 << (i + 1),
                _ => {}
            }
        }
        current = close(next);
        if current == 0 {
            return false;
        }
    }
    current & accept != 0
}

/// `*` matches any run of characters within one segment.
fn glob(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while i < s.len() {
        if p < pat.len() && pat[p] != b'*' && pat[p] == s[i] {
            p += 1;
            i += 1;
        } else if p < pat.len() && pat[p] == b'*' {
            star = Some(p);
            mark = i;
            p += 1;
        } else if let Some(sp) = star {
            p = sp + 1;
            mark += 1;
            i = mark;
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

/// The segments of a normalized path, as route patterns see them (empty ones skipped).
///
/// `%2F` separates segments too: the normal form keeps it only in npm's `/@scope%2Fname`, which
/// a store decodes to `/@scope/name`, so a rule for `/@acme/internal-*` must hold for both
/// spellings (and a rule written `/@acme%2F*` for both as well).
pub fn segments(path: &str) -> impl Iterator<Item = &str> {
    segment_spans(path).map(|(_, s)| s)
}

/// [`segments`] with the byte offset where each starts. One pass over the bytes.
fn segment_spans(path: &str) -> impl Iterator<Item = (usize, &str)> {
    let b = path.as_bytes();
    let (mut i, mut start) = (0, 0);
    std::iter::from_fn(move || {
        while start <= b.len() {
            let sep = if i == b.len() || b[i] == b'/' {
                1
            } else if b[i..].starts_with(b"%2F") {
                3
            } else {
                i += 1;
                continue;
            };
            let (seg_start, seg_end) = (start, i);
            i += sep;
            start = i;
            if seg_end > seg_start {
                // Separators are ASCII: these are char boundaries.
                return path.get(seg_start..seg_end).map(|s| (seg_start, s));
            }
        }
        None
    })
}

/// A route as stored (JSON) and shown by the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// Path pattern.
    pub path: String,
    /// Access granted.
    pub access: Access,
}

/// Compiles route specs, naming the first bad one.
pub fn compile_routes(specs: &[RouteSpec]) -> Result<Vec<Route>, String> {
    specs
        .iter()
        .map(|r| {
            Ok(Route {
                pattern: RoutePattern::parse(&r.path)?,
                access: r.access,
            })
        })
        .collect()
}

/// The specs of compiled routes.
pub fn route_specs(routes: &[Route]) -> Vec<RouteSpec> {
    routes
        .iter()
        .map(|r| RouteSpec {
            path: r.pattern.as_str().to_string(),
            access: r.access,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_matching_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("/releases", "/releases", true),
            ("/releases", "/releases/", true),
            ("/releases", "/releases/x/y", true),
            ("/releases", "/releases-old", false),
            ("/releases", "/releases-old/x", false),
            ("/releases", "/Releases/x", false),
            ("/releases/", "/releases/x", true),
            ("/p2/acme/*", "/p2/acme/pkg.json", true),
            ("/p2/acme/*", "/p2/acme/pkg/deeper", true),
            ("/p2/acme/*", "/p2/acme", false),
            ("/p2/acme/*", "/p2/acme-evil/pkg.json", false),
            ("/p2/acme/*", "/p2/other/pkg.json", false),
            ("/p2/*/meta", "/p2/acme/meta", true),
            ("/p2/*/meta", "/p2/acme/x/meta", false),
            ("/dist/**/acme", "/dist/acme", true),
            ("/dist/**/acme", "/dist/a/b/c/acme/x.zip", true),
            ("/dist/**/acme", "/dist/a/b/c/other", false),
            ("/files/acme-*", "/files/acme-1.0.zip", true),
            ("/files/acme-*", "/files/acme/x", false),
            ("/files/*.zip", "/files/a.zip", true),
            ("/files/*.zip", "/files/a.tar", false),
            ("/", "/anything/at/all", true),
            ("/**", "/", true),
            ("/@acme%2F*", "/@acme%2Fwidget", true),
            ("/@acme%2F*", "/@acme%2Fwidget/-/widget-1.0.0.tgz", true),
            ("/@acme%2F*", "/@acme-evil%2Fwidget", false),
            ("/@acme%2F*", "/@acme", false),
            // `%2F` separates segments as `/` does, whichever spelling the rule or path uses.
            ("/@acme%2F*", "/@acme/widget", true),
            ("/@acme/internal-*", "/@acme%2Finternal-x", true),
            (
                "/@acme/internal-*",
                "/@acme%2Finternal-x/-/internal-x-1.0.0.tgz",
                true,
            ),
            ("/@acme%2Finternal-*", "/@acme/internal-x", true),
            ("/@acme/*", "/@acme-evil%2Fwidget", false),
        ];
        for (pat, path, want) in cases {
            let p = RoutePattern::parse(pat).unwrap();
            assert_eq!(p.matches(path), *want, "{pat} vs {path}");
        }
    }

    #[test]
    fn matching_is_linear_in_the_path() {
        // Three `**` against thousands of segments that almost match: a backtracking matcher
        // takes seconds (O(n^3)); the automaton answers at once. Counted, not timed.
        let p = RoutePattern::parse("/**/a/**/a/**/a/**/b").unwrap();
        let path = "/a".repeat(20_000);
        assert!(!p.matches(&path));
        assert!(p.matches(&format!("{path}/b")));
        let g = RoutePattern::parse("/**/*a*a*a*a*b").unwrap();
        assert!(!g.matches(&format!("/{}", "a".repeat(2000))));
        assert!(RoutePattern::parse(&"/x".repeat(MAX_ROUTE_SEGMENTS + 1)).is_err());
        assert!(RoutePattern::parse(&format!("/{}", "x".repeat(MAX_ROUTE_LEN))).is_err());
    }

    #[test]
    fn within_is_sound() {
        let cases: &[(&str, &str, bool)] = &[
            ("/p2/acme/*", "/p2/acme/*", true),
            ("/p2/acme/widget", "/p2/acme/*", true),
            ("/p2/acme/widget/x", "/p2/acme/*", true),
            ("/p2/acme/w*", "/p2/acme/*", true),
            ("/p2/acme", "/p2/acme/*", false),
            ("/p2/*", "/p2/acme/*", false),
            ("/", "/p2/acme/*", false),
            ("/**", "/p2/acme/*", false),
            ("/p2/acme/**", "/p2/acme/*", false),
            ("/p2/acme-evil/x", "/p2/acme/*", false),
            ("/p2/acme/x", "/p2/**", true),
            ("/p2", "/p2/**", true),
            ("/p2/**/x", "/p2/**", true),
            ("/dist/a/b/acme/x", "/dist/**/acme", true),
            ("/dist/**/acme", "/dist/**/acme", true),
            ("/dist/**/acme", "/dist/**/acme/x", false),
            ("/files/acme-1.zip", "/files/acme-*", true),
            ("/files/acme-*", "/files/acme-*", true),
            ("/files/a*", "/files/acme-*", false),
            ("/anything", "/", true),
        ];
        for (narrow, wide, want) in cases {
            let (n, w) = (
                RoutePattern::parse(narrow).unwrap(),
                RoutePattern::parse(wide).unwrap(),
            );
            assert_eq!(n.within(&w), *want, "{narrow} within {wide}");
        }
    }

    #[test]
    fn bad_route_patterns() {
        for bad in [
            "p2/acme", "/a/../b", "/a/%2f", "/a/b**", "/a?x", "/a\\b", "/a//b",
        ] {
            assert!(RoutePattern::parse(bad).is_err(), "{bad}");
        }
        // Another spelling than the normal one is refused with the normal one suggested: a
        // rule written with a raw `é` could never match (requests arrive with `%C3%A9`).
        for (bad, normal) in [
            ("/caf\u{e9}", "/caf%C3%A9"),
            ("/%40acme/*", "/@acme/*"),
            ("/secret%21", "/secret!"),
            ("/a/%5b", "/a/%5B"),
        ] {
            let err = RoutePattern::parse(bad).expect_err(bad);
            assert!(err.contains(&format!("{normal:?}")), "{bad}: {err}");
            assert!(RoutePattern::parse(normal).is_ok(), "{normal}");
        }
    }

    #[test]
    fn glob_cases() {
        assert!(glob(b"*", b""));
        assert!(glob(b"a*c", b"abbbc"));
        assert!(glob(b"a*b*c", b"axxbyyc"));
        assert!(!glob(b"a*b*c", b"axxbyy"));
        assert!(glob(b"**x", b"x"));
    }
}
