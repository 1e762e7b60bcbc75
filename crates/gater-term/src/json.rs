//! The JSON mapping used by the HTTP API (documented in `docs/json-mapping.md`).
//!
//! JSON → term → JSON is the identity for every JSON value. Terms JSON cannot say
//! come out in a tagged form, an object with one key that starts with `$`:
//!
//! | term | JSON |
//! |---|---|
//! | `nil`, `true`, `false` | `null`, `true`, `false` |
//! | other atoms | `{"$atom": "name"}` |
//! | integers (64-bit) / floats | numbers |
//! | integers past 64 bits (or past 2^53 with [`JsonOptions::safe_integers`]) | `{"$int": "digits"}` |
//! | UTF-8 binaries | strings |
//! | other binaries / bitstrings | `{"$binary": "base64"}` / `{"$bitstring": {"data": "base64", "bits": N}}` |
//! | proper lists | arrays |
//! | improper lists | `{"$improper": {"elements": [...], "tail": T}}` |
//! | tuples | `{"$tuple": [...]}` |
//! | maps with UTF-8 binary keys | objects |
//! | maps with atom keys (from ExESDB) | objects, the atom names as keys (see [`AtomKeys`]) |
//! | other maps | `{"$map": [[K, V], ...]}` |
//! | pids, ports, references | `{"$pid": {...}}`, `{"$port": {...}}`, `{"$ref": {...}}` |
//! | funs | `{"$term": "base64 of the external format"}` |

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use eetf::{Atom, Pid, Port, Reference, Term};
use num_bigint::BigInt;
use serde_json::{Map as JsonMap, Number, Value};

use crate::build::{atom, binary, float, improper_list, int, list, map, tuple};
use crate::matching::TermExt;

/// What happens to maps whose keys are atoms (Elixir maps and structs from ExESDB).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AtomKeys {
    /// Objects keyed by the atom names: readable, but such an object sent back becomes
    /// a map with binary keys.
    #[default]
    AsStrings,
    /// `{"$map": [[{"$atom": "k"}, V], ...]}`: exact, verbose.
    Tagged,
}

/// Options of the term → JSON direction (JSON → term needs none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JsonOptions {
    /// How atom-keyed maps come out.
    pub atom_keys: AtomKeys,
    /// Write integers beyond ±2^53 as `{"$int": "digits"}` so JavaScript clients keep
    /// every digit. Off by default (JSON → term → JSON is then the identity for every
    /// JSON value; with it on, for every value whose integers are within ±2^53).
    pub safe_integers: bool,
}

const MAX_SAFE: i64 = (1 << 53) - 1;

/// A term as JSON with the default options.
pub fn term_to_json(t: &Term) -> Value {
    term_to_json_with(t, &JsonOptions::default())
}

fn tagged(tag: &str, v: Value) -> Value {
    let mut m = JsonMap::with_capacity(1);
    m.insert(tag.to_owned(), v);
    Value::Object(m)
}

fn big_to_json(v: &BigInt, o: &JsonOptions) -> Value {
    if let Ok(i) = i64::try_from(v) {
        if !o.safe_integers || (-MAX_SAFE..=MAX_SAFE).contains(&i) {
            return Value::Number(i.into());
        }
    } else if let Ok(u) = u64::try_from(v) {
        if !o.safe_integers {
            return Value::Number(u.into());
        }
    }
    tagged("$int", Value::String(v.to_string()))
}

fn node_fields(node: &Atom, creation: u32) -> JsonMap<String, Value> {
    let mut m = JsonMap::new();
    m.insert("node".into(), Value::String(node.name.clone()));
    m.insert("creation".into(), Value::Number(creation.into()));
    m
}

