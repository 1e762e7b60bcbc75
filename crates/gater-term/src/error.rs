//! The crate's error types.

use std::fmt::Display;

/// Why bytes could not be decoded (into a [`Term`](crate::Term) or a typed value).
///
/// Every variant names its cause. Unless said otherwise, the likely causes are a buggy
/// peer, bytes cut short by a broken connection, or an attack; the limits variants
/// ([`TooDeep`](Self::TooDeep), [`TooManyElements`](Self::TooManyElements),
/// [`TooLarge`](Self::TooLarge), [`AtomTooLong`](Self::AtomTooLong),
/// [`BigIntTooLarge`](Self::BigIntTooLarge)) can also mean that a legitimate term is
/// bigger than the configured [`DecodeLimits`](crate::DecodeLimits): raise them if so.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The bytes are not valid external term format (free-form reason).
    #[error("invalid external term format: {0}")]
    Invalid(String),
    /// The first byte is not the version byte 131.
    #[error("bad version byte {found} (expected 131)")]
    BadVersion {
        /// The byte found instead.
        found: u8,
    },
    /// The bytes end in the middle of a term.
    #[error("unexpected end of input at byte {offset}")]
    UnexpectedEnd {
        /// Offset (in the possibly decompressed buffer) where more bytes were needed.
        offset: usize,
    },
    /// A tag byte that no OTP release writes.
    #[error("unknown tag {tag} at byte {offset}")]
    UnknownTag {
        /// The tag byte.
        tag: u8,
        /// Its offset.
        offset: usize,
    },
    /// A valid tag that this decoder refuses (LOCAL_EXT, atom cache references,
    /// distribution headers, the pre-OTP-23 FUN_EXT).
    #[error("unsupported term ({what}, tag {tag}) at byte {offset}")]
    Unsupported {
        /// What the tag stands for.
        what: &'static str,
        /// The tag byte.
        tag: u8,
        /// Its offset.
        offset: usize,
    },
    /// Containers nested deeper than [`DecodeLimits::max_depth`](crate::DecodeLimits).
    #[error("term nested deeper than {limit}")]
    TooDeep {
        /// The limit in force.
        limit: usize,
    },
    /// More elements than [`DecodeLimits::max_elements`](crate::DecodeLimits).
    #[error("term has more than {limit} elements")]
    TooManyElements {
        /// The limit in force.
        limit: usize,
    },
    /// The input (or its declared uncompressed size) exceeds
    /// [`DecodeLimits::max_bytes`](crate::DecodeLimits).
    #[error("term of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The size seen or declared.
        size: u64,
        /// The limit in force.
        limit: usize,
    },
    /// An atom longer than [`DecodeLimits::max_atom_len`](crate::DecodeLimits).
    #[error("atom of {len} bytes exceeds the limit of {limit} bytes")]
    AtomTooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit in force.
        limit: usize,
    },
    /// A big integer larger than [`DecodeLimits::max_bigint_bytes`](crate::DecodeLimits).
    #[error("big integer of {len} bytes exceeds the limit of {limit} bytes")]
    BigIntTooLarge {
        /// Its magnitude in bytes.
        len: usize,
        /// The limit in force.
        limit: usize,
    },
    /// A length field announces more items than the remaining bytes can hold.
    #[error("length {len} at byte {offset} exceeds the remaining input")]
    LengthExceedsInput {
        /// The declared length.
        len: u64,
        /// Offset of the length field.
        offset: usize,
    },
    /// An atom that is not valid UTF-8 (ATOM_UTF8_EXT/SMALL_ATOM_UTF8_EXT).
    #[error("atom at byte {offset} is not valid UTF-8")]
    InvalidAtom {
        /// Offset of the atom's tag.
        offset: usize,
    },
    /// A float that is not finite, or an unreadable old-style FLOAT_EXT.
    #[error("invalid float at byte {offset}")]
    InvalidFloat {
        /// Offset of the float's tag.
        offset: usize,
    },
    /// A map with the same key twice (OTP's `binary_to_term` refuses these too).
    #[error("map at byte {offset} has a duplicate key")]
    DuplicateMapKey {
        /// Offset of the map's tag.
        offset: usize,
    },
    /// A structural rule broken (bad bit count, bad fun size, a node that is not an atom ...).
    #[error("malformed {what} at byte {offset}")]
    Malformed {
        /// Which rule.
        what: &'static str,
        /// Offset of the offending term.
        offset: usize,
    },
    /// A compressed term (tag 80) whose zlib stream is broken or whose size is not the
    /// declared one.
    #[error("bad compressed term: {0}")]
    Compression(&'static str),
    /// Bytes left after a complete term where none were expected.
    #[error("{count} trailing bytes after the term")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// Typed decoding (serde): the term has another shape than the Rust type expects.
    #[error("expected {expected}, found {found} at byte {offset}")]
    Unexpected {
        /// What the Rust type wanted.
        expected: &'static str,
        /// What the bytes hold.
        found: &'static str,
        /// Offset of the term.
        offset: usize,
    },
    /// Typed decoding (serde): an integer out of the Rust type's range.
    #[error("integer out of range for {ty}")]
    IntegerOutOfRange {
        /// The Rust type.
        ty: &'static str,
    },
    /// Typed decoding (serde) or a conversion: a message from the target type.
    #[error("{0}")]
    Message(String),
}

impl serde::de::Error for DecodeError {
    fn custom<T: Display>(msg: T) -> Self {
        DecodeError::Message(msg.to_string())
    }
}

/// Why a value could not be encoded (serde and checked encoding only; encoding a
/// [`Term`](crate::Term) with [`encode`](crate::encode) cannot fail).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// NaN and infinities have no Erlang representation.
    #[error("float {0} is not finite: Erlang has no such value")]
    NonFiniteFloat(f64),
    /// Erlang atoms hold at most 255 characters.
    #[error("atom of {0} characters is longer than Erlang's 255")]
    AtomTooLong(usize),
    /// A length that does not fit the format's 32-bit length field.
    #[error("{0} of {1} items exceeds the format's 32-bit length")]
    TooLong(&'static str, usize),
    /// A map key that cannot be written as an atom where an atom is needed.
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// A message from the value's `Serialize` implementation.
    #[error("{0}")]
    Message(String),
}

impl serde::ser::Error for EncodeError {
    fn custom<T: Display>(msg: T) -> Self {
        EncodeError::Message(msg.to_string())
    }
}
