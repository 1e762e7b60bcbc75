//! serde `Deserializer` reading external term format directly, borrowing strings and
//! binaries from the input, bounded by [`DecodeLimits`].
//!
//! The mapping is the one in [`ser`](crate::ser). In addition, when reading:
//! atoms are accepted where a string is wanted; `nil` is `None` and `()`; a list of
//! small integers (`STRING_EXT`) and a binary are accepted where a sequence of `u8` is
//! wanted; integers of up to 128 bits are read without a big-integer allocation.
//! Pids, ports, references and funs have no serde form: read them with
//! [`TermValue`](crate::raw::TermValue) or [`RawTerm`](crate::raw::RawTerm).

use std::borrow::Cow;

use serde::de::{self, DeserializeSeed, Visitor};

use crate::DecodeLimits;
use crate::decode::{self, Body, Reader};
use crate::error::DecodeError;
use crate::raw::{ATOM_NAME, HANDOFF, RAW_NAME, TERM_NAME};
use crate::tag::*;

/// Decodes a value from a complete term (version byte first) with default limits,
/// borrowing from `bytes` where the type allows. Compressed terms need
/// [`from_slice_owned`].
pub fn from_slice<'de, T: de::Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, DecodeError> {
    from_slice_with(bytes, &DecodeLimits::default())
}

/// [`from_slice`] with explicit limits.
pub fn from_slice_with<'de, T: de::Deserialize<'de>>(
    bytes: &'de [u8],
    limits: &DecodeLimits,
) -> Result<T, DecodeError> {
    let (v, used) = from_prefix_with(bytes, limits)?;
    if used != bytes.len() {
        return Err(DecodeError::TrailingBytes {
            count: bytes.len() - used,
        });
    }
    Ok(v)
}

/// Decodes a value from the term at the start of `bytes` and returns the bytes used.
pub fn from_prefix_with<'de, T: de::Deserialize<'de>>(
    bytes: &'de [u8],
    limits: &DecodeLimits,
) -> Result<(T, usize), DecodeError> {
    match decode::open(bytes, limits)? {
        Body::Plain(buf, start) => {
            let cap = limits.max_bytes.saturating_add(1).min(buf.len());
            let mut de = Deserializer {
                r: Reader::new(&buf[..cap], start, limits),
            };
            let v = T::deserialize(&mut de)?;
            decode::check_size(de.r.pos, limits)?;
            Ok((v, de.r.pos))
        }
        Body::Inflated(..) => Err(DecodeError::Unsupported {
            what: "compressed term (use from_slice_owned)",
            tag: COMPRESSED,
            offset: 1,
        }),
    }
}

/// Decodes an owned value from a complete term, compressed or not.
pub fn from_slice_owned<T: de::DeserializeOwned>(
    bytes: &[u8],
    limits: &DecodeLimits,
) -> Result<T, DecodeError> {
    match decode::open(bytes, limits)? {
        Body::Plain(..) => from_slice_with(bytes, limits),
        Body::Inflated(body, used) => {
            if used != bytes.len() {
                return Err(DecodeError::TrailingBytes {
                    count: bytes.len() - used,
                });
            }
            let mut de = Deserializer {
                r: Reader::new(&body, 0, limits),
            };
            let v = T::deserialize(&mut de)?;
            if de.r.pos != body.len() {
                return Err(DecodeError::Compression(
                    "bytes left after the compressed term",
                ));
            }
            Ok(v)
        }
    }
}

/// Reads terms as serde values. Build one with [`from_slice`] and friends.
pub struct Deserializer<'de> {
    r: Reader<'de>,
}

