//! Matchers: reading terms the way Erlang pattern-matches them.

use std::borrow::Cow;
use std::collections::HashMap;

use eetf::{Pid, Reference, Term};

/// Pattern-matching helpers on [`Term`]; each returns `None` when the shape differs.
///
/// ```
/// use gater_term::{TermExt, tuple, map, build::atom};
/// let reply = tuple![atom("ok"), 7];
/// assert_eq!(reply.tagged("ok", 2).and_then(|v| v[0].as_i64()), Some(7));
/// let m = map! { atom("event_type") => "UserCreated" };
/// assert_eq!(m.get("event_type").and_then(TermExt::as_str), Some("UserCreated"));
/// ```
pub trait TermExt {
    /// The atom's name.
    fn as_atom(&self) -> Option<&str>;
    /// Is this the atom `name`?
    fn is_atom(&self, name: &str) -> bool {
        self.as_atom() == Some(name)
    }
    /// The integer, if it fits an `i64`.
    fn as_i64(&self) -> Option<i64>;
    /// The float.
    fn as_f64(&self) -> Option<f64>;
    /// The bytes of a binary.
    fn as_binary(&self) -> Option<&[u8]>;
    /// A binary that holds UTF-8 (an Elixir string).
    fn as_str(&self) -> Option<&str>;
    /// The elements of a tuple.
    fn as_tuple(&self) -> Option<&[Term]>;
    /// The elements of a proper list (a `STRING_EXT` list comes back as integers).
    fn as_list(&self) -> Option<Cow<'_, [Term]>>;
    /// The entries of a map.
    fn as_map(&self) -> Option<&HashMap<Term, Term>>;
    /// A pid.
    fn as_pid(&self) -> Option<&Pid>;
    /// A reference.
    fn as_reference(&self) -> Option<&Reference>;
    /// A tuple of `arity` elements whose first is the atom `tag`: the elements after
    /// the tag. `{ok, V}` matches `tagged("ok", 2)` and yields `[V]`.
    fn tagged(&self, tag: &str, arity: usize) -> Option<&[Term]>;
    /// The value under the atom key `key` of a map.
    fn get(&self, key: &str) -> Option<&Term>;
    /// The value under the binary key `key` of a map.
    fn get_bin(&self, key: &str) -> Option<&Term>;
    /// The `'__struct__'` of an Elixir struct (`"Elixir.DateTime"`).
    fn struct_name(&self) -> Option<&str> {
        self.get("__struct__").and_then(TermExt::as_atom)
    }
}

impl TermExt for Term {
    fn as_atom(&self) -> Option<&str> {
        match self {
            Term::Atom(a) => Some(&a.name),
            _ => None,
        }
    }

    fn as_i64(&self) -> Option<i64> {
        match self {
            Term::FixInteger(i) => Some(i64::from(i.value)),
            Term::BigInteger(b) => i64::try_from(&b.value).ok(),
            _ => None,
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match self {
            Term::Float(f) => Some(f.value),
            _ => None,
        }
    }

    fn as_binary(&self) -> Option<&[u8]> {
        match self {
            Term::Binary(b) => Some(&b.bytes),
            _ => None,
        }
    }

    fn as_str(&self) -> Option<&str> {
        self.as_binary().and_then(|b| std::str::from_utf8(b).ok())
    }

    fn as_tuple(&self) -> Option<&[Term]> {
        match self {
            Term::Tuple(t) => Some(&t.elements),
            _ => None,
        }
    }

    fn as_list(&self) -> Option<Cow<'_, [Term]>> {
        match self {
            Term::List(l) => Some(Cow::Borrowed(&l.elements)),
            Term::ByteList(b) => Some(Cow::Owned(
                b.bytes
                    .iter()
                    .map(|&x| Term::FixInteger(x.into()))
                    .collect(),
            )),
            _ => None,
        }
    }

    fn as_map(&self) -> Option<&HashMap<Term, Term>> {
        match self {
            Term::Map(m) => Some(&m.map),
            _ => None,
        }
    }

    fn as_pid(&self) -> Option<&Pid> {
        match self {
            Term::Pid(p) => Some(p),
            _ => None,
        }
    }

    fn as_reference(&self) -> Option<&Reference> {
        match self {
            Term::Reference(r) => Some(r),
            _ => None,
        }
    }

    fn tagged(&self, tag: &str, arity: usize) -> Option<&[Term]> {
        let elements = self.as_tuple()?;
        if elements.len() == arity && elements.first()?.is_atom(tag) {
            Some(&elements[1..])
        } else {
            None
        }
    }

    fn get(&self, key: &str) -> Option<&Term> {
        self.as_map()?.get(&crate::build::atom(key))
    }

    fn get_bin(&self, key: &str) -> Option<&Term> {
        self.as_map()?.get(&crate::build::string(key))
    }
}
