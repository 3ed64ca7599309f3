//! The problems of one token file: the first [`MAX_PROBLEMS`] listed, each naming the file and
//! with anything shaped like a token or a password hash cut out ([`redact`]), the rest counted.

use std::borrow::Cow;

use super::MAX_PROBLEMS;
use crate::store::error::FileRefused;
use crate::token;

/// Keeps the first [`MAX_PROBLEMS`] problems of a file, each as `FILE: problem` with
/// [`redact`] applied, and counts the others.
pub(super) struct Problems<'f> {
    file: &'f str,
    listed: Vec<String>,
    more: usize,
}

impl<'f> Problems<'f> {
    pub(super) fn new(file: &'f str) -> Self {
        Problems {
            file,
            listed: Vec::new(),
            more: 0,
        }
    }

    pub(super) fn push(&mut self, problem: impl std::fmt::Display) {
        if self.listed.len() < MAX_PROBLEMS {
            let problem = problem.to_string();
            self.listed
                .push(format!("{}: {}", self.file, redact(&problem)));
        } else {
            self.more += 1;
        }
    }

    /// How many problems were found (listed or not).
    pub(super) fn count(&self) -> usize {
        self.listed.len() + self.more
    }

    pub(super) fn into_refused(mut self) -> FileRefused {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::yaml::cache::tests::check_same;
    use crate::store::yaml::tests::HASH;
    use crate::store::yaml::{parse, EntryCache};

    /// A generated token (valid checksum), as someone would paste it.
    fn pasted_token() -> String {
        crate::token::generate().token.expose().to_string()
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
