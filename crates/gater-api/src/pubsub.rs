//! Phoenix.PubSub membership over OTP's `pg`, as a peer scope on every node.
//!
//! Per connected node: one local pid is our scope *and* the member of the events group
//! (`'Elixir.ex_esdb_events.Adapter'`), a second pid the member of the operational
//! group. We send `{discover, OurScope}` to the node's `'Elixir.Phoenix.PubSub'` scope;
//! it answers with a `sync` cast and its own `discover`, which we answer with our
//! `sync` naming our members. From then on `forward_to_local` messages arrive and are
//! routed by topic. Everything is redone on every reconnect (a mailbox lives as long
//! as its connection). Nothing but `sync` is ever cast to a scope (any other cast
//! crashes it).

use crate::subscription::OperationalMessage;
use gater_pool::{NodeEvent, Pool, Target, Term};
use gater_term::TermExt;
use gater_term::build::{atom, list, tuple};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};

const SCOPE: &str = "Elixir.Phoenix.PubSub";
const EVENTS_GROUP: &str = "Elixir.ex_esdb_events.Adapter";

type TopicSender = mpsc::UnboundedSender<Term>;

struct Shared {
    ops_group: String,
    topics: RwLock<HashMap<String, Vec<(u64, TopicSender)>>>,
    next_id: AtomicU64,
    ops: broadcast::Sender<OperationalMessage>,
    synced: Mutex<HashSet<String>>,
    synced_changes: watch::Sender<u64>,
    sub_refs: Mutex<HashMap<String, usize>>,
}

/// The gateway's pub/sub membership and topic router.
pub(crate) struct PubSub {
    shared: Arc<Shared>,
}

/// A topic registration; unregisters when dropped.
pub(crate) struct TopicGuard {
    shared: Arc<Shared>,
    topic: String,
    id: u64,
}

impl Drop for TopicGuard {
    fn drop(&mut self) {
        if let Ok(mut t) = self.shared.topics.write()
            && let Some(v) = t.get_mut(&self.topic)
        {
            v.retain(|(id, _)| *id != self.id);
            if v.is_empty() {
                t.remove(&self.topic);
            }
        }
    }
}