/// A term as JSON.
pub fn term_to_json_with(t: &Term, o: &JsonOptions) -> Value {
    match t {
        Term::Atom(a) => match a.name.as_str() {
            "nil" => Value::Null,
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            n => tagged("$atom", Value::String(n.to_owned())),
        },
        Term::FixInteger(i) => Value::Number(i.value.into()),
        Term::BigInteger(b) => big_to_json(&b.value, o),
        Term::Float(f) => Number::from_f64(f.value).map_or(Value::Null, Value::Number),
        Term::Binary(b) => match std::str::from_utf8(&b.bytes) {
            Ok(s) => Value::String(s.to_owned()),
            Err(_) => tagged("$binary", Value::String(B64.encode(&b.bytes))),
        },
        Term::BitBinary(b) => {
            let mut m = JsonMap::new();
            m.insert("data".into(), Value::String(B64.encode(&b.bytes)));
            m.insert("bits".into(), Value::Number(b.tail_bits_size.into()));
            tagged("$bitstring", Value::Object(m))
        }
        Term::List(_) | Term::ByteList(_) => Value::Array(
            t.as_list()
                .unwrap_or_default()
                .iter()
                .map(|e| term_to_json_with(e, o))
                .collect(),
        ),
        Term::ImproperList(l) => {
            let mut m = JsonMap::new();
            m.insert(
                "elements".into(),
                Value::Array(l.elements.iter().map(|e| term_to_json_with(e, o)).collect()),
            );
            m.insert("tail".into(), term_to_json_with(&l.last, o));
            tagged("$improper", Value::Object(m))
        }
        Term::Tuple(tu) => tagged(
            "$tuple",
            Value::Array(
                tu.elements
                    .iter()
                    .map(|e| term_to_json_with(e, o))
                    .collect(),
            ),
        ),
        Term::Map(m) => map_to_json(m, o),
        Term::Pid(p) => {
            let mut m = node_fields(&p.node, p.creation);
            m.insert("id".into(), Value::Number(p.id.into()));
            m.insert("serial".into(), Value::Number(p.serial.into()));
            tagged("$pid", Value::Object(m))
        }
        Term::Port(p) => {
            let mut m = node_fields(&p.node, p.creation);
            m.insert("id".into(), Value::Number(p.id.into()));
            tagged("$port", Value::Object(m))
        }
        Term::Reference(r) => {
            let mut m = node_fields(&r.node, r.creation);
            m.insert(
                "id".into(),
                Value::Array(r.id.iter().map(|&i| Value::Number(i.into())).collect()),
            );
            tagged("$ref", Value::Object(m))
        }
        Term::ExternalFun(_) | Term::InternalFun(_) => {
            tagged("$term", Value::String(B64.encode(crate::encode(t))))
        }
    }
}

fn map_to_json(m: &eetf::Map, o: &JsonOptions) -> Value {
    // Object form when every key is a UTF-8 binary (or an atom, by default), no two
    // keys spell the same string, and the object cannot be mistaken for a tagged form.
    let mut obj = JsonMap::with_capacity(m.map.len());
    let mut plain = true;
    for k in m.map.keys() {
        let name = match k {
            Term::Binary(_) => k.as_str(),
            Term::Atom(a) if o.atom_keys == AtomKeys::AsStrings => Some(a.name.as_str()),
            _ => None,
        };
        match name {
            Some(n) if !obj.contains_key(n) => {
                obj.insert(n.to_owned(), Value::Null);
            }
            _ => {
                plain = false;
                break;
            }
        }
    }
    if plain {
        for (k, v) in &m.map {
            let name = k.as_str().or_else(|| k.as_atom()).unwrap_or_default();
            obj.insert(name.to_owned(), term_to_json_with(v, o));
        }
        // A one-key object that would read back as a tagged form takes the `$map` form.
        let mistaken = obj.len() == 1
            && obj
                .iter()
                .next()
                .is_some_and(|(k, v)| k.starts_with('$') && untag(k, v, o).is_some());
        if !mistaken {
            return Value::Object(obj);
        }
    }
    let mut entries: Vec<(&Term, &Term)> = m.map.iter().collect();
    entries.sort_by(|a, b| crate::order::compare_exact(a.0, b.0));
    tagged(
        "$map",
        Value::Array(
            entries
                .into_iter()
                .map(|(k, v)| Value::Array(vec![term_to_json_with(k, o), term_to_json_with(v, o)]))
                .collect(),
        ),
    )
}

/// JSON as a term (default options). Never fails: an object that looks like a tagged
/// form but does not hold one exactly as [`term_to_json`] writes it is an ordinary map.
pub fn json_to_term(v: &Value) -> Term {
    json_to_term_with(v, &JsonOptions::default())
}

/// JSON as a term, reading tagged forms as [`term_to_json_with`] writes them with the
/// same options.
pub fn json_to_term_with(v: &Value, o: &JsonOptions) -> Term {
    match v {
        Value::Null => atom("nil"),
        Value::Bool(b) => atom(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                int(i)
            } else if let Some(u) = n.as_u64() {
                int(u)
            } else {
                float(n.as_f64().unwrap_or(0.0))
            }
        }
        Value::String(s) => binary(s.as_bytes().to_vec()),
        Value::Array(a) => list(a.iter().map(|e| json_to_term_with(e, o)).collect()),
        Value::Object(obj) => {
            if obj.len() == 1 {
                if let Some((k, inner)) = obj.iter().next() {
                    if let Some(t) = untag(k, inner, o) {
                        return t;
                    }
                }
            }
            map(obj
                .iter()
                .map(|(k, v)| (binary(k.as_bytes().to_vec()), json_to_term_with(v, o))))
        }
    }
}

