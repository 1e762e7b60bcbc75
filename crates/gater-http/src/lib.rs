//! The HTTP/JSON API of exesdb-gater: what programs in any language use.
//!
//! **Owns:** the routes under `/v1` (streams, stores, subscriptions with Server-Sent Events
//! delivery, snapshots, cluster nodes), `/health/live`, `/health/ready`, `/metrics`
//! (Prometheus text), the OpenAPI document, bearer-token authentication with per-store and
//! per-operation authorization, input checks, and the mapping of every failure onto
//! `{"error": kind, "message": text}` with a fitting status code.
//!
//! **Leaves to others:** talking to the cluster (`gater-api`), configuration, logging set-up
//! and signals (the `exesdb-gater` binary).
//!
//! ```text
//!   client --HTTP/1.1 (TLS optional)--> axum router --> auth + input checks --> gater_api::Gater
//!                                          |  SSE  <-- EventStream (Phoenix.PubSub via gater-api)
//!                                          +-- /metrics: HTTP counters + pool counters
//! ```
//!
//! Nothing a client sends reaches a worker unchecked: names and versions are validated
//! here, unknown stores are refused by `gater-api` against `list_stores`, and every call is
//! bounded by [`Limits::request_timeout`].
#![forbid(unsafe_code)]

pub mod auth;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
mod input;
mod limits;
pub mod metrics;
mod records;
mod routes;
mod sse;
mod state;

pub use auth::{Claims, Op, TokenError, TokenKey};
pub use error::ApiError;
pub use limits::*;
pub use routes::from_gater;
pub use state::HttpApi;

/// Re-exported for TLS set-up by the binary.
pub use axum_server::tls_rustls::RustlsConfig;

/// The OpenAPI 3.1 document served at `/v1/openapi.json` (the same file as `docs/openapi.json`).
pub const OPENAPI_JSON: &str = include_str!("../../../docs/openapi.json");

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    #[test]
    fn openapi_document_lists_exactly_the_served_routes() {
        let doc: serde_json::Value = serde_json::from_str(super::OPENAPI_JSON).expect("valid JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        let documented: BTreeSet<&str> = doc["paths"]
            .as_object()
            .expect("paths")
            .keys()
            .map(String::as_str)
            .collect();
        let served: BTreeSet<&str> = super::metrics::ROUTES
            .iter()
            .copied()
            .filter(|r| *r != "other")
            .collect();
        assert_eq!(documented, served);
    }
}
