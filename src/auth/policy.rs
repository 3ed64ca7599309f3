//! Path normalization and route rules (DESIGN §3).
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
/// Refuses encoded slashes, backslashes, NUL, bad encodings and escapes above the root.
///
/// A path that is already normal (the common case) is returned as it is, without copying.
pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, PathError> {
    if is_normal(raw.as_bytes()) {
        Ok(Cow::Borrowed(raw))
    } else {
        normalize_slow(raw).map(Cow::Owned)
    }
}

/// Whether `normalize_slow` would return `b` unchanged: absolute, no `%`, `\\` or NUL, and no
/// empty, `.` or `..` segment but a trailing empty one.
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
        } else if matches!(b[i], b'%' | b'\\' | 0) {
            return false;
        }
    }
    true
}

fn normalize_slow(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    let mut decoded = Vec::with_capacity(bytes.len());
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
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            0 => return Err(PathError::Nul),
            _ => {
                decoded.push(b);
                i += 1;
            }
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
        if u32::try_from(source.len()).is_err() {
            return Err("route is too long".into());
        }
        let normalized = normalize_path(source).map_err(|e| format!("route {source:?}: {e}"))?;
        if normalized != source && normalized.trim_end_matches('/') != source.trim_end_matches('/')
        {
            return Err(format!(
                "route {source:?} is not in normal form (write it as {normalized:?})"
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
        let segs: Vec<&str> = segments(path).collect();
        self.matches_segments(&segs)
    }

    /// Like [`RoutePattern::matches`], on a path already split into segments.
    pub fn matches_segments(&self, segs: &[&str]) -> bool {
        match_segs(&self.source, &self.segs, segs)
    }
}

fn match_segs(source: &str, pat: &[Seg], path: &[&str]) -> bool {
    match pat.split_first() {
        None => true,
        Some((seg, rest)) if seg.kind == SegKind::AnyDeep => {
            (0..=path.len()).any(|k| match_segs(source, rest, &path[k..]))
        }
        Some((seg, rest)) => match path.split_first() {
            None => false,
            Some((first, more)) => {
                let text = source
                    .get(seg.start as usize..seg.end as usize)
                    .unwrap_or_default();
                let ok = if seg.kind == SegKind::Literal {
                    text == *first
                } else {
                    glob(text.as_bytes(), first.as_bytes())
                };
                ok && match_segs(source, rest, more)
            }
        },
    }
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
    token
        .routes
        .iter()
        .filter(|r| r.access.as_permission() >= required)
        .any(|r| r.pattern.matches_segments(&segs))
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
            ("/a/%252e%252e/b", Ok("/a/%252e%252e/b")),
            ("/a/%25", Ok("/a/%25")),
            ("/a;b/c", Ok("/a;b/c")),
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
            let simple = !input.contains(['%', '\\', '\0']);
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
        ];
        for (pat, path, want) in cases {
            let p = RoutePattern::parse(pat).unwrap();
            assert_eq!(p.matches(path), *want, "{pat} vs {path}");
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
