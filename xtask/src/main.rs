//! `cargo xtask <task>`: the project's tasks, so that CI is one command that works the
//! same on a laptop and in CI.

mod bench_report;
mod chaos;
mod deploy_check;
mod erlang;
mod otp;
mod testbed;
mod up;
mod util;

use anyhow::{Result, bail};
use util::{cargo, step};

const USAGE: &str = "\
usage: cargo xtask <task> [args]

tasks:
  ci                 everything CI checks: fmt, clippy, Erlang-side tests, every Rust test
  up                 the demo: testbed cluster + exesdb-gater daemon in the foreground (URL, dev token); Ctrl-C stops both
  deploy-check       check the Docker, Compose, Swarm and Kubernetes files in dev-env/
  testbed <cmd>      the BEAM testbed: up | down | status | test | load (see `cargo xtask testbed help`)
  bench              run every benchmark and write docs/benchmarks.md (figures + SVG charts)
  chaos [--short] [--strict] [--require-netns]   faults under load through the daemon (in a network namespace of its own when root), then the acknowledged-append check
  chaos soak [--minutes N]   N minutes of moderate load: RSS and leak gauges
  erlang             make sure erl and erlc are installed (installs erlang-nox as root on Debian)
  otp27              the testbed EUnit tests and the Rust tests that start Erlang nodes, on OTP 27 (Debian trixie in a chroot; root)
";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: &[String]) -> Result<()> {
    let Some((task, rest)) = args.split_first() else {
        print!("{USAGE}");
        return Ok(());
    };
    match task.as_str() {
        "ci" => ci(rest),
        "up" => up(rest),
        "testbed" => testbed::main(rest),
        "deploy-check" => deploy_check::main(),
        "bench" => bench(rest),
        "chaos" => chaos::main(rest),
        "erlang" => erlang::ensure().map(|_| ()),
        "otp27" => otp::main(rest),
        "help" | "-h" | "--help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown task `{other}`; run `cargo xtask help`"),
    }
}

fn ci(_args: &[String]) -> Result<()> {
    let started = std::time::Instant::now();
    step("checking formatting (cargo fmt --check)");
    cargo(&["fmt", "--all", "--", "--check"])
        .map_err(|e| e.context("code is not formatted: run `cargo fmt --all`"))?;

    step("linting (cargo clippy --all-targets -D warnings)");
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;

    deploy_check::main()?;
    erlang::ensure()?;
    step("building and testing the BEAM testbed (erlc, EUnit)");
    testbed::build()?;
    testbed::erlang_tests()?;

    step("building tests");
    cargo(&["test", "--workspace", "--all-targets", "--no-run"])?;
    step("running unit and integration tests");
    cargo(&["test", "--workspace", "--all-targets"])?;
    step("running doc tests");
    cargo(&["test", "--workspace", "--doc"])?;

    step("fault injection, short form (cargo xtask chaos --short), in its own network namespace");
    chaos::main(&["--short".into(), "--debug".into(), "--require-netns".into()])?;

    step(&format!("ci passed in {:.0?}", started.elapsed()));
    Ok(())
}

fn up(args: &[String]) -> Result<()> {
    erlang::ensure()?;
    testbed::build()?;
    up::main(args)
}

fn bench(args: &[String]) -> Result<()> {
    erlang::ensure()?;
    testbed::build()?;
    step("running benchmarks (cargo bench --workspace), output kept for docs/benchmarks.md");
    let mut cmd = vec!["bench", "--workspace"];
    cmd.extend(args.iter().map(String::as_str));
    let output = bench_report::cargo_tee(&cmd)?;
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    bench_report::write(&util::root(), &output, &date)?;
    step("wrote docs/benchmarks.md and docs/bench/*.svg");
    Ok(())
}
