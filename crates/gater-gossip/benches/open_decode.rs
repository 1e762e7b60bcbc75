//! Datagrams opened and decoded per second on one core: plain and sealed, valid and
//! garbage. Run with `cargo bench -p gater-gossip --bench open_decode`.
//!
//! Each iteration reads a batch of 1024 distinct datagrams through
//! [`HeartbeatCodec::read`], the listener's whole per-datagram work apart from the
//! `recvfrom` system call; criterion reports elements (datagrams) per second.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use gater_gossip::packet::{HEARTBEAT_PREFIX, IV_LEN};
use gater_gossip::{HeartbeatCodec, NodeName, Secret};

const BATCH: usize = 1024;

/// A small deterministic generator, so runs are comparable.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next().to_le_bytes()[0]).collect()
    }
}

fn node(i: usize) -> NodeName {
    NodeName::parse(&format!("ex_esdb{i}@10.0.0.{}", i % 250)).expect("valid node name")
}

fn run(c: &mut Criterion, name: &str, codec: &HeartbeatCodec, batch: &[Vec<u8>]) {
    let mut group = c.benchmark_group("read");
    group.throughput(Throughput::Elements(batch.len() as u64));
    group.bench_function(BenchmarkId::from_parameter(name), |b| {
        b.iter(|| {
            for d in batch {
                let _ = black_box(codec.read(black_box(d)));
            }
        });
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let plain = HeartbeatCodec::plain();
    let sealed = HeartbeatCodec::sealed(Secret::new("dev_cluster_secret"));

    let valid_plain: Vec<_> = (0..BATCH)
        .map(|i| plain.write(&node(i), [0; IV_LEN]))
        .collect();
    let valid_sealed: Vec<_> = (0..BATCH)
        .map(|i| {
            let iv: [u8; IV_LEN] = rng.bytes(IV_LEN).try_into().expect("16 bytes");
            sealed.write(&node(i), iv)
        })
        .collect();
    // Random bytes of heartbeat-like sizes (block-aligned, so sealed mode decrypts them).
    let garbage: Vec<_> = (0..BATCH).map(|i| rng.bytes(48 + 16 * (i % 4))).collect();
    // The worst plain garbage: the right prefix, then random bytes that reach the parser.
    let garbage_prefixed: Vec<_> = (0..BATCH)
        .map(|i| {
            let mut d = HEARTBEAT_PREFIX.to_vec();
            d.extend_from_slice(&[131, 116, 0, 0, 0, 1]);
            d.extend(rng.bytes(20 + i % 40));
            d
        })
        .collect();
    // Sealed with the wrong secret: the listener decrypts all of it before rejecting it.
    let wrong_secret = HeartbeatCodec::sealed(Secret::new("another cluster"));
    let garbage_wrong_secret: Vec<_> = (0..BATCH)
        .map(|i| {
            let iv: [u8; IV_LEN] = rng.bytes(IV_LEN).try_into().expect("16 bytes");
            wrong_secret.write(&node(i), iv)
        })
        .collect();
    let oversize: Vec<_> = (0..BATCH).map(|_| rng.bytes(1400)).collect();

    run(c, "plain/valid", &plain, &valid_plain);
    run(c, "plain/garbage", &plain, &garbage);
    run(c, "plain/garbage_with_prefix", &plain, &garbage_prefixed);
    run(c, "sealed/valid", &sealed, &valid_sealed);
    run(c, "sealed/garbage", &sealed, &garbage);
    run(c, "sealed/wrong_secret", &sealed, &garbage_wrong_secret);
    run(c, "sealed/oversize", &sealed, &oversize);
}

criterion_group!(open_decode, benches);
criterion_main!(open_decode);