fn kind(tag: u8) -> &'static str {
    match tag {
        SMALL_INTEGER_EXT | INTEGER_EXT | SMALL_BIG_EXT | LARGE_BIG_EXT => "integer",
        NEW_FLOAT_EXT | FLOAT_EXT => "float",
        ATOM_EXT | ATOM_UTF8_EXT | SMALL_ATOM_EXT | SMALL_ATOM_UTF8_EXT => "atom",
        BINARY_EXT => "binary",
        BIT_BINARY_EXT => "bitstring",
        NIL_EXT | STRING_EXT | LIST_EXT => "list",
        SMALL_TUPLE_EXT | LARGE_TUPLE_EXT => "tuple",
        MAP_EXT => "map",
        PID_EXT | NEW_PID_EXT => "pid",
        PORT_EXT | NEW_PORT_EXT | V4_PORT_EXT => "port",
        REFERENCE_EXT | NEW_REFERENCE_EXT | NEWER_REFERENCE_EXT => "reference",
        EXPORT_EXT | NEW_FUN_EXT | FUN_EXT => "fun",
        _ => "unknown tag",
    }
}

fn is_atom_tag(tag: u8) -> bool {
    matches!(
        tag,
        ATOM_EXT | ATOM_UTF8_EXT | SMALL_ATOM_EXT | SMALL_ATOM_UTF8_EXT
    )
}

impl<'de> Deserializer<'de> {
    fn unexpected(&self, expected: &'static str, tag: u8, offset: usize) -> DecodeError {
        DecodeError::Unexpected {
            expected,
            found: kind(tag),
            offset,
        }
    }

