//! The bounded decoder: bytes to [`Term`], checking every length before using it.

use std::borrow::Cow;
use std::collections::HashMap;

use eetf::{
    Atom, BigInteger, Binary, BitBinary, ByteList, ExternalFun, FixInteger, Float, ImproperList,
    InternalFun, List, Map, Pid, Port, Reference, Term, Tuple,
};
use num_bigint::{BigInt, Sign};

use crate::DecodeLimits;
use crate::error::DecodeError;
use crate::tag::*;

/// Hard ceiling on nesting, whatever the limits say: decoding recurses once per level.
pub(crate) const HARD_MAX_DEPTH: usize = 256;

/// A cursor over one buffer with the budget of a [`DecodeLimits`].
pub(crate) struct Reader<'a> {
    pub(crate) buf: &'a [u8],
    pub(crate) pos: usize,
    pub(crate) limits: DecodeLimits,
    pub(crate) elements_left: usize,
    pub(crate) depth: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], pos: usize, limits: &DecodeLimits) -> Self {
        Reader {
            buf,
            pos,
            limits: *limits,
            elements_left: limits.max_elements,
            depth: 0,
        }
    }

    #[inline]
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    #[inline]
    pub(crate) fn eof(&self) -> DecodeError {
        DecodeError::UnexpectedEnd {
            offset: self.buf.len(),
        }
    }

    #[inline]
    pub(crate) fn peek(&self) -> Result<u8, DecodeError> {
        self.buf.get(self.pos).copied().ok_or_else(|| self.eof())
    }

    #[inline]
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = self.peek()?;
        self.pos += 1;
        Ok(b)
    }

    #[inline]
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(self.eof());
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    #[inline]
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    #[inline]
    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    #[inline]
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    #[inline]
    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// Reads a 32-bit count of items that take at least `min_item_bytes` each, and
    /// checks it against the remaining input and the element budget.
    #[inline]
    pub(crate) fn count32(&mut self, min_item_bytes: usize) -> Result<usize, DecodeError> {
        let offset = self.pos;
        let n = self.u32()? as usize;
        self.check_count(n, min_item_bytes, offset)?;
        Ok(n)
    }

    #[inline]
    pub(crate) fn check_count(
        &mut self,
        n: usize,
        min_item_bytes: usize,
        offset: usize,
    ) -> Result<(), DecodeError> {
        if n.saturating_mul(min_item_bytes) > self.remaining() {
            return Err(DecodeError::LengthExceedsInput {
                len: n as u64,
                offset,
            });
        }
        self.spend(n)
    }

    #[inline]
    pub(crate) fn spend(&mut self, n: usize) -> Result<(), DecodeError> {
        if n > self.elements_left {
            return Err(DecodeError::TooManyElements {
                limit: self.limits.max_elements,
            });
        }
        self.elements_left -= n;
        Ok(())
    }

    #[inline]
    pub(crate) fn enter(&mut self) -> Result<(), DecodeError> {
        self.depth += 1;
        if self.depth > self.limits.max_depth.min(HARD_MAX_DEPTH) {
            return Err(DecodeError::TooDeep {
                limit: self.limits.max_depth.min(HARD_MAX_DEPTH),
            });
        }
        Ok(())
    }

    #[inline]
    pub(crate) fn leave(&mut self) {
        self.depth -= 1;
    }

    /// Reads the body of an atom whose tag (at `offset`) was already read.
    /// Returns the name, borrowed when the bytes are already UTF-8.
    pub(crate) fn atom_body(
        &mut self,
        tag: u8,
        offset: usize,
    ) -> Result<Cow<'a, str>, DecodeError> {
        let len = match tag {
            ATOM_EXT | ATOM_UTF8_EXT => self.u16()? as usize,
            _ => self.u8()? as usize,
        };
        if len > self.limits.max_atom_len {
            return Err(DecodeError::AtomTooLong {
                len,
                limit: self.limits.max_atom_len,
            });
        }
        let bytes = self.take(len)?;
        match tag {
            ATOM_UTF8_EXT | SMALL_ATOM_UTF8_EXT => std::str::from_utf8(bytes)
                .map(Cow::Borrowed)
                .map_err(|_| DecodeError::InvalidAtom { offset }),
            _ => Ok(latin1(bytes)),
        }
    }

    /// Reads an atom (tag included), as pids, ports, references and funs need.
    pub(crate) fn atom(&mut self) -> Result<Cow<'a, str>, DecodeError> {
        let offset = self.pos;
        let tag = self.u8()?;
        match tag {
            ATOM_EXT | ATOM_UTF8_EXT | SMALL_ATOM_EXT | SMALL_ATOM_UTF8_EXT => {
                self.atom_body(tag, offset)
            }
            _ => Err(DecodeError::Malformed {
                what: "atom (expected an atom tag)",
                offset,
            }),
        }
    }

    /// The pieces of a big integer after its tag: sign and little-endian magnitude.
    pub(crate) fn big_body(&mut self, tag: u8) -> Result<(bool, &'a [u8]), DecodeError> {
        let offset = self.pos;
        let n = if tag == SMALL_BIG_EXT {
            self.u8()? as usize
        } else {
            self.u32()? as usize
        };
        if n > self.limits.max_bigint_bytes {
            return Err(DecodeError::BigIntTooLarge {
                len: n,
                limit: self.limits.max_bigint_bytes,
            });
        }
        let sign = self.u8()?;
        if sign > 1 {
            return Err(DecodeError::Malformed {
                what: "big integer sign",
                offset,
            });
        }
        Ok((sign == 1, self.take(n)?))
    }

    /// Reads an old textual FLOAT_EXT body (31 bytes).
    pub(crate) fn old_float_body(&mut self, offset: usize) -> Result<f64, DecodeError> {
        let raw = self.take(31)?;
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        let text =
            std::str::from_utf8(&raw[..end]).map_err(|_| DecodeError::InvalidFloat { offset })?;
        let v: f64 = text
            .trim()
            .parse()
            .map_err(|_| DecodeError::InvalidFloat { offset })?;
        if !v.is_finite() {
            return Err(DecodeError::InvalidFloat { offset });
        }
        Ok(v)
    }

    pub(crate) fn new_float_body(&mut self, offset: usize) -> Result<f64, DecodeError> {
        let v = f64::from_bits(self.u64()?);
        if !v.is_finite() {
            return Err(DecodeError::InvalidFloat { offset });
        }
        Ok(v)
    }

    /// Reads a BIT_BINARY_EXT body: (bytes, bits used in the last byte, 8 for a whole binary).
    pub(crate) fn bit_binary_body(&mut self, offset: usize) -> Result<(&'a [u8], u8), DecodeError> {
        let len = self.u32()? as usize;
        let bits = self.u8()?;
        let bytes = self.take(len)?;
        let ok = if len == 0 {
            bits == 0
        } else {
            (1..=8).contains(&bits)
        };
        if !ok {
            return Err(DecodeError::Malformed {
                what: "bit binary bit count",
                offset,
            });
        }
        Ok((bytes, if len == 0 { 8 } else { bits }))
    }

    /// Skips over one term, validating it like the full decoder does; returns the
    /// slice it occupied.
    pub(crate) fn skip_term(&mut self) -> Result<&'a [u8], DecodeError> {
        let start = self.pos;
        self.skip()?;
        Ok(&self.buf[start..self.pos])
    }

    /// Walks over one term under the same limits and rules as [`Reader::term`], but
    /// builds nothing (duplicate map keys are only found when the term is built).
    fn skip(&mut self) -> Result<(), DecodeError> {
        let offset = self.pos;
        let tag = self.u8()?;
        self.spend(1)?;
        match tag {
            SMALL_INTEGER_EXT => {
                self.take(1)?;
            }
            INTEGER_EXT => {
                self.take(4)?;
            }
            ATOM_UTF8_EXT | SMALL_ATOM_UTF8_EXT => {
                self.atom_body(tag, offset)?;
            }
            ATOM_EXT | SMALL_ATOM_EXT => {
                let len = if tag == ATOM_EXT {
                    self.u16()? as usize
                } else {
                    self.u8()? as usize
                };
                if len > self.limits.max_atom_len {
                    return Err(DecodeError::AtomTooLong {
                        len,
                        limit: self.limits.max_atom_len,
                    });
                }
                self.take(len)?;
            }
            BINARY_EXT => {
                let n = self.u32()? as usize;
                self.take(n)?;
            }
            NIL_EXT => {}
            STRING_EXT => {
                let n = self.u16()? as usize;
                self.take(n)?;
                self.spend(n)?;
            }
            SMALL_TUPLE_EXT | LARGE_TUPLE_EXT | MAP_EXT | LIST_EXT => {
                let count_at = self.pos;
                let n = if tag == SMALL_TUPLE_EXT {
                    self.u8()? as usize
                } else {
                    self.u32()? as usize
                };
                let per = if tag == MAP_EXT { 2 } else { 1 };
                self.check_count(n, per, count_at)?;
                self.enter()?;
                for _ in 0..n * per {
                    self.skip()?;
                }
                if tag == LIST_EXT {
                    self.skip()?;
                }
                self.leave();
            }
            _ => {
                // Rare kinds: build and drop.
                self.pos = offset;
                self.elements_left += 1;
                self.term()?;
            }
        }
        Ok(())
    }

    /// Decodes one term (no version byte) at the cursor.
    ///
    /// The common tags are handled here and containers in their own small functions,
    /// so that the stack frames of the recursion stay small.
    pub(crate) fn term(&mut self) -> Result<Term, DecodeError> {
        let offset = self.pos;
        let tag = self.u8()?;
        self.spend(1)?;
        match tag {
            SMALL_INTEGER_EXT => Ok(Term::FixInteger(FixInteger::from(self.u8()?))),
            INTEGER_EXT => Ok(Term::FixInteger(FixInteger::from(self.u32()? as i32))),
            ATOM_EXT | ATOM_UTF8_EXT | SMALL_ATOM_EXT | SMALL_ATOM_UTF8_EXT => Ok(Term::Atom(
                Atom::from(self.atom_body(tag, offset)?.into_owned()),
            )),
            BINARY_EXT => {
                let len = self.u32()? as usize;
                Ok(Term::Binary(Binary::from(self.take(len)?)))
            }
            NIL_EXT => Ok(Term::List(List::nil())),
            SMALL_TUPLE_EXT | LARGE_TUPLE_EXT => self.tuple_body(tag),
            MAP_EXT => self.map_body(offset),
            LIST_EXT => self.list(offset),
            _ => self.term_cold(tag, offset),
        }
    }

    #[inline(never)]
    fn tuple_body(&mut self, tag: u8) -> Result<Term, DecodeError> {
        let count_at = self.pos;
        let n = if tag == SMALL_TUPLE_EXT {
            self.u8()? as usize
        } else {
            self.u32()? as usize
        };
        self.check_count(n, 1, count_at)?;
        self.enter()?;
        let mut elements = Vec::with_capacity(n);
        for _ in 0..n {
            elements.push(self.term()?);
        }
        self.leave();
        Ok(Term::Tuple(Tuple { elements }))
    }

    #[inline(never)]
    fn map_body(&mut self, offset: usize) -> Result<Term, DecodeError> {
        let count_at = self.pos;
        let n = self.u32()? as usize;
        self.check_count(n, 2, count_at)?;
        self.enter()?;
        let mut map = HashMap::with_capacity(n);
        for _ in 0..n {
            let k = self.term()?;
            let v = self.term()?;
            if map.insert(k, v).is_some() {
                return Err(DecodeError::DuplicateMapKey { offset });
            }
        }
        self.leave();
        Ok(Term::Map(Map { map }))
    }

    #[inline(never)]
    fn term_cold(&mut self, tag: u8, offset: usize) -> Result<Term, DecodeError> {
        Ok(match tag {
            SMALL_INTEGER_EXT => Term::FixInteger(FixInteger::from(self.u8()?)),
            INTEGER_EXT => Term::FixInteger(FixInteger::from(self.u32()? as i32)),
            SMALL_BIG_EXT | LARGE_BIG_EXT => {
                let (neg, mag) = self.big_body(tag)?;
                let value = BigInt::from_bytes_le(if neg { Sign::Minus } else { Sign::Plus }, mag);
                match i32::try_from(&value) {
                    Ok(v) => Term::FixInteger(FixInteger::from(v)),
                    Err(_) => Term::BigInteger(BigInteger { value }),
                }
            }
            NEW_FLOAT_EXT => Term::Float(Float {
                value: self.new_float_body(offset)?,
            }),
            FLOAT_EXT => Term::Float(Float {
                value: self.old_float_body(offset)?,
            }),
            ATOM_EXT | ATOM_UTF8_EXT | SMALL_ATOM_EXT | SMALL_ATOM_UTF8_EXT => {
                Term::Atom(Atom::from(self.atom_body(tag, offset)?.into_owned()))
            }
            BINARY_EXT => {
                let len = self.u32()? as usize;
                Term::Binary(Binary::from(self.take(len)?))
            }
            BIT_BINARY_EXT => {
                let (bytes, bits) = self.bit_binary_body(offset)?;
                if bits == 8 {
                    Term::Binary(Binary::from(bytes))
                } else {
                    let mut bytes = bytes.to_vec();
                    if let Some(last) = bytes.last_mut() {
                        *last &= 0xffu8 << (8 - bits);
                    }
                    Term::BitBinary(BitBinary {
                        bytes,
                        tail_bits_size: bits,
                    })
                }
            }
            NIL_EXT => Term::List(List::nil()),
            STRING_EXT => {
                let n = self.u16()? as usize;
                let bytes = self.take(n)?;
                self.spend(n)?;
                if n == 0 {
                    Term::List(List::nil())
                } else {
                    Term::ByteList(ByteList {
                        bytes: bytes.to_vec(),
                    })
                }
            }
            PID_EXT | NEW_PID_EXT => Term::Pid(self.pid_body(tag)?),
            PORT_EXT | NEW_PORT_EXT | V4_PORT_EXT => {
                let node = Atom::from(self.atom()?.into_owned());
                let id = if tag == V4_PORT_EXT {
                    self.u64()?
                } else {
                    u64::from(self.u32()?)
                };
                let creation = if tag == PORT_EXT {
                    u32::from(self.u8()?)
                } else {
                    self.u32()?
                };
                Term::Port(Port { node, id, creation })
            }
            REFERENCE_EXT => {
                let node = Atom::from(self.atom()?.into_owned());
                let id = self.u32()?;
                let creation = u32::from(self.u8()?);
                Term::Reference(Box::new(Reference {
                    node,
                    id: vec![id],
                    creation,
                }))
            }
            NEW_REFERENCE_EXT | NEWER_REFERENCE_EXT => {
                let n = self.u16()? as usize;
                if n == 0 || n > MAX_REF_NUMBERS {
                    return Err(DecodeError::Malformed {
                        what: "reference length",
                        offset,
                    });
                }
                let node = Atom::from(self.atom()?.into_owned());
                let creation = if tag == NEW_REFERENCE_EXT {
                    u32::from(self.u8()?)
                } else {
                    self.u32()?
                };
                let mut id = Vec::with_capacity(n);
                for _ in 0..n {
                    id.push(self.u32()?);
                }
                Term::Reference(Box::new(Reference { node, id, creation }))
            }
            EXPORT_EXT => {
                let module = Atom::from(self.atom()?.into_owned());
                let function = Atom::from(self.atom()?.into_owned());
                let at = self.pos;
                if self.u8()? != SMALL_INTEGER_EXT {
                    return Err(DecodeError::Malformed {
                        what: "export arity",
                        offset: at,
                    });
                }
                let arity = self.u8()?;
                Term::ExternalFun(Box::new(ExternalFun {
                    module,
                    function,
                    arity,
                }))
            }
            NEW_FUN_EXT => self.new_fun(offset)?,
            FUN_EXT => {
                return Err(DecodeError::Unsupported {
                    what: "FUN_EXT (removed in OTP 23)",
                    tag,
                    offset,
                });
            }
            LOCAL_EXT => {
                return Err(DecodeError::Unsupported {
                    what: "LOCAL_EXT",
                    tag,
                    offset,
                });
            }
            ATOM_CACHE_REF => {
                return Err(DecodeError::Unsupported {
                    what: "atom cache reference",
                    tag,
                    offset,
                });
            }
            DIST_HEADER | DIST_FRAG_HEADER => {
                return Err(DecodeError::Unsupported {
                    what: "distribution header",
                    tag,
                    offset,
                });
            }
            COMPRESSED => {
                return Err(DecodeError::Unsupported {
                    what: "compressed term inside a term",
                    tag,
                    offset,
                });
            }
            _ => return Err(DecodeError::UnknownTag { tag, offset }),
        })
    }

    pub(crate) fn pid_body(&mut self, tag: u8) -> Result<Pid, DecodeError> {
        let node = Atom::from(self.atom()?.into_owned());
        let id = self.u32()?;
        let serial = self.u32()?;
        let creation = if tag == PID_EXT {
            u32::from(self.u8()?)
        } else {
            self.u32()?
        };
        Ok(Pid {
            node,
            id,
            serial,
            creation,
        })
    }

    #[inline(never)]
    fn list(&mut self, offset: usize) -> Result<Term, DecodeError> {
        let n = self.count32(1)?;
        self.enter()?;
        let mut elements = Vec::with_capacity(n);
        for _ in 0..n {
            elements.push(self.term()?);
        }
        let tail = self.term()?;
        self.leave();
        let _ = offset;
        Ok(match tail {
            Term::List(rest) => {
                elements.extend(rest.elements);
                Term::List(List { elements })
            }
            Term::ByteList(rest) => {
                elements.extend(rest.bytes.into_iter().map(|b| Term::FixInteger(b.into())));
                Term::List(List { elements })
            }
            Term::ImproperList(rest) => {
                elements.extend(rest.elements);
                if elements.is_empty() {
                    *rest.last
                } else {
                    Term::ImproperList(ImproperList {
                        elements,
                        last: rest.last,
                    })
                }
            }
            last if elements.is_empty() => last,
            last => Term::ImproperList(ImproperList {
                elements,
                last: Box::new(last),
            }),
        })
    }

    fn new_fun(&mut self, offset: usize) -> Result<Term, DecodeError> {
        let size = self.u32()? as usize;
        // `size` counts itself and everything after the tag.
        if size < 4 || size - 4 > self.remaining() {
            return Err(DecodeError::LengthExceedsInput {
                len: size as u64,
                offset,
            });
        }
        let end = offset + 1 + size;
        let arity = self.u8()?;
        let uniq = self.array::<16>()?;
        let index = self.u32()?;
        let num_free = self.count32(1)?;
        let module = Atom::from(self.atom()?.into_owned());
        let old_index = self.small_int()?;
        let old_uniq = self.small_int()?;
        let at = self.pos;
        let pid = match self.u8()? {
            t @ (PID_EXT | NEW_PID_EXT) => self.pid_body(t)?,
            _ => {
                return Err(DecodeError::Malformed {
                    what: "fun pid",
                    offset: at,
                });
            }
        };
        self.enter()?;
        let mut free_vars = Vec::with_capacity(num_free);
        for _ in 0..num_free {
            free_vars.push(self.term()?);
        }
        self.leave();
        if self.pos != end {
            return Err(DecodeError::Malformed {
                what: "fun size",
                offset,
            });
        }
        Ok(Term::InternalFun(Box::new(InternalFun::New {
            module,
            arity,
            pid,
            free_vars,
            index,
            uniq,
            old_index,
            old_uniq,
        })))
    }

    /// An integer term that must fit in 32 bits (fun indexes).
    fn small_int(&mut self) -> Result<i32, DecodeError> {
        let offset = self.pos;
        match self.u8()? {
            SMALL_INTEGER_EXT => Ok(i32::from(self.u8()?)),
            INTEGER_EXT => Ok(self.u32()? as i32),
            _ => Err(DecodeError::Malformed {
                what: "fun index (expected an integer)",
                offset,
            }),
        }
    }
}

