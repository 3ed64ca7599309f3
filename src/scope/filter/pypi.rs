//! PyPI `/simple/`: PEP 503 HTML (one `<a>` per project, its text the name) and PEP 691 JSON
//! (`projects: [{name}]`).

use std::sync::LazyLock;

use regex::bytes::Regex;

use super::{parse_json, to_json, FilterError};
use crate::scope::name::{Ecosystem, PackagePatterns};

/// One anchor, with the `<br/>` and line end that follow it (dropped together).
static ANCHOR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?is)<a\s[^>]*>(.*?)</a\s*>(?:[ \t]*<br\s*/?>)?[ \t]*\r?\n?")
        .expect("a valid regex")
});

/// The HTML page with the anchors of refused projects removed (text outside anchors kept).
/// An anchor whose text is not a project name (markup, entities) is removed too.
pub(super) fn simple_html(body: &[u8], allowed: &PackagePatterns) -> Result<Vec<u8>, FilterError> {
    let mut out = Vec::with_capacity(body.len() / 4);
    let mut last = 0;
    for c in ANCHOR.captures_iter(body) {
        let whole = c.get(0).expect("group 0");
        let name = std::str::from_utf8(&c[1]).unwrap_or("").trim();
        if !allowed.allows(Ecosystem::Pypi, name) {
            out.extend_from_slice(&body[last..whole.start()]);
            last = whole.end();
        }
    }
    out.extend_from_slice(&body[last..]);
    Ok(out)
}

/// The JSON page with only the allowed `projects`.
pub(super) fn simple_json(body: &[u8], allowed: &PackagePatterns) -> Result<Vec<u8>, FilterError> {
    let mut v = parse_json(body)?;
    let projects = v
        .get_mut("projects")
        .and_then(|p| p.as_array_mut())
        .ok_or(FilterError::Unparsable("PEP 691 JSON"))?;
    projects.retain(|p| {
        p.get("name")
            .and_then(|n| n.as_str())
            .is_some_and(|n| allowed.allows(Ecosystem::Pypi, n))
    });
    Ok(to_json(&v))
}
