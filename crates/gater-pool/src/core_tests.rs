//! The protocol core without sockets: a virtual clock and frames in, bytes out.

use crate::CallError;
use crate::core::{CloseReason, Command, Core, CoreConfig, Local, MonitorKey, Reply, ReplyTx};
use crate::metrics::Metrics;
use crate::wire::{self, atom, int, nil, tuple};
use eetf::{ImproperList, Pid, Term};
use gater_term::DecodeLimits;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

const US: &str = "gater@127.0.0.1";
const PEER: &str = "peer@127.0.0.1";

struct Harness {
    core: Core,
    local: Arc<Local>,
    metrics: Arc<Metrics>,
    now: Instant,
}

impl Harness {
    fn new() -> Self {
        Self::with_linger(Duration::ZERO)
    }

    fn with_linger(monitor_linger: Duration) -> Self {
        let local = Arc::new(Local::new(US, 1234, PEER));
        let metrics = Arc::new(Metrics::default());
        let now = Instant::now();
        let config = CoreConfig {
            limits: DecodeLimits::default(),
            net_ticktime: Duration::from_secs(8),
            monitor_linger,
        };
        let core = Core::new(local.clone(), config, metrics.clone(), now);
        Self {
            core,
            local,
            metrics,
            now,
        }
    }

    /// Frames written since the last call: (control, message).
    fn sent(&mut self) -> Vec<(Term, Option<Term>)> {
        let bytes = self.core.output().to_vec();
        self.core.consume_output(bytes.len());
        let mut out = Vec::new();
        let mut rest = &bytes[..];
        let limits = DecodeLimits::default();
        while rest.len() >= 4 {
            let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let frame = &rest[4..4 + len];
            rest = &rest[4 + len..];
            if len == 0 {
                out.push((atom("tick"), None));
                continue;
            }
            assert_eq!(frame[0], wire::PASS_THROUGH);
            let (c, used) = gater_term::decode_prefix(&frame[1..], &limits).expect("control");
            let m = (used + 1 < frame.len())
                .then(|| gater_term::decode(&frame[1 + used..], &limits).expect("message"));
            out.push((c, m));
        }
        out
    }

    fn receive(&mut self, control: Term, message: Option<Term>) -> Result<(), CloseReason> {
        let mut buf = Vec::new();
        wire::push_frame(&mut buf, &control, message.as_ref());
        self.core.handle_frame(&buf[4..], self.now)
    }

    fn call(
        &mut self,
        target: &Pid,
        timeout: Duration,
    ) -> (u64, oneshot::Receiver<Result<Reply, CallError>>) {
        let key = self.local.next_ref_key();
        let (tx, rx): (ReplyTx, _) = oneshot::channel();
        self.core.handle_command(
            Command::Call {
                key,
                monitor: Some(MonitorKey::of_pid(target)),
                frame: Vec::new(),
                deadline: self.now + timeout,
                reply: tx,
            },
            self.now,
        );
        (key, rx)
    }

    fn reply(&mut self, key: u64, value: Term) {
        let to = Term::from(self.local.caller.clone());
        let msg = tuple(vec![Term::from(self.local.reference(key)), value]);
        self.receive(tuple(vec![int(wire::SEND), atom(""), to]), Some(msg))
            .expect("frame");
    }
}

/// The reply term of a call's answer.
fn answered(r: &mut oneshot::Receiver<Result<Reply, CallError>>) -> Term {
    match r.try_recv().expect("answered").expect("ok") {
        Reply::Decoded(t) => t,
        Reply::Encoded(b) => gater_term::decode(&b, &DecodeLimits::default()).expect("decodes"),
    }
}

fn peer_pid(n: u32) -> Pid {
    Pid::new(PEER, n, 0, 99)
}

fn op(t: &Term) -> i32 {
    match t {
        Term::Tuple(t) => wire::as_int(&t.elements[0]).unwrap_or(-1) as i32,
        _ => -1,
    }
}

fn el(t: &Term, i: usize) -> Term {
    match t {
        Term::Tuple(t) => t.elements[i].clone(),
        _ => panic!("not a tuple: {t}"),
    }
}

