//! Hidden-node Erlang distribution connections for exesdb-gater, with many calls
//! multiplexed over each.
//!
//! **Owns:** EPMD look-up, the handshake as a *hidden* node (erl_dist), one connection per
//! peer node owned by one task, framing with a size cap, ticks, reconnect with capped
//! exponential back-off and jitter, node up/down events, calls / casts / rpc routed by
//! reference with per-target monitors, what a node must answer to its peers (`rex`,
//! monitors, links), local mailboxes (pids) for subscribers, and counters.
//!
//! **Leaves to others:** which node serves which store and retries across nodes
//! (`gater-registry`), term builders and decoding limits (`gater-term`), discovery
//! (`gater-gossip`), exporting counters (the metrics layer).
//!
//! ```text
//!   callers (registry, api)          peer node (OTP 25/26/27)
//!      | call/cast/rpc/mailbox            ^
//!      v                                  | TCP: 4-byte frames, 112 pass-through
//!   Pool --commands (bounded)--> connection task --owns--> socket (split halves)
//!      ^                              |  drives
//!      |  replies (oneshot),          v
//!      |  mailbox messages      Core (pure): call table, monitors,
//!      |                        local pids, rex, ticks, deadlines
//!   NodeEvent (broadcast) <-- supervisor task per peer (connect, back-off)
//! ```
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use gater_pool::{Pool, PoolConfig, Term, eetf::Atom};
//! use std::time::Duration;
//!
//! let pool = Pool::new(PoolConfig::new("secret_cookie").node_name("gater@127.0.0.1"));
//! pool.connect("ex_esdb0@127.0.0.1").await?;
//! let apps = pool
//!     .rpc("ex_esdb0@127.0.0.1", "application", "which_applications", vec![], Duration::from_secs(5))
//!     .await?;
//! let request = Term::from(Atom::from("ping"));
//! let reply = pool
//!     .call(("some_server", "ex_esdb0@127.0.0.1"), request, Duration::from_secs(5))
//!     .await?;
//! # let _ = (apps, reply);
//! # Ok(())
//! # }
//! ```
//!
//! The protocol core (the private `core` module) is pure: it takes frames, commands and
//! `now`, and hands out bytes and a next deadline, so it is tested without sockets. See
//! `docs/pool.md` for the design.

#![forbid(unsafe_code)]

mod backoff;
mod config;
mod connection;
mod core;
mod error;
mod framing;
#[doc(hidden)]
pub mod fuzzing;
mod handshake;
mod metrics;
mod pool;
mod wire;

#[cfg(test)]
mod core_tests;

pub use backoff::Backoff;
pub use config::{
    DEFAULT_COMMAND_QUEUE, DEFAULT_CONNECT_TIMEOUT, DEFAULT_EPMD_PORT, DEFAULT_MAILBOX_CAPACITY,
    DEFAULT_MAX_FRAME_LEN, DEFAULT_MAX_WRITE_BUFFER, DEFAULT_MONITOR_LINGER, DEFAULT_NET_TICKTIME,
    PoolConfig, default_node_name,
};
pub use error::{CallError, ConnectError};
pub use handshake::{MANDATORY_25_DIGEST, our_flags};
pub use metrics::{CallErrorCounts, MetricsSnapshot};
pub use pool::{Mailbox, NodeEvent, Pool, Target};

/// Term building blocks (`Atom`, `Pid`, `Tuple`, ...).
pub use eetf;
/// The term type of calls and replies (eetf's, as re-exported by gater-term).
pub use gater_term::Term;
