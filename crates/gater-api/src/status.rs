//! What the gateway knows about the cluster, for status pages and readiness.

use gater_registry::StoreId;
use std::collections::BTreeMap;

pub use gater_registry::NodeInfo as NodeStatus;

/// A store as the registry sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreStatus {
    /// The store.
    pub store: StoreId,
    /// Its Ra leader node, when known.
    pub leader: Option<String>,
    /// Gateway workers per node.
    pub workers: BTreeMap<String, usize>,
}

/// The cluster as the gateway sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStatus {
    /// Our own node name.
    pub node_name: String,
    /// Every node discovered or configured: connected or not, ExESDB or not, workers.
    pub nodes: Vec<NodeStatus>,
    /// Stores with workers, with their leader and workers per node.
    pub stores: Vec<StoreStatus>,
    /// Stores named by the last `list_stores` answer.
    pub known_stores: Vec<String>,
}

impl ClusterStatus {
    /// Whether at least one ExESDB node is connected and some store has a worker.
    pub fn is_ready(&self) -> bool {
        self.nodes
            .iter()
            .any(|n| n.connected && n.exesdb == Some(true))
            && self.stores.iter().any(|s| !s.workers.is_empty())
    }
}
