//! The async shell: sockets, timers and tasks around the pure core.
//!
//! ```text
//!  gossip socket ──► listener task ──┐
//!  (opt-in) sender task ──► socket   │ Observation
//!  EPMD poller task (per host) ──────┼──► hub task (owns Liveness) ──► DiscoveryEvent channel
//!  static list ──────────────────────┘        ▲ sleeps until Liveness::poll_timeout
//! ```

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::{Rng as _, RngExt as _};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::{DiscoveryConfig, EpmdConfig, GossipConfig, SenderConfig};
use crate::epmd;
use crate::liveness::{DiscoveryEvent, Liveness, Source};
use crate::node::NodeName;
use crate::packet::{Counters, HeartbeatCodec, IV_LEN, MAX_DATAGRAM_LEN, Rejection};

/// Receive buffer asked of the kernel, so that a burst of garbage does not push a valid
/// heartbeat out of the queue (the kernel caps it at `net.core.rmem_max`).
const RECV_BUFFER_BYTES: usize = 1 << 20;

/// Why discovery could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The gossip socket could not be set up: the port is taken by a process that did
    /// not set SO_REUSEPORT, the bind or interface address is not on this host, or the
    /// group is not a multicast address.
    #[error("gossip socket {bind}: {step}: {source}")]
    Socket {
        /// Address the socket was to bind to.
        bind: SocketAddrV4,
        /// The step that failed (`bind`, `join multicast group`, ...).
        step: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// [`Discovery::start`] was called outside a Tokio runtime.
    #[error("discovery must be started inside a Tokio runtime")]
    NoRuntime,
}

/// Opens the gossip socket as libcluster does: SO_REUSEADDR and SO_REUSEPORT (to share the
/// port with ExESDB nodes on the same host), SO_BROADCAST, bound to
/// `bind_addr:port`, and unless `broadcast_only`, the multicast TTL, loop and interface
/// set and the group joined on `multicast_if` (or the kernel's choice).
pub fn gossip_socket(config: &GossipConfig) -> Result<std::net::UdpSocket, Error> {
    let bind = SocketAddrV4::new(config.bind_addr, config.port);
    let fail = |step| move |source| Error::Socket { bind, step, source };
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .map_err(fail("create socket"))?;
    socket
        .set_reuse_address(true)
        .map_err(fail("set SO_REUSEADDR"))?;
    #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos"))))]
    socket
        .set_reuse_port(true)
        .map_err(fail("set SO_REUSEPORT"))?;
    socket
        .set_broadcast(true)
        .map_err(fail("set SO_BROADCAST"))?;
    // Best effort: the kernel silently caps it.
    let _ = socket.set_recv_buffer_size(RECV_BUFFER_BYTES);
    if !config.broadcast_only {
        socket
            .set_multicast_ttl_v4(config.multicast_ttl)
            .map_err(fail("set IP_MULTICAST_TTL"))?;
        socket
            .set_multicast_loop_v4(config.multicast_loop)
            .map_err(fail("set IP_MULTICAST_LOOP"))?;
        if let Some(interface) = config.multicast_if {
            socket
                .set_multicast_if_v4(&interface)
                .map_err(fail("set IP_MULTICAST_IF"))?;
        }
    }
    socket
        .set_nonblocking(true)
        .map_err(fail("set non-blocking"))?;
    socket.bind(&bind.into()).map_err(fail("bind"))?;
    if !config.broadcast_only {
        let interface = config.multicast_if.unwrap_or(Ipv4Addr::UNSPECIFIED);
        socket
            .join_multicast_v4(&config.multicast_addr, &interface)
            .map_err(fail("join multicast group"))?;
    }
    Ok(socket.into())
}

/// Datagram counters shared between the listener task and [`Discovery::counters`].
#[derive(Debug, Default)]
struct SharedCounters {
    accepted: AtomicU64,
    rejected: [AtomicU64; Rejection::COUNT],
}

