//! Incremental parsing: the parsed entries of a token file's last good read, by a digest of
//! each entry's text, so a reload of a large file parses only the entries that changed, with
//! exactly the result (and the problems) of a whole parse.

use std::collections::HashMap;
use std::sync::Arc;

use sha2::Digest;

use super::{parse_events_anchored, parser_failed, too_large};
use crate::store::error::FileRefused;
use crate::token::Token;

/// The parsed entries of a token file's last good read, by a digest of each entry's text: a
/// reload parses only the entries that changed (see [`parse_incremental`]).
#[derive(Default)]
pub struct EntryCache {
    entries: HashMap<[u8; 16], Arc<Token>, foldhash::quality::RandomState>,
}

/// Splits a token file in the plain shape `tokens:` writes (comments and blank lines, a
/// `tokens:` line, then list entries each starting with `- ` at one indentation and going on
/// with more indented, blank or comment lines) into the text of its entries. `None` for any
/// other shape: those files are always parsed whole.
fn split_entries(text: &str) -> Option<Vec<&str>> {
    let mut lines = text.split_inclusive('\n');
    let mut offset = 0;
    // Up to and including the `tokens:` line.
    loop {
        let line = lines.next()?;
        offset += line.len();
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let rest = t.strip_prefix("tokens:")?;
        if !(rest.is_empty() || rest.trim_start().starts_with('#')) || line.starts_with(' ') {
            return None;
        }
        break;
    }
    let mut entries = Vec::new();
    let mut indent: Option<usize> = None;
    let mut start: Option<usize> = None;
    for line in lines {
        let t = line.trim();
        let spaces = line.len() - line.trim_start_matches(' ').len();
        if t.is_empty() || t.starts_with('#') {
            // Blank or comment: part of the entry it follows.
        } else if (t == "-" || t.starts_with("- ")) && indent.is_none_or(|i| i == spaces) {
            indent = Some(spaces);
            if let Some(s) = start {
                entries.push(&text[s..offset]);
            }
            start = Some(offset);
        } else if start.is_none() || indent.is_some_and(|i| spaces <= i) || line.starts_with('\t') {
            return None;
        }
        offset += line.len();
    }
    entries.push(&text[start?..]);
    Some(entries)
}

fn entry_digest(entry: &str) -> [u8; 16] {
    let full: [u8; 32] = sha2::Sha256::digest(entry.as_bytes()).into();
    let mut d = [0u8; 16];
    d.copy_from_slice(&full[..16]);
    d
}

/// Parses a token file, reusing from `cache` the tokens of entries whose text is unchanged
/// since the last good parse, and leaves in `cache` the entries of this one (when good).
/// The result is what [`super::parse`] gives for the same text: an entry is parsed on its own only
/// when the file has the plain shape and defines no anchors; any problem in a changed entry
/// has the whole file parsed again, so errors name lines of the file.
pub fn parse_incremental(
    file: &str,
    text: &str,
    cache: &mut EntryCache,
) -> Result<Vec<Arc<Token>>, FileRefused> {
    if let Some(refused) = too_large(file, text) {
        return Err(refused);
    }
    let entries = split_entries(text);
    if let Some(entries) = entries.as_deref().filter(|_| !cache.entries.is_empty()) {
        let mut fresh = EntryCache::default();
        fresh.entries.reserve(entries.len());
        let mut tokens = Vec::with_capacity(entries.len());
        for entry in entries {
            let digest = entry_digest(entry);
            let token = match cache.entries.get(&digest) {
                Some(t) => t.clone(),
                None => match parse_one(file, entry) {
                    Some(t) => Arc::new(t),
                    None => return parse_whole(file, text, Some(entries), cache),
                },
            };
            fresh.entries.insert(digest, token.clone());
            tokens.push(token);
        }
        *cache = fresh;
        return Ok(tokens);
    }
    parse_whole(file, text, entries.as_deref(), cache)
}

/// One entry's text parsed alone: `None` unless it is exactly one good, anchor-free entry.
fn parse_one(file: &str, entry: &str) -> Option<Token> {
    let text = format!("tokens:\n{entry}");
    match std::panic::catch_unwind(|| parse_events_anchored(file, &text)) {
        Ok((Ok(mut tokens), false)) if tokens.len() == 1 => tokens.pop(),
        _ => None,
    }
}

