//! serde over the bytes: typed ExESDB records from the golden vectors, Elixir
//! conventions, enums as tagged tuples, and round trips through `Term`.

use std::collections::BTreeMap;

use gater_term::build::{atom, binary, int, tuple};
use gater_term::elixir::DateTime;
use gater_term::raw::{Atom, RawTerm, TermValue};
use gater_term::records::{EventRecord, EventRecordRef, NewEvent};
use gater_term::{DecodeLimits, TermExt, de, decode, encode, from_term, ser, to_term};
use serde::{Deserialize, Serialize};

fn vector(dir: &str, name: &str) -> Option<Vec<u8>> {
    let d = gater_testkit::vectors::vectors_subdir(dir)?;
    Some(std::fs::read(d.join(name)).expect("read vector"))
}

#[test]
fn event_record_vector_reads_typed_and_writes_otp_bytes() {
    let Some(bytes) = vector("term", "event_record.etf") else {
        return;
    };
    let r: EventRecordRef<'_> = de::from_slice(&bytes).expect("typed decode");
    assert_eq!(r.event_stream_id, "user-1");
    assert_eq!(r.event_type, "UserCreated");
    assert_eq!(r.event_number, 0);
    assert_eq!(r.created.unix_micros(), r.created_epoch);
    assert_eq!(r.created.0.microsecond(), 123_456);
    let data = r.data.to_term().expect("data");
    assert_eq!(data.get_bin("name").and_then(TermExt::as_str), Some("John"));
    assert!(gater_term::elixir::is_nil(
        &r.metadata.to_term().expect("metadata")
    ));

    let owned: EventRecord = de::from_slice(&bytes).expect("owned decode");
    assert_eq!(owned.event_id, r.event_id);
    // Fields in term order: re-encoding gives OTP's bytes (with UTF-8 atoms).
    let generic = decode(&bytes, &DecodeLimits::default()).expect("generic");
    assert_eq!(ser::to_vec(&owned).expect("encode"), encode(&generic));
    // RawTerm fields keep their bytes as they came (here OTP 25's ATOM_EXT `nil`).
    let again = decode(
        &ser::to_vec(&r).expect("encode ref"),
        &DecodeLimits::default(),
    );
    assert!(gater_term::order::exact_eq(
        &again.expect("decode"),
        &generic
    ));
}

#[test]
fn event_batch_and_compressed_batch() {
    let (Some(plain), Some(packed)) = (
        vector("term", "event_batch_3.etf"),
        vector("term", "event_batch_3_compressed.etf"),
    ) else {
        return;
    };
    let a: Vec<EventRecordRef<'_>> = de::from_slice(&plain).expect("batch");
    assert_eq!(a.len(), 3);
    let b: Vec<EventRecord> =
        de::from_slice_owned(&packed, &DecodeLimits::default()).expect("compressed");
    assert_eq!(b.len(), 3);
    assert!(matches!(
        de::from_slice::<Vec<EventRecordRef<'_>>>(&packed),
        Err(gater_term::DecodeError::Unsupported { .. })
    ));
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(
            (x.event_id, x.event_number),
            (y.event_id.as_str(), y.event_number)
        );
    }
}

#[test]
fn real_exesdb_replies_read_typed() {
    let Some(bytes) = vector("exesdb-real", "13_get_events_forward.reply.etf") else {
        return;
    };
    #[derive(Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Reply<'a> {
        #[serde(borrow)]
        Ok(Vec<EventRecordRef<'a>>),
        #[allow(dead_code)]
        Error(TermValue),
    }
    let Reply::Ok(events) = de::from_slice::<Reply<'_>>(&bytes).expect("reply") else {
        panic!("expected {{ok, Events}}");
    };
    assert!(!events.is_empty());
    assert!(events[0].unknown_fields.is_some());
    assert_eq!(events[0].event_stream_id, "rig-stream-1");
    assert_eq!(
        events[1].data.to_term().expect("data"),
        binary(b"{\"hello\":\"binary\"}".to_vec())
    );
    // Re-encoding a real record keeps every field.
    let owned: Vec<EventRecord> = events
        .iter()
        .map(|e| de::from_slice(&ser::to_vec(e).expect("enc")).expect("dec"))
        .collect();
    assert_eq!(owned[0].event_type, "RigTested:v1");
}

#[test]
fn new_event_matches_the_vector() {
    let Some(bytes) = vector("term", "new_event.etf") else {
        return;
    };
    let ev: NewEvent = de::from_slice(&bytes).expect("decode");
    assert_eq!(ev.event_type, "UserCreated");
    assert!(ev.unknown_fields.is_none());
    let generic = decode(&bytes, &DecodeLimits::default()).expect("generic");
    assert_eq!(ser::to_vec(&ev).expect("encode"), encode(&generic));
    // What we send carries '__unknown_fields__' => [], as real ExESDB expects.
    let fresh = NewEvent::new("id-1", "T", gater_term::map! { "a" => 1 }, None);
    let t = to_term(&fresh).expect("to term");
    assert_eq!(t.get("__unknown_fields__"), Some(&gater_term::build::nil()));
    assert_eq!(t.struct_name(), Some("Elixir.ExESDB.Schema.NewEvent"));
    assert!(t.get("metadata").is_some_and(gater_term::elixir::is_nil));
}

