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
}

impl Metrics {
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
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

/// The pool's counters at one moment (monotonic except `in_flight`).
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
}
