//! Pool settings with named defaults.

use gater_term::DecodeLimits;
use std::time::Duration;

/// The default EPMD port (`ERL_EPMD_PORT` when unset).
pub const DEFAULT_EPMD_PORT: u16 = 4369;
/// The default cap on one distribution frame: 64 MiB. OTP without `FRAGMENTS` sends a
/// message of any size as one frame; bigger ones close the connection.
pub const DEFAULT_MAX_FRAME_LEN: usize = 64 << 20;
/// The default `net_ticktime`, as in OTP: 60 s (a tick every 15 s).
pub const DEFAULT_NET_TICKTIME: Duration = Duration::from_secs(60);
/// The default number of commands queued for one connection before callers wait.
pub const DEFAULT_COMMAND_QUEUE: usize = 4096;
/// The default number of bytes buffered for writing before commands are no longer taken.
pub const DEFAULT_MAX_WRITE_BUFFER: usize = 8 << 20;
/// The default number of messages a local mailbox holds before it is closed as lagging.
pub const DEFAULT_MAILBOX_CAPACITY: usize = 4096;
/// The default bound on EPMD look-up, TCP connect and handshake together.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the monitor of a call's target is kept after its last call ended: zero, so
/// [`CallError::is_noproc`](crate::CallError::is_noproc) keeps meaning "not delivered"
/// (see [`PoolConfig::monitor_linger`]).
pub const DEFAULT_MONITOR_LINGER: Duration = Duration::ZERO;

/// How the pool connects and what it accepts from peers.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Our node name, `name@host`; default `exesdb_gater_<random>@<hostname>`.
    /// Match the cluster's naming: a node started with `-name` (long names, a dotted host
    /// or an IP) refuses peers with short host names, and `-sname` nodes the reverse.
    pub node_name: String,
    /// The distribution cookie.
    pub cookie: String,
    /// The host of EPMD; `None`: the host part of each peer's node name.
    pub epmd_host: Option<String>,
    /// The EPMD port ([`DEFAULT_EPMD_PORT`]; `ERL_EPMD_PORT` semantics).
    pub epmd_port: u16,
    /// Largest frame accepted from a peer ([`DEFAULT_MAX_FRAME_LEN`]); checked before any
    /// allocation.
    pub max_frame_len: usize,
    /// Limits for decoding terms from peers.
    pub decode_limits: DecodeLimits,
    /// `net_ticktime`: we tick after `net_ticktime / 4` of silence and drop a peer that
    /// stays silent for `net_ticktime`.
    pub net_ticktime: Duration,
    /// Commands queued per connection ([`DEFAULT_COMMAND_QUEUE`]).
    pub command_queue: usize,
    /// Bytes buffered for writing per connection ([`DEFAULT_MAX_WRITE_BUFFER`]).
    pub max_write_buffer: usize,
    /// Messages a mailbox holds ([`DEFAULT_MAILBOX_CAPACITY`]).
    pub mailbox_capacity: usize,
    /// Bound on one connection attempt ([`DEFAULT_CONNECT_TIMEOUT`]).
    pub connect_timeout: Duration,
    /// First reconnect delay.
    pub backoff_base: Duration,
    /// Largest reconnect delay.
    pub backoff_max: Duration,
    /// Capacity of the node event channel.
    pub event_capacity: usize,
    /// How long the monitor a call set up on its target is kept once no call to that
    /// target is in flight ([`DEFAULT_MONITOR_LINGER`]: not at all), so back-to-back
    /// calls to one worker need no `MONITOR_P`/`DEMONITOR_P` around each (one frame per
    /// call instead of three). Calls still end at once when their target dies, but a call
    /// sent while the target's death is on its way to us ends with the exit reason
    /// rather than `noproc`: with a linger, [`CallError::is_noproc`] no longer proves
    /// that a call was not delivered.
    ///
    /// [`CallError::is_noproc`]: crate::CallError::is_noproc
    pub monitor_linger: Duration,
}

impl PoolConfig {
    /// Settings with this cookie and defaults for everything else.
    pub fn new(cookie: impl Into<String>) -> Self {
        Self {
            node_name: default_node_name(),
            cookie: cookie.into(),
            epmd_host: None,
            epmd_port: std::env::var("ERL_EPMD_PORT")
                .ok()
                .and_then(|p| p.parse().ok())
                .unwrap_or(DEFAULT_EPMD_PORT),
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            decode_limits: DecodeLimits::default(),
            net_ticktime: DEFAULT_NET_TICKTIME,
            command_queue: DEFAULT_COMMAND_QUEUE,
            max_write_buffer: DEFAULT_MAX_WRITE_BUFFER,
            mailbox_capacity: DEFAULT_MAILBOX_CAPACITY,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            event_capacity: 1024,
            monitor_linger: DEFAULT_MONITOR_LINGER,
        }
    }

    /// Sets our node name.
    pub fn node_name(mut self, name: impl Into<String>) -> Self {
        self.node_name = name.into();
        self
    }

    /// Sets the EPMD port.
    pub fn epmd_port(mut self, port: u16) -> Self {
        self.epmd_port = port;
        self
    }

    /// Sets the EPMD host.
    pub fn epmd_host(mut self, host: impl Into<String>) -> Self {
        self.epmd_host = Some(host.into());
        self
    }

    /// Sets `net_ticktime`.
    pub fn net_ticktime(mut self, t: Duration) -> Self {
        self.net_ticktime = t;
        self
    }

    /// Sets the frame cap.
    pub fn max_frame_len(mut self, n: usize) -> Self {
        self.max_frame_len = n;
        self
    }

    /// Sets how long an unused target monitor is kept.
    pub fn monitor_linger(mut self, d: Duration) -> Self {
        self.monitor_linger = d;
        self
    }

    /// Sets the reconnect back-off range.
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.backoff_base = base;
        self.backoff_max = max;
        self
    }
}

/// `exesdb_gater_<6 random hex digits>@<hostname>`.
pub fn default_node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into());
    format!(
        "exesdb_gater_{:06x}@{host}",
        rand::random::<u32>() & 0xff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_name_has_the_documented_shape() {
        let n = default_node_name();
        let (name, host) = n.split_once('@').expect("name@host");
        assert!(name.starts_with("exesdb_gater_") && name.len() == 19, "{n}");
        assert!(!host.is_empty());
    }
}
