//! What single YAML events mean for the token-file deserializer: an event with its position,
//! the deserialization error (where in the entry, what, and the line), and how scalars are
//! handed to a visitor: plain ones resolve as `serde_yaml_ng` resolves them (YAML 1.2 core
//! schema: `null`/`~`/empty, `true`/`false`, integers, floats; anything else, or anything
//! quoted, is a string).

use std::borrow::Cow;
use std::fmt;

use saphyr_parser::{Event, Span, Tag};
use serde::de::{self, Unexpected, Visitor};

/// An event and where it is.
pub(crate) type Ev<'a> = (Event<'a>, Span);

/// Deepest nesting of collections in one node (a token entry needs 3: the entry, `routes`, a
/// route). Deserialization recurses once per level, so a deeper node would overflow the stack.
pub(crate) const MAX_DEPTH: usize = 64;

/// A deserialization problem: where in the node (`routes[0].access`), what, and the line.
#[derive(Debug)]
pub(crate) struct Error {
    /// Path segments from the innermost outwards (`access`, `[0]`, `routes`).
    path: Vec<PathSeg>,
    msg: String,
    at: Option<(usize, usize)>,
}

#[derive(Debug)]
pub(super) enum PathSeg {
    Key(String),
    Index(usize),
}

impl Error {
    pub(super) fn new(msg: impl Into<String>, span: &Span) -> Self {
        Error {
            path: Vec::new(),
            msg: msg.into(),
            at: Some(position(span)),
        }
    }

    pub(super) fn or_at(mut self, span: &Span) -> Self {
        if self.at.is_none() {
            self.at = Some(position(span));
        }
        self
    }

    pub(super) fn within(mut self, seg: PathSeg) -> Self {
        self.path.push(seg);
        self
    }
}

/// 1-based line and column of the start of `span`.
pub(crate) fn position(span: &Span) -> (usize, usize) {
    (span.start.line(), span.start.col() + 1)
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.path.iter().rev().enumerate() {
            match seg {
                PathSeg::Key(k) if i == 0 => write!(f, "{k}")?,
                PathSeg::Key(k) => write!(f, ".{k}")?,
                PathSeg::Index(j) => write!(f, "[{j}]")?,
            }
        }
        if !self.path.is_empty() {
            f.write_str(": ")?;
        }
        f.write_str(&self.msg)?;
        if let Some((line, col)) = self.at {
            write!(f, " at line {line} column {col}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error {
            path: Vec::new(),
            msg: msg.to_string(),
            at: None,
        }
    }
}

/// True for the plain scalars YAML reads as null.
pub(crate) fn is_null(v: &str) -> bool {
    matches!(v, "" | "~" | "null" | "Null" | "NULL")
}

pub(super) fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

pub(super) enum Int {
    U(u64),
    I(i64),
}

pub(super) fn parse_int(v: &str) -> Option<Int> {
    let (neg, digits) = match v.as_bytes().first() {
        Some(b'-') => (true, &v[1..]),
        Some(b'+') => (false, &v[1..]),
        _ => (false, v),
    };
    if digits.starts_with(['+', '-']) || digits.is_empty() {
        return None;
    }
    let (radix, digits) = if let Some(d) = digits.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = digits.strip_prefix("0o") {
        (8, d)
    } else {
        (10, digits)
    };
    if digits.is_empty() || digits.starts_with(['+', '-']) {
        return None;
    }
    let magnitude = u64::from_str_radix(digits, radix).ok()?;
    if neg {
        if magnitude <= i64::MAX as u64 + 1 {
            Some(Int::I((magnitude as i64).wrapping_neg()))
        } else {
            None
        }
    } else {
        Some(Int::U(magnitude))
    }
}

pub(super) fn parse_float(v: &str) -> Option<f64> {
    let unsigned = v.trim_start_matches(['+', '-']);
    let neg = v.starts_with('-');
    let special = match unsigned {
        ".inf" | ".Inf" | ".INF" => Some(f64::INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Some(f64::NAN),
        _ => None,
    };
    if let Some(inf) = special {
        return Some(if neg { -inf } else { inf });
    }
    // Only YAML's float syntax: digits, one sign, '.', 'e'. Rust would also take "inf", "NaN".
    if !v.bytes().any(|b| b.is_ascii_digit())
        || !v
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'))
    {
        return None;
    }
    v.parse().ok()
}

pub(super) fn core_tag<'t>(tag: &'t Option<Cow<'_, Tag>>) -> Option<&'t str> {
    match tag {
        Some(t) if t.is_yaml_core_schema() => Some(t.suffix.as_str()),
        _ => None,
    }
}

pub(super) fn unexpected<'e>(event: &'e Event<'_>) -> Unexpected<'e> {
    match event {
        Event::Scalar(v, ..) => Unexpected::Str(v),
        Event::SequenceStart(..) => Unexpected::Seq,
        Event::MappingStart(..) => Unexpected::Map,
        _ => Unexpected::Other("end of a collection"),
    }
}

pub(super) fn visit_str<'a, V: Visitor<'a>>(
    v: &Cow<'a, str>,
    visitor: V,
) -> Result<V::Value, Error> {
    match v {
        Cow::Borrowed(s) => visitor.visit_borrowed_str(s),
        Cow::Owned(s) => visitor.visit_str(s),
    }
}

pub(super) fn visit_untagged<'a, V: Visitor<'a>>(
    v: &Cow<'a, str>,
    visitor: V,
) -> Result<V::Value, Error> {
    if is_null(v) {
        return visitor.visit_unit();
    }
    if let Some(b) = parse_bool(v) {
        return visitor.visit_bool(b);
    }
    match parse_int(v) {
        Some(Int::U(u)) => return visitor.visit_u64(u),
        Some(Int::I(i)) => return visitor.visit_i64(i),
        None => {}
    }
    if let Some(f) = parse_float(v) {
        return visitor.visit_f64(f);
    }
    visit_str(v, visitor)
}
