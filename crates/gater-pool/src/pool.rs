//! The pool: one supervised connection per peer node, and the caller-facing API.

use crate::backoff::Backoff;
use crate::config::PoolConfig;
use crate::connection::{self, Limits};
use crate::core::{CallTo, Command, Core, CoreConfig, KeyHash, Local, MonitorKey, Reply};
use crate::handshake;
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::wire::{self, atom, int, tuple};
use crate::{CallError, ConnectError};
use eetf::{Atom, List, Pid, Term};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tracing::Instrument;

/// Whom a call or cast is for.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// A process, by pid (its node is the pid's node).
    Pid(Pid),
    /// A locally registered name on a node.
    Name {
        /// The registered name.
        name: String,
        /// The node, `name@host`.
        node: String,
    },
}

impl Target {
    /// A registered name on a node.
    pub fn name(name: impl Into<String>, node: impl Into<String>) -> Self {
        Target::Name {
            name: name.into(),
            node: node.into(),
        }
    }

    /// The node the target lives on.
    pub fn node(&self) -> &str {
        match self {
            Target::Pid(p) => &p.node.name,
            Target::Name { node, .. } => node,
        }
    }
}

impl From<Pid> for Target {
    fn from(p: Pid) -> Self {
        Target::Pid(p)
    }
}

impl From<(&str, &str)> for Target {
    /// `(registered_name, node)`.
    fn from((name, node): (&str, &str)) -> Self {
        Target::name(name, node)
    }
}

/// A change in the pool's connections, for the layers above.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeEvent {
    /// A handshake with the node succeeded.
    Up {
        /// The node.
        node: String,
        /// The peer's creation (its incarnation), when it sent one.
        peer_creation: Option<u32>,
    },
    /// The connection to the node closed; the pool reconnects with back-off.
    Down {
        /// The node.
        node: String,
        /// Why, in words.
        reason: String,
    },
    /// A connection attempt failed (once per back-off step).
    ConnectFailed {
        /// The node.
        node: String,
        /// The error.
        error: ConnectError,
    },
}

/// A live connection as callers see it.
#[derive(Clone)]
struct ConnHandle {
    commands: mpsc::Sender<Command>,
    housekeeping: mpsc::UnboundedSender<Command>,
    local: Arc<Local>,
}

struct Peer {
    /// Behind an `Arc`: a call clones one pointer, not three channel handles.
    current: RwLock<Option<Arc<ConnHandle>>>,
    stop: watch::Sender<bool>,
}

struct Inner {
    config: PoolConfig,
    peers: RwLock<HashMap<String, Arc<Peer>, KeyHash>>,
    events: broadcast::Sender<NodeEvent>,
    metrics: Arc<Metrics>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(peers) = self.peers.read() {
            for p in peers.values() {
                let _ = p.stop.send(true);
            }
        }
    }
}

/// Hidden-node connections to Erlang nodes, with calls multiplexed over them.
///
/// Cheap to clone; all clones share the connections. Connections are supervised by
/// tasks on the current tokio runtime and stop when the last clone is dropped or
/// [`Pool::disconnect`] is called.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("node_name", &self.inner.config.node_name)
            .finish()
    }
}

/// A local process of the pool: its pid, and the messages peers send to it.
///
/// A mailbox belongs to one connection (its pid carries that connection's creation):
/// [`Mailbox::recv`] returns `None` once the connection is gone or the mailbox
/// overflowed. Dropping it frees the pid; peers monitoring it get `MONITOR_P_EXIT`
/// with reason `normal`.
#[derive(Debug)]
pub struct Mailbox {
    pid: Pid,
    rx: mpsc::Receiver<Term>,
    number: u32,
    housekeeping: mpsc::UnboundedSender<Command>,
}

impl Mailbox {
    /// The pid to give to peers.
    pub fn pid(&self) -> &Pid {
        &self.pid
    }

    /// The next message, or `None` when the mailbox is closed.
    pub async fn recv(&mut self) -> Option<Term> {
        self.rx.recv().await
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        let _ = self.housekeeping.send(Command::CloseMailbox {
            number: self.number,
        });
    }
}

