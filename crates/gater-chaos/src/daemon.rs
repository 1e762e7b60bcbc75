//! The exesdb-gater daemon as a child process: started with the testbed's cookie, EPMD
//! port and node list, its log captured to a file, killed by pid when dropped.

use anyhow::{Context, Result, bail};
use gater_testkit::testbed::Testbed;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running daemon.
pub struct Daemon {
    child: Child,
    url: String,
    log: PathBuf,
}

/// The daemon binary: `EXESDB_GATER_BIN`, else `target/{release,debug}/exesdb-gater`
/// (whichever is newer).
pub fn binary() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("EXESDB_GATER_BIN") {
        return Ok(PathBuf::from(p));
    }
    let root = gater_testkit::vectors::workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let mut found: Vec<PathBuf> = ["release", "debug"]
        .iter()
        .map(|p| target.join(p).join("exesdb-gater"))
        .filter(|p| p.exists())
        .collect();
    found.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    found.pop().context(
        "no exesdb-gater binary: run `cargo build -p exesdb-gater` (or set EXESDB_GATER_BIN)",
    )
}

/// The daemon's `net_ticktime` setting (seconds), when it has one.
pub const NET_TICKTIME_ENV: &str = "EX_ESDB_GATER_NET_TICKTIME";

/// Whether this daemon build has a `net_ticktime` setting (its `--help` names
/// [`NET_TICKTIME_ENV`]).
pub fn supports_net_ticktime() -> bool {
    let Ok(bin) = binary() else {
        return false;
    };
    ["--help", "run --help"].iter().any(|args| {
        Command::new(&bin)
            .args(args.split(' '))
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(NET_TICKTIME_ENV))
    })
}

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    gater_testkit::erl::free_tcp_port()
}

impl Daemon {
    /// Starts the daemon on `127.0.0.1:<free port>` for `tb`, with extra environment
    /// variables (`EX_ESDB_GATER_AUTH_SECRET`, ...), logging to `log`.
    pub fn start(tb: &Testbed, extra_env: &[(&str, &str)], log: &Path) -> Result<Self> {
        let nodes = tb.node_names().join(",");
        let mut env: Vec<(&str, String)> = vec![
            ("EX_ESDB_COOKIE", tb.cookie().to_owned()),
            ("ERL_EPMD_PORT", tb.epmd_port().to_string()),
            ("EX_ESDB_GATER_CONNECT_TO", nodes),
            ("EX_ESDB_GATER_GOSSIP", "false".into()),
        ];
        for (k, v) in extra_env {
            env.retain(|(ek, _)| ek != k);
            env.push((k, (*v).to_owned()));
        }
        Self::start_with_env(&env, log)
    }

    /// Starts the daemon with exactly these settings (plus a listen address and node
    /// name when they are missing).
    pub fn start_with_env(env: &[(&str, String)], log: &Path) -> Result<Self> {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(binary()?);
        cmd.arg("run")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("EX_ESDB_GATER_LISTEN", &listen)
            .env(
                "EX_ESDB_GATER_NODE_NAME",
                format!("chaos_gater_{}_{port}@127.0.0.1", std::process::id()),
            )
            .env("LOG_LEVEL", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting exesdb-gater")?;
        Ok(Self {
            child,
            url: format!("http://{listen}"),
            log: log.to_owned(),
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The daemon's OS pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the daemon logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) until `/health/ready` answers 200.
    pub async fn wait_ready(&mut self, within: Duration) -> Result<()> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + within;
        let mut backoff = Duration::from_millis(20);
        while Instant::now() < deadline {
            if let Some(st) = self.child.try_wait()? {
                bail!("exesdb-gater exited ({st}): {}", self.log_text());
            }
            let r = client
                .get(format!("{}/health/ready", self.url))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if matches!(&r, Ok(r) if r.status() == 200) {
                return Ok(());
            }
            // Polling an HTTP endpoint: the daemon has no other way to tell us.
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(250));
        }
        bail!(
            "exesdb-gater not ready within {within:?}: {}",
            self.log_text()
        )
    }

    /// Resident set size (kB) from `/proc/<pid>/status`.
    pub fn rss_kb(&self) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        s.lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    /// The `/metrics` page as (series, value) pairs.
    pub async fn metrics(&self) -> Result<Vec<(String, f64)>> {
        let text = reqwest::get(format!("{}/metrics", self.url))
            .await?
            .text()
            .await?;
        Ok(parse_metrics(&text))
    }
}

/// Prometheus text → (series with labels, value); comments skipped.
pub fn parse_metrics(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Our own child, by pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
