//! Erlang external term format (ETF) for exesdb-gater.
//!
//! Placeholder API contract (the real implementation replaces the bodies, keeps the names):
//! [`decode`], [`decode_prefix`] and [`encode`] over [`Term`] (eetf's tree), with
//! [`DecodeLimits`] for untrusted bytes.

pub use eetf;
pub use eetf::Term;

/// Bounds applied while decoding untrusted bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Deepest nesting of containers.
    pub max_depth: usize,
    /// Most elements (list items, tuple elements, map entries) in the whole term.
    pub max_elements: usize,
    /// Most input bytes (after decompression).
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

/// Why bytes could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The bytes are not valid external term format.
    #[error("invalid external term format: {0}")]
    Invalid(String),
}

/// Decodes one complete term (starting with the version byte 131); trailing bytes are an error.
pub fn decode(bytes: &[u8], limits: &DecodeLimits) -> Result<Term, DecodeError> {
    let (term, used) = decode_prefix(bytes, limits)?;
    if used != bytes.len() {
        return Err(DecodeError::Invalid(format!(
            "{} trailing bytes",
            bytes.len() - used
        )));
    }
    Ok(term)
}

/// Decodes one term at the start of `bytes` and returns it with the number of bytes it used.
pub fn decode_prefix(bytes: &[u8], _limits: &DecodeLimits) -> Result<(Term, usize), DecodeError> {
    let mut cursor = std::io::Cursor::new(bytes);
    let term = Term::decode(&mut cursor).map_err(|e| DecodeError::Invalid(e.to_string()))?;
    Ok((term, cursor.position() as usize))
}

/// Encodes a term with the version byte 131.
pub fn encode(term: &Term) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(term, &mut out);
    out
}

/// Appends the encoding of a term (with the version byte) to `out`.
pub fn encode_into(term: &Term, out: &mut Vec<u8>) {
    // Writing to a Vec cannot fail for I/O reasons.
    let _ = term.encode(out);
}
