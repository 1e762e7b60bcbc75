//! Cross-check against a real Erlang (`erl` on the PATH): thousands of random terms
//! encoded here are decoded by `binary_to_term` and written back by `term_to_binary`,
//! and random terms made by Erlang decode here to the value Erlang meant.

use std::io::Write as _;
use std::process::Command;

use gater_term::build::{atom, binary, float, int, list, map, pid, reference, tuple};
use gater_term::eetf::{self, Term};
use gater_term::order::exact_eq;
use gater_term::{AtomEncoding, DecodeLimits, EncodeOptions, decode, encode, encode_with};

/// A small deterministic PRNG (xorshift64*), so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// `min + below(spread)` random bytes.
    fn bytes(&mut self, min: usize, spread: u64) -> Vec<u8> {
        let n = min + self.below(spread) as usize;
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn random_atom(r: &mut Rng) -> Term {
    let n = r.below(12) as usize;
    let name: String = (0..n)
        .map(|_| match r.below(4) {
            0 => char::from_u32(0xa0 + r.below(0x60) as u32).unwrap_or('x'),
            1 => char::from_u32(0x400 + r.below(0x100) as u32).unwrap_or('y'),
            _ => char::from(b'a' + r.below(26) as u8),
        })
        .collect();
    atom(name)
}

fn random_key(r: &mut Rng, depth: u32) -> Term {
    // Keys without pids, ports, references or funs: their relative order is the one
    // part of term order this crate only approximates across nodes.
    match r.below(6) {
        0 => random_atom(r),
        1 => int(r.next() as i64 >> r.below(64)),
        2 => binary(r.bytes(0, 6)),
        3 => float((r.next() as i64 >> 20) as f64 / 7.0),
        4 if depth > 0 => tuple(vec![random_key(r, depth - 1), random_key(r, depth - 1)]),
        _ => list(vec![int(r.below(300) as i64)]),
    }
}

fn random_term(r: &mut Rng, depth: u32) -> Term {
    let pick = if depth == 0 { r.below(12) } else { r.below(18) };
    match pick {
        0 => random_atom(r),
        1 => int(r.below(256) as i64),
        2 => int(r.next() as i32 as i64),
        3 => {
            // Big integers of up to 40 bytes.
            let mag = r.bytes(1, 40);
            let v = num_bigint::BigInt::from_bytes_le(
                if r.below(2) == 0 {
                    num_bigint::Sign::Plus
                } else {
                    num_bigint::Sign::Minus
                },
                &mag,
            );
            Term::from(eetf::BigInteger { value: v })
        }
        4 => int(r.next() as i64),
        5 => {
            let f = f64::from_bits(r.next());
            float(if f.is_finite() && f != 0.0 { f } else { 1.5 })
        }
        6 => binary(r.bytes(0, 20)),
        7 => {
            let bits = 1 + r.below(7) as u8;
            let mut bytes = r.bytes(1, 5);
            if let Some(l) = bytes.last_mut() {
                *l &= 0xffu8 << (8 - bits);
            }
            Term::from(eetf::BitBinary {
                bytes,
                tail_bits_size: bits,
            })
        }
        8 => pid(
            "peer@host",
            r.below(1 << 15) as u32,
            r.below(1 << 13) as u32,
            r.next() as u32,
        ),
        9 => reference(
            "peer@host",
            &[r.below(1 << 18) as u32, r.next() as u32, r.next() as u32],
            r.next() as u32,
        ),
        10 => Term::from(eetf::Port {
            node: eetf::Atom::from("peer@host"),
            id: r.below(1 << 28),
            creation: r.next() as u32,
        }),
        11 => Term::from(eetf::ExternalFun::from(("erlang", "node", 0))),
        12 | 13 => {
            let n = r.below(6) as usize;
            list((0..n).map(|_| random_term(r, depth - 1)).collect())
        }
        14 => {
            // A charlist: OTP writes it as STRING_EXT.
            list(
                (0..1 + r.below(8))
                    .map(|_| int(r.below(256) as i64))
                    .collect(),
            )
        }
        15 => gater_term::build::improper_list(vec![random_term(r, depth - 1)], random_atom(r)),
        16 => {
            let n = if r.below(50) == 0 {
                300
            } else {
                r.below(5) as usize
            };
            tuple((0..n).map(|_| random_term(r, 0)).collect())
        }
        _ => {
            let n = r.below(8) as usize;
            map((0..n).map(|_| (random_key(r, 2), random_term(r, depth - 1))))
        }
    }
}

/// Runs `erl` with an expression and returns its stdout; fails clearly without Erlang.
fn run_erl(expr: &str) -> Vec<u8> {
    let out = Command::new("erl")
        .args(["-noshell", "-eval", expr])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `erl` ({e}): install Erlang/OTP (Debian: apt-get install erlang-nox)"
            )
        });
    assert!(
        out.status.success(),
        "erl failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn frames(bytes: &[u8]) -> Vec<&[u8]> {
    let mut v = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 4 {
        let n = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        v.push(&rest[4..4 + n]);
        rest = &rest[4 + n..];
    }
    assert!(rest.is_empty(), "trailing bytes in erl output");
    v
}

