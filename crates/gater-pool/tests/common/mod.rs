//! Shared set-up for the tests against real Erlang nodes.
#![allow(dead_code)]

use gater_pool::eetf::{Atom, FixInteger};
use gater_pool::{NodeEvent, Pool, PoolConfig, Term};
use gater_testkit::erl::{Epmd, ErlNode, NodeSpec, unique_name};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::sync::broadcast;

pub const COOKIE: &str = "gater_pool_test_cookie";

/// gater_echo.beam, compiled once per test binary.
pub fn echo_beam_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("gater_pool_echo_{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/gater_echo.erl");
        let erlc = gater_testkit::erl::find_program("erlc").expect("erlc");
        let st = Command::new(erlc)
            .arg("-o")
            .arg(&dir)
            .arg(&src)
            .status()
            .expect("erlc runs");
        assert!(st.success(), "erlc failed");
        dir
    })
}

/// A node running gater_echo registered as `echo`.
pub fn echo_node(epmd: &Epmd, prefix: &str, extra: &[&str]) -> ErlNode {
    echo_node_named(epmd, &unique_name(prefix), extra)
}

pub fn echo_node_named(epmd: &Epmd, name: &str, extra: &[&str]) -> ErlNode {
    ErlNode::start(
        epmd,
        NodeSpec::new(name, COOKIE)
            .code_path(echo_beam_dir())
            .args(extra.iter().copied())
            .eval("gater_echo:start(echo)"),
    )
    .expect("erl node starts")
}

pub fn config(epmd: &Epmd) -> PoolConfig {
    PoolConfig::new(COOKIE)
        .node_name(format!("{}@127.0.0.1", unique_name("gater")))
        .epmd_port(epmd.port())
        .backoff(Duration::from_millis(50), Duration::from_millis(500))
}

pub fn atom(s: &str) -> Term {
    Term::from(Atom::from(s))
}

pub fn int(i: i32) -> Term {
    Term::from(FixInteger::from(i))
}

pub fn tuple(v: Vec<Term>) -> Term {
    Term::from(gater_pool::eetf::Tuple::from(v))
}

/// Waits (bounded) for the first event that `pred` accepts.
pub async fn wait_event(
    events: &mut broadcast::Receiver<NodeEvent>,
    within: Duration,
    pred: impl Fn(&NodeEvent) -> bool,
) -> NodeEvent {
    tokio::time::timeout(within, async {
        loop {
            match events.recv().await {
                Ok(e) if pred(&e) => return e,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("event channel: {e}"),
            }
        }
    })
    .await
    .expect("event within time-out")
}

pub async fn connected_pool(epmd: &Epmd, node: &ErlNode) -> Pool {
    let pool = Pool::new(config(epmd));
    pool.connect(node.name()).await.expect("connects");
    pool
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
