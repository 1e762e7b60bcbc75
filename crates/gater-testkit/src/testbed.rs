//! A private BEAM testbed cluster for an integration test: real Erlang nodes that speak
//! ExESDB's gateway protocol (`dev-env/testbed`, see `docs/testbed.md`).
//!
//! ```text
//!   test ── Testbed::start ──> private EPMD (own port)
//!                     ├──────> node 0..N (erl, -name <unique>n<i>@127.0.0.1 or its own address, own data dir)
//!                     └──────> control node (hidden; runs expressions for eval/fault hooks)
//! ```
//!
//! Every process is a child of the test and is killed by its own pid when the
//! [`Testbed`] is dropped, also when the test panics. Names, ports and data directories
//! are unique per cluster, so tests can run in parallel.
//!
//! ```no_run
//! use gater_testkit::testbed::{Testbed, TestbedConfig};
//! let tb = Testbed::start(TestbedConfig::default()).expect("testbed starts");
//! let nodes = tb.node_names();           // connect with tb.cookie(), tb.epmd_port()
//! assert_eq!(tb.eval(0, "1 + 1").unwrap(), "2");
//! # drop(nodes);
//! ```

use crate::erl::{
    Epmd, ErlError, ErlNode, NodeSpec, check_loopback_addr, erl_ip, find_program, unique_name,
};
use crate::vectors::workspace_root;
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// How long one control request (an `eval`) may take.
pub const EVAL_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a testbed could not be started or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestbedError {
    /// An Erlang process (EPMD, a node) could not be started.
    #[error(transparent)]
    Erl(#[from] ErlError),
    /// erlc failed on `dev-env/testbed/src` (a syntax error, or Erlang/OTP missing).
    #[error("compiling the testbed failed: {0}")]
    Compile(String),
    /// A file or process operation failed.
    #[error("testbed I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The configuration is unusable (for example a gossip address outside loopback).
    #[error("bad testbed config: {0}")]
    Config(String),
    /// An expression failed on a node, or the node is down.
    #[error("eval on {target} failed: {message}")]
    Eval {
        /// The node (or `local` for the control node).
        target: String,
        /// The Erlang error, printed.
        message: String,
    },
    /// The control node stopped answering.
    #[error("the testbed control node is gone")]
    ControlGone,
}

/// Gossip heartbeats that every node sends (libcluster format, loopback only).
#[derive(Debug, Clone)]
pub struct GossipConfig {
    /// UDP port.
    pub port: u16,
    /// A multicast group (sent via 127.0.0.1 with TTL 1) or an address in 127.0.0.0/8.
    pub addr: Ipv4Addr,
    /// Seal the heartbeats with this secret (AES-256-CBC), or send them plain.
    pub secret: Option<String>,
    /// Random interval between heartbeats, in ms (libcluster: 1..5000).
    pub interval_ms: (u64, u64),
}

impl GossipConfig {
    /// Plain heartbeats to 239.255.0.1 on `port`, every 1..5000 ms.
    pub fn on_port(port: u16) -> Self {
        Self {
            port,
            addr: Ipv4Addr::new(239, 255, 0, 1),
            secret: None,
            interval_ms: (1, 5000),
        }
    }
}

/// What cluster to start.
#[derive(Debug, Clone)]
pub struct TestbedConfig {
    /// Number of nodes (started one after another).
    pub nodes: usize,
    /// Store ids (atoms).
    pub stores: Vec<String>,
    /// Gateway workers per store and node.
    pub workers_per_store: usize,
    /// Distribution cookie.
    pub cookie: String,
    /// Node names are `<prefix>_<pid>_<n>n<i>@<address>`.
    pub name_prefix: String,
    /// Each node's own address (host part of its name, the only address its distribution
    /// listens on and connects from), by node index; empty (the default): every node on
    /// 127.0.0.1. Each must be in 127.0.0.0/8 or configured on `lo` (for example inside a
    /// network namespace, where a fault can cut one address off). EPMD also listens on
    /// them; the control node stays on 127.0.0.1.
    pub node_addrs: Vec<Ipv4Addr>,
    /// `-kernel net_ticktime` of the nodes and the control node, in seconds; `None`: OTP's
    /// default (60).
    pub net_ticktime: Option<u32>,
    /// How long followers take to make a replicated write readable (0: at once).
    pub lag_ms: u64,
    /// Gossip heartbeats, or none.
    pub gossip: Option<GossipConfig>,
}

impl Default for TestbedConfig {
    fn default() -> Self {
        Self {
            nodes: 3,
            stores: vec!["reg_gh".into()],
            workers_per_store: 2,
            cookie: "testbed_cookie".into(),
            name_prefix: "tb".into(),
            node_addrs: Vec::new(),
            net_ticktime: None,
            lag_ms: 0,
            gossip: None,
        }
    }
}

/// One event as stored in a node's log (see [`Testbed::stored_events`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// The stream id.
    pub stream: String,
    /// The 0-based event number.
    pub number: i64,
    /// The event id given at append.
    pub event_id: String,
}

