//! Which nodes are alive, driven by observations and an explicit clock.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::node::NodeName;

/// Where a node was learnt from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Source {
    /// A gossip heartbeat received from this address.
    Gossip {
        /// The datagram's source address.
        from: SocketAddr,
    },
    /// The static list (`EX_ESDB_GATER_CONNECT_TO`).
    Static,
    /// A host's EPMD listed the node.
    Epmd {
        /// The host asked (as configured).
        host: String,
        /// Its EPMD port.
        port: u16,
    },
}

/// What the discovery layer tells the layer above.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DiscoveryEvent {
    /// A node was seen for the first time (or for the first time since it was gone).
    /// Reported once, not once per heartbeat.
    NodeSeen {
        /// The node.
        node: NodeName,
        /// Where it was seen.
        source: Source,
    },
    /// A node has not been seen for the configured time.
    NodeGone {
        /// The node.
        node: NodeName,
        /// Where it was last seen.
        source: Source,
    },
}

impl DiscoveryEvent {
    /// The node the event is about.
    pub fn node(&self) -> &NodeName {
        match self {
            DiscoveryEvent::NodeSeen { node, .. } | DiscoveryEvent::NodeGone { node, .. } => node,
        }
    }

    /// The source of the event.
    pub fn source(&self) -> &Source {
        match self {
            DiscoveryEvent::NodeSeen { source, .. } | DiscoveryEvent::NodeGone { source, .. } => {
                source
            }
        }
    }
}

#[derive(Debug)]
struct Seen {
    last_seen: Instant,
    source: Source,
    pinned: bool,
}

/// The liveness table: turns a stream of observations into [`DiscoveryEvent`]s.
///
/// Pure: it reads no clock. Every call takes `now`; [`Liveness::poll_timeout`] says when
/// [`Liveness::expire`] next has work, so a runtime can sleep until then (and a test can
/// jump there).
#[derive(Debug)]
pub struct Liveness {
    gone_after: Duration,
    max_nodes: usize,
    refused: u64,
    nodes: HashMap<NodeName, Seen>,
}

/// Default cap on the number of nodes tracked at once.
pub const DEFAULT_MAX_NODES: usize = 1024;

impl Liveness {
    /// A table in which a node is gone once unseen for `gone_after`.
    pub fn new(gone_after: Duration) -> Self {
        Self {
            gone_after,
            max_nodes: DEFAULT_MAX_NODES,
            refused: 0,
            nodes: HashMap::new(),
        }
    }

    /// Tracks at most `max_nodes` nodes: anyone on the network can announce any name, so
    /// a stream of made-up names must not grow the table (or the events) without bound.
    /// New nodes beyond the cap are refused (and counted) until others are gone; pinned
    /// nodes are always accepted.
    pub fn with_max_nodes(mut self, max_nodes: usize) -> Self {
        self.max_nodes = max_nodes;
        self
    }

    /// How many observations of new nodes were refused because the table was full.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// The time after which an unseen node is gone.
    pub fn gone_after(&self) -> Duration {
        self.gone_after
    }

    /// Records that `node` was seen at `now`; returns `NodeSeen` the first time.
    pub fn observe(
        &mut self,
        now: Instant,
        node: &NodeName,
        source: Source,
    ) -> Option<DiscoveryEvent> {
        self.insert(now, node, source, false)
    }

    /// Records a node that never expires (a static entry); returns `NodeSeen` the first time.
    pub fn pin(&mut self, now: Instant, node: &NodeName, source: Source) -> Option<DiscoveryEvent> {
        self.insert(now, node, source, true)
    }

    fn insert(
        &mut self,
        now: Instant,
        node: &NodeName,
        source: Source,
        pinned: bool,
    ) -> Option<DiscoveryEvent> {
        let full = self.nodes.len() >= self.max_nodes;
        match self.nodes.entry(node.clone()) {
            Entry::Occupied(mut e) => {
                let seen = e.get_mut();
                seen.last_seen = seen.last_seen.max(now);
                seen.source = source;
                seen.pinned |= pinned;
                None
            }
            Entry::Vacant(_) if full && !pinned => {
                self.refused += 1;
                None
            }
            Entry::Vacant(e) => {
                e.insert(Seen {
                    last_seen: now,
                    source: source.clone(),
                    pinned,
                });
                Some(DiscoveryEvent::NodeSeen {
                    node: node.clone(),
                    source,
                })
            }
        }
    }

