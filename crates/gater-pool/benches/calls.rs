//! Calls/s, p50/p99 latency, client CPU per call and RSS of gater-pool against an echo
//! gen_server on a local Erlang node, side by side with a BEAM client node doing
//! `gen_server:call` to the same server at the same concurrency.
//!
//! Run: `cargo bench -p gater-pool --bench calls` (needs `erl`, `erlc` and `epmd`).

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use gater_pool::{Pool, Term};
use gater_testkit::erl::{Epmd, ErlNode, NodeSpec, unique_name};
use std::time::{Duration, Instant};

const RUNS: [(usize, usize); 3] = [(1, 20_000), (16, 60_000), (256, 120_000)];

/// CPU time of this process.
fn cpu_time() -> Duration {
    cpu_time_of("self")
}

/// CPU time of a process (`self` or a pid), all threads: the sum of each thread's
/// on-CPU nanoseconds from `/proc/<pid>/task/*/schedstat` (user and system alike, as
/// getrusage counts it, but in ns rather than 10 ms ticks). Threads that exited during
/// the run are missed, which favours neither side here (both keep their threads).
fn cpu_time_of(pid: &str) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    let ns: u64 = tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
        })
        .sum();
    Duration::from_nanos(ns)
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

struct Row {
    calls_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    cpu_us_per_call: f64,
    vm_runtime_us_per_call: f64,
}

async fn ours(pool: &Pool, server: &Term, conc: usize, total: usize) -> Row {
    let Term::Pid(pid) = server else {
        panic!("server pid")
    };
    let per = total / conc;
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..conc)
        .map(|_| {
            let pool = pool.clone();
            let pid = pid.clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per);
                for k in 0..per {
                    let t = Instant::now();
                    let r = pool
                        .call(pid.clone(), int(k as i32), Duration::from_secs(10))
                        .await;
                    assert_eq!(r.expect("reply"), int(k as i32));
                    lat.push(t.elapsed().as_micros() as u64);
                }
                lat
            })
        })
        .collect();
    let mut lat = Vec::with_capacity(total);
    for t in tasks {
        lat.extend(t.await.expect("task"));
    }
    let wall = t0.elapsed();
    let cpu = cpu_time() - cpu0;
    lat.sort_unstable();
    let n = lat.len();
    Row {
        calls_per_s: n as f64 / wall.as_secs_f64(),
        p50_us: lat[n / 2] as f64,
        p99_us: lat[(n * 99 / 100).min(n - 1)] as f64,
        cpu_us_per_call: cpu.as_micros() as f64 / n as f64,
        vm_runtime_us_per_call: 0.0,
    }
}

async fn beam(pool: &Pool, client: &ErlNode, server: &Term, conc: usize, total: usize) -> Row {
    let args = vec![server.clone(), int(conc as i32), int(total as i32)];
    let os_pid = client.os_pid().map(|p| p.to_string()).unwrap_or_default();
    let cpu0 = cpu_time_of(&os_pid);
    let r = pool
        .rpc(
            client.name(),
            "gater_echo",
            "bench",
            args,
            Duration::from_secs(300),
        )
        .await
        .expect("beam bench");
    let os_cpu = cpu_time_of(&os_pid) - cpu0;
    let Term::Tuple(t) = r else {
        panic!("bench result {r}")
    };
    let num = |i: usize| match &t.elements[i] {
        Term::FixInteger(x) => f64::from(x.value),
        Term::BigInteger(b) => b.value.to_string().parse().unwrap_or(0.0),
        Term::Float(f) => f.value,
        other => panic!("not a number: {other}"),
    };
    let n = num(0);
    Row {
        calls_per_s: n / (num(1) / 1e6),
        p50_us: num(2),
        p99_us: num(3),
        // The client VM's whole CPU time as the OS counts it (schedulers' busy-waiting
        // included), the same measure as ours; statistics(runtime) counts less.
        cpu_us_per_call: os_cpu.as_micros() as f64 / n,
        vm_runtime_us_per_call: num(4) / n,
    }
}

