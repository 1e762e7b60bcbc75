//! serde `Serializer` writing external term format directly.
//!
//! The mapping (the same as [`de`](crate::de) reads):
//!
//! | Rust (serde data model) | term |
//! |---|---|
//! | `bool` | the atoms `true` / `false` |
//! | integers | `SMALL_INTEGER_EXT` / `INTEGER_EXT` / `SMALL_BIG_EXT` |
//! | `f32`, `f64` | `NEW_FLOAT_EXT` (NaN and infinities are an error) |
//! | `str`, `char` | a UTF-8 binary (an Elixir string) |
//! | bytes (`serde_bytes`, [`raw::Bytes`](crate::raw::Bytes)) | a binary |
//! | `None`, `()`, unit structs | the atom `nil` |
//! | `Some(v)` | `v` |
//! | sequences | a proper list |
//! | tuples, tuple structs | a tuple |
//! | maps | a map (keys serialized the same way: `String` keys are binaries) |
//! | structs | a map with atom keys; an Elixir struct when the serde name starts with `Elixir.` |
//! | unit variants | an atom (use `#[serde(rename_all = "snake_case")]`) |
//! | newtype / tuple / struct variants | `{variant, V}` / `{variant, A, B}` / `{variant, #{...}}` |
//! | [`raw::Atom`](crate::raw::Atom) | an atom |
//! | [`raw::RawTerm`](crate::raw::RawTerm), [`raw::TermValue`](crate::raw::TermValue) | the term itself |
//!
//! An Elixir struct: `#[serde(rename = "Elixir.ExESDB.Schema.NewEvent")]` on a Rust
//! struct makes it `#{'__struct__' => 'Elixir.ExESDB.Schema.NewEvent', ...}`; the
//! deserializer checks and skips the `'__struct__'` key for such structs. Declare the
//! fields in alphabetical order to get the bytes OTP writes for small maps.

use serde::ser::{self, Serialize};

use crate::encode::{self, AtomEncoding};
use crate::error::EncodeError;
use crate::raw::{ATOM_NAME, RAW_NAME};
use crate::tag::*;

/// Encodes a value (with the version byte).
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(128);
    to_vec_into(value, &mut out)?;
    Ok(out)
}

/// Appends the encoding of a value (with the version byte) to `out`.
pub fn to_vec_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    out.push(VERSION);
    value.serialize(&mut Serializer::new(out))
}

/// Writes values as terms (no version byte: [`to_vec`] adds it) into a `Vec<u8>`.
pub struct Serializer<'o> {
    out: &'o mut Vec<u8>,
    atoms: AtomEncoding,
}

impl<'o> Serializer<'o> {
    /// A serializer appending to `out`, atoms as UTF-8.
    pub fn new(out: &'o mut Vec<u8>) -> Self {
        Serializer {
            out,
            atoms: AtomEncoding::Utf8,
        }
    }

    /// A serializer with a choice of atom encoding.
    pub fn with_atoms(out: &'o mut Vec<u8>, atoms: AtomEncoding) -> Self {
        Serializer { out, atoms }
    }

    fn atom(&mut self, name: &str) -> Result<(), EncodeError> {
        if name.len() > 255 && name.chars().count() > 255 {
            return Err(EncodeError::AtomTooLong(name.chars().count()));
        }
        encode::write_atom(self.out, name, self.atoms);
        Ok(())
    }

    fn counted(&mut self, tag: u8) -> Compound<'_, 'o> {
        self.out.push(tag);
        let at = self.out.len();
        self.out.extend_from_slice(&[0; 4]);
        Compound {
            ser: self,
            count_at: at,
            count: 0,
            kind: Kind::Map,
        }
    }
}

#[derive(PartialEq, Clone, Copy)]
enum Kind {
    /// A list whose length is patched in at the end.
    List,
    /// A map whose entry count is patched in at the end.
    Map,
    /// A tuple: the header was written with the exact length.
    Tuple,
}

/// State of a list, tuple or map being written.
#[doc(hidden)]
pub struct Compound<'s, 'o> {
    ser: &'s mut Serializer<'o>,
    count_at: usize,
    count: u32,
    kind: Kind,
}

impl Compound<'_, '_> {
    fn patch(&mut self) {
        let c = self.count.to_be_bytes();
        self.ser.out[self.count_at..self.count_at + 4].copy_from_slice(&c);
    }

    fn finish(mut self) -> Result<(), EncodeError> {
        match self.kind {
            Kind::Tuple => {}
            Kind::Map => self.patch(),
            Kind::List => {
                if self.count == 0 {
                    // `[]` is NIL_EXT alone: drop the LIST_EXT header.
                    self.ser.out.truncate(self.count_at - 1);
                } else {
                    self.patch();
                }
                self.ser.out.push(NIL_EXT);
            }
        }
        Ok(())
    }
}

