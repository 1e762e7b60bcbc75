//! The async shell around [`Core`]: one task owns the socket of one connection, reads
//! frames, takes commands, writes batches, and runs the core's timers.

use crate::core::{CloseReason, Command, Core};
use crate::framing::{self, Frame};
use crate::metrics::Metrics;
use bytes::BytesMut;
use std::sync::Arc;
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
    let reason = loop {
        let deadline = Instant::from_std(core.poll_timeout());
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
            cmd = commands.recv(), if can_take => {
                let Some(cmd) = cmd else { break CloseReason::Shutdown };
                let now = std::time::Instant::now();
                core.handle_command(cmd, now);
                for _ in 0..COMMAND_BATCH {
                    match commands.try_recv() {
                        Ok(cmd) => core.handle_command(cmd, now),
                        Err(_) => break,
                    }
                    if core.output().len() >= limits.max_write_buffer {
                        break;
                    }
                }
            }
            r = wr.write(core.output()), if !core.output().is_empty() => {
                match r {
                    Ok(0) => break CloseReason::PeerClosed,
                    Ok(n) => {
                        core.consume_output(n);
                        Metrics::add(&metrics.socket_writes, 1);
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
