//! The chaos run (faults under load, then the log check) and the soak (RSS and gauges).

use crate::daemon::Daemon;
use crate::load::{Acked, Load, LoadConfig, Outcome};
use crate::verify::{self, Verdict};
use anyhow::{Context, Result, bail};
use gater_testkit::testbed::{Testbed, TestbedConfig};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const STORE: &str = "reg_gh";

/// Options of `cargo xtask chaos`.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    /// The CI form: shorter holds, fewer load tasks.
    pub short: bool,
    /// Replica divergence (a testbed replication fault) fails the run too.
    pub strict: bool,
    /// Folder for the daemon's log and the report.
    pub out_dir: PathBuf,
}

/// What one fault did to the load.
#[derive(Debug, Clone)]
pub struct FaultReport {
    /// Fault name.
    pub fault: String,
    /// How long the fault was held.
    pub held: Duration,
    /// Requests that finished in the window (injection to recovery).
    pub requests: usize,
    /// Of which failed.
    pub errors: usize,
    /// Failed appends.
    pub write_errors: usize,
    /// Error kinds and counts.
    pub kinds: Vec<(String, usize)>,
    /// From injection to the end of the last failed request (zero: nothing failed).
    pub last_error_after: Duration,
    /// From healing the fault to 20 appends in a row succeeding.
    pub recovery: Option<Duration>,
    /// Longest gap between two successful appends in the window.
    pub longest_write_gap: Duration,
}

/// The whole chaos run.
#[derive(Debug, Clone)]
pub struct ChaosReport {
    /// Per fault.
    pub faults: Vec<FaultReport>,
    /// Requests in all.
    pub requests: usize,
    /// Acknowledged appends.
    pub acked: usize,
    /// The check of each replica's log.
    pub verdicts: Vec<(String, Verdict, String)>,
    /// Wall time.
    pub wall: Duration,
}

impl ChaosReport {
    /// What the gateway answers for holds: no replica holds an acknowledged append
    /// twice, at another number than acknowledged, or out of order; every acknowledged
    /// append is on at least one replica; every log is free of duplicates and gaps;
    /// every fault recovered. A replica that holds a *different* (unacknowledged) event
    /// at an acknowledged number diverged: that is the testbed's replication, reported
    /// by [`ChaosReport::divergent_replicas`] and fatal only with `strict`.
    pub fn ok(&self, strict: bool) -> bool {
        let missing_everywhere = self
            .verdicts
            .iter()
            .map(|(_, v, _)| v.missing.iter().collect::<std::collections::HashSet<_>>())
            .reduce(|a, b| a.intersection(&b).copied().collect())
            .unwrap_or_default();
        !self.verdicts.is_empty()
            && missing_everywhere.is_empty()
            && self.verdicts.iter().all(|(_, v, log)| {
                v.duplicated.is_empty()
                    && v.misnumbered.is_empty()
                    && v.out_of_order.is_empty()
                    && log == "ok"
            })
            && self.faults.iter().all(|f| f.recovery.is_some())
            && (!strict || self.divergent_replicas().is_empty())
    }

