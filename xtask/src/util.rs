//! Small helpers shared by the tasks.

use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::process::Command;

/// Prints what the task is doing now.
pub fn step(what: &str) {
    eprintln!("xtask: {what}");
}

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Runs cargo with the given arguments in the workspace root; fails with one line.
pub fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(args).current_dir(root());
    run(&mut cmd, &format!("cargo {}", args.join(" ")))
}

/// Runs a command to completion; a non-zero exit becomes an error naming `what`.
pub fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{what}`"))?;
    if !status.success() {
        bail!("`{what}` failed ({status})");
    }
    Ok(())
}

/// Whether a program is on the PATH.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}
