//! The registry runtime against a real 3-node testbed, without gater-api.

use gater_pool::{Pool, PoolConfig};
use gater_registry::{Registry, RegistryConfig, Route, StoreId};
use gater_testkit::testbed::{Testbed, TestbedConfig};
use std::time::Duration;

async fn until(secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_learns_every_nodes_workers_and_the_leader_and_forgets_a_dead_node_at_once() {
    let tb = Testbed::start(TestbedConfig {
        name_prefix: "regrt".into(),
        ..TestbedConfig::default()
    })
    .expect("testbed");
    let pool = Pool::new(PoolConfig::new(tb.cookie()).epmd_port(tb.epmd_port()));
    for n in tb.node_names() {
        pool.connect(&n).await.expect("connect");
    }
    let reg = Registry::start(
        pool.clone(),
        RegistryConfig {
            refresh_interval: Duration::from_millis(300),
            ..RegistryConfig::default()
        },
    );
    assert!(reg.refresh_now(Duration::from_secs(10)).await);
    let store = StoreId::from("reg_gh");
    until(10, || {
        reg.workers(&store).len() == 6 && reg.leader(&store).is_some()
    })
    .await;
    assert_eq!(reg.exesdb_nodes().len(), 3);
    let leader = tb.leader(&store.0).expect("leader").expect("a leader");
    assert_eq!(reg.leader(&store).as_deref(), Some(leader.as_str()));
    // Leader route: only the leader's workers.
    for _ in 0..50 {
        let lease = reg.select(&store, Route::Leader).expect("a worker");
        assert_eq!(lease.worker().node, leader);
    }
    let status = reg.status();
    assert!(
        status
            .nodes
            .iter()
            .all(|n| n.connected && n.exesdb == Some(true))
    );
    assert_eq!(status.leaders.get("reg_gh"), Some(&leader));

    // Kill a follower: its workers go with the Down event, before any refresh.
    let victim = (0..3)
        .find(|i| tb.node_name(*i) != leader)
        .expect("a follower");
    let dead = tb.node_name(victim).to_owned();
    let t0 = std::time::Instant::now();
    tb.kill_node(victim);
    until(5, || reg.workers(&store).iter().all(|w| w.node != dead)).await;
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "took {:?}",
        t0.elapsed()
    );
    assert_eq!(reg.workers(&store).len(), 4);
}
