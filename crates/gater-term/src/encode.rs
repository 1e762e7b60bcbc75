//! The encoder: [`Term`] to bytes, as OTP writes them.

use eetf::{InternalFun, Term};
use num_bigint::Sign;

use crate::error::EncodeError;
use crate::matching::TermExt;
use crate::order::compare_exact;
use crate::tag::*;

/// How atoms are written. Both forms are read by every OTP release since 20.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AtomEncoding {
    /// `SMALL_ATOM_UTF8_EXT` (or `ATOM_UTF8_EXT` past 255 bytes), as OTP 26 and 27 write
    /// them by default (and as the ExESDB images on OTP 27 do).
    #[default]
    Utf8,
    /// `ATOM_EXT` for atoms that Latin-1 can spell, UTF-8 tags for the rest, as OTP 25's
    /// `term_to_binary` writes them (byte-exact with the OTP 25 vectors).
    Latin1,
}

/// Options for [`encode_with`](crate::encode_with).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EncodeOptions {
    /// How atoms are written.
    pub atoms: AtomEncoding,
}

/// OTP writes maps of up to 32 keys ("flatmaps") in key order.
const SMALL_MAP: usize = 32;

pub(crate) fn write_atom(out: &mut Vec<u8>, name: &str, atoms: AtomEncoding) {
    if atoms == AtomEncoding::Latin1 && name.chars().all(|c| (c as u32) < 256) {
        let n = name.chars().count().min(u16::MAX as usize);
        out.push(ATOM_EXT);
        out.extend_from_slice(&(n as u16).to_be_bytes());
        if name.is_ascii() {
            out.extend_from_slice(&name.as_bytes()[..n]);
        } else {
            out.extend(name.chars().take(n).map(|c| c as u8));
        }
        return;
    }
    let bytes = name.as_bytes();
    if bytes.len() < 256 {
        out.push(SMALL_ATOM_UTF8_EXT);
        out.push(bytes.len() as u8);
        out.extend_from_slice(bytes);
    } else {
        // No valid Erlang atom is this long; cut at a character boundary so the
        // output stays well-formed.
        let mut n = bytes.len().min(u16::MAX as usize);
        while !name.is_char_boundary(n) {
            n -= 1;
        }
        out.push(ATOM_UTF8_EXT);
        out.extend_from_slice(&(n as u16).to_be_bytes());
        out.extend_from_slice(&bytes[..n]);
    }
}

#[inline]
pub(crate) fn write_i64(out: &mut Vec<u8>, v: i64) {
    if (0..=255).contains(&v) {
        out.push(SMALL_INTEGER_EXT);
        out.push(v as u8);
    } else if let Ok(v) = i32::try_from(v) {
        out.push(INTEGER_EXT);
        out.extend_from_slice(&v.to_be_bytes());
    } else {
        write_big_parts(out, v < 0, &v.unsigned_abs().to_le_bytes());
    }
}

#[inline]
pub(crate) fn write_u64(out: &mut Vec<u8>, v: u64) {
    match i64::try_from(v) {
        Ok(v) => write_i64(out, v),
        Err(_) => write_big_parts(out, false, &v.to_le_bytes()),
    }
}

pub(crate) fn write_i128(out: &mut Vec<u8>, v: i128) {
    match i64::try_from(v) {
        Ok(v) => write_i64(out, v),
        Err(_) => write_big_parts(out, v < 0, &v.unsigned_abs().to_le_bytes()),
    }
}

