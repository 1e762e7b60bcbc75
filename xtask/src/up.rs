//! `cargo xtask up`: the testbed cluster and the exesdb-gater daemon in the foreground.
//!
//! The nodes and the daemon share this command's process group, so Ctrl-C reaches all of
//! them: the nodes stop at once (`+B`), the daemon shuts down gracefully. With `--for S`
//! the demo stops itself after S seconds (SIGTERM to the daemon's pid, then `down`).

use crate::testbed::{self, Cluster, UpOptions};
use crate::util::{cargo, root, step};
use anyhow::{Context, Result, bail};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The daemon's address in the demo.
const LISTEN: &str = "127.0.0.1:4000";

/// `cargo xtask up [--for SECS] [--listen ADDR] [testbed up options]`;
/// `--testbed-only` runs the cluster with a smoke round trip and no daemon.
pub fn main(args: &[String]) -> Result<()> {
    if args.iter().any(|a| a == "--testbed-only") {
        let rest: Vec<String> = args
            .iter()
            .filter(|a| *a != "--testbed-only")
            .cloned()
            .collect();
        return testbed::up_demo(&rest);
    }
    let mut rest = Vec::new();
    let mut hold: Option<u64> = None;
    let mut listen = LISTEN.to_owned();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--for" => {
                hold = Some(
                    it.next()
                        .context("--for needs seconds")?
                        .parse()
                        .context("--for")?,
                )
            }
            "--listen" => listen = it.next().context("--listen needs host:port")?.clone(),
            _ => rest.push(a.clone()),
        }
    }
    let mut opts = UpOptions::parse(&rest)?;
    if !rest
        .iter()
        .any(|a| a == "--gossip-port" || a == "--no-gossip")
    {
        // The daemon is pointed at the nodes directly; gossip is not needed for the demo.
        opts = UpOptions::parse(&[rest.clone(), vec!["--no-gossip".into()]].concat())?;
    }

    step("building exesdb-gater");
    cargo(&["build", "-p", "exesdb-gater"])?;
    let bin = root().join("target").join("debug").join("exesdb-gater");

    let dir = testbed::state_dir().join("up");
    if let Some(old) = Cluster::load(&dir)? {
        testbed::stop_recorded(&old);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let cluster = match testbed::up(&opts, &dir, false) {
        Ok(c) => c,
        Err(e) => {
            let _ = testbed::down(&dir);
            return Err(e);
        }
    };
    cluster.print();
    let result = run_daemon(&bin, &cluster, &listen, hold);
    testbed::down(&dir)?;
    result
}

fn run_daemon(
    bin: &std::path::Path,
    cluster: &Cluster,
    listen: &str,
    hold: Option<u64>,
) -> Result<()> {
    // A fresh secret per run: the token printed below works until the demo stops.
    let secret = format!("dev-{:x}-{:x}", std::process::id(), now_nanos());
    let nodes = cluster
        .nodes
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let env = |cmd: &mut Command| {
        cmd.env("EX_ESDB_COOKIE", &cluster.cookie)
            .env("ERL_EPMD_PORT", cluster.epmd_port.to_string())
            .env("EX_ESDB_GATER_CONNECT_TO", &nodes)
            .env("EX_ESDB_GATER_GOSSIP", "false")
            .env("EX_ESDB_GATER_AUTH_SECRET", &secret)
            .env("EX_ESDB_GATER_LISTEN", listen)
            .env(
                "EX_ESDB_GATER_NODE_NAME",
                format!("exesdb_gater_up{}@127.0.0.1", std::process::id()),
            )
            .env_remove("EX_ESDB_GATER_CONFIG");
    };
    let mut issue = Command::new(bin);
    env(&mut issue);
    let out = issue
        .args([
            "token",
            "issue",
            "--store",
            "*",
            "--ops",
            "read,append,subscribe,snapshot,admin",
            "--ttl",
            "24h",
        ])
        .output()
        .context("running exesdb-gater token issue")?;
    if !out.status.success() {
        bail!(
            "token issue failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();

    let mut daemon = Command::new(bin);
    env(&mut daemon);
    let mut child = daemon
        .arg("run")
        .stdin(Stdio::null())
        .spawn()
        .context("starting exesdb-gater")?;
    let url = format!("http://{listen}");
    let store = cluster_store(cluster);
    println!();
    println!("exesdb-gater is starting at {url}");
    println!("  dev token (every store, every operation, 24 h):");
    println!("    export EX_ESDB_GATER_TOKEN={token}");
    println!("  try:");
    println!("    curl -s {url}/health/ready");
    println!(
        "    curl -s -H \"Authorization: Bearer $EX_ESDB_GATER_TOKEN\" {url}/v1/cluster/nodes"
    );
    println!(
        "    curl -s -H \"Authorization: Bearer $EX_ESDB_GATER_TOKEN\" -H 'content-type: application/json' \\\n      -d '{{\"events\":[{{\"event_type\":\"Hello\",\"data\":{{\"n\":1}}}}]}}' {url}/v1/stores/{store}/streams/demo/events"
    );
    println!("    cargo run -q -p exesdb-gater -- read {store} demo");
    match hold {
        None => println!("press Ctrl-C to stop the daemon and the cluster"),
        Some(s) => println!("stopping after {s} s"),
    }
    let status = match hold {
        None => child.wait()?,
        Some(secs) => {
            let deadline = Instant::now() + Duration::from_secs(secs);
            loop {
                if let Some(st) = child.try_wait()? {
                    break st;
                }
                if Instant::now() >= deadline {
                    let _ = Command::new("kill")
                        .args(["-TERM", &child.id().to_string()])
                        .status();
                    break child.wait()?;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    };
    if !status.success() && hold.is_none() {
        bail!("exesdb-gater exited with {status}");
    }
    Ok(())
}

fn cluster_store(c: &Cluster) -> String {
    c.stores.first().cloned().unwrap_or_else(|| "reg_gh".into())
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}
