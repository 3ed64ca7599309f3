//! Composer `packages.json` and the files it includes, as Satis and Packagist-style stores
//! write them.
//!
//! - `packages` (inline metadata, an object keyed by name) and `providers` keep allowed names;
//! - `available-packages` keeps allowed names; `available-package-patterns` keeps the
//!   repository's patterns the token covers whole, plus the token's Composer patterns that lie
//!   inside one of the repository's (so Composer still asks for the allowed packages);
//! - `includes` keep their files, without their `sha1`/`sha256`: the included files are
//!   filtered too, so their hashes no longer hold (Composer then reads them without a check);
//! - `provider-includes` go: their file names carry the hash of the unfiltered file.

use serde_json::{Map, Value};

use super::{parse_json, to_json, FilterError};
use crate::scope::name::{normalize, Ecosystem, PackagePatterns};

const ECO: Ecosystem = Ecosystem::Composer;

fn retain_keys(v: &mut Value, key: &str, allowed: &PackagePatterns) {
    if let Some(Value::Object(map)) = v.get_mut(key) {
        map.retain(|name, _| allowed.allows(ECO, name));
    }
}

fn object(v: &mut Value) -> Result<&mut Map<String, Value>, FilterError> {
    v.as_object_mut()
        .ok_or(FilterError::Unparsable("Composer repository JSON"))
}

/// The root `packages.json`.
pub(super) fn root(body: &[u8], allowed: &PackagePatterns) -> Result<Vec<u8>, FilterError> {
    let mut v = parse_json(body)?;
    object(&mut v)?;
    retain_keys(&mut v, "packages", allowed);
    retain_keys(&mut v, "providers", allowed);
    if let Some(Value::Array(names)) = v.get_mut("available-packages") {
        names.retain(|n| n.as_str().is_some_and(|n| allowed.allows(ECO, n)));
    }
    if let Some(Value::Array(patterns)) = v.get_mut("available-package-patterns") {
        let repo: Vec<String> = patterns
            .iter()
            .filter_map(|p| p.as_str().and_then(normalize_pattern))
            .collect();
        let mut out: Vec<String> = repo
            .iter()
            .filter(|p| allowed.covers(ECO, p))
            .cloned()
            .collect();
        for mine in allowed.for_ecosystem(ECO) {
            let inside = repo
                .iter()
                .any(|r| crate::scope::name::glob_match(r.as_bytes(), mine.as_bytes()));
            if inside && !out.contains(mine) {
                out.push(mine.clone());
            }
        }
        *patterns = out.into_iter().map(Value::String).collect();
    }
    let map = object(&mut v)?;
    map.remove("provider-includes");
    if let Some(Value::Object(includes)) = map.get_mut("includes") {
        for meta in includes.values_mut() {
            if let Value::Object(meta) = meta {
                meta.remove("sha1");
                meta.remove("sha256");
            }
        }
    }
    Ok(to_json(&v))
}

/// A repository pattern in Composer's normal form (lowercase), if it is one.
fn normalize_pattern(p: &str) -> Option<String> {
    let probe = p.replace('*', "x");
    normalize(ECO, &probe).map(|_| p.to_ascii_lowercase())
}

/// An included file (`include/all$….json`, `p/provider-….json`).
pub(super) fn include(body: &[u8], allowed: &PackagePatterns) -> Result<Vec<u8>, FilterError> {
    let mut v = parse_json(body)?;
    object(&mut v)?;
    retain_keys(&mut v, "packages", allowed);
    retain_keys(&mut v, "providers", allowed);
    Ok(to_json(&v))
}
