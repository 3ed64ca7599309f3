//! The walk over a token file's YAML events: at most one document, a mapping whose only key is
//! `tokens`, its entries collected one at a time (aliases expanded into them, anchors recorded)
//! and handed to the deserializer and the entry checks. Every bound on hostile input is here:
//! nesting depth, events per entry, bytes copied by aliases.

use std::borrow::Cow;
use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, StrInput};
use serde::Deserialize;

use super::de::De;
use super::entry::{name_in, validate, Entry};
use super::problems::Problems;
use super::scalar::{is_null, position, Ev, MAX_DEPTH};
use crate::token::{Source, Token};

/// Most events (scalars, collection starts and ends) in one entry, aliases expanded: a token
/// with thousands of routes fits, a file that is one huge entry is refused.
const MAX_ENTRY_EVENTS: usize = 100_000;

/// Most bytes alias expansion and anchor recording may copy in one file, each copied event
/// counted with the length of its text (an alias bomb stops here instead of filling the memory,
/// also when it copies few but long strings).
const MAX_COPIED_BYTES: usize = 64 << 20;

/// Why reading stopped: a syntax error, a document that is not a token file, or a bound passed.
pub(super) struct Fatal(pub(super) String);

/// A recorded anchored node: its events, how deep it nests and what a copy of it costs.
struct Anchor<'a> {
    events: Vec<Ev<'a>>,
    depth: usize,
    cost: usize,
}

/// How deep `events` (one node) nest, and what copying them costs against
/// [`MAX_COPIED_BYTES`].
fn measure(events: &[Ev]) -> (usize, usize) {
    let (mut depth, mut deepest, mut cost) = (0usize, 0usize, 0usize);
    for (ev, _) in events {
        cost += std::mem::size_of::<Ev>();
        match ev {
            Event::Scalar(v, ..) => cost += v.len(),
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            Event::SequenceEnd | Event::MappingEnd => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    (deepest, cost)
}

/// Pulls events from the parser; expands aliases into the buffered entries.
pub(super) struct Reader<'a> {
    parser: Parser<'a, StrInput<'a>>,
    anchors: HashMap<usize, Anchor<'a>>,
    copied: usize,
}

impl<'a> Reader<'a> {
    /// A reader of `text`, at its start.
    pub(super) fn new(text: &'a str) -> Self {
        Reader {
            parser: Parser::new_from_str(text),
            anchors: HashMap::new(),
            copied: 0,
        }
    }

    /// Whether the text read so far defined an anchor (only then can an entry depend on
    /// another one).
    pub(super) fn anchored(&self) -> bool {
        !self.anchors.is_empty()
    }

    fn next(&mut self) -> Result<Ev<'a>, Fatal> {
        match self.parser.next() {
            Some(Ok(ev)) => Ok(ev),
            Some(Err(e)) => {
                let m = e.marker();
                // The scanner's own bound (255 levels of flow collections), said as ours.
                let info = match e.info() {
                    "recursion limit exceeded" => {
                        Cow::Owned(format!("nested more than {MAX_DEPTH} levels deep"))
                    }
                    info => Cow::Borrowed(info),
                };
                Err(Fatal(format!(
                    "{info} at line {} column {}",
                    m.line(),
                    m.col() + 1
                )))
            }
            None => Err(Fatal("unexpected end of the YAML stream".into())),
        }
    }

    fn copy_allowance(&mut self, cost: usize, ev: &Ev) -> Result<(), Fatal> {
        self.copied += cost;
        if self.copied > MAX_COPIED_BYTES {
            return Err(Fatal(format!(
                "anchors and aliases expand to too much data (more than {} MiB) {}",
                MAX_COPIED_BYTES >> 20,
                at_line(ev)
            )));
        }
        Ok(())
    }

    /// Appends the whole node starting with `first` to `buf`: aliases replaced by a copy of
    /// their anchor's events, anchored nodes recorded for later aliases. Refuses a node nested
    /// deeper than [`MAX_DEPTH`] or holding more than [`MAX_ENTRY_EVENTS`] events, aliases
    /// expanded (nothing recurses here; deserializing it afterwards does, once per level).
    fn collect_node(&mut self, first: Ev<'a>, buf: &mut Vec<Ev<'a>>) -> Result<(), Fatal> {
        let too_deep = |ev: &Ev| {
            Fatal(format!(
                "nested more than {MAX_DEPTH} levels deep {}",
                at_line(ev)
            ))
        };
        let start = buf.len();
        let entry_at = first.1;
        // Open anchored collections: (anchor, depth inside it, start in buf).
        let mut open: Vec<(usize, usize, usize)> = Vec::new();
        let mut depth = 0usize;
        let mut ev = first;
        loop {
            match &ev.0 {
                Event::Alias(id) => {
                    let Some(recorded) = self.anchors.get(id) else {
                        return Err(Fatal(format!(
                            "alias to an unknown anchor {}",
                            at_line(&ev)
                        )));
                    };
                    if depth + recorded.depth > MAX_DEPTH {
                        return Err(too_deep(&ev));
                    }
                    // Borrow juggling: copy out after the allowance check.
                    let cost = recorded.cost;
                    self.copy_allowance(cost, &ev)?;
                    buf.extend_from_slice(&self.anchors[id].events);
                }
                Event::Scalar(_, _, anchor, _) => {
                    let anchor = *anchor;
                    buf.push(ev);
                    if anchor != 0 {
                        let last = buf[buf.len() - 1].clone();
                        let (_, cost) = measure(std::slice::from_ref(&last));
                        self.copy_allowance(cost, &last)?;
                        let recorded = Anchor {
                            events: vec![last],
                            depth: 0,
                            cost,
                        };
                        self.anchors.insert(anchor, recorded);
                    }
                }
                Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                    if depth == MAX_DEPTH {
                        return Err(too_deep(&ev));
                    }
                    if *anchor != 0 {
                        open.push((*anchor, depth, buf.len()));
                    }
                    buf.push(ev);
                    depth += 1;
                }
                Event::SequenceEnd | Event::MappingEnd => {
                    buf.push(ev);
                    depth = depth.saturating_sub(1);
                    if let Some(&(anchor, d, start)) = open.last() {
                        if d == depth {
                            open.pop();
                            let (depth, cost) = measure(&buf[start..]);
                            let at = buf[start].clone();
                            self.copy_allowance(cost, &at)?;
                            let events = buf[start..].to_vec();
                            let recorded = Anchor {
                                events,
                                depth,
                                cost,
                            };
                            self.anchors.insert(anchor, recorded);
                        }
                    }
                }
                _ => {
                    return Err(Fatal(format!("unexpected YAML structure {}", at_line(&ev))));
                }
            }
            if buf.len() - start > MAX_ENTRY_EVENTS {
                let (line, col) = position(&entry_at);
                return Err(Fatal(format!(
                    "a token entry holds more than {MAX_ENTRY_EVENTS} YAML nodes (aliases expanded), the one at line {line} column {col}"
                )));
            }
            if depth == 0 {
                return Ok(());
            }
            ev = self.next()?;
        }
    }
}

