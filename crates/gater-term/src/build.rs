//! Builders: terms written the way Erlang writes them.
//!
//! ```
//! use gater_term::build::{atom, binary, int};
//! use gater_term::{tuple, list, map};
//!
//! // {get_events, reg_gh, <<"user-1">>, 0, 10, forward}
//! let req = tuple![atom("get_events"), atom("reg_gh"), "user-1", 0, 10, atom("forward")];
//! let m = map! { atom("node") => atom("ex_esdb0@host") };
//! let l = list![1, 2.5, binary(b"\xff".to_vec())];
//! # let _ = (req, m, l, int(1));
//! ```

use eetf::{
    Atom, BigInteger, Binary, FixInteger, Float, ImproperList, List, Map, Pid, Reference, Term,
    Tuple,
};

/// A value that becomes a term in the builder macros ([`tuple!`](crate::tuple),
/// [`list!`](crate::list), [`map!`](crate::map)).
///
/// Strings become UTF-8 binaries (Elixir strings), `bool` the atoms `true`/`false`,
/// `Option` `nil` or the value; write atoms with [`atom`].
pub trait IntoTerm {
    /// The term for this value.
    fn into_term(self) -> Term;
}

impl IntoTerm for Term {
    fn into_term(self) -> Term {
        self
    }
}
impl IntoTerm for &Term {
    fn into_term(self) -> Term {
        self.clone()
    }
}
impl IntoTerm for &str {
    fn into_term(self) -> Term {
        binary(self.as_bytes().to_vec())
    }
}
impl IntoTerm for String {
    fn into_term(self) -> Term {
        binary(self.into_bytes())
    }
}
impl IntoTerm for bool {
    fn into_term(self) -> Term {
        atom(if self { "true" } else { "false" })
    }
}
impl IntoTerm for f64 {
    fn into_term(self) -> Term {
        float(self)
    }
}
impl<T: IntoTerm> IntoTerm for Option<T> {
    fn into_term(self) -> Term {
        match self {
            Some(v) => v.into_term(),
            None => atom("nil"),
        }
    }
}
impl<T: IntoTerm> IntoTerm for Vec<T> {
    fn into_term(self) -> Term {
        list(self.into_iter().map(IntoTerm::into_term).collect())
    }
}
macro_rules! int_into_term {
    ($($t:ty),*) => {$(
        impl IntoTerm for $t {
            fn into_term(self) -> Term {
                int(i128::from(self))
            }
        }
    )*};
}
int_into_term!(i8, i16, i32, i64, u8, u16, u32, u64, i128);
impl IntoTerm for usize {
    fn into_term(self) -> Term {
        int(self as i128)
    }
}

/// An atom.
pub fn atom(name: impl Into<String>) -> Term {
    Term::Atom(Atom { name: name.into() })
}

/// An integer: a `FixInteger` when it fits 32 bits, else a `BigInteger`.
pub fn int(value: impl Into<i128>) -> Term {
    let value = value.into();
    match i32::try_from(value) {
        Ok(v) => Term::FixInteger(FixInteger { value: v }),
        Err(_) => Term::BigInteger(BigInteger {
            value: value.into(),
        }),
    }
}

/// A float (Erlang has no NaN or infinities: [`crate::try_encode`] refuses them).
pub fn float(value: f64) -> Term {
    Term::Float(Float { value })
}

/// A binary.
pub fn binary(bytes: impl Into<Vec<u8>>) -> Term {
    Term::Binary(Binary {
        bytes: bytes.into(),
    })
}

/// An Elixir string: a UTF-8 binary.
pub fn string(s: &str) -> Term {
    binary(s.as_bytes().to_vec())
}

/// A tuple.
pub fn tuple(elements: Vec<Term>) -> Term {
    Term::Tuple(Tuple { elements })
}

/// A proper list.
pub fn list(elements: Vec<Term>) -> Term {
    Term::List(List { elements })
}

/// The empty list `[]`.
pub fn nil() -> Term {
    Term::List(List::nil())
}

/// An improper list `[E1, E2 | Tail]` (just `Tail` when there are no elements, and a
/// proper list when `Tail` is `[]`).
pub fn improper_list(mut elements: Vec<Term>, tail: Term) -> Term {
    match tail {
        Term::List(l) => {
            elements.extend(l.elements);
            list(elements)
        }
        tail if elements.is_empty() => tail,
        tail => Term::ImproperList(ImproperList {
            elements,
            last: Box::new(tail),
        }),
    }
}

/// A map from key-value pairs (a later duplicate key wins).
pub fn map(entries: impl IntoIterator<Item = (Term, Term)>) -> Term {
    Term::Map(Map {
        map: entries.into_iter().collect(),
    })
}

/// A pid `<node.id.serial>` of a node incarnation (`creation`).
pub fn pid(node: &str, id: u32, serial: u32, creation: u32) -> Term {
    Term::Pid(Pid::new(node, id, serial, creation))
}

/// A reference of a node incarnation with its numbers (1 to 5 of them, least
/// significant first, as in the external format).
pub fn reference(node: &str, id: &[u32], creation: u32) -> Term {
    Term::Reference(Box::new(Reference {
        node: Atom::from(node),
        id: id.to_vec(),
        creation,
    }))
}

/// `{ok, Value}`.
pub fn ok(value: Term) -> Term {
    tuple(vec![atom("ok"), value])
}

/// `{error, Reason}`.
pub fn error(reason: Term) -> Term {
    tuple(vec![atom("error"), reason])
}

/// Builds a tuple: `tuple![atom("ok"), 1]` is `{ok, 1}`. Elements are anything
/// [`IntoTerm`].
#[macro_export]
macro_rules! tuple {
    ($($e:expr),* $(,)?) => {
        $crate::build::tuple(vec![$($crate::build::IntoTerm::into_term($e)),*])
    };
}

/// Builds a proper list: `list![1, 2]` is `[1, 2]`. Elements are anything [`IntoTerm`].
#[macro_export]
macro_rules! list {
    ($($e:expr),* $(,)?) => {
        $crate::build::list(vec![$($crate::build::IntoTerm::into_term($e)),*])
    };
}

/// Builds a map: `map! { atom("a") => 1, "b" => 2 }` is `#{a => 1, <<"b">> => 2}`.
#[macro_export]
macro_rules! map {
    ($($k:expr => $v:expr),* $(,)?) => {
        $crate::build::map(vec![$((
            $crate::build::IntoTerm::into_term($k),
            $crate::build::IntoTerm::into_term($v),
        )),*])
    };
}
