//! The store → workers table and the selection policies.

use crate::worker::{GatewayWorker, StoreId};
use gater_term::eetf::Pid;
use rand::{Rng, RngExt};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How a worker is chosen among those that serve a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SelectionPolicy {
    /// Uniformly random, as the Elixir gater does.
    Random,
    /// Two random workers, the one with fewer calls in flight (ties: the first). Keeps a
    /// slow or busy worker from collecting a random share of the load.
    #[default]
    PowerOfTwoChoices,
}

/// Where a request should go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Any worker of the store (reads with no ordering need).
    Any,
    /// A worker on the store's leader node when one is known and up (appends, version
    /// reads, reads that follow the caller's own write); any worker otherwise.
    Leader,
}

#[derive(Debug)]
struct Slot {
    worker: GatewayWorker,
    in_flight: Arc<AtomicUsize>,
}

/// A chosen worker; the worker's in-flight count stays raised until the lease is dropped.
#[derive(Debug)]
pub struct WorkerLease {
    worker: GatewayWorker,
    in_flight: Arc<AtomicUsize>,
}

impl WorkerLease {
    /// The worker to call.
    pub fn worker(&self) -> &GatewayWorker {
        &self.worker
    }
}

impl Drop for WorkerLease {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Gateway workers by store, with node health and store leaders.
///
/// Workers named in the older `{gateway_worker, Node, N}` shape serve every store.
#[derive(Debug, Default)]
pub struct WorkerTable {
    by_store: HashMap<StoreId, Vec<Slot>>,
    any_store: Vec<Slot>,
    failing_nodes: HashSet<String>,
    leaders: HashMap<StoreId, String>,
    policy: SelectionPolicy,
}

impl WorkerTable {
    /// An empty table with the given policy.
    pub fn new(policy: SelectionPolicy) -> Self {
        Self {
            policy,
            ..Self::default()
        }
    }

    /// Replaces the workers with the union of what several nodes reported (Swarm's
    /// registries can diverge after a netsplit). Workers already known keep their counts.
    pub fn replace_workers(&mut self, reported: impl IntoIterator<Item = GatewayWorker>) {
        let mut old: HashMap<Pid, Arc<AtomicUsize>> = self
            .by_store
            .drain()
            .flat_map(|(_, slots)| slots)
            .chain(self.any_store.drain(..))
            .map(|s| (s.worker.pid, s.in_flight))
            .collect();
        let mut seen = HashSet::new();
        for worker in reported {
            if !seen.insert(worker.pid.clone()) {
                continue;
            }
            let in_flight = old.remove(&worker.pid).unwrap_or_default();
            let slot = Slot { worker, in_flight };
            match slot.worker.store.clone() {
                Some(store) => self.by_store.entry(store).or_default().push(slot),
                None => self.any_store.push(slot),
            }
        }
    }

    /// Forgets one worker (its monitor fired). Returns whether it was known.
    pub fn remove_worker(&mut self, pid: &Pid) -> bool {
        let before = self.len();
        for slots in self.by_store.values_mut() {
            slots.retain(|s| &s.worker.pid != pid);
        }
        self.by_store.retain(|_, slots| !slots.is_empty());
        self.any_store.retain(|s| &s.worker.pid != pid);
        self.len() != before
    }

    /// Forgets every worker of a node that went down.
    pub fn remove_node(&mut self, node: &str) {
        for slots in self.by_store.values_mut() {
            slots.retain(|s| s.worker.node != node);
        }
        self.by_store.retain(|_, slots| !slots.is_empty());
        self.any_store.retain(|s| s.worker.node != node);
        self.failing_nodes.remove(node);
    }

    /// Marks a node as failing (skipped while others can serve) or healthy again.
    pub fn set_node_failing(&mut self, node: &str, failing: bool) {
        if failing {
            self.failing_nodes.insert(node.to_owned());
        } else {
            self.failing_nodes.remove(node);
        }
    }

    /// Records the store's Ra leader node (`None`: unknown).
    pub fn set_leader(&mut self, store: StoreId, node: Option<String>) {
        match node {
            Some(node) => self.leaders.insert(store, node),
            None => self.leaders.remove(&store),
        };
    }

    /// The store's leader node, if known.
    pub fn leader(&self, store: &StoreId) -> Option<&str> {
        self.leaders.get(store).map(String::as_str)
    }

    /// How many workers the table holds.
    pub fn len(&self) -> usize {
        self.by_store.values().map(Vec::len).sum::<usize>() + self.any_store.len()
    }

    /// Whether the table holds no worker.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The workers that serve a store.
    pub fn workers(&self, store: &StoreId) -> impl Iterator<Item = &GatewayWorker> {
        self.candidates(store).map(|s| &s.worker)
    }

    /// Every worker in the table.
    pub fn all_workers(&self) -> impl Iterator<Item = &GatewayWorker> {
        self.by_store
            .values()
            .flatten()
            .chain(self.any_store.iter())
            .map(|s| &s.worker)
    }

