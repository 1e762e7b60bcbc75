//! The heartbeat datagram: encoding, decoding, sealing and opening, as pure functions.
//!
//! ```text
//! plain:   "heartbeat::" ++ term_to_binary(#{node => NodeAtom})
//! sealed:  IV(16) ++ AES-256-CBC(key = SHA-256(secret), IV, PKCS#7(plain))
//! ```

use aes::Aes256;
use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit, block_padding::Pkcs7};
use gater_term::{DecodeLimits, Term};

use crate::node::{MAX_NODE_NAME_LEN, NodeName, NodeNameError};
use crate::secret::Secret;

/// The ASCII bytes every plain heartbeat starts with.
pub const HEARTBEAT_PREFIX: &[u8] = b"heartbeat::";

/// Length of the initialisation vector in front of a sealed heartbeat.
pub const IV_LEN: usize = 16;

/// AES block length.
const BLOCK_LEN: usize = 16;

/// Longest datagram read at all. A heartbeat for the longest valid node name is under
/// 320 bytes sealed; anything longer is rejected before any decryption or parsing.
pub const MAX_DATAGRAM_LEN: usize = 512;

/// Most map entries a heartbeat term may have (libcluster sends one; extra atom keys are
/// tolerated, as its `%{node: node}` match does).
const MAX_MAP_ENTRIES: u32 = 4;

// ETF tags used by the shape check.
const VERSION: u8 = 131;
const MAP_EXT: u8 = 116;
const ATOM_EXT: u8 = 100;
const SMALL_ATOM_EXT: u8 = 115;
const ATOM_UTF8_EXT: u8 = 118;
const SMALL_ATOM_UTF8_EXT: u8 = 119;

/// Why a datagram was not accepted as a heartbeat.
///
/// Every datagram that reaches the gossip port and is not a valid heartbeat ends in one
/// of these; the listener counts them per reason (see [`Counters`]). None of them is
/// logged per datagram: on a shared port they are normal (other clusters, other secrets)
/// and an attacker controls how many there are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// Longer than [`MAX_DATAGRAM_LEN`]: not a heartbeat from libcluster; a flood or
    /// another protocol on the port.
    #[error("datagram longer than {MAX_DATAGRAM_LEN} bytes")]
    Oversize,
    /// Sealed mode: shorter than an IV plus one cipher block.
    #[error("datagram too short to be a sealed heartbeat")]
    TooShort,
    /// Sealed mode: the ciphertext is not a whole number of AES blocks.
    #[error("ciphertext is not a multiple of 16 bytes")]
    NotBlockAligned,
    /// Sealed mode: the PKCS#7 padding is wrong after decryption. Almost always a sender
    /// with another secret, or a plain heartbeat sent to a listener that has a secret.
    #[error("bad padding after decryption (wrong secret, or not sealed)")]
    BadPadding,
    /// The (decrypted) bytes do not start with `heartbeat::`: a wrong secret whose padding
    /// happened to look valid, a sealed heartbeat sent to a listener without a secret, or
    /// another protocol.
    #[error("no heartbeat:: prefix (wrong secret, or not a heartbeat)")]
    NoPrefix,
    /// The bytes after the prefix are not a well-formed, small external term: garbage,
    /// truncation, trailing bytes, or a term beyond the decoding limits.
    #[error("invalid or oversized external term format")]
    BadEtf,
    /// A valid term, but not a small map of atoms with the atom key `node`.
    #[error("term is not a map with an atom under the key node")]
    NotNodeMap,
    /// The node atom is not of the form `name@host`.
    #[error("node name is not of the form name@host")]
    BadNodeName,
    /// The node atom is longer than [`MAX_NODE_NAME_LEN`] bytes.
    #[error("node name longer than {MAX_NODE_NAME_LEN} bytes")]
    NodeNameTooLong,
}

impl Rejection {
    /// Every reason, in a fixed order (the order of [`Rejection::index`]).
    pub const ALL: [Rejection; 9] = [
        Rejection::Oversize,
        Rejection::TooShort,
        Rejection::NotBlockAligned,
        Rejection::BadPadding,
        Rejection::NoPrefix,
        Rejection::BadEtf,
        Rejection::NotNodeMap,
        Rejection::BadNodeName,
        Rejection::NodeNameTooLong,
    ];

