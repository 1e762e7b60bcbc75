//! `gater-chaos chaos [--short] [--strict] [--out DIR]` and `gater-chaos soak [--minutes N] [--out DIR]`;
//! run through `cargo xtask chaos`. Prints a Markdown report and exits non-zero when a
//! promise was broken.
//!
//! `chaos` runs inside a network namespace of its own when it can (root, `ip netns`): it
//! creates the namespace, runs itself again in it (`ip netns exec <ns> gater-chaos chaos
//! ... --inside-netns <ns>`), waits, and deletes the namespace, also when interrupted.
//! Without one, the cut-off fault is reported as skipped, unless
//! `EXESDB_GATER_REQUIRE_NETNS=1`, which makes that a failure.

use anyhow::{Result, anyhow, bail};
use gater_chaos::scenario::Network;
use gater_chaos::{ChaosOptions, SoakOptions, netns, scenario};
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

fn main() {
    match run() {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("gater-chaos: {e:#}");
            std::process::exit(1);
        }
    }
}

/// Runs `f` until it ends or the process gets SIGINT/SIGTERM; on a signal `f` is
/// dropped (which stops every process it started) and the run fails.
async fn interruptible<T>(f: impl Future<Output = Result<T>>) -> Result<T> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = f => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted (SIGINT)")),
        _ = term.recv() => Err(anyhow!("terminated (SIGTERM)")),
    }
}

fn run() -> Result<i32> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().any(|a| a == name);
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let out_dir = value("--out").map(PathBuf::from).unwrap_or_else(|| {
        std::env::temp_dir().join(format!("gater-chaos-{}", std::process::id()))
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()?;
    match args.first().map(String::as_str) {
        Some("soak") => {
            let minutes: f64 = value("--minutes").map_or(Ok(10.0), |m| m.parse())?;
            let duration = Duration::from_secs_f64(minutes * 60.0);
            let opts = SoakOptions {
                duration,
                sample_every: Duration::from_secs(10),
                warm_up: (duration / 5).min(Duration::from_secs(120)),
                out_dir,
            };
            let r = rt.block_on(interruptible(scenario::soak(&opts)))?;
            println!("## Soak ({minutes} min)\n");
            println!(
                "requests {} (appends, reads, SSE streams), failed {}, SSE streams opened, read and dropped {} ({} events sent on them), RSS growth after warm-up {:+.1} %",
                r.requests,
                r.errors,
                r.sse_cycles,
                r.sse_events,
                r.growth * 100.0
            );
            println!("\nRSS samples (s, kB): {:?}", r.rss);
            println!(
                "\n| gauge | asserted | at rest after warm-up | at the end | |\n|---|---|---|---|---|"
            );
            let show = |v: Option<f64>| v.map_or("missing".to_owned(), |v| v.to_string());
            for g in &r.gauges {
                println!(
                    "| `{}` | {} | {} | {} | {} |",
                    g.name,
                    if g.required {
                        "required"
                    } else {
                        "if exported"
                    },
                    show(g.baseline),
                    show(g.end),
                    if g.failure().is_some() {
                        "**FAIL**"
                    } else {
                        "ok"
                    }
                );
            }
            println!();
            for (n, v, log) in &r.verdicts {
                println!(
                    "- replica `{n}`: {} acked, ok {}, check_log `{log}`",
                    v.acked,
                    v.ok()
                );
            }
            let failures = r.failures();
            if !failures.is_empty() {
                println!("\nsoak failed:");
                for f in &failures {
                    println!("- {f}");
                }
                bail!("soak failed: {}", failures.join("; "));
            }
            Ok(0)
        }
        Some("chaos") | None => {
            let network = match value("--inside-netns") {
                Some(name) => {
                    if !netns::inside(&name) {
                        bail!("--inside-netns {name}: this process is not in that namespace");
                    }
                    Network::Namespace {
                        name,
                        addrs: (0..3).map(netns::node_addr).collect(),
                    }
                }
                None => match netns::Netns::create(3) {
                    Ok(ns) => return rt.block_on(run_inside(ns, &args)),
                    Err(e) if netns::required() => {
                        bail!(
                            "{}=1, but no network namespace for the cut-off fault: {e:#}",
                            netns::REQUIRE_ENV
                        )
                    }
                    Err(e) => {
                        eprintln!(
                            "gater-chaos: no network namespace ({e:#}): running on the host's loopback, the cut-off fault is skipped"
                        );
                        Network::Host {
                            reason: format!("{e:#}"),
                        }
                    }
                },
            };
            let opts = ChaosOptions {
                short: flag("--short"),
                strict: flag("--strict"),
                out_dir,
                network,
            };
            let r = rt.block_on(interruptible(scenario::chaos(&opts)))?;
            println!("## Chaos{}\n", if opts.short { " (short)" } else { "" });
            println!("{}", r.markdown());
            let divergent = r.divergent_replicas();
            if !divergent.is_empty() {
                println!(
                    "testbed finding: replicas {} diverged (another event at an acknowledged number); --strict makes this fatal",
                    divergent.join(", ")
                );
            }
            if !r.ok(opts.strict) {
                bail!("chaos: a promise was broken (see the report above)");
            }
            Ok(0)
        }
        Some(other) => {
            bail!("unknown command `{other}`: chaos [--short] [--strict] | soak [--minutes N]")
        }
    }
}

/// Runs this program again inside `ns` and returns its exit code; `ns` is deleted when
/// this returns, panics or is interrupted (SIGINT/SIGTERM are passed on to the child,
/// which stops its processes; whatever is left in the namespace is killed by pid).
async fn run_inside(ns: netns::Netns, args: &[String]) -> Result<i32> {
    let exe = std::env::current_exe()?;
    eprintln!(
        "gater-chaos: running in network namespace {} (nodes on {:?})",
        ns.name(),
        ns.addrs()
    );
    let mut child = tokio::process::Command::new("ip")
        .args(["netns", "exec", ns.name()])
        .arg(exe)
        .args(args)
        .args(["--inside-netns", ns.name()])
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id();
    let forward = |sig: &str| {
        if let Some(pid) = pid {
            // Our own child, by pid (`ip netns exec` execs the program: same pid).
            let _ = std::process::Command::new("kill")
                .args([&format!("-{sig}"), &pid.to_string()])
                .status();
        }
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let status = tokio::select! {
        st = child.wait() => Some(st?),
        _ = tokio::signal::ctrl_c() => { forward("INT"); None }
        _ = term.recv() => { forward("TERM"); None }
    };
    let status = match status {
        Some(st) => st,
        None => {
            // The child stops its testbed and daemon when signalled; give it a moment.
            match tokio::time::timeout(Duration::from_secs(20), child.wait()).await {
                Ok(st) => st?,
                Err(_) => {
                    child.kill().await?;
                    child.wait().await?
                }
            }
        }
    };
    drop(ns);
    Ok(status.code().unwrap_or(1))
}
