//! HTTP append and read requests/s and p99 at 64 concurrent connections, beside the same
//! operations through gater-api directly, against a 3-node testbed; then the gateway's
//! RSS idle and with 1000 open SSE subscriptions.
//!
//! `cargo bench -p gater-http --bench http_vs_api` runs it (`GATER_BENCH_SECS`, default 4,
//! per point, in two halves in A B C C B A order; `GATER_BENCH_OPS=read` for one
//! operation). Without `--bench` (as `cargo test --all-targets` runs it) it only checks
//! that it starts.
//!
//! `GATER_BENCH_RT` places the Gater and the HTTP server: `shared` (default) on the load
//! generator's multi-thread runtime; `current` or `multi[:N]` on a runtime of their own,
//! as the daemon runs them, with the load generator (the same for the library and the HTTP
//! side) on another (`GATER_BENCH_CLIENT_RT=multi|current`). The CPU per call of the
//! server's threads and of the load generator's is printed beside the throughput.
//!
//! The RSS figures are of a child process that runs only what the daemon runs (a Gater and
//! the HTTP API): this binary re-executed with `--serve`, on the daemon's default runtime
//! (or `GATER_BENCH_CHILD_RT=current|multi`).

use std::io::{BufRead, BufReader};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use gater_api::{Direction, Gater, GaterConfig, NewEvent};
use gater_http::{HttpApi, Limits};
use gater_testkit::testbed::{Testbed, TestbedConfig};
use serde_json::json;

const STORE: &str = "reg_gh";
const CONC: usize = 64;

#[derive(Debug, Clone, Copy, Default)]
struct Point {
    calls: u64,
    errors: u64,
    per_s: f64,
    p99_us: u64,
}

fn point(mut lat: Vec<u32>, errors: u64, secs: f64) -> Point {
    lat.sort_unstable();
    let p99 = if lat.is_empty() {
        0
    } else {
        lat[((lat.len() as f64 * 0.99) as usize).min(lat.len() - 1)]
    };
    Point {
        calls: lat.len() as u64,
        errors,
        per_s: lat.len() as f64 / secs,
        p99_us: u64::from(p99),
    }
}

fn merge(a: Point, b: Point) -> Point {
    Point {
        calls: a.calls + b.calls,
        errors: a.errors + b.errors,
        per_s: (a.per_s + b.per_s) / 2.0,
        p99_us: a.p99_us.max(b.p99_us),
    }
}

/// Runs `op(worker, i)` from CONC tasks for `secs`; latencies in µs of the successful ones.
async fn drive<F, Fut>(secs: f64, op: F) -> Point
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..CONC)
        .map(|w| {
            let (op, stop, errors) = (op.clone(), stop.clone(), errors.clone());
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(4096);
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    if op(w, i).await {
                        lat.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                }
                lat
            })
        })
        .collect();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await; // the measurement window
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    point(
        all,
        errors.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
    )
}

/// A minimal HTTP/1.1 keep-alive client (one connection per worker), so that the load
/// generator costs little of the 2 shared cores, as `wrk` would; reqwest numbers are
/// printed beside it.
struct RawConn {
    s: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl RawConn {
    async fn connect(addr: &str) -> RawConn {
        let s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.set_nodelay(true).expect("nodelay");
        RawConn {
            s,
            buf: Vec::with_capacity(16 * 1024),
        }
    }

    /// Sends one request and reads the whole response; returns the status.
    async fn request(&mut self, req: &[u8]) -> Option<u16> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        self.s.write_all(req).await.ok()?;
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buf[..end]).ok()?;
                let status: u16 = head.get(9..12)?.parse().ok()?;
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                let total = end + 4 + len;
                if self.buf.len() >= total {
                    self.buf.drain(..total);
                    return Some(status);
                }
            }
            if self.s.read_buf(&mut self.buf).await.ok()? == 0 {
                return None;
            }
        }
    }
}

