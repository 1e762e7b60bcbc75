//! The `Gater` facade: connecting, routing, retries, and every operation.

use crate::GaterError;
use crate::config::GaterConfig;
use crate::metrics::{Counters, GaterMetrics};
use crate::pubsub::PubSub;
use crate::records::*;
use crate::status::{ClusterStatus, StoreStatus};
use crate::subscription::{EventStream, OperationalMessage};
use gater_pool::{CallError, NodeEvent, Pool, Term};
use gater_registry::{Registry, RegistryConfig, Route};
use gater_term::build::{atom, binary, int, tuple};
use gater_term::{TermExt, elixir};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// How a request may be retried on another worker after a failure whose outcome is
/// unknown (node or worker down during the call).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Reads and other idempotent calls: retry anywhere.
    Idempotent,
    /// Appends with an exact expected version: a retry cannot write twice.
    Guarded,
    /// Anything else: retry only when the request was surely not delivered.
    Once,
}

#[derive(Default)]
struct StoreCache {
    stores: HashSet<String>,
    infos: Vec<StoreInfo>,
    fetched: Option<Instant>,
}

pub(crate) struct Inner {
    pub(crate) config: GaterConfig,
    pub(crate) pool: Pool,
    pub(crate) registry: Registry,
    stores: RwLock<StoreCache>,
    store_refresh: Arc<tokio::sync::Mutex<()>>,
    recent_writes: Mutex<HashMap<(String, String), Instant>>,
    append_permits: RwLock<HashMap<String, Arc<tokio::sync::Semaphore>>>,
    pub(crate) pubsub: PubSub,
    pub(crate) counters: Counters,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(tasks) = self.tasks.get_mut() {
            for t in tasks.drain(..) {
                t.abort();
            }
        }
    }
}

/// A gateway into an ExESDB cluster: every ExESDB Gater operation as an async method.
///
/// Cheap to clone (all clones share the connections). Built with [`Gater::connect`]; the
/// connections, the registry refresh and the Phoenix.PubSub membership run as tasks on
/// the current tokio runtime and stop when the last clone is dropped.
#[derive(Clone)]
pub struct Gater {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Gater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gater")
            .field("node", &self.inner.pool.node_name())
            .finish_non_exhaustive()
    }
}

fn store_atom(store: &StoreId) -> Term {
    atom(store.as_str())
}

fn bin(s: &str) -> Term {
    binary(s.as_bytes().to_vec())
}

impl Gater {
    /// Connects to the configured nodes (and starts discovery when configured), starts
    /// the registry and the pub/sub membership, and waits (up to `startup_timeout`) for
    /// the first connection and registry refresh. Nodes that are not reachable yet are
    /// retried in the background; calls made before workers appear back off.
    pub async fn connect(config: GaterConfig) -> Result<Gater, GaterError> {
        for n in &config.nodes {
            gater_gossip::NodeName::check(n)
                .map_err(|e| GaterError::Config(format!("node {n:?}: {e}")))?;
        }
        let pool = Pool::new(config.pool_config());
        let registry = Registry::start(
            pool.clone(),
            RegistryConfig {
                policy: config.selection,
                refresh_interval: config.refresh_interval,
                ..RegistryConfig::default()
            },
        );
        let pubsub = PubSub::new(&config.ops_pubsub);
        let inner = Arc::new(Inner {
            pubsub,
            pool: pool.clone(),
            registry: registry.clone(),
            stores: RwLock::new(StoreCache::default()),
            store_refresh: Arc::new(tokio::sync::Mutex::new(())),
            recent_writes: Mutex::new(HashMap::new()),
            append_permits: RwLock::new(HashMap::new()),
            counters: Counters::default(),
            tasks: Mutex::new(Vec::new()),
            config,
        });
        let gater = Gater { inner };
        let membership = gater.inner.pubsub.start(pool.clone());
        let mut tasks = vec![membership];
        if let Some(d) = gater.inner.config.discovery.clone() {
            let discovery = gater_gossip::Discovery::start(d)
                .map_err(|e| GaterError::Config(format!("discovery: {e}")))?;
            tasks.push(tokio::spawn(run_discovery(pool.clone(), discovery)));
        }
        if let Ok(mut t) = gater.inner.tasks.lock() {
            t.extend(tasks);
        }
        let startup = gater.inner.config.startup_timeout;
        let connects = gater.inner.config.nodes.iter().map(|n| {
            let pool = pool.clone();
            async move {
                let _ = tokio::time::timeout(startup, pool.connect(n)).await;
            }
        });
        futures::future::join_all(connects).await;
        registry.refresh_now(startup).await;
        Ok(gater)
    }

    /// Our node name.
    pub fn node_name(&self) -> &str {
        self.inner.pool.node_name()
    }

    /// The registry (workers per store, leaders).
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The distribution pool.
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// Adds a node at run time (as discovery would).
    pub async fn add_node(&self, node: &str) -> Result<(), GaterError> {
        gater_gossip::NodeName::check(node)
            .map_err(|e| GaterError::Config(format!("node {node:?}: {e}")))?;
        self.inner
            .pool
            .connect(node)
            .await
            .map_err(|e| GaterError::Config(e.to_string()))?;
        self.inner
            .registry
            .refresh_now(Duration::from_secs(5))
            .await;
        Ok(())
    }

    // ------------------------------------------------------------------ writes

