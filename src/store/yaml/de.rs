//! A serde `Deserializer` over a buffered run of YAML parser events: one node (a token entry),
//! with aliases already expanded. Token files are read event by event and only one entry's
//! events are held at a time, so memory stays proportional to the result, not to the file.
//! Scalars resolve as [`super::scalar`] says.

use saphyr_parser::{Event, ScalarStyle, Span};
use serde::de::{self, DeserializeSeed, Unexpected, Visitor};

use super::scalar::{
    core_tag, is_null, parse_bool, parse_float, parse_int, unexpected, visit_str, visit_untagged,
    Error, Ev, Int, PathSeg, MAX_DEPTH,
};

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

#[cfg(test)]
mod tests {
    use super::*;
    use saphyr_parser::Parser;
    use serde::Deserialize;

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
}
