//! Append and read throughput and p99 through gater-api at 1, 16 and 256 concurrent
//! callers, side by side with the testbed's BEAM-native load generator
//! (`testbed_load`, what `cargo xtask testbed load` runs) in the same run.
//!
//! `cargo bench -p gater-api --bench throughput` runs the full comparison: per point,
//! `GATER_BENCH_SECS` (4) seconds per side in 2 s slices, A B B A order (throughput: the
//! mean of the slices, counted as the BEAM-native generator counts: calls started before
//! the deadline over the nominal duration; p50/p99: the median of the slices' values). Without `--bench` (as `cargo test --all-targets` runs
//! it) it does a quick smoke run only.

use gater_api::{Direction, Gater, GaterConfig, NewEvent};
use gater_testkit::testbed::{Testbed, TestbedConfig};
use std::time::{Duration, Instant};

const STORE: &str = "reg_gh";
/// Seconds per slice.
const SLICE: u64 = 2;

#[derive(Debug, Clone, Copy)]
struct Point {
    calls: u64,
    errors: u64,
    per_s: f64,
    p50_us: u64,
    p99_us: u64,
}

impl Point {
    /// The mean of runs of equal length (p50/p99: the median of the runs' values).
    fn mean(runs: &[Point]) -> Point {
        let n = runs.len().max(1);
        let median = |f: fn(&Point) -> u64| {
            let mut v: Vec<u64> = runs.iter().map(f).collect();
            v.sort_unstable();
            v.get(v.len() / 2).copied().unwrap_or(0)
        };
        Point {
            calls: runs.iter().map(|p| p.calls).sum(),
            errors: runs.iter().map(|p| p.errors).sum(),
            per_s: runs.iter().map(|p| p.per_s).sum::<f64>() / n as f64,
            p50_us: median(|p| p.p50_us),
            p99_us: median(|p| p.p99_us),
        }
    }
}

fn pct(sorted: &[u32], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((p * sorted.len() as f64).round() as usize).clamp(1, sorted.len()) - 1;
    u64::from(sorted[i])
}

