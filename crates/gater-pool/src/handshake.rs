//! EPMD look-up and the client side of the distribution handshake (erl_dist), mapped to
//! [`ConnectError`].

use crate::ConnectError;
use erl_dist::DistributionFlags as F;
use erl_dist::epmd::EpmdClient;
use erl_dist::handshake::{ClientSideHandshake, HandshakeError, HandshakeStatus};
use erl_dist::node::{Creation, LocalNode, NodeName};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::ReadBuf;
use tokio::net::TcpStream;

/// OTP's `DFLAG_MANDATORY_25_DIGEST` (erl_dist 0.8 has the wrong bit, `1 << 36`).
pub const MANDATORY_25_DIGEST: u64 = 0x0400_0000;

/// The flags we advertise: what OTP 25, 26 and 27 require, as a hidden node (no
/// `PUBLISHED`), with `SPAWN` (served for erpc), and never `DIST_HDR_ATOM_CACHE` or `FRAGMENTS`, which we do not read.
pub fn our_flags() -> F {
    let f = F::EXTENDED_REFERENCES
        | F::DIST_MONITOR
        | F::FUN_TAGS
        | F::DIST_MONITOR_NAME
        | F::NEW_FUN_TAGS
        | F::EXTENDED_PIDS_PORTS
        | F::EXPORT_PTR_TAG
        | F::BIT_BINARIES
        | F::NEW_FLOATS
        | F::UTF8_ATOMS
        | F::MAP_TAGS
        | F::BIG_CREATION
        | F::HANDSHAKE_23
        | F::UNLINK_ID
        | F::V4_NC
        // OTP 25+ rpc:call is erpc:call: without SPAWN it answers {badrpc, notsup} and
        // never falls back to rex. We serve the spawn requests erpc makes.
        | F::SPAWN;
    F::from_bits_truncate(f.bits() | MANDATORY_25_DIGEST)
}

/// A creation for a new connection: random, and at least 4 (0-3 are the old 2-bit range).
pub(crate) fn new_creation() -> u32 {
    loop {
        let c: u32 = rand::random();
        if c >= 4 {
            return c;
        }
    }
}

/// tokio's stream seen through futures' I/O traits, which erl_dist wants. No buffering,
/// so nothing read past the handshake is lost when it is unwrapped.
struct Compat(TcpStream);

