//! Listing filters: a listing body (Composer `packages.json` and its includes, PyPI
//! `/simple/`, npm search) rewritten to name only the packages a token's patterns allow.
//!
//! Each filter takes the whole body (the proxy collects it, bounded) and returns the new one.
//! A body that cannot be read as its format is an error: the proxy then answers 502, never
//! the unfiltered body.

mod composer;
mod npm;
mod pypi;

use super::map::Listing;
use super::name::PackagePatterns;

/// A listing body that could not be filtered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// Not the listing's format (or not UTF-8 where text is needed).
    #[error("the listing is not valid {0}")]
    Unparsable(&'static str),
}

/// Filters `body`, a listing of kind `listing` with `Content-Type` `content_type`, down to the
/// packages `allowed` allows.
pub fn filter(
    listing: Listing,
    content_type: Option<&str>,
    body: &[u8],
    allowed: &PackagePatterns,
) -> Result<Vec<u8>, FilterError> {
    match listing {
        Listing::ComposerRoot => composer::root(body, allowed),
        Listing::ComposerInclude => composer::include(body, allowed),
        Listing::NpmSearch => npm::search(body, allowed),
        Listing::PypiSimple => {
            let json = content_type.is_some_and(|t| t.contains("json"))
                || body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
            if json {
                pypi::simple_json(body, allowed)
            } else {
                pypi::simple_html(body, allowed)
            }
        }
    }
}

fn parse_json(body: &[u8]) -> Result<serde_json::Value, FilterError> {
    serde_json::from_slice(body).map_err(|_| FilterError::Unparsable("JSON"))
}

fn to_json(v: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}
