//! `cargo xtask testbed ...`: build, start, stop, test and load the BEAM testbed in
//! `dev-env/testbed` (an ExESDB-protocol cluster of real Erlang nodes; see
//! `docs/testbed.md`).
//!
//! `up` starts the nodes detached (own process group, output in `.testbed/<node>.log`)
//! and records every pid it started in `.testbed/state`; `down` stops exactly those
//! pids. Nothing is found or killed by name.

use crate::util::{root, step};
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

const USAGE: &str = "\
usage: cargo xtask testbed <cmd> [options]

  build      compile dev-env/testbed with erlc (skipped when up to date)
  up         start a cluster in the background and return once every node serves
               --nodes N (3)  --stores a,b (reg_gh)  --workers G (2)  --cookie C (testbed)
               --name-prefix P (testbed)  --lag-ms L (0)  --epmd-port P (4369)
               --gossip-port P (45892)  --secret S  --no-gossip
               --fresh (delete .testbed/data first; otherwise nodes replay their logs)
  down       stop exactly the processes `up` started (by pid)
  status     show the recorded nodes and whether they run
  test       run the testbed's EUnit tests (against ../shared/vectors when present)
  load       BEAM-native load generator, one JSON line:
               --concurrency C (8)  --seconds S (5)  --op append|read|mixed (mixed)
               --store S; uses the running cluster, or starts and stops one
";

/// How long `up` waits for one node to serve.
const NODE_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// `cargo xtask testbed <cmd>`.
pub fn main(args: &[String]) -> Result<()> {
    let Some((cmd, rest)) = args.split_first() else {
        print!("{USAGE}");
        return Ok(());
    };
    match cmd.as_str() {
        "build" => build(),
        "up" => {
            build()?;
            let opts = UpOptions::parse(rest)?;
            let cluster = up(&opts, &state_dir(), true)?;
            cluster.print();
            Ok(())
        }
        "down" => down(&state_dir()),
        "status" => status(&state_dir()),
        "test" => {
            build()?;
            erlang_tests()
        }
        "load" => {
            build()?;
            load(rest)
        }
        "help" | "-h" | "--help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown testbed command `{other}`\n{USAGE}"),
    }
}

fn testbed_dir() -> PathBuf {
    root().join("dev-env").join("testbed")
}

/// `dev-env/testbed/ebin`, or `XTASK_TESTBED_EBIN` (`cargo xtask otp27` compiles there
/// with another OTP release, apart from the default build).
fn ebin_dir() -> PathBuf {
    std::env::var_os("XTASK_TESTBED_EBIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| testbed_dir().join("ebin"))
}

pub(crate) fn state_dir() -> PathBuf {
    root().join(".testbed")
}

/// Compiles the testbed with erlc into `dev-env/testbed/ebin` (skipped when up to date).
pub fn build() -> Result<()> {
    let src = testbed_dir().join("src");
    let test = testbed_dir().join("test");
    let ebin = ebin_dir();
    std::fs::create_dir_all(&ebin).context("creating dev-env/testbed/ebin")?;
    let mut stale = Vec::new();
    for dir in [&src, &test] {
        for file in erl_files(dir)? {
            let stem = file
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            let beam = ebin.join(format!("{stem}.beam"));
            if modified(&beam) < modified(&file) {
                stale.push(file);
            }
        }
    }
    let app_src = src.join("ex_esdb.app.src");
    let app = ebin.join("ex_esdb.app");
    if modified(&app) < modified(&app_src) {
        std::fs::copy(&app_src, &app).context("copying ex_esdb.app")?;
    }
    if stale.is_empty() {
        return Ok(());
    }
    step(&format!(
        "compiling {} testbed module(s) with erlc",
        stale.len()
    ));
    let status = Command::new("erlc")
        .arg("-Wall")
        .arg("-o")
        .arg(&ebin)
        .args(&stale)
        .status()
        .context("could not run erlc (install Erlang/OTP: cargo xtask erlang)")?;
    if !status.success() {
        bail!("erlc failed on the testbed sources");
    }
    Ok(())
}

fn erl_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "erl"))
        .collect();
    files.sort();
    Ok(files)
}

