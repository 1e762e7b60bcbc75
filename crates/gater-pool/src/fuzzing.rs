//! Entry point for the `dist_frame` fuzz target (`fuzz/`): the frame reader and the
//! protocol core fed with untrusted bytes, as a connection task feeds them after the
//! handshake. Not part of the supported API.

use crate::core::{Core, CoreConfig, Local};
use crate::framing::{Frame, next_frame};
use crate::metrics::Metrics;
use bytes::BytesMut;
use gater_term::DecodeLimits;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Splits `bytes` into frames with a cap of `max_frame` bytes and hands each to a fresh
/// core, as the connection task does. Returns the number of frames taken, or the reason
/// the connection would have been closed (as text). Must never panic.
pub fn read_frames(bytes: &[u8], max_frame: usize) -> Result<usize, String> {
    let now = Instant::now();
    let local = Arc::new(Local::new("gater@127.0.0.1", 1, "peer@127.0.0.1"));
    let config = CoreConfig {
        limits: DecodeLimits::default(),
        net_ticktime: Duration::from_secs(60),
        monitor_linger: Duration::from_secs(5),
    };
    let mut core = Core::new(local, config, Arc::new(Metrics::default()), now);
    let mut buf = BytesMut::from(bytes);
    let mut frames = 0;
    loop {
        match next_frame(&mut buf, max_frame) {
            Err(o) => return Err(format!("oversize frame {} > {}", o.len, o.max)),
            Ok(Err(_needed)) => return Ok(frames),
            Ok(Ok(Frame::Tick)) => frames += 1,
            Ok(Ok(Frame::Data(d))) => {
                frames += 1;
                core.handle_frame(&d, now).map_err(|e| e.to_string())?;
                // Drop what the core wanted to send, as a writer would.
                let n = core.output().len();
                core.consume_output(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::read_frames;

    #[test]
    fn ticks_garbage_and_oversize_are_values_not_panics() {
        assert_eq!(read_frames(&[0, 0, 0, 0, 0, 0, 0, 0], 1024), Ok(2));
        assert!(read_frames(&[0, 0, 0, 2, 112, 255], 1024).is_err());
        assert!(read_frames(&[0, 0, 0, 2, 1, 2], 1024).is_err());
        let e = read_frames(&[0xff, 0xff, 0xff, 0xff], 1024);
        assert!(matches!(e, Err(m) if m.contains("oversize")));
    }
}