fn main() {
    // Both runtimes a library user may choose, one table each; GATER_BENCH_RT=multi or
    // GATER_BENCH_RT=current: only that one.
    let only = std::env::var("GATER_BENCH_RT").ok();
    for current in [false, true] {
        let name = if current { "current" } else { "multi" };
        if only.as_deref().is_none_or(|o| o == name) {
            run(current);
        }
    }
}

/// One table: the callers and the pool's connections on a multi-thread runtime with two
/// workers, or all on one thread (`current`).
fn run(current: bool) {
    let rt = if current {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    }
    .expect("runtime");
    println!(
        "tokio runtime: {}",
        if current {
            "current_thread"
        } else {
            "multi_thread, 2 workers"
        }
    );
    rt.block_on(async {
        let epmd = Epmd::start().expect("epmd");
        let server = echo_node(&epmd, "bench_server", &[]);
        let client = ErlNode::start(
            &epmd,
            NodeSpec::new(unique_name("bench_client"), COOKIE)
                .code_path(echo_beam_dir())
                .eval(format!("pong = net_adm:ping('{}')", server.name())),
        )
        .expect("client node");
        let pool = Pool::new(config(&epmd));
        pool.connect(server.name()).await.expect("server");
        pool.connect(client.name()).await.expect("client");
        let pid = pool
            .rpc(server.name(), "erlang", "whereis", vec![atom("echo")], Duration::from_secs(5))
            .await
            .expect("echo pid");
        // Warm up both paths.
        ours(&pool, &pid, 16, 5_000).await;
        beam(&pool, &client, &pid, 16, 5_000).await;

        println!("gater-pool vs BEAM client, gen_server:call to an echo server by pid (2-core box)");
        println!(
            "{:>5} | {:>10} {:>8} {:>8} {:>9} | {:>10} {:>8} {:>8} {:>9} | {:>6} {:>6} {:>6}",
            "conc", "ours c/s", "p50 us", "p99 us", "cpu us/c", "beam c/s", "p50 us", "p99 us", "cpu us/c",
            "thr x", "p99 x", "cpu x"
        );
        // GATER_BENCH_CONC=256: only that row (for profiling).
        let only: Option<usize> = std::env::var("GATER_BENCH_CONC").ok().and_then(|v| v.parse().ok());
        for (conc, total) in RUNS {
            if only.is_some_and(|c| c != conc) {
                continue;
            }
            let before = pool.metrics();
            let o = ours(&pool, &pid, conc, total).await;
            let after = pool.metrics();
            let per = |a: u64, b: u64| a as f64 / b.max(1) as f64;
            let b = beam(&pool, &client, &pid, conc, total).await;
            println!(
                "{conc:>5} | {:>10.0} {:>8.0} {:>8.0} {:>9.1} | {:>10.0} {:>8.0} {:>8.0} {:>9.1} | {:>6.2} {:>6.2} {:>6.2}",
                o.calls_per_s, o.p50_us, o.p99_us, o.cpu_us_per_call,
                b.calls_per_s, b.p50_us, b.p99_us, b.cpu_us_per_call,
                o.calls_per_s / b.calls_per_s,
                o.p99_us / b.p99_us,
                o.cpu_us_per_call / b.cpu_us_per_call,
            );
            println!(
                "      ours: {:.1} frames per socket write, {:.1} per read; BEAM client statistics(runtime): {:.1} us/call",
                per(after.frames_out - before.frames_out, after.socket_writes - before.socket_writes),
                per(after.frames_in - before.frames_in, after.socket_reads - before.socket_reads),
                b.vm_runtime_us_per_call
            );
        }
        println!("our RSS after the runs: {:.1} MiB", rss_kib() as f64 / 1024.0);
        println!("thr x = our calls/s / BEAM's (goal >= 1.5 at 256); p99 x and cpu x = ours / BEAM's (goals <= 0.5 and <= 0.25)");
        let m = pool.metrics();
        println!("pool counters: calls={} errors={:?} frames_out={} frames_in={}", m.calls, m.errors, m.frames_out, m.frames_in);
    });
}