    /// Replicas whose log disagrees with the acknowledgements.
    pub fn divergent_replicas(&self) -> Vec<&str> {
        self.verdicts
            .iter()
            .filter(|(_, v, _)| !v.ok())
            .map(|(n, _, _)| n.as_str())
            .collect()
    }

    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "| fault | held | requests | errors (appends) | error rate | last error after | recovery after heal | longest append gap | error kinds |\n|---|---|---|---|---|---|---|---|---|"
        );
        for f in &self.faults {
            let rate = if f.requests == 0 {
                0.0
            } else {
                100.0 * f.errors as f64 / f.requests as f64
            };
            let kinds = f
                .kinds
                .iter()
                .map(|(k, n)| format!("{k} ×{n}"))
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(
                s,
                "| {} | {:.1} s | {} | {} ({}) | {rate:.1} % | {} | {} | {} | {} |",
                f.fault,
                f.held.as_secs_f64(),
                f.requests,
                f.errors,
                f.write_errors,
                ms(f.last_error_after),
                f.recovery.map_or("NOT RECOVERED".into(), ms),
                ms(f.longest_write_gap),
                if kinds.is_empty() { "-".into() } else { kinds }
            );
        }
        let _ = writeln!(
            s,
            "\n{} requests, {} acknowledged appends, {:.0} s.\n",
            self.requests,
            self.acked,
            self.wall.as_secs_f64()
        );
        for (node, v, log) in &self.verdicts {
            let _ = writeln!(
                s,
                "- replica `{node}`: {} acked checked; missing {}, duplicated {}, misnumbered {}, out of order {}; unacknowledged but present {}; check_log: `{log}`",
                v.acked,
                v.missing.len(),
                v.duplicated.len(),
                v.misnumbered.len(),
                v.out_of_order.len(),
                v.unacknowledged_present
            );
            if !v.ok() {
                let _ = writeln!(
                    s,
                    "  - **this replica diverged** from the acknowledgements: it holds another, unacknowledged event at an acknowledged number (testbed replication; see docs/reliability.md)"
                );
            }
            for d in &v.details {
                let _ = writeln!(s, "  - {d}");
            }
        }
        s
    }
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

/// Runs `f` (which blocks: testbed control calls) off the async workers.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

fn signal(pid: u32, sig: &str) -> Result<()> {
    let st = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()?;
    if !st.success() {
        bail!("kill -{sig} {pid} failed");
    }
    Ok(())
}

fn testbed(prefix: &str) -> Result<Testbed> {
    Testbed::start(TestbedConfig {
        nodes: 3,
        stores: vec![STORE.into()],
        workers_per_store: 2,
        cookie: format!("chaos_cookie_{}", std::process::id()),
        name_prefix: prefix.into(),
        lag_ms: 0,
        gossip: None,
    })
    .context("starting the testbed")
}

/// Faults, in order.
#[derive(Debug, Clone, Copy)]
enum Fault {
    KillWorker,
    SlowWorker,
    KillNode,
    PauseNode,
    RestartTestbed,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::KillWorker => "kill the leader's workers (crash on next request)",
            Fault::SlowWorker => "slow the leader's workers (+300 ms per request)",
            Fault::KillNode => "kill the leader node (SIGKILL), then restart it",
            Fault::PauseNode => {
                "SIGSTOP the leader (8 s short form, 75 s past net_ticktime full form), SIGCONT, restart it"
            }
            Fault::RestartTestbed => "restart the whole testbed (all nodes SIGKILLed)",
        }
    }
}

