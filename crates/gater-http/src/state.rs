//! What every handler shares, and the router.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use gater_api::Gater;
use tokio::sync::watch;

use crate::auth::TokenKey;
use crate::limits::Limits;
use crate::metrics::{self, HttpMetrics};
use crate::routes;
use crate::sse;

/// Shared by every handler.
#[derive(Debug)]
pub struct AppState {
    pub(crate) gater: Gater,
    pub(crate) auth: Option<TokenKey>,
    pub(crate) limits: Limits,
    pub(crate) metrics: HttpMetrics,
    pub(crate) sse_streams: AtomicUsize,
    pub(crate) shutdown: watch::Receiver<bool>,
}

impl AppState {
    pub(crate) fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}

/// The HTTP API over one [`Gater`].
///
/// ```no_run
/// # async fn demo(gater: gater_api::Gater) -> std::io::Result<()> {
/// let api = gater_http::HttpApi::new(gater).limits(gater_http::Limits::default());
/// let listener = std::net::TcpListener::bind("127.0.0.1:4000")?;
/// api.serve(listener, None, std::time::Duration::from_secs(10), async {
///     let _ = tokio::signal::ctrl_c().await;
/// })
/// .await
/// # }
/// ```
#[derive(Debug)]
pub struct HttpApi {
    state: Arc<AppState>,
    shutdown_tx: watch::Sender<bool>,
}

impl HttpApi {
    /// An API with default limits and no authentication.
    pub fn new(gater: Gater) -> Self {
        let (shutdown_tx, shutdown) = watch::channel(false);
        Self {
            state: Arc::new(AppState {
                gater,
                auth: None,
                limits: Limits::default(),
                metrics: HttpMetrics::default(),
                sse_streams: AtomicUsize::new(0),
                shutdown,
            }),
            shutdown_tx,
        }
    }

    fn state_mut(&mut self) -> &mut AppState {
        // Only before the router is built is the state unshared.
        match Arc::get_mut(&mut self.state) {
            Some(s) => s,
            None => unreachable!("HttpApi is configured before router() shares its state"),
        }
    }

    /// Turns bearer-token authentication on.
    pub fn auth(mut self, key: Option<TokenKey>) -> Self {
        self.state_mut().auth = key;
        self
    }

    /// Sets the limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.state_mut().limits = limits;
        self
    }

    /// The router (for embedding or for tests).
    pub fn router(&self) -> Router {
        let st = self.state.clone();
        // One flat router (no `nest`): a nested router rewrites every request's URI.
        Router::new()
            .route("/v1/stores", get(routes::stores))
            .route(
                "/v1/stores/{store}/streams/{stream}/events",
                post(routes::append).get(routes::read),
            )
            .route(
                "/v1/stores/{store}/streams/{stream}/version",
                get(routes::version),
            )
            .route("/v1/stores/{store}/streams", get(routes::streams))
            .route(
                "/v1/stores/{store}/subscriptions",
                get(routes::list_subscriptions)
                    .post(routes::create_subscription)
                    .delete(routes::delete_subscription),
            )
            .route(
                "/v1/stores/{store}/subscriptions/{name}",
                axum::routing::delete(routes::delete_subscription_by_name),
            )
            .route(
                "/v1/stores/{store}/subscriptions/{name}/events",
                get(sse::events),
            )
            .route(
                "/v1/stores/{store}/subscriptions/{name}/ack",
                post(routes::ack),
            )
            .route(
                "/v1/stores/{store}/snapshots/{source_uuid}/{stream_uuid}/{version}",
                put(routes::put_snapshot)
                    .get(routes::get_snapshot)
                    .delete(routes::delete_snapshot),
            )
            .route("/v1/stores/{store}/snapshots", get(routes::list_snapshots))
            .route("/v1/cluster/nodes", get(routes::nodes))
            .route("/v1/openapi.json", get(routes::openapi))
            .route("/health/live", get(routes::live))
            .route("/health/ready", get(routes::ready))
            .route("/metrics", get(routes::metrics))
            .fallback(routes::fallback)
            .layer(DefaultBodyLimit::max(st.limits.max_body_bytes))
            .layer(axum::middleware::from_fn_with_state(
                st.clone(),
                routes::track,
            ))
            .with_state(st)
    }

    /// Ends SSE streams and fails readiness; [`HttpApi::serve`] calls it on shutdown.
    pub fn begin_shutdown(&self) {
        let _ = self.shutdown_tx.send(true);
    }

    /// SSE streams open now.
    pub fn sse_streams(&self) -> usize {
        self.state.sse_streams.load(Ordering::Relaxed)
    }

    /// Serves on `listener` (TLS when `tls` is given) until `shutdown` completes; then
    /// stops accepting, ends SSE streams, and gives in-flight requests up to `grace`.
    pub async fn serve(
        &self,
        listener: std::net::TcpListener,
        tls: Option<axum_server::tls_rustls::RustlsConfig>,
        grace: std::time::Duration,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        listener.set_nonblocking(true)?;
        let handle = axum_server::Handle::new();
        let app = self.router().into_make_service();
        let server = {
            let handle = handle.clone();
            async move {
                match tls {
                    Some(cfg) => {
                        axum_server::from_tcp_rustls(listener, cfg)?
                            .http1_only()
                            .handle(handle)
                            .serve(app)
                            .await
                    }
                    None => {
                        axum_server::from_tcp(listener)?
                            .http1_only()
                            .handle(handle)
                            .serve(app)
                            .await
                    }
                }
            }
        };
        let tx = self.shutdown_tx.clone();
        let h = handle.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!(target: "system", grace_ms = grace.as_millis() as u64, "shutting down: no new connections, finishing in-flight requests");
            let _ = tx.send(true);
            h.graceful_shutdown(Some(grace));
        });
        server.await
    }
}

