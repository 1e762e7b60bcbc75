//! The pure per-connection protocol core: call table, monitors, local processes, what we
//! serve to the peer, ticks. No sockets and no clock: every input carries `now`, output
//! bytes are taken with [`Core::output`], and [`Core::poll_timeout`] says when to call
//! [`Core::handle_timeout`] (quinn-style). The async shell in `connection.rs` drives it.

use crate::CallError;
use crate::metrics::Metrics;
use crate::wire::{self, as_atom, as_int, atom, int, nil, tuple};
use eetf::{ImproperList, Pid, Reference, Term, Tuple};
use gater_term::DecodeLimits;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Hashes the keys of our references with one multiplication (and node names, the
/// pool's peers, a word at a time): the keys come from our own counter and the names
/// from `Pool::connect`; a peer only makes us look keys up, it never inserts, so
/// SipHash's protection against chosen keys buys nothing on this per-call path.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.write_u64(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

pub(crate) type KeyHash = std::hash::BuildHasherDefault<KeyHasher>;

type KeyMap<V> = HashMap<u64, V, KeyHash>;

/// Number of the pid that sends calls and receives their replies.
pub(crate) const CALLER_PID: u32 = 0;

/// What identifies this connection's incarnation of our node; shared with callers, who
/// build their frames themselves.
#[derive(Debug)]
pub(crate) struct Local {
    pub node: String,
    pub creation: u32,
    pub peer: String,
    pub caller: Pid,
    next_ref: AtomicU64,
    next_pid: AtomicU32,
    /// The caller pid, encoded (no version byte).
    caller_bytes: Vec<u8>,
    /// `131, {'$gen_call', {Caller, Ref` of every call's message, up to the reference's
    /// first id word: the three words follow.
    call_head: Vec<u8>,
}

/// Whom a call frame is for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum CallTo<'a> {
    Pid(&'a Pid),
    Name(&'a str),
}

impl Local {
    pub(crate) fn new(node: &str, creation: u32, peer: &str) -> Self {
        let caller = wire::make_pid(node, CALLER_PID, creation);
        let mut caller_bytes = Vec::new();
        wire::push_pid(&mut caller_bytes, &caller);
        // 131, SMALL_TUPLE 3, '$gen_call', SMALL_TUPLE 2, Caller, NEWER_REFERENCE_EXT
        // with 3 words, our node and creation.
        let mut call_head = vec![131, 104, 3];
        wire::push_atom(&mut call_head, "$gen_call");
        call_head.extend_from_slice(&[104, 2]);
        call_head.extend_from_slice(&caller_bytes);
        call_head.extend_from_slice(&[90, 0, 3]);
        wire::push_atom(&mut call_head, node);
        call_head.extend_from_slice(&creation.to_be_bytes());
        Self {
            node: node.to_owned(),
            creation,
            peer: peer.to_owned(),
            caller,
            next_ref: AtomicU64::new(1),
            next_pid: AtomicU32::new(CALLER_PID + 1),
            caller_bytes,
            call_head,
        }
    }

    /// The frame of a call: `SEND` to a pid or `REG_SEND` to a name, with the message
    /// `{'$gen_call', {Caller, Ref(key)}, Request}`. Written without building terms (the
    /// bytes are gater-term's, as `wire::push_frame` would write them): this runs once
    /// per call on the caller's task.
    pub(crate) fn call_frame(&self, to: CallTo<'_>, key: u64, request: &Term) -> Vec<u8> {
        let mut f = Vec::with_capacity(64 + self.call_head.len() + self.caller_bytes.len());
        f.extend_from_slice(&[0, 0, 0, 0, wire::PASS_THROUGH, 131]);
        match to {
            CallTo::Pid(p) => {
                f.extend_from_slice(&[104, 3, 97, wire::SEND as u8, 119, 0]);
                wire::push_pid(&mut f, p);
            }
            CallTo::Name(name) => {
                f.extend_from_slice(&[104, 4, 97, wire::REG_SEND as u8]);
                f.extend_from_slice(&self.caller_bytes);
                f.extend_from_slice(&[119, 0]);
                wire::push_atom(&mut f, name);
            }
        }
        f.extend_from_slice(&self.call_head);
        let mut words = [0u8; 12];
        for (i, w) in wire::ref_words(key).iter().enumerate() {
            words[4 * i..4 * i + 4].copy_from_slice(&w.to_be_bytes());
        }
        // The request's version byte lands on the last word's last byte, then is put back.
        f.extend_from_slice(&words[..11]);
        let at = f.len();
        gater_term::encode_into(request, &mut f);
        f[at] = words[11];
        let len = (f.len() - 4) as u32;
        f[..4].copy_from_slice(&len.to_be_bytes());
        f
    }

    /// A fresh reference key.
    pub(crate) fn next_ref_key(&self) -> u64 {
        self.next_ref.fetch_add(1, Ordering::Relaxed)
    }

    /// The reference of a key.
    pub(crate) fn reference(&self, key: u64) -> Reference {
        Reference {
            node: eetf::Atom::from(self.node.as_str()),
            id: wire::ref_words(key),
            creation: self.creation,
        }
    }

    /// A fresh local pid number.
    pub(crate) fn next_pid_number(&self) -> u32 {
        self.next_pid.fetch_add(1, Ordering::Relaxed) & ((1 << 28) - 1)
    }

    /// The pid of a number.
    pub(crate) fn pid(&self, n: u32) -> Pid {
        wire::make_pid(&self.node, n, self.creation)
    }
}

/// Whom a call monitors so that it ends at once when the target is gone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum MonitorKey {
    Pid { id: u32, serial: u32, creation: u32 },
    Name(String),
}

impl MonitorKey {
    pub(crate) fn of_pid(p: &Pid) -> Self {
        MonitorKey::Pid {
            id: p.id,
            serial: p.serial,
            creation: p.creation,
        }
    }
}

/// A reply as the core hands it to its caller.
#[derive(Debug)]
pub(crate) enum Reply {
    /// Already decoded (replies that took the slow path).
    Decoded(Term),
    /// The encoded reply term (with the version byte), for the caller to decode on its
    /// own task, so a big reply does not hold up the connection.
    Encoded(Vec<u8>),
}

/// The reply channel of one call.
pub(crate) type ReplyTx = oneshot::Sender<Result<Reply, CallError>>;

/// A request from a caller to the connection.
#[derive(Debug)]
pub(crate) enum Command {
    /// A call or rpc: `frame` is ready to send; the reply is `{Ref(key), Reply}`.
    Call {
        key: u64,
        /// The target to monitor, or `None` (rpc to rex).
        monitor: Option<MonitorKey>,
        frame: Vec<u8>,
        deadline: Instant,
        reply: ReplyTx,
    },
    /// A frame to send as is (cast, plain send).
    Send { frame: Vec<u8> },
    /// A new local process `number` whose messages go to `tx`.
    OpenMailbox { number: u32, tx: mpsc::Sender<Term> },
    /// Registers mailbox `number` under `name`; answers whether the name was free.
    Register {
        number: u32,
        name: String,
        reply: oneshot::Sender<bool>,
    },
    /// The receiver of mailbox `number` was dropped.
    CloseMailbox { number: u32 },
}

/// Why a connection ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CloseReason {
    PeerClosed,
    Io(String),
    OversizeFrame { len: usize, max: usize },
    Decode(String),
    Protocol(String),
    TickTimeout(Duration),
    Shutdown,
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::PeerClosed => write!(f, "peer closed the connection"),
            CloseReason::Io(e) => write!(f, "I/O error: {e}"),
            CloseReason::OversizeFrame { len, max } => {
                write!(
                    f,
                    "peer sent a {len}-byte frame, above the cap of {max} bytes"
                )
            }
            CloseReason::Decode(e) => write!(f, "undecodable frame: {e}"),
            CloseReason::Protocol(e) => write!(f, "protocol error: {e}"),
            CloseReason::TickTimeout(t) => write!(f, "peer silent for {t:?} (net_ticktime)"),
            CloseReason::Shutdown => write!(f, "shut down"),
        }
    }
}

