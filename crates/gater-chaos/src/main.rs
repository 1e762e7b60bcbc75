//! `gater-chaos chaos [--short] [--strict] [--out DIR]` and `gater-chaos soak [--minutes N] [--out DIR]`;
//! run through `cargo xtask chaos`. Prints a Markdown report and exits non-zero when a
//! promise was broken.

use anyhow::{Result, bail};
use gater_chaos::{ChaosOptions, SoakOptions, scenario};
use std::path::PathBuf;
use std::time::Duration;

fn main() {
    if let Err(e) = run() {
        eprintln!("gater-chaos: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
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
            let r = rt.block_on(scenario::soak(&opts))?;
            println!("## Soak ({minutes} min)\n");
            println!(
                "requests {}, errors {}, SSE streams opened and closed {}, RSS growth after warm-up {:+.1} %",
                r.requests,
                r.errors,
                r.sse_cycles,
                r.growth * 100.0
            );
            println!("\nRSS samples (s, kB): {:?}", r.rss);
            println!("\n| gauge | after warm-up | at the end |\n|---|---|---|");
            for (k, s, e) in &r.gauges {
                println!("| `{k}` | {s} | {e} |");
            }
            if !r.missing_gauges.is_empty() {
                println!("\nmissing from /metrics: {}", r.missing_gauges.join(", "));
            }
            for (n, v, log) in &r.verdicts {
                println!(
                    "- replica `{n}`: {} acked, ok {}, check_log `{log}`",
                    v.acked,
                    v.ok()
                );
            }
            if !r.ok() {
                bail!("soak failed");
            }
            Ok(())
        }
        Some("chaos") | None => {
            let opts = ChaosOptions {
                short: flag("--short"),
                strict: flag("--strict"),
                out_dir,
            };
            let r = rt.block_on(scenario::chaos(&opts))?;
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
            Ok(())
        }
        Some(other) => {
            bail!("unknown command `{other}`: chaos [--short] [--strict] | soak [--minutes N]")
        }
    }
}
