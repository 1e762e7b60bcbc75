//! The chaos run (faults under load, then the log check) and the soak (RSS and gauges).

use crate::daemon::Daemon;
use crate::load::{Acked, Load, LoadConfig, Outcome};
use crate::netns;
use crate::verify::{self, Verdict};
use anyhow::{Context, Result, bail};
use gater_testkit::testbed::{Testbed, TestbedConfig};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const STORE: &str = "reg_gh";

/// Where the run's processes live.
#[derive(Debug, Clone)]
pub enum Network {
    /// Inside the harness's own network namespace (this process runs in it): testbed
    /// nodes on `addrs` (on the namespace's `lo`), everything else on 127.0.0.1; the
    /// cut-off fault runs.
    Namespace {
        /// The namespace's name (every `ip` command names it).
        name: String,
        /// Node `i`'s address.
        addrs: Vec<Ipv4Addr>,
    },
    /// On the host's loopback, every node on 127.0.0.1: the cut-off fault is skipped.
    Host {
        /// Why there is no namespace.
        reason: String,
    },
}

/// Options of `cargo xtask chaos`.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    /// The CI form: shorter holds, fewer load tasks.
    pub short: bool,
    /// Replica divergence (a testbed replication fault) fails the run too.
    pub strict: bool,
    /// Folder for the daemon's log and the report.
    pub out_dir: PathBuf,
    /// Namespace or host loopback.
    pub network: Network,
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
    /// Not run, and why (the cut-off fault without a network namespace).
    pub skipped: Option<String>,
    /// What else happened (for example: the node halted and was restarted).
    pub note: Option<String>,
}

impl FaultReport {
    /// A fault that was not run, and why.
    pub fn skipped(fault: &str, reason: String) -> Self {
        Self {
            fault: fault.into(),
            held: Duration::ZERO,
            requests: 0,
            errors: 0,
            write_errors: 0,
            kinds: Vec::new(),
            last_error_after: Duration::ZERO,
            recovery: None,
            longest_write_gap: Duration::ZERO,
            skipped: Some(reason),
            note: None,
        }
    }
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
            && self
                .faults
                .iter()
                .all(|f| f.recovery.is_some() || f.skipped.is_some())
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
            if let Some(why) = &f.skipped {
                let _ = writeln!(s, "| {} | **skipped**: {why} | | | | | | | |", f.fault);
                continue;
            }
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
                match (&f.note, kinds.is_empty()) {
                    (None, true) => "-".into(),
                    (None, false) => kinds,
                    (Some(n), true) => n.clone(),
                    (Some(n), false) => format!("{kinds}; {n}"),
                }
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

fn testbed(prefix: &str, node_addrs: Vec<Ipv4Addr>, net_ticktime: Option<u32>) -> Result<Testbed> {
    Testbed::start(TestbedConfig {
        nodes: 3,
        stores: vec![STORE.into()],
        workers_per_store: 2,
        cookie: format!("chaos_cookie_{}", std::process::id()),
        name_prefix: prefix.into(),
        node_addrs,
        net_ticktime,
        lag_ms: 0,
        // Gossip stays off: the daemon is given the node names (static discovery).
        gossip: None,
    })
    .context("starting the testbed")
}

/// Whether the OS process `pid` still runs (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X')
    })
}

/// Heals the cut when dropped (also when the run is interrupted during the hold).
struct CutGuard<'a> {
    ns: &'a str,
    addr: Ipv4Addr,
    active: bool,
}

impl CutGuard<'_> {
    fn heal(&mut self) -> Result<()> {
        self.active = false;
        netns::heal(self.ns, self.addr)
    }
}

impl Drop for CutGuard<'_> {
    fn drop(&mut self) {
        if self.active {
            let _ = netns::heal(self.ns, self.addr);
        }
    }
}