    /// The known leaders, by store.
    pub fn leaders(&self) -> impl Iterator<Item = (&StoreId, &str)> {
        self.leaders.iter().map(|(s, n)| (s, n.as_str()))
    }

    /// A lease on a particular worker, when the table holds it.
    pub fn lease_of(&self, pid: &Pid) -> Option<WorkerLease> {
        let slot = self
            .by_store
            .values()
            .flatten()
            .chain(self.any_store.iter())
            .find(|s| &s.worker.pid == pid)?;
        slot.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(WorkerLease {
            worker: slot.worker.clone(),
            in_flight: Arc::clone(&slot.in_flight),
        })
    }

    /// The stores that have at least one store-specific worker.
    pub fn stores(&self) -> impl Iterator<Item = &StoreId> {
        self.by_store.keys()
    }

    fn candidates(&self, store: &StoreId) -> impl Iterator<Item = &Slot> + Clone {
        self.by_store
            .get(store)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .chain(self.any_store.iter())
    }

    /// Chooses a worker for a request to `store`, or `None` when no worker serves it.
    ///
    /// Workers on failing nodes are used only when no other worker is left; with
    /// [`Route::Leader`], workers on the leader node are preferred.
    pub fn select<R: Rng + ?Sized>(
        &self,
        store: &StoreId,
        route: Route,
        rng: &mut R,
    ) -> Option<WorkerLease> {
        let healthy = |s: &&Slot| !self.failing_nodes.contains(&s.worker.node);
        let leader = match route {
            Route::Leader => self.leader(store),
            Route::Any => None,
        };
        let on_leader = |s: &&Slot| leader.is_some_and(|l| s.worker.node == l);
        let all = self.candidates(store);
        let slot = self
            .pick(all.clone().filter(healthy).filter(on_leader), rng)
            .or_else(|| self.pick(all.clone().filter(healthy), rng))
            .or_else(|| self.pick(all, rng))?;
        slot.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(WorkerLease {
            worker: slot.worker.clone(),
            in_flight: Arc::clone(&slot.in_flight),
        })
    }