    /// Number of reasons.
    pub const COUNT: usize = Self::ALL.len();

    /// Position of this reason in [`Rejection::ALL`] (stable, usable as an array index).
    pub fn index(self) -> usize {
        self as usize
    }

    /// A short snake_case name, for metrics labels.
    pub fn label(self) -> &'static str {
        match self {
            Rejection::Oversize => "oversize",
            Rejection::TooShort => "too_short",
            Rejection::NotBlockAligned => "not_block_aligned",
            Rejection::BadPadding => "bad_padding",
            Rejection::NoPrefix => "no_prefix",
            Rejection::BadEtf => "bad_etf",
            Rejection::NotNodeMap => "not_node_map",
            Rejection::BadNodeName => "bad_node_name",
            Rejection::NodeNameTooLong => "node_name_too_long",
        }
    }
}

/// How many datagrams were accepted, and how many rejected for each [`Rejection`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Datagrams that decoded to a heartbeat.
    pub accepted: u64,
    rejected: [u64; Rejection::COUNT],
}

impl Counters {
    /// Counts the outcome of one [`HeartbeatCodec::read`].
    pub fn record<T>(&mut self, outcome: &Result<T, Rejection>) {
        match outcome {
            Ok(_) => self.accepted += 1,
            Err(r) => self.rejected[r.index()] += 1,
        }
    }

    /// Datagrams rejected for this reason.
    pub fn rejected(&self, reason: Rejection) -> u64 {
        self.rejected[reason.index()]
    }

    /// Datagrams rejected for any reason.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }

    /// `(reason, count)` for every reason, zero counts included.
    pub fn iter(&self) -> impl Iterator<Item = (Rejection, u64)> + '_ {
        Rejection::ALL
            .iter()
            .map(|r| (*r, self.rejected[r.index()]))
    }

    pub(crate) fn from_parts(accepted: u64, rejected: [u64; Rejection::COUNT]) -> Self {
        Self { accepted, rejected }
    }
}

/// Encodes the plain heartbeat for `node`, byte for byte as libcluster on OTP 26+ does:
/// atoms as `SMALL_ATOM_UTF8_EXT` (tag 119).
pub fn encode_plain(node: &NodeName) -> Vec<u8> {
    let name = node.as_str().as_bytes();
    let mut out = Vec::with_capacity(HEARTBEAT_PREFIX.len() + 13 + name.len());
    out.extend_from_slice(HEARTBEAT_PREFIX);
    out.extend_from_slice(&[VERSION, MAP_EXT, 0, 0, 0, 1]);
    out.extend_from_slice(&[SMALL_ATOM_UTF8_EXT, 4]);
    out.extend_from_slice(b"node");
    // NodeName guarantees at most 255 bytes, so the one-byte length holds.
    out.push(SMALL_ATOM_UTF8_EXT);
    out.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(name);
    out
}

/// Decodes a plain heartbeat (prefix and term) into the node name it announces.
pub fn decode_plain(bytes: &[u8]) -> Result<NodeName, Rejection> {
    if bytes.len() > MAX_DATAGRAM_LEN {
        return Err(Rejection::Oversize);
    }
    let etf = bytes
        .strip_prefix(HEARTBEAT_PREFIX)
        .ok_or(Rejection::NoPrefix)?;
    check_shape(etf)?;
    let term = gater_term::decode(etf, &heartbeat_limits()).map_err(|_| Rejection::BadEtf)?;
    let Term::Map(map) = term else {
        return Err(Rejection::NotNodeMap);
    };
    let node = map
        .map
        .iter()
        .find_map(|(k, v)| match (k, v) {
            (Term::Atom(k), Term::Atom(v)) if k.name == "node" => Some(v),
            _ => None,
        })
        .ok_or(Rejection::NotNodeMap)?;
    NodeName::parse(&node.name).map_err(|e| match e {
        NodeNameError::TooLong => Rejection::NodeNameTooLong,
        _ => Rejection::BadNodeName,
    })
}

