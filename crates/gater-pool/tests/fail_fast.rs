//! Calls end at once when their target or its node goes away; the pool reconnects.

mod common;

use common::*;
use gater_pool::{CallError, ConnectError, NodeEvent, Pool, Target, Term};
use gater_testkit::erl::{Epmd, unique_name};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_killed_target_ends_its_calls_at_once_via_the_monitor() {
    let epmd = Epmd::start().expect("epmd");
    let node = echo_node(&epmd, "victim", &[]);
    let pool = connected_pool(&epmd, &node).await;
    let victim = match pool
        .rpc(node.name(), "gater_echo", "start", vec![atom("victim")], T)
        .await
        .expect("start victim")
    {
        Term::Pid(p) => p,
        other => panic!("not a pid: {other}"),
    };
    // Ten calls wait on a server that answers only after 30 s.
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let pool = pool.clone();
            let victim = victim.clone();
            tokio::spawn(async move {
                let req = tuple(vec![atom("sleep"), int(30_000), atom("never")]);
                pool.call(victim, req, Duration::from_secs(30)).await
            })
        })
        .collect();
    // Let the calls reach the server: a call on the same connection after them is ordered after them.
    pool.call(("echo", node.name()), atom("sync"), T)
        .await
        .expect("sync");
    let started = Instant::now();
    pool.rpc(
        node.name(),
        "erlang",
        "exit",
        vec![Term::from(victim.clone()), atom("kill")],
        T,
    )
    .await
    .expect("kill");
    for c in calls {
        let e = c.await.expect("task").expect_err("target died");
        match e {
            CallError::TargetDown { reason } => assert_eq!(reason, atom("killed")),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    // A call to the dead pid now fails with noproc, at once.
    let e = pool.call(victim, atom("x"), T).await.expect_err("noproc");
    assert!(e.is_noproc(), "{e:?}");
    assert_eq!(pool.metrics().in_flight, 0);
}

#[tokio::test]
async fn a_node_killed_mid_call_fails_calls_fast_and_the_pool_reconnects() {
    init_tracing();
    let epmd = Epmd::start().expect("epmd");
    let name = unique_name("phoenix");
    let mut node = echo_node_named(&epmd, &name, &[]);
    let full = node.name().to_owned();
    let pool = connected_pool(&epmd, &node).await;
    let mut events = pool.subscribe();
    let pending = {
        let pool = pool.clone();
        let full = full.clone();
        tokio::spawn(async move {
            let req = tuple(vec![atom("sleep"), int(30_000), atom("never")]);
            pool.call(("echo", full.as_str()), req, Duration::from_secs(30))
                .await
        })
    };
    pool.call(("echo", full.as_str()), atom("sync"), T)
        .await
        .expect("sync");
    let started = Instant::now();
    node.kill();
    let e = pending.await.expect("task").expect_err("node died");
    assert!(matches!(e, CallError::ConnectionLost { .. }), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    wait_event(&mut events, T, |e| matches!(e, NodeEvent::Down { .. })).await;
    let e = pool
        .call(("echo", full.as_str()), atom("x"), T)
        .await
        .expect_err("down");
    assert!(matches!(e, CallError::NotConnected { .. }), "{e:?}");

    // The same node name comes back: the pool reconnects on its own.
    let _node = echo_node_named(&epmd, &name, &[]);
    wait_event(&mut events, Duration::from_secs(15), |e| {
        matches!(e, NodeEvent::Up { .. })
    })
    .await;
    assert_eq!(
        pool.call(("echo", full.as_str()), atom("back"), T)
            .await
            .expect("call"),
        atom("back")
    );
    let m = pool.metrics();
    assert_eq!(m.reconnects, 1, "{m:?}");
}

#[tokio::test]
async fn connect_errors_are_typed() {
    let epmd = Epmd::start().expect("epmd");
    let node = echo_node(&epmd, "cookie", &[]);

    let wrong = Pool::new(config(&epmd).backoff(Duration::from_secs(5), Duration::from_secs(5)));
    let mut cfg = config(&epmd);
    cfg.cookie = "not_the_cookie".into();
    let wrong_cookie = Pool::new(cfg.backoff(Duration::from_secs(5), Duration::from_secs(5)));
    let e = wrong_cookie
        .connect(node.name())
        .await
        .expect_err("wrong cookie");
    assert!(matches!(e, ConnectError::WrongCookie { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "peer {} rejected the handshake: check the cookie",
            node.name()
        )
    );

    let e = wrong
        .connect("nobody@127.0.0.1")
        .await
        .expect_err("unknown");
    assert!(matches!(e, ConnectError::UnknownNode { .. }), "{e:?}");

    let e = wrong.connect("no_at_sign").await.expect_err("invalid");
    assert!(matches!(e, ConnectError::InvalidNodeName(_)), "{e:?}");

    let port = gater_testkit::erl::free_tcp_port();
    let no_epmd = Pool::new(config(&epmd).epmd_port(port));
    let e = no_epmd.connect(node.name()).await.expect_err("epmd down");
    assert!(matches!(e, ConnectError::EpmdUnreachable { .. }), "{e:?}");
    assert_eq!(no_epmd.metrics().connect_failures, 1);
}

#[tokio::test]
async fn idle_longer_than_net_ticktime_stays_connected() {
    let epmd = Epmd::start().expect("epmd");
    let node = echo_node(&epmd, "ticks", &["-kernel", "net_ticktime", "4"]);
    let pool = Pool::new(config(&epmd).net_ticktime(Duration::from_secs(4)));
    pool.connect(node.name()).await.expect("connects");
    let mut events = pool.subscribe();
    // Idle for more than twice the peer's net_ticktime: no Down may arrive.
    let down = tokio::time::timeout(Duration::from_secs(9), async {
        loop {
            if let Ok(NodeEvent::Down { reason, .. }) = events.recv().await {
                return reason;
            }
        }
    })
    .await;
    assert!(down.is_err(), "connection dropped while idle: {down:?}");
    assert_eq!(
        pool.call(Target::name("echo", node.name()), atom("alive"), T)
            .await
            .expect("call"),
        atom("alive")
    );
    let m = pool.metrics();
    assert!(m.frames_in >= 4, "peer ticks seen: {m:?}");
    assert_eq!(m.connects, 1);
}

#[tokio::test]
async fn an_oversize_frame_closes_only_that_connection() {
    init_tracing();
    let epmd = Epmd::start().expect("epmd");
    let big = echo_node(&epmd, "oversize", &[]);
    let other = echo_node(&epmd, "bystander", &[]);
    let pool = Pool::new(
        config(&epmd)
            .max_frame_len(64 * 1024)
            .backoff(Duration::from_secs(5), Duration::from_secs(5)),
    );
    pool.connect(big.name()).await.expect("connects");
    pool.connect(other.name()).await.expect("connects");
    let mut events = pool.subscribe();
    let inbox = pool.mailbox(big.name()).expect("mailbox");
    let pending = {
        let pool = pool.clone();
        let name = big.name().to_owned();
        tokio::spawn(async move {
            let req = tuple(vec![atom("sleep"), int(30_000), atom("never")]);
            pool.call(("echo", name.as_str()), req, Duration::from_secs(30))
                .await
        })
    };
    pool.call(("echo", big.name()), atom("sync"), T)
        .await
        .expect("sync");
    // The node sends 1 MiB to our mailbox: above the 64 KiB cap.
    let blob = tuple(vec![
        atom("blob"),
        Term::from(inbox.pid().clone()),
        int(1 << 20),
    ]);
    pool.cast(("echo", big.name()), blob).await.expect("cast");
    let e = pending.await.expect("task").expect_err("connection closed");
    assert!(matches!(e, CallError::ConnectionLost { .. }), "{e:?}");
    let down = wait_event(&mut events, T, |e| matches!(e, NodeEvent::Down { .. })).await;
    let NodeEvent::Down { node, reason } = down else {
        unreachable!()
    };
    assert_eq!(node, big.name());
    assert!(reason.contains("above the cap"), "{reason}");
    assert_eq!(pool.metrics().oversize_frames, 1);
    assert_eq!(
        pool.call(("echo", other.name()), atom("fine"), T)
            .await
            .expect("other peer"),
        atom("fine")
    );
}

#[tokio::test]
async fn an_unreachable_peer_is_retried_with_growing_delays_until_disconnected() {
    let epmd = Epmd::start().expect("epmd");
    let pool =
        Pool::new(config(&epmd).backoff(Duration::from_millis(40), Duration::from_millis(400)));
    let mut events = pool.subscribe();
    let ghost = "ghost@127.0.0.1";
    let e = pool.connect(ghost).await.expect_err("nobody there");
    assert!(matches!(e, ConnectError::UnknownNode { .. }), "{e:?}");
    // Five more failures, each once, each later than the one before by a growing delay.
    let mut at = vec![Instant::now()];
    for _ in 0..5 {
        wait_event(
            &mut events,
            Duration::from_secs(5),
            |e| matches!(e, NodeEvent::ConnectFailed { node, .. } if node == ghost),
        )
        .await;
        at.push(Instant::now());
    }
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps[3] > gaps[0] && gaps[4] >= Duration::from_millis(200),
        "{gaps:?}"
    );
    assert!(pool.metrics().connect_failures <= 7, "{:?}", pool.metrics());
    pool.disconnect(ghost);
    let after = pool.metrics().connect_failures;
    // Stopped: no attempt within more than the largest back-off.
    let more = tokio::time::timeout(Duration::from_millis(900), async {
        loop {
            if let Ok(NodeEvent::ConnectFailed { .. }) = events.recv().await {
                return;
            }
        }
    })
    .await;
    assert!(more.is_err(), "an attempt after disconnect");
    assert_eq!(pool.metrics().connect_failures, after);
}
