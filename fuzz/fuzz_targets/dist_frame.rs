//! The distribution frame reader and the protocol core on untrusted bytes, as a
//! connection task sees them after the handshake: 4-byte lengths, ticks, pass-through
//! frames with a control message and an optional payload. Whatever arrives must end as
//! a frame count or a close reason, never a panic or an allocation past the cap.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A small cap so the fuzzer reaches both sides of it; the real default is larger.
    let _ = gater_pool::fuzzing::read_frames(data, 64 * 1024);
    // Most frames must start with tag 112 to reach the term decoder: also try the
    // input as the body of one well-formed pass-through frame.
    if data.len() < 60_000 {
        let mut framed = Vec::with_capacity(data.len() + 5);
        framed.extend_from_slice(&((data.len() + 1) as u32).to_be_bytes());
        framed.push(112);
        framed.extend_from_slice(data);
        let _ = gater_pool::fuzzing::read_frames(&framed, 64 * 1024);
    }
});
