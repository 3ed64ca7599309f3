//! A serde `Deserializer` over a buffered run of YAML parser events: one node (a token entry),
//! with aliases already expanded. Token files are read event by event and only one entry's
//! events are held at a time, so memory stays proportional to the result, not to the file.
//!
//! Scalars resolve as `serde_yaml_ng` resolves them (YAML 1.2 core schema: `null`/`~`/empty,
//! `true`/`false`, integers, floats; anything else, or anything quoted, is a string).

use std::borrow::Cow;
use std::fmt;

use saphyr_parser::{Event, ScalarStyle, Span, Tag};
use serde::de::{self, DeserializeSeed, Unexpected, Visitor};

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
enum PathSeg {
    Key(String),
    Index(usize),
}

impl Error {
    fn new(msg: impl Into<String>, span: &Span) -> Self {
        Error {
            path: Vec::new(),
            msg: msg.into(),
            at: Some(position(span)),
        }
    }

    fn or_at(mut self, span: &Span) -> Self {
        if self.at.is_none() {
            self.at = Some(position(span));
        }
        self
    }

    fn within(mut self, seg: PathSeg) -> Self {
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

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

enum Int {
    U(u64),
    I(i64),
}

fn parse_int(v: &str) -> Option<Int> {
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

fn parse_float(v: &str) -> Option<f64> {
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

fn core_tag<'t>(tag: &'t Option<Cow<'_, Tag>>) -> Option<&'t str> {
    match tag {
        Some(t) if t.is_yaml_core_schema() => Some(t.suffix.as_str()),
        _ => None,
    }
}

/// Deserializes from a complete, alias-free run of events holding exactly one node. Nesting
/// deeper than [`MAX_DEPTH`] is an error (the token-file reader refuses it before this).
pub(crate) struct De<'s, 'a> {
    events: &'s [Ev<'a>],
    pos: usize,
    depth: usize,
}

impl<'s, 'a> De<'s, 'a> {
    /// A deserializer over `events` (one node, as collected by the token-file reader).
    pub(crate) fn new(events: &'s [Ev<'a>]) -> Self {
        De {
            events,
            pos: 0,
            depth: 0,
        }
    }

    /// One level deeper, into the collection starting at `span`.
    fn enter(&mut self, span: &Span) -> Result<(), Error> {
        if self.depth >= MAX_DEPTH {
            return Err(Error::new(
                format!("nested more than {MAX_DEPTH} levels deep"),
                span,
            ));
        }
        self.depth += 1;
        Ok(())
    }

    fn end_span(&self) -> Span {
        self.events.last().map(|e| e.1).unwrap_or_default()
    }

    fn next(&mut self) -> Result<&'s Ev<'a>, Error> {
        match self.events.get(self.pos) {
            Some(e) => {
                self.pos += 1;
                Ok(e)
            }
            None => Err(Error::new("unexpected end of the entry", &self.end_span())),
        }
    }

    fn peek(&self) -> Result<&'s Ev<'a>, Error> {
        self.events
            .get(self.pos)
            .ok_or_else(|| Error::new("unexpected end of the entry", &self.end_span()))
    }

    /// Skips one whole node.
    fn skip_node(&mut self) -> Result<(), Error> {
        let mut depth = 0usize;
        loop {
            match &self.next()?.0 {
                Event::SequenceStart(..) | Event::MappingStart(..) => depth += 1,
                Event::SequenceEnd | Event::MappingEnd => depth = depth.saturating_sub(1),
                _ => {}
            }
            if depth == 0 {
                return Ok(());
            }
        }
    }

    /// Skips the rest of a collection whose start was consumed, through its end.
    fn skip_rest(&mut self) -> Result<(), Error> {
        loop {
            match &self.peek()?.0 {
                Event::SequenceEnd | Event::MappingEnd => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => self.skip_node()?,
            }
        }
    }
}

fn unexpected<'e>(event: &'e Event<'_>) -> Unexpected<'e> {
    match event {
        Event::Scalar(v, ..) => Unexpected::Str(v),
        Event::SequenceStart(..) => Unexpected::Seq,
        Event::MappingStart(..) => Unexpected::Map,
        _ => Unexpected::Other("end of a collection"),
    }
}

fn visit_str<'a, V: Visitor<'a>>(v: &Cow<'a, str>, visitor: V) -> Result<V::Value, Error> {
    match v {
        Cow::Borrowed(s) => visitor.visit_borrowed_str(s),
        Cow::Owned(s) => visitor.visit_str(s),
    }
}

fn visit_untagged<'a, V: Visitor<'a>>(v: &Cow<'a, str>, visitor: V) -> Result<V::Value, Error> {
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

impl<'de> de::Deserializer<'de> for &mut De<'_, 'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let (event, span) = self.next()?;
        let result = match event {
            Event::Scalar(v, style, _, tag) => {
                let plain = *style == ScalarStyle::Plain;
                match core_tag(tag) {
                    Some("str") => visit_str(v, visitor),
                    Some("null") if is_null(v) => visitor.visit_unit(),
                    Some("bool") => match parse_bool(v) {
                        Some(b) => visitor.visit_bool(b),
                        None => Err(de::Error::invalid_value(Unexpected::Str(v), &"a boolean")),
                    },
                    Some("int") => match parse_int(v) {
                        Some(Int::U(u)) => visitor.visit_u64(u),
                        Some(Int::I(i)) => visitor.visit_i64(i),
                        None => Err(de::Error::invalid_value(Unexpected::Str(v), &"an integer")),
                    },
                    Some("float") => match parse_float(v) {
                        Some(x) => visitor.visit_f64(x),
                        None => Err(de::Error::invalid_value(Unexpected::Str(v), &"a float")),
                    },
                    Some("null") => Err(de::Error::invalid_value(Unexpected::Str(v), &"null")),
                    _ if plain => visit_untagged(v, visitor),
                    _ => visit_str(v, visitor),
                }
            }
            Event::SequenceStart(..) => {
                self.pos -= 1;
                return self.deserialize_seq(visitor);
            }
            Event::MappingStart(..) => {
                self.pos -= 1;
                return self.deserialize_map(visitor);
            }
            other => Err(de::Error::invalid_type(unexpected(other), &visitor)),
        };
        result.map_err(|e| e.or_at(span))
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let (event, span) = self.next()?;
        match event {
            Event::Scalar(v, ..) => visit_str(v, visitor),
            other => Err(de::Error::invalid_type(unexpected(other), &visitor)),
        }
        .map_err(|e| e.or_at(span))
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let (event, span) = self.peek()?;
        let none = match event {
            Event::Scalar(v, ScalarStyle::Plain, _, tag) => match tag {
                None => is_null(v),
                Some(_) => core_tag(tag) == Some("null") && is_null(v),
            },
            _ => false,
        };
        if none {
            self.pos += 1;
            visitor.visit_none().map_err(|e: Error| e.or_at(span))
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let (event, span) = self.next()?;
        match event {
            Event::Scalar(v, ScalarStyle::Plain, ..) if is_null(v) => visitor.visit_unit(),
            other => Err(de::Error::invalid_type(unexpected(other), &visitor)),
        }
        .map_err(|e: Error| e.or_at(span))
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let (event, span) = self.next()?;
        match event {
            Event::SequenceStart(..) => {
                self.enter(span)?;
                let mut access = Seq {
                    de: self,
                    index: 0,
                    done: false,
                };
                let value = visitor.visit_seq(&mut access).map_err(|e| e.or_at(span))?;
                if !access.done {
                    access.de.skip_rest()?;
                }
                access.de.depth -= 1;
                Ok(value)
            }
            other => Err(de::Error::invalid_type(unexpected(other), &visitor))
                .map_err(|e: Error| e.or_at(span)),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let (event, span) = self.next()?;
        match event {
            Event::MappingStart(..) => {
                self.enter(span)?;
                let mut access = Map {
                    de: self,
                    key: None,
                    done: false,
                };
                let value = visitor.visit_map(&mut access).map_err(|e| e.or_at(span))?;
                if !access.done {
                    access.de.skip_rest()?;
                }
                access.de.depth -= 1;
                Ok(value)
            }
            other => Err(de::Error::invalid_type(unexpected(other), &visitor))
                .map_err(|e: Error| e.or_at(span)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let (event, span) = self.peek()?;
        match event {
            Event::Scalar(..) => visitor.visit_enum(UnitVariant { de: self }),
            Event::MappingStart(..) => {
                self.enter(span)?;
                self.pos += 1;
                let value = visitor.visit_enum(&mut *self)?;
                self.depth -= 1;
                match self.next()? {
                    (Event::MappingEnd, _) => Ok(value),
                    (_, at) => Err(Error::new(
                        "an enum written as a mapping must have exactly one key",
                        at,
                    )),
                }
            }
            other => Err(de::Error::invalid_type(unexpected(other), &visitor)),
        }
        .map_err(|e: Error| e.or_at(span))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.skip_node()?;
        visitor.visit_unit()
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Error> {
        let (_, span) = self.peek()?;
        Err(Error::new("bytes are not supported", span))
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_bytes(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64
    }
}

struct Seq<'d, 's, 'a> {
    de: &'d mut De<'s, 'a>,
    index: usize,
    done: bool,
}

impl<'de> de::SeqAccess<'de> for Seq<'_, '_, 'de> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        if self.done {
            return Ok(None);
        }
        if let (Event::SequenceEnd, _) = self.de.peek()? {
            self.de.pos += 1;
            self.done = true;
            return Ok(None);
        }
        let index = self.index;
        self.index += 1;
        seed.deserialize(&mut *self.de)
            .map(Some)
            .map_err(|e| e.within(PathSeg::Index(index)))
    }
}

struct Map<'d, 's, 'a> {
    de: &'d mut De<'s, 'a>,
    key: Option<&'s str>,
    done: bool,
}

impl<'de> de::MapAccess<'de> for Map<'_, '_, 'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        if self.done {
            return Ok(None);
        }
        let (event, _) = self.de.peek()?;
        self.key = match event {
            Event::MappingEnd => {
                self.de.pos += 1;
                self.done = true;
                return Ok(None);
            }
            Event::Scalar(k, ..) => Some(k),
            _ => None,
        };
        seed.deserialize(&mut *self.de).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let key = self.key.take();
        seed.deserialize(&mut *self.de).map_err(|e| match key {
            Some(k) => e.within(PathSeg::Key(k.to_string())),
            None => e,
        })
    }
}

