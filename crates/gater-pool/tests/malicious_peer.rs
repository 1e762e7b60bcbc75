//! A malicious peer: a fake node, written here, that registers in a private EPMD, passes
//! the handshake with the right cookie, and then misbehaves (oversize frames, deeply
//! nested terms, undecodable control messages, unknown control messages, floods). The
//! pool must drop it with a logged reason, or ignore what is harmless, while it keeps
//! serving calls to a second, healthy node (a real `erl` node).

mod common;

use common::*;
use erl_dist::epmd::{EpmdClient, NodeEntry};
use erl_dist::handshake::{HandshakeStatus, ServerSideHandshake};
use erl_dist::node::{Creation, LocalNode, NodeName};
use futures::io::AllowStdIo;
use gater_pool::eetf::{List, Pid, Reference, Tuple};
use gater_pool::{NodeEvent, Pool, Term};
use gater_term::DecodeLimits;
use gater_testkit::erl::{Epmd, unique_name};
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(5);

// ---- captured logs --------------------------------------------------------------------

/// Every log line of this test binary (all tests share the global subscriber; each test
/// looks for its own fake node's name).
fn logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| Mutex::new(Vec::new()))
}

struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        logs().lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("gater_pool=debug")
        .with_ansi(false)
        .with_writer(|| LogWriter)
        .try_init();
}

