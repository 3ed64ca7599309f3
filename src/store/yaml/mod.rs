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
//! anything shaped like a token or a password hash (see `problems::redact`).
//!
//! Here: reading a file and parsing its text whole. The parts: `walk` (the document, event by
//! event, with its bounds), `de` and `scalar` (a serde deserializer over one entry's
//! events), `entry` (an entry's checks), `problems` (the capped, redacted problem list) and
//! `cache` (re-parsing only the entries a reload changed).

mod cache;
mod de;
mod entry;
mod problems;
mod scalar;
mod walk;

use std::io::Read as _;
use std::path::Path;
use std::sync::Arc;

pub use cache::{parse_incremental, EntryCache};

use super::error::FileRefused;
use crate::token::{Source, Token};
use problems::Problems;
use walk::{Fatal, Reader};

/// Largest token file read: 64 MiB, about 2.5 times a 100,000-token file (BENCHMARKS.md).
pub const MAX_FILE_BYTES: usize = 64 << 20;

/// Problems listed per file; past them, one line says how many more there are.
pub const MAX_PROBLEMS: usize = 100;

/// Parses the text of a token file. `file` names it in errors. Never panics: a failure inside
/// the YAML parser is reported as a refusal of the file.
pub fn parse(file: &str, text: &str) -> Result<Vec<Token>, FileRefused> {
    std::panic::catch_unwind(|| parse_events(file, text))
        .unwrap_or_else(|_| Err(parser_failed(file)))
}

/// The refusal of a file the YAML parser panicked on.
pub(super) fn parser_failed(file: &str) -> FileRefused {
    FileRefused::one(file, "the YAML parser failed on this file (internal error)")
}

fn parse_events(file: &str, text: &str) -> Result<Vec<Token>, FileRefused> {
    parse_events_anchored(file, text).0
}

/// Like [`parse_events`], and whether the text defined any anchor (only then can an entry
/// depend on another one).
pub(super) fn parse_events_anchored(
    file: &str,
    text: &str,
) -> (Result<Vec<Token>, FileRefused>, bool) {
    if let Some(refused) = too_large(file, text) {
        return (Err(refused), false);
    }
    let mut r = Reader::new(text);
    let mut tokens = Vec::new();
    let mut errors = Problems::new(file);
    let source = Source::File(Arc::from(file));
    let read = walk::read_document(&mut r, &source, &mut tokens, &mut errors);
    let anchored = r.anchored();
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
pub(super) fn too_large(file: &str, text: &str) -> Option<FileRefused> {
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

/// Reads a token file as text, refusing (`FileTooLarge`) one larger than [`MAX_FILE_BYTES`]
/// without reading more than that.
///
/// Only a regular file is read (after symlinks): a FIFO would hold the loader thread until
/// someone writes to it (opening it is non-blocking, so even the open returns), and a device
/// such as `/dev/zero` would be read up to the bound for nothing.
pub fn read_token_file(path: &Path) -> std::io::Result<String> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file (a FIFO, device, socket or directory)",
        ));
    }
    let mut text = String::new();
    file.take(MAX_FILE_BYTES as u64 + 1)
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
    use crate::token::{Access, Permission, RateLimitRule};

    /// A valid argon2id PHC string (of no secret anyone knows), for entries of test files.
    pub(super) const HASH: &str = "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";

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
    fn reports_syntax_and_schema_errors_with_location() {
        let errs = parse("t.yaml", "tokens:\n  - id: x\n    permission: admin\n")
            .unwrap_err()
            .problems;
        assert!(errs[0].starts_with("t.yaml: "), "{errs:?}");
        assert!(errs[0].contains("line"), "{errs:?}");
        let errs = parse("t.yaml", "tokenz: []\n").unwrap_err().problems;
        assert!(errs[0].contains("unknown field"), "{errs:?}");
    }

    #[test]
    fn reads_any_yaml_style() {
        // Flow style throughout, comments, quoting, block scalars, explicit document markers.
        let flow = format!(
            "# managed by hand\n---\n{{tokens: [{{id: AAAAAAAAAAAA, name: \"ci\", hash: \"{HASH}\", permission: write, routes: [{{path: '/p2/acme/*', access: read}}, {{path: /upload, access: write}}, {{path: /upload/private, access: none}}]}}, # first\n  {{id: BBBBBBBBBBBB, name: b, hash: '{HASH}', permission: read, rate_limit: {{requests: 5, period: 1m}}}}]}}\n...\n"
        );
        let t = parse("f.yaml", &flow).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(&*t[0].name, "ci");
        assert_eq!(t[0].permission, Permission::Write);
        assert_eq!(t[0].routes.len(), 3);
        assert_eq!(t[0].routes[1].access, Access::Write);
        assert_eq!(t[0].routes[2].access, Access::None);
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
}
