//! Bearer tokens: HMAC-SHA256 over a small JSON claim set, per store and per operation.
//!
//! A token reads `egt1.<claims>.<mac>`, both parts base64url without padding; `claims` is
//! `{"store":"reg_gh","ops":["read","append"],"iat":..,"exp":..}` (`"store":"*"` covers every
//! store) and `mac` is HMAC-SHA256(secret, `egt1.<claims>`). The MAC is checked before the
//! claims are parsed, in constant time ([`Mac::verify_slice`]). Tokens are not stored: any
//! replica holding the same secret accepts them.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

const PREFIX: &str = "egt1.";
/// Longest token accepted (a claim set names one store and five operations).
pub const MAX_TOKEN_LEN: usize = 2048;

/// An operation a token may allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Read events, versions, stream lists.
    Read,
    /// Append events.
    Append,
    /// Create, list, follow, ack and delete subscriptions.
    Subscribe,
    /// Record, read, list and delete snapshots.
    Snapshot,
    /// Cluster-wide views (`/v1/cluster/nodes`); implies nothing else.
    Admin,
}

impl Op {
    /// Every operation, in the order the CLI lists them.
    pub const ALL: [Op; 5] = [Op::Read, Op::Append, Op::Subscribe, Op::Snapshot, Op::Admin];

    /// The name used in tokens and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Append => "append",
            Op::Subscribe => "subscribe",
            Op::Snapshot => "snapshot",
            Op::Admin => "admin",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Op {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Op::ALL
            .into_iter()
            .find(|o| o.as_str() == s.trim())
            .ok_or_else(|| {
                format!(
                    "unknown operation `{s}` (expected read, append, subscribe, snapshot or admin)"
                )
            })
    }
}

/// What a token allows, and until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The store, or `*` for every store.
    pub store: String,
    /// The allowed operations.
    pub ops: Vec<Op>,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Expires at, seconds since the epoch.
    pub exp: u64,
}

impl Claims {
    /// Whether these claims allow `op` on `store`.
    pub fn allows(&self, store: &str, op: Op) -> bool {
        (self.store == "*" || self.store == store) && self.ops.contains(&op)
    }

    /// Whether these claims cover `store` for any operation.
    pub fn covers_store(&self, store: &str) -> bool {
        self.store == "*" || self.store == store
    }
}

/// Why a token was refused (the token itself is never part of it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// No `Authorization: Bearer` header.
    #[error("missing bearer token (send `Authorization: Bearer <token>`)")]
    Missing,
    /// Not of the form `egt1.<claims>.<mac>`, or the claims do not parse.
    #[error("malformed bearer token")]
    Malformed,
    /// The MAC does not match: another secret, or a changed token.
    #[error("bearer token signature does not match (issued with another secret?)")]
    BadSignature,
    /// Past its `exp`.
    #[error("bearer token expired")]
    Expired,
}

/// The operator secret that signs and checks tokens. Its `Debug` shows no byte of it.
#[derive(Clone)]
pub struct TokenKey {
    key: Vec<u8>,
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKey(<redacted>)")
    }
}

