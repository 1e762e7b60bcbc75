//! JSON shapes of records, and JSON bodies into typed requests.

use gater_api::{
    EventData, EventRecord, ExpectedVersion, NewEvent, Selector, SnapshotRecord, SubscriptionInfo,
};
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;

use crate::error::ApiError;
use crate::limits::MAX_EVENTS_PER_APPEND;

/// JSON from a client as the term sent to the cluster, refused (400 naming `field`) when
/// the gateway could not decode that term when the cluster sends it back: a `$int`
/// bignum past the decoding limit, nesting too deep, a `$term` that does not decode, and
/// so on. Without this check such a value would be stored and poison every later read of
/// its stream (or the store's subscription list).
pub fn checked_term(field: &str, v: &Value) -> Result<gater_term::Term, ApiError> {
    let term = gater_term::json::json_to_term(v);
    let bytes = gater_term::try_encode(&term)
        .map_err(|e| ApiError::bad_field(field, format!("cannot be stored: {e}")))?;
    // Leave room for the record the value travels in (EventRecord, snapshot map, ...).
    let d = gater_term::DecodeLimits::default();
    let limits = gater_term::DecodeLimits {
        max_depth: d.max_depth.saturating_sub(8),
        ..d
    };
    gater_term::decode(&bytes, &limits).map_err(|e| {
        ApiError::bad_field(
            field,
            format!("could not be read back from the cluster ({e})"),
        )
    })?;
    Ok(term)
}

/// An event as the API returns it, serialized straight from the record: no JSON value
/// is built for its data and metadata ([`TermJson`]) nor a string for its time.
#[derive(Debug, serde::Serialize)]
pub struct EventOut<'a> {
    event_stream_id: &'a str,
    event_number: i64,
    event_id: &'a str,
    event_type: &'a str,
    data: TermJson<'a>,
    metadata: TermJson<'a>,
    created: Rfc3339Out,
    created_epoch: i64,
}

impl<'a> EventOut<'a> {
    /// The JSON shape of `e`.
    pub fn new(e: &'a EventRecord) -> Self {
        Self {
            event_stream_id: &e.stream_id,
            event_number: e.event_number,
            event_id: &e.event_id,
            event_type: &e.event_type,
            data: TermJson(&e.data),
            metadata: TermJson(&e.metadata),
            created: Rfc3339Out(e.created),
            created_epoch: e.created_epoch,
        }
    }
}

/// A time as RFC 3339 text, formatted on the stack.
#[derive(Debug)]
struct Rfc3339Out(time::OffsetDateTime);

impl serde::Serialize for Rfc3339Out {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 64];
        let mut w = std::io::Cursor::new(&mut buf[..]);
        match self.0.format_into(&mut w, &Rfc3339) {
            Ok(n) => s.serialize_str(std::str::from_utf8(&buf[..n]).unwrap_or_default()),
            // Out of RFC 3339's range (or longer than the buffer): as before, empty.
            Err(_) => s.serialize_str(&self.0.format(&Rfc3339).unwrap_or_default()),
        }
    }
}

/// A term serialized as `gater_term::json::term_to_json` maps it (the same text), without
/// building the JSON value for the common shapes: `nil`/booleans/atoms, integers that fit
/// 32 bits, floats, UTF-8 binaries, proper lists, and maps whose keys are distinct UTF-8
/// binaries or atoms. Anything else goes through `term_to_json`.
#[derive(Debug, Clone, Copy)]
pub struct TermJson<'a>(pub &'a gater_term::Term);

impl serde::Serialize for TermJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use gater_term::Term;
        use serde::ser::{SerializeMap, SerializeSeq};
        match self.0 {
            Term::Atom(a) => match a.name.as_str() {
                "nil" => s.serialize_unit(),
                "true" => s.serialize_bool(true),
                "false" => s.serialize_bool(false),
                n => {
                    let mut m = s.serialize_map(Some(1))?;
                    m.serialize_entry("$atom", n)?;
                    m.end()
                }
            },
            Term::FixInteger(i) => s.serialize_i64(i64::from(i.value)),
            Term::Float(f) if f.value.is_finite() => s.serialize_f64(f.value),
            Term::Binary(b) => match std::str::from_utf8(&b.bytes) {
                Ok(text) => s.serialize_str(text),
                Err(_) => fallback(self.0, s),
            },
            Term::List(l) => {
                let mut seq = s.serialize_seq(Some(l.elements.len()))?;
                for e in &l.elements {
                    seq.serialize_element(&TermJson(e))?;
                }
                seq.end()
            }
            Term::Map(m) => {
                let mut entries: Vec<(&str, &Term)> = Vec::with_capacity(m.map.len());
                for (k, v) in &m.map {
                    let name = match k {
                        Term::Binary(b) => std::str::from_utf8(&b.bytes).ok(),
                        Term::Atom(a) => Some(a.name.as_str()),
                        _ => None,
                    };
                    match name {
                        Some(n) => entries.push((n, v)),
                        None => return fallback(self.0, s),
                    }
                }
                // serde_json's objects are sorted by key; two keys that spell the same
                // text, or one `$` key (maybe a tagged form), take the general path.
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                let clash = entries.windows(2).any(|w| w[0].0 == w[1].0);
                let maybe_tagged = entries.len() == 1 && entries[0].0.starts_with('$');
                if clash || maybe_tagged {
                    return fallback(self.0, s);
                }
                let mut out = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    out.serialize_entry(k, &TermJson(v))?;
                }
                out.end()
            }
            _ => fallback(self.0, s),
        }
    }
}

