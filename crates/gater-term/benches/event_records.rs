//! Decoding and encoding a batch of 1000 ExESDB `EventRecord`s (a `get_events` reply
//! list, `data` a map of 5 keys), side by side with Erlang's own `binary_to_term` and
//! `term_to_binary` on the same bytes, timed by a spawned `erl`.
//!
//! Run: `cargo bench -p gater-term --bench event_records` (set `GATER_BENCH_NO_ERL=1`
//! to skip the Erlang side). After criterion's report it prints MB/s, records/s and
//! the ratio to Erlang for each path (Rust and Erlang take turns three times, 5 rounds of 50 each, best
//! figure kept on both sides; encoders write into a reused buffer).

use std::hint::black_box;
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use gater_term::build::{float, int, list, map, string};
use gater_term::elixir::DateTime;
use gater_term::raw::TermValue;
use gater_term::records::{EventRecord, EventRecordRef};
use gater_term::{DecodeLimits, de, decode, encode, encode_into, ser};

const RECORDS: usize = 1000;

fn batch() -> Vec<EventRecord> {
    let base = 1_795_824_158_192_505i64;
    (0..RECORDS)
        .map(|i| {
            let created = base + i as i64 * 1_731;
            EventRecord {
                unknown_fields: Some(TermValue(gater_term::build::nil())),
                created: DateTime::from_unix_micros(created)
                    .unwrap_or(DateTime(time::OffsetDateTime::UNIX_EPOCH)),
                created_epoch: created,
                data: TermValue(map(vec![
                    (string("email"), string(&format!("user{i}@example.com"))),
                    (string("id"), int(i as i64)),
                    (string("name"), string(&format!("User {i}"))),
                    (string("score"), float(i as f64 / 3.0)),
                    (string("tags"), list(vec![string("a"), string("b")])),
                ])),
                data_content_type: 1,
                event_id: format!("0198f3a0-0000-7000-8000-{i:012}"),
                event_number: i as i64,
                event_stream_id: "user-stream-42".into(),
                event_type: "UserCreated:v1".into(),
                metadata: TermValue(map(vec![(string("source"), string("bench"))])),
                metadata_content_type: 1,
            }
        })
        .collect()
}

fn best_of<F: FnMut()>(rounds: usize, iters: usize, mut f: F) -> Duration {
    (0..rounds)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed() / iters as u32
        })
        .min()
        .unwrap_or_default()
}

