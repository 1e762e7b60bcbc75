//! Decodes arbitrary bytes with limits; whatever decodes must re-encode and decode to
//! the same value, and the typed (serde) path must not panic either.
#![no_main]

use gater_term::{DecodeLimits, decode, encode, order::exact_eq};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = DecodeLimits {
        max_depth: 64,
        max_elements: 1 << 16,
        max_bytes: 1 << 20,
        max_atom_len: 1020,
        max_bigint_bytes: 256,
    };
    // The version byte is implied for most inputs so the fuzzer reaches the tags fast.
    let owned;
    let bytes = if data.first() == Some(&131) {
        data
    } else {
        owned = [&[131u8][..], data].concat();
        &owned[..]
    };
    if let Ok(term) = decode(bytes, &limits) {
        let again = encode(&term);
        // Latin-1 atoms grow when written as UTF-8: allow for it on the way back.
        let lax = DecodeLimits {
            max_bytes: limits.max_bytes * 4,
            max_atom_len: limits.max_atom_len * 2,
            max_elements: limits.max_elements * 2,
            ..limits
        };
        let back = decode(&again, &lax).expect("re-encoded term must decode");
        assert!(exact_eq(&term, &back), "round trip changed the term");
    }
    let _ = gater_term::de::from_slice_with::<serde_json::Value>(bytes, &limits);
    let _ =
        gater_term::de::from_slice_with::<gater_term::records::EventRecordRef<'_>>(bytes, &limits);
    let _ =
        gater_term::de::from_slice_owned::<Vec<gater_term::records::EventRecord>>(bytes, &limits);
});