fn u32_of(v: Option<&Value>) -> Option<u32> {
    v?.as_u64().and_then(|x| u32::try_from(x).ok())
}

fn node_of(m: &JsonMap<String, Value>) -> Option<(Atom, u32)> {
    let node = m.get("node")?.as_str()?;
    if node.chars().count() > 255 {
        return None;
    }
    Some((Atom::from(node), u32_of(m.get("creation"))?))
}

/// A tagged form, accepted only when term → JSON would write this very JSON for it, so
/// that JSON → term → JSON is the identity.
fn untag(tag: &str, v: &Value, o: &JsonOptions) -> Option<Term> {
    if !tag.starts_with('$') {
        return None;
    }
    let t = untag_any(tag, v, o)?;
    match term_to_json_with(&t, o) {
        Value::Object(m) if m.len() == 1 && m.get(tag) == Some(v) => Some(t),
        _ => None,
    }
}

fn untag_any(tag: &str, v: &Value, o: &JsonOptions) -> Option<Term> {
    let j = |x: &Value| json_to_term_with(x, o);
    Some(match tag {
        "$atom" => {
            let s = v.as_str()?;
            // These three have their own JSON forms; a tagged one would not come back.
            if matches!(s, "nil" | "true" | "false") || s.chars().count() > 255 {
                return None;
            }
            atom(s)
        }
        "$int" => {
            let s = v.as_str()?;
            if s.len() > 4096 {
                return None;
            }
            let b: BigInt = s.parse().ok()?;
            Term::BigInteger(eetf::BigInteger { value: b })
        }
        "$binary" => {
            let bytes = B64.decode(v.as_str()?).ok()?;
            binary(bytes)
        }
        "$bitstring" => {
            let m = v.as_object()?;
            if m.len() != 2 {
                return None;
            }
            let data = m.get("data")?.as_str()?;
            let bytes = B64.decode(data).ok()?;
            let bits = u8::try_from(m.get("bits")?.as_u64()?).ok()?;
            if bytes.is_empty() || !(1..8).contains(&bits) || B64.encode(&bytes) != data {
                return None;
            }
            let mask = 0xffu8 << (8 - bits);
            if bytes.last().is_some_and(|l| l & !mask != 0) {
                return None;
            }
            Term::BitBinary(eetf::BitBinary {
                bytes,
                tail_bits_size: bits,
            })
        }
        "$tuple" => tuple(v.as_array()?.iter().map(j).collect()),
        "$improper" => {
            let m = v.as_object()?;
            let elements = m.get("elements")?.as_array()?;
            let tail = j(m.get("tail")?);
            improper_list(elements.iter().map(j).collect(), tail)
        }
        "$map" => {
            let mut out = std::collections::HashMap::new();
            for e in v.as_array()? {
                match e.as_array()?.as_slice() {
                    [k, val] => {
                        if out.insert(j(k), j(val)).is_some() {
                            return None;
                        }
                    }
                    _ => return None,
                }
            }
            Term::Map(eetf::Map { map: out })
        }
        "$pid" => {
            let m = v.as_object()?;
            let (node, creation) = node_of(m)?;
            if m.len() != 4 {
                return None;
            }
            Term::Pid(Pid {
                node,
                id: u32_of(m.get("id"))?,
                serial: u32_of(m.get("serial"))?,
                creation,
            })
        }
        "$port" => {
            let m = v.as_object()?;
            let (node, creation) = node_of(m)?;
            if m.len() != 3 {
                return None;
            }
            Term::Port(Port {
                node,
                id: m.get("id")?.as_u64()?,
                creation,
            })
        }
        "$ref" => {
            let m = v.as_object()?;
            let (node, creation) = node_of(m)?;
            let ids = m.get("id")?.as_array()?;
            if m.len() != 3 || ids.is_empty() || ids.len() > 5 {
                return None;
            }
            let id = ids
                .iter()
                .map(|x| u32_of(Some(x)))
                .collect::<Option<Vec<_>>>()?;
            Term::Reference(Box::new(Reference { node, id, creation }))
        }
        "$term" => {
            let bytes = B64.decode(v.as_str()?).ok()?;
            let t = crate::decode(&bytes, &crate::DecodeLimits::default()).ok()?;
            if !matches!(t, Term::ExternalFun(_) | Term::InternalFun(_)) {
                return None;
            }
            t
        }
        _ => return None,
    })
}
