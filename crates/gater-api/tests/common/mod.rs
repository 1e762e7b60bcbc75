//! Shared set-up: a private 3-node testbed and a Gater connected to it.
#![allow(dead_code)]

use gater_api::{Gater, GaterConfig, NewEvent};
use gater_testkit::testbed::{Testbed, TestbedConfig};
use std::future::Future;
use std::time::Duration;

pub const STORE: &str = "reg_gh";

pub fn testbed(prefix: &str, lag_ms: u64) -> Testbed {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    Testbed::start(TestbedConfig {
        name_prefix: prefix.into(),
        lag_ms,
        ..TestbedConfig::default()
    })
    .expect("testbed starts")
}

pub fn config(tb: &Testbed) -> GaterConfig {
    let mut c = GaterConfig::new(tb.cookie())
        .nodes(tb.node_names())
        .epmd_port(tb.epmd_port())
        .call_timeout(Duration::from_secs(5));
    c.refresh_interval = Duration::from_millis(500);
    c
}

pub async fn gater(tb: &Testbed) -> Gater {
    let g = bounded(Gater::connect(config(tb)), 20)
        .await
        .expect("gater connects");
    // Every node's workers and the leader known before the test starts.
    let nodes = tb.node_names();
    eventually(10, || {
        let s = g.cluster_status();
        s.stores.iter().any(|st| {
            st.store.as_str() == STORE
                && st.leader.is_some()
                && nodes.iter().all(|n| st.workers.contains_key(n))
        })
    })
    .await;
    g
}

/// Awaits `f` for at most `secs` seconds.
pub async fn bounded<F: Future>(f: F, secs: u64) -> F::Output {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .expect("bounded await timed out")
}

/// Polls `cond` (every 20 ms) until true, for at most `secs` seconds.
pub async fn eventually(secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn ev(i: usize) -> NewEvent {
    NewEvent::json("Tested:v1", serde_json::json!({ "i": i }))
}
