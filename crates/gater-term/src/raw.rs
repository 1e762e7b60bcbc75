//! Wrappers for what serde's data model cannot say: atoms, terms of no fixed type, and
//! terms kept as their bytes.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, Visitor};
use serde::ser::{Serialize, Serializer};

use crate::{DecodeError, DecodeLimits, Term};

pub(crate) const RAW_NAME: &str = "$gater_term::RawTerm";
pub(crate) const ATOM_NAME: &str = "$gater_term::Atom";
pub(crate) const TERM_NAME: &str = "$gater_term::Term";

thread_local! {
    /// Hands a term built by [`crate::de::Deserializer`] to [`TermValue`]'s visitor,
    /// which serde's data model has no way to carry: one walk over the bytes instead
    /// of a skip and a second decode.
    pub(crate) static HANDOFF: std::cell::Cell<Option<Term>> = const { std::cell::Cell::new(None) };
}

/// Bytes serialized as a binary (serde serializes `Vec<u8>` as a list otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bytes<'a>(pub &'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Bytes<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = &'de [u8];
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a binary")
            }
            fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Self::Value, E> {
                Ok(v)
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(v.as_bytes())
            }
        }
        d.deserialize_bytes(V).map(Bytes)
    }
}

/// An owned binary (serialized as a binary, not as a list of integers).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ByteBuf(pub Vec<u8>);

impl Serialize for ByteBuf {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a binary")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
                Ok(v.to_vec())
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(v.as_bytes().to_vec())
            }
        }
        d.deserialize_byte_buf(V).map(ByteBuf)
    }
}

/// An atom with a static name (no allocation), for fixed atoms in serialized types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StaticAtom(pub &'static str);

impl Serialize for StaticAtom {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_newtype_struct(ATOM_NAME, self.0)
    }
}

/// An atom: a string that serializes as an atom, and deserializes from an atom (or,
/// through other formats, from a string).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Atom(pub String);

impl From<&str> for Atom {
    fn from(s: &str) -> Self {
        Atom(s.to_owned())
    }
}

impl Atom {
    /// The atom's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Serialize for Atom {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_newtype_struct(ATOM_NAME, self.0.as_str())
    }
}

impl<'de> Deserialize<'de> for Atom {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = String;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an atom")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(v.to_owned())
            }
            fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
                String::deserialize(d)
            }
        }
        d.deserialize_newtype_struct(ATOM_NAME, V).map(Atom)
    }
}

/// A term kept as its encoded bytes (without the version byte), borrowed from the
/// input: decoding skips over it (validating it within the limits) without building
/// it; serializing writes the bytes back as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawTerm<'a>(pub &'a [u8]);

impl RawTerm<'_> {
    /// Decodes the term (the bytes were validated when they were read, within the
    /// limits in force then).
    pub fn to_term(&self) -> Result<Term, DecodeError> {
        decode_body(self.0)
    }

    /// The term with its version byte, as [`crate::decode`] takes it.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(1 + self.0.len());
        v.push(131);
        v.extend_from_slice(self.0);
        v
    }
}

fn decode_body(body: &[u8]) -> Result<Term, DecodeError> {
    let limits = DecodeLimits {
        max_bytes: usize::MAX - 1,
        max_elements: usize::MAX,
        ..DecodeLimits::default()
    };
    let mut r = crate::decode::Reader::new(body, 0, &limits);
    let t = r.term()?;
    if r.pos != body.len() {
        return Err(DecodeError::TrailingBytes {
            count: body.len() - r.pos,
        });
    }
    Ok(t)
}

impl Serialize for RawTerm<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            let t = self.to_term().map_err(serde::ser::Error::custom)?;
            return crate::json::term_to_json(&t).serialize(s);
        }
        s.serialize_newtype_struct(RAW_NAME, &Bytes(self.0))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RawTerm<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = &'de [u8];
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a term (RawTerm only reads external term format)")
            }
            fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Self::Value, E> {
                Ok(v)
            }
        }
        d.deserialize_newtype_struct(RAW_NAME, V).map(RawTerm)
    }
}

/// Any term inside a typed value (a field of no fixed type, such as an event's
/// `data`). Over external term format it is the term itself; over human-readable
/// formats (JSON) it uses the [JSON mapping](crate::json).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TermValue(pub Term);

impl From<Term> for TermValue {
    fn from(t: Term) -> Self {
        TermValue(t)
    }
}

impl Serialize for TermValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            return crate::json::term_to_json(&self.0).serialize(s);
        }
        // A scratch buffer per thread: no allocation per value once it has grown.
        thread_local! {
            static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut body) => {
                body.clear();
                crate::encode::write_term(&mut body, &self.0, crate::AtomEncoding::Utf8);
                s.serialize_newtype_struct(RAW_NAME, &Bytes(&body))
            }
            // Re-entered (a TermValue serialized while one is being written): allocate.
            Err(_) => {
                let mut body = Vec::new();
                crate::encode::write_term(&mut body, &self.0, crate::AtomEncoding::Utf8);
                s.serialize_newtype_struct(RAW_NAME, &Bytes(&body))
            }
        })
    }
}

impl<'de> Deserialize<'de> for TermValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let v = serde_json::Value::deserialize(d)?;
            return Ok(TermValue(crate::json::json_to_term(&v)));
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Term;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a term")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Term, E> {
                decode_body(v).map_err(E::custom)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Term, E> {
                HANDOFF
                    .with(std::cell::Cell::take)
                    .ok_or_else(|| E::custom("no term handed over"))
            }
            fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Term, D::Error> {
                let b = ByteBuf::deserialize(d)?;
                decode_body(&b.0).map_err(de::Error::custom)
            }
        }
        d.deserialize_newtype_struct(TERM_NAME, V).map(TermValue)
    }
}