    fn pick<'a, R: Rng + ?Sized>(
        &self,
        candidates: impl Iterator<Item = &'a Slot> + Clone,
        rng: &mut R,
    ) -> Option<&'a Slot> {
        let n = candidates.clone().count();
        if n == 0 {
            return None;
        }
        let first = rng.random_range(0..n);
        let chosen = match self.policy {
            SelectionPolicy::Random => first,
            SelectionPolicy::PowerOfTwoChoices if n == 1 => first,
            SelectionPolicy::PowerOfTwoChoices => {
                // A second, different index: shift by 1..n.
                let second = (first + rng.random_range(1..n)) % n;
                let load = |i: usize| {
                    candidates
                        .clone()
                        .nth(i)
                        .map_or(usize::MAX, |s| s.in_flight.load(Ordering::Relaxed))
                };
                if load(second) < load(first) {
                    second
                } else {
                    first
                }
            }
        };
        candidates.clone().nth(chosen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn worker(store: Option<&str>, node: &str, id: u32) -> GatewayWorker {
        GatewayWorker {
            store: store.map(StoreId::from),
            node: node.to_owned(),
            number: i64::from(id),
            pid: Pid::new(node, id, 0, 4),
        }
    }

    fn three_nodes(policy: SelectionPolicy) -> WorkerTable {
        let mut t = WorkerTable::new(policy);
        t.replace_workers((0..3).flat_map(|n| {
            let node = format!("ex_esdb{n}@127.0.0.1");
            [worker(Some("s"), &node, 1), worker(Some("s"), &node, 2)]
        }));
        t
    }

    fn share_per_node(
        t: &WorkerTable,
        route: Route,
        rounds: usize,
        hold: bool,
    ) -> HashMap<String, usize> {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut counts = HashMap::new();
        let mut held = Vec::new();
        for _ in 0..rounds {
            let lease = t
                .select(&StoreId::from("s"), route, &mut rng)
                .expect("a worker");
            *counts.entry(lease.worker().node.clone()).or_insert(0) += 1;
            if hold {
                held.push(lease);
            }
        }
        counts
    }

    #[test]
    fn every_policy_spreads_load_evenly_across_nodes() {
        for policy in [SelectionPolicy::Random, SelectionPolicy::PowerOfTwoChoices] {
            let t = three_nodes(policy);
            let counts = share_per_node(&t, Route::Any, 3000, false);
            assert_eq!(counts.len(), 3, "{policy:?}: {counts:?}");
            for (node, n) in counts {
                assert!(
                    (700..=1300).contains(&n),
                    "{policy:?}: {node} got {n} of 3000"
                );
            }
        }
    }

    #[test]
    fn power_of_two_choices_avoids_the_busiest_worker() {
        let mut t = three_nodes(SelectionPolicy::Random);
        let mut rng = SmallRng::seed_from_u64(1);
        let store = StoreId::from("s");
        // Under the random policy, hold leases until one worker has 50 calls in flight.
        let mut held = Vec::new();
        let busy = loop {
            let lease = t.select(&store, Route::Any, &mut rng).expect("a worker");
            let pid = lease.worker().pid.clone();
            held.push(lease);
            if held.iter().filter(|l| l.worker().pid == pid).count() == 50 {
                break pid;
            }
        };
        // Keep only the busy worker's 50 leases; the five others are idle again.
        held.retain(|l| l.worker().pid == busy);
        t.policy = SelectionPolicy::PowerOfTwoChoices;
        // 49 more calls spread over five idle workers never reach 50 on any of them.
        let more: Vec<_> = (0..49)
            .filter_map(|_| t.select(&store, Route::Any, &mut rng))
            .collect();
        assert_eq!(more.len(), 49);
        let busy_picks = more.iter().filter(|l| l.worker().pid == busy).count();
        assert_eq!(
            busy_picks, 0,
            "a worker with 50 calls in flight was chosen over idle ones"
        );
    }

    #[test]
    fn leases_release_their_count_when_dropped() {
        let t = three_nodes(SelectionPolicy::PowerOfTwoChoices);
        let mut rng = SmallRng::seed_from_u64(3);
        let store = StoreId::from("s");
        for _ in 0..100 {
            drop(t.select(&store, Route::Any, &mut rng));
        }
        let total: usize = t
            .by_store
            .values()
            .flatten()
            .map(|s| s.in_flight.load(Ordering::Relaxed))
            .sum();
        assert_eq!(total, 0);
    }

    #[test]
    fn leader_route_goes_to_the_leader_node_and_falls_back_when_it_has_no_workers() {
        let mut t = three_nodes(SelectionPolicy::PowerOfTwoChoices);
        let store = StoreId::from("s");
        t.set_leader(store.clone(), Some("ex_esdb2@127.0.0.1".into()));
        let counts = share_per_node(&t, Route::Leader, 200, false);
        assert_eq!(counts.get("ex_esdb2@127.0.0.1"), Some(&200), "{counts:?}");
        t.remove_node("ex_esdb2@127.0.0.1");
        let counts = share_per_node(&t, Route::Leader, 200, false);
        assert_eq!(counts.len(), 2, "{counts:?}");
    }

    #[test]
    fn failing_nodes_are_skipped_while_others_serve_and_used_as_a_last_resort() {
        let mut t = three_nodes(SelectionPolicy::Random);
        t.set_node_failing("ex_esdb0@127.0.0.1", true);
        let counts = share_per_node(&t, Route::Any, 300, false);
        assert!(!counts.contains_key("ex_esdb0@127.0.0.1"), "{counts:?}");
        t.set_node_failing("ex_esdb1@127.0.0.1", true);
        t.set_node_failing("ex_esdb2@127.0.0.1", true);
        let counts = share_per_node(&t, Route::Any, 30, false);
        assert_eq!(counts.values().sum::<usize>(), 30);
    }

    #[test]
    fn merging_reports_dedups_by_pid_and_keeps_in_flight_counts() {
        let mut t = three_nodes(SelectionPolicy::Random);
        let store = StoreId::from("s");
        let mut rng = SmallRng::seed_from_u64(5);
        let lease = t.select(&store, Route::Any, &mut rng).expect("a worker");
        let all: Vec<_> = t.workers(&store).cloned().collect();
        // Two nodes report the same workers: the union has no duplicates.
        t.replace_workers(all.iter().cloned().chain(all.iter().cloned()));
        assert_eq!(t.len(), 6);
        let kept = t
            .by_store
            .values()
            .flatten()
            .find(|s| s.worker.pid == lease.worker().pid)
            .expect("still known");
        assert_eq!(kept.in_flight.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn worker_down_and_node_down_forget_workers() {
        let mut t = three_nodes(SelectionPolicy::Random);
        let store = StoreId::from("s");
        let victim = t.workers(&store).next().cloned().expect("a worker");
        assert!(t.remove_worker(&victim.pid));
        assert!(!t.remove_worker(&victim.pid));
        assert_eq!(t.len(), 5);
        t.remove_node("ex_esdb1@127.0.0.1");
        assert!(t.workers(&store).all(|w| w.node != "ex_esdb1@127.0.0.1"));
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn legacy_names_serve_every_store_and_unknown_stores_have_no_worker() {
        let mut t = WorkerTable::new(SelectionPolicy::Random);
        t.replace_workers([worker(None, "old@host", 9)]);
        let mut rng = SmallRng::seed_from_u64(0);
        assert!(
            t.select(&StoreId::from("any"), Route::Any, &mut rng)
                .is_some()
        );
        let mut t = WorkerTable::new(SelectionPolicy::Random);
        t.replace_workers([worker(Some("a"), "n@h", 1)]);
        assert!(
            t.select(&StoreId::from("b"), Route::Any, &mut rng)
                .is_none()
        );
    }
}