fn raw_request(method: &str, path: &str, body: &str) -> Vec<u8> {
    format!(
        "{method} {path} HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn raw_conns(addr: &str) -> Arc<Vec<tokio::sync::Mutex<RawConn>>> {
    let mut v = Vec::with_capacity(CONC);
    for _ in 0..CONC {
        v.push(tokio::sync::Mutex::new(RawConn::connect(addr).await));
    }
    Arc::new(v)
}

fn config(tb: &Testbed) -> GaterConfig {
    GaterConfig::new(tb.cookie())
        .nodes(tb.node_names())
        .epmd_port(tb.epmd_port())
}

async fn ready(g: &Gater, nodes: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !g
        .cluster_status()
        .stores
        .iter()
        .any(|s| s.store.as_str() == STORE && s.leader.is_some() && s.workers.len() == nodes)
    {
        assert!(Instant::now() < deadline, "workers not known");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")
                    .map(|v| v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0))
            })
        })
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--serve") {
        serve_child(&args);
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        println!(
            "http_vs_api: smoke run only (use `cargo bench -p gater-http --bench http_vs_api`)"
        );
        return;
    }
    let secs: f64 = std::env::var("GATER_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4.0);
    let tb = Testbed::start(TestbedConfig {
        name_prefix: "httpbench".into(),
        ..TestbedConfig::default()
    })
    .expect("testbed");
    let rt_mode = std::env::var("GATER_BENCH_RT").unwrap_or_else(|_| "shared".into());
    // The load generator's runtime when the server has its own: `current` or `multi`.
    let client_mode = std::env::var("GATER_BENCH_CLIENT_RT").unwrap_or_else(|_| "multi".into());
    let client_rt = |mode: &str| server_runtime(mode, "load");
    println!("runtime: server {rt_mode}, load generator {client_mode}");
    // The load generator's runtime is driven from a thread named "load" (as are its
    // workers), so that its CPU can be told from the server's.
    let on_load_thread = |f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name("load".into())
            .spawn(f)
            .expect("load thread")
            .join()
            .expect("load thread");
    };
    if rt_mode == "shared" {
        // One multi-thread runtime for the Gater, the HTTP server and the load generator.
        let (cfg, nodes) = (config(&tb), tb.node_names().len());
        on_load_thread(Box::new(move || {
            client_rt("multi").block_on(async {
                let (g, addr) = start_server(cfg, nodes).await;
                throughput(g, addr, secs).await;
            });
        }));
    } else {
        // The Gater and the HTTP server on a runtime of their own, as the daemon runs them
        // (`current` = current-thread, `multi:N` = multi-thread with N workers); the load
        // generator, for both the library and the HTTP side, on a runtime of its own
        // (`GATER_BENCH_CLIENT_RT`, default a multi-thread one).
        let (cfg, nodes) = (config(&tb), tb.node_names().len());
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = std::thread::Builder::new()
            .name("srv".into())
            .spawn(move || {
                let rt = server_runtime(&rt_mode, "srv");
                rt.block_on(async move {
                    let _ = tx.send(start_server(cfg, nodes).await);
                    let _ = stop_rx.await;
                });
            });
        let (g, addr) = rx.recv().expect("server started");
        on_load_thread(Box::new(move || {
            client_rt(&client_mode).block_on(throughput(g, addr, secs));
        }));
        let _ = stop_tx.send(());
        server
            .expect("server thread")
            .join()
            .expect("server thread");
    }
    memory(&tb);
}

fn server_runtime(mode: &str, name: &str) -> tokio::runtime::Runtime {
    let mut b = match mode {
        "current" => tokio::runtime::Builder::new_current_thread(),
        m => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = m.strip_prefix("multi:").and_then(|n| n.parse().ok()) {
                b.worker_threads(n);
            }
            b
        }
    };
    b.enable_all().thread_name(name).build().expect("rt")
}

/// CPU seconds (user + system) of this process's threads whose name starts with `prefix`
/// (Linux; 100 ticks per second).
fn threads_cpu(prefix: &str) -> f64 {
    let mut ticks = 0u64;
    for t in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if !stat[open + 1..close].starts_with(prefix) {
            continue;
        }
        let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        ticks += f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    }
    ticks as f64 / 100.0
}

/// Connects a Gater and serves the HTTP API over it on the current runtime.
async fn start_server(cfg: GaterConfig, nodes: usize) -> (Gater, String) {
    let g = Gater::connect(cfg).await.expect("connect");
    ready(&g, nodes).await;
    let api = Arc::new(HttpApi::new(g.clone()).limits(Limits::default()));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        api.serve(
            listener,
            None,
            Duration::from_secs(1),
            std::future::pending(),
        )
        .await
    });
    (g, addr)
}

