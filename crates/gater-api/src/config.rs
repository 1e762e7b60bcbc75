//! How a [`crate::Gater`] connects, routes and retries.

use gater_gossip::DiscoveryConfig;
use gater_pool::PoolConfig;
use gater_registry::SelectionPolicy;
use std::time::Duration;

/// The back-off while no worker serves a store: `base × 2^attempt`, capped at `cap`,
/// `attempts` times, then [`crate::GaterError::NoWorkers`]. The defaults are the Elixir
/// gater's (100 ms, 5 s, 10 attempts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoWorkersBackoff {
    /// First delay.
    pub base: Duration,
    /// Largest delay.
    pub cap: Duration,
    /// How many waits before giving up.
    pub attempts: u32,
}

impl Default for NoWorkersBackoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(5),
            attempts: 10,
        }
    }
}

impl NoWorkersBackoff {
    /// What is kept back before a deadline ([`crate::with_deadline`]) for the last look
    /// at the registry and the answer, so that `NoWorkers` arrives before the caller's
    /// own time-out.
    pub const DEADLINE_MARGIN: Duration = Duration::from_millis(100);

    /// The delay before retry number `attempt` (0-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The wait before retry number `attempt` when `remaining` is left before a deadline
    /// (`None`: no deadline), or `None` to give up now: after `attempts` waits, or when
    /// the deadline (less [`Self::DEADLINE_MARGIN`]) is reached. A wait that would pass
    /// the deadline is shortened to end at it, so the last look happens just before.
    pub fn next_wait(&self, attempt: u32, remaining: Option<Duration>) -> Option<Duration> {
        if attempt >= self.attempts {
            return None;
        }
        let delay = self.delay(attempt);
        match remaining {
            None => Some(delay),
            Some(r) => {
                let usable = r.saturating_sub(Self::DEADLINE_MARGIN);
                (!usable.is_zero()).then(|| delay.min(usable))
            }
        }
    }

    /// The longest the whole schedule waits.
    pub fn total(&self) -> Duration {
        (0..self.attempts).map(|a| self.delay(a)).sum()
    }
}

/// Everything a [`crate::Gater`] needs. Build with [`GaterConfig::new`] and the
/// builder methods; every field has a documented default.
#[derive(Debug, Clone)]
pub struct GaterConfig {
    /// The distribution cookie of the cluster.
    pub cookie: String,
    /// Our node name; default `exesdb_gater_<random>@<hostname>`.
    pub node_name: Option<String>,
    /// EPMD port of the cluster's hosts; default `ERL_EPMD_PORT` or 4369.
    pub epmd_port: Option<u16>,
    /// `net_ticktime` of the distribution connections (default 60 s, as OTP): a tick
    /// after a quarter of it in silence, and a node silent for all of it is dropped.
    /// Match the cluster's `-kernel net_ticktime`.
    pub net_ticktime: Duration,
    /// Nodes to connect to at start (`EX_ESDB_GATER_CONNECT_TO`).
    pub nodes: Vec<String>,
    /// Gossip / EPMD discovery; `None` (the default) uses only `nodes`.
    pub discovery: Option<DiscoveryConfig>,
    /// Time-out of one call to a worker (default 15 s, as the Elixir gater's calls).
    pub call_timeout: Duration,
    /// How long [`crate::Gater::connect`] waits for the first connections and registry
    /// refresh (default 10 s). Nodes that are not up by then are retried in the background.
    pub startup_timeout: Duration,
    /// Worker selection (default power of two choices by calls in flight).
    pub selection: SelectionPolicy,
    /// Registry refresh period (default 2 s); node events and worker exits refresh sooner.
    pub refresh_interval: Duration,
    /// The back-off while no worker serves a store.
    pub no_workers: NoWorkersBackoff,
    /// How long the `list_stores` answer is trusted (default 10 s; an unknown store
    /// refreshes it at most once a second).
    pub store_cache_ttl: Duration,
    /// How long a cast's effect may take to become visible (default 5 s).
    pub confirm_timeout: Duration,
    /// Reads of a stream this gateway appended to within this window go to the leader
    /// (default 5 s): read-your-writes.
    pub read_your_writes: Duration,
    /// The operational Phoenix.PubSub (`EX_ESDB_PUB_SUB`, default `ex_esdb_pubsub`).
    pub ops_pubsub: String,
    /// Events buffered per subscription before back-pressure (default 1024).
    pub subscription_buffer: usize,
    /// Appends in flight per store at once (default 0: no limit). ExESDB commits a
    /// store's writes one after another on its leader and each gateway worker serves one
    /// request at a time, so more appends in flight only queue up in worker mailboxes
    /// (and, on a CPU-bound cluster, cost throughput); the rest wait here, within their
    /// `call_timeout`, in arrival order.
    pub max_concurrent_appends: usize,
}

