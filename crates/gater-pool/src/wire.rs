//! Distribution control messages (pass-through frames, tag 112) as terms and bytes.
//!
//! Pure functions over terms and byte buffers; the operation numbers are OTP's
//! (`erts/emulator/beam/dist.h`).

use eetf::{Atom, FixInteger, List, Pid, Reference, Term, Tuple};

/// `LINK {1, FromPid, ToPid}`.
pub(crate) const LINK: i32 = 1;
/// `SEND {2, Unused, ToPid}` + message.
pub(crate) const SEND: i32 = 2;
/// `EXIT {3, FromPid, ToPid, Reason}`.
pub(crate) const EXIT: i32 = 3;
/// `UNLINK {4, FromPid, ToPid}` (before UNLINK_ID).
pub(crate) const UNLINK: i32 = 4;
/// `REG_SEND {6, FromPid, Unused, ToName}` + message.
pub(crate) const REG_SEND: i32 = 6;
/// `GROUP_LEADER {7, FromPid, ToPid}`.
pub(crate) const GROUP_LEADER: i32 = 7;
/// `EXIT2 {8, FromPid, ToPid, Reason}`.
pub(crate) const EXIT2: i32 = 8;
/// `SEND_TT {12, Unused, ToPid, TraceToken}` + message.
pub(crate) const SEND_TT: i32 = 12;
/// `EXIT_TT {13, FromPid, ToPid, TraceToken, Reason}`.
pub(crate) const EXIT_TT: i32 = 13;
/// `REG_SEND_TT {16, FromPid, Unused, ToName, TraceToken}` + message.
pub(crate) const REG_SEND_TT: i32 = 16;
/// `EXIT2_TT {18, FromPid, ToPid, TraceToken, Reason}`.
pub(crate) const EXIT2_TT: i32 = 18;
/// `MONITOR_P {19, FromPid, ToProc, Ref}`.
pub(crate) const MONITOR_P: i32 = 19;
/// `DEMONITOR_P {20, FromPid, ToProc, Ref}`.
pub(crate) const DEMONITOR_P: i32 = 20;
/// `MONITOR_P_EXIT {21, FromProc, ToPid, Ref, Reason}`.
pub(crate) const MONITOR_P_EXIT: i32 = 21;
/// `SEND_SENDER {22, FromPid, ToPid}` + message.
pub(crate) const SEND_SENDER: i32 = 22;
/// `SEND_SENDER_TT {23, FromPid, ToPid, TraceToken}` + message.
pub(crate) const SEND_SENDER_TT: i32 = 23;
/// `PAYLOAD_EXIT {24, FromPid, ToPid}` + reason.
pub(crate) const PAYLOAD_EXIT: i32 = 24;
/// `PAYLOAD_EXIT_TT {25, ...}` + reason.
pub(crate) const PAYLOAD_EXIT_TT: i32 = 25;
/// `PAYLOAD_EXIT2 {26, ...}` + reason.
pub(crate) const PAYLOAD_EXIT2: i32 = 26;
/// `PAYLOAD_EXIT2_TT {27, ...}` + reason.
pub(crate) const PAYLOAD_EXIT2_TT: i32 = 27;
/// `PAYLOAD_MONITOR_P_EXIT {28, FromProc, ToPid, Ref}` + reason.
pub(crate) const PAYLOAD_MONITOR_P_EXIT: i32 = 28;
/// `SPAWN_REQUEST {29, ReqId, From, GroupLeader, {M, F, Arity}, OptList}` + args.
pub(crate) const SPAWN_REQUEST: i32 = 29;
/// `SPAWN_REQUEST_TT {30, ReqId, From, GroupLeader, {M, F, Arity}, OptList, Token}` + args.
pub(crate) const SPAWN_REQUEST_TT: i32 = 30;
/// `SPAWN_REPLY {31, ReqId, To, Flags, Result}`.
pub(crate) const SPAWN_REPLY: i32 = 31;
/// Flag bits of SPAWN_REPLY: a link / a monitor was set up.
pub(crate) const SPAWN_FLAG_LINK: i32 = 1;
/// See [`SPAWN_FLAG_LINK`].
pub(crate) const SPAWN_FLAG_MONITOR: i32 = 2;
/// `ALIAS_SEND {33, FromPid, Alias}` + message.
pub(crate) const ALIAS_SEND: i32 = 33;
/// `ALIAS_SEND_TT {34, FromPid, Alias, Token}` + message.
pub(crate) const ALIAS_SEND_TT: i32 = 34;
/// `UNLINK_ID {35, Id, FromPid, ToPid}`.
pub(crate) const UNLINK_ID: i32 = 35;
/// `UNLINK_ID_ACK {36, Id, FromPid, ToPid}`.
pub(crate) const UNLINK_ID_ACK: i32 = 36;

