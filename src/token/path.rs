//! Request path normalization: a path is checked as every common store reads it, and the path
//! checked is the path forwarded.
//!
//! The path is normalized once; the normalized form is both what the route rules see and what
//! is forwarded. Pure: route patterns (which must be written in normal form) and the
//! authorization check both build on it.
//!
//! The normal form spells every character one way, because stores decode `%XX` before they
//! look a file up: `/%40acme/x` and `/@acme/x` are one file to nginx, so they must be one path to
//! a deny rule. Characters a path segment may hold as they are (RFC 3986 `pchar`: letters,
//! digits, `-._~!$&'()*+,=:@`) are decoded; every other byte is percent-encoded with upper-case
//! hex (`[` is `%5B`, `é` is `%C3%A9`, a space `%20`).

use std::borrow::Cow;

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

/// Bytes the normal form holds as they are (besides `/`): RFC 3986's `pchar` without `%` and
/// without `;` (refused, see [`PathError::Semicolon`]).
fn is_plain(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'=' | b':' | b'@'
        )
}

/// Appends `%XX` (upper-case hex) for `v`.
fn push_escaped(out: &mut Vec<u8>, v: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.extend_from_slice(&[b'%', HEX[(v >> 4) as usize], HEX[(v & 15) as usize]]);
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

/// Normalizes a request path: one spelling per character (see the module documentation:
/// `pchar`s decoded, every other byte percent-encoded with upper-case hex), `.` and `..`
/// resolved, `//` collapsed, a trailing `/` kept.
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

/// Whether `normalize_slow` would return `b` unchanged: absolute, nothing but `/` and
/// [`is_plain`] bytes (so no `%`), and no empty, `.` or `..` segment but a trailing empty one.
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
        } else if !is_plain(b[i]) {
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
                    v if is_plain(v) => decoded.push(v),
                    v => push_escaped(&mut decoded, v),
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
                if b == b'/' || is_plain(b) {
                    decoded.push(b);
                } else {
                    // Raw bytes a store decodes nothing from: `[`, a space, UTF-8 of `é`.
                    push_escaped(&mut decoded, b);
                }
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
    // Every byte outside ASCII was escaped, so this is ASCII.
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

#[cfg(test)]
mod tests {
    use super::*;

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
            ("/a/%3a", Ok("/a/:")),
            // One spelling per character: pchars decoded, the rest escaped (upper-case hex).
            ("/%40acme/internal-x", Ok("/@acme/internal-x")),
            ("/secret%21", Ok("/secret!")),
            ("/v1%2Binternal", Ok("/v1+internal")),
            ("/a%24%26%27%28%29%2A%2C%3D", Ok("/a$&'()*,=")),
            ("/a/[b]", Ok("/a/%5Bb%5D")),
            ("/a/%5b", Ok("/a/%5B")),
            ("/a/\"q\"", Ok("/a/%22q%22")),
            ("/a/{x}|^`<>", Ok("/a/%7Bx%7D%7C%5E%60%3C%3E")),
            ("/caf\u{e9}/f", Ok("/caf%C3%A9/f")),
            ("/caf%C3%A9/f", Ok("/caf%C3%A9/f")),
            ("/a/%7e", Ok("/a/~")),
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
}