struct Pending {
    reply: ReplyTx,
    monitor: Option<MonitorKey>,
}

struct Monitor {
    key: u64,
    target: Term,
    calls: usize,
    /// Since when no call uses it (it lingers), or `None` while calls do.
    idle_since: Option<Instant>,
    /// Whether it has an entry in `Core::lingering`.
    queued: bool,
}

/// Idle monitors kept at most per connection; past this, a monitor whose last call ends
/// is dropped at once.
const MAX_IDLE_MONITORS: usize = 1024;

/// A local process: the caller pid (no mailbox) or a mailbox.
#[derive(Default)]
struct LocalProc {
    tx: Option<mpsc::Sender<Term>>,
    /// Peers monitoring it: (watcher, reference, what they monitored: pid or name).
    watchers: Vec<(Term, Term, Term)>,
    /// Its registered name, if any.
    name: Option<String>,
    /// Peers linked to it.
    links: Vec<Term>,
}

/// Settings of one core.
#[derive(Debug, Clone)]
pub(crate) struct CoreConfig {
    pub limits: DecodeLimits,
    pub net_ticktime: Duration,
    pub monitor_linger: Duration,
}

/// The values of the gauges a core last added to the pool's metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gauges {
    pub local_pids: u64,
    pub peer_monitors: u64,
    pub own_monitors: u64,
}

pub(crate) struct Core {
    local: Arc<Local>,
    config: CoreConfig,
    metrics: Arc<Metrics>,
    calls: KeyMap<Pending>,
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    monitors: HashMap<MonitorKey, Monitor>,
    monitor_keys: KeyMap<MonitorKey>,
    /// Monitors that went idle, oldest first, with the time they did (entries may be
    /// stale: each is checked against its monitor when it comes up).
    lingering: VecDeque<(Instant, MonitorKey)>,
    /// Monitors idle now.
    idle_monitors: usize,
    procs: HashMap<u32, LocalProc>,
    /// Registered names of local processes.
    names: HashMap<String, u32>,
    /// Monitors peers hold on registered names we serve (`rex`): their references.
    name_watchers: Vec<Term>,
    /// This core's share of the pool's gauges, as last published.
    published: Gauges,
    out: Vec<u8>,
    out_pos: usize,
    last_out: Instant,
    last_in: Instant,
}

