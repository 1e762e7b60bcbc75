//! Every golden vector decodes, re-encodes and compares: byte for byte where OTP's
//! output is deterministic, by value elsewhere.

use std::path::Path;

use gater_term::order::exact_eq;
use gater_term::{AtomEncoding, DecodeLimits, EncodeOptions, Term, decode, encode_with};

/// Vectors whose bytes OTP writes in a form this encoder does not reproduce, and why.
const NOT_BYTE_EXACT: &[(&str, &str)] = &[
    (
        "float_minor_version_0",
        "old textual FLOAT_EXT: re-encoded as NEW_FLOAT_EXT",
    ),
    (
        "map_large",
        "more than 32 keys: OTP writes a hash-ordered map, we sort",
    ),
    (
        "event_batch_3_compressed",
        "compressed: compared after inflating",
    ),
];

fn etf_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "etf"))
        .collect();
    v.sort();
    v
}

fn reencode(t: &Term, atoms: AtomEncoding) -> Vec<u8> {
    let mut out = Vec::new();
    encode_with(t, &EncodeOptions { atoms }, &mut out);
    out
}

#[test]
fn term_vectors_decode_and_reencode_byte_exact() {
    let Some(dir) = gater_testkit::vectors::vectors_subdir("term") else {
        return;
    };
    let files = etf_files(&dir);
    assert!(
        files.len() >= 40,
        "expected the term vectors in {}",
        dir.display()
    );
    let mut exact = 0;
    for path in &files {
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let bytes = std::fs::read(path).expect("read vector");
        let term =
            decode(&bytes, &DecodeLimits::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let again = reencode(&term, AtomEncoding::Latin1);
        let back = decode(&again, &DecodeLimits::default()).expect("re-encoded decodes");
        assert!(
            exact_eq(&term, &back),
            "{name}: value changed through re-encoding"
        );
        if NOT_BYTE_EXACT.iter().any(|(n, _)| *n == name) {
            continue;
        }
        assert_eq!(again, bytes, "{name}: bytes differ from OTP's");
        exact += 1;
    }
    eprintln!("{exact} of {} term vectors byte-exact", files.len());
}

#[test]
fn compressed_vector_equals_the_plain_one() {
    let Some(dir) = gater_testkit::vectors::vectors_subdir("term") else {
        return;
    };
    let plain = std::fs::read(dir.join("event_batch_3.etf")).expect("read");
    let packed = std::fs::read(dir.join("event_batch_3_compressed.etf")).expect("read");
    assert_eq!(packed[1], 80, "the compressed vector starts with tag 80");
    let a = decode(&plain, &DecodeLimits::default()).expect("plain");
    let b = decode(&packed, &DecodeLimits::default()).expect("compressed");
    assert!(exact_eq(&a, &b));
    // Our own compression reads back to the same value.
    let ours = gater_term::encode_compressed(&b, 6);
    assert!(exact_eq(
        &decode(&ours, &DecodeLimits::default()).expect("ours"),
        &a
    ));
    // A declared size above the limit is refused before inflating.
    let small = DecodeLimits {
        max_bytes: 100,
        ..DecodeLimits::default()
    };
    assert!(matches!(
        decode(&packed, &small),
        Err(gater_term::DecodeError::TooLarge { .. })
    ));
}

#[test]
fn exesdb_real_vectors_decode_and_reencode() {
    let Some(dir) = gater_testkit::vectors::vectors_subdir("exesdb-real") else {
        return;
    };
    let files = etf_files(&dir);
    assert!(!files.is_empty());
    let (mut exact, mut by_value) = (0, Vec::new());
    for path in &files {
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let bytes = std::fs::read(path).expect("read vector");
        let term =
            decode(&bytes, &DecodeLimits::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        // OTP 27 writes atoms as UTF-8.
        let again = reencode(&term, AtomEncoding::Utf8);
        let back = decode(&again, &DecodeLimits::default()).expect("re-encoded decodes");
        assert!(
            exact_eq(&term, &back),
            "{name}: value changed through re-encoding"
        );
        if again == bytes {
            exact += 1;
        } else {
            by_value.push(name.to_owned());
        }
    }
    // OTP 26+ orders atom keys of small maps by atom index, not by name: those compare
    // by value.
    eprintln!(
        "{exact} of {} exesdb-real vectors byte-exact; by value: {by_value:?}",
        files.len()
    );
}
