//! What peers ask of us: rex (Swarm's which_applications), monitors and messages to our pids.

mod common;

use common::*;
use gater_pool::{CallError, Term};
use gater_testkit::erl::Epmd;
use std::time::Duration;

const T: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_peer_rpc_to_us_for_which_applications_gets_a_list() {
    let epmd = Epmd::start().expect("epmd");
    let node = echo_node(&epmd, "swarmish", &[]);
    let pool = connected_pool(&epmd, &node).await;
    let us = atom(pool.node_name());
    let nil = || Term::from(gater_pool::eetf::List::nil());
    // The peer runs rpc:call(Us, application, which_applications, []), as Swarm's tracker does.
    let r = pool
        .rpc(
            node.name(),
            "rpc",
            "call",
            vec![
                us.clone(),
                atom("application"),
                atom("which_applications"),
                nil(),
            ],
            T,
        )
        .await
        .expect("nested rpc");
    assert_eq!(r, nil());
    // gen_server:call to our rex uses an alias tag on OTP 24+: answered through ALIAS_SEND.
    let req = tuple(vec![
        atom("call"),
        atom("application"),
        atom("which_applications"),
        nil(),
        atom("user"),
    ]);
    let r = pool
        .rpc(
            node.name(),
            "gen_server",
            "call",
            vec![tuple(vec![atom("rex"), us.clone()]), req],
            T,
        )
        .await
        .expect("gen_server call to our rex");
    assert_eq!(r, nil());
    // Any other rpc to us is a badrpc, not silence.
    let e = pool
        .rpc(
            node.name(),
            "rpc",
            "call",
            vec![us, atom("erlang"), atom("node"), nil()],
            T,
        )
        .await
        .expect_err("badrpc");
    assert!(matches!(e, CallError::BadRpc { .. }), "{e:?}");
    // net_adm:ping(Us) from the peer: our net_kernel answers is_auth.
    let pong = pool
        .rpc(
            node.name(),
            "net_adm",
            "ping",
            vec![atom(pool.node_name())],
            T,
        )
        .await;
    assert_eq!(pong.expect("ping"), atom("pong"));
    assert!(pool.metrics().served_requests >= 3);
}

#[tokio::test]
async fn mailboxes_receive_messages_and_their_drop_fires_peer_monitors() {
    let epmd = Epmd::start().expect("epmd");
    let node = echo_node(&epmd, "mailbox", &[]);
    let pool = connected_pool(&epmd, &node).await;
    let echo = ("echo", node.name());
    let mut a = pool.mailbox(node.name()).expect("a");
    let mut reports = pool.mailbox(node.name()).expect("reports");

    pool.cast(
        echo,
        tuple(vec![
            atom("send_to"),
            Term::from(a.pid().clone()),
            atom("hello"),
        ]),
    )
    .await
    .expect("cast");
    let got = tokio::time::timeout(T, a.recv()).await.expect("in time");
    assert_eq!(got, Some(atom("hello")));

    // A peer process monitors `a`; dropping `a` tells it `normal`.
    let watch = tuple(vec![
        atom("watch"),
        Term::from(a.pid().clone()),
        Term::from(reports.pid().clone()),
    ]);
    pool.cast(echo, watch).await.expect("watch");
    let w = tokio::time::timeout(T, reports.recv())
        .await
        .expect("in time")
        .expect("open");
    assert!(
        matches!(&w, Term::Tuple(t) if t.elements[0] == atom("watching")),
        "{w}"
    );
    let a_pid = a.pid().clone();
    drop(a);
    let down = tokio::time::timeout(T, reports.recv())
        .await
        .expect("in time");
    assert_eq!(down, Some(tuple(vec![atom("down"), atom("normal")])));

    // Monitoring a pid we no longer have answers noproc at once.
    pool.cast(
        echo,
        tuple(vec![
            atom("watch"),
            Term::from(a_pid),
            Term::from(reports.pid().clone()),
        ]),
    )
    .await
    .expect("watch");
    let _watching = tokio::time::timeout(T, reports.recv())
        .await
        .expect("in time");
    let down = tokio::time::timeout(T, reports.recv())
        .await
        .expect("in time");
    assert_eq!(down, Some(tuple(vec![atom("down"), atom("noproc")])));
}

#[tokio::test]
async fn a_named_mailbox_receives_messages_sent_to_its_name() {
    let epmd = Epmd::start().expect("epmd");
    let node = echo_node(&epmd, "named", &[]);
    let pool = connected_pool(&epmd, &node).await;
    let mut inbox = pool
        .named_mailbox(node.name(), "gater_inbox")
        .await
        .expect("named");
    let taken = pool.named_mailbox(node.name(), "gater_inbox").await;
    assert!(
        matches!(taken, Err(CallError::InvalidTarget(_))),
        "{taken:?}"
    );
    let dest = tuple(vec![atom("gater_inbox"), atom(pool.node_name())]);
    pool.cast(
        ("echo", node.name()),
        tuple(vec![atom("send_to"), dest, atom("by_name")]),
    )
    .await
    .expect("cast");
    let got = tokio::time::timeout(T, inbox.recv())
        .await
        .expect("in time");
    assert_eq!(got, Some(atom("by_name")));
}
