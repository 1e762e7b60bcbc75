//! The leak gauges (`local_pids`, `peer_monitors`, `own_monitors`, `in_flight`) come back
//! to their baseline after calls, mailboxes, peers' monitors and a node going down.

mod common;

use common::*;
use gater_pool::eetf::Pid;
use gater_pool::{CallError, Mailbox, MetricsSnapshot, NodeEvent, Pool, Term};
use gater_testkit::erl::Epmd;
use std::time::Duration;

const T: Duration = Duration::from_secs(5);

/// (local_pids, peer_monitors, own_monitors, in_flight)
fn gauges(m: MetricsSnapshot) -> (u64, u64, u64, u64) {
    (m.local_pids, m.peer_monitors, m.own_monitors, m.in_flight)
}

async fn next(inbox: &mut Mailbox) -> Term {
    tokio::time::timeout(T, inbox.recv())
        .await
        .expect("message in time")
        .expect("mailbox open")
}

/// A peer process starts monitoring `target`; returns the holder's pid once it does.
async fn hold(pool: &Pool, node: &str, target: Term, reports: &mut Mailbox) -> Pid {
    let req = tuple(vec![
        atom("hold"),
        target,
        Term::from(reports.pid().clone()),
    ]);
    pool.cast(("echo", node), req).await.expect("cast");
    match next(reports).await {
        Term::Tuple(t) if t.elements[0] == atom("holding") => match &t.elements[2] {
            Term::Pid(p) => p.clone(),
            other => panic!("not a pid: {other}"),
        },
        other => panic!("unexpected {other}"),
    }
}

#[tokio::test]
async fn leak_gauges_return_to_their_baseline() {
    let epmd = Epmd::start().expect("epmd");
    let node = echo_node(&epmd, "leaks", &[]);
    let name = node.name().to_owned();
    // Monitors end with their last call here (the default); lingering ones are the next
    // test's.
    let pool = Pool::new(config(&epmd).monitor_linger(Duration::ZERO));
    pool.connect(&name).await.expect("connects");
    let mut events = pool.subscribe();
    let base = gauges(pool.metrics());
    assert_eq!(base, (0, 0, 0, 0));

    // Calls by name and by pid, concurrent, then done: nothing held.
    let echo_pid = match pool
        .rpc(&name, "erlang", "whereis", vec![atom("echo")], T)
        .await
        .expect("whereis")
    {
        Term::Pid(p) => p,
        other => panic!("not a pid: {other}"),
    };
    let calls: Vec<_> = (0..200)
        .map(|i| {
            let pool = pool.clone();
            let (name, pid) = (name.clone(), echo_pid.clone());
            tokio::spawn(async move {
                if i % 2 == 0 {
                    pool.call(("echo", name.as_str()), int(i), T).await
                } else {
                    pool.call(pid, int(i), T).await
                }
            })
        })
        .collect();
    for c in calls {
        c.await.expect("task").expect("call");
    }
    assert_eq!(gauges(pool.metrics()), base, "after calls");

    // A call that times out, and calls whose target is killed.
    let slow = tuple(vec![atom("sleep"), int(30_000), atom("late")]);
    let e = pool
        .call(
            ("echo", name.as_str()),
            slow.clone(),
            Duration::from_millis(100),
        )
        .await
        .expect_err("times out");
    assert!(matches!(e, CallError::Timeout), "{e:?}");
    assert_eq!(gauges(pool.metrics()), base, "after a time-out");
    let victim = pool
        .rpc(&name, "gater_echo", "start", vec![atom("victim")], T)
        .await
        .expect("victim");
    let doomed: Vec<_> = (0..5)
        .map(|_| {
            let (pool, victim, slow) = (pool.clone(), victim.clone(), slow.clone());
            tokio::spawn(async move {
                let Term::Pid(victim) = victim else {
                    panic!("pid")
                };
                pool.call(victim, slow, Duration::from_secs(30)).await
            })
        })
        .collect();
    // Ordered after the doomed calls on the same connection.
    pool.call(("echo", name.as_str()), atom("sync"), T)
        .await
        .expect("sync");
    pool.rpc(&name, "erlang", "exit", vec![victim, atom("kill")], T)
        .await
        .expect("kill");
    for c in doomed {
        let e = c.await.expect("task").expect_err("target died");
        assert!(matches!(e, CallError::TargetDown { .. }), "{e:?}");
    }
    assert_eq!(gauges(pool.metrics()), base, "after a killed target");

    // Mailboxes (one named) and peer processes monitoring them.
    let a = pool.mailbox(&name).expect("a");
    let mut reports = pool.mailbox(&name).expect("reports");
    // Opens are handled in order: once the name is registered, all three exist.
    let named = pool.named_mailbox(&name, "inbox").await.expect("named");
    assert_eq!(gauges(pool.metrics()), (3, 0, 0, 0));
    let us = atom(pool.node_name());
    let holder_a = hold(&pool, &name, Term::from(a.pid().clone()), &mut reports).await;
    let by_name = tuple(vec![atom("inbox"), us.clone()]);
    let _holder_n = hold(&pool, &name, by_name, &mut reports).await;
    assert_eq!(gauges(pool.metrics()), (3, 2, 0, 0));
    // The peer lets go of `a` (DEMONITOR_P arrives before its report).
    pool.send(holder_a, atom("let_go")).await.expect("send");
    let r = next(&mut reports).await;
    assert!(
        matches!(&r, Term::Tuple(t) if t.elements[0] == atom("let_go")),
        "{r}"
    );
    assert_eq!(gauges(pool.metrics()), (3, 1, 0, 0));
    // Dropping the named mailbox fires its watcher's monitor and frees pid and name.
    drop(named);
    assert_eq!(
        next(&mut reports).await,
        tuple(vec![atom("down"), atom("normal")])
    );
    assert_eq!(gauges(pool.metrics()), (2, 0, 0, 0));
    // Dropping `a` frees it; a peer that then monitors its pid is told at once (noproc),
    // or when the close is handled (normal): either way the close is done after that.
    let a_pid = a.pid().clone();
    drop(a);
    let _ = hold(&pool, &name, Term::from(a_pid), &mut reports).await;
    let r = next(&mut reports).await;
    assert!(
        matches!(&r, Term::Tuple(t) if t.elements[0] == atom("down")),
        "{r}"
    );
    assert_eq!(gauges(pool.metrics()), (1, 0, 0, 0));
    // The peer calls our rex (it monitors rex during the call, then lets go).
    let req = tuple(vec![
        atom("call"),
        atom("application"),
        atom("which_applications"),
        Term::from(gater_pool::eetf::List::nil()),
        atom("user"),
    ]);
    pool.rpc(
        &name,
        "gen_server",
        "call",
        vec![tuple(vec![atom("rex"), us]), req],
        T,
    )
    .await
    .expect("rex call");
    assert_eq!(gauges(pool.metrics()), (1, 0, 0, 0));

    // The node dies while a call is in flight, a mailbox is open and monitored.
    let watched = pool.mailbox(&name).expect("watched");
    let _h = hold(
        &pool,
        &name,
        Term::from(watched.pid().clone()),
        &mut reports,
    )
    .await;
    let pending = {
        let (pool, name, slow) = (pool.clone(), name.clone(), slow.clone());
        tokio::spawn(async move { pool.call(("echo", name.as_str()), slow, T).await })
    };
    pool.call(("echo", name.as_str()), atom("sync"), T)
        .await
        .expect("sync");
    assert_eq!(gauges(pool.metrics()), (2, 1, 1, 1));
    let mut node = node;
    node.kill();
    let e = pending.await.expect("task").expect_err("node died");
    assert!(matches!(e, CallError::ConnectionLost { .. }), "{e:?}");
    wait_event(&mut events, T, |e| matches!(e, NodeEvent::Down { .. })).await;
    assert_eq!(gauges(pool.metrics()), base, "after the node went down");
    drop((watched, reports));
    assert_eq!(gauges(pool.metrics()), base);
}

