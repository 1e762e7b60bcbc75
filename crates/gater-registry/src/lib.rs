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
//! It does no I/O: the layer above (`gater-api`) asks the nodes over distribution and feeds
//! the answers in. Selection never scans the whole Swarm registry: the table is indexed by
//! store when a reply is parsed.

mod runtime;
mod table;
mod worker;

pub use runtime::{NodeInfo, Registry, RegistryConfig, RegistryStatus, runs_exesdb};
pub use table::{Route, SelectionPolicy, WorkerLease, WorkerTable};
pub use worker::{GatewayWorker, RegistryError, StoreId, parse_registered, parse_worker_name};
