//! Erlang's term order and exact equality over [`Term`].
//!
//! `number < atom < reference < fun < port < pid < tuple < map < nil < list < bit string`.
//! Within a type the order follows erts; for pids, ports, references and funs the order
//! is by node name, then by the numbers, which matches erts for terms of one node.

use std::cmp::Ordering;

use eetf::{InternalFun, Term};
use num_bigint::BigInt;

/// Compares two terms in Erlang's term order, as `<`/`==` do: `1 == 1.0`.
pub fn compare(a: &Term, b: &Term) -> Ordering {
    cmp(a, b, false)
}

/// Compares two terms in the order of map keys (`=:=` semantics): integers come before
/// floats, so `1` and `1.0` differ. Used to sort map keys when encoding.
pub fn compare_exact(a: &Term, b: &Term) -> Ordering {
    cmp(a, b, true)
}

/// Exact equality (`=:=`): unlike `Term`'s `PartialEq`, a `ByteList` equals the `List`
/// of the same integers, a small `BigInteger` equals the `FixInteger` of the same value,
/// and maps compare their entries whatever the hash order.
pub fn exact_eq(a: &Term, b: &Term) -> bool {
    cmp(a, b, true) == Ordering::Equal
}

fn rank(t: &Term) -> u8 {
    match t {
        Term::FixInteger(_) | Term::BigInteger(_) | Term::Float(_) => 0,
        Term::Atom(_) => 1,
        Term::Reference(_) => 2,
        Term::ExternalFun(_) | Term::InternalFun(_) => 3,
        Term::Port(_) => 4,
        Term::Pid(_) => 5,
        Term::Tuple(_) => 6,
        Term::Map(_) => 7,
        Term::List(l) if l.elements.is_empty() => 8,
        Term::ByteList(l) if l.bytes.is_empty() => 8,
        Term::List(_) | Term::ByteList(_) | Term::ImproperList(_) => 9,
        Term::Binary(_) | Term::BitBinary(_) => 10,
    }
}

enum Num<'a> {
    Small(i64),
    Big(&'a BigInt),
    Float(f64),
}

fn num(t: &Term) -> Num<'_> {
    match t {
        Term::FixInteger(i) => Num::Small(i64::from(i.value)),
        Term::BigInteger(b) => match i64::try_from(&b.value) {
            Ok(v) => Num::Small(v),
            Err(_) => Num::Big(&b.value),
        },
        Term::Float(f) => Num::Float(f.value),
        _ => Num::Small(0),
    }
}

fn big_of(n: &Num<'_>) -> BigInt {
    match n {
        Num::Small(v) => BigInt::from(*v),
        Num::Big(b) => (*b).clone(),
        Num::Float(_) => BigInt::from(0),
    }
}

fn cmp_int_float(i: &Num<'_>, f: f64) -> Ordering {
    // Compare an integer with a float exactly: first by the float's floor.
    let fl = f.floor();
    let ib = big_of(i);
    // A finite float's floor is an integer value; convert through its decimal digits.
    let fb = float_to_bigint(fl);
    match ib.cmp(&fb) {
        Ordering::Equal => {
            if f > fl {
                Ordering::Less
            } else {
                Ordering::Equal
            }
        }
        o => o,
    }
}

fn float_to_bigint(f: f64) -> BigInt {
    if f.abs() < 9.0e15 {
        BigInt::from(f as i64)
    } else {
        // Large floats are integers: read the mantissa and exponent.
        let bits = f.to_bits();
        let neg = bits >> 63 == 1;
        let exp = ((bits >> 52) & 0x7ff) as i64 - 1075;
        let mant = (bits & ((1u64 << 52) - 1)) | (1u64 << 52);
        let mut v = BigInt::from(mant);
        if exp > 0 {
            v <<= exp as usize;
        } else {
            v >>= (-exp) as usize;
        }
        if neg { -v } else { v }
    }
}

