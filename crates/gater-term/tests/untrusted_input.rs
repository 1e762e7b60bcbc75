//! Hostile and broken bytes: every limit and every malformation gives its typed error.

use gater_term::build::{atom, int, list, tuple};
use gater_term::{DecodeError, DecodeLimits, decode, decode_prefix, encode};
use proptest::prelude::*;

fn d(bytes: &[u8]) -> Result<gater_term::Term, DecodeError> {
    decode(bytes, &DecodeLimits::default())
}

#[test]
fn empty_and_bad_version() {
    assert_eq!(d(&[]), Err(DecodeError::UnexpectedEnd { offset: 0 }));
    assert_eq!(d(&[130, 106]), Err(DecodeError::BadVersion { found: 130 }));
}

#[test]
fn truncated_terms() {
    let full = encode(&tuple(vec![atom("ok"), int(1i64 << 40)]));
    for n in 1..full.len() {
        assert!(
            matches!(
                d(&full[..n]),
                Err(DecodeError::UnexpectedEnd { .. } | DecodeError::LengthExceedsInput { .. })
            ),
            "prefix of {n} bytes"
        );
    }
}

#[test]
fn trailing_bytes_and_prefix() {
    let mut b = encode(&atom("a"));
    let one = b.len();
    b.extend_from_slice(&encode(&int(5)));
    assert!(matches!(d(&b), Err(DecodeError::TrailingBytes { .. })));
    let (t, used) = decode_prefix(&b, &DecodeLimits::default()).expect("prefix");
    assert_eq!((t, used), (atom("a"), one));
    let (t, used2) = decode_prefix(&b[used..], &DecodeLimits::default()).expect("second");
    assert_eq!((t, used + used2), (int(5), b.len()));
}

#[test]
fn lengths_beyond_the_input_allocate_nothing() {
    // A list announcing 4 billion elements in 10 bytes.
    assert!(matches!(
        d(&[131, 108, 0xff, 0xff, 0xff, 0xff, 106]),
        Err(DecodeError::LengthExceedsInput { .. })
    ));
    // A map announcing 2^32-1 entries.
    assert!(matches!(
        d(&[131, 116, 0xff, 0xff, 0xff, 0xff]),
        Err(DecodeError::LengthExceedsInput { .. })
    ));
    // A binary announcing 4 GiB.
    assert!(matches!(
        d(&[131, 109, 0xff, 0xff, 0xff, 0xff, 1]),
        Err(DecodeError::UnexpectedEnd { .. })
    ));
}

#[test]
fn depth_limit() {
    let mut t = list(vec![]);
    for _ in 0..200 {
        t = list(vec![t]);
    }
    let b = encode(&t);
    assert_eq!(d(&b), Err(DecodeError::TooDeep { limit: 128 }));
    let lax = DecodeLimits {
        max_depth: 250,
        ..DecodeLimits::default()
    };
    assert!(decode(&b, &lax).is_ok());
    // The hard ceiling holds whatever the limits say.
    let mut b = vec![131];
    b.extend(std::iter::repeat_n([104u8, 1], 5000).flatten());
    b.push(106);
    let unbounded = DecodeLimits {
        max_depth: usize::MAX,
        ..DecodeLimits::default()
    };
    assert!(matches!(
        decode(&b, &unbounded),
        Err(DecodeError::TooDeep { limit: 256 })
    ));
}

#[test]
fn element_limit() {
    let t = list((0..100).map(|i| int(i * 1000)).collect());
    let small = DecodeLimits {
        max_elements: 50,
        ..DecodeLimits::default()
    };
    assert_eq!(
        decode(&encode(&t), &small),
        Err(DecodeError::TooManyElements { limit: 50 })
    );
}

#[test]
fn byte_limit() {
    let t = gater_term::build::binary(vec![7u8; 1000]);
    let small = DecodeLimits {
        max_bytes: 100,
        ..DecodeLimits::default()
    };
    assert!(matches!(
        decode(&encode(&t), &small),
        Err(DecodeError::TooLarge { .. })
    ));
}

#[test]
fn atom_and_bigint_limits() {
    let small = DecodeLimits {
        max_atom_len: 4,
        max_bigint_bytes: 8,
        ..DecodeLimits::default()
    };
    assert_eq!(
        decode(&encode(&atom("hello")), &small),
        Err(DecodeError::AtomTooLong { len: 5, limit: 4 })
    );
    assert_eq!(
        decode(&encode(&int(i128::MAX)), &small),
        Err(DecodeError::BigIntTooLarge { len: 16, limit: 8 })
    );
}