/// Latin-1 bytes as a string (every byte is the code point of the same value).
pub(crate) fn latin1(bytes: &[u8]) -> Cow<'_, str> {
    if bytes.is_ascii() {
        // ASCII is valid UTF-8.
        match std::str::from_utf8(bytes) {
            Ok(s) => Cow::Borrowed(s),
            Err(_) => Cow::Owned(bytes.iter().map(|&b| char::from(b)).collect()),
        }
    } else {
        Cow::Owned(bytes.iter().map(|&b| char::from(b)).collect())
    }
}

/// Where a term's body is, once the version byte is checked and a compressed term
/// inflated.
pub(crate) enum Body<'a> {
    /// The term body is in the input, starting at this offset.
    Plain(&'a [u8], usize),
    /// The term was compressed: its body, and the input bytes the compressed term used.
    Inflated(Vec<u8>, usize),
}

/// Checks the version byte and inflates a compressed term.
pub(crate) fn open<'a>(bytes: &'a [u8], limits: &DecodeLimits) -> Result<Body<'a>, DecodeError> {
    let version = *bytes
        .first()
        .ok_or(DecodeError::UnexpectedEnd { offset: 0 })?;
    if version != VERSION {
        return Err(DecodeError::BadVersion { found: version });
    }
    if bytes.get(1) == Some(&COMPRESSED) {
        let (body, used) = inflate(bytes, limits)?;
        return Ok(Body::Inflated(body, used));
    }
    // A long buffer may hold more than one term: the size of this one is checked once
    // its end is known (`check_size`), and the reader never looks past the limit.
    Ok(Body::Plain(bytes, 1))
}