#[test]
fn replies_are_routed_by_reference_and_one_monitor_serves_all_calls_to_a_target() {
    let mut h = Harness::new();
    let server = peer_pid(5);
    let (k1, mut r1) = h.call(&server, Duration::from_secs(5));
    let (k2, mut r2) = h.call(&server, Duration::from_secs(5));
    let sent = h.sent();
    assert_eq!(
        sent.iter()
            .filter(|(c, _)| op(c) == wire::MONITOR_P)
            .count(),
        1
    );
    assert_eq!(h.core.monitors_held(), 1);

    h.reply(k2, atom("two"));
    assert_eq!(answered(&mut r2), atom("two"));
    assert!(
        h.sent().is_empty(),
        "no demonitor while a call is in flight"
    );
    h.reply(k1, atom("one"));
    assert_eq!(answered(&mut r1), atom("one"));
    let sent = h.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(op(&sent[0].0), wire::DEMONITOR_P);
    assert_eq!(h.core.monitors_held(), 0);
    assert_eq!(h.core.calls_in_flight(), 0);
}

#[test]
fn a_time_out_ends_the_call_and_its_late_reply_is_dropped() {
    let mut h = Harness::new();
    let (k, mut r) = h.call(&peer_pid(5), Duration::from_millis(100));
    h.sent();
    assert_eq!(h.core.poll_timeout(), h.now + Duration::from_millis(100));
    h.now += Duration::from_millis(100);
    h.core.handle_timeout(h.now).expect("alive");
    assert!(matches!(r.try_recv(), Ok(Err(CallError::Timeout))));
    assert!(h.sent().iter().any(|(c, _)| op(c) == wire::DEMONITOR_P));
    h.reply(k, atom("late"));
    assert_eq!(h.core.calls_in_flight(), 0);
    let m = h.metrics.snapshot();
    assert_eq!(
        (m.dropped_messages, m.errors.timeout, m.in_flight),
        (1, 1, 0)
    );
}

#[test]
fn a_fired_monitor_ends_only_the_calls_to_its_target() {
    let mut h = Harness::new();
    let (dead, live) = (peer_pid(5), peer_pid(6));
    let (_, mut r1) = h.call(&dead, Duration::from_secs(5));
    let (_, mut r2) = h.call(&dead, Duration::from_secs(5));
    let (_, mut r3) = h.call(&live, Duration::from_secs(5));
    let monitor_ref = h
        .sent()
        .into_iter()
        .find(|(c, _)| op(c) == wire::MONITOR_P && el(c, 2) == Term::from(dead.clone()))
        .map(|(c, _)| el(&c, 3))
        .expect("monitor");
    let exit = tuple(vec![
        int(wire::MONITOR_P_EXIT),
        Term::from(dead.clone()),
        Term::from(h.local.caller.clone()),
        monitor_ref,
        atom("killed"),
    ]);
    h.receive(exit, None).expect("frame");
    for r in [&mut r1, &mut r2] {
        match r.try_recv() {
            Ok(Err(CallError::TargetDown { reason })) => assert_eq!(reason, atom("killed")),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        r3.try_recv().is_err(),
        "the other target's call is still waiting"
    );
    assert!(h.sent().iter().all(|(c, _)| op(c) != wire::DEMONITOR_P));
    assert_eq!(h.core.calls_in_flight(), 1);
}

#[test]
fn a_monitor_on_a_pid_we_do_not_have_fires_noproc_at_once() {
    let mut h = Harness::new();
    let watcher = Term::from(peer_pid(7));
    let ghost = Term::from(h.local.pid(4242));
    let r = Term::from(eetf::Reference {
        node: PEER.into(),
        id: vec![1, 2, 3],
        creation: 99,
    });
    h.receive(
        tuple(vec![
            int(wire::MONITOR_P),
            watcher.clone(),
            ghost.clone(),
            r.clone(),
        ]),
        None,
    )
    .expect("frame");
    let sent = h.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].0,
        tuple(vec![
            int(wire::MONITOR_P_EXIT),
            ghost,
            watcher,
            r,
            atom("noproc")
        ])
    );
}