/// Erlang's µs per `binary_to_term` and per `term_to_binary` of the batch (best of
/// several rounds), or the reason it could not be measured.
fn erlang_us(bytes: &[u8]) -> Result<(f64, f64), String> {
    if std::env::var_os("GATER_BENCH_NO_ERL").is_some() {
        return Err("GATER_BENCH_NO_ERL is set".into());
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = dir.path().join("batch.etf");
    std::fs::write(&path, bytes).map_err(|e| e.to_string())?;
    let expr = format!(
        r#"{{ok, B}} = file:read_file("{}"),
        N = 50,
        Best = fun(F) -> lists:min([element(1, timer:tc(fun() -> F(N) end)) / N || _ <- lists:seq(1, 5)]) end,
        Dec = fun D(0) -> ok; D(K) -> _ = binary_to_term(B), D(K - 1) end,
        T = binary_to_term(B),
        Enc = fun E(0) -> ok; E(K) -> _ = term_to_binary(T), E(K - 1) end,
        io:format("~p ~p~n", [Best(Dec), Best(Enc)]),
        halt()."#,
        path.display()
    );
    let out = Command::new("erl")
        .args(["-noshell", "-eval", &expr])
        .output()
        .map_err(|e| format!("cannot run erl: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut nums = text
        .split_whitespace()
        .filter_map(|s| s.parse::<f64>().ok());
    match (nums.next(), nums.next()) {
        (Some(d), Some(e)) => Ok((d, e)),
        _ => Err(format!("unexpected erl output: {text}")),
    }
}

fn main() {
    let records = batch();
    let bytes = ser::to_vec(&records).expect("encode batch");
    let term = decode(&bytes, &DecodeLimits::default()).expect("decode batch");
    assert_eq!(encode(&term), bytes, "typed and generic encodings agree");
    let refs: Vec<EventRecordRef<'_>> = de::from_slice(&bytes).expect("typed decode");
    assert_eq!(refs.len(), RECORDS);

    let mut c = Criterion::default().configure_from_args();
    {
        let mut g = c.benchmark_group("event_records_1000");
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function("decode/typed_borrowed", |b| {
            b.iter(|| de::from_slice::<Vec<EventRecordRef<'_>>>(black_box(&bytes)))
        });
        g.bench_function("decode/typed_owned", |b| {
            b.iter(|| de::from_slice::<Vec<EventRecord>>(black_box(&bytes)))
        });
        g.bench_function("decode/term_tree", |b| {
            b.iter(|| decode(black_box(&bytes), &DecodeLimits::default()))
        });
        g.bench_function("encode/typed_borrowed", |b| {
            b.iter(|| ser::to_vec(black_box(&refs)))
        });
        g.bench_function("encode/typed_owned", |b| {
            b.iter(|| ser::to_vec(black_box(&records)))
        });
        g.bench_function("encode/term_tree", |b| b.iter(|| encode(black_box(&term))));
        g.finish();
    }
    c.final_summary();

    // The side-by-side table. Rust and Erlang take turns, three times, and each keeps
    // its best figure, so that a burst of load elsewhere on the machine does not
    // favour one side.
    type Path<'b> = (&'static str, bool, Box<dyn FnMut() + 'b>);
    let mut buf: Vec<u8> = Vec::with_capacity(bytes.len());
    let buf = std::cell::RefCell::new(&mut buf);
    let mut paths: Vec<Path<'_>> = vec![
        (
            "decode typed (borrowed)",
            true,
            Box::new(|| {
                black_box(de::from_slice::<Vec<EventRecordRef<'_>>>(black_box(&bytes)).ok());
            }),
        ),
        (
            "decode typed (owned)",
            true,
            Box::new(|| {
                black_box(de::from_slice::<Vec<EventRecord>>(black_box(&bytes)).ok());
            }),
        ),
        (
            "decode term tree",
            true,
            Box::new(|| {
                black_box(decode(black_box(&bytes), &DecodeLimits::default()).ok());
            }),
        ),
        (
            "encode typed (borrowed)",
            false,
            Box::new(|| {
                let mut b = buf.borrow_mut();
                b.clear();
                black_box(ser::to_vec_into(black_box(&refs), &mut b).ok());
            }),
        ),
        (
            "encode typed (owned)",
            false,
            Box::new(|| {
                let mut b = buf.borrow_mut();
                b.clear();
                black_box(ser::to_vec_into(black_box(&records), &mut b).ok());
            }),
        ),
        (
            "encode term tree",
            false,
            Box::new(|| {
                let mut b = buf.borrow_mut();
                b.clear();
                encode_into(black_box(&term), &mut b);
            }),
        ),
    ];
    let mut best = vec![Duration::MAX; paths.len()];
    let mut erl: Result<(f64, f64), String> = Err("not run".into());
    for _ in 0..3 {
        for (i, (_, _, f)) in paths.iter_mut().enumerate() {
            best[i] = best[i].min(best_of(5, 50, f));
        }
        erl = match (erlang_us(&bytes), erl) {
            (Ok((d, e)), Ok((d0, e0))) => Ok((d.min(d0), e.min(e0))),
            (Ok(v), Err(_)) | (Err(_), Ok(v)) => Ok(v),
            (Err(e), Err(_)) => Err(e),
        };
    }
    let mb = bytes.len() as f64 / 1e6;
    println!();
    println!("batch: {RECORDS} EventRecords, {} bytes", bytes.len());
    println!(
        "{:<26} {:>10} {:>10} {:>12} {:>10}",
        "path", "µs/batch", "MB/s", "records/s", "vs erl"
    );
    let row = |name: &str, us: f64, ratio: Option<f64>| {
        println!(
            "{:<26} {:>10.0} {:>10.0} {:>12.0} {:>10}",
            name,
            us,
            mb / (us / 1e6),
            RECORDS as f64 / (us / 1e6),
            ratio.map_or("-".to_owned(), |r| format!("{r:.2}x"))
        );
    };
    match &erl {
        Ok((d, e)) => {
            row("erlang binary_to_term", *d, None);
            row("erlang term_to_binary", *e, None);
        }
        Err(why) => println!("(erlang side not measured: {why})"),
    }
    for ((name, is_decode, _), t) in paths.iter().zip(&best) {
        let us = t.as_secs_f64() * 1e6;
        let ratio = erl
            .as_ref()
            .ok()
            .map(|(d, e)| if *is_decode { d / us } else { e / us });
        row(name, us, ratio);
    }
}
