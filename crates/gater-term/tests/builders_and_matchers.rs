//! Builders, matchers and Elixir conventions read like the Erlang they mirror.

use gater_term::build::{atom, binary, int, list, nil, ok, pid, reference, tuple};
use gater_term::elixir::{self, DateTime};
use gater_term::{TermExt, list as list_m, map, tuple as tuple_m};

#[test]
fn gen_call_reads_like_erlang() {
    // {'$gen_call', {FromPid, Ref}, {get_version, reg_gh, <<"s">>}}
    let from = pid("gater@host", 101, 0, 4);
    let r = reference("gater@host", &[1, 2, 3], 4);
    let msg = tuple_m![
        atom("$gen_call"),
        tuple(vec![from.clone(), r.clone()]),
        tuple_m![atom("get_version"), atom("reg_gh"), "s"]
    ];
    let [tag, req] = msg.tagged("$gen_call", 3).expect("gen_call") else {
        panic!("arity")
    };
    assert_eq!(tag.as_tuple().map(<[_]>::len), Some(2));
    assert_eq!(tag.as_tuple().and_then(|t| t[0].as_pid()), from.as_pid());
    assert_eq!(
        tag.as_tuple().and_then(|t| t[1].as_reference()),
        r.as_reference()
    );
    let args = req.tagged("get_version", 3).expect("request");
    assert!(args[0].is_atom("reg_gh"));
    assert_eq!(args[1].as_str(), Some("s"));
    assert!(req.tagged("get_version", 2).is_none());
    assert!(req.tagged("append_events", 3).is_none());
}

#[test]
fn replies_and_maps() {
    let reply = ok(int(-1));
    assert_eq!(reply.tagged("ok", 2).and_then(|v| v[0].as_i64()), Some(-1));
    let m = map! { atom("node") => atom("ex_esdb0@h"), "k" => 1.5, atom("big") => int(1i64 << 40) };
    assert!(m.get("node").is_some_and(|n| n.is_atom("ex_esdb0@h")));
    assert_eq!(m.get_bin("k").and_then(TermExt::as_f64), Some(1.5));
    assert_eq!(m.get("big").and_then(TermExt::as_i64), Some(1 << 40));
    assert!(m.get("k").is_none());
    assert_eq!(list_m![1, 2].as_list().map(|l| l.len()), Some(2));
    // A charlist decoded from STRING_EXT still reads as a list of integers.
    let t = gater_term::decode(&[131, 107, 0, 2, 1, 2], &Default::default()).expect("decode");
    assert_eq!(
        t.as_list()
            .map(|l| l.iter().filter_map(TermExt::as_i64).collect::<Vec<_>>()),
        Some(vec![1, 2])
    );
    assert_eq!(nil(), list(vec![]));
    assert_eq!(binary(b"x".to_vec()).as_str(), Some("x"));
    assert_eq!(binary(vec![0xff]).as_str(), None);
}

#[test]
fn elixir_conventions() {
    assert!(elixir::is_nil(&elixir::nil()));
    assert_eq!(elixir::as_bool(&elixir::boolean(true)), Some(true));
    assert_eq!(elixir::as_option(&elixir::option(None)), None);
    assert_eq!(elixir::as_option(&int(1)), Some(&int(1)));
    let s = elixir::struct_term(
        "ExESDB.Schema.NewEvent",
        [("event_type", gater_term::build::string("T"))],
    );
    assert_eq!(s.struct_name(), Some("Elixir.ExESDB.Schema.NewEvent"));
    assert!(elixir::struct_fields(&s, "ExESDB.Schema.NewEvent").is_some());
    assert!(elixir::struct_fields(&s, "Elixir.ExESDB.Schema.NewEvent").is_some());
    assert!(elixir::struct_fields(&s, "DateTime").is_none());
    let kw = elixir::keyword([
        ("timeout", int(5000)),
        ("retries", int(3)),
        ("timeout", int(1)),
    ]);
    assert_eq!(elixir::keyword_get(&kw, "timeout"), Some(&int(5000)));
    assert_eq!(elixir::keyword_pairs(&kw).map(|p| p.len()), Some(3));
    assert!(elixir::keyword_pairs(&list(vec![int(1)])).is_none());
}

#[test]
fn datetime_keeps_microseconds() {
    let dt = DateTime::from_unix_micros(1_795_823_998_123_456).expect("in range");
    let t = elixir::datetime_to_term(dt.0);
    assert_eq!(t.struct_name(), Some("Elixir.DateTime"));
    assert_eq!(
        t.get("microsecond"),
        Some(&tuple(vec![int(123_456), int(6)]))
    );
    assert_eq!(
        t.get("time_zone").and_then(TermExt::as_str),
        Some("Etc/UTC")
    );
    assert_eq!(elixir::datetime_from_term(&t).expect("back"), dt.0);
    // A non-UTC DateTime keeps its offset.
    let mut m = t.as_map().expect("map").clone();
    m.insert(atom("utc_offset"), int(3600));
    let shifted =
        elixir::datetime_from_term(&gater_term::Term::Map(gater_term::eetf::Map { map: m }))
            .expect("offset");
    assert_eq!(shifted.offset().whole_seconds(), 3600);
    assert_eq!(shifted.unix_timestamp(), dt.0.unix_timestamp() - 3600);
    // In JSON it is an RFC 3339 string.
    let j = serde_json::to_string(&dt).expect("json");
    assert_eq!(j, "\"2026-11-27T23:59:58.123456Z\"");
    assert_eq!(serde_json::from_str::<DateTime>(&j).expect("parse"), dt);
}