/// Decoding limits for a heartbeat term: a flat map of a few atoms.
// Field by field, so that limits gater-term adds later keep their defaults.
#[allow(clippy::field_reassign_with_default)]
fn heartbeat_limits() -> DecodeLimits {
    let mut limits = DecodeLimits::default();
    limits.max_depth = 2;
    limits.max_elements = 2 * MAX_MAP_ENTRIES as usize + 1;
    limits.max_bytes = MAX_DATAGRAM_LEN;
    limits.max_atom_len = MAX_NODE_NAME_LEN * 4;
    limits.max_bigint_bytes = 8;
    limits
}

/// Checks, without allocating, that `etf` is a version byte and a map of at most
/// [`MAX_MAP_ENTRIES`] atom keys and atom values with nothing after it.
///
/// This runs before the general decoder so that hostile length fields never reach it:
/// whatever the decoder's own limits, a datagram that passes here cannot make it allocate
/// more than the datagram's size.
fn check_shape(etf: &[u8]) -> Result<(), Rejection> {
    let (&version, rest) = etf.split_first().ok_or(Rejection::BadEtf)?;
    if version != VERSION {
        return Err(Rejection::BadEtf);
    }
    let (&tag, rest) = rest.split_first().ok_or(Rejection::BadEtf)?;
    if tag != MAP_EXT {
        return Err(Rejection::NotNodeMap);
    }
    let (arity, mut rest) = rest.split_first_chunk::<4>().ok_or(Rejection::BadEtf)?;
    let arity = u32::from_be_bytes(*arity);
    if arity == 0 || arity > MAX_MAP_ENTRIES {
        return Err(Rejection::NotNodeMap);
    }
    for _ in 0..2 * arity {
        rest = skip_atom(rest)?;
    }
    if rest.is_empty() {
        Ok(())
    } else {
        Err(Rejection::BadEtf)
    }
}

fn skip_atom(bytes: &[u8]) -> Result<&[u8], Rejection> {
    let (&tag, rest) = bytes.split_first().ok_or(Rejection::BadEtf)?;
    let (len, rest) = match tag {
        SMALL_ATOM_EXT | SMALL_ATOM_UTF8_EXT => {
            let (&len, rest) = rest.split_first().ok_or(Rejection::BadEtf)?;
            (usize::from(len), rest)
        }
        ATOM_EXT | ATOM_UTF8_EXT => {
            let (len, rest) = rest.split_first_chunk::<2>().ok_or(Rejection::BadEtf)?;
            (usize::from(u16::from_be_bytes(*len)), rest)
        }
        _ => return Err(Rejection::NotNodeMap),
    };
    rest.get(len..).ok_or(Rejection::BadEtf)
}

/// Seals a plain heartbeat: `IV ++ AES-256-CBC(key, IV, PKCS#7(plain))`.
///
/// The IV must be fresh random bytes for every datagram (the caller chooses it so that
/// this function stays pure and tests can reproduce captured datagrams).
pub fn seal(secret: &Secret, iv: [u8; IV_LEN], plain: &[u8]) -> Vec<u8> {
    let padded_len = (plain.len() / BLOCK_LEN + 1) * BLOCK_LEN;
    let mut out = vec![0u8; IV_LEN + padded_len];
    out[..IV_LEN].copy_from_slice(&iv);
    out[IV_LEN..IV_LEN + plain.len()].copy_from_slice(plain);
    let enc = cbc::Encryptor::<Aes256>::new(secret.key().into(), (&iv).into());
    // The buffer is exactly one padded length long, so padding cannot fail.
    let sealed_len = enc
        .encrypt_padded::<Pkcs7>(&mut out[IV_LEN..], plain.len())
        .map_or(0, <[u8]>::len);
    out.truncate(IV_LEN + sealed_len);
    out
}

