//! The HTTP API's body checks on untrusted bytes: the append, subscription, snapshot
//! and ack bodies go through exactly the parsing and validation their handlers run
//! (`gater_http::fuzzing::check_body`). The first byte picks the route; the rest is the
//! body. A check must never panic, a refusal must be a 400 naming its field, and every
//! accepted value must decode back from its encoding within the default limits and
//! serialize to the same JSON through the direct serializer as through `term_to_json`.
#![no_main]

use gater_http::fuzzing::{BodyKind, check_body};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let kind = BodyKind::ALL[usize::from(which) % BodyKind::ALL.len()];
    check_body(kind, body);
});
