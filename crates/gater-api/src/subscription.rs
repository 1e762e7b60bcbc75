//! Subscriptions as async streams, with resubscription when the emitter dies.

use crate::GaterError;
use crate::gater::Gater;
use crate::records::{Direction, EventRecord, Selector, Subscription};
use futures::Stream;
use gater_pool::{NodeEvent, Term};
use gater_registry::Route;
use gater_term::TermExt;
use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// A message of the operational Phoenix.PubSub (`EX_ESDB_PUB_SUB`).
#[derive(Debug, Clone, PartialEq)]
pub struct OperationalMessage {
    /// The node whose scope forwarded it.
    pub node: String,
    /// The topic.
    pub topic: String,
    /// The message as broadcast.
    pub message: Term,
}

/// The events of a subscription, in order per stream, each once.
///
/// Yields `Err` for trouble the stream recovers from (it keeps going) and ends when the
/// gateway shuts down. For a persistent subscription, an event is acked (subscriber
/// `nil`) when the consumer asks for the next one. Dropping the stream ends the local
/// subscription; a transient subscription is removed from the store when its last
/// local stream goes.
pub struct EventStream {
    rx: mpsc::Receiver<Result<EventRecord, GaterError>>,
    acks: Option<mpsc::UnboundedSender<EventRecord>>,
    pending_ack: Option<EventRecord>,
    subscription: Subscription,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("subscription", &self.subscription)
            .finish_non_exhaustive()
    }
}

impl EventStream {
    /// The subscription this stream serves.
    pub fn subscription(&self) -> &Subscription {
        &self.subscription
    }

    /// The next event (`None` when the stream ended).
    pub async fn next_event(&mut self) -> Option<Result<EventRecord, GaterError>> {
        futures::StreamExt::next(self).await
    }
}

impl Stream for EventStream {
    type Item = Result<EventRecord, GaterError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let (Some(prev), Some(acks)) = (this.pending_ack.take(), &this.acks) {
            let _ = acks.send(prev);
        }
        let r = this.rx.poll_recv(cx);
        if let Poll::Ready(Some(Ok(ev))) = &r
            && this.acks.is_some()
        {
            this.pending_ack = Some(ev.clone());
        }
        r
    }
}

fn sub_key(sub: &Subscription) -> String {
    format!(
        "{}|{}|{:?}|{}",
        sub.store,
        sub.selector.type_name(),
        sub.selector.to_term(),
        sub.wire_name()
    )
}

pub(crate) async fn start(gater: Gater, sub: Subscription) -> Result<EventStream, GaterError> {
    gater.ensure_store(&sub.store).await?;
    let inner = &gater.inner;
    let (guard, raw) = inner.pubsub.register(&sub.topic());
    let node_events = inner.pool.subscribe();
    // Be a member everywhere the emitter could be before the subscription exists.
    let nodes = inner.registry.exesdb_nodes();
    inner
        .pubsub
        .wait_synced(&nodes, Duration::from_secs(3))
        .await;

    let mut last: HashMap<String, i64> = HashMap::new();
    if let Selector::Stream(s) = &sub.selector {
        let from = match &sub.name {
            None => gater.get_version(sub.store.clone(), s).await?,
            Some(_) => sub.start_from - 1,
        };
        last.insert(s.clone(), from);
    }
    gater.save_subscription(&sub).await?;
    let key = sub_key(&sub);
    inner.pubsub.retain_sub(&key);

    let (tx, rx) = mpsc::channel(inner.config.subscription_buffer.max(1));
    let (ack_tx, ack_rx) = mpsc::unbounded_channel();
    let emitter = inner.registry.leader(&sub.store);
    let driver = Driver {
        gater: gater.clone(),
        sub: sub.clone(),
        last,
        floor: sub.name.as_ref().map(|_| sub.start_from - 1),
        tx,
        emitter,
    };
    tokio::spawn(driver.run(raw, ack_rx, node_events, guard, key));
    Ok(EventStream {
        rx,
        acks: sub.name.as_ref().map(|_| ack_tx),
        pending_ack: None,
        subscription: sub,
    })
}