impl SharedCounters {
    fn record(&self, outcome: &Result<NodeName, Rejection>) {
        match outcome {
            Ok(_) => self.accepted.fetch_add(1, Ordering::Relaxed),
            Err(r) => self.rejected[r.index()].fetch_add(1, Ordering::Relaxed),
        };
    }

    fn snapshot(&self) -> Counters {
        let mut rejected = [0; Rejection::COUNT];
        for (out, c) in rejected.iter_mut().zip(&self.rejected) {
            *out = c.load(Ordering::Relaxed);
        }
        Counters::from_parts(self.accepted.load(Ordering::Relaxed), rejected)
    }
}

#[derive(Debug)]
struct Observation {
    node: NodeName,
    source: Source,
}

/// Running discovery: every source merged into one channel of [`DiscoveryEvent`]s.
///
/// Dropping it stops every task it started.
#[derive(Debug)]
pub struct Discovery {
    events: mpsc::Receiver<DiscoveryEvent>,
    counters: Arc<SharedCounters>,
    refused: Arc<AtomicU64>,
    gossip_addr: Option<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl Discovery {
    /// Opens the sockets and starts the tasks; must be called inside a Tokio runtime.
    pub fn start(config: DiscoveryConfig) -> Result<Self, Error> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::NoRuntime);
        }
        let counters = Arc::new(SharedCounters::default());
        let (obs_tx, obs_rx) = mpsc::channel(1024);
        let (events_tx, events) = mpsc::channel(config.channel_capacity.max(1));
        let mut tasks = Vec::new();
        let mut gossip_addr = None;

        if let Some(gossip) = &config.gossip {
            let std_socket = gossip_socket(gossip)?;
            let socket = UdpSocket::from_std(std_socket).map_err(|source| Error::Socket {
                bind: SocketAddrV4::new(gossip.bind_addr, gossip.port),
                step: "register with tokio",
                source,
            })?;
            gossip_addr = socket.local_addr().ok();
            let socket = Arc::new(socket);
            let codec = HeartbeatCodec::new(gossip.secret.clone());
            if let Some(sender) = &gossip.sender {
                let dest = SocketAddrV4::new(gossip.multicast_addr, gossip.port);
                tasks.push(tokio::spawn(send_heartbeats(
                    Arc::clone(&socket),
                    codec.clone(),
                    sender.clone(),
                    dest,
                )));
            }
            // Our own heartbeats come back (multicast loop): never report ourselves.
            let ignore = gossip
                .ignore_node
                .clone()
                .or_else(|| gossip.sender.as_ref().map(|s| s.node.clone()));
            tasks.push(tokio::spawn(listen(
                socket,
                codec,
                ignore,
                Arc::clone(&counters),
                obs_tx.clone(),
            )));
        }
        if let Some(epmd) = &config.epmd {
            for host in &epmd.hosts {
                tasks.push(tokio::spawn(poll_epmd(
                    host.clone(),
                    epmd.clone(),
                    obs_tx.clone(),
                )));
            }
        }
        drop(obs_tx);
        let refused = Arc::new(AtomicU64::new(0));
        tasks.push(tokio::spawn(hub(
            Liveness::new(config.gone_after).with_max_nodes(config.max_nodes),
            config.static_nodes.clone(),
            obs_rx,
            events_tx,
            Arc::clone(&refused),
        )));
        Ok(Self {
            events,
            counters,
            refused,
            gossip_addr,
            tasks,
        })
    }

    /// The next event; `None` once every source has ended.
    pub async fn recv(&mut self) -> Option<DiscoveryEvent> {
        self.events.recv().await
    }

    /// The event channel itself, for `select!` loops.
    pub fn events(&mut self) -> &mut mpsc::Receiver<DiscoveryEvent> {
        &mut self.events
    }

    /// Datagrams accepted and rejected (per reason) so far.
    pub fn counters(&self) -> Counters {
        self.counters.snapshot()
    }

    /// New nodes refused because [`DiscoveryConfig::max_nodes`] nodes were already
    /// tracked: a growing count means someone announces made-up names.
    pub fn nodes_refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// The gossip socket's local address, when gossip is on.
    pub fn gossip_local_addr(&self) -> Option<SocketAddr> {
        self.gossip_addr
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// Owns the liveness table; the only place that reads the clock for it.
async fn hub(
    mut table: Liveness,
    static_nodes: Vec<NodeName>,
    mut observations: mpsc::Receiver<Observation>,
    events: mpsc::Sender<DiscoveryEvent>,
    refused: Arc<AtomicU64>,
) {
    for node in &static_nodes {
        if let Some(event) = table.pin(now(), node, Source::Static) {
            if events.send(event).await.is_err() {
                return;
            }
        }
    }
    let mut sources_open = true;
    loop {
        let deadline = table.poll_timeout();
        if !sources_open && deadline.is_none() {
            return;
        }
        tokio::select! {
            obs = observations.recv(), if sources_open => match obs {
                Some(Observation { node, source }) => {
                    let event = table.observe(now(), &node, source);
                    refused.store(table.refused(), Ordering::Relaxed);
                    if let Some(event) = event {
                        tracing::info!(%node, source = ?event.source(), "node seen");
                        if events.send(event).await.is_err() {
                            return;
                        }
                    }
                }
                None => sources_open = false,
            },
            () = sleep_until(deadline) => {
                for event in table.expire(now()) {
                    tracing::info!(node = %event.node(), "node gone");
                    if events.send(event).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

async fn listen(
    socket: Arc<UdpSocket>,
    codec: HeartbeatCodec,
    ignore: Option<NodeName>,
    counters: Arc<SharedCounters>,
    observations: mpsc::Sender<Observation>,
) {
    // One byte more than the longest datagram read, so that longer ones show as oversize.
    let mut buf = vec![0u8; MAX_DATAGRAM_LEN + 1];
    loop {
        let (len, from) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(e) => {
                tracing::debug!(error = %e, "gossip receive failed");
                // Back off so that a persistent socket error does not spin the core.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let outcome = codec.read(&buf[..len]);
        counters.record(&outcome);
        match outcome {
            Ok(node) if ignore.as_ref() != Some(&node) => {
                let source = Source::Gossip { from };
                if observations
                    .send(Observation { node, source })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Ok(_) => {}
            Err(reason) => tracing::trace!(%from, reason = reason.label(), "datagram rejected"),
        }
    }
}

async fn send_heartbeats(
    socket: Arc<UdpSocket>,
    codec: HeartbeatCodec,
    sender: SenderConfig,
    dest: SocketAddrV4,
) {
    let (min, max) = (
        sender.min_interval,
        sender.max_interval.max(sender.min_interval),
    );
    loop {
        let (datagram, wait) = {
            // The thread-local generator is not Send: keep it out of the awaits.
            let mut rng = rand::rng();
            let mut iv = [0u8; IV_LEN];
            rng.fill_bytes(&mut iv);
            let wait = rng.random_range(min..=max);
            (codec.write(&sender.node, iv), wait)
        };
        if let Err(e) = socket.send_to(&datagram, dest).await {
            tracing::warn!(error = %e, %dest, "gossip heartbeat not sent");
        }
        tokio::time::sleep(wait).await;
    }
}

async fn poll_epmd(host: String, config: EpmdConfig, observations: mpsc::Sender<Observation>) {
    let mut failing = false;
    loop {
        match epmd::names(&host, config.port, config.timeout).await {
            Ok(names) => {
                if failing {
                    tracing::info!(%host, port = config.port, "EPMD answers again");
                }
                failing = false;
                for node in epmd::node_names(&host, &names) {
                    let source = Source::Epmd {
                        host: host.clone(),
                        port: config.port,
                    };
                    if observations
                        .send(Observation { node, source })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
            Err(e) => {
                // Once per outage, not once per poll.
                if !failing {
                    tracing::warn!(error = %e, "EPMD host not answering");
                }
                failing = true;
            }
        }
        tokio::time::sleep(config.interval).await;
    }
}