/// Faults, in order.
#[derive(Debug, Clone, Copy)]
enum Fault {
    KillWorker,
    SlowWorker,
    KillNode,
    PauseNode,
    CutNode,
    RestartTestbed,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::KillWorker => "kill the leader's workers (crash on next request)",
            Fault::SlowWorker => "slow the leader's workers (+300 ms per request)",
            Fault::KillNode => "kill the leader node (SIGKILL), then restart it",
            Fault::PauseNode => {
                "SIGSTOP the leader (8 s short form, past net_ticktime full form), SIGCONT, restart it"
            }
            Fault::CutNode => {
                "cut the leader off the network (both directions; 3 s short form, past net_ticktime full form), heal (restart it if it halted)"
            }
            Fault::RestartTestbed => "restart the whole testbed (all nodes SIGKILLed)",
        }
    }
}

/// `cargo xtask chaos [--short]`.
pub async fn chaos(opts: &ChaosOptions) -> Result<ChaosReport> {
    let wall = Instant::now();
    std::fs::create_dir_all(&opts.out_dir)?;
    // A shorter net_ticktime for nodes and daemon when the daemon has the setting (the
    // full form then holds its past-net_ticktime faults for less); OTP's 60 s otherwise.
    let daemon_ticktime = crate::daemon::supports_net_ticktime();
    let ticktime = if daemon_ticktime { 20 } else { 60 };
    let (node_addrs, ns) = match &opts.network {
        Network::Namespace { name, addrs } => (addrs.clone(), Some(name.as_str())),
        Network::Host { .. } => (Vec::new(), None),
    };
    let tb = blocking(|| testbed("chaos", node_addrs, daemon_ticktime.then_some(ticktime)))?;
    let ticktime_env = ticktime.to_string();
    let mut env: Vec<(&str, &str)> = Vec::new();
    if daemon_ticktime {
        env.push((crate::daemon::NET_TICKTIME_ENV, &ticktime_env));
    }
    let mut daemon = Daemon::start(&tb, &env, &opts.out_dir.join("chaos-daemon.log"))?;
    daemon.wait_ready(Duration::from_secs(30)).await?;
    let load = Load::start(LoadConfig {
        pace: Some(Duration::from_millis(if opts.short { 10 } else { 5 })),
        ..LoadConfig::new(
            daemon.url(),
            STORE,
            &format!("chaos-{}", std::process::id()),
            if opts.short { 3 } else { 6 },
            2,
        )
    });
    let hold = if opts.short {
        Duration::from_secs(3)
    } else {
        Duration::from_secs(8)
    };
    let settle = Duration::from_secs(60);
    // Past net_ticktime: peers declare a silent node down between 0.75 and 1.25 times it.
    let past_ticktime = Duration::from_secs(u64::from(ticktime) * 5 / 4 + 5);
    let pause = if opts.short {
        Duration::from_secs(8)
    } else {
        past_ticktime
    };
    let cut_hold = if opts.short { hold } else { past_ticktime };
    eprintln!(
        "chaos: net_ticktime {ticktime} s ({}), network: {}",
        if daemon_ticktime {
            "nodes and daemon"
        } else {
            "OTP default; the daemon has no net_ticktime setting"
        },
        match &opts.network {
            Network::Namespace { name, addrs } => format!("namespace {name}, nodes on {addrs:?}"),
            Network::Host { reason } => format!("host loopback (cut-off fault skipped: {reason})"),
        }
    );
    if load.await_successes(20, settle).await.is_none() {
        bail!("the load never got going: {}", daemon.log_text());
    }
    let faults = [
        Fault::KillWorker,
        Fault::SlowWorker,
        Fault::KillNode,
        Fault::PauseNode,
        Fault::CutNode,
        Fault::RestartTestbed,
    ];
    let mut reports = Vec::new();
    for fault in faults {
        if let (Fault::CutNode, Network::Host { reason }) = (fault, &opts.network) {
            eprintln!("chaos: {} skipped: {reason}", fault.name());
            reports.push(FaultReport::skipped(
                fault.name(),
                format!("no network namespace: {reason}"),
            ));
            continue;
        }
        let leader = blocking(|| tb.leader_index(STORE))?.unwrap_or(0);
        let mut note = None;
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
            Fault::CutNode => {
                let ns = ns.context("the cut-off fault needs the namespace")?;
                let addr = tb.node_addr(leader);
                let pid = tb.os_pid(leader).context("leader pid")?;
                netns::cut(ns, addr)?;
                let mut cut = CutGuard {
                    ns,
                    addr,
                    active: true,
                };
                // The node runs on, alone: new connections to or from it fail, the
                // established ones go silent. Past net_ticktime (full form) the others
                // and the gateway drop it and elect a new leader.
                tokio::time::sleep(cut_hold).await;
                cut.heal()?;
                // Past net_ticktime the node also lost its control node and halted
                // (testkit design): bring it back as an operator would.
                if !alive(pid) {
                    blocking(|| tb.restart_node(leader))?;
                    note = Some("node halted (lost its control node), restarted".to_owned());
                }
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
        let mut report = fault_report(
            fault.name(),
            held,
            &outcomes,
            t0,
            end,
            recovered.map(|r| r.saturating_sub(healed)),
        );
        report.note = note;
        reports.push(report);
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
        skipped: None,
        note: None,
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

/// Leak gauges the soak asserts: each must be exported, and back at (or below) its
/// level at rest after warm-up once the load has stopped.
pub const REQUIRED_GAUGES: &[&str] = &[
    "gater_http_sse_streams",
    "gater_pool_local_pids",
    "gater_pool_peer_monitors",
    "gater_pool_own_monitors",
];

/// Asserted the same way when /metrics has them.
pub const OPTIONAL_GAUGES: &[&str] = &[
    "gater_pool_pending_refs",
    "gater_pool_calls_in_flight",
    "gater_api_subscription_topics",
];

/// One leak gauge: its level at rest after warm-up and at the end (summed over labels;
/// `None`: not in /metrics).
#[derive(Debug, Clone, PartialEq)]
pub struct GaugeCheck {
    /// Metric name.
    pub name: String,
    /// Whether its absence fails the soak.
    pub required: bool,
    /// After warm-up, load paused.
    pub baseline: Option<f64>,
    /// At the end, load stopped and settled.
    pub end: Option<f64>,
}

impl GaugeCheck {
    /// Why this gauge fails the soak, if it does.
    pub fn failure(&self) -> Option<String> {
        match (self.baseline, self.end) {
            (Some(b), Some(e)) if e > b => Some(format!(
                "`{}` did not return to its baseline: {b} after warm-up, {e} at the end",
                self.name
            )),
            (Some(_), Some(_)) => None,
            _ if !self.required => None,
            _ => Some(format!(
                "`{}` is missing from /metrics (the daemon does not export it), so it cannot be asserted",
                self.name
            )),
        }
    }
}

/// The soak's figures.
#[derive(Debug, Clone)]
pub struct SoakReport {
    /// (seconds since start, RSS kB).
    pub rss: Vec<(u64, u64)>,
    /// RSS growth after warm-up: last sample over the first one after warm-up, minus 1.
    pub growth: f64,
    /// Requests (appends, reads and SSE streams).
    pub requests: usize,
    /// Failed requests.
    pub errors: usize,
    /// The first few failures, as `kind ×count`.
    pub error_kinds: Vec<(String, usize)>,
    /// SSE streams opened, read and dropped during the run.
    pub sse_cycles: usize,
    /// Events the daemon sent on SSE streams (`gater_http_sse_events_total` at the end).
    pub sse_events: f64,
    /// The leak gauges.
    pub gauges: Vec<GaugeCheck>,
    /// The log check.
    pub verdicts: Vec<(String, Verdict, String)>,
}

impl SoakReport {
    /// Why the soak failed (empty: it passed): RSS over 10 %, a failed request, a leak
    /// gauge missing or above its baseline, a replica that disagrees.
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.growth > 0.10 {
            out.push(format!(
                "RSS grew {:+.1} % after warm-up (limit 10 %)",
                self.growth * 100.0
            ));
        }
        if self.errors > 0 {
            out.push(format!(
                "{} requests failed: {:?}",
                self.errors, self.error_kinds
            ));
        }
        if self.sse_cycles == 0 {
            out.push("no SSE stream was opened".into());
        }
        out.extend(self.gauges.iter().filter_map(GaugeCheck::failure));
        if self.verdicts.is_empty() {
            out.push("no replica was checked".into());
        }
        for (n, v, log) in &self.verdicts {
            if !v.ok() || log != "ok" {
                out.push(format!(
                    "replica {n} disagrees with the acknowledgements (check_log `{log}`)"
                ));
            }
        }
        out
    }

    /// Whether the soak passed.
    pub fn ok(&self) -> bool {
        self.failures().is_empty()
    }
}

/// `/metrics` summed per metric name (labels dropped).
fn by_name(metrics: &[(String, f64)]) -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    for (series, v) in metrics {
        let name = series.split('{').next().unwrap_or(series).to_owned();
        *out.entry(name).or_insert(0.0) += v;
    }
    out
}

fn asserted_gauges() -> impl Iterator<Item = (&'static str, bool)> {
    REQUIRED_GAUGES
        .iter()
        .map(|g| (*g, true))
        .chain(OPTIONAL_GAUGES.iter().map(|g| (*g, false)))
}

/// Reads /metrics until `done` holds for the leak gauges (bounded by `within`); returns
/// the last reading. The daemon has no other way to say that it is at rest.
async fn metrics_when(
    daemon: &Daemon,
    within: Duration,
    done: impl Fn(&std::collections::BTreeMap<String, f64>) -> bool,
) -> Result<std::collections::BTreeMap<String, f64>> {
    let deadline = Instant::now() + within;
    loop {
        let m = by_name(&daemon.metrics().await?);
        if done(&m) || Instant::now() > deadline {
            return Ok(m);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Nothing in flight: no SSE stream open, no call waiting for its reply.
fn at_rest(m: &std::collections::BTreeMap<String, f64>) -> bool {
    [
        "gater_http_sse_streams",
        "gater_pool_calls_in_flight",
        "gater_pool_pending_refs",
    ]
    .iter()
    .all(|g| m.get(*g).is_none_or(|v| *v == 0.0))
}

/// `cargo xtask chaos soak --minutes N`.
pub async fn soak(opts: &SoakOptions) -> Result<SoakReport> {
    std::fs::create_dir_all(&opts.out_dir)?;
    let tb = blocking(|| testbed("soak", Vec::new(), None))?;
    let mut daemon = Daemon::start(&tb, &[], &opts.out_dir.join("soak-daemon.log"))?;
    daemon.wait_ready(Duration::from_secs(30)).await?;
    let load = Load::start(LoadConfig {
        pace: Some(Duration::from_millis(20)),
        sse_subscribers: 2,
        sse_hold: Duration::from_secs(3),
        ..LoadConfig::new(
            daemon.url(),
            STORE,
            &format!("soak-{}", std::process::id()),
            4,
            2,
        )
    });
    let started = Instant::now();
    let mut rss = Vec::new();
    let mut baseline: Option<std::collections::BTreeMap<String, f64>> = None;
    let mut tick = tokio::time::interval(opts.sample_every);
    while started.elapsed() < opts.duration {
        tick.tick().await;
        let t = started.elapsed().as_secs();
        if let Some(kb) = daemon.rss_kb() {
            rss.push((t, kb));
            eprintln!("soak: t={t}s rss={kb} kB requests={}", load.count());
        }
        if baseline.is_none() && started.elapsed() >= opts.warm_up {
            // The baseline at rest: pause the load, let the daemon finish what it has
            // in flight, read the gauges, go on.
            if !load.pause(Duration::from_secs(30)).await {
                bail!("the load did not pause within 30 s");
            }
            let m = metrics_when(&daemon, Duration::from_secs(15), at_rest).await?;
            eprintln!("soak: baseline after warm-up: {m:?}");
            baseline = Some(m);
            load.resume();
        }
    }
    let (outcomes, acked) = load.stop().await;
    let baseline = match baseline {
        Some(b) => b,
        None => bail!("the run ended before the warm-up did: no baseline"),
    };
    // Load stopped: wait (bounded) until every gauge is back at its baseline.
    let end = metrics_when(&daemon, Duration::from_secs(30), |m| {
        asserted_gauges().all(|(g, _)| match (baseline.get(g), m.get(g)) {
            (Some(b), Some(e)) => e <= b,
            _ => true,
        })
    })
    .await?;
    let gauges = asserted_gauges()
        .map(|(g, required)| GaugeCheck {
            name: g.to_owned(),
            required,
            baseline: baseline.get(g).copied(),
            end: end.get(g).copied(),
        })
        .collect::<Vec<_>>();
    let first_after = rss
        .iter()
        .find(|(t, _)| *t >= opts.warm_up.as_secs())
        .map(|(_, kb)| *kb)
        .unwrap_or(1)
        .max(1);
    let last = rss.last().map_or(first_after, |(_, kb)| *kb);
    let verdicts = blocking(|| verify_all(&tb, &acked))?;
    let mut error_kinds: Vec<(String, usize)> = Vec::new();
    for e in outcomes.iter().filter_map(|o| o.error.as_ref()) {
        match error_kinds.iter_mut().find(|(k, _)| k == e) {
            Some((_, n)) => *n += 1,
            None => error_kinds.push((e.clone(), 1)),
        }
    }
    Ok(SoakReport {
        growth: last as f64 / first_after as f64 - 1.0,
        rss,
        requests: outcomes.len(),
        errors: outcomes.iter().filter(|o| !o.ok).count(),
        error_kinds,
        sse_cycles: outcomes.iter().filter(|o| o.sse && o.ok).count(),
        sse_events: end
            .get("gater_http_sse_events_total")
            .copied()
            .unwrap_or(0.0),
        gauges,
        verdicts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(required: bool, baseline: Option<f64>, end: Option<f64>) -> GaugeCheck {
        GaugeCheck {
            name: "g".into(),
            required,
            baseline,
            end,
        }
    }

    #[test]
    fn a_gauge_fails_when_above_its_baseline_or_missing() {
        assert!(check(true, Some(2.0), Some(2.0)).failure().is_none());
        assert!(check(true, Some(2.0), Some(1.0)).failure().is_none());
        assert!(check(true, Some(0.0), Some(1.0)).failure().is_some());
        let missing = check(true, None, None).failure().expect("fails");
        assert!(missing.contains("missing from /metrics"), "{missing}");
        assert!(check(false, None, None).failure().is_none());
        assert!(check(false, Some(0.0), Some(3.0)).failure().is_some());
    }

    #[test]
    fn metrics_are_summed_over_labels() {
        let m = crate::daemon::parse_metrics(
            "# HELP x\ngater_pool_local_pids{node=\"a\"} 2\ngater_pool_local_pids{node=\"b\"} 3\ngater_http_sse_streams 0\n",
        );
        let m = by_name(&m);
        assert_eq!(m.get("gater_pool_local_pids"), Some(&5.0));
        assert!(at_rest(&m));
    }

    #[test]
    fn a_skipped_fault_does_not_fail_the_run_but_a_missing_recovery_does() {
        let mut r = ChaosReport {
            faults: vec![FaultReport::skipped("f", "not root".into())],
            requests: 0,
            acked: 0,
            verdicts: vec![("n0".into(), Verdict::default(), "ok".into())],
            wall: Duration::ZERO,
        };
        assert!(r.ok(true));
        assert!(r.markdown().contains("**skipped**: not root"));
        // Run, but never recovered.
        r.faults.push(FaultReport {
            skipped: None,
            ..FaultReport::skipped("g", String::new())
        });
        assert!(!r.ok(false));
    }
}
