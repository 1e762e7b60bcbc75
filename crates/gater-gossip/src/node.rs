//! Erlang node names (`name@host`), validated before anything else sees them.

use std::fmt;

/// Longest node name accepted, in bytes (an Erlang atom holds at most 255 characters).
pub const MAX_NODE_NAME_LEN: usize = 255;

/// A validated Erlang node name such as `ex_esdb0@127.0.0.1`.
///
/// The part before `@` (the "alive" name) is ASCII letters, digits, `_` and `-`; the host
/// part is ASCII letters, digits, `.`, `-`, `_` and `:`; the whole is at most
/// [`MAX_NODE_NAME_LEN`] bytes. Names from the network are checked with [`NodeName::parse`]
/// so that a hostile heartbeat cannot smuggle control characters or huge strings into logs
/// or into the distribution layer.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeName(String);

/// Why a string is not a node name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeNameError {
    /// Longer than [`MAX_NODE_NAME_LEN`] bytes.
    #[error("node name longer than {MAX_NODE_NAME_LEN} bytes")]
    TooLong,
    /// Not of the form `name@host` (no `@`, more than one, an empty part or a character
    /// outside the allowed set).
    #[error("node name is not of the form name@host")]
    Malformed,
}

impl NodeName {
    /// Checks and wraps a node name.
    pub fn parse(s: &str) -> Result<Self, NodeNameError> {
        Self::check(s)?;
        Ok(Self(s.to_owned()))
    }

    /// Checks a node name without allocating.
    pub fn check(s: &str) -> Result<(), NodeNameError> {
        if s.len() > MAX_NODE_NAME_LEN {
            return Err(NodeNameError::TooLong);
        }
        let (alive, host) = s.split_once('@').ok_or(NodeNameError::Malformed)?;
        let alive_ok = !alive.is_empty()
            && alive
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        let host_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'));
        if alive_ok && host_ok {
            Ok(())
        } else {
            Err(NodeNameError::Malformed)
        }
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before `@`.
    pub fn alive(&self) -> &str {
        self.0.split_once('@').map_or("", |(a, _)| a)
    }

    /// The part after `@`.
    pub fn host(&self) -> &str {
        self.0.split_once('@').map_or("", |(_, h)| h)
    }
}

impl fmt::Debug for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeName({})", self.0)
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for NodeName {
    type Err = NodeNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl AsRef<str> for NodeName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_usual_names() {
        for ok in [
            "ex_esdb0@127.0.0.1",
            "client@host-1.example.org",
            "a@b",
            "n@fe80::1",
        ] {
            assert!(NodeName::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_malformed_names() {
        for bad in [
            "", "@", "a@", "@b", "ab", "a@b@c", "a b@c", "a@b\n", "ä@b", "a@b/c",
        ] {
            assert_eq!(
                NodeName::parse(bad),
                Err(NodeNameError::Malformed),
                "{bad:?}"
            );
        }
        let long = format!("{}@h", "a".repeat(MAX_NODE_NAME_LEN));
        assert_eq!(NodeName::parse(&long), Err(NodeNameError::TooLong));
    }

    #[test]
    fn splits_parts() {
        let n = NodeName::parse("ex_esdb0@127.0.0.1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n.alive(), "ex_esdb0");
        assert_eq!(n.host(), "127.0.0.1");
    }
}