fn modified(path: &Path) -> SystemTime {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Runs the testbed's own EUnit tests on nodes of their own (private EPMD).
pub fn erlang_tests() -> Result<()> {
    build()?;
    let vectors = root().join("..").join("shared").join("vectors");
    let require =
        std::env::var("EXESDB_GATER_REQUIRE_VECTORS").is_ok_and(|v| !v.is_empty() && v != "0");
    if !vectors.is_dir() {
        if require {
            bail!(
                "EXESDB_GATER_REQUIRE_VECTORS is set but {} does not exist",
                vectors.display()
            );
        }
        eprintln!(
            "skipped: no vectors ({} not found); running the other tests",
            vectors.display()
        );
    }
    let epmd = PrivateEpmd::start()?;
    let scratch = std::env::temp_dir().join(format!("exesdb-testbed-eunit-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    step("running the testbed's EUnit tests");
    let status = Command::new("erl")
        .env("ERL_EPMD_PORT", epmd.port.to_string())
        .env("TESTBED_EBIN", ebin_dir())
        .env(
            "TESTBED_VECTORS",
            if vectors.is_dir() {
                vectors.as_os_str()
            } else {
                "".as_ref()
            },
        )
        .env("TESTBED_SCRATCH", &scratch)
        .args(["-noshell", "-noinput", "-hidden", "-name"])
        .arg(format!("tbtest{}@127.0.0.1", std::process::id()))
        .args(["-setcookie", "testbed_eunit"])
        .args(["-kernel", "inet_dist_use_interface", "{127,0,0,1}"])
        .arg("-pa")
        .arg(ebin_dir())
        .args(["-eval", "testbed_tests:main()"])
        .stdin(Stdio::null())
        .status()
        .context("could not run erl")?;
    drop(epmd);
    let _ = std::fs::remove_dir_all(&scratch);
    if !status.success() {
        bail!("testbed EUnit tests failed");
    }
    Ok(())
}

/// An EPMD on a free port, killed by pid when dropped.
struct PrivateEpmd {
    child: std::process::Child,
    port: u16,
}

impl PrivateEpmd {
    fn start() -> Result<Self> {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        let child = Command::new(find_epmd()?)
            .args(["-port", &port.to_string(), "-address", "127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("could not start epmd")?;
        let epmd = PrivateEpmd { child, port };
        wait_listening(port)?;
        Ok(epmd)
    }
}

impl Drop for PrivateEpmd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_epmd() -> Result<PathBuf> {
    if crate::util::on_path("epmd") {
        return Ok(PathBuf::from("epmd"));
    }
    let found = std::fs::read_dir("/usr/lib/erlang").ok().and_then(|dir| {
        dir.filter_map(Result::ok)
            .map(|e| e.path().join("bin").join("epmd"))
            .find(|p| p.is_file())
    });
    found.context("epmd not found: install Erlang/OTP (cargo xtask erlang)")
}

fn listening(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// EPMD prints nothing when ready; a bounded connect retry is the readiness event.
fn wait_listening(port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut pause = Duration::from_millis(2);
    while !listening(port) {
        if Instant::now() > deadline {
            bail!("epmd did not listen on port {port}");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
    Ok(())
}

/// Options of `testbed up`.
#[derive(Debug, Clone)]
pub(crate) struct UpOptions {
    nodes: usize,
    stores: Vec<String>,
    workers: usize,
    cookie: String,
    prefix: String,
    lag_ms: u64,
    epmd_port: u16,
    gossip_port: Option<u16>,
    secret: Option<String>,
    fresh: bool,
}

impl Default for UpOptions {
    fn default() -> Self {
        Self {
            nodes: 3,
            stores: vec!["reg_gh".into()],
            workers: 2,
            cookie: "testbed".into(),
            prefix: "testbed".into(),
            lag_ms: 0,
            epmd_port: 4369,
            gossip_port: Some(45892),
            secret: None,
            fresh: false,
        }
    }
}

impl UpOptions {
    pub(crate) fn parse(args: &[String]) -> Result<Self> {
        let mut o = Self::default();
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut value = || {
                it.next()
                    .cloned()
                    .with_context(|| format!("{flag} needs a value"))
            };
            match flag.as_str() {
                "--nodes" => o.nodes = value()?.parse().context("--nodes")?,
                "--stores" => {
                    o.stores = value()?
                        .split(',')
                        .map(str::trim)
                        .map(String::from)
                        .collect()
                }
                "--workers" => o.workers = value()?.parse().context("--workers")?,
                "--cookie" => o.cookie = value()?,
                "--name-prefix" => o.prefix = value()?,
                "--lag-ms" => o.lag_ms = value()?.parse().context("--lag-ms")?,
                "--epmd-port" => o.epmd_port = value()?.parse().context("--epmd-port")?,
                "--gossip-port" => o.gossip_port = Some(value()?.parse().context("--gossip-port")?),
                "--secret" => o.secret = Some(value()?),
                "--no-gossip" => o.gossip_port = None,
                "--fresh" => o.fresh = true,
                other => bail!("unknown option `{other}`\n{USAGE}"),
            }
        }
        if o.nodes == 0 || o.stores.is_empty() {
            bail!("need at least one node and one store");
        }
        for s in o.stores.iter().chain([&o.prefix, &o.cookie]) {
            if s.is_empty()
                || !s
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                bail!("`{s}`: names, stores and cookies are [A-Za-z0-9_-]+");
            }
        }
        Ok(o)
    }
}

/// A started cluster, as recorded in the state folder.
#[derive(Debug, Default)]
pub(crate) struct Cluster {
    pub(crate) cookie: String,
    pub(crate) epmd_port: u16,
    epmd_pid: Option<u32>,
    data_dir: PathBuf,
    pub(crate) stores: Vec<String>,
    /// (node name, OS pid)
    pub(crate) nodes: Vec<(String, u32)>,
    /// The state folder (pid file, node logs).
    dir: PathBuf,
}

impl Cluster {
    fn save(&self, dir: &Path) -> Result<()> {
        let mut s = String::new();
        let _ = writeln!(s, "cookie {}", self.cookie);
        let _ = writeln!(s, "epmd_port {}", self.epmd_port);
        if let Some(p) = self.epmd_pid {
            let _ = writeln!(s, "epmd_pid {p}");
        }
        let _ = writeln!(s, "data_dir {}", self.data_dir.display());
        let _ = writeln!(s, "stores {}", self.stores.join(","));
        for (n, p) in &self.nodes {
            let _ = writeln!(s, "node {n} {p}");
        }
        std::fs::write(dir.join("state"), s).context("writing the testbed state")
    }

    pub(crate) fn load(dir: &Path) -> Result<Option<Self>> {
        let Ok(text) = std::fs::read_to_string(dir.join("state")) else {
            return Ok(None);
        };
        let mut c = Cluster {
            dir: dir.to_path_buf(),
            ..Cluster::default()
        };
        for line in text.lines() {
            let mut parts = line.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("cookie"), Some(v), _) => c.cookie = v.into(),
                (Some("epmd_port"), Some(v), _) => c.epmd_port = v.parse()?,
                (Some("epmd_pid"), Some(v), _) => c.epmd_pid = Some(v.parse()?),
                (Some("data_dir"), Some(v), rest) => {
                    c.data_dir = PathBuf::from(match rest {
                        Some(r) => format!("{v} {r}"),
                        None => v.into(),
                    })
                }
                (Some("stores"), Some(v), _) => c.stores = v.split(',').map(String::from).collect(),
                (Some("node"), Some(n), Some(p)) => c.nodes.push((n.into(), p.parse()?)),
                _ => {}
            }
        }
        Ok(Some(c))
    }

    pub(crate) fn print(&self) {
        println!("testbed cluster is up");
        println!(
            "  nodes:    {}",
            self.nodes
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        );
        println!("  cookie:   {}", self.cookie);
        println!(
            "  epmd:     127.0.0.1:{}{}",
            self.epmd_port,
            if self.epmd_pid.is_some() {
                " (started by us)"
            } else {
                " (already running, not ours)"
            }
        );
        println!("  stores:   {}", self.stores.join(","));
        println!("  data dir: {}", self.data_dir.display());
        println!("  logs:     {}/<node>.log", self.dir.display());
        println!(
            "  connect:  ERL_EPMD_PORT={} erl -hidden -name me@127.0.0.1 -setcookie {}",
            self.epmd_port, self.cookie
        );
    }
}

/// Starts epmd (when none listens on the port) and the nodes, one after another.
/// `detach`: own process group, so the nodes outlive this command and ignore its Ctrl-C.
pub(crate) fn up(o: &UpOptions, dir: &Path, detach: bool) -> Result<Cluster> {
    if let Some(c) = Cluster::load(dir)? {
        if c.nodes.iter().any(|(_, p)| alive(*p)) {
            bail!(
                "a testbed is already running (see `cargo xtask testbed status`); stop it with `cargo xtask testbed down`"
            );
        }
        stop_recorded(&c);
    }
    std::fs::create_dir_all(dir)?;
    let data_dir = dir.join("data");
    if o.fresh {
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    let mut cluster = Cluster {
        cookie: o.cookie.clone(),
        epmd_port: o.epmd_port,
        data_dir: data_dir.clone(),
        stores: o.stores.clone(),
        dir: dir.to_path_buf(),
        ..Cluster::default()
    };
    if !listening(o.epmd_port) {
        let mut cmd = Command::new(find_epmd()?);
        cmd.args(["-port", &o.epmd_port.to_string(), "-address", "127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if detach {
            cmd.process_group(0);
        }
        let child = cmd.spawn().context("could not start epmd")?;
        cluster.epmd_pid = Some(child.id());
        cluster.save(dir)?;
        wait_listening(o.epmd_port)?;
    }
    let names: Vec<String> = (0..o.nodes)
        .map(|i| format!("{}{i}@127.0.0.1", o.prefix))
        .collect();
    for (i, name) in names.iter().enumerate() {
        step(&format!("starting {name}"));
        let node_dir = data_dir.join(name);
        std::fs::create_dir_all(&node_dir)?;
        let log = dir.join(format!("{name}.log"));
        let eval = format!(
            "ok = testbed:boot({}), io:format(\"testbed-ready~n\")",
            boot_config(o, &node_dir, &names[..=i])
        );
        let out = std::fs::File::create(&log)?;
        let mut cmd = Command::new("erl");
        cmd.env("ERL_EPMD_PORT", o.epmd_port.to_string())
            .args([
                "-noshell",
                "-noinput",
                "-name",
                name,
                "-setcookie",
                &o.cookie,
            ])
            .args(["-kernel", "inet_dist_use_interface", "{127,0,0,1}"])
            .arg("-pa")
            .arg(ebin_dir())
            .args(["-eval", &eval])
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        if detach {
            cmd.process_group(0);
        } else {
            // Ctrl-C in the foreground ends the node at once (no break menu).
            cmd.arg("+B");
        }
        let mut child = cmd.spawn().context("could not start erl")?;
        cluster.nodes.push((name.clone(), child.id()));
        cluster.save(dir)?;
        wait_ready(&mut child, &log, name)?;
    }
    Ok(cluster)
}

/// The Erlang map given to testbed:boot/1.
fn boot_config(o: &UpOptions, data_dir: &Path, seeds: &[String]) -> String {
    let stores = o.stores.join(",");
    let seeds = seeds
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(",");
    let gossip = match o.gossip_port {
        None => "undefined".to_string(),
        Some(port) => format!(
            "#{{port => {port}, addr => {{239,255,0,1}}, secret => {}}}",
            o.secret
                .as_ref()
                .map_or("undefined".into(), |s| format!("<<\"{s}\">>"))
        ),
    };
    format!(
        "#{{stores => [{stores}], workers_per_store => {}, lag_ms => {}, data_dir => \"{}\", seeds => [{seeds}], gossip => {gossip}}}",
        o.workers,
        o.lag_ms,
        data_dir.display()
    )
}

/// Waits (bounded) until the node's log says it serves, or the node exits.
fn wait_ready(child: &mut std::process::Child, log: &Path, name: &str) -> Result<()> {
    let deadline = Instant::now() + NODE_READY_TIMEOUT;
    let mut pause = Duration::from_millis(10);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.lines().any(|l| l.trim() == "testbed-ready") {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("{name} exited ({status}) before it served; its log:\n{text}");
        }
        if Instant::now() > deadline {
            bail!(
                "{name} did not serve within {NODE_READY_TIMEOUT:?}; see {}",
                log.display()
            );
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.split(") ")
            .nth(1)
            .is_some_and(|rest| rest.starts_with('Z'))
    })
}

/// Whether the process with this pid is still the one we started (its command line
/// names it), so that a reused pid is never signalled.
fn is_ours(pid: u32, needle: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Stops a recorded pid: SIGTERM, then SIGKILL after a bounded wait.
fn stop_pid(pid: u32, needle: &str) -> bool {
    if !alive(pid) || !is_ours(pid, needle) {
        return false;
    }
    signal(pid, "-TERM");
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if alive(pid) {
        signal(pid, "-KILL");
    }
    true
}

pub(crate) fn stop_recorded(c: &Cluster) {
    for (name, pid) in c.nodes.iter().rev() {
        if stop_pid(*pid, name) {
            step(&format!("stopped {name} (pid {pid})"));
        }
    }
    if let Some(pid) = c.epmd_pid
        && stop_pid(pid, "epmd")
    {
        step(&format!("stopped epmd (pid {pid})"));
    }
}

pub(crate) fn down(dir: &Path) -> Result<()> {
    match Cluster::load(dir)? {
        None => println!("no testbed recorded in {}", dir.display()),
        Some(c) => {
            stop_recorded(&c);
            std::fs::remove_file(dir.join("state"))?;
            println!("testbed stopped (data kept in {})", c.data_dir.display());
        }
    }
    Ok(())
}

fn status(dir: &Path) -> Result<()> {
    let Some(c) = Cluster::load(dir)? else {
        println!("no testbed recorded in {}", dir.display());
        return Ok(());
    };
    println!(
        "cookie {}  epmd 127.0.0.1:{}  data {}",
        c.cookie,
        c.epmd_port,
        c.data_dir.display()
    );
    for (name, pid) in &c.nodes {
        let state = if alive(*pid) && is_ours(*pid, name) {
            "running"
        } else {
            "stopped"
        };
        println!("  {name:<28} pid {pid:<8} {state}");
    }
    if let Some(pid) = c.epmd_pid {
        println!(
            "  epmd (ours)                  pid {pid:<8} {}",
            if alive(pid) { "running" } else { "stopped" }
        );
    }
    Ok(())
}

/// Runs an Erlang expression on a hidden client node of the cluster; returns its stdout.
fn client_eval(c: &Cluster, name: &str, eval: &str) -> Result<String> {
    let out = Command::new("erl")
        .env("ERL_EPMD_PORT", c.epmd_port.to_string())
        .args(["-noshell", "-noinput", "-hidden", "-name"])
        .arg(format!("{name}{}@127.0.0.1", std::process::id()))
        .args(["-setcookie", &c.cookie])
        .args(["-kernel", "inet_dist_use_interface", "{127,0,0,1}"])
        .arg("-pa")
        .arg(ebin_dir())
        .args(["-eval", &format!("{eval}, erlang:halt(0)")])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("could not run erl")?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("client node failed ({}):\n{stdout}", out.status);
    }
    Ok(stdout)
}

fn load(args: &[String]) -> Result<()> {
    let mut opts: BTreeMap<&str, String> = BTreeMap::new();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let key = match flag.as_str() {
            "--concurrency" => "concurrency",
            "--seconds" => "seconds",
            "--op" => "op",
            "--store" => "store",
            other => bail!("unknown option `{other}`\n{USAGE}"),
        };
        opts.insert(
            key,
            it.next()
                .cloned()
                .with_context(|| format!("{flag} needs a value"))?,
        );
    }
    let concurrency: u32 = opts
        .get("concurrency")
        .map_or(Ok(8), |v| v.parse())
        .context("--concurrency")?;
    let seconds: u32 = opts
        .get("seconds")
        .map_or(Ok(5), |v| v.parse())
        .context("--seconds")?;
    let op = opts.get("op").cloned().unwrap_or_else(|| "mixed".into());
    if !["append", "read", "mixed"].contains(&op.as_str()) {
        bail!("--op is append, read or mixed");
    }
    let dir = state_dir();
    let running = Cluster::load(&dir)?.filter(|c| c.nodes.iter().any(|(_, p)| alive(*p)));
    let (cluster, temporary) = match running {
        Some(c) => (c, None),
        None => {
            step("no testbed running: starting a temporary one");
            let tmp = dir.join("load");
            let o = UpOptions {
                gossip_port: None,
                prefix: "tbload".into(),
                epmd_port: free_port()?,
                ..UpOptions::default()
            };
            let _ = std::fs::remove_dir_all(&tmp);
            match up(&o, &tmp, true) {
                Ok(c) => (c, Some(tmp)),
                Err(e) => {
                    let _ = down(&tmp);
                    return Err(e);
                }
            }
        }
    };
    let store = opts.get("store").cloned().unwrap_or_else(|| {
        cluster
            .stores
            .first()
            .cloned()
            .unwrap_or_else(|| "reg_gh".into())
    });
    let nodes = cluster
        .nodes
        .iter()
        .map(|(n, _)| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(",");
    let eval = format!(
        "testbed_load:main(#{{nodes => [{nodes}], store => '{store}', concurrency => {concurrency}, seconds => {seconds}, op => {op}}})"
    );
    let result = client_eval(&cluster, "tbload_client", &eval);
    if let Some(tmp) = temporary {
        let _ = down(&tmp);
        let _ = std::fs::remove_dir_all(&tmp);
    }
    let out = result?;
    match out.lines().rev().find(|l| l.starts_with('{')) {
        Some(line) => println!("{line}"),
        None => bail!("the load generator printed no result:\n{out}"),
    }
    Ok(())
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// `cargo xtask up`: start the testbed in the foreground, run a smoke round trip, and
/// keep it up until Ctrl-C (or `--for SECS`), then stop it.
pub fn up_demo(args: &[String]) -> Result<()> {
    let mut rest = Vec::new();
    let mut hold: Option<u64> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--for" {
            hold = Some(
                it.next()
                    .context("--for needs seconds")?
                    .parse()
                    .context("--for")?,
            );
        } else {
            rest.push(a.clone());
        }
    }
    let opts = UpOptions::parse(&rest)?;
    let dir = state_dir().join("demo");
    if let Some(old) = Cluster::load(&dir)? {
        stop_recorded(&old);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let cluster = match up(&opts, &dir, false) {
        Ok(c) => c,
        Err(e) => {
            let _ = down(&dir);
            return Err(e);
        }
    };
    cluster.print();
    let first = &cluster.nodes[0].0;
    let smoke = cluster
        .stores
        .iter()
        .map(|s| format!("ok = testbed:smoke('{first}', '{s}')"))
        .collect::<Vec<_>>()
        .join(", ");
    let res = client_eval(
        &cluster,
        "tbsmoke",
        &format!("{smoke}, io:format(\"smoke ok~n\")"),
    );
    match &res {
        Ok(_) => println!("smoke round trip (append + read through a random worker): ok"),
        Err(e) => eprintln!("smoke round trip failed: {e:#}"),
    }
    if res.is_ok() {
        match hold {
            Some(secs) => {
                println!("keeping the cluster up for {secs} s");
                std::thread::sleep(Duration::from_secs(secs));
            }
            None => {
                println!("press Ctrl-C to stop the cluster");
                // Ctrl-C reaches the nodes too (same process group, started with +B).
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
        }
    }
    down(&dir)?;
    res.map(|_| ())
}
