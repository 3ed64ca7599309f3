//! YAML token files: a top-level `tokens:` list of records. A file is read whole and refused
//! whole: bad entries are reported with file, entry and reason (the first [`MAX_PROBLEMS`], then
//! how many more).
//!
//! The file is read as a stream of YAML events, one entry at a time (a 100,000-token file would
//! otherwise hold every event of it in memory at once): each entry's events are buffered, with
//! aliases expanded, and deserialized on their own, so a bad entry does not hide the next ones.
//!
//! A token file is input to be distrusted: its size, the nesting depth of an entry, the events
//! of an entry and what aliases may copy are bounded (a file past a bound is refused, the
//! process never overflows its stack or fills the memory), and no problem message repeats
//! anything shaped like a token or a password hash (see [`redact`]).

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::Read as _;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use saphyr_parser::{Event, Parser, ScalarStyle, StrInput};
use serde::Deserialize;
use sha2::Digest;

use super::error::FileRefused;
use super::yaml_events::{is_null, position, De, Ev, MAX_DEPTH};
use crate::token::{
    self, valid_name, Access, Permission, RateLimitRule, Route, RoutePattern, Source, Token,
    NAME_RULE,
};

/// A token record as written in a file; strings borrow from the file's text where they can.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry<'a> {
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

/// Largest token file read: 64 MiB, about 2.5 times a 100,000-token file (BENCHMARKS.md).
pub const MAX_FILE_BYTES: usize = 64 << 20;

/// Most events (scalars, collection starts and ends) in one entry, aliases expanded: a token
/// with thousands of routes fits, a file that is one huge entry is refused.
const MAX_ENTRY_EVENTS: usize = 100_000;

/// Most bytes alias expansion and anchor recording may copy in one file, each copied event
/// counted with the length of its text (an alias bomb stops here instead of filling the memory,
/// also when it copies few but long strings).
const MAX_COPIED_BYTES: usize = 64 << 20;

/// Problems listed per file; past them, one line says how many more there are.
pub const MAX_PROBLEMS: usize = 100;

/// Why reading stopped: a syntax error, a document that is not a token file, or a bound passed.
struct Fatal(String);

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
struct Reader<'a> {
    parser: Parser<'a, StrInput<'a>>,
    anchors: HashMap<usize, Anchor<'a>>,
    copied: usize,
}

impl<'a> Reader<'a> {
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

/// Keeps the first [`MAX_PROBLEMS`] problems of a file, each as `FILE: problem` with
/// [`redact`] applied, and counts the others.
struct Problems<'f> {
    file: &'f str,
    listed: Vec<String>,
    more: usize,
}

impl<'f> Problems<'f> {
    fn new(file: &'f str) -> Self {
        Problems {
            file,
            listed: Vec::new(),
            more: 0,
        }
    }

    fn push(&mut self, problem: impl std::fmt::Display) {
        if self.listed.len() < MAX_PROBLEMS {
            let problem = problem.to_string();
            self.listed
                .push(format!("{}: {}", self.file, redact(&problem)));
        } else {
            self.more += 1;
        }
    }

    /// How many problems were found (listed or not).
    fn count(&self) -> usize {
        self.listed.len() + self.more
    }

    fn into_refused(mut self) -> FileRefused {
        if self.more > 0 {
            self.listed.push(format!(
                "{}: … and {} more problem{} in this file",
                self.file,
                self.more,
                if self.more == 1 { "" } else { "s" }
            ));
        }
        FileRefused {
            path: self.file.to_string(),
            problems: self.listed,
        }
    }
}

