//! Real Erlang processes for integration tests: a private EPMD per test and `erl` nodes
//! registered with it.
//!
//! Every process is a child of the test and is killed (by its own pid) when its handle is
//! dropped, also when the test panics. Nothing is daemonised, so nothing outlives the test.
//! A private EPMD on its own port keeps tests that run in parallel apart: nodes started
//! with [`ErlNode::start`] find it through `ERL_EPMD_PORT`, and a Rust client must be told
//! the same port ([`Epmd::port`]).

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What an `-eval` prints once the node is ready; [`ErlNode::start`] waits for it.
pub const READY_LINE: &str = "gater-testkit-ready";

/// How long [`ErlNode::start`] and [`Epmd::start`] wait before they give up.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Why an Erlang process could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErlError {
    /// `erl` or `epmd` is not installed.
    #[error("`{0}` not found: install Erlang/OTP (`cargo xtask erlang`)")]
    Missing(&'static str),
    /// The process could not be spawned.
    #[error("could not start {what}: {source}")]
    Spawn {
        /// What was being started.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The process exited or stayed silent before it was ready.
    #[error("{what} did not become ready within {timeout:?}; output:\n{output}")]
    NotReady {
        /// What was being started.
        what: String,
        /// How long we waited.
        timeout: Duration,
        /// What the process printed.
        output: String,
    },
}

/// Finds an executable: on the PATH, or in Debian's erts folder for `epmd`.
pub fn find_program(name: &'static str) -> Result<PathBuf, ErlError> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    if let Some(p) = on_path {
        return Ok(p);
    }
    // Debian puts epmd under /usr/lib/erlang/erts-*/bin when it is not linked to /usr/bin.
    let erts = std::fs::read_dir("/usr/lib/erlang").ok().and_then(|dir| {
        dir.filter_map(Result::ok)
            .map(|e| e.path().join("bin").join(name))
            .find(|p| p.is_file())
    });
    erts.ok_or(ErlError::Missing(name))
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_tcp_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// A name no other node of this test process uses: `prefix_<pid>_<n>`.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A private EPMD listening on 127.0.0.1 on a port of its own.
#[derive(Debug)]
pub struct Epmd {
    child: Child,
    port: u16,
}

impl Epmd {
    /// Starts EPMD on a free port and returns once it accepts connections.
    pub fn start() -> Result<Self, ErlError> {
        Self::start_on(&[])
    }

    /// Starts EPMD on a free port, listening on 127.0.0.1 and on each of `also` (node
    /// addresses other than 127.0.0.1: a peer asks the EPMD at a node's host), and returns
    /// once it accepts connections.
    pub fn start_on(also: &[Ipv4Addr]) -> Result<Self, ErlError> {
        let program = find_program("epmd")?;
        let port = free_tcp_port();
        let mut addresses = vec![Ipv4Addr::LOCALHOST];
        for a in also {
            if !addresses.contains(a) {
                addresses.push(*a);
            }
        }
        let addresses = addresses
            .iter()
            .map(Ipv4Addr::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let child = Command::new(program)
            .args(["-port", &port.to_string(), "-address", &addresses])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| ErlError::Spawn {
                what: "epmd".into(),
                source,
            })?;
        let epmd = Epmd { child, port };
        // EPMD announces nothing when it is ready: retrying a connect, bounded, is the event.
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + START_TIMEOUT;
        let mut pause = Duration::from_millis(2);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if Instant::now() > deadline {
                return Err(ErlError::NotReady {
                    what: format!("epmd on port {port}"),
                    timeout: START_TIMEOUT,
                    output: String::new(),
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(100));
        }
        Ok(epmd)
    }

    /// The TCP port EPMD listens on.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Epmd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How to start an Erlang node.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// The node name before the `@`.
    pub name: String,
    /// The host part of the name and the only address the node's distribution listens on
    /// (and, when not 127.0.0.1, connects from): 127.0.0.1 unless set with
    /// [`NodeSpec::host`].
    pub host: Ipv4Addr,
    /// The distribution cookie.
    pub cookie: String,
    /// Code paths (`-pa`).
    pub code_paths: Vec<PathBuf>,
    /// Extra arguments for `erl` (for example `-kernel net_ticktime 4`).
    pub extra_args: Vec<String>,
    /// Erlang expressions run at start (`-eval`); [`ErlNode::start`] appends the print
    /// of [`READY_LINE`], so these should return once the node is ready to serve.
    pub eval: String,
    /// Folder for the node's log; a temporary one when `None`.
    pub log_dir: Option<PathBuf>,
}

impl NodeSpec {
    /// A node with this name and cookie that runs nothing else.
    pub fn new(name: impl Into<String>, cookie: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            host: Ipv4Addr::LOCALHOST,
            cookie: cookie.into(),
            code_paths: Vec::new(),
            extra_args: Vec::new(),
            eval: "ok".into(),
            log_dir: None,
        }
    }

    /// Sets the expressions run at start.
    pub fn eval(mut self, code: impl Into<String>) -> Self {
        self.eval = code.into();
        self
    }

    /// Sets the node's address (`name@host`): its distribution listens there only and,
    /// unless it is 127.0.0.1, its outgoing distribution connections are bound to it, so
    /// that every packet of the node carries this address (what a network fault on that
    /// address acts on). The address must be configured on this machine's (or network
    /// namespace's) loopback device.
    pub fn host(mut self, host: Ipv4Addr) -> Self {
        self.host = host;
        self
    }

    /// Adds a code path.
    pub fn code_path(mut self, path: impl AsRef<Path>) -> Self {
        self.code_paths.push(path.as_ref().to_path_buf());
        self
    }

    /// Adds extra `erl` arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }
}

/// A running `erl` node, killed when dropped.
#[derive(Debug)]
pub struct ErlNode {
    child: Option<Child>,
    name: String,
    cookie: String,
    epmd_port: u16,
    output: mpsc::Receiver<String>,
}

impl ErlNode {
    /// Starts a node registered with `epmd` and waits until its `eval` has run.
    pub fn start(epmd: &Epmd, spec: NodeSpec) -> Result<Self, ErlError> {
        let program = find_program("erl")?;
        let full_name = format!("{}@{}", spec.name, spec.host);
        let ip = erl_ip(spec.host);
        let mut cmd = Command::new(program);
        cmd.env("ERL_EPMD_PORT", epmd.port().to_string())
            .args(["-noshell", "-noinput", "-name", &full_name])
            .args(["-setcookie", &spec.cookie])
            // Distribution listens on its own (loopback) address only.
            .args(["-kernel", "inet_dist_use_interface", &ip]);
        if spec.host != Ipv4Addr::LOCALHOST {
            // Outgoing connections leave from the node's address too (the kernel would
            // otherwise pick the peer's address as the source on `lo`).
            cmd.args([
                "-kernel",
                "inet_dist_connect_options",
                &format!("[{{ip,{ip}}}]"),
            ]);
        }
        for p in &spec.code_paths {
            cmd.arg("-pa").arg(p);
        }
        cmd.args(&spec.extra_args);
        let eval = format!(
            "{}, io:format(\"~s~n\", [\"{READY_LINE}\"])",
            spec.eval.trim().trim_end_matches('.')
        );
        cmd.args(["-eval", &eval])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().map_err(|source| ErlError::Spawn {
            what: format!("erl node {full_name}"),
            source,
        })?;
        let stdout = child.stdout.take();
        let output = forward_lines(stdout);
        let mut node = ErlNode {
            child: Some(child),
            name: full_name,
            cookie: spec.cookie,
            epmd_port: epmd.port(),
            output,
        };
        node.wait_for_line(READY_LINE, START_TIMEOUT)?;
        Ok(node)
    }

    /// The full node name, `name@host`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cookie it was started with.
    pub fn cookie(&self) -> &str {
        &self.cookie
    }

    /// The port of the EPMD it registered with.
    pub fn epmd_port(&self) -> u16 {
        self.epmd_port
    }

    /// The OS process id.
    pub fn os_pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits until the node prints a line containing `needle`; returns that line.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> Result<String, ErlError> {
        let deadline = Instant::now() + timeout;
        let mut seen = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.output.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Ok(line),
                Ok(line) => {
                    seen.push_str(&line);
                    seen.push('\n');
                }
                Err(_) => {
                    return Err(ErlError::NotReady {
                        what: format!("erl node {} (waiting for {needle:?})", self.name),
                        timeout,
                        output: seen,
                    });
                }
            }
        }
    }

    /// Kills the node at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ErlNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An address as an Erlang tuple: `{127,0,0,1}`.