/// Writes a big integer from its little-endian magnitude (trailing zero bytes dropped).
pub(crate) fn write_big_parts(out: &mut Vec<u8>, negative: bool, le: &[u8]) {
    let n = le.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    if n < 256 {
        out.push(SMALL_BIG_EXT);
        out.push(n as u8);
    } else {
        out.push(LARGE_BIG_EXT);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
    out.push(u8::from(negative && n > 0));
    out.extend_from_slice(&le[..n]);
}

#[inline]
pub(crate) fn write_f64(out: &mut Vec<u8>, v: f64) {
    out.push(NEW_FLOAT_EXT);
    out.extend_from_slice(&v.to_bits().to_be_bytes());
}

#[inline]
pub(crate) fn write_binary(out: &mut Vec<u8>, b: &[u8]) {
    out.push(BINARY_EXT);
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

#[inline]
pub(crate) fn write_tuple_header(out: &mut Vec<u8>, n: usize) {
    if n < 256 {
        out.push(SMALL_TUPLE_EXT);
        out.push(n as u8);
    } else {
        out.push(LARGE_TUPLE_EXT);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

#[inline]
pub(crate) fn write_map_header(out: &mut Vec<u8>, n: usize) {
    out.push(MAP_EXT);
    out.extend_from_slice(&(n as u32).to_be_bytes());
}

#[inline]
pub(crate) fn write_list_header(out: &mut Vec<u8>, n: usize) {
    out.push(LIST_EXT);
    out.extend_from_slice(&(n as u32).to_be_bytes());
}

fn write_pid(out: &mut Vec<u8>, p: &eetf::Pid, atoms: AtomEncoding) {
    out.push(NEW_PID_EXT);
    write_atom(out, &p.node.name, atoms);
    out.extend_from_slice(&p.id.to_be_bytes());
    out.extend_from_slice(&p.serial.to_be_bytes());
    out.extend_from_slice(&p.creation.to_be_bytes());
}

/// Is this list a "string" that OTP writes as STRING_EXT?
fn byte_list(elements: &[Term]) -> bool {
    !elements.is_empty()
        && elements.len() <= u16::MAX as usize
        && elements
            .iter()
            .all(|e| matches!(e, Term::FixInteger(i) if (0..=255).contains(&i.value)))
}

pub(crate) fn write_term(out: &mut Vec<u8>, term: &Term, atoms: AtomEncoding) {
    match term {
        Term::Atom(a) => write_atom(out, &a.name, atoms),
        Term::FixInteger(i) => write_i64(out, i64::from(i.value)),
        Term::BigInteger(b) => match i64::try_from(&b.value) {
            Ok(v) => write_i64(out, v),
            Err(_) => {
                let (sign, le) = b.value.to_bytes_le();
                write_big_parts(out, sign == Sign::Minus, &le);
            }
        },
        Term::Float(f) => write_f64(out, f.value),
        Term::Pid(p) => write_pid(out, p, atoms),
        Term::Port(p) => {
            if let Ok(id) = u32::try_from(p.id) {
                out.push(NEW_PORT_EXT);
                write_atom(out, &p.node.name, atoms);
                out.extend_from_slice(&id.to_be_bytes());
            } else {
                out.push(V4_PORT_EXT);
                write_atom(out, &p.node.name, atoms);
                out.extend_from_slice(&p.id.to_be_bytes());
            }
            out.extend_from_slice(&p.creation.to_be_bytes());
        }
        Term::Reference(r) => {
            out.push(NEWER_REFERENCE_EXT);
            let n = r.id.len().min(u16::MAX as usize);
            out.extend_from_slice(&(n as u16).to_be_bytes());
            write_atom(out, &r.node.name, atoms);
            out.extend_from_slice(&r.creation.to_be_bytes());
            for id in &r.id[..n] {
                out.extend_from_slice(&id.to_be_bytes());
            }
        }
        Term::ExternalFun(f) => {
            out.push(EXPORT_EXT);
            write_atom(out, &f.module.name, atoms);
            write_atom(out, &f.function.name, atoms);
            out.push(SMALL_INTEGER_EXT);
            out.push(f.arity);
        }
        Term::InternalFun(f) => write_fun(out, f, atoms),
        Term::Binary(b) => write_binary(out, &b.bytes),
        Term::BitBinary(b) => {
            let bits = b.tail_bits_size;
            if b.bytes.is_empty() || bits >= 8 {
                write_binary(out, &b.bytes);
            } else if bits == 0 {
                write_binary(out, &b.bytes[..b.bytes.len() - 1]);
            } else {
                out.push(BIT_BINARY_EXT);
                out.extend_from_slice(&(b.bytes.len() as u32).to_be_bytes());
                out.push(bits);
                out.extend_from_slice(&b.bytes);
                if let Some(last) = out.last_mut() {
                    *last &= 0xffu8 << (8 - bits);
                }
            }
        }
        Term::ByteList(l) => {
            if l.bytes.is_empty() {
                out.push(NIL_EXT);
            } else if l.bytes.len() <= u16::MAX as usize {
                out.push(STRING_EXT);
                out.extend_from_slice(&(l.bytes.len() as u16).to_be_bytes());
                out.extend_from_slice(&l.bytes);
            } else {
                write_list_header(out, l.bytes.len());
                for &b in &l.bytes {
                    out.push(SMALL_INTEGER_EXT);
                    out.push(b);
                }
                out.push(NIL_EXT);
            }
        }
        Term::List(l) => {
            if l.elements.is_empty() {
                out.push(NIL_EXT);
            } else if byte_list(&l.elements) {
                out.push(STRING_EXT);
                out.extend_from_slice(&(l.elements.len() as u16).to_be_bytes());
                for e in &l.elements {
                    if let Term::FixInteger(i) = e {
                        out.push(i.value as u8);
                    }
                }
            } else {
                write_list_header(out, l.elements.len());
                for e in &l.elements {
                    write_term(out, e, atoms);
                }
                out.push(NIL_EXT);
            }
        }
        Term::ImproperList(l) => {
            // `[a | [b | c]]` is `[a, b | c]`: write the flat form OTP writes.
            let mut elements: Vec<&Term> = l.elements.iter().collect();
            let mut tail = &*l.last;
            while let Term::ImproperList(inner) = tail {
                elements.extend(inner.elements.iter());
                tail = &inner.last;
            }
            match tail {
                Term::List(_) | Term::ByteList(_) => {
                    let mut all: Vec<Term> = elements.into_iter().cloned().collect();
                    all.extend(tail.as_list().unwrap_or_default().iter().cloned());
                    write_term(out, &Term::List(eetf::List { elements: all }), atoms);
                }
                _ => {
                    if !elements.is_empty() {
                        write_list_header(out, elements.len());
                        for e in elements {
                            write_term(out, e, atoms);
                        }
                    }
                    write_term(out, tail, atoms);
                }
            }
        }
        Term::Tuple(t) => {
            write_tuple_header(out, t.elements.len());
            for e in &t.elements {
                write_term(out, e, atoms);
            }
        }
        Term::Map(m) => {
            write_map_header(out, m.map.len());
            // Keys are distinct, so an unstable sort gives one order; atoms and
            // binaries, the usual keys, compare without the general machinery.
            fn key_order(a: &Term, b: &Term) -> std::cmp::Ordering {
                match (a, b) {
                    (Term::Atom(x), Term::Atom(y)) => x.name.cmp(&y.name),
                    (Term::Binary(x), Term::Binary(y)) => x.bytes.cmp(&y.bytes),
                    (x, y) => compare_exact(x, y),
                }
            }
            if m.map.len() <= SMALL_MAP {
                // Small maps (OTP's flatmaps) sort on the stack.
                let mut entries: [Option<(&Term, &Term)>; SMALL_MAP] = [None; SMALL_MAP];
                for (slot, e) in entries.iter_mut().zip(&m.map) {
                    *slot = Some(e);
                }
                let entries = &mut entries[..m.map.len()];
                entries.sort_unstable_by(|a, b| match (a, b) {
                    (Some(a), Some(b)) => key_order(a.0, b.0),
                    _ => std::cmp::Ordering::Equal,
                });
                for (k, v) in entries.iter().flatten() {
                    write_term(out, k, atoms);
                    write_term(out, v, atoms);
                }
            } else {
                let mut entries: Vec<(&Term, &Term)> = m.map.iter().collect();
                entries.sort_unstable_by(|a, b| key_order(a.0, b.0));
                for (k, v) in entries {
                    write_term(out, k, atoms);
                    write_term(out, v, atoms);
                }
            }
        }
    }
}

fn write_fun(out: &mut Vec<u8>, f: &InternalFun, atoms: AtomEncoding) {
    match f {
        InternalFun::New {
            module,
            arity,
            pid,
            free_vars,
            index,
            uniq,
            old_index,
            old_uniq,
        } => {
            out.push(NEW_FUN_EXT);
            let size_at = out.len();
            out.extend_from_slice(&[0; 4]);
            out.push(*arity);
            out.extend_from_slice(uniq);
            out.extend_from_slice(&index.to_be_bytes());
            out.extend_from_slice(&(free_vars.len() as u32).to_be_bytes());
            write_atom(out, &module.name, atoms);
            write_i64(out, i64::from(*old_index));
            write_i64(out, i64::from(*old_uniq));
            write_pid(out, pid, atoms);
            for v in free_vars {
                write_term(out, v, atoms);
            }
            let size = (out.len() - size_at) as u32;
            out[size_at..size_at + 4].copy_from_slice(&size.to_be_bytes());
        }
        InternalFun::Old {
            module,
            pid,
            free_vars,
            index,
            uniq,
        } => {
            out.push(FUN_EXT);
            out.extend_from_slice(&(free_vars.len() as u32).to_be_bytes());
            write_pid(out, pid, atoms);
            write_atom(out, &module.name, atoms);
            write_i64(out, i64::from(*index));
            write_i64(out, i64::from(*uniq));
            for v in free_vars {
                write_term(out, v, atoms);
            }
        }
    }
}

/// Checks that a term has an Erlang representation (finite floats, atoms of at most
/// 255 characters, lengths within 32 bits).
pub(crate) fn check(term: &Term) -> Result<(), EncodeError> {
    let atom = |name: &str| {
        let n = name.chars().count();
        if n > 255 {
            Err(EncodeError::AtomTooLong(n))
        } else {
            Ok(())
        }
    };
    match term {
        Term::Atom(a) => atom(&a.name),
        Term::Float(f) if !f.value.is_finite() => Err(EncodeError::NonFiniteFloat(f.value)),
        Term::Pid(p) => atom(&p.node.name),
        Term::Port(p) => atom(&p.node.name),
        Term::Reference(r) => {
            if r.id.is_empty() || r.id.len() > MAX_REF_NUMBERS {
                return Err(EncodeError::Unsupported(
                    "reference with 0 or more than 5 numbers",
                ));
            }
            atom(&r.node.name)
        }
        Term::ExternalFun(f) => atom(&f.module.name).and(atom(&f.function.name)),
        Term::InternalFun(f) => match &**f {
            InternalFun::New { free_vars, .. } => free_vars.iter().try_for_each(check),
            InternalFun::Old { .. } => Err(EncodeError::Unsupported("FUN_EXT (removed in OTP 23)")),
        },
        Term::List(l) => l.elements.iter().try_for_each(check),
        Term::ImproperList(l) => {
            l.elements.iter().try_for_each(check)?;
            check(&l.last)
        }
        Term::Tuple(t) => t.elements.iter().try_for_each(check),
        Term::Map(m) => m.map.iter().try_for_each(|(k, v)| check(k).and(check(v))),
        Term::Binary(b) if b.bytes.len() > u32::MAX as usize => {
            Err(EncodeError::TooLong("binary", b.bytes.len()))
        }
        _ => Ok(()),
    }
}

/// Compresses an encoded term (with its version byte) as `term_to_binary(T, [compressed])`.
pub(crate) fn compress(encoded: &[u8], level: u8) -> Vec<u8> {
    let body = encoded.get(1..).unwrap_or(&[]);
    let z = miniz_oxide::deflate::compress_to_vec_zlib(body, level.min(10));
    let mut out = Vec::with_capacity(6 + z.len());
    out.push(VERSION);
    out.push(COMPRESSED);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&z);
    out
}
