//! Leader-aware routing and load spread.

mod common;
use common::*;
use gater_api::{Direction, ExpectedVersion, GaterError};
use std::collections::BTreeMap;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_replica_lag_one_writer_per_stream_gets_no_spurious_rejection() {
    // Followers make replicated writes readable only after 150 ms: a worker on a
    // follower would reject the next append of the same writer as stale.
    let tb = testbed("apilag", 150);
    let g = gater(&tb).await;
    let writers = (0..6).map(|w| {
        let g = g.clone();
        tokio::spawn(async move {
            let stream = format!("lag-{w}");
            let mut expected = ExpectedVersion::NoStream;
            let mut rejections = 0;
            for i in 0..25 {
                match g
                    .append_events_expected(STORE, &stream, expected, vec![ev(i)])
                    .await
                {
                    Ok(v) => expected = ExpectedVersion::Exact(v),
                    Err(GaterError::WrongExpectedVersion { .. }) => rejections += 1,
                    Err(e) => panic!("append failed: {e}"),
                }
                // Read-your-writes: the version this writer just wrote is visible.
                let v = g.get_version(STORE, &stream).await.expect("version");
                assert_eq!(Some(v), expected.version());
            }
            rejections
        })
    });
    let rejections: usize = bounded(futures::future::join_all(writers), 60)
        .await
        .into_iter()
        .map(|r| r.expect("writer"))
        .sum();
    assert_eq!(rejections, 0, "spurious wrong_expected_version rejections");
    // And the replicas did lag: a follower's worker serves a stale version right after a write.
    let m = g.metrics();
    assert_eq!(m.errors.get("wrong_expected_version"), None, "{m:?}");
    // Not even a retry was needed: every append went to the leader at once.
    assert_eq!(m.stale_retries, 0, "{m:?}");
    let leader = tb.leader_index(STORE).expect("leader").expect("a leader");
    let follower = (leader + 1) % 3;
    let out = tb
        .append(leader, STORE, "lag-probe", &["p-1"])
        .expect("append");
    assert_eq!(out, "{ok,0}");
    let stale = tb
        .eval(
            follower,
            "testbed_store:local_version(reg_gh, <<\"lag-probe\">>)",
        )
        .expect("eval");
    assert_eq!(stale, "-1", "the testbed's follower should lag");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_spread_evenly_across_every_nodes_workers() {
    let tb = testbed("apispread", 0);
    let g = gater(&tb).await;
    g.append_events(STORE, "spread", vec![ev(0), ev(1)])
        .await
        .expect("append");
    let base = g.metrics().calls_by_node;
    let readers = (0..16).map(|_| {
        let g = g.clone();
        tokio::spawn(async move {
            for _ in 0..60 {
                g.get_events(STORE, "spread-other", 0, 10, Direction::Forward)
                    .await
                    .expect("read");
            }
        })
    });
    for r in bounded(futures::future::join_all(readers), 60).await {
        r.expect("reader");
    }
    let after = g.metrics().calls_by_node;
    let share: BTreeMap<String, u64> = after
        .iter()
        .map(|(n, c)| (n.clone(), c - base.get(n).copied().unwrap_or(0)))
        .collect();
    let total: u64 = share.values().sum();
    assert_eq!(total, 960, "{share:?}");
    assert_eq!(share.len(), 3, "every node served: {share:?}");
    let even = total as f64 / 3.0;
    for (node, n) in &share {
        let dev = (*n as f64 - even).abs() / even;
        assert!(dev <= 0.30, "{node} served {n} of {total} ({share:?})");
    }
}
