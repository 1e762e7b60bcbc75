//! Every ExESDB Gater operation as a typed async Rust API, load-balanced across the
//! cluster's gateway workers, with fail-over.
//!
//! ```text
//!   your code ──► Gater (this crate) ── typed request ──► gater-registry: which worker?
//!                   │  records, errors, retries,            (store → workers, leaders,
//!                   │  store validation, confirmations       power of two choices)
//!                   │                                              │
//!                   │  subscriptions ◄── Phoenix.PubSub (pg) ──┐   ▼
//!                   └──────────────────────────────────────► gater-pool ──► ExESDB nodes
//!                                                           (hidden node, one connection each)
//! ```
//!
//! **Owns:** the `Gater` facade ([`Gater::connect`] from a [`GaterConfig`]), the typed
//! records ([`NewEvent`], [`EventRecord`], [`SnapshotRecord`], [`Subscription`], ...)
//! and their terms, the error type ([`GaterError`]), the retry rules, store validation
//! (a request for a store the cluster does not list is never sent, so it never crashes a
//! worker), confirmation of casts by read-back, and subscriptions as async streams
//! ([`EventStream`]) over Phoenix.PubSub.
//!
//! **Leaves to others:** connections (`gater-pool`), discovery (`gater-gossip`), which
//! worker serves a store (`gater-registry`), HTTP (`gater-http`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), gater_api::GaterError> {
//! use gater_api::{Direction, ExpectedVersion, Gater, GaterConfig, NewEvent};
//! let gater = Gater::connect(
//!     GaterConfig::new("testbed").node("testbed0@127.0.0.1").node("testbed1@127.0.0.1"),
//! )
//! .await?;
//! let v = gater
//!     .append_events_expected(
//!         "reg_gh",
//!         "account-1",
//!         ExpectedVersion::NoStream,
//!         vec![NewEvent::json("Opened", serde_json::json!({"owner": "ann"}))],
//!     )
//!     .await?;
//! let events = gater.get_events("reg_gh", "account-1", 0, 10, Direction::Forward).await?;
//! assert_eq!(events.len() as i64, v + 1);
//! # Ok(())
//! # }
//! ```
//!
//! See `docs/api.md` for the guide: operations, errors, retries and their guarantees,
//! subscriptions.

#![forbid(unsafe_code)]

mod config;
mod deadline;
mod error;
mod gater;
mod metrics;
mod pubsub;
mod records;
mod status;
mod subscription;

pub use config::{GaterConfig, NoWorkersBackoff};
pub use deadline::with_deadline;
pub use error::GaterError;
pub use gater::Gater;
pub use metrics::GaterMetrics;
pub use records::{
    Direction, EventData, EventRecord, ExpectedVersion, HealthCheck, HealthReport, NewEvent,
    Selector, SnapshotRecord, StoreId, StoreInfo, Subscription, SubscriptionInfo, uuid_v7,
};
pub use status::{ClusterStatus, NodeStatus, StoreStatus};
pub use subscription::{EventStream, OperationalMessage};

/// Discovery settings (re-exported from gater-gossip).
pub use gater_gossip::DiscoveryConfig;
/// The worker-selection policy (re-exported from gater-registry).
pub use gater_registry::SelectionPolicy;
/// The term type of data, metadata and snapshot records (eetf's, via gater-term).
pub use gater_term::Term;