impl Pool {
    /// A pool with these settings; it connects to nothing until [`Pool::connect`].
    pub fn new(config: PoolConfig) -> Self {
        let (events, _) = broadcast::channel(config.event_capacity.max(1));
        Self {
            inner: Arc::new(Inner {
                config,
                peers: RwLock::new(HashMap::default()),
                events,
                metrics: Arc::new(Metrics::default()),
            }),
        }
    }

    /// Our node name.
    pub fn node_name(&self) -> &str {
        &self.inner.config.node_name
    }

    /// Node up/down events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.inner.events.subscribe()
    }

    /// The counters now.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner.metrics.snapshot()
    }

    /// Whether a connection to `node` is up.
    pub fn is_connected(&self, node: &str) -> bool {
        self.handle(node).is_some()
    }

    /// The nodes with a live connection.
    pub fn connected_nodes(&self) -> Vec<String> {
        let peers = self
            .inner
            .peers
            .read()
            .map(|p| p.clone())
            .unwrap_or_default();
        peers
            .into_iter()
            .filter(|(_, p)| p.current.read().map(|c| c.is_some()).unwrap_or(false))
            .map(|(n, _)| n)
            .collect()
    }

    /// Adds `node` to the pool and waits for the first connection attempt.
    ///
    /// On error the node stays in the pool and is retried with back-off (see the
    /// [`NodeEvent`]s); [`Pool::disconnect`] removes it. Connecting to a node that is
    /// already up returns at once.
    pub async fn connect(&self, node: &str) -> Result<(), ConnectError> {
        handshake::split_node(node)?;
        if self.is_connected(node) {
            return Ok(());
        }
        let (first_tx, first_rx) = oneshot::channel();
        {
            let mut peers = self
                .inner
                .peers
                .write()
                .map_err(|_| ConnectError::Cancelled { node: node.into() })?;
            if !peers.contains_key(node) {
                let (stop, stop_rx) = watch::channel(false);
                let peer = Arc::new(Peer {
                    current: RwLock::new(None),
                    stop,
                });
                peers.insert(node.to_owned(), peer.clone());
                let inner = Arc::downgrade(&self.inner);
                let span = tracing::info_span!("dist_peer", peer = node);
                tokio::spawn(
                    supervise(inner, node.to_owned(), peer, stop_rx, Some(first_tx))
                        .instrument(span),
                );
            } else {
                drop(first_tx);
            }
        }
        match first_rx.await {
            Ok(r) => r,
            // Already supervised by an earlier connect: wait for the next up or failure.
            Err(_) => self.wait_for(node).await,
        }
    }

    async fn wait_for(&self, node: &str) -> Result<(), ConnectError> {
        let mut events = self.subscribe();
        if self.is_connected(node) {
            return Ok(());
        }
        let deadline = self.inner.config.connect_timeout * 2 + self.inner.config.backoff_max;
        let wait = async {
            loop {
                match events.recv().await {
                    Ok(NodeEvent::Up { node: n, .. }) if n == node => return Ok(()),
                    Ok(NodeEvent::ConnectFailed { node: n, error }) if n == node => {
                        return Err(error);
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        return Err(ConnectError::Cancelled { node: node.into() });
                    }
                    _ => {}
                }
            }
        };
        tokio::time::timeout(deadline, wait)
            .await
            .unwrap_or_else(|_| Err(ConnectError::Timeout { node: node.into() }))
    }

    /// Removes `node`: closes its connection (calls in flight fail) and stops reconnecting.
    pub fn disconnect(&self, node: &str) {
        let peer = self
            .inner
            .peers
            .write()
            .ok()
            .and_then(|mut p| p.remove(node));
        if let Some(p) = peer {
            let _ = p.stop.send(true);
        }
    }

    fn handle(&self, node: &str) -> Option<Arc<ConnHandle>> {
        let peers = self.inner.peers.read().ok()?;
        let peer = peers.get(node)?;
        let current = peer.current.read().ok()?;
        current.clone()
    }

    fn handle_or_err(&self, node: &str) -> Result<Arc<ConnHandle>, CallError> {
        self.handle(node).ok_or_else(|| {
            let e = CallError::NotConnected {
                node: node.to_owned(),
            };
            self.inner.metrics.count_error(&e);
            e
        })
    }

    /// `gen_server:call(Target, Request, Timeout)`: sends `{'$gen_call', {Self, Ref},
    /// Request}` and waits for `{Ref, Reply}`.
    ///
    /// The target is monitored while calls to it are in flight (one monitor per target,
    /// shared by its calls), so the call ends at once with [`CallError::TargetDown`] when
    /// it dies or does not exist, and with [`CallError::ConnectionLost`] when the node
    /// goes down.
    pub async fn call(
        &self,
        target: impl Into<Target>,
        request: Term,
        timeout: Duration,
    ) -> Result<Term, CallError> {
        self.call_inner(&target.into(), request, timeout, false)
            .await
    }

    async fn call_inner(
        &self,
        target: &Target,
        request: Term,
        timeout: Duration,
        rpc: bool,
    ) -> Result<Term, CallError> {
        let reply = self.call_reply(target, request, timeout, rpc).await?;
        self.finish_call(reply, rpc)
    }

    /// As [`Pool::call`], but hands back the reply as undecoded external term format
    /// bytes (what [`gater_term::decode`] reads), so the caller can decode it straight
    /// into its own types (gater-term's serde path) with its own limits.
    pub async fn call_encoded(
        &self,
        target: impl Into<Target>,
        request: Term,
        timeout: Duration,
    ) -> Result<Vec<u8>, CallError> {
        match self
            .call_reply(&target.into(), request, timeout, false)
            .await?
        {
            Reply::Encoded(bytes) => Ok(bytes),
            Reply::Decoded(t) => Ok(gater_term::encode(&t)),
        }
    }

    async fn call_reply(
        &self,
        target: &Target,
        request: Term,
        timeout: Duration,
        rpc: bool,
    ) -> Result<Reply, CallError> {
        let node = target.node();
        let conn = self.handle_or_err(node)?;
        Metrics::add(&self.inner.metrics.calls, 1);
        let deadline = Instant::now() + timeout;
        let key = conn.local.next_ref_key();
        let (to, monitor) = match target {
            Target::Pid(p) => (CallTo::Pid(p), MonitorKey::of_pid(p)),
            Target::Name { name, .. } => (CallTo::Name(name), MonitorKey::Name(name.clone())),
        };
        let frame = conn.local.call_frame(to, key, &request);
        drop(request);
        let monitor = (!rpc).then_some(monitor);
        let (tx, rx) = oneshot::channel();
        let cmd = Command::Call {
            key,
            monitor,
            frame,
            deadline,
            reply: tx,
        };
        let lost = || CallError::ConnectionLost {
            node: node.to_owned(),
        };
        let span = tracing::debug_span!("call", peer = node, key, rpc);
        let reply = async {
            // The usual case needs no timer of its own: the core answers every call by its
            // deadline, or drops it with the connection. Only a full queue makes us wait.
            match conn.commands.try_send(cmd) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(lost()),
                Err(mpsc::error::TrySendError::Full(cmd)) => {
                    match tokio::time::timeout_at(deadline.into(), conn.commands.send(cmd)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return Err(lost()),
                        Err(_) => {
                            self.inner.metrics.count_error(&CallError::Timeout);
                            return Err(CallError::Timeout);
                        }
                    }
                }
            }
            rx.await.map_err(|_| lost())?
        }
        .instrument(span)
        .await?;
        Ok(reply)
    }

    fn finish_call(&self, reply: Reply, rpc: bool) -> Result<Term, CallError> {
        // Decoding happens here, on the caller's task, with the pool's limits.
        let term = match reply {
            Reply::Decoded(t) => Ok(t),
            Reply::Encoded(bytes) => gater_term::decode(&bytes, &self.inner.config.decode_limits)
                .map_err(|e| CallError::BadReply {
                    reason: e.to_string(),
                }),
        };
        let result = term.and_then(|t| {
            if rpc {
                crate::core::rpc_result(t)
            } else {
                Ok(t)
            }
        });
        if let Err(e) = &result {
            self.inner.metrics.count_error(e);
        }
        result
    }

    /// `gen_server:cast(Target, Request)`: sends `{'$gen_cast', Request}`.
    pub async fn cast(&self, target: impl Into<Target>, request: Term) -> Result<(), CallError> {
        self.send(target, tuple(vec![atom("$gen_cast"), request]))
            .await
    }

    /// `Target ! Message`. Waits only while the connection's command queue is full.
    pub async fn send(&self, target: impl Into<Target>, message: Term) -> Result<(), CallError> {
        let target = target.into();
        let conn = self.handle_or_err(target.node())?;
        let mut frame = Vec::with_capacity(64);
        let control = match &target {
            Target::Pid(p) => tuple(vec![int(wire::SEND), atom(""), Term::from(p.clone())]),
            Target::Name { name, .. } => tuple(vec![
                int(wire::REG_SEND),
                Term::from(conn.local.caller.clone()),
                atom(""),
                atom(name),
            ]),
        };
        wire::push_frame(&mut frame, &control, Some(&message));
        Metrics::add(&self.inner.metrics.casts, 1);
        conn.commands
            .send(Command::Send { frame })
            .await
            .map_err(|_| CallError::ConnectionLost {
                node: target.node().to_owned(),
            })
    }

    /// `rpc:call(Node, Module, Function, Args, Timeout)` through the peer's `rex`.
    /// `{badrpc, Reason}` is [`CallError::BadRpc`].
    pub async fn rpc(
        &self,
        node: &str,
        module: &str,
        function: &str,
        args: Vec<Term>,
        timeout: Duration,
    ) -> Result<Term, CallError> {
        let conn = self.handle_or_err(node)?;
        let request = tuple(vec![
            atom("call"),
            Term::from(Atom::from(module)),
            Term::from(Atom::from(function)),
            Term::from(List::from(args)),
            // We are the group leader: io requests of the function are answered `ok`.
            Term::from(conn.local.caller.clone()),
        ]);
        let target = Target::name("rex", node);
        self.call_inner(&target, request, timeout, true).await
    }

    /// A new local process on the connection to `node`.
    pub fn mailbox(&self, node: &str) -> Result<Mailbox, CallError> {
        let conn = self.handle_or_err(node)?;
        let number = conn.local.next_pid_number();
        let (tx, rx) = mpsc::channel(self.inner.config.mailbox_capacity.max(1));
        conn.housekeeping
            .send(Command::OpenMailbox { number, tx })
            .map_err(|_| CallError::ConnectionLost {
                node: node.to_owned(),
            })?;
        Ok(Mailbox {
            pid: conn.local.pid(number),
            rx,
            number,
            housekeeping: conn.housekeeping.clone(),
        })
    }
}