/// A running private cluster; dropping it stops every process it started.
#[derive(Debug)]
pub struct Testbed {
    // Drop order: control node, nodes, then EPMD, then the data folder.
    ctl: Mutex<Control>,
    nodes: Mutex<Vec<Option<ErlNode>>>,
    epmd: Epmd,
    data: DataDir,
    names: Vec<String>,
    config: TestbedConfig,
    ebin: PathBuf,
    /// The control node; the nodes halt when it goes down (the test process died).
    ctl_name: String,
}

impl Testbed {
    /// Compiles the testbed if needed, starts a private EPMD, the nodes one after another
    /// (each returns once its stores serve), and a hidden control node.
    pub fn start(config: TestbedConfig) -> Result<Self, TestbedError> {
        validate(&config)?;
        let ebin = ensure_compiled()?;
        let epmd = Epmd::start_on(&config.node_addrs)?;
        let base = unique_name(&config.name_prefix);
        let data = DataDir::create(&unique_name("exesdb-testbed"))?;
        let names: Vec<String> = (0..config.nodes)
            .map(|i| format!("{base}n{i}@{}", node_addr(&config, i)))
            .collect();
        let ctl_name = format!("{base}ctl");
        let ctl = Control::start(&epmd, &ctl_name, &config, &ebin)?;
        let tb = Testbed {
            ctl: Mutex::new(ctl),
            nodes: Mutex::new(Vec::new()),
            epmd,
            data,
            names,
            config,
            ebin,
            ctl_name: format!("{ctl_name}@127.0.0.1"),
        };
        for i in 0..tb.names.len() {
            let node = tb.spawn_node(i, &tb.names[..=i])?;
            tb.lock_nodes().push(Some(node));
        }
        Ok(tb)
    }

    fn spawn_node(&self, i: usize, seeds: &[String]) -> Result<ErlNode, TestbedError> {
        let name = &self.names[i];
        let dir = self.node_data_dir(i);
        std::fs::create_dir_all(&dir)?;
        let c = &self.config;
        let stores = c.stores.join(",");
        let seeds = seeds
            .iter()
            .map(|s| format!("'{s}'"))
            .collect::<Vec<_>>()
            .join(",");
        let gossip = match &c.gossip {
            None => "undefined".to_string(),
            Some(g) => {
                let [a, b, cc, d] = g.addr.octets();
                format!(
                    "#{{port => {}, addr => {{{a},{b},{cc},{d}}}, secret => {}, interval => {{{},{}}}}}",
                    g.port,
                    g.secret
                        .as_ref()
                        .map_or("undefined".into(), |s| format!("<<\"{s}\">>")),
                    g.interval_ms.0,
                    g.interval_ms.1
                )
            }
        };
        let boot = format!(
            "ok = testbed:boot(#{{stores => [{stores}], workers_per_store => {}, lag_ms => {}, \
             data_dir => \"{}\", seeds => [{seeds}], gossip => {gossip}, owner => '{}'}})",
            c.workers_per_store,
            c.lag_ms,
            dir.display(),
            self.ctl_name
        );
        let short = name.split('@').next().unwrap_or(name);
        let spec = NodeSpec::new(short, &c.cookie)
            .host(node_addr(c, i))
            .code_path(&self.ebin)
            .args(ticktime_args(c))
            .eval(boot);
        Ok(ErlNode::start(&self.epmd, spec)?)
    }

    /// Full node names (`...@<address>`), index = node number.
    pub fn node_names(&self) -> Vec<String> {
        self.names.clone()
    }