async fn run_gater(g: &Gater, op: &str, concurrency: usize, secs: f64) -> Point {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..concurrency)
        .map(|i| {
            let g = g.clone();
            let op = op.to_owned();
            tokio::spawn(async move {
                let stream = format!("rload-{i}");
                let mut lat = Vec::with_capacity(4096);
                let mut errors = 0u64;
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let t0 = Instant::now();
                    let ok = match op.as_str() {
                        "append" => {
                            let e = NewEvent::json("LoadTested:v1", serde_json::json!({ "n": n }));
                            g.append_events(STORE, &stream, vec![e]).await.is_ok()
                        }
                        _ => g
                            .get_events(STORE, "rload-read", 0, 10, Direction::Forward)
                            .await
                            .is_ok_and(|v| v.len() == 10),
                    };
                    n += 1;
                    lat.push(t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                    if !ok {
                        errors += 1;
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let start = Instant::now();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await.expect("load task");
        all.extend(lat);
        errors += e;
    }
    // The BEAM-native generator's accounting: every call started before the deadline,
    // over the nominal duration (calls still in flight at the deadline count).
    let _ = start;
    let elapsed = secs;
    all.sort_unstable();
    Point {
        calls: all.len() as u64,
        errors,
        per_s: all.len() as f64 / elapsed,
        p50_us: pct(&all, 0.50),
        p99_us: pct(&all, 0.99),
    }
}

fn field(text: &str, key: &str) -> f64 {
    let pat = format!("{key} => ");
    text.split(&pat)
        .nth(1)
        .and_then(|rest| {
            rest.split([',', '}'])
                .next()
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .unwrap_or(f64::NAN)
}

fn run_beam(tb: &Testbed, op: &str, concurrency: usize, secs: u64) -> Point {
    let nodes = tb
        .node_names()
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(",");
    // In a fresh process each time: the generator owns a named ETS table.
    let expr = format!(
        "begin {{P, R}} = spawn_monitor(fun() -> exit({{result, testbed_load:run(#{{nodes => [{nodes}], store => {STORE}, concurrency => {concurrency}, seconds => {secs}, op => {op}}})}}) end), receive {{'DOWN', R, process, P, {{result, X}}}} -> X; {{'DOWN', R, process, P, Other}} -> {{failed, Other}} end end"
    );
    let out = tb.eval_local(&expr).expect("BEAM load generator");
    let calls = field(&out, "calls");
    let p = Point {
        calls: calls as u64,
        errors: field(&out, "errors") as u64,
        per_s: calls / secs as f64,
        p50_us: field(&out, "p50_us") as u64,
        p99_us: field(&out, "p99_us") as u64,
    };
    assert!(calls > 0.0, "BEAM load generator: {out}");
    p
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let secs: u64 = std::env::var("GATER_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let tb = Testbed::start(TestbedConfig {
        name_prefix: "apibench".into(),
        ..TestbedConfig::default()
    })
    .expect("testbed");
    // GATER_BENCH_RT=current: the callers and the connections on one thread.
    let rt = if std::env::var("GATER_BENCH_RT").is_ok_and(|v| v == "current") {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    }
    .expect("runtime");
    rt.block_on(async {
        let mut config = GaterConfig::new(tb.cookie())
            .nodes(tb.node_names())
            .epmd_port(tb.epmd_port());
        config.refresh_interval = Duration::from_secs(1);
        if let Some(n) = std::env::var("GATER_BENCH_MAX_APPENDS").ok().and_then(|v| v.parse().ok()) {
            config.max_concurrent_appends = n;
        }
        let g = Gater::connect(config).await.expect("connect");
        let ids: Vec<String> = (0..10).map(|i| format!("bench-read-{i}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        tb.append(0, STORE, "rload-read", &ids).expect("seed");
        // Wait until every node's workers are known.
        let deadline = Instant::now() + Duration::from_secs(10);
        while g.registry().workers(&STORE.into()).len() < 6 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !full {
            let p = run_gater(&g, "read", 2, 0.2).await;
            assert!(p.calls > 0 && p.errors == 0, "smoke run: {p:?}");
            println!("throughput bench smoke run ok ({} reads); run with --bench for figures", p.calls);
            return;
        }
        println!(
            "{:<7} {:>5} | {:>10} {:>9} {:>9} {:>4} | {:>10} {:>9} {:>9} {:>4} | {:>7} {:>9}",
            "op", "conc", "gater/s", "p50 µs", "p99 µs", "err", "beam/s", "p50 µs", "p99 µs", "err", "thr ×", "p99 b/g"
        );
        let ops = std::env::var("GATER_BENCH_OPS").unwrap_or_else(|_| "append,read".into());
        let concs = std::env::var("GATER_BENCH_CONC").unwrap_or_else(|_| "1,16,256".into());
        let skip_beam = std::env::var("GATER_BENCH_NO_BEAM").is_ok();
        for op in ops.split(',') {
            for c in concs.split(',').filter_map(|c| c.parse::<usize>().ok()) {
                // 2 s slices in A B B A order, repeated: the testbed's append cost grows
                // with the events already stored (its emitter scans the whole store table
                // per append), so each side must see the same mix of early and late slices.
                let mut ours_runs = Vec::new();
                let mut beam_runs = Vec::new();
                for slice in 0..(secs / SLICE).max(2) {
                    let gater_first = slice % 4 == 0 || slice % 4 == 3;
                    for side in [gater_first, !gater_first] {
                        if side {
                            ours_runs.push(run_gater(&g, op, c, SLICE as f64).await);
                        } else if !skip_beam {
                            // The BEAM side runs while this thread waits (a current-thread runtime
                            // cannot hand its tasks to another thread meanwhile).
                            let run = || run_beam(&tb, op, c, SLICE);
                            beam_runs.push(match tokio::runtime::Handle::current().runtime_flavor() {
                                tokio::runtime::RuntimeFlavor::CurrentThread => run(),
                                _ => tokio::task::block_in_place(run),
                            });
                        }
                    }
                }
                let ours = Point::mean(&ours_runs);
                let beam = if skip_beam { ours } else { Point::mean(&beam_runs) };
                println!(
                    "{:<7} {:>5} | {:>10.0} {:>9} {:>9} {:>4} | {:>10.0} {:>9} {:>9} {:>4} | {:>7.2} {:>9.2}",
                    op,
                    c,
                    ours.per_s,
                    ours.p50_us,
                    ours.p99_us,
                    ours.errors,
                    beam.per_s,
                    beam.p50_us,
                    beam.p99_us,
                    beam.errors,
                    ours.per_s / beam.per_s,
                    beam.p99_us as f64 / ours.p99_us.max(1) as f64,
                );
            }
        }
        println!("thr × = gater-api calls/s ÷ BEAM-native calls/s; p99 b/g = BEAM p99 ÷ gater-api p99 (≥ 1: ours is no worse)");
        println!("gater metrics: {:?}", g.metrics());
    });
}
