//! The HTTP layer's own counters, and rendering everything as Prometheus text.
//!
//! Counters are fixed arrays of atomics indexed by route and status class, so a request
//! costs a few relaxed increments and no lock. Labels hold route templates, never store or
//! stream names given by clients, so the series count stays bounded.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// The route templates that are counted; anything else counts as `other`.
pub const ROUTES: &[&str] = &[
    "/v1/stores/{store}/streams/{stream}/events",
    "/v1/stores/{store}/streams/{stream}/version",
    "/v1/stores/{store}/streams",
    "/v1/stores",
    "/v1/stores/{store}/subscriptions",
    "/v1/stores/{store}/subscriptions/{name}",
    "/v1/stores/{store}/subscriptions/{name}/events",
    "/v1/stores/{store}/subscriptions/{name}/ack",
    "/v1/stores/{store}/snapshots/{source_uuid}/{stream_uuid}/{version}",
    "/v1/stores/{store}/snapshots",
    "/v1/cluster/nodes",
    "/v1/openapi.json",
    "/health/live",
    "/health/ready",
    "/metrics",
    "other",
];

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// Latency bucket upper bounds in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];
const NB: usize = BUCKETS.len() + 1;

struct RouteCounters {
    by_class: [AtomicU64; 5],
    buckets: [AtomicU64; NB],
    sum_us: AtomicU64,
}

impl RouteCounters {
    fn new() -> Self {
        Self {
            by_class: std::array::from_fn(|_| AtomicU64::new(0)),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }
}

/// Counters of the HTTP layer.
pub struct HttpMetrics {
    routes: Vec<RouteCounters>,
    sse_open: AtomicI64,
    sse_events: AtomicU64,
    auth_failures: AtomicU64,
    rejected_unknown_store: AtomicU64,
}

impl std::fmt::Debug for HttpMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpMetrics").finish_non_exhaustive()
    }
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self {
            routes: ROUTES.iter().map(|_| RouteCounters::new()).collect(),
            sse_open: AtomicI64::new(0),
            sse_events: AtomicU64::new(0),
            auth_failures: AtomicU64::new(0),
            rejected_unknown_store: AtomicU64::new(0),
        }
    }
}

impl HttpMetrics {
    /// Counts one finished request.
    pub fn observe(&self, route: &str, status: u16, elapsed: Duration) {
        self.observe_route(route_index(route), status, elapsed);
    }

    /// Counts one finished request of the route at `route_index` in [`ROUTES`].
    pub fn observe_route(&self, route_index: usize, status: u16, elapsed: Duration) {
        let c = &self.routes[route_index.min(ROUTES.len() - 1)];
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        c.by_class[class].fetch_add(1, Relaxed);
        let secs = elapsed.as_secs_f64();
        let b = BUCKETS.iter().position(|&ub| secs <= ub).unwrap_or(NB - 1);
        c.buckets[b].fetch_add(1, Relaxed);
        c.sum_us.fetch_add(
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            Relaxed,
        );
    }

    /// An SSE stream opened (+1) or closed (-1).
    pub fn sse_delta(&self, d: i64) {
        self.sse_open.fetch_add(d, Relaxed);
    }

    /// SSE streams open now.
    pub fn sse_open(&self) -> i64 {
        self.sse_open.load(Relaxed)
    }

    /// One event written to an SSE stream.
    pub fn sse_event(&self) {
        self.sse_events.fetch_add(1, Relaxed);
    }

    /// One request refused for its token.
    pub fn auth_failure(&self) {
        self.auth_failures.fetch_add(1, Relaxed);
    }

    /// One request refused because the cluster does not list its store.
    pub fn unknown_store(&self) {
        self.rejected_unknown_store.fetch_add(1, Relaxed);
    }

    /// Appends this layer's series to `out` in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        out.push_str(
            "# HELP gater_http_requests_total HTTP requests by route template and status class.\n",
        );
        out.push_str("# TYPE gater_http_requests_total counter\n");
        for (route, c) in ROUTES.iter().zip(&self.routes) {
            for (class, n) in CLASSES.iter().zip(&c.by_class) {
                let n = n.load(Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "gater_http_requests_total{{route=\"{route}\",status=\"{class}\"}} {n}"
                    );
                }
            }
        }
        out.push_str(
            "# HELP gater_http_request_duration_seconds HTTP request latency by route template.\n",
        );
        out.push_str("# TYPE gater_http_request_duration_seconds histogram\n");
        for (route, c) in ROUTES.iter().zip(&self.routes) {
            let total: u64 = c.buckets.iter().map(|b| b.load(Relaxed)).sum();
            if total == 0 {
                continue;
            }
            let mut cum = 0;
            for (i, b) in c.buckets.iter().enumerate() {
                cum += b.load(Relaxed);
                let le = BUCKETS
                    .get(i)
                    .map_or_else(|| "+Inf".to_owned(), |ub| ub.to_string());
                let _ = writeln!(
                    out,
                    "gater_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{le}\"}} {cum}"
                );
            }
            let sum = c.sum_us.load(Relaxed) as f64 / 1e6;
            let _ = writeln!(
                out,
                "gater_http_request_duration_seconds_sum{{route=\"{route}\"}} {sum}\ngater_http_request_duration_seconds_count{{route=\"{route}\"}} {total}"
            );
        }
        gauge(
            out,
            "gater_http_sse_streams",
            "SSE subscription streams open now.",
            self.sse_open.load(Relaxed),
        );
        counter(
            out,
            "gater_http_sse_events_total",
            "Events written to SSE streams.",
            self.sse_events.load(Relaxed),
        );
        counter(
            out,
            "gater_http_auth_failures_total",
            "Requests refused for a missing, malformed, expired or insufficient token.",
            self.auth_failures.load(Relaxed),
        );
        counter(
            out,
            "gater_http_unknown_store_total",
            "Requests refused because the cluster does not list the store.",
            self.rejected_unknown_store.load(Relaxed),
        );
    }
}

/// The index of a route template in [`ROUTES`] (`other` when it is not counted).
pub fn route_index(route: &str) -> usize {
    ROUTES
        .iter()
        .position(|r| *r == route)
        .unwrap_or(ROUTES.len() - 1)
}

/// Writes one counter with HELP and TYPE lines.
pub fn counter(out: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
    );
}

/// Writes one gauge with HELP and TYPE lines.
pub fn gauge(out: &mut String, name: &str, help: &str, v: i64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counted_routes_and_histograms() {
        let m = HttpMetrics::default();
        m.observe("/v1/stores", 200, Duration::from_millis(3));
        m.observe("/v1/stores", 404, Duration::from_millis(30));
        m.observe("/nope", 404, Duration::from_secs(9));
        let mut s = String::new();
        m.render(&mut s);
        assert!(s.contains("gater_http_requests_total{route=\"/v1/stores\",status=\"2xx\"} 1"));
        assert!(s.contains("gater_http_requests_total{route=\"other\",status=\"4xx\"} 1"));
        assert!(s.contains(
            "gater_http_request_duration_seconds_bucket{route=\"/v1/stores\",le=\"0.005\"} 1"
        ));
        assert!(s.contains(
            "gater_http_request_duration_seconds_bucket{route=\"/v1/stores\",le=\"+Inf\"} 2"
        ));
        assert!(s.contains("gater_http_request_duration_seconds_count{route=\"other\"} 1"));
    }
}
