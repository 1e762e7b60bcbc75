//! The JSON side of the HTTP API on untrusted bodies: serde_json parsing (its recursion
//! limit on), then the JSON → term mapping gater-http applies to append bodies
//! (`{"events": [{"event_type", "data", "metadata", "event_id"}], "expected_version"}`)
//! and selectors. The mapping must never panic, every term it makes must encode and
//! decode back to itself, and term → JSON → term must be the identity.
#![no_main]

use gater_term::json::{json_to_term, term_to_json};
use gater_term::{DecodeLimits, decode, encode, order::exact_eq};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    // Whole body, then each field the append route maps to a term.
    let mut values = vec![&body];
    if let Some(events) = body.get("events").and_then(Value::as_array) {
        for e in events {
            for f in ["data", "metadata", "event_type", "event_id"] {
                if let Some(v) = e.get(f) {
                    values.push(v);
                }
            }
        }
    }
    if let Some(v) = body.get("expected_version") {
        values.push(v);
    }
    // Wide limits: the point is the round trip. (JSON `{"$int": "<2500+ digits>"}`
    // makes a bignum past the default 1024-byte decode limit: the mapping builds terms
    // the gateway's own decoder refuses; see docs/reliability.md.)
    let limits = DecodeLimits {
        max_depth: 512,
        max_elements: 1 << 22,
        max_bytes: 1 << 26,
        max_bigint_bytes: 1 << 20,
        ..DecodeLimits::default()
    };
    for v in values {
        let term = json_to_term(v);
        let bytes = encode(&term);
        let back = decode(&bytes, &limits).expect("a term made from JSON decodes");
        assert!(exact_eq(&term, &back), "encode/decode changed the term");
        let json = term_to_json(&term);
        let again = json_to_term(&json);
        assert!(
            exact_eq(&term, &again),
            "term -> JSON -> term changed the term"
        );
    }
});
