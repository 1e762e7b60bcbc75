//! Every ExESDB Gater operation through gater-api against a 3-node testbed.

mod common;
use common::*;
use futures::StreamExt;
use gater_api::{
    Direction, EventData, ExpectedVersion, GaterError, NewEvent, Selector, Subscription,
};
use gater_term::build::{binary, map};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_round_trips_with_typed_results() {
    let tb = testbed("apiops", 0);
    let g = gater(&tb).await;

    // list_stores: one entry per node.
    let stores = bounded(g.list_stores(), 10).await.expect("list_stores");
    assert_eq!(stores.len(), 3, "{stores:?}");
    assert!(stores.iter().all(|s| s.store.as_str() == STORE));

    // Empty and missing streams.
    assert_eq!(g.get_version(STORE, "nope").await.expect("version"), -1);
    assert!(
        g.get_events(STORE, "nope", 0, 10, Direction::Forward)
            .await
            .expect("read")
            .is_empty()
    );
    assert!(
        g.get_streams(STORE)
            .await
            .expect("streams")
            .iter()
            .all(|s| s != "nope")
    );

    // Appends with and without expected versions; UUIDv7 ids; JSON and raw data.
    let a = ev(0);
    let b = NewEvent::raw("Raw:v1", b"\x00\x01".to_vec())
        .with_metadata(EventData::Json(serde_json::json!({"m": true})));
    let v = g
        .append_events_expected(
            STORE,
            "ops-1",
            ExpectedVersion::NoStream,
            vec![a.clone(), b.clone()],
        )
        .await
        .expect("append");
    assert_eq!(v, 1);
    assert_eq!(
        g.append_events(STORE, "ops-1", vec![ev(2)])
            .await
            .expect("append"),
        2
    );
    assert_eq!(
        g.append_events_expected(STORE, "ops-1", ExpectedVersion::Exact(2), vec![ev(3)])
            .await
            .expect("append"),
        3
    );
    assert_eq!(
        g.append_events_expected(STORE, "ops-1", ExpectedVersion::StreamExists, vec![ev(4)])
            .await
            .expect("append"),
        4
    );
    assert_eq!(
        g.append_events_expected(STORE, "ops-any", ExpectedVersion::Any, vec![ev(0)])
            .await
            .expect("append"),
        0
    );
    // Wrong expected versions are typed.
    match g
        .append_events_expected(STORE, "ops-1", ExpectedVersion::Exact(0), vec![ev(9)])
        .await
    {
        Err(GaterError::WrongExpectedVersion { current: 4 }) => {}
        other => panic!("expected WrongExpectedVersion 4, got {other:?}"),
    }
    match g
        .append_events_expected(
            STORE,
            "ops-missing",
            ExpectedVersion::StreamExists,
            vec![ev(9)],
        )
        .await
    {
        Err(GaterError::WrongExpectedVersion { current: -1 }) => {}
        other => panic!("expected WrongExpectedVersion -1, got {other:?}"),
    }

    // Reads forward and backward.
    let fwd = g
        .get_events(STORE, "ops-1", 0, 10, Direction::Forward)
        .await
        .expect("read");
    assert_eq!(
        fwd.iter().map(|r| r.event_number).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
    assert_eq!(fwd[0].event_id, a.event_id);
    assert_eq!(fwd[0].data_json(), serde_json::json!({"i": 0}));
    assert_eq!(fwd[1].data, binary(b"\x00\x01".to_vec()));
    assert_eq!(fwd[1].data_content_type, 0);
    assert_eq!(fwd[1].metadata_json(), serde_json::json!({"m": true}));
    assert!(fwd[0].created.year() >= 2024);
    let back = g
        .get_events(STORE, "ops-1", 4, 2, Direction::Backward)
        .await
        .expect("read");
    assert_eq!(
        back.iter().map(|r| r.event_number).collect::<Vec<_>>(),
        [4, 3]
    );
    assert_eq!(g.get_version(STORE, "ops-1").await.expect("version"), 4);
    let streams = g.get_streams(STORE).await.expect("streams");
    assert!(streams.contains(&"ops-1".to_string()) && streams.contains(&"ops-any".to_string()));

    // Snapshots: record (confirmed), read, list, delete (confirmed), missing.
    let rec = map([(binary(b"state".to_vec()), gater_term::build::int(3))]);
    g.record_snapshot(STORE, "src-1", "ops-1", 2, rec.clone())
        .await
        .expect("record");
    let snap = g
        .read_snapshot(STORE, "src-1", "ops-1", 2)
        .await
        .expect("read")
        .expect("present");
    assert_eq!(snap.record, rec);
    let all = g.list_snapshots(STORE, None, None).await.expect("list");
    assert_eq!(all.len(), 1);
    assert_eq!(
        (
            all[0].source_uuid.as_str(),
            all[0].stream_uuid.as_str(),
            all[0].version
        ),
        ("src-1", "ops-1", 2)
    );
    assert_eq!(
        g.list_snapshots(STORE, Some("src-1"), None)
            .await
            .expect("list")
            .len(),
        1
    );
    assert!(
        g.list_snapshots(STORE, Some("other"), None)
            .await
            .expect("list")
            .is_empty()
    );
    g.delete_snapshot(STORE, "src-1", "ops-1", 2)
        .await
        .expect("delete");
    assert!(
        g.read_snapshot(STORE, "src-1", "ops-1", 2)
            .await
            .expect("read")
            .is_none()
    );

    // Subscriptions of every type: saved (confirmed), listed, acked, removed (confirmed).
    let pattern = map([(
        binary(b"event_type".to_vec()),
        binary(b"Tested:v1".to_vec()),
    )]);
    let subs = [
        Subscription::persistent(STORE, Selector::Stream("ops-1".into()), "p-stream"),
        Subscription::persistent(STORE, Selector::AllStreams, "p-all"),
        Subscription::transient(STORE, Selector::EventType("Tested:v1".into())),
        Subscription::persistent(STORE, Selector::EventPattern(pattern.clone()), "p-pattern"),
        Subscription::persistent(STORE, Selector::EventPayload(pattern), "p-payload"),
    ];
    for s in &subs {
        g.save_subscription(s).await.expect("save");
    }
    let listed = g.get_subscriptions(STORE).await.expect("list");
    for s in &subs {
        assert!(
            listed
                .iter()
                .any(|i| i.selector == s.selector && i.name == s.wire_name()),
            "{s:?} in {listed:?}"
        );
    }
    g.ack_event(STORE, "p-stream", &fwd[2]).await.expect("ack");
    let listed = g.get_subscriptions(STORE).await.expect("list");
    let p = listed
        .iter()
        .find(|i| i.name == "p-stream")
        .expect("p-stream");
    assert_eq!(p.start_from, 3);
    for s in &subs {
        g.remove_subscription(s).await.expect("remove");
    }
    let listed = g.get_subscriptions(STORE).await.expect("list");
    assert!(
        listed
            .iter()
            .all(|i| !subs.iter().any(|s| i.matches_subscription(s))),
        "{listed:?}"
    );

    // Health checks.
    for r in [
        g.quick_health_check(STORE).await,
        g.verify_cluster_consistency(STORE).await,
        g.verify_membership_consensus(STORE).await,
        g.check_raft_log_consistency(STORE).await,
    ] {
        let r = r.expect("health");
        assert!(r.to_json().is_object(), "{r:?}");
    }

    // A persistent subscription stream replays and then follows.
    let sub =
        Subscription::persistent(STORE, Selector::Stream("ops-1".into()), "follow").start_from(1);
    let mut s = bounded(g.subscribe(sub), 10).await.expect("subscribe");
    for want in 1..=4 {
        let r = bounded(s.next(), 10).await.expect("open").expect("event");
        assert_eq!(r.event_number, want);
    }
    g.append_events(STORE, "ops-1", vec![ev(5)])
        .await
        .expect("append");
    let r = bounded(s.next(), 10).await.expect("open").expect("event");
    assert_eq!(r.event_number, 5);

    let st = g.cluster_status();
    assert_eq!(
        st.nodes
            .iter()
            .filter(|n| n.connected && n.exesdb == Some(true))
            .count(),
        3
    );
    assert!(st.is_ready());
    let m = g.metrics();
    assert!(m.calls > 0 && m.events_delivered >= 5, "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_store_is_store_not_found_and_no_worker_crashes() {
    let tb = testbed("apinostore", 0);
    let g = gater(&tb).await;
    let names = || {
        let mut v = tb.worker_names(0).expect("names");
        v.sort();
        v
    };
    let before = names();
    for _ in 0..3 {
        assert!(matches!(
            g.get_streams("no_such_store").await,
            Err(GaterError::StoreNotFound { .. })
        ));
        assert!(matches!(
            g.append_events("no_such_store", "s", vec![ev(0)]).await,
            Err(GaterError::StoreNotFound { .. })
        ));
        assert!(matches!(
            g.get_events("no_such_store", "s", 0, 1, Direction::Forward)
                .await,
            Err(GaterError::StoreNotFound { .. })
        ));
        assert!(matches!(
            g.list_snapshots("no_such_store", None, None).await,
            Err(GaterError::StoreNotFound { .. })
        ));
        assert!(matches!(
            g.subscribe(Subscription::transient(
                "no_such_store",
                Selector::AllStreams
            ))
            .await,
            Err(GaterError::StoreNotFound { .. })
        ));
    }
    // Worker names change only when a worker restarts: none did.
    assert_eq!(before, names());
    // The known store still works.
    assert_eq!(g.get_version(STORE, "x").await.expect("version"), -1);
}