async fn throughput(g: Gater, addr: String, secs: f64) {
    let base = format!("http://{addr}");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CONC)
        .build()
        .expect("client");

    // A stream of 10 events to read.
    let ten: Vec<NewEvent> = (0..10)
        .map(|i| NewEvent::json("Bench", json!({ "i": i })))
        .collect();
    g.append_events(STORE, "bench-read", ten)
        .await
        .expect("seed");

    let api_append = |g: Gater| {
        move |w: usize, i: u64| {
            let g = g.clone();
            async move {
                g.append_events(
                    STORE,
                    &format!("api-{w}"),
                    vec![NewEvent::json("Bench", json!({ "i": i }))],
                )
                .await
                .is_ok()
            }
        }
    };
    let http_append = |c: reqwest::Client, base: String| {
        move |w: usize, i: u64| {
            let (c, url) = (
                c.clone(),
                format!("{base}/v1/stores/{STORE}/streams/http-{w}/events"),
            );
            async move {
                c.post(url)
                    .json(&json!({"events": [{"event_type": "Bench", "data": {"i": i}}]}))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        }
    };
    let api_read = |g: Gater| {
        move |_: usize, _: u64| {
            let g = g.clone();
            async move {
                g.get_events(STORE, "bench-read", 0, 10, Direction::Forward)
                    .await
                    .is_ok_and(|e| e.len() == 10)
            }
        }
    };
    let http_read = |c: reqwest::Client, base: String| {
        move |_: usize, _: u64| {
            let (c, url) = (
                c.clone(),
                format!("{base}/v1/stores/{STORE}/streams/bench-read/events?count=10"),
            );
            async move {
                match c.get(url).send().await {
                    Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                    _ => false,
                }
            }
        }
    };

    let raw_append = |conns: Arc<Vec<tokio::sync::Mutex<RawConn>>>| {
        move |w: usize, i: u64| {
            let conns = conns.clone();
            let req = raw_request(
                "POST",
                &format!("/v1/stores/{STORE}/streams/raw-{w}/events"),
                &format!(r#"{{"events":[{{"event_type":"Bench","data":{{"i":{i}}}}}]}}"#),
            );
            async move { conns[w].lock().await.request(&req).await == Some(200) }
        }
    };
    let read_req = Arc::new(raw_request(
        "GET",
        &format!("/v1/stores/{STORE}/streams/bench-read/events?count=10"),
        "",
    ));
    let raw_read = |conns: Arc<Vec<tokio::sync::Mutex<RawConn>>>| {
        let req = read_req.clone();
        move |w: usize, _: u64| {
            let (conns, req) = (conns.clone(), req.clone());
            async move { conns[w].lock().await.request(&req).await == Some(200) }
        }
    };
    let conns = raw_conns(&addr).await;

    let half = secs / 2.0;
    println!(
        "op      side          calls   errors  req/s     p99_ms   (64 concurrent, {secs} s per side, A B C C B A)"
    );
    // GATER_BENCH_OPS=read (or append) measures one operation only, for profiling.
    let ops = std::env::var("GATER_BENCH_OPS").unwrap_or_else(|_| "append,read".into());
    for op in ["append", "read"] {
        if !ops.split(',').any(|o| o.trim() == op) {
            continue;
        }
        let mut pts = [Point::default(); 3]; // api, http (raw client), http (reqwest)
        // CPU seconds of the server's threads ("srv": the Gater and the HTTP API) and of
        // the load generator's ("load"); in the shared mode all are "load".
        let mut cpu = [(0.0f64, 0.0f64); 3];
        for round in 0..2 {
            let order: [usize; 3] = if round == 0 { [0, 1, 2] } else { [2, 1, 0] };
            for side in order {
                let before = (threads_cpu("srv"), threads_cpu("load"));
                let p = match (op, side) {
                    ("append", 0) => drive(half, api_append(g.clone())).await,
                    ("append", 1) => drive(half, raw_append(conns.clone())).await,
                    ("append", _) => drive(half, http_append(http.clone(), base.clone())).await,
                    (_, 0) => drive(half, api_read(g.clone())).await,
                    (_, 1) => drive(half, raw_read(conns.clone())).await,
                    (_, _) => drive(half, http_read(http.clone(), base.clone())).await,
                };
                cpu[side].0 += threads_cpu("srv") - before.0;
                cpu[side].1 += threads_cpu("load") - before.1;
                pts[side] = if round == 0 { p } else { merge(pts[side], p) };
            }
        }
        for ((side, p), (srv, load)) in ["api", "http", "http-reqwest"].iter().zip(pts).zip(cpu) {
            let per_call = |s: f64| s * 1e6 / p.calls.max(1) as f64;
            println!(
                "{op:<7} {side:<13} {:<7} {:<7} {:<9.0} {:<8.2} cpu µs/call: server {:.1}, load generator {:.1}",
                p.calls,
                p.errors,
                p.per_s,
                p.p99_us as f64 / 1000.0,
                per_call(srv),
                per_call(load)
            );
        }
        println!(
            "{op:<7} http/api throughput ratio: {:.2} (reqwest client: {:.2})",
            pts[1].per_s / pts[0].per_s.max(1e-9),
            pts[2].per_s / pts[0].per_s.max(1e-9)
        );
    }
}

/// Child mode: a Gater and the HTTP API only; prints the URL, serves until stdin closes.
fn serve_child(args: &[String]) {
    let get = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_default()
    };
    // The daemon's default runtime: one thread on a machine with up to 2 cores.
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let mode = std::env::var("GATER_BENCH_CHILD_RT")
        .unwrap_or_else(|_| if cores <= 2 { "current" } else { "multi" }.into());
    let rt = server_runtime(&mode, "srv");
    rt.block_on(async {
        let cfg = GaterConfig::new(get("--cookie"))
            .nodes(get("--nodes").split(',').map(str::to_owned))
            .epmd_port(get("--epmd").parse().unwrap_or(4369));
        let g = Gater::connect(cfg).await.expect("connect");
        ready(&g, get("--nodes").split(',').count()).await;
        let api = Arc::new(HttpApi::new(g));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        println!("http://{}", listener.local_addr().expect("addr"));
        let stdin_closed = async {
            let _ = tokio::task::spawn_blocking(|| {
                let mut s = String::new();
                let _ = std::io::stdin().read_line(&mut s);
            })
            .await;
        };
        let _ = api
            .serve(listener, None, Duration::from_secs(1), stdin_closed)
            .await;
    });
}