#[tokio::test]
async fn lingering_monitors_are_counted_and_dropped_with_their_target_or_node() {
    let epmd = Epmd::start().expect("epmd");
    let mut node = echo_node(&epmd, "linger", &[]);
    let name = node.name().to_owned();
    let pool = Pool::new(config(&epmd).monitor_linger(Duration::from_secs(5)));
    pool.connect(&name).await.expect("connects");
    let mut events = pool.subscribe();
    let victim = match pool
        .rpc(&name, "gater_echo", "start", vec![atom("victim")], T)
        .await
        .expect("victim")
    {
        Term::Pid(p) => p,
        other => panic!("not a pid: {other}"),
    };
    for i in 0..3 {
        pool.call(victim.clone(), int(i), T).await.expect("call");
    }
    // One monitor, kept after its calls (rpcs to rex set none).
    assert_eq!(gauges(pool.metrics()), (0, 0, 1, 0));
    pool.call(("echo", name.as_str()), atom("x"), T)
        .await
        .expect("call");
    assert_eq!(gauges(pool.metrics()), (0, 0, 2, 0));
    // The target dies: the next call to it fails at once (through the lingering monitor
    // or a new one answered noproc), and its monitor is gone.
    pool.rpc(
        &name,
        "erlang",
        "exit",
        vec![Term::from(victim.clone()), atom("kill")],
        T,
    )
    .await
    .expect("kill");
    let e = pool.call(victim, atom("x"), T).await.expect_err("dead");
    assert!(matches!(e, CallError::TargetDown { .. }), "{e:?}");
    assert_eq!(gauges(pool.metrics()), (0, 0, 1, 0));
    // The node goes down: nothing is held.
    node.kill();
    wait_event(&mut events, T, |e| matches!(e, NodeEvent::Down { .. })).await;
    assert_eq!(gauges(pool.metrics()), (0, 0, 0, 0));
}
