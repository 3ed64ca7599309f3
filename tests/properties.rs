//! Property tests of the gate's pure parts: path normalization, route matching, the credential
//! parser and the token-file reader, on inputs built from the pieces attackers use.

use proptest::prelude::*;
use tollgate::auth::{normalize_path, parse_authorization};
use tollgate::token::RoutePattern;

/// Path pieces: names, dot segments in every spelling, separators, parameters, escapes.
fn piece() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "/",
        "/",
        "/",
        "a",
        "acme",
        "p2",
        "evil",
        "x.json",
        ".",
        "..",
        "...",
        "%2e",
        "%2E",
        "%2e%2e",
        ".%2e",
        ";",
        ";x=1",
        "..;",
        "%3b",
        "%25",
        "%252e",
        "%2f",
        "%2F",
        "\\",
        "%5c",
        "%c0%ae",
        "%ef%bc%8e",
        "%ef%bc%8f",
        "%c3%a9",
        "@acme",
        "%40",
        "%7e",
        "*",
        "-",
        "_",
        "%00",
        "//",
        "!",
        "%21",
        "+",
        "%2b",
        "[",
        "%5B",
        ":",
        "%3a",
        "internal-x",
        "\u{e9}",
    ])
}

fn raw_path() -> impl Strategy<Value = String> {
    prop::collection::vec(piece(), 0..16).prop_map(|v| format!("/{}", v.concat()))
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// How a store reads a raw path: percent-decoded once (nginx and most stores), optionally with
/// `;parameters` cut off every segment first (servlet containers), then dot segments resolved.
/// `None` when it climbs above the root.
fn store_view(raw: &str, servlet: bool) -> Option<String> {
    let segments: Vec<String> = raw
        .split('/')
        .map(|seg| {
            let seg = if servlet {
                seg.split(';').next().unwrap_or_default()
            } else {
                seg
            };
            let b = seg.as_bytes();
            let mut out = Vec::new();
            let mut i = 0;
            while i < b.len() {
                match (
                    b[i],
                    b.get(i + 1).and_then(|&c| hex(c)),
                    b.get(i + 2).and_then(|&c| hex(c)),
                ) {
                    (b'%', Some(h), Some(l)) => {
                        out.push(h << 4 | l);
                        i += 3;
                    }
                    (c, _, _) => {
                        out.push(c);
                        i += 1;
                    }
                }
            }
            String::from_utf8_lossy(&out).into_owned()
        })
        .collect();
    let mut stack: Vec<String> = Vec::new();
    // A decoded segment may hold a `/` (from `%2F`): the store splits it again.
    for seg in segments
        .iter()
        .flat_map(|s| s.split('/').map(str::to_owned).collect::<Vec<_>>())
    {
        match seg.as_str() {
            "" | "." => {}
            ".." => {
                stack.pop()?;
            }
            s => stack.push(s.to_owned()),
        }
    }
    Some(format!("/{}", stack.join("/")))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// Normalizing a normal path changes nothing.
    #[test]
    fn normalization_is_idempotent(raw in raw_path()) {
        if let Ok(n) = normalize_path(&raw) {
            let again = normalize_path(&n);
            prop_assert_eq!(again.as_deref(), Ok(&*n));
        }
    }

    /// Whatever a `/p2/acme/*` token is allowed, every store reads inside `/p2/acme/` — the
    /// forwarded (normalized) path and the raw one alike.
    #[test]
    fn what_is_allowed_stays_inside_the_route(tail in raw_path()) {
        let route = RoutePattern::parse("/p2/acme/*").unwrap();
        let raw = format!("/p2/acme{tail}");
        if let Ok(n) = normalize_path(&raw) {
            if route.matches(&n) {
                for servlet in [false, true] {
                    for seen in [store_view(&n, servlet), store_view(&raw, servlet)] {
                        let seen = seen.unwrap_or_default();
                        prop_assert!(
                            seen.starts_with("/p2/acme/"),
                            "{raw:?} normalized to {n:?} is read as {seen:?} (servlet: {servlet})"
                        );
                    }
                }
            }
        }
    }

    /// One spelling per character: writing any characters of a path percent-encoded (as a
    /// store decodes them back) normalizes to the same path, so no rule can be passed by
    /// spelling its path another way.
    #[test]
    fn every_spelling_normalizes_alike(
        raw in raw_path(),
        encode in prop::collection::vec(any::<bool>(), 64),
    ) {
        let b = raw.as_bytes();
        let mut alt = String::new();
        let (mut i, mut k) = (0, 0);
        while i < b.len() {
            if b[i] == b'%' {
                // An escape (or a bad one) stays as it is.
                let end = (i + 3).min(b.len());
                alt.push_str(&raw[i..end]);
                i = end;
            } else {
                let c = raw[i..].chars().next().unwrap();
                if c != '/' && encode[k % encode.len()] {
                    for byte in c.to_string().bytes() {
                        alt.push_str(&format!("%{byte:02X}"));
                    }
                } else {
                    alt.push(c);
                }
                i += c.len_utf8();
            }
            k += 1;
        }
        let (a, n) = (normalize_path(&alt), normalize_path(&raw));
        prop_assert_eq!(a.is_ok(), n.is_ok(), "{:?} vs {:?}: {:?} vs {:?}", raw, alt, n, a);
        if let (Ok(a), Ok(n)) = (a, n) {
            prop_assert_eq!(a, n, "{:?} vs {:?}", raw, alt);
        }
    }

    /// A deny rule holds for whatever the store reads under it: if nginx reads the forwarded
    /// path as `/@acme/internal-…`, the rule `/@acme/internal-*` matches it (`%2F` included).
    #[test]
    fn a_deny_rule_sees_what_the_store_sees(tail in raw_path()) {
        let deny = RoutePattern::parse("/@acme/internal-*").unwrap();
        for raw in [format!("/@acme{tail}"), format!("/%40acme{tail}")] {
            if let Ok(n) = normalize_path(&raw) {
                if let Some(seen) = store_view(&n, false) {
                    let mut segs = seen.split('/').skip(1);
                    let under = segs.next() == Some("@acme")
                        && segs.next().is_some_and(|s| s.starts_with("internal-"));
                    prop_assert!(
                        !under || deny.matches(&n),
                        "{raw:?} normalized to {n:?} is read as {seen:?}, which the rule misses"
                    );
                }
            }
        }
    }

    /// The route automaton agrees with a plain backtracking matcher on small inputs.
    #[test]
    fn matching_agrees_with_backtracking(
        pat in prop::collection::vec(prop::sample::select(vec!["a", "b", "*", "**", "a*", "*b"]), 0..6),
        path in prop::collection::vec(prop::sample::select(vec!["a", "b", "ab", "ba", "c"]), 0..8),
    ) {
        fn glob(p: &[u8], s: &[u8]) -> bool {
            match p.split_first() {
                None => s.is_empty(),
                Some((b'*', rest)) => (0..=s.len()).any(|k| glob(rest, &s[k..])),
                Some((c, rest)) => s.first() == Some(c) && glob(rest, &s[1..]),
            }
        }
        fn reference(pat: &[&str], path: &[&str]) -> bool {
            match pat.split_first() {
                None => true,
                Some((&"**", rest)) => (0..=path.len()).any(|k| reference(rest, &path[k..])),
                Some((p, rest)) => match path.split_first() {
                    None => false,
                    Some((s, more)) => glob(p.as_bytes(), s.as_bytes()) && reference(rest, more),
                },
            }
        }
        let source = format!("/{}", pat.join("/"));
        let compiled = RoutePattern::parse(&source).unwrap();
        let request = format!("/{}", path.join("/"));
        prop_assert_eq!(compiled.matches(&request), reference(&pat, &path), "{} vs {}", source, request);
    }

    /// Any header value gives a credential or an error, never a panic.
    #[test]
    fn credential_parser_is_total(header in prop::collection::vec(any::<u8>(), 0..200)) {
        let users = vec!["token".to_string(), "__token__".to_string()];
        let _ = parse_authorization(Some(&header), &users);
        let text = String::from_utf8_lossy(&header);
        let _ = parse_authorization(Some(format!("Basic {text}").as_bytes()), &users);
        let _ = parse_authorization(Some(format!("Bearer tok_{text}").as_bytes()), &users);
    }

    /// Any text gives tokens or problems, never a panic.
    #[test]
    fn token_file_reader_is_total(text in "(tokens:|- |  |id: |name: |&a |\\*a|\\[|\\]|\\{|\\}|:|\n|x|tok_|\"|#){0,60}") {
        let _ = tollgate::store::yaml::parse("t.yaml", &text);
    }
}
