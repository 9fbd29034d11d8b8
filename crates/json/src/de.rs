//! A serde `Deserializer` over a checked [`Tape`]: values are read where they lie (strings
//! without escapes are borrowed), and a skipped value of any size costs one step.
//!
//! It reads what the engine's typed views ask of it exactly as serde_json would, and refuses
//! ([`Refused`]) whatever it does not read that way (floating-point numbers, structs given
//! as arrays, enums, ...): the caller then reads the document with serde_json, so a refusal
//! costs time, never a different result.

use serde::de::value::BorrowedStrDeserializer;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::tape::Tape;

/// The reader declined the document (see the module docs); not reported to anyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Refused;

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("refused by the fast JSON reader")
    }
}

impl std::error::Error for Refused {}

impl de::Error for Refused {
    // The message is dropped: the document is read again by serde_json, whose error is the
    // one reported, and formatting it here would cost time for nothing.
    fn custom<T: std::fmt::Display>(_msg: T) -> Self {
        Refused
    }
}

/// serde_json's marker for `RawValue` (its `raw_value` feature).
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

/// Reads values from a checked document, one tape entry after another.
pub(super) struct Reader<'de, 't> {
    json: &'de str,
    tape: &'t Tape,
    /// The entry of the next value.
    pos: usize,
    /// The first backslash (in [`super::structural::Index::backslashes`]) not before the
    /// strings read so far: strings are read in document order, so this only moves on.
    next_backslash: usize,
}

impl<'de, 't> Reader<'de, 't> {
    /// A reader of the document `json`, whose `tape` is built and checked.
    #[inline]
    pub(super) fn new(json: &'de str, tape: &'t Tape) -> Self {
        Reader {
            json,
            tape,
            pos: 0,
            next_backslash: 0,
        }
    }

    /// Whether every entry has been read.
    #[inline]
    pub(super) fn at_end(&self) -> bool {
        self.pos == self.tape.offsets().len()
    }

    #[inline]
    fn peek(&self) -> u8 {
        self.tape.byte(self.json.as_bytes(), self.pos)
    }

    #[inline]
    fn start(&self) -> usize {
        self.tape.offsets().get(self.pos).map_or(0, |&at| at as usize)
    }

    /// The entry of the closing bracket of the container opening at the current entry.
    #[inline]
    fn closing(&self) -> Result<usize, Refused> {
        self.tape.closing(self.pos).ok_or(Refused)
    }

    /// The entry after the value at the current entry.
    #[inline]
    fn after_value(&self) -> Result<usize, Refused> {
        match self.peek() {
            b'{' | b'[' => Ok(self.closing()? + 1),
            _ => Ok(self.pos + 1),
        }
    }

    /// The text of the value at the current entry, as written.
    #[inline]
    fn raw_value(&self) -> Result<&'de str, Refused> {
        let end = match self.peek() {
            b'{' | b'[' => {
                let close = self.closing()?;
                self.tape
                    .offsets()
                    .get(close)
                    .map(|&at| at as usize + 1)
                    .ok_or(Refused)?
            }
            _ => self.tape.token_end(self.json.as_bytes(), self.pos),
        };
        self.json.get(self.start()..end).ok_or(Refused)
    }

    /// Reads the string at the current entry and visits it (borrowed when it has no escape).
    fn string<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value, Refused> {
        if self.peek() != b'"' {
            return Err(Refused);
        }
        let start = self.start();
        // The token ends with its closing quote.
        let close = self.tape.token_end(self.json.as_bytes(), self.pos).saturating_sub(1);
        self.pos += 1;
        let inner = self.json.get(start + 1..close).ok_or(Refused)?;
        if !self.backslash_within(start, close) {
            visitor.visit_borrowed_str(inner)
        } else {
            // Escapes are rare in admission objects: serde_json decodes them, exactly.
            let literal = self.json.get(start..=close).ok_or(Refused)?;
            let decoded: String = serde_json::from_str(literal).map_err(|_| Refused)?;
            visitor.visit_string(decoded)
        }
    }

    /// Whether a backslash lies in `start..end`, which is not before any string read so far.
    #[inline]
    fn backslash_within(&mut self, start: usize, end: usize) -> bool {
        let backslashes = &self.tape.index.backslashes;
        while let Some(&at) = backslashes.get(self.next_backslash) {
            if (at as usize) >= start {
                return (at as usize) < end;
            }
            self.next_backslash += 1;
        }
        false
    }

    /// Reads the integer at the current entry as serde_json would: non-negative ones as
    /// `u64`, negative ones as `i64`; anything else (fractions, exponents, `-0`, overflow)
    /// serde_json reads as a float, which this reader refuses.
    fn integer<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value, Refused> {
        let token = self.raw_value()?;
        let (negative, digits) = match token.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, token),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Refused);
        }
        let magnitude: u64 = digits.parse().map_err(|_| Refused)?;
        self.pos += 1;
        if !negative {
            visitor.visit_u64(magnitude)
        } else if magnitude == 0 {
            Err(Refused)
        } else {
            let value = 0i64.checked_sub_unsigned(magnitude).ok_or(Refused)?;
            visitor.visit_i64(value)
        }
    }

    /// Runs `visit` on the container opening at the current entry and checks that it read
    /// the container to its end (serde_json refuses a container with values left over).
    fn container<T>(&mut self, visit: impl FnOnce(&mut Self) -> Result<T, Refused>) -> Result<T, Refused> {
        let close = self.closing()?;
        self.pos += 1;
        let value = visit(self)?;
        if self.pos != close {
            return Err(Refused);
        }
        self.pos = close + 1;
        Ok(value)
    }
}

