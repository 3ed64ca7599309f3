//! One token-file entry: its fields as written (deserialized from the entry's events), its
//! checks, turning it into a token record or into problems naming the entry, and its name
//! found in the raw events when it does not deserialize.

use std::borrow::Cow;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use saphyr_parser::Event;
use serde::Deserialize;

use super::problems::Problems;
use super::scalar::Ev;
use crate::token::{
    self, valid_name, Access, AllowedIps, Permission, RateLimitRule, Route, RoutePattern, Source,
    Token, NAME_RULE,
};

/// A token record as written in a file; strings borrow from the file's text where they can.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Entry<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    hash: Cow<'a, str>,
    permission: Permission,
    #[serde(default, borrow)]
    routes: Vec<RouteEntry<'a>>,
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    rate_limit: Option<RateLimitRule>,
    #[serde(default)]
    disabled: bool,
    #[serde(default)]
    allowed_ips: AllowedIps,
    #[serde(default)]
    packages: crate::token::PackagePatterns,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteEntry<'a> {
    #[serde(borrow)]
    path: Cow<'a, str>,
    access: Access,
}

/// A generation for a file record: changes whenever its secret hash or rights change.
fn generation_of(e: &Entry) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    e.hash.as_ref().hash(&mut h);
    e.permission.hash(&mut h);
    for r in &e.routes {
        r.path.as_ref().hash(&mut h);
        r.access.hash(&mut h);
    }
    h.finish() | 1
}

/// Whether `text` holds a whole generated token (its checksum right).
fn holds_token(text: &str) -> bool {
    text.match_indices(token::PREFIX).any(|(i, _)| {
        text.get(i..i + token::TOKEN_LEN)
            .is_some_and(|t| token::parse(t).is_ok())
    })
}

/// Checks one deserialized entry and turns it into a token, or reports its problems.
/// `index` names the entry in errors.
pub(super) fn validate(
    e: Entry,
    index: usize,
    source: &Source,
    errors: &mut Problems,
) -> Option<Token> {
    // Made only for an error: no string per good entry.
    let at = || format!("tokens[{index}] (name {:?})", e.name);
    let before = errors.count();
    if !token::is_valid_id(&e.id) {
        errors.push(format_args!(
            "{}: id {:?} must be 12 letters or digits",
            at(),
            e.id
        ));
    }
    if !valid_name(&e.name) {
        errors.push(format_args!("{}: name must be {NAME_RULE}", at()));
    }
    let hash = token::validate_phc(&e.hash)
        .map_err(|err| errors.push(format_args!("{}: hash: {err}", at())))
        .ok();
    let mut routes = Vec::with_capacity(e.routes.len());
    for (j, r) in e.routes.iter().enumerate() {
        match RoutePattern::parse(&r.path) {
            Ok(pattern) => routes.push(Route {
                pattern,
                access: r.access,
            }),
            Err(reason) => errors.push(format_args!("{}: routes[{j}]: {reason}", at())),
        }
    }
    // A token pasted into a field (instead of its hash into `hash:`): as a name, description
    // or route it would be shown by every listing and log line naming the token. Refused.
    let pasted = [
        ("name", e.name.as_ref()),
        ("id", e.id.as_ref()),
        ("hash", e.hash.as_ref()),
    ]
    .into_iter()
    .chain(e.description.as_deref().map(|d| ("description", d)))
    .chain(e.routes.iter().map(|r| ("a route", r.path.as_ref())))
    .find(|(_, v)| holds_token(v));
    if let Some((field, _)) = pasted {
        errors.push(format_args!(
            "{}: {field} holds a Tollgate token; a token file holds a token's hash, never the token",
            at()
        ));
    }
    if errors.count() > before {
        return None;
    }
    let hash = hash?;
    Some(Token {
        id: Arc::from(e.id.as_ref()),
        name: Arc::from(e.name.as_ref()),
        generation: generation_of(&e),
        description: e.description,
        hash,
        permission: e.permission,
        routes,
        created_at: e.created_at,
        expires_at: e.expires_at,
        rate_limit: e.rate_limit,
        disabled: e.disabled,
        allowed_ips: e.allowed_ips,
        previous: None,
        packages: e.packages,
        source: source.clone(),
    })
}