struct Driver {
    gater: Gater,
    sub: Subscription,
    /// The last event number delivered per stream.
    last: HashMap<String, i64>,
    /// For persistent subscriptions, events below `start_from` are not delivered.
    floor: Option<i64>,
    tx: mpsc::Sender<Result<EventRecord, GaterError>>,
    emitter: Option<String>,
}

enum Flow {
    Go,
    Stop,
}

impl Driver {
    async fn run(
        mut self,
        mut raw: mpsc::UnboundedReceiver<Term>,
        mut acks: mpsc::UnboundedReceiver<EventRecord>,
        mut node_events: broadcast::Receiver<NodeEvent>,
        guard: crate::pubsub::TopicGuard,
        key: String,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let flow = tokio::select! {
                m = raw.recv() => match m {
                    Some(m) => self.on_message(m).await,
                    None => Flow::Stop,
                },
                a = acks.recv(), if self.sub.name.is_some() => {
                    if let (Some(a), Some(name)) = (a, &self.sub.name) {
                        self.gater.ack_unconfirmed(&self.sub.store, name, &a).await;
                    }
                    Flow::Go
                }
                ev = node_events.recv() => match ev {
                    Ok(NodeEvent::Down { node, .. })
                        if self.emitter.as_deref().is_none_or(|e| e == node) =>
                    {
                        self.resubscribe(Some(node)).await
                    }
                    Ok(NodeEvent::Up { .. }) if self.emitter.is_none() => {
                        self.resubscribe(None).await
                    }
                    Err(broadcast::error::RecvError::Closed) => Flow::Stop,
                    _ => Flow::Go,
                },
                _ = tick.tick() => {
                    let leader = self.gater.inner.registry.leader(&self.sub.store);
                    if leader.is_some() && leader != self.emitter {
                        // The emitter moved without us seeing it die.
                        self.resubscribe(None).await
                    } else {
                        Flow::Go
                    }
                }
                _ = self.tx.closed() => Flow::Stop,
            };
            if let Flow::Stop = flow {
                break;
            }
        }
        drop(guard);
        // Flush the last ack the consumer earned.
        while let Ok(a) = acks.try_recv() {
            if let Some(name) = &self.sub.name {
                self.gater.ack_unconfirmed(&self.sub.store, name, &a).await;
            }
        }
        let left = self.gater.inner.pubsub.release_sub(&key);
        if left == 0 && self.sub.name.is_none() {
            let _ = self.gater.remove_subscription(&self.sub).await;
        }
    }

    async fn on_message(&mut self, m: Term) -> Flow {
        let Some([events]) = m.tagged("events", 2).map(|v| [&v[0]]) else {
            return Flow::Go;
        };
        let Some(list) = events.as_list() else {
            return Flow::Go;
        };
        for t in list.iter() {
            match EventRecord::from_term(t) {
                Ok(r) => {
                    if let Flow::Stop = self.deliver_live(r).await {
                        return Flow::Stop;
                    }
                }
                Err(e) => {
                    if self.tx.send(Err(e)).await.is_err() {
                        return Flow::Stop;
                    }
                }
            }
        }
        Flow::Go
    }

    /// Delivers a live event: drops duplicates, fills a gap before it from the store.
    async fn deliver_live(&mut self, r: EventRecord) -> Flow {
        let c = &self.gater.inner.counters;
        let seen = self.last.get(&r.stream_id).copied().or(self.floor);
        if let Some(last) = seen {
            if r.event_number <= last {
                c.inc(&c.duplicates_dropped);
                return Flow::Go;
            }
            if r.event_number > last + 1 {
                c.inc(&c.gap_fills);
                if let Flow::Stop = self
                    .catch_up(&r.stream_id.clone(), last + 1, Some(r.event_number))
                    .await
                {
                    return Flow::Stop;
                }
                if self
                    .last
                    .get(&r.stream_id)
                    .is_some_and(|l| r.event_number <= *l)
                {
                    return Flow::Go;
                }
            }
        }
        self.emit(r).await
    }

    async fn emit(&mut self, r: EventRecord) -> Flow {
        self.last.insert(r.stream_id.clone(), r.event_number);
        let c = &self.gater.inner.counters;
        c.inc(&c.events_delivered);
        if self.tx.send(Ok(r)).await.is_err() {
            Flow::Stop
        } else {
            Flow::Go
        }
    }

    /// Reads `stream` from `from` (up to `until`, exclusive, when given) on the leader
    /// and delivers what was not delivered yet.
    async fn catch_up(&mut self, stream: &str, from: i64, until: Option<i64>) -> Flow {
        let mut next = from;
        loop {
            let count = match until {
                Some(u) if u <= next => return Flow::Go,
                Some(u) => ((u - next) as usize).min(1000),
                None => 1000,
            };
            let got = self
                .gater
                .get_events_routed(
                    &self.sub.store,
                    stream,
                    next,
                    count,
                    Direction::Forward,
                    Route::Leader,
                )
                .await;
            let events = match got {
                Ok(e) => e,
                Err(e) => {
                    return if self.tx.send(Err(e)).await.is_err() {
                        Flow::Stop
                    } else {
                        Flow::Go
                    };
                }
            };
            let n = events.len();
            for r in events {
                if !self.matches(&r) {
                    // Not selected (event-type subscriptions), but it advances the stream.
                    self.last.insert(r.stream_id.clone(), r.event_number);
                    continue;
                }
                if self.last.get(stream).is_some_and(|l| r.event_number <= *l) {
                    continue;
                }
                if let Flow::Stop = self.emit(r).await {
                    return Flow::Stop;
                }
            }
            if n < count || n == 0 {
                return Flow::Go;
            }
            next += n as i64;
        }
    }

    fn matches(&self, r: &EventRecord) -> bool {
        match &self.sub.selector {
            Selector::AllStreams => true,
            Selector::Stream(s) => &r.stream_id == s,
            Selector::EventType(t) => &r.event_type == t,
            // Map selectors are matched by the emitter; a gap read cannot tell, so it
            // delivers nothing it did not receive live.
            Selector::EventPattern(_) | Selector::EventPayload(_) => false,
        }
    }

    /// The emitter died or moved: learn the new leader, be its pub/sub member, save the
    /// subscription again, then read every stream we follow from where we are.
    async fn resubscribe(&mut self, dead: Option<String>) -> Flow {
        let inner = &self.gater.inner;
        inner.counters.inc(&inner.counters.resubscribes);
        let store = self.sub.store.clone();
        let mut leader = None;
        for _ in 0..40 {
            inner.registry.refresh_now(Duration::from_millis(500)).await;
            let l = inner.registry.leader(&store);
            if l.is_some() && l != dead {
                leader = l;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let Some(leader) = leader else {
            let e = GaterError::NoWorkers {
                store: store.0.clone(),
            };
            return if self.tx.send(Err(e)).await.is_err() {
                Flow::Stop
            } else {
                Flow::Go
            };
        };
        inner
            .pubsub
            .wait_synced(std::slice::from_ref(&leader), Duration::from_secs(3))
            .await;
        self.emitter = Some(leader);
        if let Err(e) = self.gater.save_subscription(&self.sub).await
            && self.tx.send(Err(e)).await.is_err()
        {
            return Flow::Stop;
        }
        let streams: Vec<(String, i64)> = self.last.iter().map(|(s, l)| (s.clone(), *l)).collect();
        for (s, l) in streams {
            if let Flow::Stop = self.catch_up(&s, l + 1, None).await {
                return Flow::Stop;
            }
        }
        Flow::Go
    }
}
