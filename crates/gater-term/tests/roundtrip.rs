//! Property tests: any term encodes and decodes back to itself.

use gater_term::eetf::{self, Term};
use gater_term::order::{compare, compare_exact, exact_eq};
use gater_term::{DecodeLimits, decode, encode};
use proptest::prelude::*;

fn leaf() -> impl Strategy<Value = Term> {
    prop_oneof![
        "[a-z_]{0,10}".prop_map(gater_term::build::atom),
        "\\PC{0,6}".prop_map(gater_term::build::atom),
        any::<i32>().prop_map(gater_term::build::int),
        any::<i64>().prop_map(gater_term::build::int),
        any::<i128>().prop_map(gater_term::build::int),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(gater_term::build::float),
        proptest::collection::vec(any::<u8>(), 0..20).prop_map(gater_term::build::binary),
        (proptest::collection::vec(any::<u8>(), 1..5), 1u8..8).prop_map(|(mut b, bits)| {
            if let Some(l) = b.last_mut() {
                *l &= 0xffu8 << (8 - bits);
            }
            Term::from(eetf::BitBinary {
                bytes: b,
                tail_bits_size: bits,
            })
        }),
        (any::<u32>(), any::<u32>(), any::<u32>())
            .prop_map(|(i, s, c)| gater_term::build::pid("n@h", i, s, c)),
        (proptest::collection::vec(any::<u32>(), 1..=5), any::<u32>())
            .prop_map(|(id, c)| gater_term::build::reference("n@h", &id, c)),
        (any::<u64>(), any::<u32>()).prop_map(|(id, creation)| Term::from(eetf::Port {
            node: eetf::Atom::from("n@h"),
            id,
            creation
        })),
    ]
}

fn term() -> impl Strategy<Value = Term> {
    leaf().prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(gater_term::build::list),
            proptest::collection::vec(inner.clone(), 0..8).prop_map(gater_term::build::tuple),
            (
                proptest::collection::vec(inner.clone(), 1..4),
                inner.clone()
            )
                .prop_map(|(e, t)| gater_term::build::improper_list(e, t)),
            proptest::collection::vec((inner.clone(), inner), 0..8)
                .prop_map(gater_term::build::map),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn encode_then_decode_is_identity(t in term()) {
        let bytes = encode(&t);
        let back = decode(&bytes, &DecodeLimits::default()).expect("decodes");
        prop_assert!(exact_eq(&t, &back), "{t:?} came back as {back:?}");
        // Encoding is deterministic and canonical.
        prop_assert_eq!(encode(&back), bytes);
    }

    #[test]
    fn compressed_round_trip(t in term()) {
        let packed = gater_term::encode_compressed(&t, 6);
        let back = decode(&packed, &DecodeLimits::default()).expect("decodes");
        prop_assert!(exact_eq(&t, &back));
    }

    #[test]
    fn term_order_is_a_total_order(a in term(), b in term(), c in term()) {
        prop_assert_eq!(compare_exact(&a, &b), compare_exact(&b, &a).reverse());
        prop_assert_eq!(compare(&a, &b), compare(&b, &a).reverse());
        if compare_exact(&a, &b).is_le() && compare_exact(&b, &c).is_le() {
            prop_assert!(compare_exact(&a, &c).is_le());
        }
    }
}
