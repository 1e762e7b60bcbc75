//! Erlang's external term format (ETF) for exesdb-gater.
//!
//! This crate owns the bytes-to-values boundary of the gateway: every term that comes
//! from an ExESDB node or goes to one passes through it.
//!
//! ```text
//!   bytes from the network ──► decode (bounded by DecodeLimits) ──► Term (eetf's tree)
//!          │                                                         │ build / matching / elixir
//!          └──► de::from_slice (serde, borrows) ──► typed records    │ json (HTTP API)
//!   bytes to the network ◄── encode / ser::to_vec ◄── Term or any Serialize value
//! ```
//!
//! What it owns:
//! - a bounded decoder ([`decode`], [`decode_prefix`]) for untrusted bytes: limits on
//!   depth, elements, size, atoms and big integers ([`DecodeLimits`]), compressed terms,
//!   every tag OTP 25–27 writes, typed errors ([`DecodeError`]), no panics;
//! - an encoder ([`encode`], [`encode_with`]) that writes what OTP writes (maps in key
//!   order, strings as `STRING_EXT`, integers in the smallest form);
//! - builders ([`build`], [`tuple!`], [`list!`], [`map!`]) and matchers ([`TermExt`]) so
//!   the layers above read like the Erlang they mirror; Erlang's term order ([`order`]);
//! - Elixir conventions ([`elixir`]): `nil`/booleans, structs, keyword lists, `DateTime`;
//! - serde straight over the bytes ([`ser`], [`de`]) and to/from [`Term`] ([`to_term`],
//!   [`from_term`]), with wrappers for what serde cannot say ([`raw`]);
//! - the JSON mapping of the HTTP API ([`json`], see `docs/json-mapping.md`);
//! - typed ExESDB records ([`records`]).
//!
//! What it leaves to others: sockets, framing and the distribution protocol
//! (gater-pool), the meaning of requests and replies (gater-api), HTTP (gater-http).
//! It never does I/O.

#![forbid(unsafe_code)]

pub mod build;
pub mod de;
mod decode;
pub mod elixir;
mod encode;
mod error;
pub mod json;
mod matching;
pub mod order;
pub mod raw;
pub mod records;
pub mod ser;
mod tag;

pub use eetf;
pub use eetf::Term;

pub use encode::{AtomEncoding, EncodeOptions};
pub use error::{DecodeError, EncodeError};
pub use matching::TermExt;

/// Bounds applied while decoding untrusted bytes.
///
/// The defaults admit every reply ExESDB sends in practice while keeping the memory a
/// hostile term can claim to a small multiple of its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Deepest nesting of containers (lists, tuples, maps, fun environments). Capped
    /// at 256 whatever the value: decoding recurses once per level, and 256 levels fit
    /// a 2 MiB thread stack (a tokio worker's) even in debug builds.
    pub max_depth: usize,
    /// Most terms (every list item, tuple element, map key and value, string byte) in
    /// the whole term.
    pub max_elements: usize,
    /// Most bytes of one term (after decompression; also the cap on the declared size
    /// of a compressed term).
    pub max_bytes: usize,
    /// Longest atom, in bytes.
    pub max_atom_len: usize,
    /// Largest big integer, in bytes of magnitude.
    pub max_bigint_bytes: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_depth: 128,
            max_elements: 1 << 20,
            max_bytes: 64 << 20,
            max_atom_len: 255 * 4,
            max_bigint_bytes: 1024,
        }
    }
}

/// Decodes one complete term (starting with the version byte 131); trailing bytes are
/// an error ([`DecodeError::TrailingBytes`]).
pub fn decode(bytes: &[u8], limits: &DecodeLimits) -> Result<Term, DecodeError> {
    let (term, used) = decode_prefix(bytes, limits)?;
    if used != bytes.len() {
        return Err(DecodeError::TrailingBytes {
            count: bytes.len() - used,
        });
    }
    Ok(term)
}

/// Decodes one term (version byte 131 first) at the start of `bytes` and returns it
/// with the number of bytes it used; what follows is left alone (the distribution
/// layer reads a control message and a payload from one frame this way).
pub fn decode_prefix(bytes: &[u8], limits: &DecodeLimits) -> Result<(Term, usize), DecodeError> {
    decode::decode_prefix(bytes, limits)
}

/// Encodes a term with the version byte 131 (atoms as UTF-8, see [`AtomEncoding`]).
///
/// Encoding cannot fail: a term Erlang cannot represent (a non-finite float, an atom
/// over 255 characters) is written as the format allows and refused by the reader;
/// use [`try_encode`] to catch those first.
pub fn encode(term: &Term) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(term, &mut out);
    out
}

/// Appends the encoding of a term (with the version byte) to `out`.
pub fn encode_into(term: &Term, out: &mut Vec<u8>) {
    encode_with(term, &EncodeOptions::default(), out);
}

/// Appends the encoding of a term (with the version byte) to `out`, with options.
pub fn encode_with(term: &Term, options: &EncodeOptions, out: &mut Vec<u8>) {
    out.push(tag::VERSION);
    encode::write_term(out, term, options.atoms);
}

/// Encodes a term after checking that Erlang can represent it.
pub fn try_encode(term: &Term) -> Result<Vec<u8>, EncodeError> {
    encode::check(term)?;
    Ok(encode(term))
}

/// Encodes a term compressed with zlib (tag 80), as `term_to_binary(T, [{compressed,
/// Level}])` does; `level` is 0–9.
pub fn encode_compressed(term: &Term, level: u8) -> Vec<u8> {
    encode::compress(&encode(term), level)
}

/// Converts any `Serialize` value to a [`Term`] (through its encoding).
pub fn to_term<T: serde::Serialize + ?Sized>(value: &T) -> Result<Term, EncodeError> {
    let bytes = ser::to_vec(value)?;
    decode(
        &bytes,
        &DecodeLimits {
            max_depth: decode::HARD_MAX_DEPTH,
            max_elements: usize::MAX,
            max_bytes: usize::MAX,
            max_atom_len: usize::MAX,
            max_bigint_bytes: usize::MAX,
        },
    )
    .map_err(|e| EncodeError::Message(e.to_string()))
}

/// Converts a [`Term`] to any `DeserializeOwned` value (through its encoding).
pub fn from_term<T: serde::de::DeserializeOwned>(term: &Term) -> Result<T, DecodeError> {
    let bytes = encode(term);
    de::from_slice_with(
        &bytes,
        &DecodeLimits {
            max_depth: decode::HARD_MAX_DEPTH,
            max_elements: usize::MAX,
            max_bytes: usize::MAX,
            max_atom_len: usize::MAX,
            max_bigint_bytes: usize::MAX,
        },
    )
}
