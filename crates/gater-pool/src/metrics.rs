//! Counters the metrics layer exports, as relaxed atomics and a plain snapshot.

use crate::CallError;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub calls: AtomicU64,
    pub casts: AtomicU64,
    pub in_flight: AtomicU64,
    pub err_timeout: AtomicU64,
    pub err_not_connected: AtomicU64,
    pub err_connection_lost: AtomicU64,
    pub err_target_down: AtomicU64,
    pub err_badrpc: AtomicU64,
    pub err_invalid_target: AtomicU64,
    pub err_bad_reply: AtomicU64,
    pub connects: AtomicU64,
    pub reconnects: AtomicU64,
    pub connect_failures: AtomicU64,
    pub frames_in: AtomicU64,
    pub frames_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub socket_reads: AtomicU64,
    pub socket_writes: AtomicU64,
    pub oversize_frames: AtomicU64,
    pub dropped_messages: AtomicU64,
    pub served_requests: AtomicU64,
    pub local_pids: AtomicU64,
    pub peer_monitors: AtomicU64,
    pub own_monitors: AtomicU64,
}

impl Metrics {
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }

    /// Moves gauge `g` from `*published` to `now`: each core publishes its own share of a
    /// gauge this way, so the sum over connections is exact and cannot drift.
    pub(crate) fn set_share(g: &AtomicU64, published: &mut u64, now: u64) {
        if now > *published {
            g.fetch_add(now - *published, Relaxed);
        } else if now < *published {
            g.fetch_sub(*published - now, Relaxed);
        }
        *published = now;
    }

    pub(crate) fn count_error(&self, e: &CallError) {
        let c = match e {
            CallError::Timeout => &self.err_timeout,
            CallError::NotConnected { .. } => &self.err_not_connected,
            CallError::ConnectionLost { .. } => &self.err_connection_lost,
            CallError::TargetDown { .. } => &self.err_target_down,
            CallError::BadRpc { .. } => &self.err_badrpc,
            CallError::InvalidTarget(_) => &self.err_invalid_target,
            CallError::BadReply { .. } => &self.err_bad_reply,
        };
        Self::add(c, 1);
    }

    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        let g = |c: &AtomicU64| c.load(Relaxed);
        MetricsSnapshot {
            calls: g(&self.calls),
            casts: g(&self.casts),
            in_flight: g(&self.in_flight),
            errors: CallErrorCounts {
                timeout: g(&self.err_timeout),
                not_connected: g(&self.err_not_connected),
                connection_lost: g(&self.err_connection_lost),
                target_down: g(&self.err_target_down),
                badrpc: g(&self.err_badrpc),
                invalid_target: g(&self.err_invalid_target),
                bad_reply: g(&self.err_bad_reply),
            },
            connects: g(&self.connects),
            reconnects: g(&self.reconnects),
            connect_failures: g(&self.connect_failures),
            frames_in: g(&self.frames_in),
            frames_out: g(&self.frames_out),
            bytes_in: g(&self.bytes_in),
            bytes_out: g(&self.bytes_out),
            socket_reads: g(&self.socket_reads),
            socket_writes: g(&self.socket_writes),
            oversize_frames: g(&self.oversize_frames),
            dropped_messages: g(&self.dropped_messages),
            served_requests: g(&self.served_requests),
            local_pids: g(&self.local_pids),
            peer_monitors: g(&self.peer_monitors),
            own_monitors: g(&self.own_monitors),
        }
    }
}

/// Failed calls by [`CallError::kind`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallErrorCounts {
    /// [`CallError::Timeout`].
    pub timeout: u64,
    /// [`CallError::NotConnected`].
    pub not_connected: u64,
    /// [`CallError::ConnectionLost`].
    pub connection_lost: u64,
    /// [`CallError::TargetDown`].
    pub target_down: u64,
    /// [`CallError::BadRpc`].
    pub badrpc: u64,
    /// [`CallError::InvalidTarget`].
    pub invalid_target: u64,
    /// [`CallError::BadReply`].
    pub bad_reply: u64,
}

/// The pool's counters at one moment.
///
/// Counters only grow, except the gauges `in_flight`, `local_pids`, `peer_monitors` and
/// `own_monitors`, which say what is held *now*. Each connection publishes its share of
/// a gauge from the size of the table it keeps (after every change, before any caller
/// is answered), and withdraws it when it closes: a gauge that does not come back to
/// its baseline once calls have ended, mailboxes are dropped and peers have let go is a
/// leak.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Calls and rpcs started.
    pub calls: u64,
    /// Casts and plain sends.
    pub casts: u64,
    /// Calls waiting for a reply now.
    pub in_flight: u64,
    /// Failed calls by kind.
    pub errors: CallErrorCounts,
    /// Successful handshakes.
    pub connects: u64,
    /// Successful handshakes after a connection to the same node was lost.
    pub reconnects: u64,
    /// Failed connection attempts.
    pub connect_failures: u64,
    /// Frames received (ticks included).
    pub frames_in: u64,
    /// Frames sent (ticks included).
    pub frames_out: u64,
    /// Bytes received after the handshake.
    pub bytes_in: u64,
    /// Bytes sent after the handshake.
    pub bytes_out: u64,
    /// Successful socket reads (frames in / reads = read batching).
    pub socket_reads: u64,
    /// Successful socket writes (frames out / writes = write batching).
    pub socket_writes: u64,
    /// Connections closed because a frame exceeded the cap.
    pub oversize_frames: u64,
    /// Messages to unknown names, dead pids, or full mailboxes.
    pub dropped_messages: u64,
    /// Requests served for peers (rex calls, monitors, links).
    pub served_requests: u64,
    /// Gauge: local processes alive now on all connections, that is open [`Mailbox`]es
    /// (named ones included). The one caller pid per connection, which sends calls and
    /// receives their replies, is not counted.
    ///
    /// [`Mailbox`]: crate::Mailbox
    pub local_pids: u64,
    /// Gauge: monitors that peer processes hold now on our local processes (mailboxes,
    /// by pid or by registered name) and on the names we serve (`rex`, `net_kernel`).
    pub peer_monitors: u64,
    /// Gauge: monitors we hold now on peer processes, the ones that make calls fail
    /// fast when their target dies: one per target with calls in flight or called within
    /// `PoolConfig::monitor_linger` (see docs/pool.md).
    pub own_monitors: u64,
}