    /// The full name of node `i`.
    pub fn node_name(&self, i: usize) -> &str {
        &self.names[i]
    }

    /// Node `i`'s address (127.0.0.1 unless [`TestbedConfig::node_addrs`] says otherwise).
    pub fn node_addr(&self, i: usize) -> Ipv4Addr {
        node_addr(&self.config, i)
    }

    /// The cookie of every node.
    pub fn cookie(&self) -> &str {
        &self.config.cookie
    }

    /// The port of the private EPMD (give it to clients as `ERL_EPMD_PORT`).
    pub fn epmd_port(&self) -> u16 {
        self.epmd.port()
    }

    /// The store ids.
    pub fn stores(&self) -> &[String] {
        &self.config.stores
    }

    /// The folder that holds every node's data folder.
    pub fn data_dir(&self) -> &Path {
        &self.data.0
    }

    /// Node `i`'s data folder; its log of store S is `<dir>/<S>.log` (docs/testbed.md).
    pub fn node_data_dir(&self, i: usize) -> PathBuf {
        self.data.0.join(&self.names[i])
    }

    /// The compiled testbed (`-pa` it to run testbed modules on nodes of your own).
    pub fn ebin_dir(&self) -> &Path {
        &self.ebin
    }

    fn lock_nodes(&self) -> std::sync::MutexGuard<'_, Vec<Option<ErlNode>>> {
        // A panic while holding the lock leaves the list usable: recover it.
        self.nodes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether node `i` is running (not killed).
    pub fn is_running(&self, i: usize) -> bool {
        self.lock_nodes().get(i).is_some_and(Option::is_some)
    }

    /// The OS pid of node `i`, if it runs.
    pub fn os_pid(&self, i: usize) -> Option<u32> {
        self.lock_nodes().get(i)?.as_ref()?.os_pid()
    }

    /// Kills node `i` at once (SIGKILL), as a crash would.
    pub fn kill_node(&self, i: usize) {
        let node = self.lock_nodes().get_mut(i).and_then(Option::take);
        if let Some(mut node) = node {
            node.kill();
        }
    }

    /// Starts node `i` again (same name and data folder; it replays its log and catches
    /// up with the leader); returns once it serves.
    pub fn restart_node(&self, i: usize) -> Result<(), TestbedError> {
        self.kill_node(i);
        let node = self.spawn_node(i, &self.names)?;
        self.lock_nodes()[i] = Some(node);
        Ok(())
    }

    /// Evaluates an Erlang expression on node `i` (through the control node); returns
    /// the value printed on one line (`~0tp`), or, when it is a binary, its text.
    pub fn eval(&self, i: usize, expr: &str) -> Result<String, TestbedError> {
        self.eval_on(&self.names[i].clone(), expr)
    }

    /// Evaluates an expression on the control node itself (it can read every node's
    /// data folder, also of a node that is down).
    pub fn eval_local(&self, expr: &str) -> Result<String, TestbedError> {
        self.eval_on("local", expr)
    }

    fn eval_on(&self, target: &str, expr: &str) -> Result<String, TestbedError> {
        let mut ctl = self.ctl.lock().map_err(|_| TestbedError::ControlGone)?;
        ctl.request(target, expr)
    }

    /// `{ServerName, LeaderNode}`'s node of `ra_leaderboard:lookup_leader(Store)` as
    /// seen from the first running node, or `None` during an election.
    pub fn leader(&self, store: &str) -> Result<Option<String>, TestbedError> {
        let i = (0..self.names.len())
            .find(|&i| self.is_running(i))
            .ok_or_else(|| TestbedError::Config("no node is running".into()))?;
        let out = self.eval(
            i,
            &format!(
                "case ra_leaderboard:lookup_leader('{store}') of {{_, N}} -> atom_to_binary(N); _ -> <<>> end"
            ),
        )?;
        Ok((!out.is_empty()).then_some(out))
    }

    /// The index of the node that leads `store`.
    pub fn leader_index(&self, store: &str) -> Result<Option<usize>, TestbedError> {
        Ok(self
            .leader(store)?
            .and_then(|n| self.names.iter().position(|x| *x == n)))
    }