/// Elements of an array, or entries of an object.
struct Items<'r, 'de, 't> {
    reader: &'r mut Reader<'de, 't>,
    first: bool,
}

impl<'de> Items<'_, 'de, '_> {
    /// Steps over the comma before the next item; `false` at the closing bracket.
    #[inline]
    fn next(&mut self) -> bool {
        if matches!(self.reader.peek(), b']' | b'}') {
            return false;
        }
        if !self.first {
            self.reader.pos += 1;
        }
        self.first = false;
        true
    }
}

impl<'de> SeqAccess<'de> for Items<'_, 'de, '_> {
    type Error = Refused;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Refused> {
        if !self.next() {
            return Ok(None);
        }
        seed.deserialize(&mut *self.reader).map(Some)
    }
}

impl<'de> MapAccess<'de> for Items<'_, 'de, '_> {
    type Error = Refused;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Refused> {
        if !self.next() {
            return Ok(None);
        }
        // Keys are strings (the tape is checked); only string-like reads of them succeed.
        seed.deserialize(&mut *self.reader).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Refused> {
        // The colon.
        self.reader.pos += 1;
        seed.deserialize(&mut *self.reader)
    }
}

/// serde_json's representation of a borrowed `RawValue`: a map of one entry, the token to
/// the value's text.
struct RawValueAccess<'de> {
    raw: Option<&'de str>,
}

impl<'de> MapAccess<'de> for RawValueAccess<'de> {
    type Error = Refused;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Refused> {
        if self.raw.is_none() {
            return Ok(None);
        }
        seed.deserialize(BorrowedStrDeserializer::new(RAW_VALUE_TOKEN))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Refused> {
        let raw = self.raw.take().ok_or(Refused)?;
        seed.deserialize(BorrowedStrDeserializer::new(raw))
    }
}

macro_rules! integers {
    ($($method:ident)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
                self.integer(visitor)
            }
        )*
    };
}

macro_rules! refused {
    ($($method:ident)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Refused> {
                Err(Refused)
            }
        )*
    };
}

impl<'de> Deserializer<'de> for &mut Reader<'de, '_> {
    type Error = Refused;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        match self.peek() {
            b'{' => self.deserialize_map(visitor),
            b'[' => self.deserialize_seq(visitor),
            b'"' => self.string(visitor),
            b't' | b'f' => self.deserialize_bool(visitor),
            b'n' => self.deserialize_unit(visitor),
            _ => self.integer(visitor),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        let value = match self.peek() {
            b't' => true,
            b'f' => false,
            _ => return Err(Refused),
        };
        self.pos += 1;
        visitor.visit_bool(value)
    }

    integers! {
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
    }

    refused! {
        deserialize_f32 deserialize_f64 deserialize_char deserialize_bytes
        deserialize_byte_buf
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        self.string(visitor)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        self.string(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        if self.peek() == b'n' {
            self.pos += 1;
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        if self.peek() != b'n' {
            return Err(Refused);
        }
        self.pos += 1;
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, Refused> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, name: &'static str, visitor: V) -> Result<V::Value, Refused> {
        if name == RAW_VALUE_TOKEN {
            let raw = self.raw_value()?;
            self.pos = self.after_value()?;
            return visitor.visit_map(RawValueAccess { raw: Some(raw) });
        }
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        if self.peek() != b'[' {
            return Err(Refused);
        }
        self.container(|reader| visitor.visit_seq(Items { reader, first: true }))
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, _visitor: V) -> Result<V::Value, Refused> {
        Err(Refused)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        _visitor: V,
    ) -> Result<V::Value, Refused> {
        Err(Refused)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        if self.peek() != b'{' {
            return Err(Refused);
        }
        self.container(|reader| visitor.visit_map(Items { reader, first: true }))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Refused> {
        // serde_json also reads a struct from an array; that rare case is left to it.
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Refused> {
        Err(Refused)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        self.string(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        self.pos = self.after_value()?;
        visitor.visit_unit()
    }
}
