//! Asking a host's EPMD which nodes it has registered (`NAMES_REQ`).
//!
//! The request is two length bytes and the byte 110; EPMD answers with its own port as
//! four bytes, then `name NAME at port PORT\n` lines, and closes the connection. The
//! parser is pure; [`names`] is the small tokio shell around it.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::node::NodeName;

/// The default EPMD port.
pub const DEFAULT_EPMD_PORT: u16 = 4369;

/// Longest `NAMES_REQ` answer read (about a thousand nodes); more is an error, not memory.
pub const MAX_NAMES_REPLY: usize = 64 * 1024;

const NAMES_REQ: [u8; 3] = [0, 1, 110];

/// Why a host's EPMD could not be asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EpmdError {
    /// Could not connect, or the connection broke: EPMD not running on that host and
    /// port, a firewall, or a wrong host name.
    #[error("EPMD at {host}:{port}: {source}")]
    Io {
        /// The host asked.
        host: String,
        /// The port asked.
        port: u16,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// No complete answer within the time-out.
    #[error("EPMD at {host}:{port}: no answer within {timeout:?}")]
    Timeout {
        /// The host asked.
        host: String,
        /// The port asked.
        port: u16,
        /// The time-out.
        timeout: Duration,
    },
    /// The answer is not an EPMD names reply (another service on the port) or is longer
    /// than [`MAX_NAMES_REPLY`].
    #[error("EPMD at {host}:{port}: malformed names reply")]
    Malformed {
        /// The host asked.
        host: String,
        /// The port asked.
        port: u16,
    },
}

/// Parses a complete `NAMES_REQ` answer into `(alive name, distribution port)` pairs.
///
/// Returns `None` when the answer is shorter than the 4-byte port header or is not text.
/// Lines that are not `name N at port P` are skipped.
pub fn parse_names_reply(reply: &[u8]) -> Option<Vec<(String, u16)>> {
    let text = reply.get(4..)?;
    let text = std::str::from_utf8(text).ok()?;
    Some(
        text.lines()
            .filter_map(|line| {
                let rest = line.strip_prefix("name ")?;
                let (name, port) = rest.rsplit_once(" at port ")?;
                Some((name.to_owned(), port.trim().parse().ok()?))
            })
            .collect(),
    )
}

/// The node names registered with `host`'s EPMD: each `alive@host`, invalid ones skipped.
pub fn node_names(host: &str, names: &[(String, u16)]) -> Vec<NodeName> {
    names
        .iter()
        .filter_map(|(alive, _)| NodeName::parse(&format!("{alive}@{host}")).ok())
        .collect()
}

/// Asks the EPMD at `host:port` for its registered names, within `timeout`.
pub async fn names(
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<Vec<(String, u16)>, EpmdError> {
    let io = |source| EpmdError::Io {
        host: host.to_owned(),
        port,
        source,
    };
    let exchange = async {
        let mut stream = TcpStream::connect((host, port)).await.map_err(io)?;
        stream.write_all(&NAMES_REQ).await.map_err(io)?;
        let mut reply = Vec::new();
        let limit = u64::try_from(MAX_NAMES_REPLY + 1).unwrap_or(u64::MAX);
        (&mut stream)
            .take(limit)
            .read_to_end(&mut reply)
            .await
            .map_err(io)?;
        Ok(reply)
    };
    let reply = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| EpmdError::Timeout {
            host: host.to_owned(),
            port,
            timeout,
        })??;
    let malformed = || EpmdError::Malformed {
        host: host.to_owned(),
        port,
    };
    if reply.len() > MAX_NAMES_REPLY {
        return Err(malformed());
    }
    parse_names_reply(&reply).ok_or_else(malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_reply() {
        let mut reply = vec![0, 0, 0x11, 0x11];
        reply.extend_from_slice(b"name ex_esdb0 at port 9100\nname client at port 41234\n");
        reply.extend_from_slice(b"junk line\n");
        let names = parse_names_reply(&reply).expect("a names reply");
        assert_eq!(
            names,
            vec![("ex_esdb0".to_owned(), 9100), ("client".to_owned(), 41234)]
        );
        let nodes = node_names("10.1.2.3", &names);
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[0].as_str(), "ex_esdb0@10.1.2.3");
        assert_eq!(parse_names_reply(&[0, 0]), None);
        assert_eq!(parse_names_reply(&[0, 0, 0, 0]), Some(vec![]));
        assert_eq!(parse_names_reply(&[0, 0, 0, 0, 0xff]), None);
    }
}