impl Core {
    pub(crate) fn new(
        local: Arc<Local>,
        config: CoreConfig,
        metrics: Arc<Metrics>,
        now: Instant,
    ) -> Self {
        let mut procs = HashMap::new();
        procs.insert(CALLER_PID, LocalProc::default());
        Self {
            local,
            config,
            metrics,
            calls: KeyMap::default(),
            deadlines: BinaryHeap::new(),
            monitors: HashMap::new(),
            monitor_keys: KeyMap::default(),
            lingering: VecDeque::new(),
            idle_monitors: 0,
            procs,
            names: HashMap::new(),
            name_watchers: Vec::new(),
            published: Gauges::default(),
            out: Vec::with_capacity(64 * 1024),
            out_pos: 0,
            last_out: now,
            last_in: now,
        }
    }

    /// Calls waiting for a reply.
    pub(crate) fn calls_in_flight(&self) -> usize {
        self.calls.len()
    }

    /// Monitors we hold on the peer's processes.
    #[cfg(test)]
    pub(crate) fn monitors_held(&self) -> usize {
        self.monitors.len()
    }

    /// The gauges as counted from the tables now (what [`Core::publish_gauges`] adds).
    pub(crate) fn gauges(&self) -> Gauges {
        Gauges {
            local_pids: self.procs.keys().filter(|&&n| n != CALLER_PID).count() as u64,
            peer_monitors: (self.name_watchers.len()
                + self.procs.values().map(|p| p.watchers.len()).sum::<usize>())
                as u64,
            own_monitors: self.monitors.len() as u64,
        }
    }

    /// The gauges this core last published.
    #[cfg(test)]
    pub(crate) fn published_gauges(&self) -> Gauges {
        self.published
    }

    /// Publishes this core's share of every gauge, counted from its tables.
    fn publish_gauges(&mut self) {
        let now = self.gauges();
        let m = &self.metrics;
        let p = &mut self.published;
        Metrics::set_share(&m.local_pids, &mut p.local_pids, now.local_pids);
        Metrics::set_share(&m.peer_monitors, &mut p.peer_monitors, now.peer_monitors);
        Metrics::set_share(&m.own_monitors, &mut p.own_monitors, now.own_monitors);
    }

    /// Publishes only `own_monitors` (cheap: on the calls' path).
    fn publish_own_monitors(&mut self) {
        let now = self.monitors.len() as u64;
        Metrics::set_share(
            &self.metrics.own_monitors,
            &mut self.published.own_monitors,
            now,
        );
    }

    /// Bytes waiting to be written.
    pub(crate) fn output(&self) -> &[u8] {
        &self.out[self.out_pos..]
    }

    /// `n` bytes of [`Core::output`] were written.
    pub(crate) fn consume_output(&mut self, n: usize) {
        self.out_pos += n;
        if self.out_pos >= self.out.len() {
            self.out.clear();
            self.out_pos = 0;
            // Give memory back after a burst.
            if self.out.capacity() > 1 << 20 {
                self.out.shrink_to(64 * 1024);
            }
        }
        Metrics::add(&self.metrics.bytes_out, n as u64);
    }

    fn push(&mut self, control: &Term, message: Option<&Term>, now: Instant) {
        wire::push_frame(&mut self.out, control, message);
        self.sent(now);
    }

    fn sent(&mut self, now: Instant) {
        self.last_out = now;
        Metrics::add(&self.metrics.frames_out, 1);
    }

    fn tick_interval(&self) -> Duration {
        self.config.net_ticktime / 4
    }

    /// When [`Core::handle_timeout`] must run next.
    pub(crate) fn poll_timeout(&mut self) -> Instant {
        // Deadlines of calls that already ended would only wake us for nothing.
        while let Some(Reverse((_, key))) = self.deadlines.peek() {
            if self.calls.contains_key(key) {
                break;
            }
            self.deadlines.pop();
        }
        let mut t =
            (self.last_out + self.tick_interval()).min(self.last_in + self.config.net_ticktime);
        if let Some(Reverse((d, _))) = self.deadlines.peek() {
            t = t.min(*d);
        }
        if let Some((idle, _)) = self.lingering.front() {
            t = t.min(*idle + self.config.monitor_linger);
        }
        t
    }

    /// Ticks when idle, ends calls past their deadline, and gives up on a silent peer.
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Result<(), CloseReason> {
        if now >= self.last_in + self.config.net_ticktime {
            return Err(CloseReason::TickTimeout(self.config.net_ticktime));
        }
        if now >= self.last_out + self.tick_interval() {
            wire::push_tick(&mut self.out);
            self.sent(now);
        }
        while let Some(Reverse((d, key))) = self.deadlines.peek().copied() {
            if d > now {
                break;
            }
            self.deadlines.pop();
            if let Some(p) = self.calls.remove(&key) {
                self.finish(p, Err(CallError::Timeout), now);
            }
        }
        self.expire_lingering(now);
        Ok(())
    }