/// Opens a sealed datagram into `buf` and returns the plain bytes (a slice of `buf`).
///
/// Works on a caller-provided buffer so that the hot path allocates nothing.
pub fn open_into<'b>(
    secret: &Secret,
    datagram: &[u8],
    buf: &'b mut [u8; MAX_DATAGRAM_LEN],
) -> Result<&'b [u8], Rejection> {
    if datagram.len() > MAX_DATAGRAM_LEN {
        return Err(Rejection::Oversize);
    }
    if datagram.len() < IV_LEN + BLOCK_LEN {
        return Err(Rejection::TooShort);
    }
    let (iv, ciphertext) = datagram.split_at(IV_LEN);
    if ciphertext.len() % BLOCK_LEN != 0 {
        return Err(Rejection::NotBlockAligned);
    }
    let iv: &[u8; IV_LEN] = iv.try_into().map_err(|_| Rejection::TooShort)?;
    let buf = &mut buf[..ciphertext.len()];
    buf.copy_from_slice(ciphertext);
    cbc::Decryptor::<Aes256>::new(secret.key().into(), iv.into())
        .decrypt_padded::<Pkcs7>(buf)
        .map_err(|_| Rejection::BadPadding)
}

/// Opens a sealed datagram and returns the plain bytes.
pub fn open(secret: &Secret, datagram: &[u8]) -> Result<Vec<u8>, Rejection> {
    let mut buf = [0u8; MAX_DATAGRAM_LEN];
    open_into(secret, datagram, &mut buf).map(<[u8]>::to_vec)
}

/// Reads and writes heartbeats the way one libcluster Gossip node configured with (or
/// without) a secret does.
///
/// With a secret every datagram is taken as `IV ++ ciphertext` (plain heartbeats are
/// rejected, as libcluster drops them); without one only datagrams starting with
/// `heartbeat::` are read.
#[derive(Debug, Clone)]
pub struct HeartbeatCodec {
    secret: Option<Secret>,
}

impl HeartbeatCodec {
    /// A codec for a cluster without a secret.
    pub fn plain() -> Self {
        Self { secret: None }
    }

    /// A codec for a cluster with this secret.
    pub fn sealed(secret: Secret) -> Self {
        Self {
            secret: Some(secret),
        }
    }

    /// A codec with an optional secret.
    pub fn new(secret: Option<Secret>) -> Self {
        Self { secret }
    }

    /// Whether heartbeats are sealed.
    pub fn is_sealed(&self) -> bool {
        self.secret.is_some()
    }

    /// Reads one datagram: the node name it announces, or why it is not a heartbeat.
    pub fn read(&self, datagram: &[u8]) -> Result<NodeName, Rejection> {
        match &self.secret {
            None => decode_plain(datagram),
            Some(secret) => {
                let mut buf = [0u8; MAX_DATAGRAM_LEN];
                let plain = open_into(secret, datagram, &mut buf)?;
                decode_plain(plain)
            }
        }
    }

