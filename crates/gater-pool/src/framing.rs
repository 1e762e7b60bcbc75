//! Splitting the byte stream after the handshake into frames: a 4-byte big-endian length,
//! then that many bytes; length 0 is a tick. The length is checked against the cap before
//! any buffer grows for it.

use bytes::{Buf, Bytes, BytesMut};

/// A frame length above the configured cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Oversize {
    pub len: usize,
    pub max: usize,
}

/// One frame taken off the buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    Tick,
    Data(Bytes),
}

/// Takes the next complete frame off `buf`, or says how many bytes the buffer must hold
/// for it (`Ok(Err(needed))`).
pub(crate) fn next_frame(buf: &mut BytesMut, max: usize) -> Result<Result<Frame, usize>, Oversize> {
    if buf.len() < 4 {
        return Ok(Err(4));
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > max {
        return Err(Oversize { len, max });
    }
    if len == 0 {
        buf.advance(4);
        return Ok(Ok(Frame::Tick));
    }
    if buf.len() < 4 + len {
        return Ok(Err(4 + len));
    }
    buf.advance(4);
    Ok(Ok(Frame::Data(buf.split_to(len).freeze())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_ticks_and_frames_and_waits_for_partial_ones() {
        let mut b = BytesMut::new();
        b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 3, 1, 2]);
        assert_eq!(next_frame(&mut b, 10), Ok(Ok(Frame::Tick)));
        assert_eq!(next_frame(&mut b, 10), Ok(Err(7)));
        b.extend_from_slice(&[3, 0, 0]);
        assert_eq!(
            next_frame(&mut b, 10),
            Ok(Ok(Frame::Data(Bytes::from_static(&[1, 2, 3]))))
        );
        assert_eq!(next_frame(&mut b, 10), Ok(Err(4)));
    }

    #[test]
    fn an_oversize_length_is_refused_before_its_bytes_arrive() {
        let mut b = BytesMut::new();
        b.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(
            next_frame(&mut b, 1 << 20),
            Err(Oversize {
                len: u32::MAX as usize,
                max: 1 << 20
            })
        );
    }
}