    /// Takes a caller's command.
    pub(crate) fn handle_command(&mut self, cmd: Command, now: Instant) {
        match cmd {
            Command::Call {
                key,
                monitor,
                frame,
                deadline,
                reply,
            } => {
                if reply.is_closed() {
                    return;
                }
                Metrics::add(&self.metrics.in_flight, 1);
                let mon_key = monitor.inspect(|mk| {
                    if let Some(m) = self.monitors.get_mut(mk) {
                        m.calls += 1;
                        if m.idle_since.take().is_some() {
                            self.idle_monitors -= 1;
                        }
                    } else {
                        let target = match mk {
                            MonitorKey::Pid {
                                id,
                                serial,
                                creation,
                            } => Term::from(Pid::new(
                                self.local.peer.as_str(),
                                *id,
                                *serial,
                                *creation,
                            )),
                            MonitorKey::Name(name) => atom(name),
                        };
                        let ref_key = self.local.next_ref_key();
                        let control = tuple(vec![
                            int(wire::MONITOR_P),
                            Term::from(self.local.caller.clone()),
                            target.clone(),
                            Term::from(self.local.reference(ref_key)),
                        ]);
                        self.push(&control, None, now);
                        self.monitor_keys.insert(ref_key, mk.clone());
                        let m = Monitor {
                            key: ref_key,
                            target,
                            calls: 1,
                            idle_since: None,
                            queued: false,
                        };
                        self.monitors.insert(mk.clone(), m);
                        self.publish_own_monitors();
                    }
                });
                self.out.extend_from_slice(&frame);
                self.sent(now);
                self.calls.insert(
                    key,
                    Pending {
                        reply,
                        monitor: mon_key,
                    },
                );
                self.deadlines.push(Reverse((deadline, key)));
                // Completed calls leave their deadlines behind: drop them in bulk.
                if self.deadlines.len() > 2 * self.calls.len() + 1024 {
                    let calls = &self.calls;
                    self.deadlines
                        .retain(|Reverse((_, k))| calls.contains_key(k));
                }
            }
            Command::Send { frame } => {
                self.out.extend_from_slice(&frame);
                self.sent(now);
            }
            Command::OpenMailbox { number, tx } => {
                self.procs.insert(
                    number,
                    LocalProc {
                        tx: Some(tx),
                        ..Default::default()
                    },
                );
                self.publish_gauges();
            }
            Command::Register {
                number,
                name,
                reply,
            } => {
                let free = !is_served_name(&name)
                    && !self.names.contains_key(&name)
                    && self.procs.get(&number).is_some_and(|p| p.name.is_none());
                if free {
                    if let Some(p) = self.procs.get_mut(&number) {
                        p.name = Some(name.clone());
                    }
                    self.names.insert(name, number);
                }
                let _ = reply.send(free);
            }
            Command::CloseMailbox { number } => self.exit_local(number, atom("normal"), now),
        }
    }

    /// Ends one call: releases its share of the target's monitor and answers the caller.
    fn finish(&mut self, p: Pending, result: Result<Reply, CallError>, now: Instant) {
        if let Some(mk) = p.monitor {
            self.release_monitor(&mk, now);
        }
        self.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
        if let Err(e) = &result {
            self.metrics.count_error(e);
        }
        let _ = p.reply.send(result);
    }

    fn release_monitor(&mut self, mk: &MonitorKey, now: Instant) {
        let Some(m) = self.monitors.get_mut(mk) else {
            return;
        };
        m.calls -= 1;
        if m.calls > 0 {
            return;
        }
        // Keep it a while: the next call to the same target needs no MONITOR_P.
        if !self.config.monitor_linger.is_zero() && self.idle_monitors < MAX_IDLE_MONITORS {
            m.idle_since = Some(now);
            self.idle_monitors += 1;
            if !m.queued {
                m.queued = true;
                self.lingering.push_back((now, mk.clone()));
            }
            return;
        }
        self.demonitor(mk, now);
    }

    /// Drops our monitor on `mk` and tells the peer.
    fn demonitor(&mut self, mk: &MonitorKey, now: Instant) {
        if let Some(m) = self.monitors.remove(mk) {
            if m.idle_since.is_some() {
                self.idle_monitors -= 1;
            }
            self.monitor_keys.remove(&m.key);
            self.publish_own_monitors();
            let control = tuple(vec![
                int(wire::DEMONITOR_P),
                Term::from(self.local.caller.clone()),
                m.target,
                Term::from(self.local.reference(m.key)),
            ]);
            self.push(&control, None, now);
        }
    }

    /// Demonitors the monitors idle for `monitor_linger` (checked when their entry comes
    /// up, so one may linger up to twice that).
    fn expire_lingering(&mut self, now: Instant) {
        let linger = self.config.monitor_linger;
        while let Some((t, _)) = self.lingering.front() {
            if *t + linger > now {
                break;
            }
            let Some((_, mk)) = self.lingering.pop_front() else {
                break;
            };
            let Some(m) = self.monitors.get_mut(&mk) else {
                continue;
            };
            match m.idle_since {
                None => m.queued = false,
                Some(idle) if idle + linger <= now => self.demonitor(&mk, now),
                Some(idle) => self.lingering.push_back((idle, mk)),
            }
        }
    }

    /// Takes a tick from the peer.
    pub(crate) fn handle_tick(&mut self, now: Instant) {
        self.last_in = now;
        Metrics::add(&self.metrics.frames_in, 1);
        // Echo, so a peer with a shorter net_ticktime than ours hears from us in time.
        if self.output().is_empty() {
            wire::push_tick(&mut self.out);
            self.sent(now);
        }
    }

