//! `cargo xtask chaos [--short]` and `cargo xtask chaos soak [--minutes N]`: builds the
//! daemon and the harness (crates/gater-chaos), then runs the harness, which starts a
//! private testbed and the daemon, injects faults under load and checks the testbed's
//! logs. The report (Markdown) is printed and written to `target/chaos/`.
//!
//! The chaos run creates a network namespace of its own (root and `ip netns` needed) so
//! it can cut a node off; without one that fault is skipped, unless `--require-netns`
//! (what `cargo xtask ci` passes) or `EXESDB_GATER_REQUIRE_NETNS=1` makes it a failure.

use crate::util::{cargo, root, run, step};
use anyhow::Result;
use std::process::Command;

///
/// `--debug` uses the debug build (what `cargo xtask ci` has already compiled) instead of
/// a release build; `--require-netns` sets `EXESDB_GATER_REQUIRE_NETNS=1`.
pub fn main(args: &[String]) -> Result<()> {
    crate::erlang::ensure()?;
    crate::testbed::build()?;
    let debug = args.iter().any(|a| a == "--debug");
    let require_netns = args.iter().any(|a| a == "--require-netns");
    let args: Vec<String> = args
        .iter()
        .filter(|a| *a != "--debug" && *a != "--require-netns")
        .cloned()
        .collect();
    let args = args.as_slice();
    let profile = if debug { "debug" } else { "release" };
    step(&format!(
        "building exesdb-gater and gater-chaos ({profile})"
    ));
    let mut build = vec!["build", "-p", "exesdb-gater", "-p", "gater-chaos"];
    if !debug {
        build.push("--release");
    }
    cargo(&build)?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let out = target.join("chaos");
    let (cmd, rest): (&str, &[String]) = match args.first().map(String::as_str) {
        Some("soak") => ("soak", &args[1..]),
        _ => ("chaos", args),
    };
    step(&format!("running gater-chaos {cmd} {}", rest.join(" ")));
    let mut c = Command::new(target.join(profile).join("gater-chaos"));
    c.arg(cmd).args(rest).arg("--out").arg(&out).env(
        "EXESDB_GATER_BIN",
        target.join(profile).join("exesdb-gater"),
    );
    if require_netns {
        c.env("EXESDB_GATER_REQUIRE_NETNS", "1");
    }
    run(&mut c, &format!("gater-chaos {cmd}"))
}