#[test]
fn malformed_terms() {
    // Invalid UTF-8 in a UTF-8 atom.
    assert!(matches!(
        d(&[131, 119, 1, 0xff]),
        Err(DecodeError::InvalidAtom { .. })
    ));
    // NaN.
    let mut nan = vec![131, 70];
    nan.extend_from_slice(&f64::NAN.to_bits().to_be_bytes());
    assert!(matches!(d(&nan), Err(DecodeError::InvalidFloat { .. })));
    // Bit binary with 9 bits in the last byte.
    assert!(matches!(
        d(&[131, 77, 0, 0, 0, 1, 9, 0]),
        Err(DecodeError::Malformed { .. })
    ));
    // Duplicate map keys.
    assert!(matches!(
        d(&[131, 116, 0, 0, 0, 2, 97, 1, 97, 1, 97, 1, 97, 2]),
        Err(DecodeError::DuplicateMapKey { .. })
    ));
    // Big integer with a bad sign byte.
    assert!(matches!(
        d(&[131, 110, 1, 2, 1]),
        Err(DecodeError::Malformed { .. })
    ));
    // A pid whose node is not an atom.
    assert!(matches!(
        d(&[131, 88, 97, 1]),
        Err(DecodeError::Malformed { .. })
    ));
    // A reference with no numbers.
    assert!(matches!(
        d(&[131, 90, 0, 0, 119, 1, b'a', 0, 0, 0, 0]),
        Err(DecodeError::Malformed { .. })
    ));
}

#[test]
fn unsupported_and_unknown_tags() {
    for tag in [121u8, 82, 68, 117] {
        assert!(
            matches!(
                d(&[131, tag, 0, 0, 0, 0]),
                Err(DecodeError::Unsupported { .. })
            ),
            "tag {tag}"
        );
    }
    assert_eq!(
        d(&[131, 1]),
        Err(DecodeError::UnknownTag { tag: 1, offset: 1 })
    );
}

#[test]
fn compressed_bombs_are_refused() {
    // Declared 1 GiB: above the limit.
    let mut b = vec![131, 80, 0x40, 0, 0, 0];
    b.extend_from_slice(&[0x78, 0x9c, 3, 0]);
    assert!(matches!(d(&b), Err(DecodeError::TooLarge { .. })));
    // Declared 10 MB from 4 bytes of zlib: impossible ratio, refused before allocating.
    let mut b = vec![131, 80, 0, 0x98, 0x96, 0x80];
    b.extend_from_slice(&[0x78, 0x9c, 3, 0]);
    assert!(matches!(d(&b), Err(DecodeError::Compression(_))));
    // Declared size smaller than the real one.
    let mut packed = gater_term::encode_compressed(&list((0..100).map(int).collect()), 6);
    packed[5] = packed[5].wrapping_sub(1);
    assert!(matches!(d(&packed), Err(DecodeError::Compression(_))));
    // Garbage instead of zlib.
    assert!(matches!(
        d(&[131, 80, 0, 0, 0, 4, 1, 2, 3, 4, 5]),
        Err(DecodeError::Compression(_))
    ));
}

#[test]
fn errors_say_what_happened() {
    let e = d(&[131, 1]).expect_err("unknown tag");
    assert_eq!(e.to_string(), "unknown tag 1 at byte 1");
    let e = DecodeError::TooDeep { limit: 3 };
    assert_eq!(e.to_string(), "term nested deeper than 3");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// No byte string makes the decoder panic; what decodes re-encodes to a term that
    /// decodes to the same value.
    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut b = vec![131];
        b.extend_from_slice(&body);
        if let Ok(t) = d(&b) {
            let again = encode(&t);
            let back = decode(&again, &DecodeLimits { max_atom_len: 4096, ..DecodeLimits::default() })
                .expect("re-encoded decodes");
            prop_assert!(gater_term::order::exact_eq(&t, &back));
        }
        let _ = gater_term::de::from_slice::<serde_json::Value>(&b);
    }
}

#[test]
fn compressed_prefix_reports_the_bytes_it_used() {
    let t = list((0..200).map(|i| int(i % 7)).collect());
    let mut b = gater_term::encode_compressed(&t, 6);
    let n = b.len();
    b.extend_from_slice(&encode(&atom("next")));
    let (got, used) = decode_prefix(&b, &DecodeLimits::default()).expect("prefix");
    assert!(gater_term::order::exact_eq(&got, &t));
    assert_eq!(used, n);
    assert_eq!(d(&b[used..]), Ok(atom("next")));
}