    /// Takes one data frame (without its length).
    pub(crate) fn handle_frame(&mut self, frame: &[u8], now: Instant) -> Result<(), CloseReason> {
        self.last_in = now;
        Metrics::add(&self.metrics.frames_in, 1);
        let Some((&tag, rest)) = frame.split_first() else {
            return Ok(());
        };
        if tag != wire::PASS_THROUGH {
            return Err(CloseReason::Protocol(format!(
                "frame tag {tag} (only pass-through 112 is negotiated)"
            )));
        }
        // A reply to one of our calls, recognised from its bytes without building terms.
        if let Some(used) = self.send_to_caller_len(rest) {
            if used < rest.len() && self.reply_fast(&rest[used..], now) {
                return Ok(());
            }
        }
        let (control, used) = gater_term::decode_prefix(rest, &self.config.limits)
            .map_err(|e| CloseReason::Decode(e.to_string()))?;
        // Replies to our calls skip decoding here: the caller decodes them.
        if used < rest.len()
            && self.is_send_to_caller(&control)
            && self.reply_fast(&rest[used..], now)
        {
            return Ok(());
        }
        let message = if used < rest.len() {
            Some(
                gater_term::decode(&rest[used..], &self.config.limits)
                    .map_err(|e| CloseReason::Decode(e.to_string()))?,
            )
        } else {
            None
        };
        let Term::Tuple(Tuple { elements: c }) = control else {
            return Err(CloseReason::Protocol(
                "control message is not a tuple".into(),
            ));
        };
        let op = c.first().and_then(as_int).unwrap_or(-1) as i32;
        match (op, c.len()) {
            (wire::SEND, 3)
            | (wire::SEND_TT, 4)
            | (wire::SEND_SENDER, 3)
            | (wire::SEND_SENDER_TT, 4) => {
                if let (Term::Pid(to), Some(msg)) = (&c[2], message) {
                    self.deliver(to, msg, now);
                }
            }
            (wire::REG_SEND, 4) | (wire::REG_SEND_TT, 5) => {
                if let (Some(name), Some(msg)) = (as_atom(&c[3]), message) {
                    self.deliver_named(name, msg, now);
                }
            }
            (wire::ALIAS_SEND, 3) | (wire::ALIAS_SEND_TT, 4) => self.dropped("alias send"),
            (wire::MONITOR_P, 4) => self.peer_monitors(&c[1], &c[2], &c[3], now),
            (wire::DEMONITOR_P, 4) => self.peer_demonitors(&c[2], &c[3]),
            (wire::MONITOR_P_EXIT, 5) => self.monitor_fired(&c[3], c[4].clone(), now),
            (wire::PAYLOAD_MONITOR_P_EXIT, 4) => {
                let reason = message.unwrap_or_else(|| atom("noproc"));
                self.monitor_fired(&c[3], reason, now)
            }
            (wire::LINK, 3) => self.peer_links(&c[1], &c[2], now),
            (wire::UNLINK, 3) => self.unlink(&c[2], &c[1]),
            (wire::UNLINK_ID, 4) => {
                self.unlink(&c[3], &c[2]);
                let ack = tuple(vec![
                    int(wire::UNLINK_ID_ACK),
                    c[1].clone(),
                    c[3].clone(),
                    c[2].clone(),
                ]);
                self.push(&ack, None, now);
                Metrics::add(&self.metrics.served_requests, 1);
            }
            (wire::UNLINK_ID_ACK, 4) => {}
            // A linked peer process exited: the link is gone.
            (wire::EXIT, 4)
            | (wire::EXIT_TT, 5)
            | (wire::PAYLOAD_EXIT, 3)
            | (wire::PAYLOAD_EXIT_TT, 4) => self.unlink(&c[2], &c[1]),
            // Exit signals to our processes are ignored: a mailbox ends only when its
            // receiver is dropped or the connection closes.
            (wire::EXIT2, 4)
            | (wire::EXIT2_TT, 5)
            | (wire::PAYLOAD_EXIT2, 3)
            | (wire::PAYLOAD_EXIT2_TT, 4) => {}
            (wire::GROUP_LEADER, 3) => {}
            (wire::SPAWN_REQUEST, 6) | (wire::SPAWN_REQUEST_TT, 7) => {
                let args = message.unwrap_or_else(nil);
                self.spawn_request(&c[1], &c[2], &c[4], &c[5], args, now)
            }
            _ => tracing::debug!(op, "ignored an unknown control message"),
        }
        Ok(())
    }

    fn dropped(&self, what: &str) {
        tracing::trace!(what, "dropped a message");
        Metrics::add(&self.metrics.dropped_messages, 1);
    }

    fn local_number(&self, t: &Term) -> Option<u32> {
        match t {
            Term::Pid(p) => wire::pid_number(p, &self.local.node, self.local.creation),
            _ => None,
        }
    }

    fn deliver(&mut self, to: &eetf::Pid, msg: Term, now: Instant) {
        let Some(n) = wire::pid_number(to, &self.local.node, self.local.creation) else {
            return self.dropped("pid of another incarnation");
        };
        if n == CALLER_PID {
            return self.caller_message(msg, now);
        }
        self.deliver_local(n, msg, now);
    }

