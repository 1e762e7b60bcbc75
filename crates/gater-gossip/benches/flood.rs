//! What a flood of garbage costs the real listener (socket, Tokio task and codec), and
//! whether a valid heartbeat still gets through. Loopback only.
//!
//! `cargo bench -p gater-gossip --bench flood` sends garbage datagrams to 127.0.0.1 at a
//! paced 100,000 per second for 3 s, with a valid sealed heartbeat every 10,000, to a
//! listener that runs alone on a current-thread Tokio runtime. It prints the CPU time of
//! that runtime's thread (from `/proc/thread-self/schedstat`) as a fraction of one core.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use gater_gossip::packet::IV_LEN;
use gater_gossip::{Discovery, DiscoveryConfig, GossipConfig, HeartbeatCodec, NodeName, Secret};

const RATE: u64 = 100_000;
const SECONDS: u64 = 3;
const SECRET: &str = "dev_cluster_secret";

/// Nanoseconds the calling thread has run on a CPU (Linux).
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would run us too: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let port = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let (ready_tx, ready_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();

    let listener = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let mut discovery = Discovery::start(DiscoveryConfig {
                gossip: Some(GossipConfig {
                    port,
                    multicast_if: Some(Ipv4Addr::LOCALHOST),
                    secret: Some(Secret::new(SECRET)),
                    ..GossipConfig::default()
                }),
                ..DiscoveryConfig::default()
            })
            .expect("listener");
            let cpu0 = thread_cpu_ns();
            let t0 = Instant::now();
            let _ = ready_tx.send(());
            let mut first_seen = None;
            loop {
                tokio::select! {
                    e = discovery.recv() => {
                        if first_seen.is_none() && e.is_some() {
                            first_seen = Some(t0.elapsed());
                        }
                    }
                    () = tokio::time::sleep(Duration::from_millis(20)) => {
                        if done_rx.try_recv().is_ok() {
                            break;
                        }
                    }
                }
            }
            // Let the queue drain before reading the counters.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let wall = t0.elapsed();
            let cpu = thread_cpu_ns().zip(cpu0).map(|(a, b)| a - b);
            (discovery.counters(), wall, cpu, first_seen)
        })
    });

    ready_rx.recv().expect("listener ready");
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let valid = HeartbeatCodec::sealed(Secret::new(SECRET)).write(
        &NodeName::parse("real@127.0.0.1").expect("name"),
        [3; IV_LEN],
    );
    let garbage: Vec<Vec<u8>> = (0..64u8)
        .map(|i| {
            (0..(32 + 16 * usize::from(i % 8)))
                .map(|j| i ^ (j as u8))
                .collect()
        })
        .collect();
    let start = Instant::now();
    let mut sent = 0u64;
    for batch in 0..(RATE * SECONDS / 1000) {
        for i in 0..1000u64 {
            let n = batch * 1000 + i;
            let d = if n % 10_000 == 5_000 {
                &valid
            } else {
                &garbage[(n % 64) as usize]
            };
            if socket.send_to(d, target).is_ok() {
                sent += 1;
            }
        }
        // Pace to RATE: batch k must not start before k ms.
        let due = start + Duration::from_millis(batch + 1);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let send_time = start.elapsed();
    let _ = done_tx.send(());
    let (counters, wall, cpu, first_seen) = listener.join().expect("listener thread");
    let read = counters.accepted + counters.rejected_total();
    println!(
        "flood: sent {sent} datagrams in {send_time:?} ({:.0}/s)",
        sent as f64 / send_time.as_secs_f64()
    );
    println!(
        "flood: listener read {read} ({} accepted, {} rejected), {:.1}% lost in the kernel",
        counters.accepted,
        counters.rejected_total(),
        100.0 * (sent.saturating_sub(read)) as f64 / sent as f64
    );
    if let Some(cpu) = cpu {
        let cpu = Duration::from_nanos(cpu);
        println!(
            "flood: listener thread CPU {cpu:?} over {wall:?} = {:.1}% of one core; {:.2} µs per datagram",
            100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / read.max(1) as f64
        );
    }
    println!("flood: valid heartbeat first seen after {first_seen:?}");
}