pub fn erl_ip(a: Ipv4Addr) -> String {
    let [a, b, c, d] = a.octets();
    format!("{{{a},{b},{c},{d}}}")
}

/// Whether `addr` may be given to a node: an address in 127.0.0.0/8, or one configured on
/// the loopback device `lo` of the current network namespace (as `ip -o -4 addr show dev
/// lo` lists it). Anything else could put a node on a real network: refused.
pub fn check_loopback_addr(addr: Ipv4Addr) -> Result<(), String> {
    if addr.is_loopback() {
        return Ok(());
    }
    let out = Command::new("ip")
        .args(["-o", "-4", "addr", "show", "dev", "lo"])
        .output()
        .map_err(|e| format!("{addr}: cannot list the addresses of `lo` (ip: {e})"))?;
    let listed = String::from_utf8_lossy(&out.stdout);
    let on_lo = listed
        .split_whitespace()
        .any(|w| w.split('/').next().and_then(|a| a.parse::<Ipv4Addr>().ok()) == Some(addr));
    if on_lo {
        Ok(())
    } else {
        Err(format!(
            "{addr} is neither in 127.0.0.0/8 nor configured on `lo` here: a node there could reach a real network"
        ))
    }
}

/// Forwards a child's stdout lines to a channel (and to the test's stderr, for failures).
fn forward_lines(stdout: Option<ChildStdout>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    if let Some(out) = stdout {
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                eprintln!("[erl] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_starts_registers_with_its_private_epmd_and_stops() {
        let epmd = Epmd::start().expect("epmd starts");
        let mut node = ErlNode::start(
            &epmd,
            NodeSpec::new(unique_name("testkit"), "testkit_cookie")
                .eval("io:format(\"registered ~p~n\", [net_adm:names()])"),
        )
        .expect("node starts");
        assert!(node.name().ends_with("@127.0.0.1"));
        let pid = node.os_pid().expect("running");
        node.kill();
        assert!(node.os_pid().is_none());
        // kill() reaped the child: its pid is gone or at most a zombie of someone else's.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty() || !stat.contains("beam"),
            "node still running: {stat}"
        );
    }
}