/// `text` with whatever looks like a Tollgate token cut to `tok_…(redacted)` and the salt and
/// hash of any argon2 PHC string to `…(redacted)` (its parameters stay). Every problem a token
/// file causes goes through here before it is printed or logged: a token pasted into any field
/// by mistake must not end up in a log.
pub(crate) fn redact(text: &str) -> Cow<'_, str> {
    const PHC: &str = "$argon2";
    const CUT: &str = "…(redacted)";
    if !text.contains(token::PREFIX) && !text.contains(PHC) {
        return Cow::Borrowed(text);
    }
    let b = text.as_bytes();
    let run = |from: usize, more: fn(&u8) -> bool| {
        from + b[from..].iter().take_while(|c| more(c)).count()
    };
    let mut out = String::with_capacity(text.len());
    let (mut copied, mut i) = (0, 0);
    while i < b.len() {
        let rest = &text[i..];
        if rest.starts_with(token::PREFIX)
            && b.get(i + token::PREFIX.len())
                .is_some_and(u8::is_ascii_alphanumeric)
        {
            let end = run(i, |c| c.is_ascii_alphanumeric() || *c == b'_');
            out.push_str(&text[copied..i]);
            out.push_str(token::PREFIX);
            out.push_str(CUT);
            (copied, i) = (end, end);
        } else if rest.starts_with(PHC) {
            let end = run(i, |c| c.is_ascii_alphanumeric() || b"$=,+/".contains(c));
            // `$argon2id$v=19$m=64,t=1,p=1$`: the algorithm and the parameters stay.
            let mut keep = i;
            for (n, part) in text[i + 1..end].split('$').enumerate() {
                let param = part.contains('=')
                    && part.bytes().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || b"=,".contains(&c)
                    });
                if n > 0 && !param {
                    break;
                }
                keep += 1 + part.len();
            }
            if keep < end {
                out.push_str(&text[copied..keep]);
                out.push('$');
                out.push_str(CUT);
                copied = end;
            }
            i = end;
        } else {
            i += rest.chars().next().map_or(1, char::len_utf8);
        }
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// Whether `text` holds a whole generated token (its checksum right).
fn holds_token(text: &str) -> bool {
    text.match_indices(token::PREFIX).any(|(i, _)| {
        text.get(i..i + token::TOKEN_LEN)
            .is_some_and(|t| token::parse(t).is_ok())
    })
}

/// The `name:` of a buffered entry, if it has a plain one (for naming a refused entry).
fn name_in<'e>(events: &'e [Ev]) -> Option<&'e str> {
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

/// Checks one deserialized entry and turns it into a token, or reports its problems.
/// `index` names the entry in errors.
fn validate(e: Entry, index: usize, source: &Source, errors: &mut Problems) -> Option<Token> {
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
        source: source.clone(),
    })
}

/// Parses the text of a token file. `file` names it in errors. Never panics: a failure inside
/// the YAML parser is reported as a refusal of the file.
pub fn parse(file: &str, text: &str) -> Result<Vec<Token>, FileRefused> {
    std::panic::catch_unwind(|| parse_events(file, text))
        .unwrap_or_else(|_| Err(parser_failed(file)))
}

/// The refusal of a file the YAML parser panicked on.
fn parser_failed(file: &str) -> FileRefused {
    FileRefused::one(file, "the YAML parser failed on this file (internal error)")
}

fn parse_events(file: &str, text: &str) -> Result<Vec<Token>, FileRefused> {
    parse_events_anchored(file, text).0
}

/// Like [`parse_events`], and whether the text defined any anchor (only then can an entry
/// depend on another one).
fn parse_events_anchored(file: &str, text: &str) -> (Result<Vec<Token>, FileRefused>, bool) {
    if let Some(refused) = too_large(file, text) {
        return (Err(refused), false);
    }
    let mut r = Reader {
        parser: Parser::new_from_str(text),
        anchors: HashMap::new(),
        copied: 0,
    };
    let mut tokens = Vec::new();
    let mut errors = Problems::new(file);
    let source = Source::File(Arc::from(file));
    let read = read_document(&mut r, &source, &mut tokens, &mut errors);
    let anchored = !r.anchors.is_empty();
    let result = match read {
        Err(Fatal(e)) => {
            let mut fatal = Problems::new(file);
            fatal.push(e);
            Err(fatal.into_refused())
        }
        Ok(()) if errors.count() == 0 => Ok(tokens),
        Ok(()) => Err(errors.into_refused()),
    };
    (result, anchored)
}

