//! Counters of the API layer.

use crate::GaterError;
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) calls: AtomicU64,
    pub(crate) failovers: AtomicU64,
    pub(crate) no_worker_waits: AtomicU64,
    pub(crate) stale_retries: AtomicU64,
    pub(crate) recovered_appends: AtomicU64,
    pub(crate) resubscribes: AtomicU64,
    pub(crate) events_delivered: AtomicU64,
    pub(crate) duplicates_dropped: AtomicU64,
    pub(crate) gap_fills: AtomicU64,
    errors: Mutex<BTreeMap<&'static str, u64>>,
    by_node: RwLock<HashMap<String, Arc<AtomicU64>>>,
}

impl Counters {
    pub(crate) fn inc(&self, c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a call sent to a worker on `node`.
    pub(crate) fn sent_to(&self, node: &str) {
        if let Ok(m) = self.by_node.read()
            && let Some(c) = m.get(node)
        {
            c.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Ok(mut m) = self.by_node.write() {
            m.entry(node.to_owned())
                .or_default()
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn error(&self, e: &GaterError) {
        if let Ok(mut m) = self.errors.lock() {
            *m.entry(e.kind()).or_default() += 1;
        }
    }

    pub(crate) fn snapshot(
        &self,
        pool: gater_pool::MetricsSnapshot,
        subscriptions: usize,
    ) -> GaterMetrics {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        GaterMetrics {
            calls: g(&self.calls),
            failovers: g(&self.failovers),
            no_worker_waits: g(&self.no_worker_waits),
            stale_retries: g(&self.stale_retries),
            recovered_appends: g(&self.recovered_appends),
            resubscribes: g(&self.resubscribes),
            events_delivered: g(&self.events_delivered),
            duplicates_dropped: g(&self.duplicates_dropped),
            gap_fills: g(&self.gap_fills),
            subscription_topics: subscriptions as u64,
            calls_by_node: self
                .by_node
                .read()
                .map(|m| {
                    m.iter()
                        .map(|(n, c)| (n.clone(), c.load(Ordering::Relaxed)))
                        .collect()
                })
                .unwrap_or_default(),
            errors: self.errors.lock().map(|m| m.clone()).unwrap_or_default(),
            pool,
        }
    }
}

/// The API's counters at one moment (monotonic except `subscription_topics`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GaterMetrics {
    /// Operations that called a worker (each counted once, whatever its retries).
    pub calls: u64,
    /// Retries on another worker after a node or worker failure.
    pub failovers: u64,
    /// Waits of the no-workers back-off.
    pub no_worker_waits: u64,
    /// Appends retried on the leader after a stale-looking `wrong_expected_version`.
    pub stale_retries: u64,
    /// Appends whose outcome was unknown and whose events were found in the stream.
    pub recovered_appends: u64,
    /// Subscriptions re-saved after their emitting node died.
    pub resubscribes: u64,
    /// Events handed to subscription consumers.
    pub events_delivered: u64,
    /// Subscription events dropped because they were already delivered.
    pub duplicates_dropped: u64,
    /// Subscription gaps filled by reading the stream.
    pub gap_fills: u64,
    /// Pub/sub topics with a local subscriber now.
    pub subscription_topics: u64,
    /// Calls sent to workers, by node (retries included).
    pub calls_by_node: BTreeMap<String, u64>,
    /// Errors returned, by [`GaterError::kind`].
    pub errors: BTreeMap<&'static str, u64>,
    /// The distribution pool's counters.
    pub pool: gater_pool::MetricsSnapshot,
}