    /// Every event in node `i`'s log of `store`, in log order (read from the file by the
    /// control node, so it works for a node that is down).
    pub fn stored_events(&self, i: usize, store: &str) -> Result<Vec<StoredEvent>, TestbedError> {
        let dir = self.node_data_dir(i);
        let out = self.eval_local(&format!(
            "iolist_to_binary([[S, $\\t, integer_to_binary(N), $\\t, Id, $\\n] || {{S, N, Id}} <- testbed:stored_events(\"{}\", '{store}')])",
            dir.display()
        ))?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let mut f = l.split('\t');
                Some(StoredEvent {
                    stream: f.next()?.to_string(),
                    number: f.next()?.parse().ok()?,
                    event_id: f.next()?.to_string(),
                })
            })
            .collect())
    }

    /// `ok` when node `i`'s log of `store` has every event exactly once and no gaps;
    /// otherwise the problem, printed.
    pub fn check_log(&self, i: usize, store: &str) -> Result<String, TestbedError> {
        self.eval_local(&format!(
            "testbed:check_log(\"{}\", '{store}')",
            self.node_data_dir(i).display()
        ))
    }

    /// Appends one event per id to `stream` through a random worker of node `i`; returns
    /// the reply, printed (`{ok,Version}` or `{error,...}`).
    pub fn append(
        &self,
        i: usize,
        store: &str,
        stream: &str,
        event_ids: &[&str],
    ) -> Result<String, TestbedError> {
        let ids = event_ids
            .iter()
            .map(|id| format!("<<\"{}\">>", erl_escape(id)))
            .collect::<Vec<_>>()
            .join(",");
        self.eval(
            i,
            &format!(
                "testbed:append('{store}', <<\"{}\">>, [{ids}])",
                erl_escape(stream)
            ),
        )
    }

    /// After the leader of `store` was killed: waits on node `i` (a survivor) until it
    /// follows a new leader and has caught up; returns the new leader's index.
    pub fn await_new_leader(
        &self,
        i: usize,
        store: &str,
        old_leader: usize,
    ) -> Result<Option<usize>, TestbedError> {
        let out = self.eval(
            i,
            &format!(
                "atom_to_binary(testbed:await_new_leader('{store}', '{}', 30000))",
                self.names[old_leader]
            ),
        )?;
        Ok(self.names.iter().position(|n| *n == out))
    }

    /// Makes every gateway worker of `store` on node `i` take `ms` longer per request.
    pub fn slow_workers(&self, i: usize, store: &str, ms: u64) -> Result<String, TestbedError> {
        self.eval(i, &format!("testbed_fault:slow_worker('{store}', {ms})"))
    }

    /// Makes every gateway worker of `store` on node `i` crash on its next request.
    pub fn crash_workers_next(&self, i: usize, store: &str) -> Result<String, TestbedError> {
        self.eval(i, &format!("testbed_fault:crash_next('{store}')"))
    }

    /// Removes the Swarm names of `store`'s workers on node `i` (the processes live on).
    pub fn unregister_workers(&self, i: usize, store: &str) -> Result<String, TestbedError> {
        self.eval(i, &format!("testbed_fault:unregister_worker('{store}')"))
    }

    /// The Swarm names of every gateway worker in the cluster, printed, seen from node `i`.
    pub fn worker_names(&self, i: usize) -> Result<Vec<String>, TestbedError> {
        let out = self.eval(
            i,
            "iolist_to_binary([[io_lib:format(\"~0p\", [N]), $\\n] || {N, _} <- 'Elixir.Swarm':registered(), 'Elixir.ExESDB.GatewayWorker':is_worker_name(N)])",
        )?;
        Ok(out.lines().map(String::from).collect())
    }
}

fn node_addr(c: &TestbedConfig, i: usize) -> Ipv4Addr {
    c.node_addrs.get(i).copied().unwrap_or(Ipv4Addr::LOCALHOST)
}

fn ticktime_args(c: &TestbedConfig) -> Vec<String> {
    c.net_ticktime.map_or_else(Vec::new, |t| {
        vec!["-kernel".into(), "net_ticktime".into(), t.to_string()]
    })
}