    /// Appends events with no version check (`{append_events, Store, Stream, Events}`).
    /// Returns the stream's new version (the number of the last event written).
    ///
    /// Retried on another worker only when it surely was not delivered; when a node dies
    /// mid-call, the stream is read back and the append reported successful if its
    /// events are there, [`GaterError::NodeDown`] otherwise.
    pub async fn append_events(
        &self,
        store: impl Into<StoreId>,
        stream: &str,
        events: Vec<NewEvent>,
    ) -> Result<i64, GaterError> {
        self.append(store.into(), stream, None, events).await
    }

    /// Appends events if the stream is at `expected`
    /// (`{append_events, Store, Stream, Expected, Events}`). Returns the new version, or
    /// [`GaterError::WrongExpectedVersion`].
    ///
    /// Goes to a worker on the store's leader node (workers check versions against their
    /// own replica). With an exact version (or `NoStream`) it is retried on another
    /// worker after a node failure; a retry that meets `wrong_expected_version` reads the
    /// stream and reports success when its own events are there.
    pub async fn append_events_expected(
        &self,
        store: impl Into<StoreId>,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<i64, GaterError> {
        self.append(store.into(), stream, Some(expected), events)
            .await
    }

    async fn append(
        &self,
        store: StoreId,
        stream: &str,
        expected: Option<ExpectedVersion>,
        events: Vec<NewEvent>,
    ) -> Result<i64, GaterError> {
        validate_stream(stream)?;
        if events.is_empty() {
            return Err(GaterError::InvalidRequest("no events to append".into()));
        }
        self.ensure_store(&store).await?;
        let terms = gater_term::build::list(events.iter().map(NewEvent::to_term).collect());
        let request = match expected {
            None => tuple(vec![
                atom("append_events"),
                store_atom(&store),
                bin(stream),
                terms,
            ]),
            Some(e) => tuple(vec![
                atom("append_events"),
                store_atom(&store),
                bin(stream),
                e.to_term(),
                terms,
            ]),
        };
        let guarded = expected.and_then(ExpectedVersion::version).is_some();
        let retry = if guarded { Retry::Guarded } else { Retry::Once };
        // Version checks run on the worker's own replica, and a write goes to the leader
        // in the end anyway: send every append to a worker on the leader node (no
        // follower-to-leader hop; measured faster with a better p99 on the testbed).
        let route = Route::Leader;
        self.note_write(&store, stream);
        let _permit = self.append_permit(&store).await?;
        let mut stale_retried = false;
        loop {
            let outcome = self
                .call(Some(&store), route, &request, "append_events", retry)
                .await;
            let (reply, worker_node, retried) = match outcome {
                Ok(r) => r,
                Err(CallFailure::Unknown(err)) => {
                    // The append may or may not have landed: look for its events.
                    return match self.find_own_events(&store, stream, &events).await {
                        Some(v) => {
                            self.inner
                                .counters
                                .inc(&self.inner.counters.recovered_appends);
                            Ok(v)
                        }
                        None => Err(err),
                    };
                }
                Err(CallFailure::Final(e)) => return Err(e),
            };
            if let Some(v) = reply.tagged("ok", 2).and_then(|v| v[0].as_i64()) {
                return Ok(v);
            }
            let current = reply
                .tagged("error", 2)
                .and_then(|r| r[0].tagged("wrong_expected_version", 2))
                .and_then(|c| c[0].as_i64());
            let Some(current) = current else {
                return Err(remote_error(reply));
            };
            if retried {
                // A retry after an unknown outcome: were they our events that moved it?
                if let Some(v) = self.find_own_events(&store, stream, &events).await {
                    self.inner
                        .counters
                        .inc(&self.inner.counters.recovered_appends);
                    return Ok(v);
                }
            }
            let want = expected.and_then(ExpectedVersion::version);
            let leader = self.inner.registry.leader(&store);
            let stale_looking = want.is_some_and(|w| current < w)
                || leader.as_deref() != Some(worker_node.as_str());
            if stale_looking && !stale_retried && guarded {
                // A follower's replica may be behind: learn the leader and ask it.
                stale_retried = true;
                self.inner.counters.inc(&self.inner.counters.stale_retries);
                self.inner.registry.leader_suspect(&store);
                self.inner
                    .registry
                    .refresh_now(Duration::from_secs(2))
                    .await;
                continue;
            }
            return Err(GaterError::WrongExpectedVersion { current });
        }
    }

    /// Looks for `events` (by event id) at the stream's tail, on the leader; returns the
    /// number of the last of them when all are there, in order.
    async fn find_own_events(
        &self,
        store: &StoreId,
        stream: &str,
        events: &[NewEvent],
    ) -> Option<i64> {
        // The new leader must be known before its answer counts.
        self.inner
            .registry
            .refresh_now(Duration::from_secs(3))
            .await;
        let version = self
            .get_version_routed(store, stream, Route::Leader)
            .await
            .ok()?;
        if version < 0 {
            return None;
        }
        let window = (events.len() as i64 * 4).max(64);
        let start = (version - window + 1).max(0);
        let tail = self
            .get_events_routed(
                store,
                stream,
                start,
                (version - start + 1) as usize,
                Direction::Forward,
                Route::Leader,
            )
            .await
            .ok()?;
        let first = tail.iter().position(|r| r.event_id == events[0].event_id)?;
        let ours = tail.get(first..first + events.len())?;
        ours.iter()
            .zip(events)
            .all(|(r, e)| r.event_id == e.event_id)
            .then(|| ours.last().map(|r| r.event_number))
            .flatten()
    }

    /// Waits for one of the store's append slots (see
    /// [`GaterConfig::max_concurrent_appends`]), within the call time-out.
    async fn append_permit(
        &self,
        store: &StoreId,
    ) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, GaterError> {
        let limit = self.inner.config.max_concurrent_appends;
        if limit == 0 {
            return Ok(None);
        }
        let existing = self
            .inner
            .append_permits
            .read()
            .ok()
            .and_then(|m| m.get(store.as_str()).cloned());
        let sem = match existing {
            Some(s) => s,
            None => {
                let mut m = self
                    .inner
                    .append_permits
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                m.entry(store.0.clone())
                    .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(limit)))
                    .clone()
            }
        };
        match tokio::time::timeout(self.inner.config.call_timeout, sem.acquire_owned()).await {
            Ok(Ok(p)) => Ok(Some(p)),
            _ => Err(GaterError::Timeout {
                operation: "append_events",
            }),
        }
    }

    fn note_write(&self, store: &StoreId, stream: &str) {
        if self.inner.config.read_your_writes.is_zero() {
            return;
        }
        if let Ok(mut m) = self.inner.recent_writes.lock() {
            let now = Instant::now();
            if m.len() > 10_000 {
                let window = self.inner.config.read_your_writes;
                m.retain(|_, t| now.duration_since(*t) < window);
            }
            m.insert((store.0.clone(), stream.to_owned()), now);
        }
    }

    fn read_route(&self, store: &StoreId, stream: &str) -> Route {
        let window = self.inner.config.read_your_writes;
        let recent = self.inner.recent_writes.lock().ok().and_then(|m| {
            m.get(&(store.0.clone(), stream.to_owned()))
                .map(|t| t.elapsed() < window)
        });
        if recent == Some(true) {
            Route::Leader
        } else {
            Route::Any
        }
    }

    // ------------------------------------------------------------------ reads

    /// Reads up to `count` events of a stream from `start`, forward or backward
    /// (`{get_events, Store, Stream, Start, Count, Direction}`). A missing stream gives
    /// an empty list. Reads of a stream this gateway wrote to recently go to the leader.
    pub async fn get_events(
        &self,
        store: impl Into<StoreId>,
        stream: &str,
        start: i64,
        count: usize,
        direction: Direction,
    ) -> Result<Vec<EventRecord>, GaterError> {
        let store = store.into();
        validate_stream(stream)?;
        self.ensure_store(&store).await?;
        let route = self.read_route(&store, stream);
        self.get_events_routed(&store, stream, start, count, direction, route)
            .await
    }

    pub(crate) async fn get_events_routed(
        &self,
        store: &StoreId,
        stream: &str,
        start: i64,
        count: usize,
        direction: Direction,
        route: Route,
    ) -> Result<Vec<EventRecord>, GaterError> {
        if start < 0 {
            return Err(GaterError::InvalidRequest("start must be 0 or more".into()));
        }
        let request = tuple(vec![
            atom("get_events"),
            store_atom(store),
            bin(stream),
            int(start),
            int(count as i64),
            direction.to_term(),
        ]);
        let (bytes, _, _) = self
            .call_encoded(
                Some(store),
                route,
                &request,
                "get_events",
                Retry::Idempotent,
            )
            .await
            .map_err(CallFailure::into_error)?;
        // Straight from the bytes into records: no intermediate term tree.
        match gater_term::de::from_slice::<EventsReply>(&bytes) {
            Ok(EventsReply::Ok(records)) => {
                Ok(records.into_iter().map(EventRecord::from).collect())
            }
            Ok(EventsReply::Error(reason)) => Err(GaterError::Remote(reason.0)),
            Err(_) => {
                // Not the documented shape: read it as a term for a precise error.
                let t = gater_term::decode(&bytes, &gater_term::DecodeLimits::default())
                    .map_err(|e| GaterError::Decode(e.to_string()))?;
                let list = t
                    .tagged("ok", 2)
                    .and_then(|v| v[0].as_list().map(|l| l.into_owned()))
                    .ok_or_else(|| remote_error(t.clone()))?;
                list.iter().map(EventRecord::from_term).collect()
            }
        }
    }

    /// The stream's version (`-1`: no such stream), from the leader.
    pub async fn get_version(
        &self,
        store: impl Into<StoreId>,
        stream: &str,
    ) -> Result<i64, GaterError> {
        let store = store.into();
        validate_stream(stream)?;
        self.ensure_store(&store).await?;
        self.get_version_routed(&store, stream, Route::Leader).await
    }

    async fn get_version_routed(
        &self,
        store: &StoreId,
        stream: &str,
        route: Route,
    ) -> Result<i64, GaterError> {
        let request = tuple(vec![atom("get_version"), store_atom(store), bin(stream)]);
        let reply = self
            .call_ok(Some(store), route, &request, "get_version")
            .await?;
        reply
            .as_i64()
            .ok_or_else(|| GaterError::Decode(format!("get_version: {reply}")))
    }

    /// The store's streams.
    pub async fn get_streams(&self, store: impl Into<StoreId>) -> Result<Vec<String>, GaterError> {
        let store = store.into();
        self.ensure_store(&store).await?;
        let request = tuple(vec![atom("get_streams"), store_atom(&store)]);
        let reply = self
            .call_ok(Some(&store), Route::Any, &request, "get_streams")
            .await?;
        let list = reply
            .as_list()
            .ok_or_else(|| GaterError::Decode(format!("get_streams: {reply}")))?;
        list.iter()
            .map(|s| {
                s.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| GaterError::Decode(format!("stream id {s}")))
            })
            .collect()
    }

    /// The store's subscriptions (from the leader).
    pub async fn get_subscriptions(
        &self,
        store: impl Into<StoreId>,
    ) -> Result<Vec<SubscriptionInfo>, GaterError> {
        let store = store.into();
        self.ensure_store(&store).await?;
        self.subscriptions_routed(&store).await
    }

    async fn subscriptions_routed(
        &self,
        store: &StoreId,
    ) -> Result<Vec<SubscriptionInfo>, GaterError> {
        let request = tuple(vec![atom("get_subscriptions"), store_atom(store)]);
        let reply = self
            .call_ok(Some(store), Route::Leader, &request, "get_subscriptions")
            .await?;
        parse_subscriptions(&reply)
    }

    /// Saves a subscription with a `nil` subscriber (events reach this gateway through
    /// Phoenix.PubSub; see [`Gater::subscribe`]) and returns once `get_subscriptions`
    /// lists it. Use [`Gater::subscribe`] to receive its events.
    pub async fn save_subscription(&self, sub: &Subscription) -> Result<(), GaterError> {
        self.ensure_store(&sub.store).await?;
        let store = sub.store.clone();
        self.cast_confirmed(&store, sub.save_request(), "save_subscription", || async {
            Ok(self
                .subscriptions_routed(&store)
                .await?
                .iter()
                .any(|i| i.matches_subscription(sub)))
        })
        .await
    }

    /// Removes a subscription; returns once `get_subscriptions` no longer lists it.
    pub async fn remove_subscription(&self, sub: &Subscription) -> Result<(), GaterError> {
        self.ensure_store(&sub.store).await?;
        let store = sub.store.clone();
        self.cast_confirmed(
            &store,
            sub.remove_request(),
            "remove_subscription",
            || async {
                Ok(!self
                    .subscriptions_routed(&store)
                    .await?
                    .iter()
                    .any(|i| i.matches_subscription(sub)))
            },
        )
        .await
    }

    /// Acknowledges `event` for the persistent subscription `name` (subscriber `nil`):
    /// the subscription resumes after it. Returns once `get_subscriptions` shows the
    /// subscription's `start_from` past the event.
    pub async fn ack_event(
        &self,
        store: impl Into<StoreId>,
        name: &str,
        event: &EventRecord,
    ) -> Result<(), GaterError> {
        let store = store.into();
        self.ensure_store(&store).await?;
        let request = ack_request(&store, name, event);
        let next = event.event_number + 1;
        self.cast_confirmed(&store, request, "ack_event", || async {
            let subs = self.subscriptions_routed(&store).await?;
            let mine: Vec<_> = subs.iter().filter(|i| i.name == name).collect();
            if mine.is_empty() {
                return Err(GaterError::InvalidRequest(format!(
                    "no subscription named {name:?} in {store}"
                )));
            }
            Ok(mine.iter().all(|i| i.start_from >= next))
        })
        .await
    }

    /// Acknowledges without waiting for confirmation (what a subscription stream does
    /// as its consumer advances).
    pub(crate) async fn ack_unconfirmed(&self, store: &StoreId, name: &str, event: &EventRecord) {
        let request = ack_request(store, name, event);
        if let Some(lease) = self.inner.registry.select(store, Route::Leader) {
            let _ = self
                .inner
                .pool
                .cast(lease.worker().pid.clone(), request)
                .await;
        }
    }

    /// Stores a snapshot of `(source, stream)` at `version`; returns once `read_snapshot`
    /// gives it back.
    pub async fn record_snapshot(
        &self,
        store: impl Into<StoreId>,
        source_uuid: &str,
        stream_uuid: &str,
        version: i64,
        record: Term,
    ) -> Result<(), GaterError> {
        let store = store.into();
        self.ensure_store(&store).await?;
        let request = tuple(vec![
            atom("record_snapshot"),
            store_atom(&store),
            bin(source_uuid),
            bin(stream_uuid),
            int(version),
            record.clone(),
        ]);
        self.cast_confirmed(&store, request, "record_snapshot", || async {
            Ok(self
                .read_snapshot_routed(&store, source_uuid, stream_uuid, version)
                .await?
                .is_some_and(|s| s.record == record))
        })
        .await
    }

    /// The snapshot of `(source, stream)` at `version`; `None` when there is none.
    pub async fn read_snapshot(
        &self,
        store: impl Into<StoreId>,
        source_uuid: &str,
        stream_uuid: &str,
        version: i64,
    ) -> Result<Option<SnapshotRecord>, GaterError> {
        let store = store.into();
        self.ensure_store(&store).await?;
        self.read_snapshot_routed(&store, source_uuid, stream_uuid, version)
            .await
    }

    async fn read_snapshot_routed(
        &self,
        store: &StoreId,
        source_uuid: &str,
        stream_uuid: &str,
        version: i64,
    ) -> Result<Option<SnapshotRecord>, GaterError> {
        let request = tuple(vec![
            atom("read_snapshot"),
            store_atom(store),
            bin(source_uuid),
            bin(stream_uuid),
            int(version),
        ]);
        let reply = self
            .call(
                Some(store),
                Route::Leader,
                &request,
                "read_snapshot",
                Retry::Idempotent,
            )
            .await
            .map_err(CallFailure::into_error)?
            .0;
        if let Some(v) = reply.tagged("ok", 2) {
            return Ok(Some(SnapshotRecord {
                source_uuid: source_uuid.to_owned(),
                stream_uuid: stream_uuid.to_owned(),
                version,
                record: v[0].clone(),
            }));
        }
        let not_found = reply
            .tagged("error", 2)
            .and_then(|r| r[0].as_tuple())
            .is_some_and(|t| {
                t.len() >= 2 && t[0].is_atom("khepri") && t[1].is_atom("node_not_found")
            });
        if not_found {
            Ok(None)
        } else {
            Err(remote_error(reply))
        }
    }

    /// Deletes a snapshot; returns once `read_snapshot` no longer finds it.
    pub async fn delete_snapshot(
        &self,
        store: impl Into<StoreId>,
        source_uuid: &str,
        stream_uuid: &str,
        version: i64,
    ) -> Result<(), GaterError> {
        let store = store.into();
        self.ensure_store(&store).await?;
        let request = tuple(vec![
            atom("delete_snapshot"),
            store_atom(&store),
            bin(source_uuid),
            bin(stream_uuid),
            int(version),
        ]);
        self.cast_confirmed(&store, request, "delete_snapshot", || async {
            Ok(self
                .read_snapshot_routed(&store, source_uuid, stream_uuid, version)
                .await?
                .is_none())
        })
        .await
    }

    /// Snapshots, optionally only of one source and/or stream (`any` otherwise).
    pub async fn list_snapshots(
        &self,
        store: impl Into<StoreId>,
        source_uuid: Option<&str>,
        stream_uuid: Option<&str>,
    ) -> Result<Vec<SnapshotRecord>, GaterError> {
        let store = store.into();
        self.ensure_store(&store).await?;
        let or_any = |s: Option<&str>| s.map_or_else(|| atom("any"), bin);
        let request = tuple(vec![
            atom("list_snapshots"),
            store_atom(&store),
            or_any(source_uuid),
            or_any(stream_uuid),
        ]);
        let reply = self
            .call_ok(Some(&store), Route::Leader, &request, "list_snapshots")
            .await?;
        parse_snapshots(&reply)
    }

    /// Every store of the cluster, one entry per node that runs it (not cached).
    pub async fn list_stores(&self) -> Result<Vec<StoreInfo>, GaterError> {
        let infos = self.fetch_stores().await?;
        Ok(infos)
    }

    async fn fetch_stores(&self) -> Result<Vec<StoreInfo>, GaterError> {
        let request = tuple(vec![atom("list_stores")]);
        let reply = self
            .call_ok(None, Route::Any, &request, "list_stores")
            .await?;
        let infos = parse_stores(&reply)?;
        if let Ok(mut c) = self.inner.stores.write() {
            c.stores = infos.iter().map(|i| i.store.0.clone()).collect();
            c.infos = infos.clone();
            c.fetched = Some(Instant::now());
        }
        Ok(infos)
    }

    /// Runs a health check on a worker of `store`.
    pub async fn health_check(
        &self,
        store: impl Into<StoreId>,
        check: HealthCheck,
    ) -> Result<HealthReport, GaterError> {
        let store = store.into();
        self.ensure_store(&store).await?;
        let request = tuple(vec![atom(check.request_name()), store_atom(&store)]);
        let report = self
            .call_ok(Some(&store), Route::Any, &request, check.request_name())
            .await?;
        Ok(HealthReport { check, report })
    }

    /// `quick_health_check`.
    pub async fn quick_health_check(
        &self,
        store: impl Into<StoreId>,
    ) -> Result<HealthReport, GaterError> {
        self.health_check(store, HealthCheck::Quick).await
    }

    /// `verify_cluster_consistency`.
    pub async fn verify_cluster_consistency(
        &self,
        store: impl Into<StoreId>,
    ) -> Result<HealthReport, GaterError> {
        self.health_check(store, HealthCheck::ClusterConsistency)
            .await
    }

    /// `verify_membership_consensus`.
    pub async fn verify_membership_consensus(
        &self,
        store: impl Into<StoreId>,
    ) -> Result<HealthReport, GaterError> {
        self.health_check(store, HealthCheck::MembershipConsensus)
            .await
    }

    /// `check_raft_log_consistency`.
    pub async fn check_raft_log_consistency(
        &self,
        store: impl Into<StoreId>,
    ) -> Result<HealthReport, GaterError> {
        self.health_check(store, HealthCheck::RaftLogConsistency)
            .await
    }

    // ------------------------------------------------------------ subscriptions

    /// Subscribes: saves the subscription (subscriber `nil`) and returns a stream of its
    /// events, received through Phoenix.PubSub. Persistent subscriptions replay from
    /// `start_from` (or after their last ack) and are acked as the consumer takes events.
    /// When the emitting node dies the stream resubscribes and fills any gap from the
    /// store, so the consumer sees each event of a stream once, in order.
    pub async fn subscribe(&self, sub: Subscription) -> Result<EventStream, GaterError> {
        crate::subscription::start(self.clone(), sub).await
    }

    /// Messages of the operational Phoenix.PubSub (`EX_ESDB_PUB_SUB`) from now on.
    pub fn operational_messages(
        &self,
    ) -> impl futures::Stream<Item = OperationalMessage> + Send + 'static {
        self.inner.pubsub.operational()
    }

    // ------------------------------------------------------------------ status

    /// Nodes (connected or not, ExESDB or not, workers per store) and stores (leader,
    /// workers per node).
    pub fn cluster_status(&self) -> ClusterStatus {
        let reg = self.inner.registry.status();
        let mut stores: HashMap<String, StoreStatus> = HashMap::new();
        for n in &reg.nodes {
            for (store, count) in &n.workers {
                let s = stores.entry(store.clone()).or_insert_with(|| StoreStatus {
                    store: StoreId(store.clone()),
                    leader: reg.leaders.get(store).cloned(),
                    workers: Default::default(),
                });
                s.workers.insert(n.node.clone(), *count);
            }
        }
        let mut stores: Vec<_> = stores.into_values().collect();
        stores.sort_by(|a, b| a.store.cmp(&b.store));
        ClusterStatus {
            node_name: self.node_name().to_owned(),
            nodes: reg.nodes,
            stores,
            known_stores: self
                .inner
                .stores
                .read()
                .map(|c| {
                    let mut v: Vec<_> = c.stores.iter().cloned().collect();
                    v.sort();
                    v
                })
                .unwrap_or_default(),
        }
    }

    /// The counters now.
    pub fn metrics(&self) -> GaterMetrics {
        self.inner
            .counters
            .snapshot(self.inner.pool.metrics(), self.inner.pubsub.active_topics())
    }

    // ------------------------------------------------------------------ plumbing

    /// Checks the store against `list_stores` (cached), so that a request for an unknown
    /// store never reaches (and crashes) a worker.
    pub(crate) async fn ensure_store(&self, store: &StoreId) -> Result<(), GaterError> {
        let ttl = self.inner.config.store_cache_ttl;
        let (known, fresh, age) = match self.inner.stores.read() {
            Ok(c) => (
                c.stores.contains(store.as_str()),
                c.fetched.is_some_and(|t| t.elapsed() < ttl),
                c.fetched.map(|t| t.elapsed()),
            ),
            Err(_) => (false, false, None),
        };
        if known && fresh {
            return Ok(());
        }
        if known {
            // Known but due for a refresh: answer now, refresh in the background.
            if let Ok(guard) = Arc::clone(&self.inner.store_refresh).try_lock_owned() {
                let this = self.clone();
                tokio::spawn(async move {
                    let _guard = guard;
                    let _ = this.fetch_stores().await;
                });
            }
            return Ok(());
        }
        if !known && age.is_some_and(|a| a < Duration::from_secs(1)) {
            return Err(GaterError::StoreNotFound {
                store: store.0.clone(),
            });
        }
        {
            // One fetch at a time; others wait for its answer.
            let _guard = self.inner.store_refresh.lock().await;
            let again = self
                .inner
                .stores
                .read()
                .ok()
                .and_then(|c| c.fetched)
                .is_some_and(|t| t.elapsed() < Duration::from_millis(200));
            if !again {
                match self.fetch_stores().await {
                    Ok(_) => {}
                    // A stale positive answer is better than failing while the cluster is busy.
                    Err(_) if known => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        }
        let known = self
            .inner
            .stores
            .read()
            .map(|c| c.stores.contains(store.as_str()))
            .unwrap_or(false);
        if known {
            Ok(())
        } else {
            Err(GaterError::StoreNotFound {
                store: store.0.clone(),
            })
        }
    }

    async fn call_ok(
        &self,
        store: Option<&StoreId>,
        route: Route,
        request: &Term,
        op: &'static str,
    ) -> Result<Term, GaterError> {
        let (reply, _, _) = self
            .call(store, route, request, op, Retry::Idempotent)
            .await
            .map_err(CallFailure::into_error)?;
        match reply.tagged("ok", 2) {
            Some(v) => Ok(v[0].clone()),
            None => Err(remote_error(reply)),
        }
    }

    /// Sends a call to a worker, with the no-workers back-off and fail-over.
    /// Returns the reply, the node that answered and whether it was a retry.
    pub(crate) async fn call(
        &self,
        store: Option<&StoreId>,
        route: Route,
        request: &Term,
        op: &'static str,
        retry: Retry,
    ) -> Result<(Term, String, bool), CallFailure> {
        let (bytes, node, retried) = self.call_encoded(store, route, request, op, retry).await?;
        let reply = gater_term::decode(&bytes, &gater_term::DecodeLimits::default())
            .map_err(|e| CallFailure::Final(GaterError::Decode(e.to_string())))?;
        Ok((reply, node, retried))
    }

    /// [`Gater::call`] without decoding the reply.
    pub(crate) async fn call_encoded(
        &self,
        store: Option<&StoreId>,
        route: Route,
        request: &Term,
        op: &'static str,
        retry: Retry,
    ) -> Result<(Vec<u8>, String, bool), CallFailure> {
        let inner = &self.inner;
        let c = &inner.counters;
        c.inc(&c.calls);
        let backoff = inner.config.no_workers;
        let mut waits = 0u32;
        let mut failures = 0u32;
        let mut avoid = Vec::new();
        let mut retried = false;
        loop {
            let lease = match store {
                Some(s) => inner.registry.select_avoiding(s, route, &avoid),
                None => self.any_worker(&avoid),
            };
            let Some(lease) = lease else {
                let Some(wait) = backoff.next_wait(waits, crate::deadline::remaining()) else {
                    let e = GaterError::NoWorkers {
                        store: store.map_or_else(|| "*".into(), |s| s.0.clone()),
                    };
                    c.error(&e);
                    return Err(CallFailure::Final(e));
                };
                c.inc(&c.no_worker_waits);
                inner.registry.request_refresh();
                tokio::time::sleep(wait).await;
                waits += 1;
                continue;
            };
            let pid = lease.worker().pid.clone();
            let node = lease.worker().node.clone();
            c.sent_to(&node);
            let result = inner
                .pool
                .call_encoded(pid.clone(), request.clone(), inner.config.call_timeout)
                .await;
            drop(lease);
            let err = match result {
                Ok(reply) => return Ok((reply, node, retried)),
                Err(e) => e,
            };
            // Was the request surely not delivered (so a retry cannot repeat it)?
            let (not_delivered, mapped) = match &err {
                CallError::NotConnected { node } => {
                    inner.registry.request_refresh();
                    (true, GaterError::NodeDown { node: node.clone() })
                }
                CallError::TargetDown { reason } => {
                    inner.registry.worker_down(&pid);
                    if let Some(store) = store {
                        self.check_worker_exit(store, reason);
                    }
                    (
                        err.is_noproc(),
                        GaterError::WorkerDown {
                            reason: reason.clone(),
                        },
                    )
                }
                CallError::ConnectionLost { node } => {
                    inner.registry.request_refresh();
                    (false, GaterError::NodeDown { node: node.clone() })
                }
                CallError::Timeout => {
                    inner.registry.node_failing(&node);
                    let e = GaterError::Timeout { operation: op };
                    c.error(&e);
                    return Err(match retry {
                        Retry::Once => CallFailure::Unknown(e),
                        _ => CallFailure::Final(e),
                    });
                }
                CallError::BadReply { reason } => {
                    let e = GaterError::Decode(reason.clone());
                    c.error(&e);
                    return Err(CallFailure::Final(e));
                }
                other => {
                    let e = GaterError::Decode(other.to_string());
                    c.error(&e);
                    return Err(CallFailure::Final(e));
                }
            };
            failures += 1;
            avoid.push(pid);
            let may_retry = not_delivered || retry != Retry::Once;
            if !may_retry {
                c.error(&mapped);
                return Err(CallFailure::Unknown(mapped));
            }
            if failures > 4 {
                c.error(&mapped);
                return Err(CallFailure::Final(mapped));
            }
            c.inc(&c.failovers);
            retried |= !not_delivered;
            if !not_delivered {
                // Give the cluster a moment to elect a leader and the registry to learn it.
                inner.registry.refresh_now(Duration::from_secs(2)).await;
            }
        }
    }

    fn any_worker(&self, avoid: &[gater_pool::eetf::Pid]) -> Option<gater_registry::WorkerLease> {
        let status = self.inner.registry.status();
        let stores: Vec<String> = status
            .nodes
            .iter()
            .flat_map(|n| n.workers.keys().cloned())
            .collect();
        let store = stores.first()?;
        self.inner
            .registry
            .select_avoiding(&StoreId(store.clone()), Route::Any, avoid)
    }

    fn check_worker_exit(&self, store: &StoreId, reason: &Term) {
        // A worker that exits with noproc on a partition supervisor does not know the
        // store: drop it from the cache so the next call re-checks.
        let text = reason.to_string();
        if text.contains("PartitionSupervisor") || text.contains("function_clause") {
            tracing::warn!(%store, %text, "a gateway worker exited on a request");
            if let Ok(mut c) = self.inner.stores.write() {
                c.fetched = None;
            }
        }
    }

    /// Casts `request` to a worker on the leader node and polls `visible` until it
    /// reports the effect (or the confirmation time-out passes).
    async fn cast_confirmed<F, Fut>(
        &self,
        store: &StoreId,
        request: Term,
        op: &'static str,
        visible: F,
    ) -> Result<(), GaterError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<bool, GaterError>>,
    {
        let c = &self.inner.counters;
        let deadline = Instant::now() + self.inner.config.confirm_timeout;
        let mut sends = 0;
        loop {
            // (Re)send: a cast to a worker that died on the way is lost.
            if sends < 3 {
                let lease = self.wait_for_worker(store).await?;
                let pid = lease.worker().pid.clone();
                drop(lease);
                self.inner
                    .pool
                    .cast(pid, request.clone())
                    .await
                    .map_err(|e| GaterError::NodeDown {
                        node: e.to_string(),
                    })?;
                sends += 1;
            }
            let mut delay = Duration::from_millis(5);
            loop {
                match visible().await {
                    Ok(true) => return Ok(()),
                    Ok(false) => {}
                    Err(e @ GaterError::InvalidRequest(_)) => return Err(e),
                    Err(_) => {}
                }
                if Instant::now() >= deadline {
                    let e = GaterError::NotConfirmed { operation: op };
                    c.error(&e);
                    return Err(e);
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(200));
                if delay >= Duration::from_millis(200) && sends < 3 {
                    break;
                }
            }
        }
    }

    async fn wait_for_worker(
        &self,
        store: &StoreId,
    ) -> Result<gater_registry::WorkerLease, GaterError> {
        let backoff = self.inner.config.no_workers;
        let mut attempt = 0;
        loop {
            if let Some(l) = self.inner.registry.select(store, Route::Leader) {
                return Ok(l);
            }
            let Some(wait) = backoff.next_wait(attempt, crate::deadline::remaining()) else {
                break;
            };
            self.inner.registry.request_refresh();
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
        Err(GaterError::NoWorkers {
            store: store.0.clone(),
        })
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum EventsReply {
    Ok(Vec<gater_term::records::EventRecord>),
    Error(gater_term::raw::TermValue),
}

/// How a call failed: for good, or in a way that leaves the outcome unknown.
pub(crate) enum CallFailure {
    Final(GaterError),
    Unknown(GaterError),
}

impl CallFailure {
    fn into_error(self) -> GaterError {
        match self {
            CallFailure::Final(e) | CallFailure::Unknown(e) => e,
        }
    }
}

fn ack_request(store: &StoreId, name: &str, event: &EventRecord) -> Term {
    tuple(vec![
        atom("ack_event"),
        store_atom(store),
        bin(name),
        elixir::nil(),
        event.to_term(),
    ])
}

fn remote_error(reply: Term) -> GaterError {
    match reply.tagged("error", 2) {
        Some(r) => GaterError::Remote(r[0].clone()),
        None => GaterError::Decode(format!("unexpected reply {reply}")),
    }
}

fn validate_stream(stream: &str) -> Result<(), GaterError> {
    if stream.is_empty() {
        return Err(GaterError::InvalidRequest("empty stream id".into()));
    }
    Ok(())
}

fn parse_subscriptions(reply: &Term) -> Result<Vec<SubscriptionInfo>, GaterError> {
    let bad = || GaterError::Decode(format!("get_subscriptions: {reply}"));
    let Some(map) = reply.as_map() else {
        // An empty store may answer with an empty list.
        return match reply.as_list() {
            Some(l) if l.is_empty() => Ok(Vec::new()),
            _ => Err(bad()),
        };
    };
    let mut out = Vec::with_capacity(map.len());
    for (k, v) in map {
        let key = k
            .as_list()
            .and_then(|l| l.last().and_then(|h| h.as_str().map(str::to_owned)))
            .unwrap_or_default();
        let ty = v.get("type").and_then(TermExt::as_atom).ok_or_else(bad)?;
        let sel = v.get("selector").ok_or_else(bad)?;
        let Some(selector) = Selector::from_terms(ty, sel) else {
            continue;
        };
        out.push(SubscriptionInfo {
            key,
            selector,
            name: v
                .get("subscription_name")
                .and_then(TermExt::as_str)
                .unwrap_or("transient")
                .to_owned(),
            start_from: v.get("start_from").and_then(TermExt::as_i64).unwrap_or(0),
            subscriber: v.get("subscriber").cloned().unwrap_or_else(elixir::nil),
        });
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

fn parse_snapshots(reply: &Term) -> Result<Vec<SnapshotRecord>, GaterError> {
    let bad = || GaterError::Decode(format!("list_snapshots: {reply}"));
    let mut out = Vec::new();
    if let Some(map) = reply.as_map() {
        for (k, v) in map {
            let path = k.as_list().ok_or_else(bad)?;
            let (source, stream, version) = match path.as_ref() {
                [_, src, stream, ver] => (src, stream, ver),
                _ => return Err(bad()),
            };
            out.push(SnapshotRecord {
                source_uuid: source.as_str().unwrap_or_default().to_owned(),
                stream_uuid: stream.as_str().unwrap_or_default().to_owned(),
                version: version
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .or_else(|| version.as_i64())
                    .ok_or_else(bad)?,
                record: v.clone(),
            });
        }
    } else if let Some(list) = reply.as_list() {
        // §3's shape: a list of records.
        for r in list.iter() {
            out.push(SnapshotRecord {
                source_uuid: r
                    .get("source_uuid")
                    .and_then(TermExt::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                stream_uuid: r
                    .get("stream_uuid")
                    .and_then(TermExt::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                version: r
                    .get("source_version")
                    .and_then(TermExt::as_i64)
                    .unwrap_or(-1),
                record: r.clone(),
            });
        }
    } else {
        return Err(bad());
    }
    out.sort_by(|a, b| {
        (&a.source_uuid, &a.stream_uuid, a.version).cmp(&(
            &b.source_uuid,
            &b.stream_uuid,
            b.version,
        ))
    });
    Ok(out)
}

fn parse_stores(reply: &Term) -> Result<Vec<StoreInfo>, GaterError> {
    let bad = || GaterError::Decode(format!("list_stores: {reply}"));
    let list = reply.as_list().ok_or_else(bad)?;
    let mut out = Vec::new();
    for e in list.iter() {
        let node = e
            .get("node")
            .and_then(TermExt::as_atom)
            .unwrap_or_default()
            .to_owned();
        let config = e.get("store").cloned().ok_or_else(bad)?;
        // The store's id is in its config (`store_id`); a bare atom is accepted too.
        let id = config
            .as_atom()
            .or_else(|| config.get("store_id").and_then(TermExt::as_atom))
            .or_else(|| config.get("store").and_then(TermExt::as_atom))
            .ok_or_else(bad)?
            .to_owned();
        out.push(StoreInfo {
            node,
            store: StoreId(id),
            config,
        });
    }
    Ok(out)
}

async fn run_discovery(pool: Pool, mut discovery: gater_gossip::Discovery) {
    while let Some(ev) = discovery.recv().await {
        if let gater_gossip::DiscoveryEvent::NodeSeen { node, .. } = ev {
            let pool = pool.clone();
            tokio::spawn(async move {
                let _ = pool.connect(node.as_str()).await;
            });
        }
    }
}

#[allow(dead_code)]
fn _assert_send() {
    fn is_send<T: Send + Sync>() {}
    is_send::<Gater>();
    let _ = NodeEvent::Down {
        node: String::new(),
        reason: String::new(),
    };
}