/// The `name:` of a buffered entry, if it has a plain one (for naming a refused entry).
pub(super) fn name_in<'e>(events: &'e [Ev]) -> Option<&'e str> {
    if !matches!(events.first(), Some((Event::MappingStart(..), _))) {
        return None;
    }
    let mut depth = 0usize;
    let mut is_key = true;
    let mut want_value = false;
    for (ev, _) in &events[1..] {
        match ev {
            Event::Scalar(v, ..) if depth == 0 => {
                if is_key {
                    want_value = v == "name";
                } else if want_value {
                    return Some(v);
                }
                is_key = !is_key;
            }
            Event::SequenceStart(..) | Event::MappingStart(..) => depth += 1,
            Event::SequenceEnd | Event::MappingEnd if depth == 0 => return None,
            Event::SequenceEnd | Event::MappingEnd => {
                depth -= 1;
                if depth == 0 {
                    is_key = !is_key;
                    want_value = false;
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::super::tests::HASH;

    #[test]
    fn reports_every_bad_entry() {
        let text = format!(
            "tokens:\n  - {{id: short, name: a, hash: '{HASH}', permission: read}}\n  - {{id: BBBBBBBBBBBB, name: 'b c', hash: nope, permission: read, routes: [{{path: x, access: read}}]}}\n"
        );
        let refused = parse("t.yaml", &text).unwrap_err();
        assert_eq!(refused.path, "t.yaml");
        let errs = refused.problems;
        assert_eq!(errs.len(), 4, "{errs:#?}");
        assert!(errs[0].starts_with("t.yaml: tokens[0] (name \"a\"): id"));
        assert!(errs
            .iter()
            .any(|e| e.contains("tokens[1] (name \"b c\"): hash:")));
        assert!(errs
            .iter()
            .any(|e| e.contains("tokens[1] (name \"b c\"): routes[0]:")));
    }

    fn entry(id: &str, name: &str) -> String {
        format!("  - {{id: {id}, name: {name}, hash: '{HASH}', permission: read}}\n")
    }

    #[test]
    fn reports_schema_errors_of_every_entry() {
        let text = format!(
            "tokens:\n{}  - {{id: BBBBBBBBBBBB, name: b, hash: '{HASH}', permission: admin}}\n  - {{id: CCCCCCCCCCCC, name: c, hash: '{HASH}', permission: read, colour: red}}\n  - {{id: DDDDDDDDDDDD, hash: '{HASH}', permission: read}}\n  - {{id: short, name: e, hash: '{HASH}', permission: read, routes: [{{path: /x, access: all}}]}}\n  - [not, a, mapping]\n{}",
            entry("AAAAAAAAAAAA", "a"),
            entry("FFFFFFFFFFFF", "f"),
        );
        let errs = parse("t.yaml", &text).unwrap_err().problems;
        assert_eq!(errs.len(), 5, "{errs:#?}");
        assert!(
            errs[0]
                .starts_with("t.yaml: tokens[1] (name \"b\"): permission: unknown variant `admin`")
                && errs[0].ends_with(&format!(
                    "at line 3 column {}",
                    text.lines().nth(2).unwrap().find("admin").unwrap() + 1
                )),
            "{errs:#?}"
        );
        assert!(errs[1].starts_with("t.yaml: tokens[2] (name \"c\"): unknown field `colour`"));
        assert!(errs[1].contains("line 4"), "{errs:#?}");
        assert!(
            errs[2].starts_with("t.yaml: tokens[3]: missing field `name` at line 5"),
            "{errs:#?}"
        );
        assert!(
            errs[3].starts_with(
                "t.yaml: tokens[4] (name \"e\"): routes[0].access: unknown variant `all`"
            ),
            "{errs:#?}"
        );
        assert!(
            errs[4].starts_with(
                "t.yaml: tokens[5]: invalid type: sequence, expected struct Entry at line 7"
            ),
            "{errs:#?}"
        );
    }

    #[test]
    fn generation_follows_rights() {
        let a = format!(
            "tokens:\n  - {{id: AAAAAAAAAAAA, name: a, hash: '{HASH}', permission: read}}\n"
        );
        let b = a.replace("read", "write");
        let ga = parse("t", &a).unwrap()[0].generation;
        assert_eq!(ga, parse("t", &a).unwrap()[0].generation);
        assert_ne!(ga, parse("t", &b).unwrap()[0].generation);
    }

    #[test]
    fn disabled_flag() {
        let on = format!(
            "tokens:\n  - {{id: AAAAAAAAAAAA, name: a, hash: '{HASH}', permission: read}}\n"
        );
        let off = on.replace("permission: read", "permission: read, disabled: true");
        assert!(!parse("t", &on).unwrap()[0].disabled);
        let t = &parse("t", &off).unwrap()[0];
        // The flag is checked after verification: it leaves the generation (the cache) alone.
        assert!(t.disabled);
        assert_eq!(t.generation, parse("t", &on).unwrap()[0].generation);
        let bad = on.replace("permission: read", "permission: read, disabled: maybe");
        assert!(parse("t", &bad).is_err());
    }

    #[test]
    fn allowed_ips() {
        let any = format!(
            "tokens:\n  - {{id: AAAAAAAAAAAA, name: a, hash: '{HASH}', permission: read}}\n"
        );
        assert!(parse("t", &any).unwrap()[0].allowed_ips.is_empty());
        let some = any.replace(
            "permission: read",
            "permission: read, allowed_ips: [10.0.0.0/8, '2001:db8::/32', 203.0.113.7]",
        );
        let t = &parse("t", &some).unwrap()[0];
        assert_eq!(
            t.allowed_ips.to_strings(),
            ["10.0.0.0/8", "2001:db8::/32", "203.0.113.7/32"]
        );
        let bad = any.replace(
            "permission: read",
            "permission: read, allowed_ips: [10.0.0.0/33]",
        );
        assert!(parse("t", &bad).is_err());
    }

    /// A generated token (valid checksum), as someone would paste it.
    fn pasted_token() -> String {
        crate::token::generate().token.expose().to_string()
    }

    #[test]
    fn tokens_and_hashes_are_never_echoed() {
        let tok = pasted_token();
        let secret_hash = "$argon2id$v=19$m=64,t=1,p=1$c2VjcmV0c2FsdA$c2VjcmV0aGFzaHNlY3JldGhhc2g";
        let entry = |fields: &str| {
            format!(
                "  - {{id: AAAAAAAAAAAA, name: a, hash: '{HASH}', permission: read, {fields}}}\n"
            )
        };
        let cases = [
            format!("  - {{id: {tok}, name: a, hash: '{HASH}', permission: read}}\n"),
            format!("  - {{id: '{secret_hash}', name: a, hash: '{HASH}', permission: read}}\n"),
            format!(
                "  - {{id: AAAAAAAAAAAA, name: 'x {tok}', hash: '{HASH}', permission: read}}\n"
            ),
            format!("  - {{id: AAAAAAAAAAAA, name: {tok}, hash: '{HASH}', permission: {tok}}}\n"),
            format!("  - {{id: AAAAAAAAAAAA, name: {tok}, hash: '{HASH}', permission: admin}}\n"),
            entry(&format!("{tok}: 1")),
            entry(&format!("routes: [{{path: '{tok}', access: read}}]")),
            entry(&format!("routes: [{{path: /a, access: {tok}}}]")),
            entry(&format!("rate_limit: {tok}")),
            entry(&format!("rate_limit: {{requests: 1, period: {tok}}}")),
            entry(&format!("rate_limit: '{secret_hash}'")),
            format!("  - {{id: AAAAAAAAAAAA, name: a, hash: '{tok}', permission: read}}\n"),
            format!(
                "  - {{id: AAAAAAAAAAAA, name: a, hash: '$argon2i${}', permission: read}}\n",
                &tok
            ),
            format!("  - {tok}\n"),
        ];
        for case in cases {
            let text = format!("tokens:\n{case}");
            let errs = parse("t.yaml", &text).unwrap_err().problems;
            let all = errs.join("\n");
            assert!(
                !all.contains(&tok[4..20]) && !all.contains("c2VjcmV0"),
                "{case}: {all}"
            );
            // Either the value is shown, redacted, or the problem is said without it.
            assert!(
                all.contains("(redacted)") || all.contains("never the token"),
                "{case}: {all}"
            );
        }
        let errs = parse("t.yaml", &format!("tok_{}: []\n", &tok[4..]))
            .unwrap_err()
            .problems;
        assert!(!errs[0].contains(&tok[4..]), "{errs:?}");
        // A token as the name, the description or a route of an otherwise good entry: refused,
        // never taken into the token set (where lists and logs would show it).
        for fields in [
            format!("name: {tok}"),
            format!("name: x{tok}"),
            format!("description: 'CI token {tok}'"),
            format!("routes: [{{path: '/p/{tok}', access: read}}]"),
        ] {
            let text = format!(
                "tokens:\n  - {{id: AAAAAAAAAAAA, hash: '{HASH}', permission: read, {fields}{}}}\n",
                if fields.starts_with("name") {
                    ""
                } else {
                    ", name: a"
                }
            );
            let errs = parse("t.yaml", &text).unwrap_err().problems;
            assert_eq!(errs.len(), 1, "{fields}: {errs:?}");
            assert!(
                errs[0].contains("a token file holds a token's hash, never the token")
                    && !errs[0].contains(&tok[4..]),
                "{fields}: {errs:?}"
            );
        }
        // Ordinary names that merely contain "tok" are fine.
        for name in ["tok-7", "tok_ci", "stock_x"] {
            let text = format!("tokens:\n  - {{id: AAAAAAAAAAAA, name: {name}, hash: '{HASH}', permission: read}}\n");
            assert_eq!(parse("t.yaml", &text).unwrap().len(), 1, "{name}");
        }
    }
}