    /// Removes every node unseen for the configured time and reports it gone.
    pub fn expire(&mut self, now: Instant) -> Vec<DiscoveryEvent> {
        let gone_after = self.gone_after;
        let mut gone = Vec::new();
        self.nodes.retain(|node, seen| {
            let alive = seen.pinned || now.saturating_duration_since(seen.last_seen) < gone_after;
            if !alive {
                gone.push(DiscoveryEvent::NodeGone {
                    node: node.clone(),
                    source: seen.source.clone(),
                });
            }
            alive
        });
        gone.sort_by(|a, b| a.node().cmp(b.node()));
        gone
    }

    /// When the next node would be gone if not seen again (`None`: nothing can expire).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.nodes
            .values()
            .filter(|s| !s.pinned)
            .map(|s| s.last_seen + self.gone_after)
            .min()
    }

    /// Whether `node` is currently known alive.
    pub fn is_alive(&self, node: &NodeName) -> bool {
        self.nodes.contains_key(node)
    }

    /// The nodes currently alive, in no particular order.
    pub fn alive(&self) -> impl Iterator<Item = &NodeName> + '_ {
        self.nodes.keys()
    }

    /// Number of nodes alive.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no node is alive.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(s: &str) -> NodeName {
        NodeName::parse(s).expect("valid node name")
    }

    fn gossip() -> Source {
        Source::Gossip {
            from: SocketAddr::from(([127, 0, 0, 1], 45892)),
        }
    }

    #[test]
    fn seen_once_then_gone_after_timeout() {
        let t0 = Instant::now();
        let mut table = Liveness::new(Duration::from_secs(10));
        let a = node("a@h");
        assert!(matches!(
            table.observe(t0, &a, gossip()),
            Some(DiscoveryEvent::NodeSeen { .. })
        ));
        for s in 1..=9 {
            // Heartbeats every second: reported once, never gone.
            assert_eq!(
                table.observe(t0 + Duration::from_secs(s), &a, gossip()),
                None
            );
            assert!(table.expire(t0 + Duration::from_secs(s)).is_empty());
        }
        let last = t0 + Duration::from_secs(9);
        assert_eq!(table.poll_timeout(), Some(last + Duration::from_secs(10)));
        assert!(table.expire(last + Duration::from_millis(9_999)).is_empty());
        let gone = table.expire(last + Duration::from_secs(10));
        assert_eq!(
            gone,
            vec![DiscoveryEvent::NodeGone {
                node: a.clone(),
                source: gossip()
            }]
        );
        assert!(!table.is_alive(&a));
        assert_eq!(table.poll_timeout(), None);
        // Seen again: reported again.
        assert!(
            table
                .observe(last + Duration::from_secs(11), &a, gossip())
                .is_some()
        );
    }

    #[test]
    fn pinned_nodes_never_expire() {
        let t0 = Instant::now();
        let mut table = Liveness::new(Duration::from_secs(1));
        let s = node("static@h");
        assert!(table.pin(t0, &s, Source::Static).is_some());
        assert_eq!(table.poll_timeout(), None);
        assert!(table.expire(t0 + Duration::from_secs(3600)).is_empty());
        // Also seen by gossip later: still pinned.
        assert_eq!(table.observe(t0, &s, gossip()), None);
        assert!(table.expire(t0 + Duration::from_secs(7200)).is_empty());
        assert!(table.is_alive(&s));
    }

    #[test]
    fn the_table_is_bounded() {
        let t0 = Instant::now();
        let mut table = Liveness::new(Duration::from_secs(5)).with_max_nodes(2);
        assert!(table.observe(t0, &node("a@h"), gossip()).is_some());
        assert!(table.observe(t0, &node("b@h"), gossip()).is_some());
        assert!(table.observe(t0, &node("c@h"), gossip()).is_none());
        assert_eq!(table.refused(), 1);
        assert!(table.pin(t0, &node("s@h"), Source::Static).is_some());
        assert_eq!(table.expire(t0 + Duration::from_secs(5)).len(), 2);
        assert!(
            table
                .observe(t0 + Duration::from_secs(6), &node("c@h"), gossip())
                .is_some()
        );
    }

    #[test]
    fn out_of_order_times_do_not_move_last_seen_back() {
        let t0 = Instant::now();
        let mut table = Liveness::new(Duration::from_secs(5));
        let a = node("a@h");
        table.observe(t0 + Duration::from_secs(4), &a, gossip());
        table.observe(t0, &a, gossip());
        assert!(table.expire(t0 + Duration::from_secs(6)).is_empty());
        assert_eq!(table.expire(t0 + Duration::from_secs(9)).len(), 1);
    }
}
