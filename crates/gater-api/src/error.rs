//! The errors of every gater-api operation.

use gater_term::Term;

/// Why an operation failed.
///
/// Each variant says whether the request may have been carried out; retries the API
/// already made are described in `docs/api.md`.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum GaterError {
    /// No reply within the time-out (after the retries the operation allows). The
    /// request may or may not have been carried out. Cause: an overloaded or stuck
    /// cluster; raise `call_timeout` or look at the nodes.
    #[error("{operation} timed out")]
    Timeout {
        /// The operation.
        operation: &'static str,
    },
    /// No gateway worker served the store through the whole back-off schedule
    /// (`no_workers`, as the Elixir gater). Cause: no ExESDB node connected, or the
    /// store's workers are not registered in Swarm yet. Nothing was sent.
    #[error("no gateway worker serves store {store}")]
    NoWorkers {
        /// The store.
        store: String,
    },
    /// The stream is not at the expected version; nothing was written.
    #[error("wrong expected version: the stream is at {current}")]
    WrongExpectedVersion {
        /// The stream's version as the leader saw it (-1: no stream).
        current: i64,
    },
    /// The cluster does not know this store (`list_stores` does not name it). Nothing
    /// was sent, so no worker crashed.
    #[error("store {store} not found")]
    StoreNotFound {
        /// The store.
        store: String,
    },
    /// The node serving the request went down during the call and no retry was
    /// allowed (an append without an expected version that may have been written).
    #[error("node {node} went down during the call; the request may have been carried out")]
    NodeDown {
        /// The node.
        node: String,
    },
    /// The gateway worker exited during the call and no retry was allowed.
    #[error("gateway worker exited: {reason}")]
    WorkerDown {
        /// The exit reason.
        reason: Term,
    },
    /// ExESDB replied `{error, Reason}` with a reason the API has no variant for.
    #[error("ExESDB error: {0}")]
    Remote(Term),
    /// A reply did not have the shape WIRE.md describes, or exceeded the decoding
    /// limits. The request was carried out.
    #[error("unexpected reply: {0}")]
    Decode(String),
    /// A cast (subscription, ack, snapshot change) was sent but its effect did not
    /// become visible within the confirmation time-out.
    #[error("{operation} was sent but not confirmed within the time-out")]
    NotConfirmed {
        /// The operation.
        operation: &'static str,
    },
    /// The request is invalid (bad stream name, negative count, ...); nothing was sent.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The gateway could not start (bad node name, discovery socket, ...).
    #[error("cannot start the gateway: {0}")]
    Config(String),
    /// A subscription's event source ended (the gateway shut down).
    #[error("the subscription ended: {0}")]
    SubscriptionClosed(String),
}

impl GaterError {
    /// A short stable name of the variant, for metrics labels and HTTP mapping.
    pub fn kind(&self) -> &'static str {
        match self {
            GaterError::Timeout { .. } => "timeout",
            GaterError::NoWorkers { .. } => "no_workers",
            GaterError::WrongExpectedVersion { .. } => "wrong_expected_version",
            GaterError::StoreNotFound { .. } => "store_not_found",
            GaterError::NodeDown { .. } => "node_down",
            GaterError::WorkerDown { .. } => "worker_down",
            GaterError::Remote(_) => "remote",
            GaterError::Decode(_) => "decode",
            GaterError::NotConfirmed { .. } => "not_confirmed",
            GaterError::InvalidRequest(_) => "invalid_request",
            GaterError::Config(_) => "config",
            GaterError::SubscriptionClosed(_) => "subscription_closed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_their_cause_and_kind() {
        let e = GaterError::WrongExpectedVersion { current: 2 };
        assert_eq!(e.to_string(), "wrong expected version: the stream is at 2");
        assert_eq!(e.kind(), "wrong_expected_version");
        let e = GaterError::StoreNotFound { store: "x".into() };
        assert_eq!(e.kind(), "store_not_found");
        assert!(e.to_string().contains('x'));
    }
}