    /// Writes the datagram announcing `node`; `iv` is used only when sealing and must be
    /// fresh random bytes for every datagram.
    pub fn write(&self, node: &NodeName, iv: [u8; IV_LEN]) -> Vec<u8> {
        let plain = encode_plain(node);
        match &self.secret {
            None => plain,
            Some(secret) => seal(secret, iv, &plain),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(s: &str) -> NodeName {
        NodeName::parse(s).expect("valid node name")
    }

    #[test]
    fn plain_round_trip() {
        let n = node("ex_esdb0@127.0.0.1");
        assert_eq!(decode_plain(&encode_plain(&n)), Ok(n));
    }

    #[test]
    fn sealed_round_trip_and_wrong_secret() {
        let n = node("ex_esdb1@10.0.0.7");
        let codec = HeartbeatCodec::sealed(Secret::new("s3cret"));
        let dgram = codec.write(&n, [7; IV_LEN]);
        assert_eq!(codec.read(&dgram), Ok(n.clone()));
        let other = HeartbeatCodec::sealed(Secret::new("other"));
        assert!(matches!(
            other.read(&dgram),
            Err(Rejection::BadPadding | Rejection::NoPrefix)
        ));
        assert_eq!(
            HeartbeatCodec::plain().read(&dgram),
            Err(Rejection::NoPrefix)
        );
        assert!(matches!(
            codec.read(&encode_plain(&n)),
            Err(Rejection::NotBlockAligned | Rejection::BadPadding | Rejection::NoPrefix)
        ));
    }

    #[test]
    fn rejections_name_their_reason() {
        let plain = HeartbeatCodec::plain();
        let sealed = HeartbeatCodec::sealed(Secret::new("x"));
        let hb = |etf: &[u8]| {
            let mut v = HEARTBEAT_PREFIX.to_vec();
            v.extend_from_slice(etf);
            plain.read(&v)
        };
        assert_eq!(hb(&[]), Err(Rejection::BadEtf));
        assert_eq!(hb(&[130, 116]), Err(Rejection::BadEtf));
        // A list of a billion elements: must be rejected without allocating.
        assert_eq!(hb(&[131, 108, 0x40, 0, 0, 0]), Err(Rejection::NotNodeMap));
        assert_eq!(
            hb(&[131, 116, 0xff, 0xff, 0xff, 0xff]),
            Err(Rejection::NotNodeMap)
        );
        assert_eq!(hb(&[131, 116, 0, 0, 0, 1, 119, 4]), Err(Rejection::BadEtf));
        // #{node => <<"a@b">>}
        assert_eq!(
            hb(&[
                131, 116, 0, 0, 0, 1, 119, 4, b'n', b'o', b'd', b'e', 109, 0, 0, 0, 3
            ]),
            Err(Rejection::NotNodeMap)
        );
        // #{nodes => 'a@b'}
        assert_eq!(
            hb(&[
                131, 116, 0, 0, 0, 1, 119, 5, b'n', b'o', b'd', b'e', b's', 119, 3, b'a', b'@',
                b'b'
            ]),
            Err(Rejection::NotNodeMap)
        );
        // #{node => 'ab'}
        assert_eq!(
            hb(&[
                131, 116, 0, 0, 0, 1, 119, 4, b'n', b'o', b'd', b'e', 119, 2, b'a', b'b'
            ]),
            Err(Rejection::BadNodeName)
        );
        // trailing byte
        let mut ok = encode_plain(&node("a@b"));
        ok.push(0);
        assert_eq!(plain.read(&ok), Err(Rejection::BadEtf));
        // a 300-character node atom (ATOM_UTF8_EXT)
        let mut long = vec![
            131, 116, 0, 0, 0, 1, 119, 4, b'n', b'o', b'd', b'e', 118, 1, 44,
        ];
        long.extend(std::iter::repeat_n(b'a', 298));
        long.extend_from_slice(b"@h");
        assert_eq!(hb(&long), Err(Rejection::NodeNameTooLong));
        assert_eq!(plain.read(b"hello"), Err(Rejection::NoPrefix));
        assert_eq!(plain.read(&[0; 600]), Err(Rejection::Oversize));
        assert_eq!(sealed.read(&[0; 31]), Err(Rejection::TooShort));
        assert_eq!(sealed.read(&[0; 33]), Err(Rejection::NotBlockAligned));
        assert_eq!(sealed.read(&[0; 600]), Err(Rejection::Oversize));
    }

    #[test]
    fn extra_atom_keys_are_tolerated() {
        // #{node => 'a@b', x => y}, OTP 25 style ATOM_EXT atoms.
        let etf = [
            131, 116, 0, 0, 0, 2, 100, 0, 1, b'x', 100, 0, 1, b'y', 100, 0, 4, b'n', b'o', b'd',
            b'e', 100, 0, 3, b'a', b'@', b'b',
        ];
        let mut v = HEARTBEAT_PREFIX.to_vec();
        v.extend_from_slice(&etf);
        assert_eq!(decode_plain(&v), Ok(node("a@b")));
    }

    #[test]
    fn counters_count_per_reason() {
        let mut c = Counters::default();
        c.record::<()>(&Err(Rejection::BadPadding));
        c.record::<()>(&Err(Rejection::BadPadding));
        c.record(&Ok(()));
        assert_eq!(c.accepted, 1);
        assert_eq!(c.rejected(Rejection::BadPadding), 2);
        assert_eq!(c.rejected_total(), 2);
        assert_eq!(c.iter().count(), Rejection::COUNT);
        for (i, r) in Rejection::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }
}