    fn deliver_local(&mut self, n: u32, msg: Term, now: Instant) {
        let Some(proc_) = self.procs.get(&n) else {
            return self.dropped("dead pid");
        };
        let Some(tx) = &proc_.tx else { return };
        match tx.try_send(msg) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(pid = n, "mailbox full: closing it");
                self.dropped("full mailbox");
                self.exit_local(n, atom("mailbox_overflow"), now);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.dropped("closed mailbox");
                self.exit_local(n, atom("normal"), now);
            }
        }
    }

    fn is_send_to_caller(&self, control: &Term) -> bool {
        let Term::Tuple(Tuple { elements: c }) = control else {
            return false;
        };
        let op = c.first().and_then(as_int).unwrap_or(-1) as i32;
        let send = matches!(
            (op, c.len()),
            (wire::SEND, 3)
                | (wire::SEND_TT, 4)
                | (wire::SEND_SENDER, 3)
                | (wire::SEND_SENDER_TT, 4)
        );
        send && self.local_number(&c[2]) == Some(CALLER_PID)
    }

    /// The length of `rest`'s control term if it is `{SEND, _, CallerPid}` (`131` first),
    /// read from its bytes.
    fn send_to_caller_len(&self, rest: &[u8]) -> Option<usize> {
        let [131, 104, 3, 97, op, after @ ..] = rest else {
            return None;
        };
        if i32::from(*op) != wire::SEND {
            return None;
        }
        let (_, unused) = wire::read_atom(after)?;
        let ((node, id, serial, creation), pid) = wire::read_pid(&after[unused..])?;
        let caller = &self.local.caller;
        let ours = node == self.local.node.as_bytes()
            && (id, serial, creation) == (caller.id, caller.serial, caller.creation);
        ours.then_some(5 + unused + pid)
    }

    /// Routes `{Ref, Reply}` (encoded) by its reference without decoding `Reply`.
    /// Returns false when `message` does not have that shape: the slow path then decodes it.
    fn reply_fast(&mut self, message: &[u8], now: Instant) -> bool {
        // 131, SMALL_TUPLE_EXT, arity 2, then the reference.
        let [131, 104, 2, after @ ..] = message else {
            return false;
        };
        if let Some((key, used)) = wire::read_our_ref(after, &self.local.node, self.local.creation)
        {
            self.route_reply(key, &after[used..], now);
            return true;
        }
        // The reference alone, with a version byte in front: it is short (node name + 20 bytes).
        let mut head = [0u8; 320];
        let n = after.len().min(head.len() - 1);
        head[0] = 131;
        head[1..=n].copy_from_slice(&after[..n]);
        let Ok((Term::Reference(r), used)) =
            gater_term::decode_prefix(&head[..=n], &self.config.limits)
        else {
            return false;
        };
        let Some(key) = wire::ref_key(&r, &self.local.node, self.local.creation) else {
            return false;
        };
        self.route_reply(key, &after[used - 1..], now);
        true
    }

    /// Hands the encoded reply (without its version byte) to call `key`, if it waits.
    fn route_reply(&mut self, key: u64, reply_bytes: &[u8], now: Instant) {
        match self.calls.remove(&key) {
            Some(p) => {
                let mut encoded = Vec::with_capacity(reply_bytes.len() + 1);
                encoded.push(131);
                encoded.extend_from_slice(reply_bytes);
                self.finish(p, Ok(Reply::Encoded(encoded)), now);
            }
            None => self.dropped("late reply"),
        }
    }

    /// A message to the caller pid: a reply `{Ref, Reply}`, or an io request from an rpc.
    fn caller_message(&mut self, msg: Term, now: Instant) {
        let Term::Tuple(Tuple { mut elements }) = msg else {
            return self.dropped("non-tuple to caller");
        };
        if elements.len() == 2 {
            if let Term::Reference(r) = &elements[0] {
                if let Some(key) = wire::ref_key(r, &self.local.node, self.local.creation) {
                    match self.calls.remove(&key) {
                        Some(p) => {
                            let reply = elements.pop().unwrap_or_else(nil);
                            self.finish(p, Ok(Reply::Decoded(reply)), now);
                        }
                        None => self.dropped("late reply"),
                    }
                    return;
                }
            }
        }
        // {io_request, From, ReplyAs, Request} from a process whose group leader we are.
        if elements.len() == 4 && as_atom(&elements[0]) == Some("io_request") {
            if let Term::Pid(from) = &elements[1] {
                let reply = tuple(vec![atom("io_reply"), elements[2].clone(), atom("ok")]);
                let control = tuple(vec![int(wire::SEND), atom(""), Term::from(from.clone())]);
                self.push(&control, Some(&reply), now);
                Metrics::add(&self.metrics.served_requests, 1);
                return;
            }
        }
        self.dropped("unexpected message to caller")
    }

    fn deliver_named(&mut self, name: &str, msg: Term, now: Instant) {
        if !is_served_name(name) {
            return match self.names.get(name) {
                Some(&n) => self.deliver_local(n, msg, now),
                None => self.dropped("unknown registered name"),
            };
        }
        // {'$gen_call', {Pid, Tag}, Request}
        let Term::Tuple(Tuple { elements }) = msg else {
            return self.dropped("rex: not a call");
        };
        if elements.len() != 3 || as_atom(&elements[0]) != Some("$gen_call") {
            return self.dropped("rex: not a call");
        }
        let Term::Tuple(Tuple { elements: from }) = &elements[1] else {
            return self.dropped("rex: bad from");
        };
        let (Some(Term::Pid(pid)), Some(tag)) = (from.first(), from.get(1)) else {
            return self.dropped("rex: bad from");
        };
        let reply = match &elements[2] {
            // net_adm:ping(Us): answer as net_kernel does, so operators get `pong`.
            Term::Tuple(Tuple { elements: req })
                if name == "net_kernel"
                    && req.len() == 2
                    && as_atom(&req[0]) == Some("is_auth") =>
            {
                atom("yes")
            }
            _ if name == "net_kernel" => atom("ignored"),
            Term::Tuple(Tuple { elements: req })
                if req.len() >= 4 && as_atom(&req[0]) == Some("call") =>
            {
                match serve_rpc(&req[1], &req[2], &req[3]) {
                    Ok(value) => value,
                    // What OTP's rex answers for a function that does not exist.
                    Err(stack) => tuple(vec![
                        atom("badrpc"),
                        tuple(vec![atom("EXIT"), tuple(vec![atom("undef"), stack])]),
                    ]),
                }
            }
            _ => tuple(vec![atom("badrpc"), atom("not_supported_by_exesdb_gater")]),
        };
        let tagged = tuple(vec![tag.clone(), reply]);
        // A tag [alias | Ref] (OTP 24+) wants the reply at the alias.
        let control = match tag {
            Term::ImproperList(ImproperList { elements, last })
                if elements.len() == 1 && as_atom(&elements[0]) == Some("alias") =>
            {
                tuple(vec![
                    int(wire::ALIAS_SEND),
                    Term::from(self.local.caller.clone()),
                    (**last).clone(),
                ])
            }
            _ => tuple(vec![int(wire::SEND), atom(""), Term::from(pid.clone())]),
        };
        self.push(&control, Some(&tagged), now);
        Metrics::add(&self.metrics.served_requests, 1);
    }

    /// `spawn_request` from the peer. OTP 25+ `rpc:call` is `erpc:call`, which spawns
    /// `erpc:execute_call(Ref, M, F, A)` on the target node and reads the result from the
    /// exit reason `{Ref, return, Value}` of that process's monitor. We answer it without
    /// a process: SPAWN_REPLY with a fresh pid, then the exit signals at once.
    fn spawn_request(
        &mut self,
        req_id: &Term,
        from: &Term,
        mfa: &Term,
        opts: &Term,
        args: Term,
        now: Instant,
    ) {
        Metrics::add(&self.metrics.served_requests, 1);
        let opts: &[Term] = match opts {
            Term::List(l) => &l.elements,
            _ => &[],
        };
        let has = |name: &str| {
            opts.iter().any(|o| match o {
                Term::Atom(a) => a.name == name,
                Term::Tuple(t) => t.elements.first().and_then(as_atom) == Some(name),
                _ => false,
            })
        };
        let (link, monitor) = (has("link"), has("monitor"));
        let mfa: Vec<&str> = match mfa {
            Term::Tuple(t) => t.elements.iter().filter_map(as_atom).collect(),
            _ => Vec::new(),
        };
        let args = match args {
            Term::List(l) => l.elements,
            _ => Vec::new(),
        };
        let reason = match (mfa.as_slice(), args.as_slice()) {
            (["erpc", "execute_call"], [res, m, f, a]) => Some(match serve_rpc(m, f, a) {
                Ok(value) => tuple(vec![res.clone(), atom("return"), value]),
                Err(undef) => tuple(vec![res.clone(), atom("error"), atom("undef"), undef]),
            }),
            (["erpc", "execute_cast"], _) => Some(atom("normal")),
            _ => None,
        };
        let Some(reason) = reason else {
            let reply = tuple(vec![
                int(wire::SPAWN_REPLY),
                req_id.clone(),
                from.clone(),
                int(0),
                atom("notsup"),
            ]);
            return self.push(&reply, None, now);
        };
        let pid = Term::from(self.local.pid(self.local.next_pid_number()));
        let flags = if link { wire::SPAWN_FLAG_LINK } else { 0 }
            | if monitor { wire::SPAWN_FLAG_MONITOR } else { 0 };
        let reply = tuple(vec![
            int(wire::SPAWN_REPLY),
            req_id.clone(),
            from.clone(),
            int(flags),
            pid.clone(),
        ]);
        self.push(&reply, None, now);
        if monitor {
            let exit = tuple(vec![
                int(wire::MONITOR_P_EXIT),
                pid.clone(),
                from.clone(),
                req_id.clone(),
                reason.clone(),
            ]);
            self.push(&exit, None, now);
        }
        if link {
            let exit = tuple(vec![int(wire::EXIT), pid, from.clone(), reason]);
            self.push(&exit, None, now);
        }
    }

    fn peer_monitors(&mut self, watcher: &Term, target: &Term, reference: &Term, now: Instant) {
        Metrics::add(&self.metrics.served_requests, 1);
        if as_atom(target).is_some_and(is_served_name) {
            self.name_watchers.push(reference.clone());
            return self.publish_gauges();
        }
        let number = match target {
            Term::Atom(a) => self.names.get(&a.name).copied(),
            other => self.local_number(other),
        };
        if let Some(p) = number.and_then(|n| self.procs.get_mut(&n)) {
            p.watchers
                .push((watcher.clone(), reference.clone(), target.clone()));
            return self.publish_gauges();
        }
        // As OTP: a monitor on a process that does not exist fires at once.
        let control = tuple(vec![
            int(wire::MONITOR_P_EXIT),
            target.clone(),
            watcher.clone(),
            reference.clone(),
            atom("noproc"),
        ]);
        self.push(&control, None, now);
    }

    fn peer_demonitors(&mut self, target: &Term, reference: &Term) {
        if as_atom(target).is_some_and(is_served_name) {
            self.name_watchers.retain(|r| r != reference);
            return self.publish_gauges();
        }
        let number = match target {
            Term::Atom(a) => self.names.get(&a.name).copied(),
            other => self.local_number(other),
        };
        if let Some(p) = number.and_then(|n| self.procs.get_mut(&n)) {
            p.watchers.retain(|(_, r, _)| r != reference);
            self.publish_gauges();
        }
    }

    fn peer_links(&mut self, from: &Term, to: &Term, now: Instant) {
        Metrics::add(&self.metrics.served_requests, 1);
        if let Some(n) = self.local_number(to) {
            if let Some(p) = self.procs.get_mut(&n) {
                p.links.push(from.clone());
                return;
            }
        }
        let control = tuple(vec![
            int(wire::EXIT),
            to.clone(),
            from.clone(),
            atom("noproc"),
        ]);
        self.push(&control, None, now);
    }

    fn unlink(&mut self, ours: &Term, theirs: &Term) {
        if let Some(n) = self.local_number(ours) {
            if let Some(p) = self.procs.get_mut(&n) {
                p.links.retain(|l| l != theirs);
            }
        }
    }

    /// One of our monitors on the peer fired: every call to that target ends now.
    fn monitor_fired(&mut self, reference: &Term, reason: Term, now: Instant) {
        let Term::Reference(r) = reference else {
            return;
        };
        let Some(ref_key) = wire::ref_key(r, &self.local.node, self.local.creation) else {
            return;
        };
        let Some(mk) = self.monitor_keys.remove(&ref_key) else {
            return;
        };
        if let Some(m) = self.monitors.remove(&mk) {
            if m.idle_since.is_some() {
                self.idle_monitors -= 1;
            }
        }
        self.publish_own_monitors();
        let keys: Vec<u64> = self
            .calls
            .iter()
            .filter(|(_, p)| p.monitor.as_ref() == Some(&mk))
            .map(|(k, _)| *k)
            .collect();
        let error = if as_atom(&reason) == Some("noconnection") {
            CallError::ConnectionLost {
                node: self.local.peer.clone(),
            }
        } else {
            CallError::TargetDown { reason }
        };
        for k in keys {
            if let Some(mut p) = self.calls.remove(&k) {
                p.monitor = None; // already gone: no DEMONITOR
                self.finish(p, Err(error.clone()), now);
            }
        }
    }

    /// A local process ends: its watchers get MONITOR_P_EXIT, its links EXIT.
    fn exit_local(&mut self, number: u32, reason: Term, now: Instant) {
        if number == CALLER_PID {
            return;
        }
        let Some(p) = self.procs.remove(&number) else {
            return;
        };
        if let Some(name) = &p.name {
            self.names.remove(name);
        }
        self.publish_gauges();
        let me = Term::from(self.local.pid(number));
        for (watcher, reference, by) in p.watchers {
            let control = tuple(vec![
                int(wire::MONITOR_P_EXIT),
                by,
                watcher,
                reference,
                reason.clone(),
            ]);
            self.push(&control, None, now);
        }
        for linked in p.links {
            let control = tuple(vec![int(wire::EXIT), me.clone(), linked, reason.clone()]);
            self.push(&control, None, now);
        }
    }

    /// The connection is gone: every call in flight fails, every mailbox closes.
    pub(crate) fn fail_all(&mut self) {
        // Gauges first: a caller told of the loss sees them already withdrawn.
        self.monitors.clear();
        self.monitor_keys.clear();
        self.lingering.clear();
        self.idle_monitors = 0;
        self.procs.clear();
        self.names.clear();
        self.name_watchers.clear();
        self.publish_gauges();
        let node = self.local.peer.clone();
        for (_, p) in self.calls.drain() {
            self.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
            let e = CallError::ConnectionLost { node: node.clone() };
            self.metrics.count_error(&e);
            let _ = p.reply.send(Err(e));
        }
        self.deadlines.clear();
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        self.fail_all();
    }
}

/// Registered names the core itself answers `'$gen_call'`s for.
fn is_served_name(name: &str) -> bool {
    name == "rex" || name == "net_kernel"
}

/// The functions peers may rpc on us: `application:which_applications/0,1` answers `[]`
/// (so Swarm's tracker leaves the hidden gateway alone). Anything else is `undef`; the
/// error carries the stack OTP would report, `[{M, F, Args, []}]`.
fn serve_rpc(m: &Term, f: &Term, a: &Term) -> Result<Term, Term> {
    if as_atom(m) == Some("application") && as_atom(f) == Some("which_applications") {
        return Ok(nil());
    }
    let frame = tuple(vec![m.clone(), f.clone(), a.clone(), nil()]);
    Err(Term::from(eetf::List::from(vec![frame])))
}

/// `{badrpc, Reason}` is an error; anything else is the function's result.
pub(crate) fn rpc_result(reply: Term) -> Result<Term, CallError> {
    match reply {
        Term::Tuple(Tuple { mut elements })
            if elements.len() == 2 && as_atom(&elements[0]) == Some("badrpc") =>
        {
            let reason = elements.pop().unwrap_or_else(nil);
            Err(CallError::BadRpc { reason })
        }
        other => Ok(other),
    }
}