impl TokenKey {
    /// A key from the operator secret.
    pub fn new(secret: impl AsRef<[u8]>) -> Self {
        Self {
            key: secret.as_ref().to_vec(),
        }
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length.
        match Hmac::<Sha256>::new_from_slice(&self.key) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC accepts any key length"),
        }
    }

    /// Mints a token for `store` (or `*`) allowing `ops` for `ttl` from `now`.
    pub fn issue(&self, store: &str, ops: &[Op], ttl: Duration, now: SystemTime) -> String {
        let iat = epoch_secs(now);
        let claims = Claims {
            store: store.to_owned(),
            ops: ops.to_vec(),
            iat,
            exp: iat.saturating_add(ttl.as_secs()),
        };
        let json = serde_json::to_vec(&claims).unwrap_or_default();
        let signed = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(json));
        let mut mac = self.mac();
        mac.update(signed.as_bytes());
        let tag = mac.finalize().into_bytes();
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// Checks a token's form, MAC (constant time) and expiry at `now`.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN || !token.starts_with(PREFIX) {
            return Err(TokenError::Malformed);
        }
        let (signed, tag) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        if signed.len() <= PREFIX.len() {
            return Err(TokenError::Malformed);
        }
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac();
        mac.update(signed.as_bytes());
        mac.verify_slice(&tag)
            .map_err(|_| TokenError::BadSignature)?;
        let json = URL_SAFE_NO_PAD
            .decode(&signed[PREFIX.len()..])
            .map_err(|_| TokenError::Malformed)?;
        let claims: Claims = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
        if epoch_secs(now) >= claims.exp {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

fn epoch_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Parses `24h`, `30m`, `90s`, `7d` or plain seconds.
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}`: expected a duration such as 90s, 30m, 24h or 7d"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{s}`: unit must be s, m, h or d")),
    };
    if n == 0 {
        return Err(format!("`{s}`: must be more than zero"));
    }
    Ok(Duration::from_secs(n.saturating_mul(mult)))
}

/// Parses `read,append,...`.
pub fn parse_ops(s: &str) -> Result<Vec<Op>, String> {
    let mut ops = Vec::new();
    for part in s.split(',').filter(|p| !p.trim().is_empty()) {
        let op: Op = part.parse()?;
        if !ops.contains(&op) {
            ops.push(op);
        }
    }
    if ops.is_empty() {
        return Err("no operations given".into());
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    #[test]
    fn issued_token_verifies_and_allows_exactly_its_claims() {
        let key = TokenKey::new("s3cret");
        let tok = key.issue(
            "reg_gh",
            &[Op::Read, Op::Append],
            Duration::from_secs(60),
            t0(),
        );
        let c = key.verify(&tok, t0()).expect("valid");
        assert!(c.allows("reg_gh", Op::Read));
        assert!(c.allows("reg_gh", Op::Append));
        assert!(!c.allows("reg_gh", Op::Snapshot));
        assert!(!c.allows("other", Op::Read));
        assert!(!tok.contains("s3cret"));
    }

    #[test]
    fn refusals_are_typed() {
        let key = TokenKey::new("s3cret");
        let tok = key.issue("*", &[Op::Admin], Duration::from_secs(60), t0());
        assert_eq!(
            key.verify(&tok, t0() + Duration::from_secs(60)),
            Err(TokenError::Expired)
        );
        assert_eq!(
            TokenKey::new("other").verify(&tok, t0()),
            Err(TokenError::BadSignature)
        );
        for bad in [
            "",
            "egt1.",
            "egt1..",
            "Bearer x",
            "egt1.!!.??",
            &"a".repeat(5000),
        ] {
            assert_eq!(key.verify(bad, t0()), Err(TokenError::Malformed), "{bad:?}");
        }
        // A changed claim set breaks the MAC.
        let (claims, tag) = tok.rsplit_once('.').expect("dot");
        let forged = format!(
            "egt1.{}.{tag}",
            URL_SAFE_NO_PAD
                .encode(r#"{"store":"*","ops":["admin","append"],"iat":0,"exp":99999999999}"#)
        );
        assert_ne!(forged, format!("{claims}.{tag}"));
        assert_eq!(key.verify(&forged, t0()), Err(TokenError::BadSignature));
    }

    #[test]
    fn ttl_and_ops_parse() {
        assert_eq!(parse_ttl("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_ttl("90"), Ok(Duration::from_secs(90)));
        assert!(parse_ttl("0s").is_err() && parse_ttl("1w").is_err() && parse_ttl("h").is_err());
        assert_eq!(
            parse_ops("read, append,read"),
            Ok(vec![Op::Read, Op::Append])
        );
        assert!(parse_ops("read,delete").is_err());
    }
}
