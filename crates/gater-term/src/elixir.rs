//! Elixir's conventions over terms: `nil` and booleans, structs, keyword lists and
//! `DateTime`.
//!
//! With serde these come for free: `Option` is `nil` or the value, `bool` the atoms,
//! strings UTF-8 binaries, and a struct named `Elixir.…` an Elixir struct (see
//! [`ser`](crate::ser)). [`DateTime`] is the serde form of `'Elixir.DateTime'`.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

use crate::Term;
use crate::build::{atom, list, tuple};
use crate::error::DecodeError;
use crate::matching::TermExt;
use crate::raw::StaticAtom;

/// The atom `nil`.
pub fn nil() -> Term {
    atom("nil")
}

/// Is this the atom `nil`?
pub fn is_nil(t: &Term) -> bool {
    t.is_atom("nil")
}

/// The atom `true` or `false`.
pub fn boolean(b: bool) -> Term {
    atom(if b { "true" } else { "false" })
}

/// The atoms `true`/`false` as a `bool`.
pub fn as_bool(t: &Term) -> Option<bool> {
    match t.as_atom()? {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// `nil` for `None`, the value otherwise.
pub fn option(v: Option<Term>) -> Term {
    v.unwrap_or_else(nil)
}

/// `None` for `nil`, the term otherwise.
pub fn as_option(t: &Term) -> Option<&Term> {
    if is_nil(t) { None } else { Some(t) }
}

/// The module atom of an Elixir module name: `"DateTime"` and `"Elixir.DateTime"` both
/// give `Elixir.DateTime`.
pub fn module_atom(name: &str) -> String {
    if name.starts_with("Elixir.") {
        name.to_owned()
    } else {
        format!("Elixir.{name}")
    }
}

/// An Elixir struct: a map with atom keys and `'__struct__' => module`.
pub fn struct_term<'a>(module: &str, fields: impl IntoIterator<Item = (&'a str, Term)>) -> Term {
    let mut map: HashMap<Term, Term> = fields.into_iter().map(|(k, v)| (atom(k), v)).collect();
    map.insert(atom("__struct__"), atom(module_atom(module)));
    Term::Map(eetf::Map { map })
}

/// The fields of an Elixir struct of the given module (with or without `Elixir.`).
pub fn struct_fields<'a>(t: &'a Term, module: &str) -> Option<&'a HashMap<Term, Term>> {
    let name = t.struct_name()?;
    let m = name.strip_prefix("Elixir.").unwrap_or(name);
    let want = module.strip_prefix("Elixir.").unwrap_or(module);
    if m == want { t.as_map() } else { None }
}

/// A keyword list `[{key, value}, ...]` (keys are atoms, order and duplicates kept).
pub fn keyword<'a>(pairs: impl IntoIterator<Item = (&'a str, Term)>) -> Term {
    list(
        pairs
            .into_iter()
            .map(|(k, v)| tuple(vec![atom(k), v]))
            .collect(),
    )
}

/// The pairs of a keyword list, or `None` if it is not one.
pub fn keyword_pairs(t: &Term) -> Option<Vec<(&str, &Term)>> {
    let items = match t {
        Term::List(l) => &l.elements,
        _ => return None,
    };
    items
        .iter()
        .map(|e| match e.as_tuple()? {
            [k, v] => Some((k.as_atom()?, v)),
            _ => None,
        })
        .collect()
}

/// The first value under `key` in a keyword list (as `Keyword.get/2`).
pub fn keyword_get<'a>(t: &'a Term, key: &str) -> Option<&'a Term> {
    keyword_pairs(t)?
        .into_iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// An Elixir `DateTime` (`'Elixir.DateTime'` struct, ISO calendar) with microsecond
/// precision.
///
/// Written in UTC (`time_zone => <<"Etc/UTC">>`), as ExESDB writes `created`; read
/// from any offset (`utc_offset + std_offset`), which it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DateTime(pub OffsetDateTime);

impl From<OffsetDateTime> for DateTime {
    fn from(v: OffsetDateTime) -> Self {
        DateTime(v)
    }
}

impl DateTime {
    /// Microseconds since the Unix epoch (as ExESDB's `created_epoch`).
    pub fn unix_micros(&self) -> i64 {
        (self.0.unix_timestamp_nanos() / 1000) as i64
    }

    /// The date-time at a count of microseconds since the Unix epoch, in UTC.
    pub fn from_unix_micros(us: i64) -> Option<Self> {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
            .ok()
            .map(DateTime)
    }
}

/// The wire form; fields in term order so small-map bytes match OTP's.
#[derive(Serialize)]
#[serde(rename = "Elixir.DateTime")]
struct DateTimeOut<'a> {
    calendar: StaticAtom,
    day: u8,
    hour: u8,
    microsecond: (u32, u8),
    minute: u8,
    month: u8,
    second: u8,
    std_offset: i32,
    time_zone: &'a str,
    utc_offset: i32,
    year: i32,
    zone_abbr: &'a str,
}

#[derive(Deserialize)]
#[serde(rename = "Elixir.DateTime")]
struct DateTimeIn {
    #[serde(default)]
    calendar: Option<serde::de::IgnoredAny>,
    day: u8,
    hour: u8,
    microsecond: (u32, u8),
    minute: u8,
    month: u8,
    second: u8,
    #[serde(default)]
    std_offset: i32,
    #[serde(default)]
    time_zone: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    utc_offset: i32,
    year: i32,
    #[serde(default)]
    zone_abbr: Option<serde::de::IgnoredAny>,
}

impl Serialize for DateTime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            let text = self
                .0
                .format(&time::format_description::well_known::Rfc3339)
                .map_err(serde::ser::Error::custom)?;
            return s.serialize_str(&text);
        }
        let t = self.0.to_offset(UtcOffset::UTC);
        let (year, month, day) = t.to_calendar_date();
        let (hour, minute, second, micro) = t.to_hms_micro();
        DateTimeOut {
            calendar: StaticAtom("Elixir.Calendar.ISO"),
            day,
            hour,
            microsecond: (micro, 6),
            minute,
            month: u8::from(month),
            second,
            std_offset: 0,
            time_zone: "Etc/UTC",
            utc_offset: 0,
            year,
            zone_abbr: "UTC",
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for DateTime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            return OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc3339)
                .map(DateTime)
                .map_err(D::Error::custom);
        }
        let v = DateTimeIn::deserialize(d)?;
        let _ = (v.calendar, v.time_zone, v.zone_abbr);
        let month = Month::try_from(v.month).map_err(D::Error::custom)?;
        let date = Date::from_calendar_date(v.year, month, v.day).map_err(D::Error::custom)?;
        let time = Time::from_hms_micro(v.hour, v.minute, v.second, v.microsecond.0)
            .map_err(D::Error::custom)?;
        let offset = UtcOffset::from_whole_seconds(v.utc_offset.saturating_add(v.std_offset))
            .map_err(D::Error::custom)?;
        Ok(DateTime(
            PrimitiveDateTime::new(date, time).assume_offset(offset),
        ))
    }
}

/// A `DateTime` as a term.
pub fn datetime_to_term(dt: OffsetDateTime) -> Term {
    // Serializing a DateTime cannot fail: every field is in range.
    crate::to_term(&DateTime(dt)).unwrap_or_else(|_| nil())
}

/// A `'Elixir.DateTime'` struct as a date-time.
pub fn datetime_from_term(t: &Term) -> Result<OffsetDateTime, DecodeError> {
    crate::from_term::<DateTime>(t).map(|d| d.0)
}