fn fallback<S: serde::Serializer>(t: &gater_term::Term, s: S) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&gater_term::json::term_to_json(t), s)
}

/// A read's body as JSON bytes, written in one buffer sized for the events.
pub fn events_body(events: &[EventRecord]) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Body<'a> {
        events: EventsSeq<'a>,
    }
    struct EventsSeq<'a>(&'a [EventRecord]);
    impl serde::Serialize for EventsSeq<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(self.0.iter().map(EventOut::new))
        }
    }
    let mut out = Vec::with_capacity(16 + events.len() * 320);
    // Serializing these types cannot fail (no map with non-string keys, no I/O).
    let _ = serde_json::to_writer(
        &mut out,
        &Body {
            events: EventsSeq(events),
        },
    );
    out
}

/// An event as JSON text (one SSE `data:` line).
pub fn event_json_text(e: &EventRecord) -> String {
    serde_json::to_string(&EventOut::new(e)).unwrap_or_default()
}

/// A snapshot as the API returns it.
pub fn snapshot_json(s: &SnapshotRecord) -> Value {
    json!({
        "source_uuid": s.source_uuid,
        "stream_uuid": s.stream_uuid,
        "version": s.version,
        "record": s.record_json(),
    })
}

/// A subscription as the API returns it.
pub fn subscription_json(s: &SubscriptionInfo) -> Value {
    let (ty, selector) = selector_json(&s.selector);
    json!({
        "name": s.name,
        "type": ty,
        "selector": selector,
        "start_from": s.start_from,
        "persistent": s.name != "transient",
    })
}

/// `(type, selector)` of a selector as JSON.
pub fn selector_json(s: &Selector) -> (&'static str, Value) {
    let sel = match s {
        Selector::AllStreams => json!("$all"),
        Selector::Stream(st) => json!(format!("${st}")),
        Selector::EventType(t) => json!(t),
        Selector::EventPattern(m) | Selector::EventPayload(m) => gater_term::json::term_to_json(m),
    };
    (s.type_name(), sel)
}

/// The selector of a POST /subscriptions body.
pub fn selector_from(ty: &str, sel: &Value) -> Result<Selector, ApiError> {
    let text = || {
        sel.as_str()
            .filter(|s| !s.is_empty() && s.len() <= 255)
            .ok_or_else(|| {
                ApiError::bad_field("selector", "must be a non-empty string for this type")
            })
    };
    Ok(match ty {
        "by_stream" => {
            let s = text()?;
            match s {
                "$all" => Selector::AllStreams,
                _ => match s.strip_prefix('$') {
                    Some(st) if !st.is_empty() => Selector::Stream(st.to_owned()),
                    _ => {
                        return Err(ApiError::bad_field(
                            "selector",
                            "by_stream takes \"$all\" or \"$<stream>\"",
                        ));
                    }
                },
            }
        }
        "by_event_type" => Selector::EventType(text()?.to_owned()),
        "by_event_pattern" | "by_event_payload" => {
            if !sel.is_object() {
                return Err(ApiError::bad_field(
                    "selector",
                    "must be an object for this type",
                ));
            }
            let t = checked_term("selector", sel)?;
            if ty == "by_event_pattern" {
                Selector::EventPattern(t)
            } else {
                Selector::EventPayload(t)
            }
        }
        _ => {
            return Err(ApiError::bad_field(
                "type",
                "must be by_stream, by_event_type, by_event_pattern or by_event_payload",
            ));
        }
    })
}