impl PubSub {
    pub(crate) fn new(ops_pubsub: &str) -> Self {
        let (ops, _) = broadcast::channel(1024);
        let (synced_changes, _) = watch::channel(0);
        Self {
            shared: Arc::new(Shared {
                ops_group: format!("Elixir.{ops_pubsub}.Adapter"),
                topics: RwLock::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                ops,
                synced: Mutex::new(HashSet::new()),
                synced_changes,
                sub_refs: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Starts the membership task over `pool`.
    pub(crate) fn start(&self, pool: Pool) -> tokio::task::JoinHandle<()> {
        let shared = Arc::clone(&self.shared);
        let events = pool.subscribe();
        tokio::spawn(supervise(shared, pool, events))
    }

    /// Registers for a topic's messages.
    pub(crate) fn register(&self, topic: &str) -> (TopicGuard, mpsc::UnboundedReceiver<Term>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut t) = self.shared.topics.write() {
            t.entry(topic.to_owned()).or_default().push((id, tx));
        }
        (
            TopicGuard {
                shared: Arc::clone(&self.shared),
                topic: topic.to_owned(),
                id,
            },
            rx,
        )
    }

    /// Counts a local user of a subscription key; returns the new count.
    pub(crate) fn retain_sub(&self, key: &str) -> usize {
        let mut m = self
            .shared
            .sub_refs
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let n = m.entry(key.to_owned()).or_default();
        *n += 1;
        *n
    }

    /// Drops a local user of a subscription key; returns how many are left.
    pub(crate) fn release_sub(&self, key: &str) -> usize {
        let mut m = self
            .shared
            .sub_refs
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let left = m.get_mut(key).map(|n| {
            *n = n.saturating_sub(1);
            *n
        });
        if left == Some(0) {
            m.remove(key);
        }
        left.unwrap_or(0)
    }

    pub(crate) fn active_topics(&self) -> usize {
        self.shared.topics.read().map(|t| t.len()).unwrap_or(0)
    }

    /// Whether our membership is synced with `node`'s scope.
    pub(crate) fn is_synced(&self, node: &str) -> bool {
        self.shared
            .synced
            .lock()
            .map(|s| s.contains(node))
            .unwrap_or(false)
    }

    /// Waits until our membership is synced with every node in `nodes` (bounded).
    pub(crate) async fn wait_synced(&self, nodes: &[String], timeout: Duration) -> bool {
        let mut changes = self.shared.synced_changes.subscribe();
        let all = |s: &Self| nodes.iter().all(|n| s.is_synced(n));
        let wait = async {
            loop {
                if all(self) {
                    return;
                }
                if changes.changed().await.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(timeout, wait).await;
        all(self)
    }

    pub(crate) fn operational(
        &self,
    ) -> impl futures::Stream<Item = OperationalMessage> + Send + 'static {
        let rx = self.shared.ops.subscribe();
        futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(m) => return Some((m, rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
    }
}

async fn supervise(shared: Arc<Shared>, pool: Pool, mut events: broadcast::Receiver<NodeEvent>) {
    let mut members: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    let start = |node: String, members: &mut HashMap<String, tokio::task::JoinHandle<()>>| {
        if let Some(old) = members.remove(&node) {
            old.abort();
        }
        let h = tokio::spawn(member(Arc::clone(&shared), pool.clone(), node.clone()));
        members.insert(node, h);
    };
    for node in pool.connected_nodes() {
        start(node, &mut members);
    }
    loop {
        match events.recv().await {
            Ok(NodeEvent::Up { node, .. }) => start(node, &mut members),
            Ok(NodeEvent::Down { node, .. }) => {
                if let Ok(mut s) = shared.synced.lock() {
                    s.remove(&node);
                }
            }
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => {
                for node in pool.connected_nodes() {
                    if members.get(&node).is_none_or(|h| h.is_finished()) {
                        start(node, &mut members);
                    }
                }
            }
            Err(broadcast::error::RecvError::Closed) => {
                for (_, h) in members {
                    h.abort();
                }
                return;
            }
        }
    }
}

async fn member(shared: Arc<Shared>, pool: Pool, node: String) {
    let (Ok(mut scope), Ok(mut ops)) = (pool.mailbox(&node), pool.mailbox(&node)) else {
        return;
    };
    let our_scope = scope.pid().clone();
    let ops_pid = ops.pid().clone();
    let discover = tuple(vec![atom("discover"), Term::from(our_scope.clone())]);
    if pool
        .send(Target::name(SCOPE, &node), discover.clone())
        .await
        .is_err()
    {
        return;
    }
    // A node that is still booting may not run its scope yet (the discover is dropped):
    // repeat it until the scope answers.
    let mut synced = false;
    let mut retry_in = Duration::from_millis(200);
    let retry = tokio::time::sleep(retry_in);
    tokio::pin!(retry);
    let sync = tuple(vec![
        atom("$gen_cast"),
        tuple(vec![
            atom("sync"),
            Term::from(our_scope.clone()),
            list(vec![
                tuple(vec![
                    atom(EVENTS_GROUP),
                    list(vec![Term::from(our_scope.clone())]),
                ]),
                tuple(vec![
                    atom(&shared.ops_group),
                    list(vec![Term::from(ops_pid)]),
                ]),
            ]),
        ]),
    ]);
    loop {
        let (msg, from_ops) = tokio::select! {
            m = scope.recv() => (m, false),
            m = ops.recv() => (m, true),
            _ = &mut retry, if !synced => {
                if pool.send(Target::name(SCOPE, &node), discover.clone()).await.is_err() {
                    break;
                }
                retry_in = (retry_in * 2).min(Duration::from_secs(2));
                retry.as_mut().reset(tokio::time::Instant::now() + retry_in);
                continue;
            }
        };
        let Some(msg) = msg else { break };
        let Some(elems) = msg.as_tuple() else {
            continue;
        };
        match elems {
            [tag, their] if tag.is_atom("discover") => {
                if let Some(their) = their.as_pid() {
                    let _ = pool.send(their.clone(), sync.clone()).await;
                    synced = true;
                    if let Ok(mut s) = shared.synced.lock() {
                        s.insert(node.clone());
                    }
                    shared.synced_changes.send_modify(|v| *v += 1);
                }
            }
            [tag, topic, message, _] if tag.is_atom("forward_to_local") => {
                let Some(topic) = topic.as_str() else {
                    continue;
                };
                if from_ops {
                    let _ = shared.ops.send(OperationalMessage {
                        node: node.clone(),
                        topic: topic.to_owned(),
                        message: message.clone(),
                    });
                } else if let Ok(t) = shared.topics.read()
                    && let Some(subs) = t.get(topic)
                {
                    for (_, tx) in subs {
                        let _ = tx.send(message.clone());
                    }
                }
            }
            // `{'$gen_cast', {sync, ..}}`, `{join, ..}`, `{leave, ..}`: their members,
            // which we do not need.
            _ => {}
        }
    }
    if let Ok(mut s) = shared.synced.lock() {
        s.remove(&node);
    }
}
