//! Erlang/OTP is a test and demo dependency: find `erl` and `erlc`, or install Debian's
//! `erlang-nox` when we may.

use crate::util::{on_path, run, step};
use anyhow::{Result, bail};
use std::process::Command;

const PACKAGES: &[&str] = &["erlang-nox", "erlang-dev"];

/// Makes sure `erl` and `erlc` are on the PATH.
pub fn ensure() -> Result<()> {
    if on_path("erl") && on_path("erlc") {
        return Ok(());
    }
    let install = format!(
        "apt-get update && apt-get install -y {}",
        PACKAGES.join(" ")
    );
    if !(is_root() && is_debian_like() && on_path("apt-get")) {
        bail!("Erlang/OTP (erl, erlc) is missing; install it with: sudo sh -c '{install}'");
    }
    step(&format!(
        "Erlang/OTP is missing; installing {} with apt-get",
        PACKAGES.join(" ")
    ));
    run(
        Command::new("apt-get").arg("update").arg("-qq"),
        "apt-get update",
    )?;
    run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(PACKAGES)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        "apt-get install erlang-nox",
    )?;
    if !(on_path("erl") && on_path("erlc")) {
        bail!(
            "installed {} but erl/erlc are still not on the PATH",
            PACKAGES.join(" ")
        );
    }
    Ok(())
}

/// Whether this process runs as root.
pub(crate) fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn is_debian_like() -> bool {
    std::fs::read_to_string("/etc/os-release").is_ok_and(|s| {
        s.lines().any(|l| {
            (l.starts_with("ID=") || l.starts_with("ID_LIKE="))
                && (l.contains("debian") || l.contains("ubuntu"))
        })
    })
}