    /// Reads an atom at the cursor if there is one.
    fn atom_if(&mut self) -> Result<Option<Cow<'de, str>>, DecodeError> {
        let offset = self.r.pos;
        let tag = self.r.peek()?;
        if !is_atom_tag(tag) {
            return Ok(None);
        }
        self.r.pos += 1;
        self.r.spend(1)?;
        self.r.atom_body(tag, offset).map(Some)
    }

    /// Is the next term the atom `'__struct__'` (in any atom encoding)? Looks at the
    /// bytes only, so ordinary keys are parsed once.
    fn at_struct_key(&self) -> bool {
        const NAME: &[u8] = b"__struct__";
        let rest = &self.r.buf[self.r.pos..];
        let body = match rest.first() {
            Some(&(SMALL_ATOM_UTF8_EXT | SMALL_ATOM_EXT)) => rest.get(1..),
            Some(&(ATOM_EXT | ATOM_UTF8_EXT)) if rest.get(1) == Some(&0) => rest.get(2..),
            _ => None,
        };
        body.is_some_and(|b| {
            b.first() == Some(&(NAME.len() as u8)) && b.get(1..=NAME.len()) == Some(NAME)
        })
    }

    fn visit_atom<V: Visitor<'de>>(name: Cow<'de, str>, v: V) -> Result<V::Value, DecodeError> {
        match name {
            Cow::Borrowed(s) => v.visit_borrowed_str(s),
            Cow::Owned(s) => v.visit_string(s),
        }
    }

    fn integer<V: Visitor<'de>>(&mut self, tag: u8, v: V) -> Result<V::Value, DecodeError> {
        match tag {
            SMALL_INTEGER_EXT => v.visit_u8(self.r.u8()?),
            INTEGER_EXT => v.visit_i32(self.r.u32()? as i32),
            _ => {
                let (neg, mag) = self.r.big_body(tag)?;
                let n = mag.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
                if n > 16 {
                    return Err(DecodeError::IntegerOutOfRange { ty: "i128/u128" });
                }
                let mut le = [0u8; 16];
                le[..n].copy_from_slice(&mag[..n]);
                let m = u128::from_le_bytes(le);
                if neg {
                    if m <= 1u128 << 63 {
                        v.visit_i64((m as i128).wrapping_neg() as i64)
                    } else if m <= 1u128 << 127 {
                        v.visit_i128((m as i128).wrapping_neg())
                    } else {
                        Err(DecodeError::IntegerOutOfRange { ty: "i128" })
                    }
                } else if let Ok(m) = u64::try_from(m) {
                    v.visit_u64(m)
                } else {
                    v.visit_u128(m)
                }
            }
        }
    }

    /// The bytes of a binary at the cursor (tag included).
    fn binary(&mut self) -> Result<Option<&'de [u8]>, DecodeError> {
        if self.r.peek()? != BINARY_EXT {
            return Ok(None);
        }
        self.r.pos += 1;
        self.r.spend(1)?;
        let len = self.r.u32()? as usize;
        self.r.take(len).map(Some)
    }

    fn seq<V: Visitor<'de>>(&mut self, v: V) -> Result<V::Value, DecodeError> {
        let offset = self.r.pos;
        let tag = self.r.u8()?;
        self.r.spend(1)?;
        match tag {
            NIL_EXT => v.visit_seq(Elements { de: self, left: 0 }),
            STRING_EXT => {
                let n = self.r.u16()? as usize;
                let bytes = self.r.take(n)?;
                self.r.spend(n)?;
                v.visit_seq(de::value::SeqDeserializer::new(bytes.iter().copied()))
            }
            BINARY_EXT => {
                let n = self.r.u32()? as usize;
                let bytes = self.r.take(n)?;
                v.visit_seq(de::value::SeqDeserializer::new(bytes.iter().copied()))
            }
            LIST_EXT | SMALL_TUPLE_EXT | LARGE_TUPLE_EXT => {
                let count_at = self.r.pos;
                let n = match tag {
                    SMALL_TUPLE_EXT => self.r.u8()? as usize,
                    _ => self.r.u32()? as usize,
                };
                self.r.check_count(n, 1, count_at)?;
                self.r.enter()?;
                let list = tag == LIST_EXT;
                let mut access = Elements { de: self, left: n };
                let value = v.visit_seq(&mut access)?;
                if access.left != 0 {
                    return Err(DecodeError::Message(format!(
                        "{} elements left unread in the sequence at byte {offset}",
                        access.left
                    )));
                }
                self.r.leave();
                if list {
                    let at = self.r.pos;
                    let tail = self.r.u8()?;
                    if tail != NIL_EXT {
                        return Err(self.unexpected("a proper list", tail, at));
                    }
                }
                Ok(value)
            }
            _ => Err(self.unexpected("a list or tuple", tag, offset)),
        }
    }

    fn map<V: Visitor<'de>>(
        &mut self,
        v: V,
        elixir_struct: Option<&'static str>,
    ) -> Result<V::Value, DecodeError> {
        let offset = self.r.pos;
        let tag = self.r.u8()?;
        self.r.spend(1)?;
        if tag != MAP_EXT {
            return Err(self.unexpected("a map", tag, offset));
        }
        let count_at = self.r.pos;
        let n = self.r.u32()? as usize;
        self.r.check_count(n, 2, count_at)?;
        self.r.enter()?;
        let mut access = Entries {
            de: self,
            left: n,
            elixir_struct,
        };
        let value = v.visit_map(&mut access)?;
        let left = access.left;
        // Entries the visitor did not ask for still have to be read (and checked).
        for _ in 0..left * 2 {
            self.r.skip_term()?;
        }
        self.r.leave();
        Ok(value)
    }
}

struct Elements<'a, 'de> {
    de: &'a mut Deserializer<'de>,
    left: usize,
}