/// The whole file parsed. When good, `cache` holds its entries if they are `entries` (one
/// token each) and it defines no anchors, else nothing; when bad, `cache` is left as it was.
fn parse_whole(
    file: &str,
    text: &str,
    entries: Option<&[&str]>,
    cache: &mut EntryCache,
) -> Result<Vec<Arc<Token>>, FileRefused> {
    let (result, anchored) = std::panic::catch_unwind(|| parse_events_anchored(file, text))
        .unwrap_or_else(|_| (Err(parser_failed(file)), true));
    let tokens: Vec<Arc<Token>> = result?.into_iter().map(Arc::new).collect();
    let mut fresh = EntryCache::default();
    if let Some(entries) = entries.filter(|e| !anchored && e.len() == tokens.len()) {
        fresh.entries.reserve(entries.len());
        for (entry, token) in entries.iter().zip(&tokens) {
            fresh.entries.insert(entry_digest(entry), token.clone());
        }
    }
    *cache = fresh;
    Ok(tokens)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::store::yaml::parse;
    use crate::store::yaml::tests::HASH;

    fn numbered_entry(i: usize, indent: &str) -> String {
        format!(
            "{indent}- id: ID{i:010}\n{indent}  name: tok-{i}\n{indent}  hash: '{HASH}'\n{indent}  permission: read\n{indent}  routes: [{{path: /p2/t{i}/*, access: read}}]\n"
        )
    }

    fn file(range: std::ops::Range<usize>, indent: &str) -> String {
        let mut text = String::from("# generated\ntokens:\n");
        for i in range {
            text.push_str(&numbered_entry(i, indent));
        }
        text
    }

    fn debug(tokens: &[Arc<Token>]) -> Vec<String> {
        tokens.iter().map(|t| format!("{t:?}")).collect()
    }

    /// The incremental parse gives exactly what a whole parse gives, whatever the cache held.
    pub(in crate::store::yaml) fn check_same(
        text: &str,
        cache: &mut EntryCache,
    ) -> Result<Vec<Arc<Token>>, FileRefused> {
        let incremental = parse_incremental("t.yaml", text, cache);
        let whole = parse("t.yaml", text).map(|t| t.into_iter().map(Arc::new).collect::<Vec<_>>());
        match (&incremental, &whole) {
            (Ok(a), Ok(b)) => assert_eq!(debug(a), debug(b)),
            (Err(a), Err(b)) => assert_eq!(a, b),
            _ => panic!("incremental {incremental:?} but whole {whole:?}"),
        }
        incremental
    }

    #[test]
    fn unchanged_entries_are_reused_and_changed_ones_parsed() {
        let mut cache = EntryCache::default();
        let first = check_same(&file(0..50, "  "), &mut cache).unwrap();
        assert_eq!(cache.entries.len(), 50);
        // One more entry, one changed: the other 49 are the very same records.
        let mut text = file(0..51, "  ");
        text = text.replace("name: tok-7\n", "name: seven\n");
        let second = check_same(&text, &mut cache).unwrap();
        assert_eq!(second.len(), 51);
        let reused = second
            .iter()
            .filter(|t| first.iter().any(|f| Arc::ptr_eq(f, t)))
            .count();
        assert_eq!(reused, 49);
        assert_eq!(&*second[7].name, "seven");
        assert_eq!(
            cache.entries.len(),
            51,
            "the cache follows the last good parse"
        );
        // Entries removed and reordered.
        let text = format!(
            "tokens:\n{}{}",
            numbered_entry(3, "  "),
            numbered_entry(1, "  ")
        );
        let third = check_same(&text, &mut cache).unwrap();
        assert!(Arc::ptr_eq(&third[0], &second[3]) && Arc::ptr_eq(&third[1], &second[1]));
        assert_eq!(cache.entries.len(), 2);
    }

    #[test]
    fn a_bad_change_is_reported_like_a_whole_parse_and_keeps_the_cache() {
        let mut cache = EntryCache::default();
        check_same(&file(0..5, ""), &mut cache).unwrap();
        let bad = file(0..6, "").replace("name: tok-5\n", "name: 'bad name'\n");
        let errs = check_same(&bad, &mut cache).unwrap_err().problems;
        assert!(errs[0].contains("tokens[5]"), "{errs:?}");
        assert_eq!(cache.entries.len(), 5);
        // Syntax errors carry the file's own line numbers.
        let broken = format!("{}  - id: [\n", file(0..5, "  "));
        let errs = check_same(&broken, &mut cache).unwrap_err().problems;
        assert!(errs[0].starts_with("t.yaml: "), "{errs:?}");
    }

    #[test]
    fn other_shapes_and_anchors_are_parsed_whole() {
        for text in [
            format!("tokens: [{{id: AAAAAAAAAAAA, name: a, hash: '{HASH}', permission: read}}]"),
            format!("---\n{}", file(0..3, "  ")),
            format!("{}...\n", file(0..3, "  ")),
            format!("  tokens:\n{}", numbered_entry(0, "    ")),
            file(0..3, "  ").replace("tokens:\n", "tokens: # the list\n"),
            String::new(),
            "tokens:\n".into(),
        ] {
            let mut cache = EntryCache::default();
            let _ = check_same(&text, &mut cache);
            let _ = check_same(&text, &mut cache);
        }
        // An anchor in one entry used by another: the cache must never split them.
        let anchored = format!(
            "tokens:\n  - id: ID0000000001\n    name: a\n    hash: &h '{HASH}'\n    permission: read\n  - id: ID0000000002\n    name: b\n    hash: *h\n    permission: read\n"
        );
        let mut cache = EntryCache::default();
        check_same(&anchored, &mut cache).unwrap();
        assert!(cache.entries.is_empty());
        let changed = anchored.replace("name: a\n", "name: c\n");
        check_same(&changed, &mut cache).unwrap();
        // Anchors and an alias added to a plain file: its entries cannot be parsed alone.
        let mut cache = EntryCache::default();
        check_same(&file(0..2, "  "), &mut cache).unwrap();
        let aliased = format!(
            "{}  - id: ID0000000009\n    name: n\n    hash: *h\n    permission: read\n",
            file(0..2, "  ").replace(&format!("hash: '{HASH}'"), &format!("hash: &h '{HASH}'"))
        );
        assert_eq!(check_same(&aliased, &mut cache).unwrap().len(), 3);
        assert!(cache.entries.is_empty());
    }

    /// Random sequences of edits (entries added, removed, changed, reordered, broken, anchored,
    /// comments and blank lines moved around): every load gives what a whole parse gives.
    #[test]
    fn random_edit_sequences_match_whole_parses() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        for _ in 0..40 {
            let mut cache = EntryCache::default();
            let mut ids: Vec<usize> = (0..8).collect();
            for _ in 0..12 {
                match rng.gen_range(0..6) {
                    0 => ids.push(rng.gen_range(0..40)),
                    1 if ids.len() > 1 => {
                        ids.remove(rng.gen_range(0..ids.len()));
                    }
                    2 => {
                        let n = ids.len();
                        ids.swap(rng.gen_range(0..n), rng.gen_range(0..n));
                    }
                    _ => {}
                }
                let indent = ["", "  ", "    "][rng.gen_range(0..3)];
                let mut text = String::from("tokens:\n");
                for &i in &ids {
                    if rng.gen_bool(0.1) {
                        text.push_str(&format!("{indent}# about {i}\n\n"));
                    }
                    let mut e = numbered_entry(i, indent);
                    match rng.gen_range(0..20) {
                        0 => e = e.replace("permission: read", "permission: write"),
                        1 => e = e.replace("name: tok-", "name: 'bad name "),
                        2 => e = e.replace(&format!("hash: '{HASH}'"), "hash: &h 'x'"),
                        3 => e = e.replace("routes: [", "routes: [\n"),
                        4 => e = e.replace("  name:", " name:"),
                        _ => {}
                    }
                    text.push_str(&e);
                }
                let _ = check_same(&text, &mut cache);
            }
        }
    }

    #[test]
    fn splitting_keeps_every_byte() {
        let text = format!(
            "# c\n\ntokens:\n# lead\n{}\n  # between\n{}",
            numbered_entry(0, "  "),
            numbered_entry(1, "  ").trim_end()
        );
        let parts = split_entries(&text).unwrap();
        assert_eq!(parts.len(), 2);
        assert!(text.ends_with(&parts.concat()));
        assert!(parts[0].starts_with("  - id: ID0000000000") && parts[0].ends_with("# between\n"));
        assert_eq!(split_entries("tokens:\nother: 1\n"), None);
        assert_eq!(split_entries("tokens:\n  - a: 1\n b: 2\n"), None);
        assert_eq!(split_entries("tokens:\n  - a: 1\n\t- b: 2\n"), None);
    }
}
