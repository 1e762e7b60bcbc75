//! Fail-over: a node killed under load, workers appearing late, a subscription whose
//! emitter dies.

mod common;
use common::*;
use futures::StreamExt;
use gater_api::{
    Direction, ExpectedVersion, Gater, GaterError, NoWorkersBackoff, Selector, Subscription,
};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_under_mixed_load_loses_and_duplicates_no_acknowledged_append() {
    let tb = Arc::new(testbed("apikill", 0));
    let g = gater(&tb).await;
    let stop = Arc::new(AtomicBool::new(false));
    let read_ok = Arc::new(AtomicU64::new(0));
    let reads_after_kill = Arc::new(AtomicU64::new(0));
    let killed = Arc::new(AtomicBool::new(false));

    let writers: Vec<_> = (0..6)
        .map(|w| {
            let (g, stop) = (g.clone(), stop.clone());
            tokio::spawn(async move {
                let stream = format!("kill-{w}");
                let mut expected = ExpectedVersion::NoStream;
                let mut acked: Vec<(String, i64)> = Vec::new();
                let mut unknown = 0;
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let e = ev(i);
                    i += 1;
                    match g
                        .append_events_expected(STORE, &stream, expected, vec![e.clone()])
                        .await
                    {
                        Ok(v) => {
                            acked.push((e.event_id, v));
                            expected = ExpectedVersion::Exact(v);
                        }
                        Err(GaterError::WrongExpectedVersion { current }) => {
                            panic!("single writer rejected at {current} (expected {expected:?})")
                        }
                        Err(_) => {
                            // Outcome unknown: learn where the stream is and go on.
                            unknown += 1;
                            if let Ok(v) = g.get_version(STORE, &stream).await {
                                expected = if v < 0 {
                                    ExpectedVersion::NoStream
                                } else {
                                    ExpectedVersion::Exact(v)
                                };
                            }
                        }
                    }
                }
                (stream, acked, unknown)
            })
        })
        .collect();
    let readers: Vec<_> = (0..4)
        .map(|r| {
            let (g, stop, ok, after, killed) = (
                g.clone(),
                stop.clone(),
                read_ok.clone(),
                reads_after_kill.clone(),
                killed.clone(),
            );
            tokio::spawn(async move {
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match g
                        .get_events(STORE, &format!("kill-{r}"), 0, 20, Direction::Forward)
                        .await
                    {
                        Ok(_) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            if killed.load(Ordering::Relaxed) {
                                after.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(e) => failures.push(e.to_string()),
                    }
                }
                failures
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(3)).await; // load phase before the kill (not a sync point)
    let victim = tb.leader_index(STORE).expect("leader").expect("a leader");
    let dead = tb.node_name(victim).to_owned();
    let t0 = Instant::now();
    {
        let tb = tb.clone();
        tokio::task::spawn_blocking(move || tb.kill_node(victim))
            .await
            .expect("kill");
    }
    killed.store(true, Ordering::Relaxed);
    // The registry forgets the dead node's workers within a second.
    let forgotten = loop {
        if g.registry()
            .workers(&STORE.into())
            .iter()
            .all(|w| w.node != dead)
        {
            break t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "dead workers still listed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(
        forgotten < Duration::from_secs(1),
        "forgot after {forgotten:?}"
    );

    tokio::time::sleep(Duration::from_secs(7)).await; // load phase after the kill
    stop.store(true, Ordering::Relaxed);
    let mut acked_all: HashMap<String, (String, i64)> = HashMap::new();
    let mut unknown_total = 0;
    for w in writers {
        let (stream, acked, unknown) = bounded(w, 30).await.expect("writer");
        assert!(acked.len() > 10, "{stream}: only {} appends", acked.len());
        unknown_total += unknown;
        for (id, v) in acked {
            acked_all.insert(id, (stream.clone(), v));
        }
    }
    for r in readers {
        let failures = bounded(r, 30).await.expect("reader");
        assert!(failures.is_empty(), "reads failed: {failures:?}");
    }
    assert!(
        reads_after_kill.load(Ordering::Relaxed) > 10,
        "reads stopped after the kill"
    );

    // Every acknowledged append is in every survivor's log exactly once, at its version.
    let survivor = (victim + 1) % 3;
    let stored = tb.stored_events(survivor, STORE).expect("stored events");
    assert_eq!(tb.check_log(survivor, STORE).expect("check"), "ok");
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for e in &stored {
        *seen.entry(e.event_id.as_str()).or_default() += 1;
    }
    let by_id: HashMap<&str, (&str, i64)> = stored
        .iter()
        .map(|e| (e.event_id.as_str(), (e.stream.as_str(), e.number)))
        .collect();
    for (id, (stream, v)) in &acked_all {
        assert_eq!(
            seen.get(id.as_str()),
            Some(&1),
            "acked {id} stored {:?} times",
            seen.get(id.as_str())
        );
        assert_eq!(by_id.get(id.as_str()), Some(&(stream.as_str(), *v)));
    }
    let dups: HashSet<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "duplicates: {dups:?}");
    let m = g.metrics();
    eprintln!(
        "acked {} appends, {unknown_total} with unknown outcome; reads {}; metrics {m:?}",
        acked_all.len(),
        read_ok.load(Ordering::Relaxed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_back_off_while_no_worker_is_registered_and_go_through_when_workers_appear() {
    let tb = testbed("apinowork", 0);
    // Hide every worker from Swarm (the processes keep running).
    for i in 0..3 {
        tb.eval(
            i,
            "begin persistent_term:put(saved_workers, testbed_fault:workers(reg_gh)), testbed_fault:unregister_worker(reg_gh), ok end",
        )
        .expect("unregister");
    }
    let g = bounded(Gater::connect(config(&tb)), 20)
        .await
        .expect("connect");
    assert!(g.registry().workers(&STORE.into()).is_empty());

    // A short schedule gives up with NoWorkers.
    let mut short = config(&tb);
    short.no_workers = NoWorkersBackoff {
        base: Duration::from_millis(10),
        cap: Duration::from_millis(20),
        attempts: 3,
    };
    let quick = bounded(Gater::connect(short), 20).await.expect("connect");
    assert!(matches!(
        quick.get_version(STORE, "s").await,
        Err(GaterError::NoWorkers { .. })
    ));

    // The default schedule keeps waiting...
    let pending = {
        let g = g.clone();
        tokio::spawn(async move { g.append_events(STORE, "late", vec![ev(0)]).await })
    };
    eventually(10, || g.metrics().no_worker_waits >= 3).await;
    assert!(!pending.is_finished());
    // ...until the workers are back.
    for i in 0..3 {
        tb.eval(
            i,
            "begin [yes = 'Elixir.Swarm':register_name(N, P) || {N, P} <- persistent_term:get(saved_workers)], ok end",
        )
        .expect("register");
    }
    let v = bounded(pending, 20)
        .await
        .expect("task")
        .expect("append after workers appeared");
    assert_eq!(v, 0);
    assert_eq!(g.get_version(STORE, "late").await.expect("version"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_survives_the_death_of_its_emitting_node_without_gap_or_duplicate() {
    let tb = Arc::new(testbed("apisubkill", 0));
    let g = gater(&tb).await;
    let stream = "sub-kill";
    let total = 120usize;
    let mut sub = bounded(
        g.subscribe(Subscription::transient(
            STORE,
            Selector::Stream(stream.into()),
        )),
        15,
    )
    .await
    .expect("subscribe");
    // And a persistent one on every stream, acked as it goes.
    let mut all = bounded(
        g.subscribe(Subscription::persistent(
            STORE,
            Selector::AllStreams,
            "all-kill",
        )),
        15,
    )
    .await
    .expect("subscribe all");

    let writer = {
        let g = g.clone();
        tokio::spawn(async move {
            let mut expected = ExpectedVersion::NoStream;
            let mut i = 0;
            while i < total {
                match g
                    .append_events_expected(STORE, stream, expected, vec![ev(i)])
                    .await
                {
                    Ok(v) => {
                        expected = ExpectedVersion::Exact(v);
                        i = v as usize + 1;
                    }
                    Err(_) => {
                        if let Ok(v) = g.get_version(STORE, stream).await {
                            expected = if v < 0 {
                                ExpectedVersion::NoStream
                            } else {
                                ExpectedVersion::Exact(v)
                            };
                            i = (v + 1) as usize;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await; // pacing, not synchronisation
            }
        })
    };
    let mut got = Vec::new();
    let mut killed = false;
    while got.len() < total {
        let r = bounded(sub.next(), 20).await.expect("stream open");
        match r {
            Ok(r) => got.push(r.event_number),
            Err(e) => eprintln!("subscription reported: {e}"),
        }
        if !killed && got.len() == total / 3 {
            killed = true;
            let victim = tb.leader_index(STORE).expect("leader").expect("a leader");
            let tb = tb.clone();
            tokio::task::spawn_blocking(move || tb.kill_node(victim))
                .await
                .expect("kill");
        }
    }
    bounded(writer, 30).await.expect("writer");
    let want: Vec<i64> = (0..total as i64).collect();
    assert_eq!(got, want, "events out of order, missing or repeated");
    let mut got_all = Vec::new();
    while got_all.len() < total {
        match bounded(all.next(), 20).await.expect("stream open") {
            Ok(r) if r.stream_id == stream => got_all.push(r.event_number),
            Ok(_) => {}
            Err(e) => eprintln!("$all subscription reported: {e}"),
        }
    }
    assert_eq!(
        got_all, want,
        "$all: events out of order, missing or repeated"
    );
    let m = g.metrics();
    assert!(m.resubscribes >= 1, "{m:?}");
}
