//! The gossip secret, kept as the derived AES key and never printed.

use std::fmt;

use sha2::{Digest, Sha256};

/// The cluster's gossip secret (`EX_ESDB_CLUSTER_SECRET`), held as its AES-256 key
/// `SHA-256(secret)`, as libcluster derives it.
///
/// `Debug` prints `Secret(<redacted>)`; there is no `Display` and no way to get the key
/// or the secret back out, so it cannot end up in logs or error messages.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    key: [u8; 32],
}

impl Secret {
    /// Derives the key from the secret as configured (any bytes; libcluster uses the
    /// string's UTF-8 bytes, and an empty string is a valid secret).
    pub fn new(secret: impl AsRef<[u8]>) -> Self {
        let digest = Sha256::digest(secret.as_ref());
        let mut key = [0u8; 32];
        key.copy_from_slice(digest.as_slice());
        Self { key }
    }

    pub(crate) fn key(&self) -> &[u8; 32] {
        &self.key
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_sha256_of_secret() {
        // From the vectors' .plaintext.txt files.
        let expected = "9CAF06BB4436CDBFA20AF9121A626BC1093C4F54B31C0FA937957856135345B6";
        let got: String = Secret::new("test-secret")
            .key()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn debug_does_not_show_the_secret() {
        let s = Secret::new("hunter2");
        let shown = format!("{s:?} {s:#?}");
        assert!(!shown.contains("hunter2"));
        assert!(shown.contains("redacted"));
    }
}
