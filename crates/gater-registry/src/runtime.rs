//! The registry's runtime: keeps a [`WorkerTable`] current from the cluster.
//!
//! One task per [`Registry`] listens to the pool's node events and a timer and refreshes
//! the table from `'Elixir.Swarm':registered()` (asked of several ExESDB nodes and
//! merged) and each store's Ra leader from `ra_leaderboard:lookup_leader(Store)`.
//! Callers select workers from the table under a brief read lock; nothing on the request
//! path talks to the cluster.

use crate::table::{Route, SelectionPolicy, WorkerLease, WorkerTable};
use crate::worker::{GatewayWorker, StoreId, parse_registered};
use gater_pool::eetf::{Atom, Pid};
use gater_pool::{NodeEvent, Pool, Term};
use gater_term::TermExt;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{Notify, broadcast, watch};

/// How the registry refreshes and selects.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Worker selection policy.
    pub policy: SelectionPolicy,
    /// Refresh from Swarm at least this often (default 2 s).
    pub refresh_interval: Duration,
    /// Time-out of each rpc the registry makes (default 2 s).
    pub rpc_timeout: Duration,
    /// How many ExESDB nodes are asked for `Swarm.registered()` per refresh, merged
    /// (default 2: Swarm's registries can diverge after a netsplit).
    pub ask_nodes: usize,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            policy: SelectionPolicy::default(),
            refresh_interval: Duration::from_secs(2),
            rpc_timeout: Duration::from_secs(2),
            ask_nodes: 2,
        }
    }
}

/// What the registry knows about one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node's name.
    pub node: String,
    /// Whether a distribution connection to it is up.
    pub connected: bool,
    /// Whether it runs `ex_esdb` (`which_applications`); `None`: not asked yet.
    pub exesdb: Option<bool>,
    /// Gateway workers on it, by store (`"*"` for old-style names serving every store).
    pub workers: BTreeMap<String, usize>,
}

/// A snapshot of the registry for status pages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryStatus {
    /// Every node the pool knows, by name.
    pub nodes: Vec<NodeInfo>,
    /// Each store's leader node, when known.
    pub leaders: BTreeMap<String, String>,
    /// Completed refreshes so far.
    pub refreshes: u64,
}

#[derive(Debug, Default, Clone)]
struct NodeState {
    connected: bool,
    exesdb: Option<bool>,
}

struct Inner {
    pool: Pool,
    config: RegistryConfig,
    table: RwLock<WorkerTable>,
    nodes: RwLock<BTreeMap<String, NodeState>>,
    wake: Notify,
    done: watch::Sender<u64>,
    requested: AtomicU64,
}

/// The live store → gateway workers map of a cluster, kept current by a background task.
///
/// Cheap to clone. The task stops when the last clone is dropped.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

