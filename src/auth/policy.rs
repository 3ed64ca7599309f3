//! Path normalization and route rules: the path is checked as every common store reads it,
//! and the path checked is the path forwarded.
//!
//! The path is normalized once; the normalized form is both what the rules see and what is
//! forwarded. Route patterns match segment-wise as prefixes: `/releases` covers
//! `/releases/x` but not `/releases-old`; `*` is one segment (or a glob inside a segment),
//! `**` any number of segments.

use std::borrow::Cow;
use std::fmt;

use crate::token::{Permission, Token};

/// Why a request path is refused (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Not starting with `/` (e.g. `*` or an authority form).
    #[error("path must start with /")]
    NotAbsolute,
    /// `%` not followed by two hex digits.
    #[error("invalid percent-encoding")]
    BadEncoding,
    /// `%2F`: an encoded slash would be read differently by different servers.
    #[error("encoded slash (%2F) is not allowed")]
    EncodedSlash,
    /// A backslash, raw or encoded.
    #[error("backslash is not allowed")]
    Backslash,
    /// A NUL byte, raw or encoded.
    #[error("NUL is not allowed")]
    Nul,
    /// `..` climbing above the root.
    #[error("path escapes the root with ..")]
    EscapesRoot,
    /// `;`, raw or encoded: servlet containers (Tomcat, Jetty: the usual base of Maven stores)
    /// cut `;parameters` off every segment, so `..;` is `..` to them and a name to others.
    #[error("; (a path parameter) is not allowed")]
    Semicolon,
    /// `%25` followed by two hex digits: a store that decodes twice would read another path.
    #[error("double percent-encoding is not allowed")]
    DoubleEncoding,
    /// Encoded bytes that are not UTF-8 (overlong forms such as `%C0%AE` among them).
    #[error("percent-encoded bytes are not valid UTF-8")]
    BadUtf8,
    /// A character that Unicode compatibility normalization turns into `.`, `/`, `\`, `;` or
    /// `%` (full-width `．`, `／`…): some stores and file systems apply it.
    #[error("a character that may be read as . / \\ ; or % is not allowed")]
    Confusable,
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn is_npm_name_char(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// npm sends a scoped package as one segment `/@scope%2Fname`: the only encoded slash
/// accepted, when the segment so far is `@scope` and the rest of it is a package name (npm
/// name characters, not `.`/`..`), so it can never be read as two path segments that escape.
fn is_npm_scope(decoded_so_far: &[u8], rest: &[u8]) -> bool {
    let seg_start = decoded_so_far
        .iter()
        .rposition(|&b| b == b'/')
        .map_or(0, |i| i + 1);
    let scope = &decoded_so_far[seg_start..];
    let name_end = rest.iter().position(|&b| b == b'/').unwrap_or(rest.len());
    let name = &rest[..name_end];
    scope.len() > 1
        && scope[0] == b'@'
        && scope[1..].iter().all(|&b| is_npm_name_char(b))
        && !name.is_empty()
        && name.iter().all(|&b| is_npm_name_char(b))
        && name != b"."
        && name != b".."
}

/// Normalizes a request path: decodes percent-encoded unreserved characters (and upper-cases
/// the hex of the others), resolves `.` and `..`, collapses `//`, keeps a trailing `/`.
/// Refuses what common stores would read differently from Tollgate (see [`PathError`]):
/// encoded slashes, backslashes, NUL, `;`, double encoding, encoded bytes that are not UTF-8,
/// compatibility forms of `.`, `/`, `\`, `;`, `%`, bad encodings and escapes above the root.
///
/// A path that is already normal (the common case) is returned as it is, without copying.
pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, PathError> {
    if is_normal(raw.as_bytes()) {
        Ok(Cow::Borrowed(raw))
    } else {
        normalize_slow(raw).map(Cow::Owned)
    }
}

/// Whether `normalize_slow` would return `b` unchanged: absolute, plain ASCII without `%`,
/// `\`, `;` or NUL, and no empty, `.` or `..` segment but a trailing empty one.
fn is_normal(b: &[u8]) -> bool {
    if b.first() != Some(&b'/') {
        return false;
    }
    let mut start = 1;
    for i in 1..=b.len() {
        if i == b.len() || b[i] == b'/' {
            let seg = &b[start..i];
            if (seg.is_empty() && i != b.len()) || seg == b"." || seg == b".." {
                return false;
            }
            start = i + 1;
        } else if matches!(b[i], b'%' | b'\\' | b';' | 0) || !b[i].is_ascii() {
            return false;
        }
    }
    true
}

/// Whether a non-ASCII character becomes (or holds) `.`, `/`, `\`, `;` or `%` under Unicode
/// compatibility decomposition (NFKC), e.g. U+FF0E `．`, U+2024 `․`, U+FF0F `／`, U+037E `;`.
fn is_confusable(c: char) -> bool {
    let mut hit = false;
    unicode_normalization::char::decompose_compatible(c, |d| {
        hit |= matches!(d, '.' | '/' | '\\' | ';' | '%');
    });
    hit
}

fn normalize_slow(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    let mut decoded = Vec::with_capacity(bytes.len());
    // Every byte as a store that decodes everything once would see it, to check it is UTF-8
    // and holds no compatibility form of a separator.
    let mut plain = Vec::new();
    let mut non_ascii = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let (h, l) = match (
                    bytes.get(i + 1).and_then(|&c| hex(c)),
                    bytes.get(i + 2).and_then(|&c| hex(c)),
                ) {
                    (Some(h), Some(l)) => (h, l),
                    _ => return Err(PathError::BadEncoding),
                };
                let v = h << 4 | l;
                match v {
                    b'/' if is_npm_scope(&decoded, &bytes[i + 3..]) => {
                        decoded.extend_from_slice(b"%2F");
                    }
                    b'/' => return Err(PathError::EncodedSlash),
                    b'\\' => return Err(PathError::Backslash),
                    b';' => return Err(PathError::Semicolon),
                    0 => return Err(PathError::Nul),
                    v if is_unreserved(v) => decoded.push(v),
                    v => {
                        const HEX: &[u8; 16] = b"0123456789ABCDEF";
                        decoded.extend_from_slice(&[
                            b'%',
                            HEX[(v >> 4) as usize],
                            HEX[(v & 15) as usize],
                        ]);
                    }
                }
                non_ascii |= !v.is_ascii();
                plain.push(v);
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            b';' => return Err(PathError::Semicolon),
            0 => return Err(PathError::Nul),
            _ => {
                non_ascii |= !b.is_ascii();
                decoded.push(b);
                plain.push(b);
                i += 1;
            }
        }
    }
    // `%25` then two hex digits, as forwarded (`%25%32%65` forwards as `%252e`).
    if decoded
        .windows(5)
        .any(|w| w[..3] == *b"%25" && hex(w[3]).is_some() && hex(w[4]).is_some())
    {
        return Err(PathError::DoubleEncoding);
    }
    if non_ascii {
        let text = std::str::from_utf8(&plain).map_err(|_| PathError::BadUtf8)?;
        if text.chars().any(|c| !c.is_ascii() && is_confusable(c)) {
            return Err(PathError::Confusable);
        }
    }
    // Only ASCII was removed or added, so this stays valid UTF-8.
    let decoded = String::from_utf8(decoded).map_err(|_| PathError::BadEncoding)?;
    let mut out: Vec<&str> = Vec::new();
    let mut trailing = false;
    for seg in decoded[1..].split('/') {
        trailing = matches!(seg, "" | "." | "..");
        match seg {
            "" | "." => {}
            ".." => {
                if out.pop().is_none() {
                    return Err(PathError::EscapesRoot);
                }
            }
            s => out.push(s),
        }
    }
    let mut path = String::with_capacity(decoded.len());
    for s in &out {
        path.push('/');
        path.push_str(s);
    }
    if trailing || out.is_empty() {
        path.push('/');
    }
    Ok(path)
}