/// The refusal of a text larger than [`MAX_FILE_BYTES`].
fn too_large(file: &str, text: &str) -> Option<FileRefused> {
    (text.len() > MAX_FILE_BYTES).then(|| {
        FileRefused::one(
            file,
            format_args!(
                "the token file is larger than {} MiB ({} bytes)",
                MAX_FILE_BYTES >> 20,
                text.len()
            ),
        )
    })
}

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
/// The result is what [`parse`] gives for the same text: an entry is parsed on its own only
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

fn at_line(ev: &Ev) -> String {
    let (line, col) = position(&ev.1);
    format!("at line {line} column {col}")
}

/// Reads the stream: at most one document, a mapping whose only key is `tokens`.
fn read_document<'a>(
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

/// Reads a token file as text, refusing (`FileTooLarge`) one larger than [`MAX_FILE_BYTES`]
/// without reading more than that.
pub fn read_token_file(path: &Path) -> std::io::Result<String> {
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_FILE_BYTES as u64 + 1)
        .read_to_string(&mut text)?;
    if text.len() > MAX_FILE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!("the token file is larger than {} MiB", MAX_FILE_BYTES >> 20),
        ));
    }
    Ok(text)
}

/// The refusal of a file that cannot be read.
pub fn unreadable(file: &str, e: &std::io::Error) -> FileRefused {
    FileRefused::one(file, format_args!("cannot read token file: {e}"))
}