/// The tag of a pass-through frame.
pub(crate) const PASS_THROUGH: u8 = 112;

pub(crate) fn atom(name: &str) -> Term {
    Term::from(Atom::from(name))
}

pub(crate) fn int(v: i32) -> Term {
    Term::from(FixInteger::from(v))
}

pub(crate) fn tuple(elements: Vec<Term>) -> Term {
    Term::from(Tuple::from(elements))
}

pub(crate) fn nil() -> Term {
    Term::from(List::nil())
}

/// Appends one frame: 4-byte length, 112, the control term, then the message if any.
pub(crate) fn push_frame(out: &mut Vec<u8>, control: &Term, message: Option<&Term>) {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0, PASS_THROUGH]);
    gater_term::encode_into(control, out);
    if let Some(m) = message {
        gater_term::encode_into(m, out);
    }
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Appends an atom as gater-term writes it (`SMALL_ATOM_UTF8_EXT`; `ATOM_UTF8_EXT` past
/// 255 bytes). For the calls' hot path, which builds its frames without terms.
pub(crate) fn push_atom(out: &mut Vec<u8>, name: &str) {
    let b = name.as_bytes();
    if let Ok(n) = u8::try_from(b.len()) {
        out.extend_from_slice(&[119, n]);
        out.extend_from_slice(b);
    } else {
        let n = b.len().min(u16::MAX as usize);
        out.push(118);
        out.extend_from_slice(&(n as u16).to_be_bytes());
        out.extend_from_slice(&b[..n]);
    }
}

/// Appends a pid (`NEW_PID_EXT`) as gater-term writes it.
pub(crate) fn push_pid(out: &mut Vec<u8>, p: &Pid) {
    out.push(88);
    push_atom(out, &p.node.name);
    out.extend_from_slice(&p.id.to_be_bytes());
    out.extend_from_slice(&p.serial.to_be_bytes());
    out.extend_from_slice(&p.creation.to_be_bytes());
}

/// Reads an atom at the start of `b` (any of the four atom tags): its name and the
/// bytes it used.
pub(crate) fn read_atom(b: &[u8]) -> Option<(&[u8], usize)> {
    let (&tag, rest) = b.split_first()?;
    let (n, head) = match tag {
        // SMALL_ATOM_UTF8_EXT, SMALL_ATOM_EXT
        119 | 115 => (usize::from(*rest.first()?), 2),
        // ATOM_UTF8_EXT, ATOM_EXT
        118 | 100 => (
            usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?])),
            3,
        ),
        _ => return None,
    };
    Some((b.get(head..head + n)?, head + n))
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// A pid as read from its bytes: node, id, serial, creation.
pub(crate) type PidParts<'a> = (&'a [u8], u32, u32, u32);

/// Reads a `NEW_PID_EXT` at the start of `b`: its parts and the bytes it used.
pub(crate) fn read_pid(b: &[u8]) -> Option<(PidParts<'_>, usize)> {
    if *b.first()? != 88 {
        return None;
    }
    let (node, n) = read_atom(&b[1..])?;
    let at = 1 + n;
    let pid = (
        node,
        read_u32(b, at)?,
        read_u32(b, at + 4)?,
        read_u32(b, at + 8)?,
    );
    Some((pid, at + 12))
}

/// Reads one of our references (`NEWER_REFERENCE_EXT`, three words, our node and
/// creation) at the start of `b`: its key and the bytes it used. `None` for anything
/// else, which then takes the decoding path.
pub(crate) fn read_our_ref(b: &[u8], our_node: &str, our_creation: u32) -> Option<(u64, usize)> {
    if *b.first()? != 90 || b.get(1..3)? != [0, 3] {
        return None;
    }
    let (node, n) = read_atom(&b[3..])?;
    let at = 3 + n;
    if node != our_node.as_bytes() || read_u32(b, at)? != our_creation {
        return None;
    }
    let w = |i: usize| read_u32(b, at + 4 + 4 * i).map(u64::from);
    Some((w(0)? | (w(1)? << 18) | (w(2)? << 50), at + 16))
}

/// Appends a tick (a zero-length frame).
pub(crate) fn push_tick(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0, 0, 0, 0]);
}

/// The words of the reference numbered `key` (first word 18 bits, as OTP makes them).
pub(crate) fn ref_words(key: u64) -> Vec<u32> {
    vec![
        (key & 0x3ffff) as u32,
        ((key >> 18) & 0xffff_ffff) as u32,
        (key >> 50) as u32,
    ]
}