/// Escapes a string for an Erlang binary literal `<<"...">>` (UTF-8 source).
fn erl_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn validate(c: &TestbedConfig) -> Result<(), TestbedError> {
    let ok_name = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
    };
    if c.nodes == 0 || c.stores.is_empty() || c.workers_per_store == 0 {
        return Err(TestbedError::Config(
            "need at least one node, one store and one worker".into(),
        ));
    }
    if !c.stores.iter().all(|s| {
        ok_name(s) && s.starts_with(|ch: char| ch.is_ascii_lowercase()) && !s.contains('-')
    }) {
        return Err(TestbedError::Config(
            "store ids are lowercase atoms ([a-z][a-z0-9_]*)".into(),
        ));
    }
    if !ok_name(&c.cookie) || !ok_name(&c.name_prefix) {
        return Err(TestbedError::Config(
            "cookie and name prefix are [A-Za-z0-9_-]+".into(),
        ));
    }
    if !c.node_addrs.is_empty() && c.node_addrs.len() != c.nodes {
        return Err(TestbedError::Config(format!(
            "node_addrs: {} addresses for {} nodes",
            c.node_addrs.len(),
            c.nodes
        )));
    }
    for (i, a) in c.node_addrs.iter().enumerate() {
        if c.node_addrs[..i].contains(a) {
            return Err(TestbedError::Config(format!("node_addrs: {a} twice")));
        }
        check_loopback_addr(*a).map_err(TestbedError::Config)?;
    }
    if c.net_ticktime == Some(0) {
        return Err(TestbedError::Config(
            "net_ticktime must be at least 1 s".into(),
        ));
    }
    if let Some(g) = &c.gossip {
        let a = g.addr;
        if !(a.is_loopback() || a.is_multicast()) {
            return Err(TestbedError::Config(format!(
                "gossip to {a} could leave the machine: use 127.0.0.0/8 or a multicast group"
            )));
        }
        if let Some(s) = &g.secret
            && !s
                .chars()
                .all(|ch| ch.is_ascii_graphic() && ch != '"' && ch != '\\')
        {
            return Err(TestbedError::Config(
                "gossip secret: printable ASCII without quotes".into(),
            ));
        }
    }
    Ok(())
}

/// A folder removed when dropped.
#[derive(Debug)]
struct DataDir(PathBuf);