impl Pool {
    /// A new local process on the connection to `node`, registered there under `name`
    /// (peers can send to `{Name, OurNode}` and monitor it by name). The name is freed
    /// with the mailbox. Fails with [`CallError::InvalidTarget`] when the name is taken.
    pub async fn named_mailbox(&self, node: &str, name: &str) -> Result<Mailbox, CallError> {
        let mailbox = self.mailbox(node)?;
        let (tx, rx) = oneshot::channel();
        let cmd = Command::Register {
            number: mailbox.number,
            name: name.to_owned(),
            reply: tx,
        };
        let lost = || CallError::ConnectionLost {
            node: node.to_owned(),
        };
        mailbox.housekeeping.send(cmd).map_err(|_| lost())?;
        match rx.await {
            Ok(true) => Ok(mailbox),
            Ok(false) => Err(CallError::InvalidTarget(format!(
                "name {name} is already registered on our side of {node}"
            ))),
            Err(_) => Err(lost()),
        }
    }
}

/// Connects, runs, and reconnects one peer until told to stop or the pool is dropped.
async fn supervise(
    inner: std::sync::Weak<Inner>,
    node: String,
    peer: Arc<Peer>,
    mut stop: watch::Receiver<bool>,
    mut first: Option<oneshot::Sender<Result<(), ConnectError>>>,
) {
    let Some(cfg) = inner.upgrade().map(|i| i.config.clone()) else {
        return;
    };
    let mut backoff = Backoff::new(cfg.backoff_base, cfg.backoff_max, 0.2);
    let mut was_up = false;
    loop {
        if *stop.borrow() {
            break;
        }
        let attempt = tokio::time::timeout(
            cfg.connect_timeout,
            handshake::connect(
                &cfg.node_name,
                &cfg.cookie,
                &node,
                cfg.epmd_host.as_deref(),
                cfg.epmd_port,
            ),
        );
        let result = tokio::select! {
            r = attempt => r.unwrap_or_else(|_| Err(ConnectError::Timeout { node: node.clone() })),
            _ = stop.changed() => break,
        };
        let Some(pool) = inner.upgrade() else { break };
        match result {
            Ok(hs) => {
                let metrics = pool.metrics.clone();
                Metrics::add(&metrics.connects, 1);
                if was_up {
                    Metrics::add(&metrics.reconnects, 1);
                }
                was_up = true;
                let local = Arc::new(Local::new(&cfg.node_name, hs.our_creation, &node));
                let core = Core::new(
                    local.clone(),
                    CoreConfig {
                        limits: cfg.decode_limits,
                        net_ticktime: cfg.net_ticktime,
                        monitor_linger: cfg.monitor_linger,
                    },
                    metrics.clone(),
                    Instant::now(),
                );
                let (cmd_tx, cmd_rx) = mpsc::channel(cfg.command_queue.max(1));
                let (house_tx, house_rx) = mpsc::unbounded_channel();
                if let Ok(mut c) = peer.current.write() {
                    *c = Some(Arc::new(ConnHandle {
                        commands: cmd_tx,
                        housekeeping: house_tx,
                        local,
                    }));
                }
                tracing::info!(
                    creation = hs.our_creation,
                    peer_flags = format!("{:#x}", hs.peer_flags),
                    "connected"
                );
                let _ = pool.events.send(NodeEvent::Up {
                    node: node.clone(),
                    peer_creation: hs.peer_creation,
                });
                if let Some(f) = first.take() {
                    let _ = f.send(Ok(()));
                }
                let limits = Limits {
                    max_frame_len: cfg.max_frame_len,
                    max_write_buffer: cfg.max_write_buffer,
                };
                drop(pool);
                let started = Instant::now();
                let span = tracing::info_span!("dist_conn", creation = hs.our_creation);
                let run = connection::run(hs.stream, core, cmd_rx, house_rx, limits, metrics)
                    .instrument(span);
                let mut stopped = false;
                // The run future owns the core; cancelling it fails the calls in flight.
                let reason = tokio::select! {
                    r = run => r,
                    _ = stop.changed() => { stopped = true; crate::core::CloseReason::Shutdown }
                };
                if let Ok(mut c) = peer.current.write() {
                    *c = None;
                }
                tracing::warn!(%reason, "connection closed");
                if let Some(pool) = inner.upgrade() {
                    let _ = pool.events.send(NodeEvent::Down {
                        node: node.clone(),
                        reason: reason.to_string(),
                    });
                }
                if stopped {
                    break;
                }
                if started.elapsed() > Duration::from_secs(5) {
                    backoff.reset();
                }
            }
            Err(error) => {
                Metrics::add(&pool.metrics.connect_failures, 1);
                tracing::warn!(%error, attempt = backoff.attempt(), "connection attempt failed");
                let _ = pool.events.send(NodeEvent::ConnectFailed {
                    node: node.clone(),
                    error: error.clone(),
                });
                if let Some(f) = first.take() {
                    let _ = f.send(Err(error));
                }
            }
        }
        let delay = backoff.next_delay();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop.changed() => break,
        }
    }
    if let Ok(mut c) = peer.current.write() {
        *c = None;
    }
}