impl futures::io::AsyncRead for Compat {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut rb = ReadBuf::new(buf);
        match tokio::io::AsyncRead::poll_read(Pin::new(&mut self.get_mut().0), cx, &mut rb) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(rb.filled().len())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl futures::io::AsyncWrite for Compat {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        tokio::io::AsyncWrite::poll_write(Pin::new(&mut self.get_mut().0), cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        tokio::io::AsyncWrite::poll_flush(Pin::new(&mut self.get_mut().0), cx)
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        tokio::io::AsyncWrite::poll_shutdown(Pin::new(&mut self.get_mut().0), cx)
    }
}

/// What a successful handshake gives.
pub(crate) struct Handshaken {
    pub stream: TcpStream,
    pub our_creation: u32,
    pub peer_creation: Option<u32>,
    pub peer_flags: u64,
}

/// Splits `name@host`.
pub(crate) fn split_node(node: &str) -> Result<(&str, &str), ConnectError> {
    match node.split_once('@') {
        Some((n, h)) if !n.is_empty() && !h.is_empty() && !h.contains('@') => Ok((n, h)),
        _ => Err(ConnectError::InvalidNodeName(node.to_owned())),
    }
}

/// EPMD look-up, TCP connect and handshake (without an overall time-out).
pub(crate) async fn connect(
    our_name: &str,
    cookie: &str,
    peer: &str,
    epmd_host: Option<&str>,
    epmd_port: u16,
) -> Result<Handshaken, ConnectError> {
    let (peer_alive, peer_host) = split_node(peer)?;
    let (our_alive, our_host) = split_node(our_name)?;
    let epmd_addr = format!("{}:{epmd_port}", epmd_host.unwrap_or(peer_host));
    let epmd = TcpStream::connect(&epmd_addr)
        .await
        .map_err(|e| ConnectError::EpmdUnreachable {
            addr: epmd_addr.clone(),
            reason: e.to_string(),
        })?;
    let entry = EpmdClient::new(Compat(epmd))
        .get_node(peer_alive)
        .await
        .map_err(|e| ConnectError::EpmdUnreachable {
            addr: epmd_addr.clone(),
            reason: e.to_string(),
        })?
        .ok_or_else(|| ConnectError::UnknownNode {
            node: peer.to_owned(),
            epmd: epmd_addr.clone(),
        })?;

    let addr = format!("{peer_host}:{}", entry.port);
    let stream = TcpStream::connect(&addr)
        .await
        .map_err(|e| ConnectError::ConnectionRefused {
            node: peer.to_owned(),
            addr: addr.clone(),
            reason: e.to_string(),
        })?;
    stream
        .set_nodelay(true)
        .map_err(|e| ConnectError::Handshake {
            node: peer.to_owned(),
            reason: e.to_string(),
        })?;

    let creation = new_creation();
    let name = NodeName::new(our_alive, our_host)
        .map_err(|_| ConnectError::InvalidNodeName(our_name.to_owned()))?;
    let mut local = LocalNode::new(name, Creation::new(creation));
    local.flags = our_flags();
    let handshake_error = |e: HandshakeError| ConnectError::Handshake {
        node: peer.to_owned(),
        reason: e.to_string(),
    };
    let mut hs = ClientSideHandshake::new(Compat(stream), local, cookie);
    let status = hs.execute_send_name(6).await.map_err(handshake_error)?;
    match status {
        HandshakeStatus::Ok | HandshakeStatus::OkSimultaneous => {}
        // erl_dist 0.8 never sends our answer to `alive` (its writer is not flushed), so
        // we cannot take over the old connection: report it and let the back-off retry.
        other => {
            return Err(ConnectError::HandshakeRefused {
                node: peer.to_owned(),
                status: format!("{other:?}").to_lowercase(),
            });
        }
    }
    match hs.execute_rest(true).await {
        Ok((Compat(stream), peer_node)) => Ok(Handshaken {
            stream,
            our_creation: creation,
            peer_creation: peer_node.creation.map(|c| c.get()),
            peer_flags: peer_node.flags.bits(),
        }),
        // After our challenge reply, the peer just closes when the digest (cookie) is wrong.
        Err(HandshakeError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
            Err(ConnectError::WrongCookie {
                node: peer.to_owned(),
            })
        }
        Err(HandshakeError::CookieMismatch) => Err(ConnectError::WrongCookie {
            node: peer.to_owned(),
        }),
        Err(e) => Err(handshake_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_hidden_and_never_ask_for_atom_cache_or_fragments() {
        let f = our_flags().bits();
        assert_eq!(f & F::PUBLISHED.bits(), 0);
        assert_eq!(f & F::DIST_HDR_ATOM_CACHE.bits(), 0);
        assert_eq!(f & F::FRAGMENTS.bits(), 0);
        assert_eq!(f & (1 << 36), 0, "erl_dist's wrong MANDATORY_25_DIGEST bit");
        for needed in [
            F::BIG_CREATION,
            F::HANDSHAKE_23,
            F::MAP_TAGS,
            F::V4_NC,
            F::UNLINK_ID,
            F::DIST_MONITOR_NAME,
        ] {
            assert!(our_flags().contains(needed));
        }
        assert_ne!(f & MANDATORY_25_DIGEST, 0);
    }

    #[test]
    fn creations_are_at_least_four() {
        assert!((0..1000).all(|_| new_creation() >= 4));
    }

    #[test]
    fn node_names_must_be_name_at_host() {
        assert_eq!(split_node("a@b").ok(), Some(("a", "b")));
        assert!(split_node("ab").is_err());
        assert!(split_node("@b").is_err());
        assert!(split_node("a@").is_err());
    }
}