impl DataDir {
    fn create(name: &str) -> Result<Self, TestbedError> {
        let dir = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&dir)?;
        Ok(DataDir(dir))
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The hidden control node: expressions in on stdin, results out on stdout.
#[derive(Debug)]
struct Control {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    next: u64,
}

impl Control {
    fn start(
        epmd: &Epmd,
        name: &str,
        config: &TestbedConfig,
        ebin: &Path,
    ) -> Result<Self, TestbedError> {
        let erl = find_program("erl")?;
        let mut child = Command::new(erl)
            .env("ERL_EPMD_PORT", epmd.port().to_string())
            .args(["-noshell", "-hidden", "-name", &format!("{name}@127.0.0.1")])
            .args(["-setcookie", &config.cookie])
            .args([
                "-kernel",
                "inet_dist_use_interface",
                &erl_ip(Ipv4Addr::LOCALHOST),
            ])
            .args(ticktime_args(config))
            .arg("-pa")
            .arg(ebin)
            .args(["-eval", "testbed_ctl:repl()"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|source| ErlError::Spawn {
                what: "testbed control node".into(),
                source,
            })?;
        let (tx, lines) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let stdin = child.stdin.take().ok_or(TestbedError::ControlGone)?;
        let ctl = Control {
            child,
            stdin,
            lines,
            next: 0,
        };
        loop {
            match ctl.lines.recv_timeout(crate::erl::START_TIMEOUT) {
                Ok(l) if l.contains("testbed-ctl-ready") => return Ok(ctl),
                Ok(_) => continue,
                Err(_) => {
                    return Err(ErlError::NotReady {
                        what: "testbed control node".into(),
                        timeout: crate::erl::START_TIMEOUT,
                        output: String::new(),
                    }
                    .into());
                }
            }
        }
    }

    fn request(&mut self, target: &str, expr: &str) -> Result<String, TestbedError> {
        self.next += 1;
        let id = format!("r{}", self.next);
        let hex: String = expr.bytes().map(|b| format!("{b:02x}")).collect();
        writeln!(self.stdin, "{id} {target} {hex}").map_err(|_| TestbedError::ControlGone)?;
        self.stdin.flush().map_err(|_| TestbedError::ControlGone)?;
        loop {
            let line = self
                .lines
                .recv_timeout(EVAL_TIMEOUT)
                .map_err(|_| TestbedError::ControlGone)?;
            let mut parts = line.splitn(3, ' ');
            if parts.next() != Some(id.as_str()) {
                continue; // log output of the control node
            }
            let tag = parts.next().unwrap_or_default();
            let body = parts.next().unwrap_or_default().to_string();
            return match tag {
                "ok" => Ok(body),
                "text" => Ok(String::from_utf8_lossy(&unhex(&body)).into_owned()),
                _ => Err(TestbedError::Eval {
                    target: target.into(),
                    message: body,
                }),
            };
        }
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

/// Compiles `dev-env/testbed` into a cache folder keyed by a hash of its sources
/// (`<target>/testbed-ebin/<hash>`), once; concurrent test binaries each compile into a
/// temporary folder and rename it into place, so none sees a half-written one.
pub fn ensure_compiled() -> Result<PathBuf, TestbedError> {
    let src = workspace_root().join("dev-env").join("testbed").join("src");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&src)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "erl")
                || p.file_name().is_some_and(|n| n == "ex_esdb.app.src")
        })
        .collect();
    files.sort();
    let erlc = find_program("erlc")?;
    // The compiler is part of the key: beams of a newer OTP may not load on an older one
    // (`cargo xtask otp27` runs the same tests with OTP 27's erlc first on the PATH).
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in erlc.to_string_lossy().bytes() {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    for f in &files {
        let name = f.file_name().map(|n| n.to_string_lossy().into_owned());
        for b in name.unwrap_or_default().bytes().chain(std::fs::read(f)?) {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let cache = target.join("testbed-ebin");
    let dest = cache.join(format!("{hash:016x}"));
    if dest.join("ex_esdb.app").is_file() {
        return Ok(dest);
    }
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let tmp = cache.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&tmp)?;
    let out = Command::new(erlc)
        .arg("-o")
        .arg(&tmp)
        .args(
            files
                .iter()
                .filter(|f| f.extension().is_some_and(|x| x == "erl")),
        )
        .output()?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(TestbedError::Compile(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    std::fs::copy(src.join("ex_esdb.app.src"), tmp.join("ex_esdb.app"))?;
    if std::fs::rename(&tmp, &dest).is_err() {
        // Another test binary won the race: use its copy.
        let _ = std::fs::remove_dir_all(&tmp);
        if !dest.join("ex_esdb.app").is_file() {
            return Err(TestbedError::Compile(format!(
                "could not move the compiled testbed to {}",
                dest.display()
            )));
        }
    }
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_cluster_serves_survives_a_follower_kill_and_stops() {
        let tb = Testbed::start(TestbedConfig::default()).expect("testbed starts");
        assert_eq!(tb.node_names().len(), 3);
        assert_eq!(tb.eval(0, "1 + 1").expect("eval"), "2");
        let leader = tb
            .leader_index("reg_gh")
            .expect("leader")
            .expect("a leader");
        let first = tb.node_name(0).to_string();
        // A round trip through a random worker, seen from the first node.
        tb.eval_local(&format!("testbed:smoke('{first}', reg_gh)"))
            .expect("smoke");
        assert_eq!(tb.worker_names(0).expect("names").len(), 6);
        let follower = (0..3).find(|&i| i != leader).expect("a follower");
        let pid = tb.os_pid(follower).expect("running");
        tb.kill_node(follower);
        assert!(!tb.is_running(follower));
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(stat.is_empty() || !stat.contains("beam"));
        // The killed follower's log holds the acknowledged append exactly once.
        let events = tb.stored_events(follower, "reg_gh").expect("log");
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(tb.check_log(follower, "reg_gh").expect("check"), "ok");
        tb.restart_node(follower).expect("restarts");
        assert_eq!(tb.check_log(follower, "reg_gh").expect("check"), "ok");
        let dir = tb.data_dir().to_path_buf();
        drop(tb);
        assert!(!dir.exists());
    }

    #[test]
    fn failover_keeps_acked_appends() {
        let tb = Testbed::start(TestbedConfig::default()).expect("testbed starts");
        let leader = tb
            .leader_index("reg_gh")
            .expect("leader")
            .expect("a leader");
        let survivor = (0..3).find(|&i| i != leader).expect("a follower");
        assert_eq!(
            tb.append(survivor, "reg_gh", "f-1", &["a", "b"])
                .expect("append"),
            "{ok,1}"
        );
        tb.kill_node(leader);
        let new = tb
            .await_new_leader(survivor, "reg_gh", leader)
            .expect("new leader")
            .expect("a known node");
        assert_ne!(new, leader);
        assert_eq!(
            tb.append(survivor, "reg_gh", "f-1", &["c"])
                .expect("append"),
            "{ok,2}"
        );
        for i in (0..3).filter(|&i| i != leader) {
            let ids: Vec<String> = tb
                .stored_events(i, "reg_gh")
                .expect("log")
                .into_iter()
                .map(|e| e.event_id)
                .collect();
            assert_eq!(ids, ["a", "b", "c"], "node {i}");
            assert_eq!(tb.check_log(i, "reg_gh").expect("check"), "ok");
        }
    }

    #[test]
    fn nodes_send_sealed_heartbeats_on_loopback_multicast() {
        use std::net::UdpSocket;
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind");
        let port = socket.local_addr().expect("addr").port();
        socket
            .join_multicast_v4(&Ipv4Addr::new(239, 255, 0, 1), &Ipv4Addr::LOCALHOST)
            .expect("join");
        socket
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let tb = Testbed::start(TestbedConfig {
            nodes: 1,
            gossip: Some(GossipConfig {
                secret: Some("s3cret".into()),
                interval_ms: (1, 100),
                ..GossipConfig::on_port(port)
            }),
            ..TestbedConfig::default()
        })
        .expect("testbed starts");
        let mut buf = [0u8; 512];
        let (n, from) = socket.recv_from(&mut buf).expect("a heartbeat");
        assert!(from.ip().is_loopback(), "{from}");
        // Sealed: 16-byte IV + whole AES blocks; the node decodes it back to its name.
        assert!(n >= 32 && n % 16 == 0, "{n} bytes");
        let hex: String = buf[..n].iter().map(|b| format!("{b:02x}")).collect();
        let node = tb
            .eval_local(&format!(
                "{{ok, N}} = testbed_gossip:open(binary:decode_hex(<<\"{hex}\">>), <<\"s3cret\">>), atom_to_binary(N)"
            ))
            .expect("opens");
        assert_eq!(node, tb.node_name(0));
    }

    #[test]
    fn nodes_can_have_addresses_of_their_own() {
        let tb = Testbed::start(TestbedConfig {
            nodes: 2,
            node_addrs: vec![Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3)],
            net_ticktime: Some(10),
            ..TestbedConfig::default()
        })
        .expect("testbed starts");
        assert!(
            tb.node_name(0).ends_with("@127.0.0.2"),
            "{}",
            tb.node_name(0)
        );
        assert_eq!(tb.node_addr(1), Ipv4Addr::new(127, 0, 0, 3));
        assert_eq!(
            tb.eval(1, "net_kernel:get_net_ticktime()").expect("eval"),
            "10"
        );
        // Node 1 reached node 0 from its own address: the peer sees 127.0.0.3.
        let peer = tb
            .eval(
                0,
                &format!(
                    "{{ok, Info}} = net_kernel:node_info('{}'), {{_, A}} = lists:keyfind(address, 1, Info), element(1, element(2, A))",
                    tb.node_name(1)
                ),
            )
            .expect("peer address");
        assert_eq!(peer, "{127,0,0,3}");
        let first = tb.node_name(0).to_string();
        tb.eval_local(&format!("testbed:smoke('{first}', reg_gh)"))
            .expect("smoke");
    }

    #[test]
    fn a_node_address_off_loopback_is_refused() {
        for addr in [Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::BROADCAST] {
            let config = TestbedConfig {
                nodes: 1,
                node_addrs: vec![addr],
                ..TestbedConfig::default()
            };
            assert!(
                matches!(Testbed::start(config), Err(TestbedError::Config(_))),
                "{addr}"
            );
        }
    }

    #[test]
    fn a_testbed_can_be_shared_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Testbed>();
    }

    #[test]
    fn gossip_outside_loopback_is_refused() {
        let config = TestbedConfig {
            gossip: Some(GossipConfig {
                addr: Ipv4Addr::BROADCAST,
                ..GossipConfig::on_port(45892)
            }),
            ..TestbedConfig::default()
        };
        assert!(matches!(
            Testbed::start(config),
            Err(TestbedError::Config(_))
        ));
    }
}
