//! The JSON mapping: JSON → term → JSON is the identity, and every term kind has a form.

use gater_term::build::{atom, binary, float, int, list, map, pid, reference, tuple};
use gater_term::json::{
    AtomKeys, JsonOptions, json_to_term, json_to_term_with, term_to_json, term_to_json_with,
};
use gater_term::order::exact_eq;
use gater_term::{DecodeLimits, Term, TermExt, decode};
use proptest::prelude::*;
use serde_json::{Value, json};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        any::<u64>().prop_map(|i| json!(i)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "\\PC{0,8}".prop_map(Value::String),
        // Strings that look like tagged forms.
        prop_oneof![
            Just("$atom"),
            Just("$int"),
            Just("$tuple"),
            Just("$map"),
            Just("$binary"),
            Just("$pid")
        ]
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map("\\PC{0,6}", inner.clone(), 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            // One-key objects whose key is a tag: valid and invalid tagged forms.
            (
                prop_oneof![
                    Just("$atom"),
                    Just("$int"),
                    Just("$tuple"),
                    Just("$map"),
                    Just("$binary"),
                    Just("$bitstring"),
                    Just("$improper"),
                    Just("$pid"),
                    Just("$ref"),
                    Just("$port"),
                    Just("$term"),
                    Just("$other")
                ],
                inner
            )
                .prop_map(|(k, v)| json!({ k: v })),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn json_to_term_to_json_is_identity(v in json_value()) {
        let t = json_to_term(&v);
        prop_assert_eq!(term_to_json(&t), v.clone());
        // And the term survives the external format.
        let back = decode(&gater_term::encode(&t), &DecodeLimits::default()).expect("decode");
        prop_assert_eq!(term_to_json(&back), v);
    }

    #[test]
    fn identity_with_safe_integers_within_2_53(v in json_value()) {
        let o = JsonOptions { safe_integers: true, atom_keys: AtomKeys::Tagged };
        let small = !serde_json::to_string(&v).unwrap_or_default().split(|c: char| !c.is_ascii_digit())
            .any(|d| d.len() >= 16);
        if small {
            prop_assert_eq!(term_to_json_with(&json_to_term_with(&v, &o), &o), v);
        }
    }
}

#[test]
fn every_term_kind_has_a_json_form_that_comes_back() {
    let terms = vec![
        atom("ok"),
        atom("nil"),
        int(1i128 << 70),
        float(1.5),
        binary(vec![0xff, 0]),
        binary(b"text".to_vec()),
        tuple(vec![atom("ok"), int(1)]),
        list(vec![int(1), int(2)]),
        gater_term::build::improper_list(vec![int(1)], atom("t")),
        pid("n@h", 1, 2, 3),
        reference("n@h", &[1, 2, 3], 4),
        Term::from(gater_term::eetf::Port {
            node: "n@h".into(),
            id: 7,
            creation: 1,
        }),
        Term::from(gater_term::eetf::BitBinary {
            bytes: vec![0xa0],
            tail_bits_size: 3,
        }),
        Term::from(gater_term::eetf::ExternalFun::from(("erlang", "node", 0))),
        map(vec![(
            list(vec![atom("subscriptions"), binary(b"h".to_vec())]),
            int(1),
        )]),
        map(vec![(binary(b"$atom".to_vec()), binary(b"x".to_vec()))]),
    ];
    let o = JsonOptions {
        atom_keys: AtomKeys::Tagged,
        safe_integers: true,
    };
    for t in terms {
        let j = term_to_json_with(&t, &o);
        let back = json_to_term_with(&j, &o);
        assert!(exact_eq(&back, &t), "{t:?} -> {j} -> {back:?}");
    }
}

#[test]
fn documented_examples() {
    assert_eq!(term_to_json(&atom("ok")), json!({"$atom": "ok"}));
    assert_eq!(
        term_to_json(&tuple(vec![atom("ok"), int(1)])),
        json!({"$tuple": [{"$atom": "ok"}, 1]})
    );
    assert_eq!(
        term_to_json(&binary(vec![0xff])),
        json!({"$binary": "/w=="})
    );
    assert_eq!(
        term_to_json(&int(1i128 << 70)),
        json!({"$int": "1180591620717411303424"})
    );
    let safe = JsonOptions {
        safe_integers: true,
        ..JsonOptions::default()
    };
    assert_eq!(
        term_to_json_with(&int(1i64 << 60), &safe),
        json!({"$int": "1152921504606846976"})
    );
    assert_eq!(term_to_json(&int(1i64 << 60)), json!(1u64 << 60));
    // Atom keys from ExESDB become plain keys by default (and come back as binaries).
    let m = gater_term::map! { atom("event_type") => "T" };
    assert_eq!(term_to_json(&m), json!({"event_type": "T"}));
    assert_eq!(
        json_to_term(&json!({"event_type": "T"}))
            .get_bin("event_type")
            .and_then(TermExt::as_str),
        Some("T")
    );
    let tagged = JsonOptions {
        atom_keys: AtomKeys::Tagged,
        ..JsonOptions::default()
    };
    assert_eq!(
        term_to_json_with(&m, &tagged),
        json!({"$map": [[{"$atom": "event_type"}, "T"]]})
    );
    // A tag-like object that is not a valid tagged form stays an object.
    assert_eq!(
        json_to_term(&json!({"$atom": 5})).get_bin("$atom"),
        Some(&int(5))
    );
}
