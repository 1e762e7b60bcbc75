//! The codec against heartbeats captured from libcluster 3.5 on OTP 27
//! (`../shared/vectors/exesdb-real/gossip_heartbeat_*`).

use std::path::{Path, PathBuf};

use gater_gossip::packet::{self, IV_LEN};
use gater_gossip::{HeartbeatCodec, NodeName, Rejection, Secret};

const SECRET: &str = "test-secret";
const NODE: &str = "client@127.0.0.1";

fn vectors() -> Option<PathBuf> {
    gater_testkit::vectors::vectors_subdir("exesdb-real")
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn node() -> NodeName {
    NodeName::parse(NODE).expect("valid node name")
}

#[test]
fn decodes_and_reencodes_plain_heartbeats_byte_exact() {
    let Some(dir) = vectors() else { return };
    let codec = HeartbeatCodec::plain();
    for i in 1..=5 {
        let bytes = read(&dir, &format!("gossip_heartbeat_plain_{i}.bin"));
        assert_eq!(bytes.len(), 41);
        assert_eq!(codec.read(&bytes), Ok(node()), "plain_{i}");
        assert_eq!(packet::encode_plain(&node()), bytes, "plain_{i} re-encoded");
        assert_eq!(codec.write(&node(), [0; IV_LEN]), bytes);
    }
}

#[test]
fn opens_sealed_heartbeats_and_reseals_byte_exact() {
    let Some(dir) = vectors() else { return };
    let secret = Secret::new(SECRET);
    let codec = HeartbeatCodec::sealed(secret.clone());
    for i in 1..=5 {
        let sealed = read(&dir, &format!("gossip_heartbeat_secret_{i}.bin"));
        let plain = read(&dir, &format!("gossip_heartbeat_secret_{i}.plaintext.bin"));
        assert_eq!(sealed.len(), 64);
        assert_eq!(codec.read(&sealed), Ok(node()), "secret_{i}");
        assert_eq!(
            packet::open(&secret, &sealed).as_deref(),
            Ok(&plain[..]),
            "secret_{i} opened"
        );
        let iv: [u8; IV_LEN] = sealed[..IV_LEN].try_into().expect("16-byte IV");
        assert_eq!(
            packet::seal(&secret, iv, &plain),
            sealed,
            "secret_{i} resealed"
        );
        assert_eq!(codec.write(&node(), iv), sealed, "secret_{i} written");
    }
}

#[test]
fn iv_in_the_plaintext_notes_matches_the_datagram() {
    let Some(dir) = vectors() else { return };
    for i in 1..=5 {
        let sealed = read(&dir, &format!("gossip_heartbeat_secret_{i}.bin"));
        let notes = String::from_utf8(read(
            &dir,
            &format!("gossip_heartbeat_secret_{i}.plaintext.txt"),
        ))
        .expect("utf-8 notes");
        let iv_hex: String = sealed[..IV_LEN]
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        assert!(notes.contains(&format!("iv: {iv_hex}")), "secret_{i}");
    }
}

#[test]
fn real_heartbeats_are_rejected_with_the_wrong_mode_or_secret() {
    let Some(dir) = vectors() else { return };
    let wrong = HeartbeatCodec::sealed(Secret::new("not-the-secret"));
    let plain_codec = HeartbeatCodec::plain();
    for i in 1..=5 {
        let sealed = read(&dir, &format!("gossip_heartbeat_secret_{i}.bin"));
        assert!(matches!(
            wrong.read(&sealed),
            Err(Rejection::BadPadding | Rejection::NoPrefix)
        ));
        assert_eq!(plain_codec.read(&sealed), Err(Rejection::NoPrefix));
        // A plain heartbeat (41 bytes) sent to a listener that has a secret.
        let plain = read(&dir, &format!("gossip_heartbeat_plain_{i}.bin"));
        assert_eq!(
            HeartbeatCodec::sealed(Secret::new(SECRET)).read(&plain),
            Err(Rejection::NotBlockAligned)
        );
    }
}

#[test]
fn the_shared_term_codec_reads_the_heartbeat_term_the_same_way() {
    let Some(dir) = vectors() else { return };
    let bytes = read(&dir, "gossip_heartbeat_plain_1.bin");
    let etf = &bytes[packet::HEARTBEAT_PREFIX.len()..];
    let term = gater_term::decode(etf, &gater_term::DecodeLimits::default()).expect("valid ETF");
    let gater_term::Term::Map(map) = term else {
        panic!("not a map: {term:?}")
    };
    assert_eq!(map.map.len(), 1);
    let (k, v) = map.map.iter().next().expect("one entry");
    assert!(matches!(k, gater_term::Term::Atom(a) if a.name == "node"));
    assert!(matches!(v, gater_term::Term::Atom(a) if a.name == NODE));
}