impl<'de> de::SeqAccess<'de> for Elements<'_, 'de> {
    type Error = DecodeError;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DecodeError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

struct Entries<'a, 'de> {
    de: &'a mut Deserializer<'de>,
    left: usize,
    elixir_struct: Option<&'static str>,
}

impl<'de> de::MapAccess<'de> for Entries<'_, 'de> {
    type Error = DecodeError;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DecodeError> {
        loop {
            if self.left == 0 {
                return Ok(None);
            }
            self.left -= 1;
            if let Some(name) = self.elixir_struct {
                if self.de.at_struct_key() {
                    self.de.atom_if()?;
                    let at = self.de.r.pos;
                    match self.de.atom_if()? {
                        Some(module) if module == name => continue,
                        _ => {
                            return Err(DecodeError::Message(format!(
                                "expected struct {name} at byte {at}"
                            )));
                        }
                    }
                }
            }
            return seed.deserialize(&mut *self.de).map(Some);
        }
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, DecodeError> {
        seed.deserialize(&mut *self.de)
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

struct Variant<'a, 'de> {
    de: &'a mut Deserializer<'de>,
    /// Elements of the tuple after the tag; 0 for a bare atom.
    rest: usize,
}

impl<'de> de::EnumAccess<'de> for Variant<'_, 'de> {
    type Error = DecodeError;
    type Variant = Self;
    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Self), DecodeError> {
        let v = seed.deserialize(&mut *self.de)?;
        Ok((v, self))
    }
}

impl<'de> de::VariantAccess<'de> for Variant<'_, 'de> {
    type Error = DecodeError;
    fn unit_variant(self) -> Result<(), DecodeError> {
        if self.rest != 0 {
            return Err(DecodeError::Message(
                "expected a bare atom for a unit variant".into(),
            ));
        }
        Ok(())
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, DecodeError> {
        if self.rest != 1 {
            return Err(DecodeError::Message("expected {variant, Value}".into()));
        }
        seed.deserialize(&mut *self.de)
    }
    fn tuple_variant<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        if self.rest != len {
            return Err(DecodeError::Message(format!(
                "expected a tuple variant of {len} fields"
            )));
        }
        let mut access = Elements {
            de: self.de,
            left: len,
        };
        let v = visitor.visit_seq(&mut access)?;
        if access.left != 0 {
            return Err(DecodeError::Message(
                "tuple variant fields left unread".into(),
            ));
        }
        Ok(v)
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        if self.rest != 1 {
            return Err(DecodeError::Message("expected {variant, #{...}}".into()));
        }
        self.de.map(visitor, None)
    }
}

impl<'de> de::Deserializer<'de> for &mut Deserializer<'de> {
    type Error = DecodeError;

    fn is_human_readable(&self) -> bool {
        false
    }

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DecodeError> {
        let offset = self.r.pos;
        let tag = self.r.peek()?;
        match tag {
            SMALL_INTEGER_EXT | INTEGER_EXT | SMALL_BIG_EXT | LARGE_BIG_EXT => {
                self.r.pos += 1;
                self.r.spend(1)?;
                self.integer(tag, v)
            }
            NEW_FLOAT_EXT | FLOAT_EXT => {
                self.r.pos += 1;
                self.r.spend(1)?;
                let f = if tag == NEW_FLOAT_EXT {
                    self.r.new_float_body(offset)?
                } else {
                    self.r.old_float_body(offset)?
                };
                v.visit_f64(f)
            }
            ATOM_EXT | ATOM_UTF8_EXT | SMALL_ATOM_EXT | SMALL_ATOM_UTF8_EXT => {
                let name = self.atom_if()?.unwrap_or(Cow::Borrowed(""));
                match &*name {
                    "true" => v.visit_bool(true),
                    "false" => v.visit_bool(false),
                    "nil" => v.visit_unit(),
                    _ => Deserializer::visit_atom(name, v),
                }
            }
            BINARY_EXT => {
                let bytes = self.binary()?.unwrap_or(&[]);
                match std::str::from_utf8(bytes) {
                    Ok(s) => v.visit_borrowed_str(s),
                    Err(_) => v.visit_borrowed_bytes(bytes),
                }
            }
            NIL_EXT | STRING_EXT | LIST_EXT | SMALL_TUPLE_EXT | LARGE_TUPLE_EXT => self.seq(v),
            MAP_EXT => self.map(v, None),
            _ => {
                // Validate it (limits, structure) to report the right error first.
                self.r.skip_term()?;
                Err(self.unexpected("a value with a serde form (use TermValue)", tag, offset))
            }
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DecodeError> {
        let offset = self.r.pos;
        let tag = self.r.peek()?;
        match self.atom_if()?.as_deref() {
            Some("true") => v.visit_bool(true),
            Some("false") => v.visit_bool(false),
            _ => Err(self.unexpected("the atom true or false", tag, offset)),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DecodeError> {
        let offset = self.r.pos;
        let tag = self.r.peek()?;
        if let Some(bytes) = self.binary()? {
            return match std::str::from_utf8(bytes) {
                Ok(s) => v.visit_borrowed_str(s),
                Err(_) => Err(DecodeError::Unexpected {
                    expected: "a UTF-8 binary",
                    found: "non-UTF-8 binary",
                    offset,
                }),
            };
        }
        match self.atom_if()? {
            Some(name) => Deserializer::visit_atom(name, v),
            None => Err(self.unexpected("a string (binary or atom)", tag, offset)),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DecodeError> {
        self.deserialize_str(v)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DecodeError> {
        let offset = self.r.pos;
        let tag = self.r.peek()?;
        if let Some(bytes) = self.binary()? {
            return v.visit_borrowed_bytes(bytes);
        }
        if tag == STRING_EXT {
            self.r.pos += 1;
            let n = self.r.u16()? as usize;
            self.r.spend(1 + n)?;
            return v.visit_borrowed_bytes(self.r.take(n)?);
        }
        if tag == NIL_EXT {
            self.r.pos += 1;
            self.r.spend(1)?;
            return v.visit_borrowed_bytes(&[]);
        }
        Err(self.unexpected("a binary", tag, offset))
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DecodeError> {
        self.deserialize_bytes(v)
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DecodeError> {
        let save = (self.r.pos, self.r.elements_left);
        if let Some(name) = self.atom_if()? {
            if name == "nil" {
                return v.visit_none();
            }
        }
        self.r.pos = save.0;
        self.r.elements_left = save.1;
        v.visit_some(self)
    }

    fn deserialize_unit<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DecodeError> {
        let offset = self.r.pos;
        let tag = self.r.peek()?;
        match self.atom_if()?.as_deref() {
            Some("nil") => v.visit_unit(),
            _ => Err(self.unexpected("the atom nil", tag, offset)),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, DecodeError> {
        self.deserialize_unit(v)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        v: V,
    ) -> Result<V::Value, DecodeError> {
        if name == RAW_NAME {
            let slice = self.r.skip_term()?;
            return v.visit_borrowed_bytes(slice);
        }
        if name == TERM_NAME {
            let term = self.r.term()?;
            HANDOFF.with(|h| h.set(Some(term)));
            return v.visit_unit();
        }
        if name == ATOM_NAME {
            let offset = self.r.pos;
            let tag = self.r.peek()?;
            return match self.atom_if()? {
                Some(n) => Deserializer::visit_atom(n, v),
                None => Err(self.unexpected("an atom", tag, offset)),
            };
        }
        v.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DecodeError> {
        self.seq(v)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        v: V,
    ) -> Result<V::Value, DecodeError> {
        self.seq(v)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        v: V,
    ) -> Result<V::Value, DecodeError> {
        self.seq(v)
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DecodeError> {
        self.map(v, None)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        _fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DecodeError> {
        let elixir = if name.starts_with("Elixir.") {
            Some(name)
        } else {
            None
        };
        self.map(v, elixir)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DecodeError> {
        let offset = self.r.pos;
        let tag = self.r.peek()?;
        if is_atom_tag(tag) {
            return v.visit_enum(Variant { de: self, rest: 0 });
        }
        if tag == SMALL_TUPLE_EXT || tag == LARGE_TUPLE_EXT {
            self.r.pos += 1;
            self.r.spend(1)?;
            let count_at = self.r.pos;
            let n = if tag == SMALL_TUPLE_EXT {
                self.r.u8()? as usize
            } else {
                self.r.u32()? as usize
            };
            self.r.check_count(n, 1, count_at)?;
            if n == 0 {
                return Err(self.unexpected("{variant, ...}", tag, offset));
            }
            self.r.enter()?;
            let value = v.visit_enum(Variant {
                de: self,
                rest: n - 1,
            })?;
            self.r.leave();
            return Ok(value);
        }
        Err(self.unexpected("an atom or a tagged tuple", tag, offset))
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DecodeError> {
        self.deserialize_str(v)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DecodeError> {
        self.r.skip_term()?;
        v.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char
    }
}