impl GaterConfig {
    /// Defaults with this cookie and no nodes.
    pub fn new(cookie: impl Into<String>) -> Self {
        Self {
            cookie: cookie.into(),
            node_name: None,
            epmd_port: None,
            net_ticktime: gater_pool::DEFAULT_NET_TICKTIME,
            nodes: Vec::new(),
            discovery: None,
            call_timeout: Duration::from_secs(15),
            startup_timeout: Duration::from_secs(10),
            selection: SelectionPolicy::default(),
            refresh_interval: Duration::from_secs(2),
            no_workers: NoWorkersBackoff::default(),
            store_cache_ttl: Duration::from_secs(10),
            confirm_timeout: Duration::from_secs(5),
            read_your_writes: Duration::from_secs(5),
            ops_pubsub: "ex_esdb_pubsub".into(),
            subscription_buffer: 1024,
            max_concurrent_appends: 0,
        }
    }

    /// Adds a node to connect to.
    pub fn node(mut self, node: impl Into<String>) -> Self {
        self.nodes.push(node.into());
        self
    }

    /// Adds nodes to connect to.
    pub fn nodes<I: IntoIterator<Item = S>, S: Into<String>>(mut self, nodes: I) -> Self {
        self.nodes.extend(nodes.into_iter().map(Into::into));
        self
    }

    /// Sets our node name.
    pub fn node_name(mut self, name: impl Into<String>) -> Self {
        self.node_name = Some(name.into());
        self
    }

    /// Sets the EPMD port.
    pub fn epmd_port(mut self, port: u16) -> Self {
        self.epmd_port = Some(port);
        self
    }

    /// Sets `net_ticktime`.
    pub fn net_ticktime(mut self, t: Duration) -> Self {
        self.net_ticktime = t;
        self
    }

    /// Turns on discovery.
    pub fn discovery(mut self, d: DiscoveryConfig) -> Self {
        self.discovery = Some(d);
        self
    }

    /// Sets the selection policy.
    pub fn selection(mut self, p: SelectionPolicy) -> Self {
        self.selection = p;
        self
    }

    /// Sets the call time-out.
    pub fn call_timeout(mut self, t: Duration) -> Self {
        self.call_timeout = t;
        self
    }

    /// Sets the no-workers back-off.
    pub fn no_workers(mut self, b: NoWorkersBackoff) -> Self {
        self.no_workers = b;
        self
    }

    /// The pool settings this configuration implies.
    pub fn pool_config(&self) -> PoolConfig {
        let mut p = PoolConfig::new(self.cookie.clone()).net_ticktime(self.net_ticktime);
        if let Some(n) = &self.node_name {
            p = p.node_name(n.clone());
        }
        if let Some(port) = self.epmd_port {
            p = p.epmd_port(port);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_workers_schedule_is_the_elixir_gaters() {
        let b = NoWorkersBackoff::default();
        let delays: Vec<u128> = (0..10).map(|a| b.delay(a).as_millis()).collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000]
        );
        assert_eq!(b.delay(40), Duration::from_secs(5));
        assert_eq!(b.total(), Duration::from_millis(26_300));
    }

    #[test]
    fn net_ticktime_reaches_the_pool() {
        let c = GaterConfig::new("c");
        assert_eq!(c.pool_config().net_ticktime, Duration::from_secs(60));
        let c = c.net_ticktime(Duration::from_secs(8));
        assert_eq!(c.pool_config().net_ticktime, Duration::from_secs(8));
    }

    #[test]
    fn a_deadline_cuts_the_schedule_short_before_it() {
        let b = NoWorkersBackoff::default();
        let ms = |n| Duration::from_millis(n);
        assert_eq!(b.next_wait(0, None), Some(ms(100)));
        assert_eq!(b.next_wait(10, None), None);
        // Plenty of time: the schedule as it is.
        assert_eq!(b.next_wait(6, Some(ms(9_000))), Some(ms(5_000)));
        // A wait that would pass the deadline ends the margin before it...
        assert_eq!(b.next_wait(6, Some(ms(2_000))), Some(ms(1_900)));
        // ...and then the schedule gives up.
        assert_eq!(b.next_wait(7, Some(ms(100))), None);
        assert_eq!(b.next_wait(7, Some(Duration::ZERO)), None);
        // The wait count still bounds it.
        assert_eq!(b.next_wait(10, Some(ms(60_000))), None);
    }
}