#[test]
fn rex_answers_which_applications_at_the_alias_or_the_pid() {
    let mut h = Harness::new();
    let caller = peer_pid(8);
    let mref = Term::from(eetf::Reference {
        node: PEER.into(),
        id: vec![9, 9, 9],
        creation: 99,
    });
    let alias_tag = Term::from(ImproperList::from((vec![atom("alias")], mref.clone())));
    for (tag, expect_op) in [(alias_tag, wire::ALIAS_SEND), (mref.clone(), wire::SEND)] {
        let from = tuple(vec![Term::from(caller.clone()), tag.clone()]);
        let req = tuple(vec![
            atom("call"),
            atom("application"),
            atom("which_applications"),
            nil(),
            atom("gl"),
        ]);
        let msg = tuple(vec![atom("$gen_call"), from, req]);
        let control = tuple(vec![
            int(wire::REG_SEND),
            Term::from(caller.clone()),
            atom(""),
            atom("rex"),
        ]);
        h.receive(control, Some(msg)).expect("frame");
        let sent = h.sent();
        assert_eq!(op(&sent[0].0), expect_op);
        assert_eq!(sent[0].1, Some(tuple(vec![tag, nil()])));
    }
}

#[test]
fn erpc_spawn_requests_are_answered_with_a_pid_and_the_result_as_exit_reason() {
    let mut h = Harness::new();
    let from = Term::from(peer_pid(8));
    let req_id = Term::from(eetf::Reference {
        node: PEER.into(),
        id: vec![4, 5, 6],
        creation: 99,
    });
    let res = Term::from(eetf::Reference {
        node: PEER.into(),
        id: vec![7, 7, 7],
        creation: 99,
    });
    let mfa = tuple(vec![atom("erpc"), atom("execute_call"), int(4)]);
    let opts = Term::from(eetf::List::from(vec![
        tuple(vec![atom("reply"), atom("error_only")]),
        atom("monitor"),
    ]));
    let control = tuple(vec![
        int(wire::SPAWN_REQUEST),
        req_id.clone(),
        from.clone(),
        from.clone(),
        mfa,
        opts,
    ]);
    let args = Term::from(eetf::List::from(vec![
        res.clone(),
        atom("application"),
        atom("which_applications"),
        nil(),
    ]));
    h.receive(control, Some(args)).expect("frame");
    let sent = h.sent();
    assert_eq!(op(&sent[0].0), wire::SPAWN_REPLY);
    assert_eq!(el(&sent[0].0, 3), int(wire::SPAWN_FLAG_MONITOR));
    assert_eq!(op(&sent[1].0), wire::MONITOR_P_EXIT);
    assert_eq!(el(&sent[1].0, 3), req_id);
    assert_eq!(el(&sent[1].0, 4), tuple(vec![res, atom("return"), nil()]));
}

#[test]
fn unlink_id_is_acknowledged() {
    let mut h = Harness::new();
    let (them, us) = (Term::from(peer_pid(3)), Term::from(h.local.caller.clone()));
    h.receive(
        tuple(vec![
            int(wire::UNLINK_ID),
            int(17),
            them.clone(),
            us.clone(),
        ]),
        None,
    )
    .expect("frame");
    assert_eq!(
        h.sent()[0].0,
        tuple(vec![int(wire::UNLINK_ID_ACK), int(17), us, them])
    );
}

#[test]
fn ticks_go_out_when_idle_and_a_silent_peer_is_dropped() {
    let mut h = Harness::new();
    assert_eq!(h.core.poll_timeout(), h.now + Duration::from_secs(2));
    h.now += Duration::from_secs(2);
    h.core.handle_timeout(h.now).expect("alive");
    assert_eq!(h.sent(), vec![(atom("tick"), None)]);
    // The peer's tick keeps us alive and is echoed.
    h.now += Duration::from_secs(5);
    h.core.handle_tick(h.now);
    assert_eq!(h.sent(), vec![(atom("tick"), None)]);
    h.now += Duration::from_secs(8);
    assert_eq!(
        h.core.handle_timeout(h.now),
        Err(CloseReason::TickTimeout(Duration::from_secs(8)))
    );
}

#[test]
fn a_closed_connection_fails_every_call_in_flight() {
    let mut h = Harness::new();
    let (_, mut r) = h.call(&peer_pid(5), Duration::from_secs(5));
    h.core.fail_all();
    assert!(matches!(
        r.try_recv(),
        Ok(Err(CallError::ConnectionLost { .. }))
    ));
    assert_eq!(h.metrics.snapshot().in_flight, 0);
}

