//! libcluster-compatible cluster discovery for exesdb-gater.
//!
//! ExESDB nodes find each other with libcluster's `Cluster.Strategy.Gossip`: every node
//! sends a UDP heartbeat (`heartbeat::` ++ `term_to_binary(#{node => Node})`, sealed with
//! AES-256-CBC when the cluster has a secret) to a multicast group. This crate listens to
//! those heartbeats, and merges two more sources (a static node list and the EPMD of
//! chosen hosts) into one stream of "node seen" / "node gone" events.
//!
//! ```text
//!   UDP datagrams ──► [packet]  open + decode ──► NodeName ─┐           (pure core:
//!   (hostile)         Rejection + Counters                  │            no sockets,
//!   static list   ───────────────────────────────────────────┼──► [liveness]  no clock)
//!   EPMD NAMES    ──► [epmd] parse ───────────────────────────┘    Liveness::observe(now)
//!                                                                   Liveness::expire(now)
//!   [runtime] Discovery: sockets (socket2/tokio), timers, tasks ──► DiscoveryEvent channel
//! ```
//!
//! **Owns**: the heartbeat wire format byte for byte ([`packet`]), sealing and opening
//! ([`Secret`]), rejection of every other datagram with a typed, counted reason
//! ([`Rejection`], [`Counters`]), the liveness table ([`Liveness`]), the gossip socket
//! options libcluster uses, the opt-in heartbeat sender, EPMD `NAMES_REQ`
//! ([`epmd`]) and the settings read from the Elixir gater's variables ([`config`]).
//!
//! **Leaves to the layer above** (`gater-pool`): connecting to the nodes it reports
//! (EPMD port look-up, handshake, cookie), deciding whether a node runs ExESDB at all
//! (EPMD and gossip also report non-ExESDB nodes), and noticing that a connected node
//! went down (distribution ticks are faster and surer than missing heartbeats).
//!
//! **Security**: the secret seals heartbeats but does not authenticate them (AES-CBC, no
//! MAC, as libcluster). Anyone on the network can announce a node name; what protects
//! the cluster is the Erlang cookie checked when connecting. Every datagram is treated
//! as hostile: bounded size, shape checked before decoding, no panic, no per-datagram log.
//!
//! The pure core is usable without Tokio: [`HeartbeatCodec::read`] on bytes,
//! [`Liveness::observe`]/[`Liveness::expire`] with an explicit `now`. [`Discovery`] is
//! the Tokio shell around it.
#![forbid(unsafe_code)]

pub mod config;
pub mod epmd;
pub mod liveness;
pub mod node;
pub mod packet;
pub mod runtime;
pub mod secret;

pub use config::{ConfigError, DiscoveryConfig, EpmdConfig, GossipConfig, SenderConfig};
pub use liveness::{DiscoveryEvent, Liveness, Source};
pub use node::{MAX_NODE_NAME_LEN, NodeName, NodeNameError};
pub use packet::{Counters, HeartbeatCodec, Rejection};
pub use runtime::{Discovery, Error};
pub use secret::Secret;
