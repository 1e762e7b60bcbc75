//! Calls, casts and rpc against a real Erlang node.

mod common;

use common::*;
use gater_pool::{CallError, Pool, Target, Term};
use gater_testkit::erl::Epmd;
use std::time::Duration;

const T: Duration = Duration::from_secs(5);

#[tokio::test]
async fn call_cast_and_rpc_reach_a_real_gen_server() {
    init_tracing();
    let epmd = Epmd::start().expect("epmd");
    let node = echo_node(&epmd, "calls", &[]);
    let pool = connected_pool(&epmd, &node).await;
    let echo = Target::name("echo", node.name());

    let reply = pool
        .call(echo.clone(), tuple(vec![atom("hello"), int(42)]), T)
        .await
        .expect("call");
    assert_eq!(reply, tuple(vec![atom("hello"), int(42)]));

    pool.cast(echo.clone(), tuple(vec![atom("store"), atom("kept")]))
        .await
        .expect("cast");
    assert_eq!(
        pool.call(echo.clone(), atom("get"), T).await.expect("get"),
        atom("kept")
    );

    let n = pool
        .rpc(node.name(), "erlang", "node", vec![], T)
        .await
        .expect("rpc");
    assert_eq!(n, atom(node.name()));
    let sum = pool
        .rpc(
            node.name(),
            "lists",
            "sum",
            vec![Term::from(gater_pool::eetf::List::from(vec![
                int(1),
                int(2),
            ]))],
            T,
        )
        .await;
    assert_eq!(sum.expect("rpc sum"), int(3));

    // By pid, found through rpc.
    let pid = match pool
        .rpc(node.name(), "erlang", "whereis", vec![atom("echo")], T)
        .await
        .expect("whereis")
    {
        Term::Pid(p) => p,
        other => panic!("not a pid: {other}"),
    };
    assert_eq!(
        pool.call(pid, atom("ping"), T).await.expect("by pid"),
        atom("ping")
    );

    let m = pool.metrics();
    assert!(m.calls >= 5 && m.casts >= 1 && m.in_flight == 0, "{m:?}");
    assert!(m.frames_out > 0 && m.bytes_in > 0);
}

#[tokio::test]
async fn badrpc_and_unknown_names_are_typed_errors() {
    let epmd = Epmd::start().expect("epmd");
    let node = echo_node(&epmd, "badrpc", &[]);
    let pool = connected_pool(&epmd, &node).await;

    let e = pool
        .rpc(node.name(), "no_such_module", "f", vec![], T)
        .await
        .expect_err("badrpc");
    assert!(matches!(e, CallError::BadRpc { .. }), "{e:?}");

    // A registered name that does not exist: the name monitor fires at once (noproc).
    let started = std::time::Instant::now();
    let e = pool
        .call(("nobody_here", node.name()), atom("x"), T)
        .await
        .expect_err("noproc");
    assert!(e.is_noproc(), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(2));

    let e = pool
        .call(("echo", "not_connected@127.0.0.1"), atom("x"), T)
        .await
        .expect_err("not connected");
    assert!(matches!(e, CallError::NotConnected { .. }));
    assert_eq!(pool.metrics().errors.not_connected, 1);
}

#[tokio::test]
async fn a_call_without_reply_times_out_and_its_late_reply_is_dropped() {
    let epmd = Epmd::start().expect("epmd");
    let node = echo_node(&epmd, "timeout", &[]);
    let pool = connected_pool(&epmd, &node).await;
    let echo = Target::name("echo", node.name());
    let req = tuple(vec![atom("sleep"), int(300), atom("late")]);
    let e = pool
        .call(echo.clone(), req, Duration::from_millis(100))
        .await
        .expect_err("times out");
    assert!(matches!(e, CallError::Timeout), "{e:?}");
    // The late reply arrives and is dropped; the connection still works.
    let dropped_before = pool.metrics().dropped_messages;
    tokio::time::timeout(Duration::from_secs(3), async {
        while pool.metrics().dropped_messages == dropped_before {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("late reply seen and dropped");
    assert_eq!(
        pool.call(echo, atom("after"), T).await.expect("call"),
        atom("after")
    );
    let m = pool.metrics();
    assert_eq!(m.in_flight, 0);
    assert_eq!(m.errors.timeout, 1);
}

#[tokio::test]
async fn ten_thousand_concurrent_calls_on_one_connection() {
    let epmd = Epmd::start().expect("epmd");
    let node = echo_node(&epmd, "many", &[]);
    let pool: Pool = connected_pool(&epmd, &node).await;
    let name = node.name().to_owned();
    let calls = (0..10_000).map(|i| {
        let pool = pool.clone();
        let name = name.clone();
        async move {
            (
                i,
                pool.call(("echo", name.as_str()), int(i), Duration::from_secs(30))
                    .await,
            )
        }
    });
    let results = futures::future::join_all(calls).await;
    for (i, r) in results {
        assert_eq!(r.expect("reply"), int(i));
    }
    let m = pool.metrics();
    assert_eq!(m.in_flight, 0);
    assert_eq!(m.calls, 10_000);
}

#[tokio::test]
async fn a_reply_over_the_decoding_limits_fails_only_its_call() {
    let epmd = Epmd::start().expect("epmd");
    let node = echo_node(&epmd, "limits", &[]);
    let mut cfg = config(&epmd);
    cfg.decode_limits.max_elements = 100;
    let pool = Pool::new(cfg);
    pool.connect(node.name()).await.expect("connects");
    let echo = Target::name("echo", node.name());
    let big = Term::from(gater_pool::eetf::List::from(
        (0..1000).map(int).collect::<Vec<_>>(),
    ));
    let e = pool
        .call(echo.clone(), big, T)
        .await
        .expect_err("over the limits");
    assert!(matches!(e, CallError::BadReply { .. }), "{e:?}");
    assert_eq!(
        pool.call(echo, atom("still_up"), T).await.expect("call"),
        atom("still_up")
    );
    let m = pool.metrics();
    assert_eq!((m.errors.bad_reply, m.connects), (1, 1));
}