#[test]
fn garbage_frames_close_the_connection_with_a_reason() {
    let mut h = Harness::new();
    assert!(matches!(
        h.core.handle_frame(&[68, 1, 2], h.now),
        Err(CloseReason::Protocol(_))
    ));
    assert!(matches!(
        h.core.handle_frame(&[112, 131, 255], h.now),
        Err(CloseReason::Decode(_))
    ));
}

#[test]
fn a_mailbox_that_overflows_is_closed_and_its_watchers_told() {
    let mut h = Harness::new();
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let number = h.local.next_pid_number();
    h.core
        .handle_command(Command::OpenMailbox { number, tx }, h.now);
    let me = Term::from(h.local.pid(number));
    let watcher = Term::from(peer_pid(7));
    let r = Term::from(eetf::Reference {
        node: PEER.into(),
        id: vec![1, 1, 1],
        creation: 99,
    });
    h.receive(
        tuple(vec![
            int(wire::MONITOR_P),
            watcher.clone(),
            me.clone(),
            r.clone(),
        ]),
        None,
    )
    .expect("frame");
    assert!(h.sent().is_empty(), "the mailbox exists: no noproc");
    let send = || tuple(vec![int(wire::SEND), atom(""), me.clone()]);
    h.receive(send(), Some(atom("first"))).expect("frame");
    h.receive(send(), Some(atom("second"))).expect("frame");
    let sent = h.sent();
    assert_eq!(
        sent[0].0,
        tuple(vec![
            int(wire::MONITOR_P_EXIT),
            me.clone(),
            watcher,
            r,
            atom("mailbox_overflow")
        ])
    );
    assert_eq!(rx.try_recv().ok(), Some(atom("first")));
    assert!(rx.try_recv().is_err(), "closed after what it held");
    // The pid is gone: later messages are dropped.
    h.receive(send(), Some(atom("third"))).expect("frame");
    assert_eq!(h.metrics.snapshot().dropped_messages, 2);
}

/// The peer tells us that `target`, which our monitor `mon` (a MONITOR_P control
/// message we sent) watches, exited with `reason`.
fn monitored_exit(h: &mut Harness, target: Term, mon: &Term, reason: &str) {
    h.receive(
        tuple(vec![
            int(wire::MONITOR_P_EXIT),
            target,
            el(mon, 1),
            el(mon, 3),
            atom(reason),
        ]),
        None,
    )
    .expect("frame");
}

/// The gauges the core published, the ones its tables count, and the pool's: all equal.
fn gauges(h: &Harness) -> (u64, u64, u64) {
    let g = h.core.gauges();
    assert_eq!(g, h.core.published_gauges(), "published = counted");
    let m = h.metrics.snapshot();
    assert_eq!(
        (m.local_pids, m.peer_monitors, m.own_monitors),
        (g.local_pids, g.peer_monitors, g.own_monitors),
        "pool's = core's"
    );
    (g.local_pids, g.peer_monitors, g.own_monitors)
}