/// Reads and parses one token file.
pub fn load_file(path: &Path) -> Result<Vec<Token>, FileRefused> {
    let name = path.display().to_string();
    let text = read_token_file(path).map_err(|e| unreadable(&name, &e))?;
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
    fn check_same(text: &str, cache: &mut EntryCache) -> Result<Vec<Arc<Token>>, FileRefused> {
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

    #[test]
    fn reports_syntax_and_schema_errors_with_location() {
        let errs = parse("t.yaml", "tokens:\n  - id: x\n    permission: admin\n")
            .unwrap_err()
            .problems;
        assert!(errs[0].starts_with("t.yaml: "), "{errs:?}");
        assert!(errs[0].contains("line"), "{errs:?}");
        let errs = parse("t.yaml", "tokenz: []\n").unwrap_err().problems;
        assert!(errs[0].contains("unknown field"), "{errs:?}");
    }

    fn entry(id: &str, name: &str) -> String {
        format!("  - {{id: {id}, name: {name}, hash: '{HASH}', permission: read}}\n")
    }

    #[test]
    fn reads_any_yaml_style() {
        // Flow style throughout, comments, quoting, block scalars, explicit document markers.
        let flow = format!(
            "# managed by hand\n---\n{{tokens: [{{id: AAAAAAAAAAAA, name: \"ci\", hash: \"{HASH}\", permission: write, routes: [{{path: '/p2/acme/*', access: read}}, {{path: /upload, access: write}}]}}, # first\n  {{id: BBBBBBBBBBBB, name: b, hash: '{HASH}', permission: read, rate_limit: {{requests: 5, period: 1m}}}}]}}\n...\n"
        );
        let t = parse("f.yaml", &flow).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(&*t[0].name, "ci");
        assert_eq!(t[0].permission, Permission::Write);
        assert_eq!(t[0].routes.len(), 2);
        assert_eq!(t[0].routes[1].access, Access::Write);
        assert_eq!(
            t[1].rate_limit,
            Some(RateLimitRule::Limited {
                requests: 5,
                period: std::time::Duration::from_secs(60)
            })
        );
        let block = format!(
            "tokens: # the list\n\n  # a comment line\n  - id: AAAAAAAAAAAA   # trailing\n    name: ci\n    hash: >-\n      {HASH}\n    permission: read\n    description: |\n      two\n      lines\n    expires_at: ~\n    created_at: null\n    rate_limit: unlimited\n  - id: \"BBBBBBBBBBBB\"\n    name: 'b'\n    hash: {HASH}\n    permission: !!str read\n    rate_limit:\n      requests: 3\n      period: 30\n"
        );
        let t = parse("b.yaml", &block).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].description.as_deref(), Some("two\nlines\n"));
        assert_eq!(t[0].expires_at, None);
        assert_eq!(t[0].rate_limit, Some(RateLimitRule::Unlimited));
        assert_eq!(&*t[1].id, "BBBBBBBBBBBB");
        assert_eq!(
            t[1].rate_limit,
            Some(RateLimitRule::Limited {
                requests: 3,
                period: std::time::Duration::from_secs(30)
            })
        );
        for empty in [
            "",
            "# nothing\n",
            "---\n",
            "~\n",
            "tokens:\n",
            "tokens: ~\n",
            "{}",
            "tokens: []",
        ] {
            assert!(parse("e.yaml", empty).unwrap().is_empty(), "{empty:?}");
        }
    }

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
    fn refuses_documents_that_are_not_token_files() {
        for (text, want) in [
            ("tokens: [\n  {id: x\n", "line"),
            ("- a\n- b\n", "expected a mapping"),
            ("tokens: 5\n", "expected a list"),
            ("tokens: {a: b}\n", "expected a list"),
            ("tokens: []\ntokens: []\n", "duplicate field `tokens`"),
            ("tokens: []\n---\ntokens: []\n", "one YAML document"),
            ("? [a]\n: b\n", "expected the key `tokens`"),
            ("tokens:\n  - id: a\n   name: b\n", "line 3"),
            ("tokens: [{id: \"\\q\"}]\n", "line 1"),
        ] {
            let errs = parse("t.yaml", text).unwrap_err().problems;
            assert_eq!(errs.len(), 1, "{text:?}: {errs:?}");
            assert!(errs[0].starts_with("t.yaml: "), "{text:?}: {errs:?}");
            assert!(errs[0].contains(want), "{text:?}: {errs:?}");
        }
    }

    #[test]
    fn never_panics_on_odd_input() {
        let inputs = [
            "\t",
            "- - -",
            "{",
            "}",
            "[",
            "]",
            "&a [*a]",
            "*x",
            "tokens: &a\n  - *a\n",
            "tokens: [&a {id: *a}]",
            "%YAML 1.2\n---\ntokens: []",
            "\u{feff}tokens: []",
            "tokens: [!!str 1]",
            "tokens: [{? [a]: b}]",
            "tokens: [{id: {a: [b, {c: d}]}}]",
            "tokens: [{permission: {read: [1]}}]",
            "tokens: [{routes: [[], {}, ~]}]",
            "tokens: [{rate_limit: {requests: -1, period: .inf}}]",
            "tokens: [{id: !!int x}]",
            "tokens: [{id: !!binary aGk=}]",
            "'",
            "\"",
            "|",
            ">",
            "--- |\n  x",
            "tokens:\n- |\n x",
            "tokens: [{expires_at: 2030-13-45}]",
            "tokens: [{name: 0x}]",
            "tokens: [{name: -}]",
        ];
        for text in inputs {
            let r = std::panic::catch_unwind(|| parse_events("t.yaml", text));
            assert!(r.is_ok(), "panicked on {text:?}");
        }
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

    /// The deserializer bounds its own recursion, whatever events it is given.
    #[test]
    fn the_deserializer_refuses_deep_nesting_by_itself() {
        let nested = |levels: usize| format!("{}x", "- ".repeat(levels));
        fn events(text: &str) -> Vec<Ev<'_>> {
            Parser::new_from_str(text)
                .map(Result::unwrap)
                .skip_while(|(e, _)| !matches!(e, Event::SequenceStart(..)))
                .take_while(|(e, _)| !matches!(e, Event::DocumentEnd))
                .collect()
        }
        let text = nested(MAX_DEPTH);
        let ok = serde_json::Value::deserialize(&mut De::new(&events(&text)));
        assert!(ok.is_ok(), "{ok:?}");
        let text = nested(10 * MAX_DEPTH);
        let err = serde_json::Value::deserialize(&mut De::new(&events(&text))).unwrap_err();
        assert!(
            err.to_string().ends_with(&format!(
                "nested more than {MAX_DEPTH} levels deep at line 1 column {}",
                2 * MAX_DEPTH + 1
            )),
            "{err}"
        );
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

    #[test]
    fn a_file_over_the_size_limit_is_refused() {
        let mut text = String::with_capacity(MAX_FILE_BYTES + 1);
        text.push_str("tokens:\n");
        while text.len() <= MAX_FILE_BYTES {
            text.push_str("# padding padding padding padding padding padding padding\n");
        }
        let errs = parse("huge.yaml", &text).unwrap_err().problems;
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].starts_with("huge.yaml: ") && errs[0].contains("larger than"),
            "{errs:?}"
        );
        let errs = parse_incremental("huge.yaml", &text, &mut EntryCache::default())
            .unwrap_err()
            .problems;
        assert!(errs[0].contains("larger than"), "{errs:?}");
        // Reading stops at the limit too.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.yaml");
        std::fs::write(&path, &text).unwrap();
        let errs = load_file(&path).unwrap_err().problems;
        assert!(errs[0].contains("larger than"), "{errs:?}");
        let err = read_token_file(&path).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::FileTooLarge, "{err}");
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

    #[test]
    fn redaction() {
        let tok = pasted_token();
        assert_eq!(
            redact("no secrets here: tokens, stock_x"),
            "no secrets here: tokens, stock_x"
        );
        assert_eq!(
            redact(&format!("name \"{tok}\"")),
            "name \"tok_…(redacted)\""
        );
        assert_eq!(
            redact(&format!("`{tok}` and `{tok}`")),
            "`tok_…(redacted)` and `tok_…(redacted)`"
        );
        assert_eq!(redact("half tok_abc"), "half tok_…(redacted)");
        assert_eq!(
            redact(&format!("{HASH}!")),
            "$argon2id$v=19$m=64,t=1,p=1$…(redacted)!"
        );
        assert_eq!(redact("$argon2i$x"), "$argon2i$…(redacted)");
        assert!(matches!(redact("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn problems_are_capped() {
        let mut text = String::from("tokens:\n");
        for i in 0..1000 {
            text +=
                &format!("  - {{id: short{i}, name: n{i}, hash: '{HASH}', permission: read}}\n");
        }
        let errs = parse("t.yaml", &text).unwrap_err().problems;
        assert_eq!(errs.len(), MAX_PROBLEMS + 1, "{:?}", errs.last());
        assert!(errs[MAX_PROBLEMS - 1].contains("tokens[99]"), "{errs:?}");
        assert_eq!(
            errs[MAX_PROBLEMS],
            format!(
                "t.yaml: … and {} more problems in this file",
                1000 - MAX_PROBLEMS
            )
        );
        let mut cache = EntryCache::default();
        assert_eq!(
            check_same(&text, &mut cache).unwrap_err().problems.len(),
            MAX_PROBLEMS + 1
        );
        // Up to the limit, every problem is listed.
        let text: String = text
            .lines()
            .take(1 + MAX_PROBLEMS)
            .map(|l| format!("{l}\n"))
            .collect();
        let errs = parse("t.yaml", &text).unwrap_err().problems;
        assert_eq!(errs.len(), MAX_PROBLEMS);
        assert!(!errs.iter().any(|e| e.contains("more problems")));
    }
}
