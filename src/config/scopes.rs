//! `upstream.layouts` and `upstream.listing_max_body`: which ecosystem each part of the store
//! is (package scopes), and the largest listing filtered for a scoped token.

use serde_yaml_ng::Value;

use super::fields::{as_string, kind_of, Section};
use crate::scope::{Ecosystem, Layout, Layouts};

/// Default `upstream.listing_max_body`: 64 MiB.
pub const DEFAULT_LISTING_MAX_BODY: usize = 64 << 20;

/// A size in bytes: a whole number, or a number with `KiB`, `MiB` or `GiB`.
fn size(v: Value) -> Result<usize, String> {
    let text = match &v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_string(),
        other => {
            return Err(format!(
                "expected a size such as 64MiB, found {}",
                kind_of(other)
            ))
        }
    };
    let (digits, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text.as_str(), ""), |i| (&text[..i], text[i..].trim()));
    let n: usize = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size such as 64MiB"))?;
    let mult: usize = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => return Err(format!("unit {other:?} is not one of B, KiB, MiB, GiB")),
    };
    let bytes = n
        .checked_mul(mult)
        .ok_or_else(|| format!("{text:?} is too large"))?;
    if !(1024..=(4usize << 30)).contains(&bytes) {
        return Err("must be between 1KiB and 4GiB".into());
    }
    Ok(bytes)
}

/// `upstream.listing_max_body`.
pub(super) fn build_listing_max_body(s: &mut Section<'_>) -> usize {
    s.take_with("listing_max_body", DEFAULT_LISTING_MAX_BODY, size)
}

/// `upstream.layouts`: a list of `{kind, prefix, dist}`, each a section of its own.
pub(super) fn build_layouts(s: &mut Section<'_>) -> Layouts {
    let field = s.field("layouts");
    let items = s.take_with("layouts", Vec::new(), |v| match v {
        Value::Sequence(items) => Ok(items),
        other => Err(format!(
            "expected a list of {{kind, prefix, dist}}, found {}",
            kind_of(&other)
        )),
    });
    let col = s.collector();
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let mut l = Section::new(col, &format!("{field}[{i}]"), item);
        let kind = l.take_with("kind", None, |v| {
            let k = as_string(v)?;
            Ecosystem::parse(k.trim())
                .map(Some)
                .ok_or_else(|| format!("{k:?} is not one of composer, npm, pypi, cargo, maven"))
        });
        let prefix = l.take_with("prefix", "/".to_string(), as_string);
        let dist: Option<Vec<String>> = l.take("dist", None);
        let at = l.field("kind");
        match kind {
            Some(kind) => match Layout::new(kind, &prefix, dist.as_deref()) {
                Ok(layout) => out.push(layout),
                Err(e) => {
                    let f = l.field("dist");
                    l.collector().error(&f, e);
                }
            },
            None => l.collector().error(&at, "required"),
        }
        l.finish();
    }
    Layouts::new(out).unwrap_or_else(|e| {
        s.collector().error(&field, e);
        Layouts::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size(Value::from(4096)).unwrap(), 4096);
        assert_eq!(size(Value::from("64MiB")).unwrap(), 64 << 20);
        assert_eq!(size(Value::from("2 KiB")).unwrap(), 2048);
        for bad in ["lots", "1", "5TB", "8GiB"] {
            assert!(size(Value::from(bad)).is_err(), "{bad}");
        }
    }
}