#[test]
fn leak_gauges_follow_the_tables_and_return_to_zero() {
    let mut h = Harness::new();
    assert_eq!(gauges(&h), (0, 0, 0));
    // Calls: one monitor per target while calls to it are in flight.
    let (k1, _r1) = h.call(&peer_pid(1), Duration::from_secs(5));
    let (k2, _r2) = h.call(&peer_pid(1), Duration::from_secs(5));
    let (_k3, mut r3) = h.call(&peer_pid(2), Duration::from_secs(5));
    assert_eq!(gauges(&h), (0, 0, 2));
    h.reply(k1, atom("a"));
    assert_eq!(gauges(&h), (0, 0, 2));
    h.reply(k2, atom("b"));
    assert_eq!(gauges(&h), (0, 0, 1));
    // The other target's monitor fires.
    let sent = h.sent();
    let mon = sent
        .iter()
        .find(|(c, _)| op(c) == wire::MONITOR_P && el(c, 2) == Term::from(peer_pid(2)))
        .expect("monitor of pid 2")
        .0
        .clone();
    monitored_exit(&mut h, Term::from(peer_pid(2)), &mon, "killed");
    assert!(matches!(
        r3.try_recv(),
        Ok(Err(CallError::TargetDown { .. }))
    ));
    assert_eq!(gauges(&h), (0, 0, 0));
    // A time-out also releases the monitor.
    let (_k4, _r4) = h.call(&peer_pid(3), Duration::from_secs(1));
    assert_eq!(gauges(&h), (0, 0, 1));
    h.now += Duration::from_secs(2);
    h.core.handle_timeout(h.now).expect("alive");
    assert_eq!(gauges(&h), (0, 0, 0));

    // Mailboxes, and peers monitoring them (by pid, by name) and rex.
    let open = |h: &mut Harness| {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let number = h.local.next_pid_number();
        h.core
            .handle_command(Command::OpenMailbox { number, tx }, h.now);
        (number, rx)
    };
    let (a, _ra) = open(&mut h);
    let (b, _rb) = open(&mut h);
    assert_eq!(gauges(&h), (2, 0, 0));
    let (pid_a, ghost) = (Term::from(h.local.pid(a)), Term::from(h.local.pid(4242)));
    let (reg_tx, _reg_rx) = oneshot::channel();
    h.core.handle_command(
        Command::Register {
            number: b,
            name: "inbox".into(),
            reply: reg_tx,
        },
        h.now,
    );
    let peer_ref = |n: u32| {
        Term::from(eetf::Reference {
            node: PEER.into(),
            id: vec![n, 0, 0],
            creation: 99,
        })
    };
    let watcher = Term::from(peer_pid(7));
    let monitor = |h: &mut Harness, target: Term, n: u32| {
        h.receive(
            tuple(vec![
                int(wire::MONITOR_P),
                watcher.clone(),
                target,
                peer_ref(n),
            ]),
            None,
        )
        .expect("frame");
    };
    monitor(&mut h, pid_a.clone(), 1);
    monitor(&mut h, pid_a.clone(), 2);
    monitor(&mut h, atom("inbox"), 3);
    monitor(&mut h, atom("rex"), 4);
    // On a pid we do not have: answered noproc, nothing held.
    monitor(&mut h, ghost, 5);
    assert_eq!(gauges(&h), (2, 4, 0));
    let demonitor = |h: &mut Harness, target: Term, n: u32| {
        h.receive(
            tuple(vec![
                int(wire::DEMONITOR_P),
                watcher.clone(),
                target,
                peer_ref(n),
            ]),
            None,
        )
        .expect("frame");
    };
    demonitor(&mut h, pid_a.clone(), 1);
    demonitor(&mut h, atom("rex"), 4);
    // A demonitor for a monitor nobody holds changes nothing.
    demonitor(&mut h, atom("rex"), 4);
    demonitor(&mut h, pid_a.clone(), 9);
    assert_eq!(gauges(&h), (2, 2, 0));
    // Closing a mailbox frees its pid and its watchers.
    h.core
        .handle_command(Command::CloseMailbox { number: a }, h.now);
    assert_eq!(gauges(&h), (1, 1, 0));
    // The connection closes: everything it held is withdrawn.
    monitor(&mut h, atom("rex"), 6);
    let (_k5, _r5) = h.call(&peer_pid(3), Duration::from_secs(5));
    assert_eq!(gauges(&h), (1, 2, 1));
    h.core.fail_all();
    assert_eq!(gauges(&h), (0, 0, 0));
}

#[test]
fn call_frames_written_by_hand_are_those_of_the_terms() {
    let local = Local::new(US, 1234, PEER);
    let request = tuple(vec![
        atom("get"),
        int(42),
        Term::from(eetf::Binary::from(vec![1, 2, 3])),
    ]);
    for key in [1u64, 0x3ffff, 0x40000, 123_456_789_012] {
        let from = tuple(vec![
            Term::from(local.caller.clone()),
            Term::from(local.reference(key)),
        ]);
        let message = tuple(vec![atom("$gen_call"), from, request.clone()]);
        let target = peer_pid(77);
        let mut expected = Vec::new();
        let control = tuple(vec![int(wire::SEND), atom(""), Term::from(target.clone())]);
        wire::push_frame(&mut expected, &control, Some(&message));
        assert_eq!(
            local.call_frame(crate::core::CallTo::Pid(&target), key, &request),
            expected
        );
        let mut expected = Vec::new();
        let control = tuple(vec![
            int(wire::REG_SEND),
            Term::from(local.caller.clone()),
            atom(""),
            atom("some_server"),
        ]);
        wire::push_frame(&mut expected, &control, Some(&message));
        assert_eq!(
            local.call_frame(crate::core::CallTo::Name("some_server"), key, &request),
            expected
        );
    }
}