fn at_line(ev: &Ev) -> String {
    let (line, col) = position(&ev.1);
    format!("at line {line} column {col}")
}

/// Reads the stream: at most one document, a mapping whose only key is `tokens`.
pub(super) fn read_document<'a>(
    r: &mut Reader<'a>,
    source: &Source,
    tokens: &mut Vec<Token>,
    errors: &mut Problems,
) -> Result<(), Fatal> {
    let mut ev = r.next()?;
    if matches!(ev.0, Event::StreamStart) {
        ev = r.next()?;
    }
    match ev.0 {
        Event::StreamEnd => return Ok(()),
        Event::DocumentStart(_) => {}
        _ => return Err(Fatal(format!("expected a YAML document {}", at_line(&ev)))),
    }
    let root = r.next()?;
    match &root.0 {
        Event::Scalar(v, ScalarStyle::Plain, _, None) if is_null(v) => {}
        Event::MappingStart(..) => {
            let mut seen = false;
            loop {
                let key = r.next()?;
                match &key.0 {
                    Event::MappingEnd => break,
                    Event::Scalar(k, ..) if k == "tokens" => {
                        if seen {
                            return Err(Fatal(format!(
                                "duplicate field `tokens` {}",
                                at_line(&key)
                            )));
                        }
                        seen = true;
                        let value = r.next()?;
                        match &value.0 {
                            Event::Scalar(v, ScalarStyle::Plain, _, None) if is_null(v) => {}
                            Event::SequenceStart(..) => read_entries(r, source, tokens, errors)?,
                            _ => {
                                return Err(Fatal(format!(
                                    "tokens: expected a list of token records {}",
                                    at_line(&value)
                                )))
                            }
                        }
                    }
                    Event::Scalar(k, ..) => {
                        return Err(Fatal(format!(
                            "unknown field `{k}`, expected `tokens` {}",
                            at_line(&key)
                        )))
                    }
                    _ => {
                        return Err(Fatal(format!(
                            "expected the key `tokens` {}",
                            at_line(&key)
                        )))
                    }
                }
            }
        }
        _ => {
            return Err(Fatal(format!(
                "expected a mapping with a `tokens:` list {}",
                at_line(&root)
            )))
        }
    }
    let end = r.next()?;
    if !matches!(end.0, Event::DocumentEnd) {
        return Err(Fatal(format!("unexpected content {}", at_line(&end))));
    }
    let next = r.next()?;
    match next.0 {
        Event::StreamEnd => Ok(()),
        _ => Err(Fatal(format!(
            "a token file holds one YAML document; another starts {}",
            at_line(&next)
        ))),
    }
}