fn erl_string(path: &std::path::Path) -> String {
    path.display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
}

/// Does the term hold a map of more than 32 keys (which OTP writes in hash order)?
fn has_big_map(t: &Term) -> bool {
    match t {
        Term::Map(m) => {
            m.map.len() > 32 || m.map.iter().any(|(k, v)| has_big_map(k) || has_big_map(v))
        }
        Term::List(l) => l.elements.iter().any(has_big_map),
        Term::ImproperList(l) => l.elements.iter().any(has_big_map) || has_big_map(&l.last),
        Term::Tuple(t) => t.elements.iter().any(has_big_map),
        _ => false,
    }
}

#[test]
fn erlang_decodes_what_rust_encodes() {
    const N: usize = 3000;
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let terms: Vec<Term> = (0..N).map(|_| random_term(&mut r, 3)).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("rust.bin");
    let output = dir.path().join("erl.bin");
    let mut f = std::fs::File::create(&input).expect("create");
    for t in &terms {
        let b = encode(t);
        f.write_all(&(b.len() as u32).to_be_bytes()).expect("write");
        f.write_all(&b).expect("write");
    }
    drop(f);
    // Erlang decodes each term and writes it back with UTF-8 atoms (minor_version 2),
    // the form gater-term writes by default.
    let expr = format!(
        r#"{{ok, B}} = file:read_file("{}"),
        Loop = fun L(<<N:32, T:N/binary, Rest/binary>>, Acc) ->
                       Out = term_to_binary(binary_to_term(T), [{{minor_version, 2}}]),
                       L(Rest, [[<<(byte_size(Out)):32>>, Out] | Acc]);
                   L(<<>>, Acc) -> lists:reverse(Acc)
               end,
        ok = file:write_file("{}", Loop(B, [])),
        halt()."#,
        erl_string(&input),
        erl_string(&output)
    );
    run_erl(&expr);
    let back = std::fs::read(&output).expect("erl output");
    let back = frames(&back);
    assert_eq!(back.len(), N);
    let mut byte_exact = 0;
    for (i, (t, b)) in terms.iter().zip(&back).enumerate() {
        let decoded = decode(b, &DecodeLimits::default())
            .unwrap_or_else(|e| panic!("term {i}: erl's bytes do not decode: {e}"));
        assert!(
            exact_eq(t, &decoded),
            "term {i}: erl read another value:\n{t:?}\n{decoded:?}"
        );
        assert_eq!(encode(t), *b, "term {i}: bytes differ from erl's:\n{t:?}");
        byte_exact += 1;
    }
    eprintln!("{byte_exact} of {N} terms read back by erl, byte-exact");
}