#[test]
fn an_idle_monitor_lingers_serves_the_next_calls_and_is_dropped_when_unused_or_dead() {
    let linger = Duration::from_secs(5);
    let mut h = Harness::with_linger(linger);
    let target = peer_pid(1);
    let ops = |sent: &[(Term, Option<Term>)]| sent.iter().map(|(c, _)| op(c)).collect::<Vec<_>>();
    let (k1, mut r1) = h.call(&target, Duration::from_secs(30));
    assert_eq!(ops(&h.sent()), vec![wire::MONITOR_P]);
    h.reply(k1, atom("a"));
    assert_eq!(answered(&mut r1), atom("a"));
    // No DEMONITOR_P: the monitor lingers, counted.
    assert!(h.sent().is_empty());
    assert_eq!(gauges(&h), (0, 0, 1));
    // The next call reuses it: no MONITOR_P.
    h.now += Duration::from_secs(4);
    let (k2, mut r2) = h.call(&target, Duration::from_secs(30));
    assert!(h.sent().is_empty());
    h.reply(k2, atom("b"));
    assert_eq!(answered(&mut r2), atom("b"));
    // Idle since k2's reply: still there 4 s later, gone (DEMONITOR_P) after 5 s.
    h.now += Duration::from_secs(4);
    assert!(h.core.poll_timeout() <= h.now + Duration::from_secs(1));
    h.core.handle_timeout(h.now).expect("alive");
    assert!(h.sent().iter().all(|(c, _)| op(c) != wire::DEMONITOR_P));
    assert_eq!(gauges(&h), (0, 0, 1));
    h.now += Duration::from_secs(1);
    h.core.handle_timeout(h.now).expect("alive");
    assert_eq!(
        ops(&h.sent())
            .into_iter()
            .filter(|o| *o != -1)
            .collect::<Vec<_>>(),
        vec![wire::DEMONITOR_P]
    );
    assert_eq!(gauges(&h), (0, 0, 0));

    // A lingering monitor that fires goes away; a call that reused it fails at once.
    let (k3, _r3) = h.call(&target, Duration::from_secs(30));
    let mon = h.sent()[0].0.clone();
    assert_eq!(op(&mon), wire::MONITOR_P);
    h.reply(k3, atom("c"));
    let (_k4, mut r4) = h.call(&target, Duration::from_secs(30));
    monitored_exit(&mut h, Term::from(target.clone()), &mon, "killed");
    assert!(matches!(
        r4.try_recv(),
        Ok(Err(CallError::TargetDown { .. }))
    ));
    assert_eq!(gauges(&h), (0, 0, 0));
    // An idle one that fires: nothing else happens, and its stale entry is harmless.
    let (k5, _r5) = h.call(&target, Duration::from_secs(30));
    let mon = h.sent()[0].0.clone();
    h.reply(k5, atom("d"));
    assert_eq!(gauges(&h), (0, 0, 1));
    monitored_exit(&mut h, Term::from(target.clone()), &mon, "normal");
    assert_eq!(gauges(&h), (0, 0, 0));
    h.now += Duration::from_secs(6);
    h.core.handle_tick(h.now); // the peer keeps ticking
    h.core.handle_timeout(h.now).expect("alive");
    assert!(h.sent().iter().all(|(c, _)| op(c) != wire::DEMONITOR_P));
    // The connection closes with a lingering monitor: withdrawn.
    let (k6, _r6) = h.call(&target, Duration::from_secs(30));
    h.reply(k6, atom("e"));
    assert_eq!(gauges(&h), (0, 0, 1));
    h.core.fail_all();
    assert_eq!(gauges(&h), (0, 0, 0));
}
