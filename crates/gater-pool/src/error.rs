//! Typed errors: what failed, the likely cause, and what the operator can do.

use gater_term::Term;

/// Why a connection to a peer node could not be set up.
///
/// The pool logs each of these once per back-off step and keeps retrying until the node
/// is removed with [`crate::Pool::disconnect`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The node name is not `name@host`.
    /// Cause: a typo in the configuration. Fix the node name.
    #[error("invalid node name {0:?}: expected name@host")]
    InvalidNodeName(String),
    /// EPMD on the peer's host could not be reached.
    /// Cause: the host is down, EPMD is not running, or the EPMD port is wrong
    /// (`ERL_EPMD_PORT` on the peer side, [`crate::PoolConfig::epmd_port`] here).
    #[error("EPMD at {addr} unreachable: {reason}")]
    EpmdUnreachable {
        /// The EPMD address tried.
        addr: String,
        /// The I/O error.
        reason: String,
    },
    /// EPMD answered but does not know the node.
    /// Cause: the node is not running (yet), or its name or host differ from the ones given.
    #[error("EPMD at {epmd} does not know node {node}")]
    UnknownNode {
        /// The node asked for.
        node: String,
        /// The EPMD address asked.
        epmd: String,
    },
    /// EPMD knows the node but its distribution port refused the connection.
    /// Cause: the node just stopped (EPMD has a stale entry), or a firewall.
    #[error("node {node} at {addr} refused the connection: {reason}")]
    ConnectionRefused {
        /// The node.
        node: String,
        /// Its distribution address.
        addr: String,
        /// The I/O error.
        reason: String,
    },
    /// The peer closed the connection after our challenge reply: the cookies differ.
    /// Fix: use the cluster's cookie (`EX_ESDB_COOKIE` / `RELEASE_COOKIE`).
    #[error("peer {node} rejected the handshake: check the cookie")]
    WrongCookie {
        /// The node.
        node: String,
    },
    /// The peer answered the handshake with a refusal status (`nok`, `not_allowed`,
    /// `alive`). `alive` means the peer still holds an older connection of ours; it goes
    /// away after at most one `net_ticktime`, and the pool retries.
    #[error("peer {node} refused the handshake with status {status}")]
    HandshakeRefused {
        /// The node.
        node: String,
        /// The status it sent.
        status: String,
    },
    /// Any other handshake failure: a broken network, a peer that is not an Erlang node,
    /// or an incompatible Erlang release.
    #[error("handshake with {node} failed: {reason}")]
    Handshake {
        /// The node.
        node: String,
        /// What went wrong.
        reason: String,
    },
    /// EPMD, connect or handshake did not finish within
    /// [`crate::PoolConfig::connect_timeout`]. Cause: an overloaded or unreachable host.
    #[error("connecting to {node} timed out")]
    Timeout {
        /// The node.
        node: String,
    },
    /// The pool was shut down or the node was removed while connecting.
    #[error("connecting to {node} was cancelled")]
    Cancelled {
        /// The node.
        node: String,
    },
}

/// Why a call, cast or rpc failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// No reply within the time-out. The request may or may not have been handled.
    /// Cause: a slow or stuck server, or a full write queue (back-pressure).
    #[error("call timed out")]
    Timeout,
    /// There is no live connection to the node: it is unknown to the pool
    /// ([`crate::Pool::connect`] it first) or currently down (the pool is reconnecting).
    /// The request was not sent.
    #[error("not connected to node {node}")]
    NotConnected {
        /// The node.
        node: String,
    },
    /// The connection closed while the call was in flight (node down, network, oversize
    /// frame, tick time-out). The request may or may not have been handled.
    #[error("connection to {node} lost during the call")]
    ConnectionLost {
        /// The node.
        node: String,
    },
    /// The target process died or did not exist (its monitor fired); `reason` is the exit
    /// reason, `noproc` when it did not exist.
    #[error("target process down: {reason}")]
    TargetDown {
        /// The exit reason.
        reason: Term,
    },
    /// `rpc` answered `{badrpc, Reason}`: the function raised, or is not exported.
    #[error("rpc failed: {reason}")]
    BadRpc {
        /// The reason.
        reason: Term,
    },
    /// The reply arrived but does not decode: it exceeds the decoding limits
    /// ([`crate::PoolConfig::decode_limits`]) or is not valid ETF. Only this call fails;
    /// the connection stays up. The request was handled.
    #[error("reply rejected: {reason}")]
    BadReply {
        /// Why it did not decode.
        reason: String,
    },
    /// The target cannot be addressed (for example a pid of a node that is not named
    /// `name@host`).
    #[error("invalid target: {0}")]
    InvalidTarget(String),
}

impl CallError {
    /// A short stable name of the variant, for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Timeout => "timeout",
            CallError::NotConnected { .. } => "not_connected",
            CallError::ConnectionLost { .. } => "connection_lost",
            CallError::TargetDown { .. } => "target_down",
            CallError::BadRpc { .. } => "badrpc",
            CallError::InvalidTarget(_) => "invalid_target",
            CallError::BadReply { .. } => "bad_reply",
        }
    }

    /// True when the target did not exist at all (`noproc`).
    pub fn is_noproc(&self) -> bool {
        matches!(self, CallError::TargetDown { reason: Term::Atom(a) } if a.name == "noproc")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_their_cause() {
        let e = ConnectError::WrongCookie { node: "a@h".into() };
        assert_eq!(
            e.to_string(),
            "peer a@h rejected the handshake: check the cookie"
        );
        let e = CallError::TargetDown {
            reason: Term::from(eetf::Atom::from("noproc")),
        };
        assert!(e.is_noproc());
        assert_eq!(e.kind(), "target_down");
        assert!(!CallError::Timeout.is_noproc());
    }
}