#[test]
fn datetime_vector_round_trips() {
    let Some(bytes) = vector("term", "datetime.etf") else {
        return;
    };
    let dt: DateTime = de::from_slice(&bytes).expect("datetime");
    assert_eq!(dt.0.year(), 2026);
    assert_eq!(dt.0.microsecond(), 123_456);
    let generic = decode(&bytes, &DecodeLimits::default()).expect("generic");
    assert_eq!(ser::to_vec(&dt).expect("encode"), encode(&generic));
    assert_eq!(
        gater_term::elixir::datetime_from_term(&generic).expect("from term"),
        dt.0
    );
    assert_eq!(DateTime::from_unix_micros(dt.unix_micros()), Some(dt));
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Expected {
    Any,
    StreamExists,
    #[serde(untagged)]
    Version(i64),
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Reply {
    Ok(i64),
    Error(TermValue),
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Plain<'a> {
    name: &'a str,
    count: u64,
    ratio: f64,
    flag: bool,
    maybe: Option<i32>,
    tags: Vec<String>,
    bytes: gater_term::raw::ByteBuf,
    kind: Atom,
    pair: (i8, String),
    big: i128,
    by_key: BTreeMap<String, i64>,
}

#[test]
fn plain_structs_are_atom_keyed_maps() {
    let v = Plain {
        name: "n",
        count: u64::MAX,
        ratio: 0.25,
        flag: true,
        maybe: None,
        tags: vec!["a".into()],
        bytes: gater_term::raw::ByteBuf(vec![0, 255]),
        kind: Atom::from("by_stream"),
        pair: (-1, "x".into()),
        big: -(1i128 << 100),
        by_key: [("k".to_string(), 5)].into(),
    };
    let bytes = ser::to_vec(&v).expect("encode");
    let t = decode(&bytes, &DecodeLimits::default()).expect("decode");
    assert!(t.struct_name().is_none());
    assert_eq!(t.get("kind"), Some(&atom("by_stream")));
    assert_eq!(t.get("maybe"), Some(&atom("nil")));
    assert_eq!(t.get("flag"), Some(&atom("true")));
    assert_eq!(
        t.get("pair"),
        Some(&tuple(vec![int(-1), binary(b"x".to_vec())]))
    );
    assert_eq!(t.get("bytes"), Some(&binary(vec![0, 255])));
    assert_eq!(t.get("by_key").and_then(|m| m.get_bin("k")), Some(&int(5)));
    let back: Plain<'_> = de::from_slice(&bytes).expect("typed");
    assert_eq!(back, v);
}

#[test]
fn enums_are_atoms_and_tagged_tuples() {
    assert_eq!(to_term(&Expected::Any).expect("t"), atom("any"));
    assert_eq!(
        to_term(&Expected::StreamExists).expect("t"),
        atom("stream_exists")
    );
    assert_eq!(
        to_term(&Reply::Ok(3)).expect("t"),
        tuple(vec![atom("ok"), int(3)])
    );
    let r: Reply = from_term(&tuple(vec![atom("error"), atom("timeout")])).expect("r");
    assert_eq!(r, Reply::Error(TermValue(atom("timeout"))));
    let r: Reply = from_term(&tuple(vec![atom("ok"), int(1i64 << 40)])).expect("r");
    assert_eq!(r, Reply::Ok(1 << 40));
}

#[test]
fn elixir_struct_name_is_checked() {
    #[derive(Debug, Serialize, Deserialize)]
    #[serde(rename = "Elixir.Thing")]
    struct Thing {
        a: i32,
    }
    let t = to_term(&Thing { a: 1 }).expect("t");
    assert_eq!(t.struct_name(), Some("Elixir.Thing"));
    assert!(from_term::<Thing>(&t).is_ok());
    let other = gater_term::elixir::struct_term("Other", [("a", int(1))]);
    assert!(from_term::<Thing>(&other).is_err());
}

#[test]
fn raw_terms_pass_through_untouched() {
    #[derive(Serialize, Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        body: RawTerm<'a>,
    }
    let inner = gater_term::build::pid("a@b", 1, 2, 3);
    let env = gater_term::map! { atom("body") => inner.clone() };
    let bytes = encode(&env);
    let e: Envelope<'_> = de::from_slice(&bytes).expect("decode");
    assert_eq!(e.body.to_term().expect("pid"), inner);
    assert_eq!(ser::to_vec(&e).expect("encode"), bytes);
}

#[test]
fn integers_of_every_width() {
    for v in [
        0i128,
        255,
        256,
        -1,
        i32::MIN as i128,
        i32::MAX as i128 + 1,
        i64::MIN as i128,
        u64::MAX as i128,
        i128::MIN,
    ] {
        let b = ser::to_vec(&v).expect("enc");
        assert_eq!(de::from_slice::<i128>(&b).expect("dec"), v);
        assert_eq!(
            decode(&b, &DecodeLimits::default()).expect("term"),
            gater_term::build::int(v)
        );
    }
    let b = ser::to_vec(&(1u64 << 40)).expect("enc");
    assert!(matches!(
        de::from_slice::<i32>(&b),
        Err(gater_term::DecodeError::Message(_))
    ));
    assert!(ser::to_vec(&f64::NAN).is_err());
}
