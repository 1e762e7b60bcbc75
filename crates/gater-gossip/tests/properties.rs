//! Property tests of the pure core: sealing round-trips, and no input makes it panic.

use gater_gossip::packet::{self, IV_LEN, MAX_DATAGRAM_LEN};
use gater_gossip::{Counters, HeartbeatCodec, NodeName, Rejection, Secret};
use proptest::prelude::*;

fn node_name() -> impl Strategy<Value = NodeName> {
    "[a-zA-Z0-9_-]{1,60}@[a-zA-Z0-9.:_-]{1,60}"
        .prop_map(|s| NodeName::parse(&s).expect("strategy yields valid names"))
}

proptest! {
    #[test]
    fn seal_then_open_gives_the_plaintext(
        secret in proptest::collection::vec(any::<u8>(), 0..64),
        iv in any::<[u8; IV_LEN]>(),
        plain in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        let secret = Secret::new(&secret);
        let sealed = packet::seal(&secret, iv, &plain);
        prop_assert_eq!(sealed.len() % 16, 0);
        prop_assert!(sealed.len() > plain.len() + IV_LEN);
        prop_assert_eq!(packet::open(&secret, &sealed), Ok(plain));
    }

    #[test]
    fn written_heartbeats_read_back(
        node in node_name(),
        iv in any::<[u8; IV_LEN]>(),
        secret in "[ -~]{0,40}",
    ) {
        for codec in [HeartbeatCodec::plain(), HeartbeatCodec::sealed(Secret::new(&secret))] {
            let datagram = codec.write(&node, iv);
            prop_assert!(datagram.len() <= MAX_DATAGRAM_LEN);
            prop_assert_eq!(codec.read(&datagram), Ok(node.clone()));
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1100)) {
        let mut counters = Counters::default();
        for codec in [HeartbeatCodec::plain(), HeartbeatCodec::sealed(Secret::new("s"))] {
            let outcome = codec.read(&bytes);
            counters.record(&outcome);
            if let Ok(node) = outcome {
                prop_assert!(NodeName::parse(node.as_str()).is_ok());
            }
        }
        prop_assert_eq!(counters.accepted + counters.rejected_total(), 2);
    }

    #[test]
    fn prefixed_random_terms_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut datagram = packet::HEARTBEAT_PREFIX.to_vec();
        datagram.push(131);
        datagram.extend_from_slice(&tail);
        let _ = HeartbeatCodec::plain().read(&datagram);
    }

    #[test]
    fn mutated_heartbeats_are_rejected_or_still_valid(
        node in node_name(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        iv in any::<[u8; IV_LEN]>(),
    ) {
        for codec in [HeartbeatCodec::plain(), HeartbeatCodec::sealed(Secret::new("k"))] {
            let mut datagram = codec.write(&node, iv);
            for (at, byte) in &flips {
                let i = at.index(datagram.len());
                datagram[i] ^= byte | 1;
            }
            match codec.read(&datagram) {
                Ok(n) => prop_assert!(NodeName::parse(n.as_str()).is_ok()),
                Err(r) => prop_assert!(Rejection::ALL.contains(&r)),
            }
        }
    }
}
