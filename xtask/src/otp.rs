//! `cargo xtask otp27`: the Erlang-facing tests again, with every Erlang node on OTP 27.
//!
//! Debian 12 ships OTP 25 only. Debian 13 (trixie) ships OTP 27, so this task builds a
//! minimal trixie root with `debootstrap` (once, under `target/otp-roots/`), puts
//! wrappers named `erl`, `erlc` and `escript` that run trixie's programs in that root
//! first on the PATH, and re-runs: the testbed's EUnit tests (compiled by OTP 27's erlc)
//! and the Rust tests that start Erlang nodes (pool, registry, api, testkit).
//!
//! The root sees the host's `/tmp` and the folder holding the checkout (so `../shared`
//! too) through bind mounts made in a private mount namespace (`unshare -m`): they vanish
//! with the task's process, whatever way it ends, and the host never sees them. EPMD
//! stays the host's (its protocol is the same on every release). Needs root.

use crate::erlang::is_root;
use crate::util::{on_path, root, run, step};
use anyhow::{Context, Result, bail};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Debian release whose Erlang we test against, and the OTP release it ships.
const SUITE: &str = "trixie";
const OTP: &str = "27";
const MIRROR: &str = "http://deb.debian.org/debian";
/// What the root needs beyond debootstrap's minimal base.
const PACKAGES: &str = "erlang-nox,erlang-dev,erlang-eunit";
/// The crates whose tests start Erlang nodes.
const CRATES: &[&str] = &["gater-pool", "gater-registry", "gater-api", "gater-testkit"];
/// Set inside the private mount namespace, so the task knows the mounts are made.
const INSIDE: &str = "XTASK_OTP_INSIDE";

/// Entry point: `cargo xtask otp27`.
pub fn main(_args: &[String]) -> Result<()> {
    if std::env::var_os(INSIDE).is_some() {
        return inside();
    }
    if !is_root() {
        bail!("`cargo xtask otp27` needs root (debootstrap, chroot and bind mounts)");
    }
    let chroot = chroot_dir();
    if !chroot.join("usr/bin/erl").is_file() {
        bootstrap(&chroot)?;
    }
    write_wrappers(&chroot)?;
    step("entering a private mount namespace (unshare -m) for the OTP 27 run");
    let exe = std::env::current_exe().context("locating the xtask binary")?;
    run(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--"])
            .arg(exe)
            .arg("otp27")
            .env(INSIDE, "1"),
        "the OTP 27 run",
    )
}

/// In the private mount namespace: mount, then run the tests with the wrappers first.
fn inside() -> Result<()> {
    let chroot = chroot_dir();
    // The checkout's parent holds `shared/` beside it in CI and here; `shared` may be a
    // link to elsewhere, so its real folder is mounted too.
    let work = root().parent().map(Path::to_path_buf).unwrap_or_else(root);
    let mut dirs = vec![PathBuf::from("/tmp"), work.clone()];
    if let Ok(shared) = work.join("shared").canonicalize() {
        if !shared.starts_with(&work) {
            dirs.push(shared);
        }
    }
    for dir in dirs {
        let at = chroot.join(dir.strip_prefix("/").unwrap_or(&dir));
        std::fs::create_dir_all(&at).with_context(|| format!("creating {}", at.display()))?;
        run(
            Command::new("mount").arg("--bind").arg(&dir).arg(&at),
            &format!("mount --bind {}", dir.display()),
        )?;
    }
    run(
        Command::new("mount")
            .args(["-t", "proc", "proc"])
            .arg(chroot.join("proc")),
        "mount proc",
    )?;
    let path = format!(
        "{}:{}",
        wrapper_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let release = Command::new("erl")
        .env("PATH", &path)
        .args([
            "-noshell",
            "-eval",
            "io:format(\"~s~n\", [erlang:system_info(otp_release)]), halt().",
        ])
        .output()
        .context("running the wrapped erl")?;
    let release = String::from_utf8_lossy(&release.stdout).trim().to_string();
    if release != OTP {
        bail!("the wrapped erl reports OTP {release:?}, expected {OTP}");
    }
    step(&format!(
        "erl on the PATH is OTP {release} (Debian {SUITE}, in {})",
        chroot.display()
    ));
    step("testbed EUnit tests, compiled and run by OTP 27");
    let ebin = root().join("target").join("otp-roots").join("ebin-27");
    let _ = std::fs::remove_dir_all(&ebin);
    let exe = std::env::current_exe().context("locating the xtask binary")?;
    run(
        Command::new(exe)
            .args(["testbed", "test"])
            .env("PATH", &path)
            .env("XTASK_TESTBED_EBIN", &ebin)
            .env_remove(INSIDE),
        "testbed EUnit tests on OTP 27",
    )?;
    step(&format!(
        "Rust tests that start Erlang nodes, against OTP 27: {}",
        CRATES.join(", ")
    ));
    let mut args = vec!["test", "--no-fail-fast"];
    for c in CRATES {
        args.extend(["-p", c]);
    }
    let cargo_bin = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(
        Command::new(cargo_bin)
            .args(&args)
            .current_dir(root())
            .env("PATH", &path)
            .env_remove(INSIDE),
        "cargo test against OTP 27",
    )?;
    step("OTP 27: all passed");
    Ok(())
}

fn chroot_dir() -> PathBuf {
    root().join("target").join("otp-roots").join(SUITE)
}

fn wrapper_dir() -> PathBuf {
    root().join("target").join("otp-roots").join("bin-27")
}

/// Builds the root with debootstrap (installed with apt-get when missing).
fn bootstrap(chroot: &Path) -> Result<()> {
    if !on_path("debootstrap") {
        step("installing debootstrap with apt-get");
        run(
            Command::new("apt-get")
                .args([
                    "install",
                    "-y",
                    "-qq",
                    "--no-install-recommends",
                    "debootstrap",
                ])
                .env("DEBIAN_FRONTEND", "noninteractive"),
            "apt-get install debootstrap",
        )?;
    }
    // A half-made root from an interrupted run: start again. No mounts can be in it:
    // they only ever exist inside the private namespace of a run.
    if chroot.exists() {
        std::fs::remove_dir_all(chroot)
            .with_context(|| format!("removing the half-made {}", chroot.display()))?;
    }
    std::fs::create_dir_all(chroot)?;
    step(&format!(
        "debootstrap {SUITE} with {PACKAGES} into {} (once; about 300 MB)",
        chroot.display()
    ));
    run(
        Command::new("debootstrap")
            .args(["--variant=minbase", &format!("--include={PACKAGES}"), SUITE])
            .arg(chroot)
            .arg(MIRROR),
        "debootstrap",
    )
}

/// `erl`, `erlc` and `escript` that run the root's programs in the caller's folder.
fn write_wrappers(chroot: &Path) -> Result<()> {
    let dir = wrapper_dir();
    std::fs::create_dir_all(&dir)?;
    for program in ["erl", "erlc", "escript"] {
        let script = format!(
            "#!/bin/sh\n# Runs OTP {OTP}'s {program} from Debian {SUITE} (written by cargo xtask otp27).\n\
             exec chroot '{}' /bin/sh -c 'cd \"$0\" && exec /usr/bin/{program} \"$@\"' \"$PWD\" \"$@\"\n",
            chroot.display()
        );
        let path = dir.join(program);
        std::fs::write(&path, script)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}