/// Reads the entries of the `tokens` list (its start consumed) through its end.
fn read_entries<'a>(
    r: &mut Reader<'a>,
    source: &Source,
    tokens: &mut Vec<Token>,
    errors: &mut Problems,
) -> Result<(), Fatal> {
    let mut buf: Vec<Ev<'a>> = Vec::new();
    for i in 0.. {
        let ev = r.next()?;
        if matches!(ev.0, Event::SequenceEnd) {
            break;
        }
        buf.clear();
        r.collect_node(ev, &mut buf)?;
        match Entry::deserialize(&mut De::new(&buf)) {
            Ok(e) => {
                if let Some(t) = validate(e, i, source, errors) {
                    if errors.count() == 0 {
                        tokens.push(t);
                    }
                }
            }
            Err(e) => {
                let name = name_in(&buf)
                    .map(|n| format!(" (name {n:?})"))
                    .unwrap_or_default();
                errors.push(format_args!("tokens[{i}]{name}: {e}"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::yaml::parse;
    use crate::store::yaml::tests::HASH;

    #[test]
    fn anchors_and_aliases() {
        let text = format!(
            "tokens:\n  - id: AAAAAAAAAAAA\n    name: a\n    hash: &h '{HASH}'\n    permission: read\n    routes: &r [{{path: /a, access: read}}, {{path: /b/**, access: read}}]\n  - id: BBBBBBBBBBBB\n    name: b\n    hash: *h\n    permission: read\n    routes: *r\n"
        );
        let t = parse("a.yaml", &text).unwrap();
        assert_eq!(t[1].routes.len(), 2);
        assert_eq!(t[1].routes[1].pattern.as_str(), "/b/**");
        assert_eq!(t[0].generation, t[1].generation);
        let errs = parse("a.yaml", "tokens:\n  - *nope\n")
            .unwrap_err()
            .problems;
        assert!(errs[0].contains("line 2"), "{errs:?}");
        // An alias bomb stops at a limit instead of filling the memory (here: the events of one
        // entry; see `alias_expansion_is_bounded_in_bytes` for the bytes copied).
        let mut bomb = String::from("tokens:\n  - {a: &a [x, x, x, x, x, x, x, x, x, x]");
        for (i, c) in "bcdefghi".chars().enumerate() {
            let prev = (b'a' + i as u8) as char;
            bomb += &format!(", {c}: &{c} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]");
        }
        bomb += "}\n";
        let errs = parse("bomb.yaml", &bomb).unwrap_err().problems;
        assert!(
            errs[0].contains("more than 100000 YAML nodes (aliases expanded), the one at line 2"),
            "{errs:?}"
        );
    }

    /// An entry whose `rate_limit:` (read through an untagged enum, the deepest recursion in
    /// deserialization) is `value`.
    fn with_rate_limit(value: &str) -> String {
        format!("tokens:\n  - id: AAAAAAAAAAAA\n    name: a\n    hash: '{HASH}'\n    permission: read\n    rate_limit: {value}\n")
    }

    /// Files of about 32 KB nesting thousands of levels deep, directly or through aliases.
    fn nesting_bombs() -> Vec<(&'static str, String)> {
        let n = 16_000;
        // Each anchor nests the one before 200 levels deeper: few events, thousands of levels.
        let mut aliases = String::from("[&a0 x");
        for i in 1..40 {
            aliases += &format!(", &a{i} {}*a{}{}", "[".repeat(200), i - 1, "]".repeat(200));
        }
        aliases.push(']');
        vec![
            (
                "flow sequences",
                with_rate_limit(&format!("{}{}", "[".repeat(n), "]".repeat(n))),
            ),
            (
                "flow mappings",
                with_rate_limit(&format!("{}x{}", "{a: ".repeat(n / 3), "}".repeat(n / 3))),
            ),
            (
                "block sequences",
                with_rate_limit(&format!("\n      {}x", "- ".repeat(n))),
            ),
            (
                "block mapping keys",
                with_rate_limit(&format!("\n      {}x", "? ".repeat(n))),
            ),
            ("aliases nesting anchors", with_rate_limit(&aliases)),
            (
                "entries",
                format!("tokens: {}{}\n", "[".repeat(n), "]".repeat(n)),
            ),
            (
                "an unknown field",
                format!("tokens:\n  - colour: {}{}\n", "[".repeat(n), "]".repeat(n)),
            ),
        ]
    }

    #[test]
    fn deep_nesting_is_refused_with_its_line() {
        for (what, text) in nesting_bombs() {
            assert!(text.len() < 40_000, "{what}: {} bytes", text.len());
            let errs = parse("bomb.yaml", &text).unwrap_err().problems;
            assert_eq!(errs.len(), 1, "{what}: {errs:?}");
            assert!(
                errs[0].starts_with("bomb.yaml: ")
                    && errs[0].contains(&format!("nested more than {MAX_DEPTH} levels deep"))
                    && errs[0].contains(" at line "),
                "{what}: {errs:?}"
            );
        }
        // What a token file needs is well within the limit.
        let ok = format!(
            "tokens:\n  - id: AAAAAAAAAAAA\n    name: a\n    hash: '{HASH}'\n    permission: read\n    routes: [{{path: /a, access: read}}]\n    rate_limit: {{requests: 1, period: 1s}}\n"
        );
        assert_eq!(parse("ok.yaml", &ok).unwrap().len(), 1);
        let nested = |levels: usize| {
            with_rate_limit(&format!("{}x{}", "[".repeat(levels), "]".repeat(levels)))
        };
        let errs = parse("t.yaml", &nested(MAX_DEPTH - 1))
            .unwrap_err()
            .problems;
        assert!(errs[0].contains("rate_limit must be"), "{errs:?}");
        let errs = parse("t.yaml", &nested(MAX_DEPTH)).unwrap_err().problems;
        assert!(errs[0].contains("nested more than"), "{errs:?}");
    }

    #[test]
    fn alias_expansion_is_bounded_in_bytes() {
        // Few events, each a long string: counting events alone let this through (and with
        // quoted strings, every copy was a fresh allocation).
        let long = format!("\"{}\\t\"", "x".repeat(50_000));
        let mut bomb = format!("tokens:\n  - {{a: &a [{long}, {long}]");
        for (i, c) in "bcdefg".chars().enumerate() {
            let prev = (b'a' + i as u8) as char;
            bomb += &format!(", {c}: &{c} [*{prev}, *{prev}, *{prev}, *{prev}]");
        }
        bomb += "}\n";
        let errs = parse("bomb.yaml", &bomb).unwrap_err().problems;
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with("bomb.yaml: anchors and aliases expand to too much data")
                && errs[0].contains(" at line 2 "),
            "{errs:?}"
        );
        // A description shared by alias is fine while the copies stay small.
        let shared = format!(
            "tokens:\n  - {{id: AAAAAAAAAAAA, name: a, hash: '{HASH}', permission: read, description: &d '{}'}}\n  - {{id: BBBBBBBBBBBB, name: b, hash: '{HASH}', permission: read, description: *d}}\n",
            "x".repeat(10_000)
        );
        assert_eq!(parse("ok.yaml", &shared).unwrap().len(), 2);
    }

    #[test]
    fn an_entry_of_too_many_events_is_refused() {
        let text = format!("tokens:\n  - [{}x]\n", "x, ".repeat(MAX_ENTRY_EVENTS));
        let errs = parse("big.yaml", &text).unwrap_err().problems;
        assert_eq!(errs.len(), 1, "{:?}", &errs[..errs.len().min(3)]);
        assert!(
            errs[0].starts_with("big.yaml: ")
                && errs[0].contains(&format!("more than {MAX_ENTRY_EVENTS} YAML nodes"))
                && errs[0].contains("at line 2"),
            "{errs:?}"
        );
    }
}
