//! Registry upkeep and Phoenix.PubSub membership.

mod common;
use common::*;
use futures::StreamExt;
use gater_api::Direction;
use std::collections::HashSet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_worker_is_replaced_in_the_registry_and_reads_never_fail() {
    let tb = testbed("apicrash", 0);
    let g = gater(&tb).await;
    let store = STORE.into();
    let before: HashSet<_> = g
        .registry()
        .workers(&store)
        .into_iter()
        .map(|w| w.pid)
        .collect();
    // Both workers of node 0 exit on their next request and restart under new names.
    tb.crash_workers_next(0, STORE).expect("fault");
    for _ in 0..60 {
        g.get_events(STORE, "crash", 0, 5, Direction::Forward)
            .await
            .expect("read retried elsewhere");
    }
    // The registry learns the successors (via the exit and the refresh it triggers).
    let node0 = tb.node_name(0).to_owned();
    let reg = g.registry().clone();
    eventually(10, move || {
        let now = reg.workers(&store);
        now.len() == 6
            && now
                .iter()
                .filter(|w| w.node == node0 && !before.contains(&w.pid))
                .count()
                == 2
    })
    .await;
    let m = g.metrics();
    assert!(m.failovers >= 1, "{m:?}");
    assert_eq!(m.errors.values().sum::<u64>(), 0, "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_membership_is_rejoined_after_a_node_restarts_and_carries_operational_messages() {
    let tb = testbed("apipg", 0);
    let g = gater(&tb).await;
    let ours = format!("'{}'", g.node_name());
    let members_on = |i: usize, group: &str| {
        tb.eval(
            i,
            &format!(
                "length([P || P <- pg:get_members('Elixir.Phoenix.PubSub', '{group}'), node(P) =:= {ours}])"
            ),
        )
        .expect("eval")
    };
    // Joined on every node, in both groups.
    for i in 0..3 {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while members_on(i, "Elixir.ex_esdb_events.Adapter") != "1" {
            assert!(
                std::time::Instant::now() < deadline,
                "not a member on node {i}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(members_on(i, "Elixir.ex_esdb_pubsub.Adapter"), "1");
    }
    // A broadcast on the operational PubSub reaches the stream.
    let mut ops = Box::pin(g.operational_messages());
    tb.eval(
        1,
        "begin [P ! {forward_to_local, <<\"health\">>, {node_up, node()}, 'Elixir.Phoenix.PubSub'} || P <- pg:get_members('Elixir.Phoenix.PubSub', 'Elixir.ex_esdb_pubsub.Adapter'), node(P) =/= node()], ok end",
    )
    .expect("broadcast");
    let m = bounded(ops.next(), 5).await.expect("a message");
    assert_eq!(m.topic, "health");
    assert_eq!(m.node, tb.node_name(1));

    // A restarted node has a new pg scope: the gateway discovers it again.
    tb.kill_node(2);
    tb.restart_node(2).expect("restart");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while members_on(2, "Elixir.ex_esdb_events.Adapter") != "1" {
        assert!(
            std::time::Instant::now() < deadline,
            "not a member again after the restart"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
