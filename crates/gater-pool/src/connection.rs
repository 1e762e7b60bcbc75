//! The async shell around [`Core`]: one task owns the socket of one connection, reads
//! frames, takes commands, writes batches, and runs the core's timers.

use crate::core::{CloseReason, Command, Core};
use crate::framing::{self, Frame};
use crate::metrics::Metrics;
use bytes::BytesMut;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Commands taken per wake-up before the task writes, so one busy caller cannot starve
/// the reader.
const COMMAND_BATCH: usize = 512;

pub(crate) struct Limits {
    pub max_frame_len: usize,
    pub max_write_buffer: usize,
}

/// From this many calls sent and not yet answered, new calls may be held back (see
/// [`Hold`]).
const HOLD_MIN_UNANSWERED: usize = 64;
/// Longest a write is held back (tokio's timer rounds it up to its 1 ms tick).
const HOLD_MAX: Duration = Duration::from_micros(500);
/// Output this large is written at once, hold or not.
const HOLD_MAX_BYTES: usize = 256 * 1024;
/// Writes are held back only while replies keep coming: one must have been read this
/// recently.
const REPLY_RECENT: Duration = Duration::from_millis(1);

/// Write coalescing when the peer is busy. With many calls sent and not yet answered the
/// peer has a queue of work; new calls written a little later, as a bigger batch, keep
/// that queue non-empty while costing one syscall per batch instead of one per few
/// calls, on both sides. While holding, the task takes no commands either (callers'
/// sends then do not wake it). A hold lasts only while: at least
/// [`HOLD_MIN_UNANSWERED`] calls are on the wire, the calls waiting to be written are
/// fewer than half of those, the output is under [`HOLD_MAX_BYTES`], a reply was read
/// within [`REPLY_RECENT`] (the peer is answering, not stuck), and for at most
/// [`HOLD_MAX`]. Otherwise (few calls, a quiet
/// peer) the task writes as soon as it has bytes.
#[derive(Debug)]
struct Hold {
    /// Calls taken since the output buffer was last emptied.
    unsent_calls: usize,
    /// When the task started holding back the current output.
    since: Option<std::time::Instant>,
    /// When a read last brought frames.
    last_read: std::time::Instant,
}

impl Hold {
    /// Whether to hold back, with `in_flight` calls taken and `queued` commands not yet.
    fn should_hold(
        &mut self,
        in_flight: usize,
        queued: usize,
        output: usize,
        now: std::time::Instant,
    ) -> bool {
        let waiting = self.unsent_calls + queued;
        let unanswered = in_flight.saturating_sub(self.unsent_calls);
        let hold = waiting > 0
            && output < HOLD_MAX_BYTES
            && unanswered >= HOLD_MIN_UNANSWERED
            && waiting * 2 < unanswered
            && now.saturating_duration_since(self.last_read) < REPLY_RECENT
            && self.since.is_none_or(|t| now < t + HOLD_MAX);
        if hold && self.since.is_none() {
            self.since = Some(now);
        }
        hold
    }

    /// When the current hold ends.
    fn until(&self) -> Option<std::time::Instant> {
        self.since.map(|t| t + HOLD_MAX)
    }

    /// The output buffer is empty: the next hold may start.
    fn written_all(&mut self) {
        self.unsent_calls = 0;
        self.since = None;
    }
}

