//! YAML token files: a top-level `tokens:` list of records. A file is read whole and refused
//! whole: every bad entry is reported with file, entry and reason.

use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::auth::RoutePattern;
use crate::token::{self, Access, Permission, RateLimitRule, Route, Source, Token};

/// A token record as written in a file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    id: String,
    name: String,
    hash: String,
    permission: Permission,
    #[serde(default)]
    routes: Vec<RouteEntry>,
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    rate_limit: Option<RateLimitRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteEntry {
    path: String,
    access: Access,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    #[serde(default)]
    tokens: Option<Vec<Entry>>,
}

/// True if `name` is usable as a token name (and thus as a Basic username).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
}

/// A generation for a file record: changes whenever its secret hash or rights change.
fn generation_of(e: &Entry) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    e.hash.hash(&mut h);
    e.permission.hash(&mut h);
    for r in &e.routes {
        r.path.hash(&mut h);
        r.access.hash(&mut h);
    }
    h.finish() | 1
}

/// Parses the text of a token file. `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Vec<Token>, Vec<String>> {
    let doc: Document = match serde_yaml_ng::from_str::<Option<Document>>(text) {
        Ok(d) => d.unwrap_or(Document { tokens: None }),
        Err(e) => return Err(vec![format!("{file}: {e}")]),
    };
    let source = Source::File(Arc::from(file));
    let mut errors = Vec::new();
    let entries = doc.tokens.unwrap_or_default();
    let mut tokens = Vec::with_capacity(entries.len());
    for (i, e) in entries.into_iter().enumerate() {
        let at = format!("{file}: tokens[{i}] (name {:?})", e.name);
        let before = errors.len();
        if !token::is_valid_id(&e.id) {
            errors.push(format!("{at}: id {:?} must be 12 letters or digits", e.id));
        }
        if !valid_name(&e.name) {
            errors.push(format!(
                "{at}: name must be 1-64 letters, digits, '-', '_', '.' or '@'"
            ));
        }
        let hash = token::validate_phc(&e.hash)
            .map_err(|err| errors.push(format!("{at}: hash: {err}")))
            .ok();
        let mut routes = Vec::with_capacity(e.routes.len());
        for (j, r) in e.routes.iter().enumerate() {
            match RoutePattern::parse(&r.path) {
                Ok(pattern) => routes.push(Route {
                    pattern,
                    access: r.access,
                }),
                Err(reason) => errors.push(format!("{at}: routes[{j}]: {reason}")),
            }
        }
        if errors.len() > before {
            continue;
        }
        let Some(hash) = hash else { continue };
        tokens.push(Token {
            id: Arc::from(e.id.as_str()),
            name: Arc::from(e.name.as_str()),
            generation: generation_of(&e),
            description: e.description,
            hash,
            permission: e.permission,
            routes,
            created_at: e.created_at,
            expires_at: e.expires_at,
            rate_limit: e.rate_limit,
            source: source.clone(),
        });
    }
    if errors.is_empty() {
        Ok(tokens)
    } else {
        Err(errors)
    }
}

/// Reads and parses one token file.
pub fn load_file(path: &Path) -> Result<Vec<Token>, Vec<String>> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![format!("{name}: cannot read token file: {e}")])?;
    parse(&name, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";

    #[test]
    fn parses_a_file() {
        let text = format!(
            "tokens:\n  - id: AAAAAAAAAAAA\n    name: ci\n    hash: '{HASH}'\n    permission: read\n    routes: [{{path: /p2/acme/*, access: read}}]\n    expires_at: 2030-01-01T00:00:00Z\n    description: CI\n"
        );
        let t = parse("t.yaml", &text).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(&*t[0].name, "ci");
        assert_eq!(t[0].routes[0].pattern.as_str(), "/p2/acme/*");
        assert!(t[0].expires_at.is_some());
        assert!(parse("e.yaml", "").unwrap().is_empty());
        assert!(parse("e.yaml", "tokens: []").unwrap().is_empty());
        assert!(parse("e.yaml", "tokens:\n# none yet\n").unwrap().is_empty());
    }

    #[test]
    fn reports_every_bad_entry() {
        let text = format!(
            "tokens:\n  - {{id: short, name: a, hash: '{HASH}', permission: read}}\n  - {{id: BBBBBBBBBBBB, name: 'b c', hash: nope, permission: read, routes: [{{path: x, access: read}}]}}\n"
        );
        let errs = parse("t.yaml", &text).unwrap_err();
        assert_eq!(errs.len(), 4, "{errs:#?}");
        assert!(errs[0].starts_with("t.yaml: tokens[0] (name \"a\"): id"));
        assert!(errs
            .iter()
            .any(|e| e.contains("tokens[1] (name \"b c\"): hash:")));
        assert!(errs
            .iter()
            .any(|e| e.contains("tokens[1] (name \"b c\"): routes[0]:")));
    }

    #[test]
    fn reports_syntax_and_schema_errors_with_location() {
        let errs = parse("t.yaml", "tokens:\n  - id: x\n    permission: admin\n").unwrap_err();
        assert!(errs[0].starts_with("t.yaml: "), "{errs:?}");
        assert!(errs[0].contains("line"), "{errs:?}");
        let errs = parse("t.yaml", "tokenz: []\n").unwrap_err();
        assert!(errs[0].contains("unknown field"), "{errs:?}");
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
}