impl<'s, 'o> ser::Serializer for &'s mut Serializer<'o> {
    type Ok = ();
    type Error = EncodeError;
    type SerializeSeq = Compound<'s, 'o>;
    type SerializeTuple = Compound<'s, 'o>;
    type SerializeTupleStruct = Compound<'s, 'o>;
    type SerializeTupleVariant = Compound<'s, 'o>;
    type SerializeMap = Compound<'s, 'o>;
    type SerializeStruct = Compound<'s, 'o>;
    type SerializeStructVariant = Compound<'s, 'o>;

    fn is_human_readable(&self) -> bool {
        false
    }

    fn serialize_bool(self, v: bool) -> Result<(), EncodeError> {
        self.atom(if v { "true" } else { "false" })
    }
    fn serialize_i8(self, v: i8) -> Result<(), EncodeError> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_i16(self, v: i16) -> Result<(), EncodeError> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_i32(self, v: i32) -> Result<(), EncodeError> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_i64(self, v: i64) -> Result<(), EncodeError> {
        encode::write_i64(self.out, v);
        Ok(())
    }
    fn serialize_i128(self, v: i128) -> Result<(), EncodeError> {
        encode::write_i128(self.out, v);
        Ok(())
    }
    fn serialize_u8(self, v: u8) -> Result<(), EncodeError> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_u16(self, v: u16) -> Result<(), EncodeError> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_u32(self, v: u32) -> Result<(), EncodeError> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_u64(self, v: u64) -> Result<(), EncodeError> {
        encode::write_u64(self.out, v);
        Ok(())
    }
    fn serialize_u128(self, v: u128) -> Result<(), EncodeError> {
        match i128::try_from(v) {
            Ok(v) => encode::write_i128(self.out, v),
            Err(_) => encode::write_big_parts(self.out, false, &v.to_le_bytes()),
        }
        Ok(())
    }
    fn serialize_f32(self, v: f32) -> Result<(), EncodeError> {
        self.serialize_f64(f64::from(v))
    }
    fn serialize_f64(self, v: f64) -> Result<(), EncodeError> {
        if !v.is_finite() {
            return Err(EncodeError::NonFiniteFloat(v));
        }
        encode::write_f64(self.out, v);
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result<(), EncodeError> {
        let mut buf = [0u8; 4];
        self.serialize_str(v.encode_utf8(&mut buf))
    }
    fn serialize_str(self, v: &str) -> Result<(), EncodeError> {
        encode::write_binary(self.out, v.as_bytes());
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), EncodeError> {
        if v.len() > u32::MAX as usize {
            return Err(EncodeError::TooLong("binary", v.len()));
        }
        encode::write_binary(self.out, v);
        Ok(())
    }
    fn serialize_none(self) -> Result<(), EncodeError> {
        self.atom("nil")
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), EncodeError> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), EncodeError> {
        self.atom("nil")
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), EncodeError> {
        self.atom("nil")
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), EncodeError> {
        self.atom(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        if name == RAW_NAME {
            return value.serialize(RawCapture { out: self.out });
        }
        if name == ATOM_NAME {
            return value.serialize(AtomCapture { ser: self });
        }
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        encode::write_tuple_header(self.out, 2);
        self.atom(variant)?;
        value.serialize(self)
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Compound<'s, 'o>, EncodeError> {
        let _ = len;
        let mut c = self.counted(LIST_EXT);
        c.kind = Kind::List;
        Ok(c)
    }
    fn serialize_tuple(self, len: usize) -> Result<Compound<'s, 'o>, EncodeError> {
        encode::write_tuple_header(self.out, len);
        Ok(Compound {
            ser: self,
            count_at: 0,
            count: 0,
            kind: Kind::Tuple,
        })
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Compound<'s, 'o>, EncodeError> {
        self.serialize_tuple(len)
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Compound<'s, 'o>, EncodeError> {
        encode::write_tuple_header(self.out, len + 1);
        self.atom(variant)?;
        Ok(Compound {
            ser: self,
            count_at: 0,
            count: 0,
            kind: Kind::Tuple,
        })
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Compound<'s, 'o>, EncodeError> {
        Ok(self.counted(MAP_EXT))
    }
    fn serialize_struct(
        self,
        name: &'static str,
        _len: usize,
    ) -> Result<Compound<'s, 'o>, EncodeError> {
        let mut c = self.counted(MAP_EXT);
        if name.starts_with("Elixir.") {
            c.ser.atom("__struct__")?;
            c.ser.atom(name)?;
            c.count = 1;
        }
        Ok(c)
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'s, 'o>, EncodeError> {
        encode::write_tuple_header(self.out, 2);
        self.atom(variant)?;
        Ok(self.counted(MAP_EXT))
    }
}

impl ser::SerializeSeq for Compound<'_, '_> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        self.count += 1;
        value.serialize(&mut *self.ser)
    }
    fn end(self) -> Result<(), EncodeError> {
        self.finish()
    }
}

impl ser::SerializeTuple for Compound<'_, '_> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        value.serialize(&mut *self.ser)
    }
    fn end(self) -> Result<(), EncodeError> {
        self.finish()
    }
}

impl ser::SerializeTupleStruct for Compound<'_, '_> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        value.serialize(&mut *self.ser)
    }
    fn end(self) -> Result<(), EncodeError> {
        self.finish()
    }
}

