//! Entry point for the `http_body` fuzz target (`fuzz/fuzz_targets/http_body.rs`): the
//! body checks of the append, subscription and snapshot routes on untrusted bytes,
//! exactly as the handlers run them, without a cluster. Not a stable API.

use axum::body::Bytes;
use axum::http::StatusCode;

use crate::{input, records, routes};

/// Which route's body `bytes` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// `POST .../streams/{stream}/events`
    Append,
    /// `POST` / `DELETE .../subscriptions`
    Subscription,
    /// `PUT .../snapshots/...`
    Snapshot,
    /// `POST .../subscriptions/{name}/ack`
    Ack,
}

impl BodyKind {
    /// Every kind, for picking one from a fuzz input's first byte.
    pub const ALL: [BodyKind; 4] = [
        BodyKind::Append,
        BodyKind::Subscription,
        BodyKind::Snapshot,
        BodyKind::Ack,
    ];
}

/// Runs the checks of `kind` on `bytes`. Panics (a finding) if a check panics, if a
/// refusal is not a 400 naming a field, or if an accepted value breaks an invariant:
/// every term accepted must decode back from its encoding within the default limits
/// (so the cluster's answer can be read), and events must serialize to the same JSON
/// through the direct serializer as through `term_to_json`.
/// Returns whether the body was accepted.
pub fn check_body(kind: BodyKind, bytes: &[u8]) -> bool {
    let result = run(kind, bytes);
    match result {
        Ok(()) => true,
        Err(e) => {
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{e:?}");
            assert!(
                e.extra.get("field").and_then(|f| f.as_str()).is_some(),
                "a refusal names its field: {e:?}"
            );
            false
        }
    }
}

fn run(kind: BodyKind, bytes: &[u8]) -> Result<(), crate::ApiError> {
    let body = input::json_body(Ok(Bytes::copy_from_slice(bytes)))?;
    match kind {
        BodyKind::Append => {
            if !body.is_object() {
                return Err(crate::ApiError::bad_field(
                    "body",
                    "must be an object with `events`",
                ));
            }
            let events = records::new_events(&body)?;
            match body.get("expected_version") {
                None | Some(serde_json::Value::Null) => {}
                v => {
                    records::expected_version(v)?;
                }
            }
            for e in &events {
                readable(&e.to_term());
                for d in std::iter::once(&e.data).chain(e.metadata.as_ref()) {
                    if let gater_api::EventData::Json(v) = d {
                        same_json(&gater_term::json::json_to_term(v));
                    }
                }
            }
        }
        BodyKind::Subscription => {
            let sub = routes::subscription_from("store", &body)?;
            if let gater_api::Selector::EventPattern(t) | gater_api::Selector::EventPayload(t) =
                &sub.selector
            {
                readable(t);
                same_json(t);
            }
            let _ = records::selector_json(&sub.selector);
        }
        BodyKind::Snapshot => {
            let t = records::checked_term("body", &body)?;
            readable(&t);
            same_json(&t);
        }
        BodyKind::Ack => {
            routes::ack_target(&body)?;
        }
    }
    Ok(())
}

fn readable(t: &gater_term::Term) {
    let bytes = gater_term::encode(t);
    gater_term::decode(&bytes, &gater_term::DecodeLimits::default())
        .expect("an accepted value decodes back within the default limits");
}

fn same_json(t: &gater_term::Term) {
    let direct = serde_json::to_string(&records::TermJson(t)).expect("direct JSON");
    let via = serde_json::to_string(&gater_term::json::term_to_json(t)).expect("JSON value");
    assert_eq!(direct, via, "direct serializer differs from term_to_json");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_accepted_or_refused_with_a_field() {
        let ok = [
            (
                BodyKind::Append,
                r#"{"events":[{"event_type":"T","data":{"a":[1,2.5,null]},"metadata":{"m":true}}],"expected_version":"any"}"#,
            ),
            (
                BodyKind::Subscription,
                r#"{"type":"by_event_pattern","selector":{"k":"v"},"name":"p"}"#,
            ),
            (
                BodyKind::Subscription,
                r#"{"type":"by_stream","selector":"$all","name":"a"}"#,
            ),
            (
                BodyKind::Snapshot,
                r#"{"state":{"$int":"123456789012345678901234567890"}}"#,
            ),
            (BodyKind::Ack, r#"{"event_stream_id":"s","event_number":3}"#),
        ];
        for (kind, body) in ok {
            assert!(check_body(kind, body.as_bytes()), "{kind:?} {body}");
        }
        let refused = [
            (BodyKind::Append, "not json"),
            (BodyKind::Append, r#"{"events":[]}"#),
            (
                BodyKind::Append,
                r#"{"events":[{"event_type":"T"}],"expected_version":-2}"#,
            ),
            (
                BodyKind::Subscription,
                r#"{"type":"by_stream","selector":"x","name":"a"}"#,
            ),
            (BodyKind::Snapshot, "{\"a\": 1"),
            (
                BodyKind::Ack,
                r#"{"event_stream_id":"s","event_number":-1}"#,
            ),
        ];
        for (kind, body) in refused {
            assert!(!check_body(kind, body.as_bytes()), "{kind:?} {body}");
        }
    }
}