/// The captured log lines that mention `needle`.
fn log_lines_with(needle: &str) -> Vec<String> {
    let buf = logs().lock().expect("log buffer").clone();
    String::from_utf8_lossy(&buf)
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

// ---- the fake node ----------------------------------------------------------------------

/// What the fake node knows about one accepted connection.
struct Conn {
    stream: TcpStream,
    /// The fake node's own name.
    me: String,
}

type Behaviour = Arc<dyn Fn(&mut Conn) -> io::Result<()> + Send + Sync>;

/// A node that answers EPMD and the handshake correctly, then runs `behaviour` on every
/// connection (the pool reconnects after each drop).
struct FakeNode {
    name: String,
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Connections accepted so far.
    accepted: Arc<std::sync::atomic::AtomicUsize>,
}

impl FakeNode {
    fn start(epmd: &Epmd, behaviour: Behaviour) -> Self {
        let alive = unique_name("evil");
        let name = format!("{alive}@127.0.0.1");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake node");
        let port = listener.local_addr().expect("addr").port();
        let epmd_conn = TcpStream::connect(("127.0.0.1", epmd.port())).expect("epmd");
        let (keepalive, creation) = futures::executor::block_on(
            EpmdClient::new(AllowStdIo::new(epmd_conn))
                .register(NodeEntry::new_hidden(&alive, port)),
        )
        .expect("register in epmd");
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let thread = {
            let (stop, accepted, name) = (stop.clone(), accepted.clone(), name.clone());
            std::thread::spawn(move || {
                let _registration = keepalive;
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let (behaviour, name) = (behaviour.clone(), name.clone());
                    std::thread::spawn(move || serve(stream, &name, creation, &behaviour));
                }
            })
        };
        Self {
            name,
            port,
            stop,
            thread: Some(thread),
            accepted,
        }
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(stream: TcpStream, name: &str, creation: Creation, behaviour: &Behaviour) {
    let node_name: NodeName = name.parse().expect("node name");
    let mut local = LocalNode::new(node_name, creation);
    local.flags = gater_pool::our_flags();
    let mut hs = ServerSideHandshake::new(AllowStdIo::new(stream), local, COOKIE);
    let done = futures::executor::block_on(async {
        hs.execute_recv_name().await?;
        hs.execute_rest(HandshakeStatus::Ok).await
    });
    let Ok((io, _peer)) = done else { return };
    let stream = io.into_inner();
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut conn = Conn {
        stream,
        me: name.to_owned(),
    };
    if behaviour(&mut conn).is_ok() {
        // Hold the connection until the pool drops it (bounded by the read time-out).
        let mut sink = [0u8; 4096];
        while matches!(conn.stream.read(&mut sink), Ok(n) if n > 0) {}
    }
}

// ---- frames -----------------------------------------------------------------------------

fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(body.len() + 4);
    f.extend_from_slice(&(body.len() as u32).to_be_bytes());
    f.extend_from_slice(body);
    f
}

/// A pass-through frame: control message and optional payload.
fn pass_through(control: &Term, message: Option<&Term>) -> Vec<u8> {
    let mut body = vec![112];
    body.extend(gater_term::encode(control));
    if let Some(m) = message {
        body.extend(gater_term::encode(m));
    }
    frame(&body)
}

fn nil() -> Term {
    Term::from(List::nil())
}

/// Sends `rex` an rpc for `application:which_applications()` and waits (bounded) for
/// the answer: proof that the pool read every frame sent before it and still serves.
fn rex_round_trip(conn: &mut Conn) -> io::Result<()> {
    let from = Term::from(Pid::new(conn.me.as_str(), 77, 0, 1));
    let tag = Term::from(Reference {
        node: conn.me.as_str().into(),
        id: vec![1, 2, 3],
        creation: 1,
    });
    let control = tuple(vec![int(6), from.clone(), atom(""), atom("rex")]);
    let request = tuple(vec![
        atom("$gen_call"),
        tuple(vec![from, tag.clone()]),
        tuple(vec![
            atom("call"),
            atom("application"),
            atom("which_applications"),
            nil(),
            atom("user"),
        ]),
    ]);
    conn.stream
        .write_all(&pass_through(&control, Some(&request)))?;
    let deadline = Instant::now() + T;
    while Instant::now() < deadline {
        let mut len = [0u8; 4];
        conn.stream.read_exact(&mut len)?;
        let len = u32::from_be_bytes(len) as usize;
        if len == 0 {
            continue; // a tick
        }
        let mut body = vec![0u8; len];
        conn.stream.read_exact(&mut body)?;
        let limits = DecodeLimits::default();
        let (_control, used) = gater_term::decode_prefix(&body[1..], &limits)
            .map_err(|e| io::Error::other(e.to_string()))?;
        if used + 1 < body.len() {
            let msg = gater_term::decode(&body[1 + used..], &limits)
                .map_err(|e| io::Error::other(e.to_string()))?;
            if let Term::Tuple(Tuple { elements }) = &msg
                && elements.len() == 2
                && elements[0] == tag
            {
                return Ok(());
            }
        }
    }
    Err(io::Error::new(io::ErrorKind::TimedOut, "no rex reply"))
}

// ---- the tests --------------------------------------------------------------------------

struct Setup {
    epmd: Epmd,
    healthy: gater_testkit::erl::ErlNode,
    pool: Pool,
}

async fn setup() -> Setup {
    capture_logs();
    let epmd = Epmd::start().expect("epmd");
    let healthy = echo_node(&epmd, "healthy", &[]);
    let pool = Pool::new(config(&epmd).max_frame_len(1 << 20));
    pool.connect(healthy.name())
        .await
        .expect("healthy node connects");
    Setup {
        epmd,
        healthy,
        pool,
    }
}

/// Calls the healthy node's echo server `n` times; every call must succeed.
async fn healthy_calls(s: &Setup, n: i32) {
    for i in 0..n {
        let r = s
            .pool
            .call(
                ("echo", s.healthy.name()),
                tuple(vec![atom("ping"), int(i)]),
                T,
            )
            .await
            .expect("the healthy node keeps answering");
        assert_eq!(r, tuple(vec![atom("ping"), int(i)]));
    }
}

/// Connects to the fake node, waits for the pool to drop it, and returns the reason.
async fn dropped_reason(s: &Setup, fake: &FakeNode) -> String {
    let mut events = s.pool.subscribe();
    // The first connect may already succeed and be dropped, or fail: either is fine.
    let _ = s.pool.connect(&fake.name).await;
    let NodeEvent::Down { reason, .. } = wait_event(
        &mut events,
        Duration::from_secs(10),
        |e| matches!(e, NodeEvent::Down { node, .. } if *node == fake.name),
    )
    .await
    else {
        unreachable!("wait_event returns a Down")
    };
    reason
}

/// The close reason appears in a warning logged for that peer.
fn assert_logged(fake: &FakeNode, reason: &str) {
    let lines = log_lines_with(&fake.name);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("WARN") && l.contains("connection closed") && l.contains(reason)),
        "no warning naming {reason:?} for {}; lines: {lines:#?}",
        fake.name
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_frame_drops_the_peer_before_buffering_it() {
    let s = setup().await;
    let fake = FakeNode::start(
        &s.epmd,
        Arc::new(|c: &mut Conn| {
            // Claims 512 MiB, then starts sending: the cap (1 MiB) must refuse it at once.
            c.stream.write_all(&(512u32 << 20).to_be_bytes())?;
            c.stream.write_all(&vec![0x55; 64 * 1024])
        }),
    );
    let reason = dropped_reason(&s, &fake).await;
    assert!(reason.contains("above the cap"), "reason: {reason}");
    assert_logged(&fake, "above the cap of 1048576 bytes");
    healthy_calls(&s, 50).await;
    s.pool.disconnect(&fake.name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deeply_nested_term_is_refused_without_exhausting_the_stack() {
    let s = setup().await;
    let fake = FakeNode::start(
        &s.epmd,
        Arc::new(|c: &mut Conn| {
            // A control message nested 100 000 lists deep (OTP would build it; we must
            // not recurse into it).
            let depth = 100_000;
            let mut body = vec![112, 131];
            for _ in 0..depth {
                body.extend_from_slice(&[108, 0, 0, 0, 1]);
            }
            body.push(106);
            body.extend(std::iter::repeat_n(106, depth));
            c.stream.write_all(&frame(&body))
        }),
    );
    let reason = dropped_reason(&s, &fake).await;
    assert!(reason.starts_with("undecodable frame"), "reason: {reason}");
    assert!(
        reason.contains("nested deeper than 128"),
        "reason names the depth limit: {reason}"
    );
    assert_logged(&fake, "undecodable frame");
    healthy_calls(&s, 50).await;
    s.pool.disconnect(&fake.name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_after_the_handshake_drops_the_peer() {
    let s = setup().await;
    let fake = FakeNode::start(
        &s.epmd,
        Arc::new(|c: &mut Conn| {
            // A frame tag other than pass-through (112), e.g. an atom-cache header.
            c.stream.write_all(&frame(&[68, 0, 1, 2, 3]))
        }),
    );
    let reason = dropped_reason(&s, &fake).await;
    assert!(reason.contains("frame tag 68"), "reason: {reason}");
    assert_logged(&fake, "protocol error");

    let fake2 = FakeNode::start(
        &s.epmd,
        Arc::new(|c: &mut Conn| {
            // A control message that is not a tuple.
            c.stream.write_all(&pass_through(&atom("hello"), None))
        }),
    );
    let reason = dropped_reason(&s, &fake2).await;
    assert!(reason.contains("not a tuple"), "reason: {reason}");
    assert_logged(&fake2, "control message is not a tuple");
    healthy_calls(&s, 50).await;
    s.pool.disconnect(&fake.name);
    s.pool.disconnect(&fake2.name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_control_messages_are_ignored_and_the_connection_keeps_serving() {
    let s = setup().await;
    let (tx, rx) = std::sync::mpsc::channel::<io::Result<()>>();
    let tx = Mutex::new(tx);
    let fake = FakeNode::start(
        &s.epmd,
        Arc::new(move |c: &mut Conn| {
            // Unknown operations, known operations with the wrong arity, junk fields.
            for control in [
                tuple(vec![int(9999), atom("x")]),
                tuple(vec![int(-5)]),
                tuple(vec![atom("not_an_op"), nil()]),
                tuple(vec![int(2), atom("wrong_arity")]),
                tuple(vec![int(19), int(1), int(2), int(3)]), // MONITOR_P with junk fields
                tuple(vec![]),
            ] {
                c.stream
                    .write_all(&pass_through(&control, Some(&atom("payload"))))?;
            }
            // A real request after them must still be answered.
            let r = rex_round_trip(c);
            let _ = tx.lock().expect("tx").send(r);
            Ok(())
        }),
    );
    s.pool
        .connect(&fake.name)
        .await
        .expect("fake node connects");
    let answered = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(10)))
        .await
        .expect("join")
        .expect("the fake reports");
    answered.expect("rex answered after the unknown control messages");
    assert!(s.pool.is_connected(&fake.name), "still connected");
    assert!(
        !log_lines_with(&fake.name)
            .iter()
            .any(|l| l.contains("connection closed")),
        "no close was logged"
    );
    assert_eq!(fake.accepted.load(Ordering::SeqCst), 1, "no reconnect");
    healthy_calls(&s, 50).await;
    s.pool.disconnect(&fake.name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_flood_is_dropped_and_counted_while_the_healthy_node_keeps_answering() {
    let s = setup().await;
    const FLOOD: usize = 100_000;
    let gateway = s.pool.node_name().to_owned();
    let (tx, rx) = std::sync::mpsc::channel::<io::Result<()>>();
    let tx = Mutex::new(tx);
    let fake = FakeNode::start(
        &s.epmd,
        Arc::new(move |c: &mut Conn| {
            // SEND to a pid of an old incarnation of the gateway, with a 1 KiB payload,
            // as fast as the socket takes it, in 64 KiB writes.
            let to = Term::from(Pid::new(gateway.as_str(), 1, 0, 0));
            let one = pass_through(
                &tuple(vec![int(2), atom(""), to]),
                Some(&Term::from(gater_pool::eetf::Binary::from(vec![7u8; 1024]))),
            );
            let per_write = (64 * 1024) / one.len();
            let batch: Vec<u8> = one.repeat(per_write);
            let mut sent = 0;
            while sent < FLOOD {
                let n = per_write.min(FLOOD - sent);
                c.stream.write_all(&batch[..n * one.len()])?;
                sent += n;
            }
            let r = rex_round_trip(c);
            let _ = tx.lock().expect("tx").send(r);
            Ok(())
        }),
    );
    let dropped_before = s.pool.metrics().dropped_messages;
    s.pool
        .connect(&fake.name)
        .await
        .expect("fake node connects");
    // Calls to the healthy node during the flood: all answered, none slow.
    let started = Instant::now();
    let mut worst = Duration::ZERO;
    let mut calls = 0;
    let flood_done = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(60)));
    tokio::pin!(flood_done);
    let result = loop {
        tokio::select! {
            r = &mut flood_done => break r,
            () = async {
                let t0 = Instant::now();
                healthy_calls(&s, 1).await;
                worst = worst.max(t0.elapsed());
                calls += 1;
            } => {}
        }
    };
    result
        .expect("join")
        .expect("the fake reports")
        .expect("rex answered after the flood");
    let flood_time = started.elapsed();
    let dropped = s.pool.metrics().dropped_messages - dropped_before;
    assert!(
        dropped >= FLOOD as u64,
        "every flood message dropped and counted: {dropped}"
    );
    assert!(calls > 0, "calls ran during the flood");
    assert!(
        worst < Duration::from_secs(1),
        "a healthy call took {worst:?} during the flood"
    );
    assert!(
        s.pool.is_connected(&fake.name),
        "a flood alone is not a reason to drop"
    );
    eprintln!(
        "flood of {FLOOD} x 1 KiB messages read in {flood_time:?}; {calls} healthy calls meanwhile, worst {worst:?}"
    );
    healthy_calls(&s, 50).await;
    s.pool.disconnect(&fake.name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_keeps_misbehaving_is_dropped_on_every_reconnect() {
    let s = setup().await;
    let fake = FakeNode::start(
        &s.epmd,
        Arc::new(|c: &mut Conn| c.stream.write_all(&(u32::MAX).to_be_bytes())),
    );
    let mut events = s.pool.subscribe();
    let _ = s.pool.connect(&fake.name).await;
    // Three drops in a row (the pool reconnects with back-off, 50..500 ms here).
    for _ in 0..3 {
        let e = wait_event(
            &mut events,
            Duration::from_secs(10),
            |e| matches!(e, NodeEvent::Down { node, .. } if *node == fake.name),
        )
        .await;
        assert!(matches!(e, NodeEvent::Down { reason, .. } if reason.contains("above the cap")));
        healthy_calls(&s, 10).await;
    }
    assert!(fake.accepted.load(Ordering::SeqCst) >= 3);
    s.pool.disconnect(&fake.name);
}