/// `cargo xtask chaos [--short]`.
pub async fn chaos(opts: &ChaosOptions) -> Result<ChaosReport> {
    let wall = Instant::now();
    std::fs::create_dir_all(&opts.out_dir)?;
    let tb = blocking(|| testbed("chaos"))?;
    let mut daemon = Daemon::start(&tb, &[], &opts.out_dir.join("chaos-daemon.log"))?;
    daemon.wait_ready(Duration::from_secs(30)).await?;
    let load = Load::start(LoadConfig {
        url: daemon.url().to_owned(),
        store: STORE.into(),
        writers: if opts.short { 3 } else { 6 },
        readers: 2,
        pace: Some(Duration::from_millis(if opts.short { 10 } else { 5 })),
        timeout: Duration::from_secs(20),
        stream_prefix: format!("chaos-{}", std::process::id()),
        token: None,
    });
    let hold = if opts.short {
        Duration::from_secs(3)
    } else {
        Duration::from_secs(8)
    };
    let settle = Duration::from_secs(60);
    let pause = if opts.short {
        Duration::from_secs(8)
    } else {
        Duration::from_secs(75)
    };
    if load.await_successes(20, settle).await.is_none() {
        bail!("the load never got going: {}", daemon.log_text());
    }
    let faults = [
        Fault::KillWorker,
        Fault::SlowWorker,
        Fault::KillNode,
        Fault::PauseNode,
        Fault::RestartTestbed,
    ];
    let mut reports = Vec::new();
    for fault in faults {
        let leader = blocking(|| tb.leader_index(STORE))?.unwrap_or(0);
        eprintln!("chaos: {} (leader is node {leader})", fault.name());
        let t0 = load.elapsed();
        let held_from = Instant::now();
        match fault {
            Fault::KillWorker => {
                blocking(|| tb.crash_workers_next(leader, STORE))?;
                tokio::time::sleep(hold).await;
            }
            Fault::SlowWorker => {
                blocking(|| tb.slow_workers(leader, STORE, 300))?;
                tokio::time::sleep(hold).await;
                blocking(|| tb.slow_workers(leader, STORE, 0))?;
            }
            Fault::KillNode => {
                blocking(|| tb.kill_node(leader));
                tokio::time::sleep(hold).await;
                blocking(|| tb.restart_node(leader))?;
            }
            Fault::PauseNode => {
                let pid = tb.os_pid(leader).context("leader pid")?;
                signal(pid, "STOP")?;
                // The full form pauses past the default net_ticktime (60 s): the other
                // nodes and the gateway declare it down. The short form pauses for
                // 8 s, like a long GC or VM freeze, below it.
                tokio::time::sleep(pause).await;
                signal(pid, "CONT")?;
                // A node resumed after its peers dropped it finds its control node gone
                // and halts (testkit design); bring it back as an operator would.
                blocking(|| tb.restart_node(leader))?;
            }
            Fault::RestartTestbed => {
                blocking(|| {
                    for i in 0..tb.node_names().len() {
                        tb.kill_node(i);
                    }
                });
                tokio::time::sleep(hold).await;
                blocking(|| -> Result<()> {
                    for i in 0..tb.node_names().len() {
                        tb.restart_node(i)?;
                    }
                    Ok(())
                })?;
            }
        }
        let held = held_from.elapsed();
        let healed = load.elapsed();
        let recovered = load.await_successes(20, settle).await;
        let end = load.elapsed();
        let outcomes = load.outcomes();
        reports.push(fault_report(
            fault.name(),
            held,
            &outcomes,
            t0,
            end,
            recovered.map(|r| r.saturating_sub(healed)),
        ));
        eprintln!("chaos: {:?}", reports.last());
    }
    let (outcomes, acked) = load.stop().await;
    let verdicts = blocking(|| verify_all(&tb, &acked))?;
    drop(daemon);
    drop(tb);
    Ok(ChaosReport {
        faults: reports,
        requests: outcomes.len(),
        acked: acked.len(),
        verdicts,
        wall: wall.elapsed(),
    })
}

/// Checks every running replica's log against the acknowledgements.
pub fn verify_all(tb: &Testbed, acked: &[Acked]) -> Result<Vec<(String, Verdict, String)>> {
    let mut out = Vec::new();
    for (i, name) in tb.node_names().iter().enumerate() {
        if !tb.is_running(i) {
            continue;
        }
        let stored = tb.stored_events(i, STORE)?;
        let log = tb.check_log(i, STORE)?;
        out.push((name.clone(), verify::check(acked, &stored), log));
    }
    Ok(out)
}