#[test]
fn rust_decodes_what_erlang_encodes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = dir.path().join("erl.bin");
    // Erlang makes random terms (every kind, funs included) and writes each three ways:
    // OTP 25's default, UTF-8 atoms, and compressed.
    let expr = format!(
        r#"rand:seed(exsss, {{1, 2, 3}}),
        Atom = fun() -> list_to_atom([case rand:uniform(3) of 1 -> 16#e0 + rand:uniform(20); 2 -> 16#430 + rand:uniform(20); _ -> $a + rand:uniform(25) end || _ <- lists:seq(1, rand:uniform(10))]) end,
        Gen = fun G(0) -> G(1 + rand:uniform(1000) rem 2);
                  G(D) ->
                      case rand:uniform(16) of
                          1 -> Atom();
                          2 -> rand:uniform(256) - 1;
                          3 -> rand:uniform(1 bsl 31) - (1 bsl 30);
                          4 -> (rand:uniform(1 bsl 300) - (1 bsl 299)) * 7;
                          5 -> (rand:uniform() - 0.5) * math:pow(10, rand:uniform(200));
                          6 -> rand:bytes(rand:uniform(30));
                          7 -> <<(rand:uniform(255)):(rand:uniform(7))>>;
                          8 -> [G(D - 1) || _ <- lists:seq(1, rand:uniform(5))];
                          9 -> [G(D - 1) | Atom()];
                          10 -> list_to_tuple([G(D - 1) || _ <- lists:seq(1, rand:uniform(5) - 1)]);
                          11 -> maps:from_list([{{G(D - 1), G(D - 1)}} || _ <- lists:seq(1, rand:uniform(6) - 1)]);
                          12 -> case rand:uniform(4) of 1 -> self(); 2 -> make_ref(); 3 -> hd(erlang:ports()); _ -> fun erlang:node/0 end;
                          13 -> [rand:uniform(200) || _ <- lists:seq(1, rand:uniform(10))];
                          14 -> unicode:characters_to_binary([16#430 + rand:uniform(50) || _ <- lists:seq(1, rand:uniform(10))]);
                          15 -> maps:from_list([{{K, K}} || K <- lists:seq(1, 40)]);
                          _ -> rand:uniform(1 bsl 62)
                      end
              end,
        Frame = fun(B) -> [<<(byte_size(B)):32>>, B] end,
        Terms = [Gen(3) || _ <- lists:seq(1, 2000)] ++ [fun() -> ok end],
        Out = [[Frame(term_to_binary(T)), Frame(term_to_binary(T, [{{minor_version, 2}}])),
                Frame(term_to_binary(T, [compressed]))] || T <- Terms],
        ok = file:write_file("{}", Out),
        halt()."#,
        erl_string(&output)
    );
    run_erl(&expr);
    let bytes = std::fs::read(&output).expect("erl output");
    let fs = frames(&bytes);
    assert_eq!(fs.len() % 3, 0);
    let limits = DecodeLimits::default();
    let (mut exact_latin1, mut exact_utf8) = (0, 0);
    for (i, chunk) in fs.chunks(3).enumerate() {
        let a = decode(chunk[0], &limits).unwrap_or_else(|e| panic!("term {i}: {e}"));
        let b = decode(chunk[1], &limits).unwrap_or_else(|e| panic!("term {i} (utf8): {e}"));
        let c = decode(chunk[2], &limits).unwrap_or_else(|e| panic!("term {i} (compressed): {e}"));
        assert!(
            exact_eq(&a, &b) && exact_eq(&a, &c),
            "term {i}: forms decode differently"
        );
        let mut l = Vec::new();
        encode_with(
            &a,
            &EncodeOptions {
                atoms: AtomEncoding::Latin1,
            },
            &mut l,
        );
        let big_map = has_big_map(&a);
        if l == chunk[0] {
            exact_latin1 += 1;
        } else {
            // Only maps past 32 keys (hash order in OTP) may differ, and any term
            // holding one.
            let reread = decode(&l, &limits).expect("re-encoded");
            assert!(
                exact_eq(&a, &reread),
                "term {i}: re-encoding changed the value"
            );
            assert!(
                big_map,
                "term {i}: bytes differ from OTP's:\n{a:?}\n{:?}\n{:?}",
                chunk[0], l
            );
        }
        if encode(&a) == chunk[1] {
            exact_utf8 += 1;
        }
    }
    let n = fs.len() / 3;
    eprintln!(
        "{n} erl terms decoded; re-encoded byte-exact: {exact_latin1} (OTP 25 default), {exact_utf8} (UTF-8 atoms)"
    );
    assert!(exact_latin1 * 2 >= n, "too few byte-exact re-encodings");
}