/// An enum given as a scalar: a unit variant.
struct UnitVariant<'d, 's, 'a> {
    de: &'d mut De<'s, 'a>,
}

impl<'de> de::EnumAccess<'de> for UnitVariant<'_, '_, 'de> {
    type Error = Error;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), Error> {
        let value = seed.deserialize(&mut *self.de)?;
        Ok((value, self))
    }
}

impl<'de> de::VariantAccess<'de> for UnitVariant<'_, '_, 'de> {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, _seed: T) -> Result<T::Value, Error> {
        Err(de::Error::invalid_type(
            Unexpected::UnitVariant,
            &"newtype variant",
        ))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, _visitor: V) -> Result<V::Value, Error> {
        Err(de::Error::invalid_type(
            Unexpected::UnitVariant,
            &"tuple variant",
        ))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Error> {
        Err(de::Error::invalid_type(
            Unexpected::UnitVariant,
            &"struct variant",
        ))
    }
}

/// An enum given as a one-key mapping `{Variant: value}`.
impl<'de> de::EnumAccess<'de> for &mut De<'_, 'de> {
    type Error = Error;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), Error> {
        let value = seed.deserialize(&mut *self)?;
        Ok((value, self))
    }
}

impl<'de> de::VariantAccess<'de> for &mut De<'_, 'de> {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        de::Deserializer::deserialize_ignored_any(self, de::IgnoredAny).map(|_| ())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_seq(self, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_map(self, visitor)
    }
}