/// The permission a method needs: read for GET/HEAD/OPTIONS, write for PUT/POST/PATCH/DELETE,
/// manager for anything else.
pub fn required_permission(method: &http::Method) -> Permission {
    match *method {
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS => Permission::Read,
        http::Method::PUT | http::Method::POST | http::Method::PATCH | http::Method::DELETE => {
            Permission::Write
        }
        _ => Permission::Manager,
    }
}

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
        let mut offset = 0;
        for s in source.split('/') {
            let (start, end) = (offset, offset + s.len());
            offset = end + 1;
            if s.is_empty() {
                continue;
            }
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

/// Decides whether `token` may use `method` on the normalized `path`.
pub fn allows(token: &Token, required: Permission, path: &str) -> bool {
    if token.permission < required {
        return false;
    }
    if token.routes.is_empty() {
        return true;
    }
    // Split once for all routes.
    let segs: Vec<&str> = segments(path).collect();
    let segs = &segs[..];
    token
        .routes
        .iter()
        .filter(|r| r.access.as_permission() >= required)
        .any(|r| r.pattern.matches_segments(segs))
}

fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::{Access, PhcHash, Route, Source};

    #[test]
    fn path_normalization_table() {
        use PathError::*;
        let cases: &[(&str, Result<&str, PathError>)] = &[
            ("/", Ok("/")),
            ("/a/b", Ok("/a/b")),
            ("/a/b/", Ok("/a/b/")),
            ("//a///b", Ok("/a/b")),
            ("/a/./b", Ok("/a/b")),
            ("/a/b/.", Ok("/a/b/")),
            ("/a/b/..", Ok("/a/")),
            ("/a/../b", Ok("/b")),
            ("/a/b/../../c", Ok("/c")),
            ("/p2/acme/../other/x", Ok("/p2/other/x")),
            ("/p2/%61cme/x", Ok("/p2/acme/x")),
            ("/p2/acme/%2e%2e/other", Ok("/p2/other")),
            ("/p2/acme/%2E%2E/%2E%2E/x", Ok("/x")),
            ("/a/%7euser", Ok("/a/~user")),
            ("/a/%41%5A%30%2D%5F", Ok("/a/AZ0-_")),
            ("/a/%20b", Ok("/a/%20b")),
            ("/a/%3a", Ok("/a/%3A")),
            ("/a/%252e%252e/b", Err(DoubleEncoding)),
            ("/a/%25", Ok("/a/%25")),
            ("/a;b/c", Err(Semicolon)),
            ("/p2/acme/..;/evil/secret.json", Err(Semicolon)),
            ("/p2/acme/%2e%2e;/evil", Err(Semicolon)),
            ("/p2/acme/.;/..;/evil", Err(Semicolon)),
            ("/p2/acme/..;jsessionid=1/evil", Err(Semicolon)),
            ("/p2/acme/x.json;jsessionid=1", Err(Semicolon)),
            ("/p2/acme/..%3b/evil", Err(Semicolon)),
            ("/p2/acme/..%3B/evil", Err(Semicolon)),
            ("/p2/acme/%252e%252e/evil", Err(DoubleEncoding)),
            ("/p2/acme/%25%32%65", Err(DoubleEncoding)),
            ("/p2/acme/%25zz", Ok("/p2/acme/%25zz")),
            ("/p2/acme/%c0%ae%c0%ae/evil", Err(BadUtf8)),
            ("/p2/acme/%e0%80%ae/evil", Err(BadUtf8)),
            ("/p2/acme/%ff", Err(BadUtf8)),
            ("/p2/acme/%ef%bc%8e%ef%bc%8e/evil", Err(Confusable)),
            ("/p2/acme/%ef%bc%8fevil", Err(Confusable)),
            ("/p2/acme/%e2%80%a5/evil", Err(Confusable)),
            ("/p2/acme/%cd%be", Err(Confusable)),
            (
                "/p2/acme/%c3%a9t%c3%a9.json",
                Ok("/p2/acme/%C3%A9t%C3%A9.json"),
            ),
            ("/a/.../b", Ok("/a/.../b")),
            ("/a/..b", Ok("/a/..b")),
            ("/.hidden", Ok("/.hidden")),
            ("/a/b/./../c/./", Ok("/a/c/")),
            ("/..", Err(EscapesRoot)),
            ("/../etc/passwd", Err(EscapesRoot)),
            ("/a/../../b", Err(EscapesRoot)),
            ("/%2e%2e/x", Err(EscapesRoot)),
            ("/a/%2e%2e/%2e%2e/x", Err(EscapesRoot)),
            ("/.%2e/x", Err(EscapesRoot)),
            ("/a/%2f/b", Err(EncodedSlash)),
            ("/@acme%2fwidget", Ok("/@acme%2Fwidget")),
            (
                "/@acme%2Fwidget/-/widget-1.0.0.tgz",
                Ok("/@acme%2Fwidget/-/widget-1.0.0.tgz"),
            ),
            ("/@acme%2f..", Err(EncodedSlash)),
            ("/@acme%2f", Err(EncodedSlash)),
            ("/@%2fx", Err(EncodedSlash)),
            ("/acme%2fwidget", Err(EncodedSlash)),
            ("/@ac/me%2fwidget", Err(EncodedSlash)),
            ("/@acme%2f%2e%2e/x", Err(EncodedSlash)),
            ("/a%2Fb", Err(EncodedSlash)),
            ("/a/%2F..%2F..%2Fetc", Err(EncodedSlash)),
            ("/a\\b", Err(Backslash)),
            ("/a/..\\..\\b", Err(Backslash)),
            ("/a/%5c../b", Err(Backslash)),
            ("/a/%5C", Err(Backslash)),
            ("/a/\0", Err(Nul)),
            ("/a/%00", Err(Nul)),
            ("/a/%", Err(BadEncoding)),
            ("/a/%2", Err(BadEncoding)),
            ("/a/%zz", Err(BadEncoding)),
            ("/a/%%32%65", Err(BadEncoding)),
            ("", Err(NotAbsolute)),
            ("*", Err(NotAbsolute)),
            ("a/b", Err(NotAbsolute)),
            ("http://x/a", Err(NotAbsolute)),
        ];
        assert!(cases.len() >= 30);
        for (input, want) in cases {
            assert_eq!(
                normalize_path(input).as_deref().map_err(|e| *e),
                *want,
                "input {input:?}"
            );
            // The no-copy fast path takes only inputs the full one leaves unchanged (and
            // leaves those with escapes, even when they stay as they are, to it).
            let slow = normalize_slow(input);
            assert_eq!(slow.as_deref().map_err(|e| *e), *want, "slow {input:?}");
            if is_normal(input.as_bytes()) {
                assert_eq!(slow.as_deref(), Ok(*input), "fast path for {input:?}");
            }
            let simple = !input.contains(['%', '\\', '\0', ';']);
            assert_eq!(
                is_normal(input.as_bytes()),
                simple && slow.as_deref() == Ok(*input),
                "fast path for {input:?}"
            );
        }
    }

    #[test]
    fn normalization_is_idempotent() {
        for p in ["/a/%7e/./b//", "/x/%3a/../y", "/", "/a/b/.."] {
            let once = normalize_path(p).unwrap();
            assert_eq!(normalize_path(&once).unwrap(), once);
        }
    }

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
    }

    #[test]
    fn glob_cases() {
        assert!(glob(b"*", b""));
        assert!(glob(b"a*c", b"abbbc"));
        assert!(glob(b"a*b*c", b"axxbyyc"));
        assert!(!glob(b"a*b*c", b"axxbyy"));
        assert!(glob(b"**x", b"x"));
    }

    fn token(permission: Permission, routes: &[(&str, Access)]) -> Token {
        Token {
            id: "AAAAAAAAAAAA".into(),
            name: "t".into(),
            description: None,
            hash: crate::token::validate_phc(
                "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
            )
            .unwrap_or_else(|_| -> PhcHash { unreachable!() }),
            permission,
            routes: routes
                .iter()
                .map(|(p, a)| Route {
                    pattern: RoutePattern::parse(p).unwrap(),
                    access: *a,
                })
                .collect(),
            created_at: None,
            expires_at: None,
            rate_limit: None,
            generation: 1,
            source: Source::File("t.yaml".into()),
        }
    }

    #[test]
    fn permissions_and_routes() {
        use Permission::*;
        let read = token(Read, &[]);
        assert!(allows(&read, Read, "/x"));
        assert!(!allows(&read, Write, "/x"));
        let write = token(Write, &[]);
        assert!(allows(&write, Read, "/x") && allows(&write, Write, "/x"));
        assert!(!allows(&write, Manager, "/x"));
        let scoped = token(
            Write,
            &[("/p2/acme/*", Access::Read), ("/upload", Access::Write)],
        );
        assert!(allows(&scoped, Read, "/p2/acme/a.json"));
        assert!(!allows(&scoped, Write, "/p2/acme/a.json"));
        assert!(allows(&scoped, Write, "/upload/a.zip"));
        assert!(allows(&scoped, Read, "/upload/a.zip"));
        assert!(!allows(&scoped, Read, "/p2/other/a.json"));
        // a route cannot grant more than the token's permission
        let ro = token(Read, &[("/upload", Access::Write)]);
        assert!(!allows(&ro, Write, "/upload/a"));
        assert_eq!(required_permission(&http::Method::GET), Read);
        assert_eq!(required_permission(&http::Method::DELETE), Write);
        assert_eq!(required_permission(&http::Method::TRACE), Manager);
    }
}