fn cmp_num(a: &Term, b: &Term, exact: bool) -> Ordering {
    let (x, y) = (num(a), num(b));
    match (&x, &y) {
        (Num::Float(p), Num::Float(q)) => p.partial_cmp(q).unwrap_or(Ordering::Equal),
        (Num::Float(_), _) if exact => Ordering::Greater,
        (_, Num::Float(_)) if exact => Ordering::Less,
        (Num::Float(p), _) => cmp_int_float(&y, *p).reverse(),
        (_, Num::Float(q)) => cmp_int_float(&x, *q),
        (Num::Small(p), Num::Small(q)) => p.cmp(q),
        _ => big_of(&x).cmp(&big_of(&y)),
    }
}

/// Iterates a list-like term's elements as owned-or-borrowed terms, and its tail.
fn list_parts(t: &Term) -> (Vec<Term>, Option<&Term>) {
    match t {
        Term::List(l) => (l.elements.clone(), None),
        Term::ByteList(b) => (
            b.bytes
                .iter()
                .map(|&x| Term::FixInteger(x.into()))
                .collect(),
            None,
        ),
        Term::ImproperList(l) => (l.elements.clone(), Some(&*l.last)),
        _ => (Vec::new(), None),
    }
}

fn bits_of(t: &Term) -> (&[u8], u64) {
    match t {
        Term::Binary(b) => (&b.bytes, b.bytes.len() as u64 * 8),
        Term::BitBinary(b) => {
            let tail = u64::from(b.tail_bits_size.min(8));
            let full = b.bytes.len().saturating_sub(1) as u64 * 8;
            if b.bytes.is_empty() {
                (&b.bytes, 0)
            } else {
                (&b.bytes, full + tail)
            }
        }
        _ => (&[], 0),
    }
}

fn cmp_bits(a: &Term, b: &Term) -> Ordering {
    let (ab, an) = bits_of(a);
    let (bb, bn) = bits_of(b);
    let common = an.min(bn);
    let full = (common / 8) as usize;
    match ab[..full].cmp(&bb[..full]) {
        Ordering::Equal => {}
        o => return o,
    }
    let rest = (common % 8) as u32;
    if rest > 0 {
        let mask = 0xffu8 << (8 - rest);
        let (x, y) = (ab[full] & mask, bb[full] & mask);
        if x != y {
            return x.cmp(&y);
        }
    }
    an.cmp(&bn)
}

fn sorted_entries(m: &eetf::Map) -> Vec<(&Term, &Term)> {
    let mut v: Vec<(&Term, &Term)> = m.map.iter().collect();
    v.sort_by(|a, b| cmp(a.0, b.0, true));
    v
}

fn cmp(a: &Term, b: &Term, exact: bool) -> Ordering {
    let (ra, rb) = (rank(a), rank(b));
    if ra != rb {
        return ra.cmp(&rb);
    }
    match (a, b) {
        _ if ra == 0 => cmp_num(a, b, exact),
        (Term::Atom(x), Term::Atom(y)) => x.name.cmp(&y.name),
        (Term::Reference(x), Term::Reference(y)) => x
            .node
            .name
            .cmp(&y.node.name)
            .then(x.creation.cmp(&y.creation))
            .then_with(|| x.id.iter().rev().cmp(y.id.iter().rev())),
        (Term::Port(x), Term::Port(y)) => x
            .node
            .name
            .cmp(&y.node.name)
            .then(x.creation.cmp(&y.creation))
            .then(x.id.cmp(&y.id)),
        (Term::Pid(x), Term::Pid(y)) => x
            .node
            .name
            .cmp(&y.node.name)
            .then(x.creation.cmp(&y.creation))
            .then(x.serial.cmp(&y.serial))
            .then(x.id.cmp(&y.id)),
        (Term::Tuple(x), Term::Tuple(y)) => {
            x.elements.len().cmp(&y.elements.len()).then_with(|| {
                for (p, q) in x.elements.iter().zip(&y.elements) {
                    match cmp(p, q, exact) {
                        Ordering::Equal => {}
                        o => return o,
                    }
                }
                Ordering::Equal
            })
        }
        (Term::Map(x), Term::Map(y)) => x.map.len().cmp(&y.map.len()).then_with(|| {
            let (ex, ey) = (sorted_entries(x), sorted_entries(y));
            for ((kx, _), (ky, _)) in ex.iter().zip(&ey) {
                match cmp(kx, ky, true) {
                    Ordering::Equal => {}
                    o => return o,
                }
            }
            for ((_, vx), (_, vy)) in ex.iter().zip(&ey) {
                match cmp(vx, vy, exact) {
                    Ordering::Equal => {}
                    o => return o,
                }
            }
            Ordering::Equal
        }),
        _ if ra == 8 => Ordering::Equal,
        _ if ra == 9 => cmp_lists(a, b, exact),
        _ if ra == 10 => cmp_bits(a, b),
        _ => cmp_funs(a, b, exact),
    }
}