fn memory(tb: &Testbed) {
    let exe = std::env::current_exe().expect("exe");
    let mut child = std::process::Command::new(exe)
        .args([
            "--serve",
            "--cookie",
            tb.cookie(),
            "--nodes",
            &tb.node_names().join(","),
            "--epmd",
            &tb.epmd_port().to_string(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("child");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("url");
    let base = line.trim().to_owned();
    let pid = child.id();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let c = reqwest::Client::new();
        // A few requests so the idle figure includes warmed-up pools and buffers.
        for _ in 0..20 {
            let _ = c
                .get(format!(
                    "{base}/v1/stores/{STORE}/streams/bench-read/events?count=10"
                ))
                .send()
                .await;
        }
        let idle = rss_kb(pid);
        let r = c
            .post(format!("{base}/v1/stores/{STORE}/subscriptions"))
            .json(&json!({"type": "by_stream", "selector": "$sse-bench", "name": "sse-bench"}))
            .send()
            .await
            .expect("subscription");
        assert!(r.status().is_success());
        let started = Instant::now();
        let opened = futures::stream::iter(0..1000)
            .map(|_| {
                let (c, url) = (
                    c.clone(),
                    format!("{base}/v1/stores/{STORE}/subscriptions/sse-bench/events"),
                );
                async move {
                    c.get(url)
                        .send()
                        .await
                        .ok()
                        .filter(|r| r.status().is_success())
                }
            })
            .buffer_unordered(32)
            .filter_map(|r| async move { r })
            .collect::<Vec<_>>()
            .await;
        let open_secs = started.elapsed().as_secs_f64();
        let with_sse = rss_kb(pid);
        println!(
            "rss: idle {:.1} MB; with {} open SSE subscriptions {:.1} MB (opened in {:.1} s)",
            idle as f64 / 1024.0,
            opened.len(),
            with_sse as f64 / 1024.0,
            open_secs
        );
        drop(opened);
    });
    drop(child.stdin.take());
    let _ = child.wait();
}