fn fault_report(
    name: &str,
    held: Duration,
    outcomes: &[Outcome],
    from: Duration,
    to: Duration,
    recovery: Option<Duration>,
) -> FaultReport {
    let window: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.at >= from && o.at <= to)
        .collect();
    let mut kinds: Vec<(String, usize)> = Vec::new();
    let mut last_error_after = Duration::ZERO;
    let mut last_ok_write = from;
    let mut longest = Duration::ZERO;
    for o in &window {
        if let Some(e) = &o.error {
            match kinds.iter_mut().find(|(k, _)| k == e) {
                Some((_, n)) => *n += 1,
                None => kinds.push((e.clone(), 1)),
            }
            last_error_after = last_error_after.max(o.at.saturating_sub(from));
        }
        if o.ok && o.write {
            longest = longest.max(o.at.saturating_sub(last_ok_write));
            last_ok_write = o.at;
        }
    }
    FaultReport {
        fault: name.into(),
        held,
        requests: window.len(),
        errors: window.iter().filter(|o| !o.ok).count(),
        write_errors: window.iter().filter(|o| !o.ok && o.write).count(),
        kinds,
        last_error_after,
        recovery,
        longest_write_gap: longest,
    }
}

/// Options of `cargo xtask chaos soak`.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// Length of the run.
    pub duration: Duration,
    /// RSS sampling period.
    pub sample_every: Duration,
    /// Samples before this are warm-up.
    pub warm_up: Duration,
    /// Folder for the daemon's log.
    pub out_dir: PathBuf,
}

/// The soak's figures.
#[derive(Debug, Clone)]
pub struct SoakReport {
    /// (seconds since start, RSS kB).
    pub rss: Vec<(u64, u64)>,
    /// RSS growth after warm-up: last sample over the first one after warm-up, minus 1.
    pub growth: f64,
    /// Requests and failed requests.
    pub requests: usize,
    /// Failed requests.
    pub errors: usize,
    /// SSE streams opened and closed during the run.
    pub sse_cycles: usize,
    /// Resource gauges at the start (after warm-up) and at the end (load stopped).
    pub gauges: Vec<(String, f64, f64)>,
    /// Gauges the issue asks for that /metrics lacks.
    pub missing_gauges: Vec<String>,
    /// The log check.
    pub verdicts: Vec<(String, Verdict, String)>,
}

impl SoakReport {
    /// RSS within 10 %, no request failed, SSE gauge back to zero, every in-flight gauge
    /// back to its level after warm-up, logs intact.
    pub fn ok(&self) -> bool {
        self.growth <= 0.10
            && self.errors == 0
            && self
                .gauges
                .iter()
                .all(|(_, start, end)| end <= start || *end == 0.0)
            && self
                .verdicts
                .iter()
                .all(|(_, v, log)| v.ok() && log == "ok")
    }
}

/// Gauges that say whether something leaks: SSE streams, calls in flight, monitors,
/// mailboxes (pids), references.
fn leak_gauges(metrics: &[(String, f64)]) -> Vec<(String, f64)> {
    metrics
        .iter()
        .filter(|(k, _)| {
            let k = k.to_lowercase();
            [
                "sse_streams",
                "in_flight",
                "monitor",
                "mailbox",
                "pids",
                "refs",
                "references",
                "tasks",
            ]
            .iter()
            .any(|w| k.contains(w))
                && !k.contains("_total")
                && !k.contains("_bucket")
        })
        .cloned()
        .collect()
}

