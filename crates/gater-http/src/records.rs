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

/// An event as the API returns it (serialized straight from the record, no map built).
#[derive(Debug, serde::Serialize)]
pub struct EventOut<'a> {
    event_stream_id: &'a str,
    event_number: i64,
    event_id: &'a str,
    event_type: &'a str,
    data: Value,
    metadata: Value,
    created: String,
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
            data: e.data_json(),
            metadata: e.metadata_json(),
            created: e.created.format(&Rfc3339).unwrap_or_default(),
            created_epoch: e.created_epoch,
        }
    }
}

/// The body of a read: `{"events": [...]}`.
#[derive(Debug, serde::Serialize)]
pub struct EventsOut<'a> {
    /// The events.
    pub events: Vec<EventOut<'a>>,
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