fn cmp_lists(a: &Term, b: &Term, exact: bool) -> Ordering {
    let (xa, ta) = list_parts(a);
    let (xb, tb) = list_parts(b);
    for (p, q) in xa.iter().zip(&xb) {
        match cmp(p, q, exact) {
            Ordering::Equal => {}
            o => return o,
        }
    }
    // One list ran out: compare what follows (the rest, or the tail) as terms.
    let nil = Term::List(eetf::List::nil());
    let rest = |xs: &[Term], tail: Option<&Term>, n: usize| -> Term {
        if xs.len() > n {
            match tail {
                Some(t) => Term::ImproperList(eetf::ImproperList {
                    elements: xs[n..].to_vec(),
                    last: Box::new(t.clone()),
                }),
                None => Term::List(eetf::List::from(xs[n..].to_vec())),
            }
        } else {
            tail.cloned().unwrap_or_else(|| nil.clone())
        }
    };
    let n = xa.len().min(xb.len());
    let (ra, rb) = (rest(&xa, ta, n), rest(&xb, tb, n));
    if matches!(&ra, Term::List(l) if l.elements.is_empty())
        && matches!(&rb, Term::List(l) if l.elements.is_empty())
    {
        return Ordering::Equal;
    }
    cmp(&ra, &rb, exact)
}

fn cmp_funs(a: &Term, b: &Term, exact: bool) -> Ordering {
    match (a, b) {
        (Term::ExternalFun(x), Term::ExternalFun(y)) => x
            .module
            .name
            .cmp(&y.module.name)
            .then(x.function.name.cmp(&y.function.name))
            .then(x.arity.cmp(&y.arity)),
        // Local funs sort after exports.
        (Term::ExternalFun(_), _) => Ordering::Less,
        (_, Term::ExternalFun(_)) => Ordering::Greater,
        (Term::InternalFun(x), Term::InternalFun(y)) => match (&**x, &**y) {
            (
                InternalFun::New {
                    module: m1,
                    index: i1,
                    uniq: u1,
                    free_vars: f1,
                    ..
                },
                InternalFun::New {
                    module: m2,
                    index: i2,
                    uniq: u2,
                    free_vars: f2,
                    ..
                },
            ) => m1
                .name
                .cmp(&m2.name)
                .then(i1.cmp(i2))
                .then(u1.cmp(u2))
                .then(f1.len().cmp(&f2.len()))
                .then_with(|| {
                    for (p, q) in f1.iter().zip(f2) {
                        match cmp(p, q, exact) {
                            Ordering::Equal => {}
                            o => return o,
                        }
                    }
                    Ordering::Equal
                }),
            (InternalFun::Old { .. }, InternalFun::New { .. }) => Ordering::Less,
            (InternalFun::New { .. }, InternalFun::Old { .. }) => Ordering::Greater,
            (
                InternalFun::Old {
                    module: m1,
                    index: i1,
                    uniq: u1,
                    ..
                },
                InternalFun::Old {
                    module: m2,
                    index: i2,
                    uniq: u2,
                    ..
                },
            ) => m1.name.cmp(&m2.name).then(i1.cmp(i2)).then(u1.cmp(u2)),
        },
        _ => Ordering::Equal,
    }
}
