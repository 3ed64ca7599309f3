//! npm `/-/v1/search`: `objects: [{package: {name}}]` and its `total`.

use super::{parse_json, to_json, FilterError};
use crate::scope::name::{Ecosystem, PackagePatterns};

/// The search result with only the allowed packages, `total` counting them.
pub(super) fn search(body: &[u8], allowed: &PackagePatterns) -> Result<Vec<u8>, FilterError> {
    let mut v = parse_json(body)?;
    let objects = v
        .get_mut("objects")
        .and_then(|p| p.as_array_mut())
        .ok_or(FilterError::Unparsable("npm search JSON"))?;
    objects.retain(|o| {
        o.pointer("/package/name")
            .and_then(|n| n.as_str())
            .is_some_and(|n| allowed.allows(Ecosystem::Npm, n))
    });
    let total = objects.len();
    if let Some(t) = v.get_mut("total") {
        *t = total.into();
    }
    Ok(to_json(&v))
}
