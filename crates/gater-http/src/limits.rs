//! Named limits of the HTTP layer, with their defaults.

use std::time::Duration;

/// Default [`Limits::max_body_bytes`]: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Default [`Limits::max_read_count`].
pub const DEFAULT_MAX_READ_COUNT: u32 = 1000;
/// Default [`Limits::max_sse_streams`].
pub const DEFAULT_MAX_SSE_STREAMS: usize = 10_000;
/// Default [`Limits::request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Default [`Limits::sse_keepalive`].
pub const DEFAULT_SSE_KEEPALIVE: Duration = Duration::from_secs(15);
/// Most events in one append request.
pub const MAX_EVENTS_PER_APPEND: usize = 1000;
/// Longest store, stream, subscription or snapshot name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// Limits of the HTTP layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body; larger ones get 413.
    pub max_body_bytes: usize,
    /// Most events one read returns; a larger `count` gets 400.
    pub max_read_count: u32,
    /// Most SSE streams open at once; more get 503.
    pub max_sse_streams: usize,
    /// A request that takes longer gets 504.
    pub request_timeout: Duration,
    /// Interval of SSE keep-alive comments.
    pub sse_keepalive: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_read_count: DEFAULT_MAX_READ_COUNT,
            max_sse_streams: DEFAULT_MAX_SSE_STREAMS,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            sse_keepalive: DEFAULT_SSE_KEEPALIVE,
        }
    }
}