/// The key of one of our references, if `r` is ours.
pub(crate) fn ref_key(r: &Reference, our_node: &str, our_creation: u32) -> Option<u64> {
    if r.creation != our_creation || r.node.name != our_node || r.id.len() != 3 {
        return None;
    }
    Some(u64::from(r.id[0]) | (u64::from(r.id[1]) << 18) | (u64::from(r.id[2]) << 50))
}

/// The pid numbered `n` of our node (id below 2^15, serial below 2^13, as OTP's are).
pub(crate) fn make_pid(node: &str, n: u32, creation: u32) -> Pid {
    Pid::new(node, n & 0x7fff, (n >> 15) & 0x1fff, creation)
}

/// The number of one of our pids, if `p` is ours.
pub(crate) fn pid_number(p: &Pid, our_node: &str, our_creation: u32) -> Option<u32> {
    if p.creation != our_creation || p.node.name != our_node {
        return None;
    }
    Some(p.id | (p.serial << 15))
}

pub(crate) fn as_int(t: &Term) -> Option<i64> {
    match t {
        Term::FixInteger(i) => Some(i64::from(i.value)),
        _ => None,
    }
}

pub(crate) fn as_atom(t: &Term) -> Option<&str> {
    match t {
        Term::Atom(a) => Some(&a.name),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_and_pids_round_trip_through_their_words() {
        for key in [0u64, 1, 0x3ffff, 0x40000, u64::MAX >> 1, 123_456_789_012] {
            let r = Reference {
                node: Atom::from("me@h"),
                id: ref_words(key),
                creation: 7,
            };
            assert!(r.id[0] < (1 << 18));
            assert_eq!(ref_key(&r, "me@h", 7), Some(key));
            assert_eq!(ref_key(&r, "me@h", 8), None);
            assert_eq!(ref_key(&r, "other@h", 7), None);
        }
        for n in [0u32, 1, 0x7fff, 0x8000, (1 << 28) - 1] {
            let p = make_pid("me@h", n, 9);
            assert_eq!(pid_number(&p, "me@h", 9), Some(n));
        }
    }

    #[test]
    fn hand_written_atoms_pids_and_refs_match_gater_terms_encoding() {
        for name in ["", "a", "ex_esdb0@127.0.0.1", &"x".repeat(300)] {
            let mut ours = Vec::new();
            push_atom(&mut ours, name);
            assert_eq!(ours, gater_term::encode(&atom(name))[1..], "{name}");
            assert_eq!(read_atom(&ours), Some((name.as_bytes(), ours.len())));
        }
        let p = make_pid("me@h", 0x12345, 77);
        let mut ours = Vec::new();
        push_pid(&mut ours, &p);
        assert_eq!(ours, gater_term::encode(&Term::from(p.clone()))[1..]);
        let ((node, id, serial, creation), used) = read_pid(&ours).expect("pid");
        assert_eq!(
            (node, id, serial, creation, used),
            (&b"me@h"[..], p.id, p.serial, 77, ours.len())
        );
        for key in [1u64, 0x3ffff, 0x40000, u64::MAX >> 1] {
            let r = Reference {
                node: Atom::from("me@h"),
                id: ref_words(key),
                creation: 7,
            };
            let bytes = gater_term::encode(&Term::from(r));
            assert_eq!(
                read_our_ref(&bytes[1..], "me@h", 7),
                Some((key, bytes.len() - 1))
            );
            assert_eq!(read_our_ref(&bytes[1..], "me@h", 8), None);
            assert_eq!(read_our_ref(&bytes[1..], "other@h", 7), None);
            assert_eq!(read_our_ref(&bytes[1..bytes.len() - 1], "me@h", 7), None);
        }
        // OTP 25's Latin-1 atoms read the same.
        assert_eq!(read_atom(&[100, 0, 2, b'a', b'b']), Some((&b"ab"[..], 5)));
    }

    #[test]
    fn frames_carry_their_length_and_decode_back() {
        let mut out = Vec::new();
        push_tick(&mut out);
        let control = tuple(vec![int(SEND), atom(""), Term::from(make_pid("a@b", 3, 4))]);
        push_frame(&mut out, &control, Some(&atom("hello")));
        assert_eq!(&out[..4], &[0, 0, 0, 0]);
        let len = u32::from_be_bytes([out[4], out[5], out[6], out[7]]) as usize;
        assert_eq!(len, out.len() - 8);
        assert_eq!(out[8], PASS_THROUGH);
        let limits = gater_term::DecodeLimits::default();
        let (c, used) = gater_term::decode_prefix(&out[9..], &limits).expect("control");
        assert_eq!(c, control);
        let m = gater_term::decode(&out[9 + used..], &limits).expect("message");
        assert_eq!(m, atom("hello"));
    }
}