/// `cargo xtask chaos soak --minutes N`.
pub async fn soak(opts: &SoakOptions) -> Result<SoakReport> {
    std::fs::create_dir_all(&opts.out_dir)?;
    let tb = blocking(|| testbed("soak"))?;
    let mut daemon = Daemon::start(&tb, &[], &opts.out_dir.join("soak-daemon.log"))?;
    daemon.wait_ready(Duration::from_secs(30)).await?;
    let client = reqwest::Client::new();
    // A subscription for SSE churn.
    let sub = serde_json::json!({"type": "by_stream", "selector": "$all", "name": "soak", "persistent": false});
    let r = client
        .post(format!("{}/v1/stores/{STORE}/subscriptions", daemon.url()))
        .json(&sub)
        .send()
        .await?;
    let sse_ok = r.status().is_success();
    if !sse_ok {
        eprintln!("soak: creating the SSE subscription gave {}", r.status());
    }
    let load = Load::start(LoadConfig {
        url: daemon.url().to_owned(),
        store: STORE.into(),
        writers: 4,
        readers: 2,
        pace: Some(Duration::from_millis(20)),
        timeout: Duration::from_secs(20),
        stream_prefix: format!("soak-{}", std::process::id()),
        token: None,
    });
    let started = Instant::now();
    let mut rss = Vec::new();
    let mut gauges_start: Option<Vec<(String, f64)>> = None;
    let mut sse_cycles = 0usize;
    let mut tick = tokio::time::interval(opts.sample_every);
    while started.elapsed() < opts.duration {
        tick.tick().await;
        let t = started.elapsed().as_secs();
        if let Some(kb) = daemon.rss_kb() {
            rss.push((t, kb));
            eprintln!("soak: t={t}s rss={kb} kB requests={}", load.count());
        }
        if gauges_start.is_none() && started.elapsed() >= opts.warm_up {
            gauges_start = Some(leak_gauges(&daemon.metrics().await?));
        }
        // SSE churn: open a stream, read its first bytes, drop it.
        if sse_ok {
            let url = format!(
                "{}/v1/stores/{STORE}/subscriptions/soak/events",
                daemon.url()
            );
            if let Ok(Ok(mut resp)) =
                tokio::time::timeout(Duration::from_secs(5), client.get(&url).send()).await
            {
                let _ = tokio::time::timeout(Duration::from_secs(2), resp.chunk()).await;
                sse_cycles += 1;
            }
        }
    }
    let (outcomes, acked) = load.stop().await;
    // Quiet for a moment, then the gauges must be back where they were.
    let end_metrics = settle_metrics(&daemon).await?;
    let start = gauges_start.unwrap_or_default();
    let end = leak_gauges(&end_metrics);
    let gauges = end
        .iter()
        .map(|(k, v)| {
            let s = start
                .iter()
                .find(|(sk, _)| sk == k)
                .map_or(0.0, |(_, v)| *v);
            (k.clone(), s, *v)
        })
        .collect::<Vec<_>>();
    let names: Vec<&str> = end_metrics.iter().map(|(k, _)| k.as_str()).collect();
    let mut missing_gauges = Vec::new();
    for (what, words) in [
        ("local pids (mailboxes)", &["pid", "mailbox"][..]),
        ("references / calls in flight", &["ref", "in_flight"][..]),
        ("monitors", &["monitor"][..]),
        ("SSE tasks", &["sse_streams"][..]),
    ] {
        if !names
            .iter()
            .any(|n| words.iter().any(|w| n.to_lowercase().contains(w)) && !n.contains("_total"))
        {
            missing_gauges.push(what.to_owned());
        }
    }
    let first_after = rss
        .iter()
        .find(|(t, _)| *t >= opts.warm_up.as_secs())
        .map(|(_, kb)| *kb)
        .unwrap_or(1)
        .max(1);
    let last = rss.last().map_or(first_after, |(_, kb)| *kb);
    let verdicts = blocking(|| verify_all(&tb, &acked))?;
    Ok(SoakReport {
        growth: last as f64 / first_after as f64 - 1.0,
        rss,
        requests: outcomes.len(),
        errors: outcomes.iter().filter(|o| !o.ok).count(),
        sse_cycles,
        gauges,
        missing_gauges,
        verdicts,
    })
}

/// `/metrics` once the SSE gauge reads zero (bounded: 10 s), or the last reading.
async fn settle_metrics(daemon: &Daemon) -> Result<Vec<(String, f64)>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = daemon.metrics().await?;
        let busy = leak_gauges(&m)
            .iter()
            .any(|(k, v)| (k.contains("sse_streams") || k.contains("in_flight")) && *v > 0.0);
        if !busy || Instant::now() > deadline {
            return Ok(m);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