/// `expected_version`: an integer ≥ -1, `"any"`, `"stream_exists"` or `"no_stream"`.
pub fn expected_version(v: Option<&Value>) -> Result<ExpectedVersion, ApiError> {
    let bad = || {
        ApiError::bad_field(
            "expected_version",
            "must be an integer >= -1, \"any\", \"stream_exists\" or \"no_stream\"",
        )
    };
    Ok(match v {
        None | Some(Value::Null) => ExpectedVersion::Any,
        Some(Value::String(s)) => match s.as_str() {
            "any" => ExpectedVersion::Any,
            "stream_exists" => ExpectedVersion::StreamExists,
            "no_stream" => ExpectedVersion::NoStream,
            _ => return Err(bad()),
        },
        Some(Value::Number(n)) => match n.as_i64() {
            Some(-1) => ExpectedVersion::NoStream,
            Some(i) if i >= 0 => ExpectedVersion::Exact(i),
            _ => return Err(bad()),
        },
        Some(_) => return Err(bad()),
    })
}

/// The events of an append body.
pub fn new_events(body: &Value) -> Result<Vec<NewEvent>, ApiError> {
    let list = body
        .get("events")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::bad_field("events", "must be a list of events"))?;
    if list.is_empty() || list.len() > MAX_EVENTS_PER_APPEND {
        return Err(ApiError::bad_field(
            "events",
            format!("must hold 1 to {MAX_EVENTS_PER_APPEND} events"),
        ));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, e) in list.iter().enumerate() {
        let field = |f: &str| format!("events[{i}].{f}");
        if !e.is_object() {
            return Err(ApiError::bad_field(
                &format!("events[{i}]"),
                "must be an object",
            ));
        }
        let ty = e
            .get("event_type")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty() && t.len() <= 255)
            .ok_or_else(|| {
                ApiError::bad_field(&field("event_type"), "must be a non-empty string")
            })?;
        let data = e.get("data").cloned().unwrap_or(Value::Null);
        checked_term(&field("data"), &data)?;
        let mut ev = NewEvent::json(ty, data);
        match e.get("event_id") {
            None | Some(Value::Null) => {}
            Some(Value::String(id)) if !id.is_empty() && id.len() <= 255 => {
                ev = ev.with_id(id.clone())
            }
            Some(_) => {
                return Err(ApiError::bad_field(
                    &field("event_id"),
                    "must be a non-empty string",
                ));
            }
        }
        match e.get("metadata") {
            None | Some(Value::Null) => {}
            Some(m) => {
                checked_term(&field("metadata"), m)?;
                ev = ev.with_metadata(EventData::Json(m.clone()));
            }
        }
        out.push(ev);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gater_term::build::*;

    /// The direct serializer writes exactly what `term_to_json` would.
    pub(crate) fn assert_same_json(t: &gater_term::Term) {
        let direct = serde_json::to_string(&TermJson(t)).expect("direct");
        let via_value =
            serde_json::to_string(&gater_term::json::term_to_json(t)).expect("via value");
        assert_eq!(direct, via_value, "{t:?}");
    }

    #[test]
    fn term_json_matches_term_to_json() {
        let samples = vec![
            atom("nil"),
            atom("true"),
            atom("false"),
            atom("ok"),
            int(7),
            int(-(1i128 << 31)),
            int(1i128 << 40),
            int(1i128 << 70),
            float(1.5),
            float(f64::NAN),
            float(f64::INFINITY),
            float(-0.0),
            binary("text ä \"q\" \n".as_bytes()),
            binary(vec![0xff, 0xfe]),
            string("abc"),
            list(vec![]),
            list(vec![int(1), binary("x"), atom("nil")]),
            improper_list(vec![int(1)], int(2)),
            tuple(vec![int(1), atom("a")]),
            map([]),
            map([
                (binary("b"), int(2)),
                (binary("a"), int(1)),
                (atom("c"), int(3)),
            ]),
            // Keys that spell the same text.
            map([(binary("a"), int(1)), (atom("a"), int(2))]),
            // One `$` key: a tagged form, or not.
            map([(binary("$atom"), binary("x"))]),
            map([(binary("$atom"), int(1))]),
            map([(binary("$x"), int(1))]),
            map([(binary("$atom"), binary("x")), (binary("b"), int(1))]),
            // Keys JSON cannot name.
            map([(int(1), int(2))]),
            map([(binary(vec![0xff]), int(2))]),
            map([(
                binary("nested"),
                map([(binary("l"), list(vec![map([(atom("k"), float(2.25))])]))]),
            )]),
            pid("n@h", 1, 2, 3),
            reference("n@h", &[1, 2, 3], 4),
        ];
        for t in &samples {
            assert_same_json(t);
        }
        for text in [
            r#"{"i": 1, "s": "x", "a": [1, 2.5, null, true, {"z": {}}]}"#,
            r#"{"$int": "123456789012345678901234567890"}"#,
            r#"{"$map": [[1, 2]]}"#,
            r#"[{"$tuple": [1]}, {"$binary": "AAE="}]"#,
        ] {
            let v: serde_json::Value = serde_json::from_str(text).expect("json");
            assert_same_json(&gater_term::json::json_to_term(&v));
        }
    }
}