pub(crate) fn check_size(used: usize, limits: &DecodeLimits) -> Result<(), DecodeError> {
    if used > limits.max_bytes.saturating_add(1) {
        return Err(DecodeError::TooLarge {
            size: used as u64,
            limit: limits.max_bytes,
        });
    }
    Ok(())
}

/// zlib cannot expand data by more than about 1032:1; a declared size past this bound
/// is a lie and is refused before any allocation.
const MAX_ZLIB_RATIO: usize = 1100;

fn inflate(bytes: &[u8], limits: &DecodeLimits) -> Result<(Vec<u8>, usize), DecodeError> {
    use miniz_oxide::inflate::stream::{InflateState, inflate};
    use miniz_oxide::{DataFormat, MZError, MZFlush, MZStatus};

    let header = bytes.get(2..6).ok_or(DecodeError::UnexpectedEnd {
        offset: bytes.len(),
    })?;
    let declared = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if declared > limits.max_bytes {
        return Err(DecodeError::TooLarge {
            size: declared as u64,
            limit: limits.max_bytes,
        });
    }
    let input = &bytes[6..];
    if declared
        > input
            .len()
            .saturating_mul(MAX_ZLIB_RATIO)
            .saturating_add(64)
    {
        return Err(DecodeError::Compression(
            "declared size impossible for the compressed length",
        ));
    }
    let mut out = vec![0u8; declared];
    let mut state = InflateState::new_boxed(DataFormat::Zlib);
    let r = inflate(&mut state, input, &mut out, MZFlush::Finish);
    match r.status {
        Ok(MZStatus::StreamEnd) => {}
        Ok(_) | Err(MZError::Buf) => {
            return Err(DecodeError::Compression(
                "compressed data larger than declared or cut short",
            ));
        }
        Err(_) => return Err(DecodeError::Compression("corrupt zlib stream")),
    }
    if r.bytes_written != declared {
        return Err(DecodeError::Compression(
            "uncompressed size differs from the declared size",
        ));
    }
    Ok((out, 6 + r.bytes_consumed))
}

/// See [`crate::decode_prefix`].
pub(crate) fn decode_prefix(
    bytes: &[u8],
    limits: &DecodeLimits,
) -> Result<(Term, usize), DecodeError> {
    match open(bytes, limits)? {
        Body::Plain(buf, start) => {
            let mut r = Reader::new(buf, start, limits);
            // Bound the reader by max_bytes so no term can read past it.
            let cap = limits.max_bytes.saturating_add(1).min(buf.len());
            r.buf = &buf[..cap];
            let term = match r.term() {
                Err(DecodeError::UnexpectedEnd { .. }) if cap < buf.len() => {
                    return Err(DecodeError::TooLarge {
                        size: buf.len() as u64,
                        limit: limits.max_bytes,
                    });
                }
                other => other?,
            };
            check_size(r.pos, limits)?;
            Ok((term, r.pos))
        }
        Body::Inflated(body, used) => {
            let mut r = Reader::new(&body, 0, limits);
            let term = r.term()?;
            if r.pos != body.len() {
                return Err(DecodeError::Compression(
                    "bytes left after the compressed term",
                ));
            }
            Ok((term, used))
        }
    }
}
