//! Any datagram on the gossip port: the codec must reject or accept it without panicking,
//! and whatever it accepts must be a valid node name that re-encodes to a heartbeat
//! reading back the same. Runs the plain path, the sealed path (random and correctly
//! padded ciphertexts) and the EPMD names parser.
#![no_main]

use std::sync::LazyLock;

use gater_gossip::packet::{self, HEARTBEAT_PREFIX, IV_LEN};
use gater_gossip::{HeartbeatCodec, NodeName, Secret, epmd};
use libfuzzer_sys::fuzz_target;

static SECRET: LazyLock<Secret> = LazyLock::new(|| Secret::new("fuzz-secret"));

fn check(codec: &HeartbeatCodec, datagram: &[u8]) {
    if let Ok(node) = codec.read(datagram) {
        assert!(NodeName::parse(node.as_str()).is_ok());
        let again = codec.write(&node, [0x5a; IV_LEN]);
        assert_eq!(codec.read(&again).as_ref(), Ok(&node));
    }
}

fuzz_target!(|data: &[u8]| {
    let plain = HeartbeatCodec::plain();
    let sealed = HeartbeatCodec::sealed(SECRET.clone());
    // Raw, as it would arrive.
    check(&plain, data);
    check(&sealed, data);
    // With the prefix, so that the fuzzer spends its time in the term checks.
    let mut prefixed = HEARTBEAT_PREFIX.to_vec();
    prefixed.extend_from_slice(data);
    check(&plain, &prefixed);
    // Sealed correctly: opening must give back exactly the plaintext, and reading it must
    // agree with the plain path.
    let datagram = packet::seal(&SECRET, [7; IV_LEN], &prefixed);
    if datagram.len() <= packet::MAX_DATAGRAM_LEN {
        assert_eq!(
            packet::open(&SECRET, &datagram).as_deref(),
            Ok(&prefixed[..])
        );
        assert_eq!(sealed.read(&datagram), plain.read(&prefixed));
    }
    let _ = epmd::parse_names_reply(data);
});