/// Everything `/metrics` shows: the HTTP layer's counters, then the gateway's.
pub(crate) fn render_metrics(st: &AppState) -> String {
    let mut out = String::with_capacity(8192);
    st.metrics.render(&mut out);
    let (ready, nodes, with_workers) = routes::is_ready(st);
    metrics::gauge(
        &mut out,
        "gater_ready",
        "1 when an ExESDB node with a gateway worker is connected.",
        i64::from(ready),
    );
    metrics::gauge(
        &mut out,
        "gater_exesdb_nodes_connected",
        "Connected ExESDB nodes.",
        nodes as i64,
    );
    metrics::gauge(
        &mut out,
        "gater_nodes_with_workers",
        "Connected ExESDB nodes with at least one gateway worker.",
        with_workers as i64,
    );
    let g = st.gater.metrics();
    let p = g.pool;
    let c = |out: &mut String, name: &str, help: &str, v: u64| metrics::counter(out, name, help, v);
    c(
        &mut out,
        "gater_api_calls_total",
        "Operations started through gater-api.",
        g.calls,
    );
    c(
        &mut out,
        "gater_api_failovers_total",
        "Calls retried on another worker.",
        g.failovers,
    );
    c(
        &mut out,
        "gater_api_no_worker_waits_total",
        "Back-off waits while no worker served a store.",
        g.no_worker_waits,
    );
    c(
        &mut out,
        "gater_api_stale_retries_total",
        "Stale wrong_expected_version answers retried on the leader.",
        g.stale_retries,
    );
    c(
        &mut out,
        "gater_api_recovered_appends_total",
        "Appends found written after a node failure.",
        g.recovered_appends,
    );
    c(
        &mut out,
        "gater_api_resubscribes_total",
        "Subscriptions re-established after a node failure.",
        g.resubscribes,
    );
    c(
        &mut out,
        "gater_api_events_delivered_total",
        "Events delivered to subscribers.",
        g.events_delivered,
    );
    c(
        &mut out,
        "gater_api_duplicates_dropped_total",
        "Duplicate subscription events dropped.",
        g.duplicates_dropped,
    );
    c(
        &mut out,
        "gater_api_gap_fills_total",
        "Subscription gaps filled from the store.",
        g.gap_fills,
    );
    metrics::gauge(
        &mut out,
        "gater_api_subscription_topics",
        "Phoenix.PubSub topics followed.",
        g.subscription_topics as i64,
    );
    out.push_str("# HELP gater_api_errors_total Failed operations by error kind.\n# TYPE gater_api_errors_total counter\n");
    for (kind, v) in &g.errors {
        out.push_str(&format!("gater_api_errors_total{{kind=\"{kind}\"}} {v}\n"));
    }
    c(
        &mut out,
        "gater_pool_calls_total",
        "Distribution calls and rpcs started.",
        p.calls,
    );
    c(
        &mut out,
        "gater_pool_casts_total",
        "Casts and sends.",
        p.casts,
    );
    metrics::gauge(
        &mut out,
        "gater_pool_calls_in_flight",
        "Calls waiting for a reply.",
        p.in_flight as i64,
    );
    out.push_str("# HELP gater_pool_call_errors_total Failed distribution calls by kind.\n# TYPE gater_pool_call_errors_total counter\n");
    for (kind, v) in [
        ("timeout", p.errors.timeout),
        ("not_connected", p.errors.not_connected),
        ("connection_lost", p.errors.connection_lost),
        ("target_down", p.errors.target_down),
        ("badrpc", p.errors.badrpc),
        ("invalid_target", p.errors.invalid_target),
        ("bad_reply", p.errors.bad_reply),
    ] {
        out.push_str(&format!(
            "gater_pool_call_errors_total{{kind=\"{kind}\"}} {v}\n"
        ));
    }
    c(
        &mut out,
        "gater_pool_connects_total",
        "Successful handshakes.",
        p.connects,
    );
    c(
        &mut out,
        "gater_pool_reconnects_total",
        "Handshakes after a lost connection.",
        p.reconnects,
    );
    c(
        &mut out,
        "gater_pool_connect_failures_total",
        "Failed connection attempts.",
        p.connect_failures,
    );
    c(
        &mut out,
        "gater_pool_bytes_in_total",
        "Bytes received from nodes.",
        p.bytes_in,
    );
    c(
        &mut out,
        "gater_pool_bytes_out_total",
        "Bytes sent to nodes.",
        p.bytes_out,
    );
    c(
        &mut out,
        "gater_pool_dropped_messages_total",
        "Messages to unknown names, dead pids or full mailboxes.",
        p.dropped_messages,
    );
    // Leak gauges: each should come back to its baseline once load and peers let go.
    let g64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    metrics::gauge(
        &mut out,
        "gater_pool_local_pids",
        "Local processes (open mailboxes) alive now on all distribution connections.",
        g64(p.local_pids),
    );
    metrics::gauge(
        &mut out,
        "gater_pool_peer_monitors",
        "Monitors peer processes hold now on our local processes and served names.",
        g64(p.peer_monitors),
    );
    metrics::gauge(
        &mut out,
        "gater_pool_own_monitors",
        "Monitors the gateway holds now on peer processes (targets with calls in flight).",
        g64(p.own_monitors),
    );
    out
}
