//! Which gateway worker serves which ExESDB store, and which one to use next.
//!
//! ExESDB registers its gateway workers in Swarm; `'Elixir.Swarm':registered()` returns
//! every registered name of the cluster. This crate owns the pure part of the registry:
//!
//! ```text
//!   Swarm.registered() replies ──► parse ──► WorkerTable ──► select(store, route) ──► GatewayWorker
//!   (from several nodes, merged)             (per store,         │
//!   node up / down, worker DOWN ───────────►  per node)          └─ policy: random | power of two choices
//!   ra_leaderboard:lookup_leader ──────────► leader per store ──► route appends to the leader
//! ```
//!
//! The core ([`WorkerTable`], [`parse_registered`]) does no I/O and is tested without
//! sockets. [`Registry`] is the thin runtime around it: one task per registry refreshes
//! the table over `gater-pool` (which_applications on new nodes, `Swarm.registered()` on
//! two ExESDB nodes merged, `ra_leaderboard:lookup_leader` per store) on node events, on a
//! timer, when a worker exits during a call and on demand; it drops a node's workers the
//! moment the pool reports it down. Selection never scans the whole Swarm registry: the
//! table is indexed by store when a reply is parsed, and a request only takes a read lock.
//! See `docs/registry.md`.

#![forbid(unsafe_code)]

mod runtime;
mod table;
mod worker;

pub use runtime::{NodeInfo, Registry, RegistryConfig, RegistryStatus, runs_exesdb};
pub use table::{Route, SelectionPolicy, WorkerLease, WorkerTable};
pub use worker::{GatewayWorker, RegistryError, StoreId, parse_registered, parse_worker_name};