/// Puts the task at the back of its worker's run queue once, behind the tasks already
/// woken (the callers the last replies woke), without polling the I/O driver as
/// `tokio::task::yield_now` does (an `epoll_wait` per use).
fn requeue() -> impl std::future::Future<Output = ()> {
    let mut queued = false;
    std::future::poll_fn(move |cx| {
        if queued {
            return std::task::Poll::Ready(());
        }
        queued = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
}

/// Takes the commands waiting, up to [`COMMAND_BATCH`] or a full write buffer; returns
/// how many commands and how many of them were calls.
fn drain(
    core: &mut Core,
    commands: &mut mpsc::Receiver<Command>,
    now: std::time::Instant,
    max_write_buffer: usize,
) -> (usize, usize) {
    let (mut n, mut calls) = (0, 0);
    while n < COMMAND_BATCH && core.output().len() < max_write_buffer {
        match commands.try_recv() {
            Ok(cmd) => {
                calls += usize::from(matches!(cmd, Command::Call { .. }));
                core.handle_command(cmd, now)
            }
            Err(_) => break,
        }
        n += 1;
    }
    (n, calls)
}

/// Runs one connection until it closes; every call still in flight then fails.
pub(crate) async fn run(
    stream: TcpStream,
    mut core: Core,
    mut commands: mpsc::Receiver<Command>,
    mut housekeeping: mpsc::UnboundedReceiver<Command>,
    limits: Limits,
    metrics: Arc<Metrics>,
) -> CloseReason {
    let (mut rd, mut wr) = stream.into_split();
    let mut inbuf = BytesMut::with_capacity(64 * 1024);
    // One timer for the task's life, moved as the core's deadline moves: creating one per
    // loop turn would cost a timer-wheel registration per wake-up.
    let timer = tokio::time::sleep_until(Instant::from_std(core.poll_timeout()));
    tokio::pin!(timer);
    let mut hold = Hold {
        unsent_calls: 0,
        since: None,
        last_read: std::time::Instant::now(),
    };
    let reason = loop {
        let now = std::time::Instant::now();
        let can_take = core.output().len() < limits.max_write_buffer;
        let holding = hold.should_hold(
            core.calls_in_flight(),
            commands.len(),
            core.output().len(),
            now,
        );
        if !holding && can_take && !commands.is_empty() {
            // What queued up during a hold goes out in the next write.
            let (_, calls) = drain(&mut core, &mut commands, now, limits.max_write_buffer);
            hold.unsent_calls += calls;
        }
        let mut deadline = core.poll_timeout();
        if let Some(until) = hold.until().filter(|_| holding) {
            deadline = deadline.min(until);
        }
        let deadline = Instant::from_std(deadline);
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        let can_take = core.output().len() < limits.max_write_buffer;
        // Read in large chunks (BytesMut would otherwise grow by 64 bytes per read).
        if inbuf.capacity() - inbuf.len() < 8 * 1024 {
            inbuf.reserve(64 * 1024);
        }
        tokio::select! {
            r = rd.read_buf(&mut inbuf) => {
                match r {
                    Ok(0) => break CloseReason::PeerClosed,
                    Ok(n) => {
                        Metrics::add(&metrics.bytes_in, n as u64);
                        Metrics::add(&metrics.socket_reads, 1);
                    }
                    Err(e) => break CloseReason::Io(e.to_string()),
                }
                let now = std::time::Instant::now();
                hold.last_read = now;
                let mut failed = None;
                loop {
                    match framing::next_frame(&mut inbuf, limits.max_frame_len) {
                        Ok(Ok(Frame::Tick)) => core.handle_tick(now),
                        Ok(Ok(Frame::Data(f))) => {
                            if let Err(e) = core.handle_frame(&f, now) {
                                failed = Some(e);
                                break;
                            }
                        }
                        Ok(Err(needed)) => {
                            // The length was checked against the cap: growing to it is bounded.
                            if inbuf.capacity() < needed {
                                inbuf.reserve(needed - inbuf.len());
                            }
                            break;
                        }
                        Err(o) => {
                            Metrics::add(&metrics.oversize_frames, 1);
                            failed = Some(CloseReason::OversizeFrame { len: o.len, max: o.max });
                            break;
                        }
                    }
                }
                if let Some(e) = failed {
                    break e;
                }
                if inbuf.is_empty() && inbuf.capacity() > 4 << 20 {
                    inbuf = BytesMut::with_capacity(64 * 1024);
                }
            }
            Some(cmd) = housekeeping.recv() => core.handle_command(cmd, std::time::Instant::now()),
            cmd = commands.recv(), if can_take && !holding => {
                let Some(cmd) = cmd else { break CloseReason::Shutdown };
                let now = std::time::Instant::now();
                let before = core.calls_in_flight();
                hold.unsent_calls += usize::from(matches!(cmd, Command::Call { .. }));
                core.handle_command(cmd, now);
                let (taken, calls) = drain(&mut core, &mut commands, now, limits.max_write_buffer);
                hold.unsent_calls += calls;
                // Other calls in flight: their callers are likely about to send again (the
                // replies just read woke them). Let them run before writing, so their calls
                // join this write: one syscall per burst instead of one per caller.
                if before > 0 && taken + 1 < COMMAND_BATCH && core.output().len() < limits.max_write_buffer {
                    requeue().await;
                    let now = std::time::Instant::now();
                    let (_, calls) = drain(&mut core, &mut commands, now, limits.max_write_buffer);
                    hold.unsent_calls += calls;
                }
            }
            r = wr.write(core.output()), if !core.output().is_empty() && !holding => {
                match r {
                    Ok(0) => break CloseReason::PeerClosed,
                    Ok(n) => {
                        core.consume_output(n);
                        Metrics::add(&metrics.socket_writes, 1);
                        if core.output().is_empty() {
                            hold.written_all();
                        }
                    }
                    Err(e) => break CloseReason::Io(e.to_string()),
                }
            }
            () = &mut timer => {
                if let Err(e) = core.handle_timeout(std::time::Instant::now()) {
                    break e;
                }
            }
        }
    };
    core.fail_all();
    // Best effort: let the peer see the close at once.
    let _ = wr.shutdown().await;
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold_at(t0: std::time::Instant) -> Hold {
        Hold {
            unsent_calls: 0,
            since: None,
            last_read: t0,
        }
    }

    #[test]
    fn writes_are_held_only_while_a_busy_peer_answers_and_never_past_the_cap() {
        let t0 = std::time::Instant::now();
        let us = |n: u64| t0 + Duration::from_micros(n);
        // Few calls on the wire: no hold.
        let mut h = hold_at(t0);
        h.unsent_calls = 1;
        assert!(!h.should_hold(HOLD_MIN_UNANSWERED, 0, 100, us(10)));
        // Many on the wire, a few waiting: hold, from now until HOLD_MAX.
        assert!(h.should_hold(HOLD_MIN_UNANSWERED + 1, 3, 100, us(10)));
        assert_eq!(h.until(), Some(us(10) + HOLD_MAX));
        assert!(h.should_hold(HOLD_MIN_UNANSWERED + 1, 3, 100, us(200)));
        // Past the cap: write, and no new hold until all is written.
        let late = us(10) + HOLD_MAX + Duration::from_micros(1);
        h.last_read = late;
        assert!(!h.should_hold(HOLD_MIN_UNANSWERED + 1, 3, 100, late));
        h.written_all();
        assert!(h.should_hold(HOLD_MIN_UNANSWERED + 1, 3, 100, late));
        // As many waiting as half of those on the wire: write.
        let mut h = hold_at(t0);
        assert!(!h.should_hold(200, 100, 100, us(10)));
        // Nothing waiting, a big output, or a peer that has not answered lately: write.
        let mut h = hold_at(t0);
        assert!(!h.should_hold(200, 0, 100, us(10)));
        assert!(!h.should_hold(200, 3, HOLD_MAX_BYTES, us(10)));
        assert!(!h.should_hold(200, 3, 100, t0 + REPLY_RECENT));
    }
}