fn lock_err<T>(r: Result<T, std::sync::PoisonError<T>>) -> T {
    r.unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Registry {
    /// Starts the registry over `pool` (on the current tokio runtime). Nodes already
    /// connected are looked at at once; later ones on their `Up` event.
    pub fn start(pool: Pool, config: RegistryConfig) -> Self {
        let (done, _) = watch::channel(0);
        let inner = Arc::new(Inner {
            table: RwLock::new(WorkerTable::new(config.policy)),
            pool,
            config,
            nodes: RwLock::new(BTreeMap::new()),
            wake: Notify::new(),
            done,
            requested: AtomicU64::new(1),
        });
        let events = inner.pool.subscribe();
        for node in inner.pool.connected_nodes() {
            lock_err(inner.nodes.write()).insert(
                node,
                NodeState {
                    connected: true,
                    exesdb: None,
                },
            );
        }
        tokio::spawn(run(Arc::downgrade(&inner), events));
        Registry { inner }
    }

    /// The pool the registry uses.
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// Chooses a worker for `store` (see [`WorkerTable::select`]); `None` when none
    /// serves it now.
    pub fn select(&self, store: &StoreId, route: Route) -> Option<WorkerLease> {
        let table = lock_err(self.inner.table.read());
        table.select(store, route, &mut rand::rng())
    }

    /// Chooses a worker for `store`, avoiding the pids in `avoid` while others serve.
    pub fn select_avoiding(
        &self,
        store: &StoreId,
        route: Route,
        avoid: &[Pid],
    ) -> Option<WorkerLease> {
        let table = lock_err(self.inner.table.read());
        let mut rng = rand::rng();
        let mut fallback = None;
        for _ in 0..4 {
            let lease = table.select(store, route, &mut rng)?;
            if !avoid.contains(&lease.worker().pid) {
                return Some(lease);
            }
            fallback = Some(lease);
        }
        // Try every worker once before settling for an avoided one.
        let other = table
            .workers(store)
            .find(|w| !avoid.contains(&w.pid))
            .cloned();
        match other {
            Some(w) => table.lease_of(&w.pid).or(fallback),
            None => fallback,
        }
    }

    /// The store's leader node, when known.
    pub fn leader(&self, store: &StoreId) -> Option<String> {
        lock_err(self.inner.table.read())
            .leader(store)
            .map(str::to_owned)
    }

    /// The workers that serve `store` now.
    pub fn workers(&self, store: &StoreId) -> Vec<GatewayWorker> {
        lock_err(self.inner.table.read())
            .workers(store)
            .cloned()
            .collect()
    }

    /// The connected nodes known to run ExESDB.
    pub fn exesdb_nodes(&self) -> Vec<String> {
        lock_err(self.inner.nodes.read())
            .iter()
            .filter(|(_, s)| s.connected && s.exesdb == Some(true))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// A worker's monitor fired (a call ended with the worker down): forget it now and
    /// refresh soon.
    pub fn worker_down(&self, pid: &Pid) {
        lock_err(self.inner.table.write()).remove_worker(pid);
        self.request_refresh();
    }

    /// A node answered in a way that suggests it is failing (time-outs): skip it while
    /// others serve, until the next refresh.
    pub fn node_failing(&self, node: &str) {
        lock_err(self.inner.table.write()).set_node_failing(node, true);
    }

    /// A rejection looked stale (a follower answered): refresh the leaders soon.
    pub fn leader_suspect(&self, _store: &StoreId) {
        self.request_refresh();
    }

    /// Asks for a refresh without waiting for it.
    pub fn request_refresh(&self) {
        self.inner.requested.fetch_add(1, Ordering::Relaxed);
        self.inner.wake.notify_one();
    }

    /// Asks for a refresh and waits until one that started after this call completes
    /// (bounded by `timeout`). Returns whether it completed in time.
    pub async fn refresh_now(&self, timeout: Duration) -> bool {
        let mut done = self.inner.done.subscribe();
        let target = self.inner.requested.fetch_add(1, Ordering::Relaxed) + 1;
        self.inner.wake.notify_one();
        tokio::time::timeout(timeout, done.wait_for(|d| *d >= target))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Nodes, their workers and the leaders, for status pages.
    pub fn status(&self) -> RegistryStatus {
        let table = lock_err(self.inner.table.read());
        let nodes_state = lock_err(self.inner.nodes.read()).clone();
        let mut nodes: BTreeMap<String, NodeInfo> = nodes_state
            .into_iter()
            .map(|(node, s)| {
                (
                    node.clone(),
                    NodeInfo {
                        node,
                        connected: s.connected,
                        exesdb: s.exesdb,
                        workers: BTreeMap::new(),
                    },
                )
            })
            .collect();
        for w in table.all_workers() {
            let info = nodes.entry(w.node.clone()).or_insert_with(|| NodeInfo {
                node: w.node.clone(),
                connected: false,
                exesdb: None,
                workers: BTreeMap::new(),
            });
            let store = w.store.as_ref().map_or("*", StoreId::as_str);
            *info.workers.entry(store.to_owned()).or_default() += 1;
        }
        RegistryStatus {
            nodes: nodes.into_values().collect(),
            leaders: table
                .leaders()
                .map(|(s, n)| (s.0.clone(), n.to_owned()))
                .collect(),
            refreshes: *self.inner.done.borrow(),
        }
    }
}

async fn run(weak: std::sync::Weak<Inner>, mut events: broadcast::Receiver<NodeEvent>) {
    let mut completed = 0u64;
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let target = inner.requested.load(Ordering::Relaxed);
        refresh(&inner).await;
        completed = completed.max(target);
        inner.done.send_replace(completed);
        let interval = tokio::time::sleep(inner.config.refresh_interval);
        tokio::pin!(interval);
        // Wait for a reason to refresh again: a request, the timer, or a node event.
        loop {
            tokio::select! {
                _ = inner.wake.notified() => break,
                _ = &mut interval => break,
                ev = events.recv() => match ev {
                    Ok(ev) => if apply_event(&inner, ev) { break },
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
        // Coalesce a burst of node events into one refresh.
        while let Ok(ev) = events.try_recv() {
            apply_event(&inner, ev);
        }
    }
}

/// Applies a node event to the table at once; true when it calls for a refresh.
fn apply_event(inner: &Inner, ev: NodeEvent) -> bool {
    match ev {
        NodeEvent::Up { node, .. } => {
            lock_err(inner.nodes.write()).insert(
                node,
                NodeState {
                    connected: true,
                    exesdb: None,
                },
            );
            true
        }
        NodeEvent::Down { node, .. } => {
            // Forget the node's workers (and its leaderships) now, not at the next refresh.
            let mut table = lock_err(inner.table.write());
            table.remove_node(&node);
            let led: Vec<StoreId> = table
                .leaders()
                .filter(|(_, n)| *n == node)
                .map(|(s, _)| s.clone())
                .collect();
            for s in led {
                table.set_leader(s, None);
            }
            drop(table);
            if let Some(s) = lock_err(inner.nodes.write()).get_mut(&node) {
                s.connected = false;
                s.exesdb = None;
            }
            true
        }
        _ => false,
    }
}

async fn refresh(inner: &Inner) {
    let timeout = inner.config.rpc_timeout;
    // Connected nodes, and whether they run ExESDB (asked once per connection).
    let connected: HashSet<String> = inner.pool.connected_nodes().into_iter().collect();
    let unknown: Vec<String> = {
        let mut nodes = lock_err(inner.nodes.write());
        for n in &connected {
            nodes.entry(n.clone()).or_default().connected = true;
        }
        for (n, s) in nodes.iter_mut() {
            if !connected.contains(n) {
                s.connected = false;
                s.exesdb = None;
            }
        }
        nodes
            .iter()
            .filter(|(_, s)| s.connected && s.exesdb.is_none())
            .map(|(n, _)| n.clone())
            .collect()
    };
    let checks = unknown.iter().map(|n| async move {
        let r = inner
            .pool
            .rpc(n, "application", "which_applications", vec![], timeout)
            .await;
        (n.clone(), r.ok().map(|apps| runs_exesdb(&apps)))
    });
    for (n, is) in futures::future::join_all(checks).await {
        if let Some(is) = is
            && let Some(s) = lock_err(inner.nodes.write()).get_mut(&n)
        {
            s.exesdb = Some(is);
        }
    }
    let exesdb: Vec<String> = lock_err(inner.nodes.read())
        .iter()
        .filter(|(_, s)| s.connected && s.exesdb == Some(true))
        .map(|(n, _)| n.clone())
        .collect();
    if exesdb.is_empty() {
        lock_err(inner.table.write()).replace_workers(Vec::new());
        return;
    }
    // Ask a few ExESDB nodes (a rotating choice) and merge what they say.
    let ask = inner.config.ask_nodes.max(1).min(exesdb.len());
    let start = rand::random_range(0..exesdb.len());
    let asked: Vec<&String> = (0..ask)
        .map(|i| &exesdb[(start + i) % exesdb.len()])
        .collect();
    let replies = futures::future::join_all(asked.iter().map(|n| {
        inner
            .pool
            .rpc(n, "Elixir.Swarm", "registered", vec![], timeout)
    }))
    .await;
    let mut merged = Vec::new();
    let mut any_ok = false;
    for r in replies {
        match r.map(|t| parse_registered(&t)) {
            Ok(Ok(ws)) => {
                any_ok = true;
                merged.extend(ws);
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "Swarm.registered() unreadable"),
            Err(e) => tracing::debug!(error = %e, "Swarm.registered() failed"),
        }
    }
    let stores: Vec<StoreId> = {
        let mut table = lock_err(inner.table.write());
        if any_ok {
            // Only workers on nodes we can reach: a node that went down while the rpc
            // was in flight stays forgotten.
            let live = inner.pool.connected_nodes();
            table.replace_workers(merged.into_iter().filter(|w| live.contains(&w.node)));
            for n in &exesdb {
                table.set_node_failing(n, false);
            }
        }
        table.stores().cloned().collect()
    };
    // Leaders: ask the nodes in turn until one answers for each store.
    for store in stores {
        let mut leader = None;
        for n in &exesdb {
            let args = vec![Term::from(Atom::from(store.as_str()))];
            match inner
                .pool
                .rpc(n, "ra_leaderboard", "lookup_leader", args, timeout)
                .await
            {
                Ok(t) => {
                    leader = leader_node(&t);
                    break;
                }
                Err(_) => continue,
            }
        }
        let leader = leader.filter(|l| connected.contains(l) || inner.pool.is_connected(l));
        lock_err(inner.table.write()).set_leader(store, leader);
    }
}

/// `{ServerName, LeaderNode}` → the node; `undefined` (an election) → `None`.
fn leader_node(t: &Term) -> Option<String> {
    match t.as_tuple()? {
        [_, node] => node.as_atom().map(str::to_owned),
        _ => None,
    }
}

/// Whether a `which_applications` reply lists `ex_esdb`.
pub fn runs_exesdb(apps: &Term) -> bool {
    apps.as_list().is_some_and(|l| {
        l.iter().any(|a| {
            a.as_tuple()
                .and_then(|t| t.first())
                .is_some_and(|n| n.is_atom("ex_esdb"))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use gater_term::build::{atom, list, tuple};

    #[test]
    fn which_applications_tells_exesdb_nodes() {
        let apps = list(vec![
            tuple(vec![atom("kernel"), list(vec![]), list(vec![])]),
            tuple(vec![atom("ex_esdb"), list(vec![]), list(vec![])]),
        ]);
        assert!(runs_exesdb(&apps));
        assert!(!runs_exesdb(&list(vec![tuple(vec![atom("kernel")])])));
        assert!(!runs_exesdb(&atom("undefined")));
    }

    #[test]
    fn lookup_leader_reply_names_the_node() {
        let t = tuple(vec![atom("reg_gh"), atom("n1@127.0.0.1")]);
        assert_eq!(leader_node(&t).as_deref(), Some("n1@127.0.0.1"));
        assert_eq!(leader_node(&atom("undefined")), None);
    }
}