impl ser::SerializeTupleVariant for Compound<'_, '_> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        value.serialize(&mut *self.ser)
    }
    fn end(self) -> Result<(), EncodeError> {
        self.finish()
    }
}

impl ser::SerializeMap for Compound<'_, '_> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), EncodeError> {
        self.count += 1;
        key.serialize(&mut *self.ser)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        value.serialize(&mut *self.ser)
    }
    fn end(self) -> Result<(), EncodeError> {
        self.finish()
    }
}

impl ser::SerializeStruct for Compound<'_, '_> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        self.count += 1;
        self.ser.atom(key)?;
        value.serialize(&mut *self.ser)
    }
    fn end(self) -> Result<(), EncodeError> {
        self.finish()
    }
}

impl ser::SerializeStructVariant for Compound<'_, '_> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        self.count += 1;
        self.ser.atom(key)?;
        value.serialize(&mut *self.ser)
    }
    fn end(self) -> Result<(), EncodeError> {
        self.finish()
    }
}

/// Takes the bytes of a [`RawTerm`](crate::raw::RawTerm) and writes them as they are.
struct RawCapture<'a> {
    out: &'a mut Vec<u8>,
}

/// Takes the name of an [`Atom`](crate::raw::Atom) and writes it as an atom.
struct AtomCapture<'s, 'o> {
    ser: &'s mut Serializer<'o>,
}

macro_rules! only {
    ($what:literal; $($f:ident($($t:ty),*)),* $(,)?) => {$(
        fn $f(self, $(_: $t),*) -> Result<(), EncodeError> {
            Err(EncodeError::Unsupported($what))
        }
    )*};
}

macro_rules! refuse_compounds {
    ($what:literal) => {
        type SerializeSeq = ser::Impossible<(), EncodeError>;
        type SerializeTuple = ser::Impossible<(), EncodeError>;
        type SerializeTupleStruct = ser::Impossible<(), EncodeError>;
        type SerializeTupleVariant = ser::Impossible<(), EncodeError>;
        type SerializeMap = ser::Impossible<(), EncodeError>;
        type SerializeStruct = ser::Impossible<(), EncodeError>;
        type SerializeStructVariant = ser::Impossible<(), EncodeError>;
        only!($what; serialize_bool(bool), serialize_i8(i8), serialize_i16(i16), serialize_i32(i32),
            serialize_i64(i64), serialize_u8(u8), serialize_u16(u16), serialize_u32(u32),
            serialize_u64(u64), serialize_f32(f32), serialize_f64(f64), serialize_char(char),
            serialize_none(), serialize_unit(), serialize_unit_struct(&'static str),
            serialize_unit_variant(&'static str, u32, &'static str));
        fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<(), EncodeError> {
            Err(EncodeError::Unsupported($what))
        }
        fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, _: &T) -> Result<(), EncodeError> {
            Err(EncodeError::Unsupported($what))
        }
        fn serialize_newtype_variant<T: Serialize + ?Sized>(self, _: &'static str, _: u32, _: &'static str, _: &T) -> Result<(), EncodeError> {
            Err(EncodeError::Unsupported($what))
        }
        fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, EncodeError> {
            Err(EncodeError::Unsupported($what))
        }
        fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, EncodeError> {
            Err(EncodeError::Unsupported($what))
        }
        fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeTupleStruct, EncodeError> {
            Err(EncodeError::Unsupported($what))
        }
        fn serialize_tuple_variant(self, _: &'static str, _: u32, _: &'static str, _: usize) -> Result<Self::SerializeTupleVariant, EncodeError> {
            Err(EncodeError::Unsupported($what))
        }
        fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, EncodeError> {
            Err(EncodeError::Unsupported($what))
        }
        fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, EncodeError> {
            Err(EncodeError::Unsupported($what))
        }
        fn serialize_struct_variant(self, _: &'static str, _: u32, _: &'static str, _: usize) -> Result<Self::SerializeStructVariant, EncodeError> {
            Err(EncodeError::Unsupported($what))
        }
    };
}

impl ser::Serializer for RawCapture<'_> {
    type Ok = ();
    type Error = EncodeError;
    refuse_compounds!("a raw term must be given as bytes");
    only!("a raw term must be given as bytes"; serialize_str(&str));
    fn serialize_bytes(self, v: &[u8]) -> Result<(), EncodeError> {
        self.out.extend_from_slice(v);
        Ok(())
    }
}

impl ser::Serializer for AtomCapture<'_, '_> {
    type Ok = ();
    type Error = EncodeError;
    refuse_compounds!("an atom must be given as a string");
    only!("an atom must be given as a string"; serialize_bytes(&[u8]));
    fn serialize_str(self, v: &str) -> Result<(), EncodeError> {
        self.ser.atom(v)
    }
}
