//! The gossip shell on real sockets, loopback only.
//!
//! Network safety: every datagram of these tests goes to 127.0.0.1, to 127.255.255.255
//! (sockets bound to 0.0.0.0) or to the multicast group with `IP_MULTICAST_IF` = 127.0.0.1,
//! TTL 1 and the group joined on 127.0.0.1 only. [`loopback_only`] checks every config
//! before it is started. Each test has its own free UDP port.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use gater_gossip::packet::IV_LEN;
use gater_gossip::{
    Discovery, DiscoveryConfig, DiscoveryEvent, GossipConfig, HeartbeatCodec, NodeName, Rejection,
    Secret, SenderConfig, Source,
};

const GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 0, 1);
const LOOPBACK_BROADCAST: Ipv4Addr = Ipv4Addr::new(127, 255, 255, 255);
/// libcluster's longest interval between two heartbeats.
const HEARTBEAT_PERIOD: Duration = Duration::from_millis(5000);
/// Scheduling slack on a busy 2-core CI machine.
const SLACK: Duration = Duration::from_millis(2000);

fn free_udp_port() -> u16 {
    UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free UDP port")
}

fn node(s: &str) -> NodeName {
    NodeName::parse(s).expect("valid node name")
}

/// Multicast on loopback: bound to 0.0.0.0, interface 127.0.0.1, TTL 1, loop on.
fn multicast(port: u16, secret: Option<&str>) -> GossipConfig {
    GossipConfig {
        bind_addr: Ipv4Addr::UNSPECIFIED,
        port,
        multicast_addr: GROUP,
        multicast_if: Some(Ipv4Addr::LOCALHOST),
        multicast_ttl: 1,
        multicast_loop: true,
        broadcast_only: false,
        secret: secret.map(Secret::new),
        sender: None,
        ignore_node: None,
    }
}

/// Broadcast to 127.255.255.255 from sockets bound to 0.0.0.0.
fn broadcast(port: u16, secret: Option<&str>) -> GossipConfig {
    GossipConfig {
        multicast_addr: LOOPBACK_BROADCAST,
        broadcast_only: true,
        multicast_if: None,
        ..multicast(port, secret)
    }
}

fn sending(mut config: GossipConfig, name: &str, interval_ms: (u64, u64)) -> GossipConfig {
    let mut sender = SenderConfig::new(node(name));
    sender.min_interval = Duration::from_millis(interval_ms.0);
    sender.max_interval = Duration::from_millis(interval_ms.1);
    config.sender = Some(sender);
    config
}

/// Refuses any config that could put a datagram on a real network.
fn loopback_only(g: &GossipConfig) {
    if g.broadcast_only {
        assert_eq!(g.multicast_addr, LOOPBACK_BROADCAST);
    } else {
        assert!(g.multicast_addr.is_multicast());
        assert_eq!(g.multicast_if, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(g.multicast_ttl, 1);
    }
}

fn start(gossip: GossipConfig) -> Discovery {
    loopback_only(&gossip);
    Discovery::start(DiscoveryConfig {
        gossip: Some(gossip),
        ..DiscoveryConfig::default()
    })
    .expect("discovery starts")
}

/// Waits for `NodeSeen` of every node in `want`, failing on any other node or after `within`.
async fn expect_seen(discovery: &mut Discovery, want: &[&str], within: Duration) {
    let mut missing: Vec<&str> = want.to_vec();
    let deadline = tokio::time::Instant::now() + within;
    while !missing.is_empty() {
        let event = tokio::time::timeout_at(deadline, discovery.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "not seen within {within:?}: {missing:?}; counters {:?}",
                    discovery.counters()
                )
            })
            .expect("event channel open");
        match event {
            DiscoveryEvent::NodeSeen { node, source } => {
                assert!(matches!(source, Source::Gossip { .. }), "{source:?}");
                let pos = missing
                    .iter()
                    .position(|m| *m == node.as_str())
                    .unwrap_or_else(|| panic!("unexpected node {node}"));
                missing.remove(pos);
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
}

#[tokio::test]
async fn multicast_listener_discovers_every_sender_within_one_heartbeat_period() {
    let port = free_udp_port();
    let mut listener = start(multicast(port, Some("cluster-secret")));
    // libcluster's own interval: the first heartbeat goes out at once, the next within 5 s.
    let _a = start(sending(
        multicast(port, Some("cluster-secret")),
        "ex_esdb0@127.0.0.1",
        (1, 5000),
    ));
    let _b = start(sending(
        multicast(port, Some("cluster-secret")),
        "ex_esdb1@127.0.0.1",
        (1, 5000),
    ));
    expect_seen(
        &mut listener,
        &["ex_esdb0@127.0.0.1", "ex_esdb1@127.0.0.1"],
        HEARTBEAT_PERIOD + SLACK,
    )
    .await;
    let counters = listener.counters();
    assert!(counters.accepted >= 2, "{counters:?}");
}

#[tokio::test]
async fn broadcast_listener_discovers_plain_senders() {
    let port = free_udp_port();
    let mut listener = start(broadcast(port, None));
    let _a = start(sending(
        broadcast(port, None),
        "plain0@127.0.0.1",
        (1, 5000),
    ));
    expect_seen(
        &mut listener,
        &["plain0@127.0.0.1"],
        HEARTBEAT_PERIOD + SLACK,
    )
    .await;
}

#[tokio::test]
async fn senders_with_a_wrong_secret_are_never_reported() {
    let port = free_udp_port();
    let mut listener = start(multicast(port, Some("right")));
    let _wrong = start(sending(
        multicast(port, Some("wrong")),
        "intruder@127.0.0.1",
        (5, 20),
    ));
    let _plain = start(sending(multicast(port, None), "plain@127.0.0.1", (5, 20)));
    let _right = start(sending(
        multicast(port, Some("right")),
        "member@127.0.0.1",
        (200, 400),
    ));
    expect_seen(
        &mut listener,
        &["member@127.0.0.1"],
        HEARTBEAT_PERIOD + SLACK,
    )
    .await;
    // Wait (bounded) until many wrong heartbeats have been read and rejected...
    let deadline = tokio::time::Instant::now() + HEARTBEAT_PERIOD + SLACK;
    loop {
        let c = listener.counters();
        let rejected = c.rejected(Rejection::BadPadding)
            + c.rejected(Rejection::NoPrefix)
            + c.rejected(Rejection::NotBlockAligned);
        if rejected >= 40 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{c:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...and none of them became an event.
    if let Ok(event) = listener.events().try_recv() {
        panic!("unexpected event {event:?}");
    }
}

#[tokio::test]
async fn a_flood_of_garbage_does_not_hide_a_valid_heartbeat() {
    let port = free_udp_port();
    let mut listener = start(multicast(port, Some("s")));
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let valid =
        HeartbeatCodec::sealed(Secret::new("s")).write(&node("real@127.0.0.1"), [9; IV_LEN]);
    // 50,000 garbage datagrams of every kind, one valid heartbeat after every 5,000.
    let flood = std::thread::spawn(move || {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let garbage: [&[u8]; 5] = [
            &[0u8; 64],
            &[0xAB; 47],
            &[0x55; 1400],
            b"heartbeat::\x83t\x00\x00\x00\x01w\x04node",
            &[1, 2, 3],
        ];
        let mut sent = 0u64;
        for i in 0..50_000usize {
            if socket.send_to(garbage[i % garbage.len()], target).is_ok() {
                sent += 1;
            }
            if i % 5_000 == 4_999 {
                let _ = socket.send_to(&valid, target);
            }
        }
        sent
    });
    expect_seen(&mut listener, &["real@127.0.0.1"], Duration::from_secs(10)).await;
    let sent = tokio::task::spawn_blocking(move || flood.join().expect("flood thread"))
        .await
        .expect("join");
    let c = listener.counters();
    assert!(sent > 0 && c.rejected_total() > 0, "{c:?}");
    for reason in [
        Rejection::Oversize,
        Rejection::BadPadding,
        Rejection::TooShort,
    ] {
        assert!(c.rejected(reason) > 0, "{reason:?} not counted: {c:?}");
    }
}

#[tokio::test]
async fn own_heartbeats_are_ignored_and_each_node_is_reported_once() {
    let port = free_udp_port();
    let mut both = start(sending(multicast(port, None), "self@127.0.0.1", (5, 20)));
    let _other = start(sending(multicast(port, None), "other@127.0.0.1", (5, 20)));
    expect_seen(&mut both, &["other@127.0.0.1"], HEARTBEAT_PERIOD + SLACK).await;
    // Many heartbeats later, still exactly one event.
    let deadline = tokio::time::Instant::now() + HEARTBEAT_PERIOD;
    while both.counters().accepted < 30 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            both.counters()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(both.events().try_recv().is_err());
}

#[test]
fn socket_options_are_those_of_libcluster() {
    let port = free_udp_port();
    let config = multicast(port, None);
    let a = gater_gossip::runtime::gossip_socket(&config).expect("first socket");
    // SO_REUSEADDR + SO_REUSEPORT: a second process (an ExESDB node) can share the port.
    let b = gater_gossip::runtime::gossip_socket(&config).expect("second socket shares the port");
    let sock = socket2::SockRef::from(&a);
    assert!(sock.reuse_address().expect("SO_REUSEADDR"));
    assert!(sock.reuse_port().expect("SO_REUSEPORT"));
    assert!(sock.broadcast().expect("SO_BROADCAST"));
    assert_eq!(sock.multicast_ttl_v4().expect("TTL"), 1);
    assert!(sock.multicast_loop_v4().expect("loop"));
    assert_eq!(sock.multicast_if_v4().expect("IF"), Ipv4Addr::LOCALHOST);
    assert_eq!(
        a.local_addr().expect("addr"),
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))
    );
    drop(b);
}

#[test]
fn start_outside_a_runtime_is_an_error() {
    let err = Discovery::start(DiscoveryConfig {
        gossip: None,
        ..DiscoveryConfig::default()
    })
    .expect_err("no runtime");
    assert!(matches!(err, gater_gossip::Error::NoRuntime));
}

#[tokio::test]
async fn gossip_and_static_nodes_arrive_on_one_stream() {
    let port = free_udp_port();
    let gossip = multicast(port, Some("s"));
    loopback_only(&gossip);
    let mut discovery = Discovery::start(DiscoveryConfig {
        gossip: Some(gossip),
        static_nodes: vec![node("pinned@10.9.9.9")],
        ..DiscoveryConfig::default()
    })
    .expect("starts");
    let _sender = start(sending(
        multicast(port, Some("s")),
        "gossiped@127.0.0.1",
        (1, 5000),
    ));
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let event = tokio::time::timeout(HEARTBEAT_PERIOD + SLACK, discovery.recv())
            .await
            .expect("in time")
            .expect("open");
        match event {
            DiscoveryEvent::NodeSeen { node, source } => seen.push((node.to_string(), source)),
            other => panic!("unexpected {other:?}"),
        }
    }
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(seen[0].0, "gossiped@127.0.0.1");
    assert!(matches!(seen[0].1, Source::Gossip { from } if from.ip().is_loopback()));
    assert_eq!(seen[1], ("pinned@10.9.9.9".to_owned(), Source::Static));
}

#[tokio::test]
async fn a_multicast_listener_also_hears_broadcast_heartbeats() {
    let port = free_udp_port();
    let mut listener = start(multicast(port, Some("s")));
    let _b = start(sending(
        broadcast(port, Some("s")),
        "bcast@127.0.0.1",
        (1, 5000),
    ));
    expect_seen(
        &mut listener,
        &["bcast@127.0.0.1"],
        HEARTBEAT_PERIOD + SLACK,
    )
    .await;
}

#[tokio::test]
async fn made_up_names_cannot_grow_the_table_past_its_cap() {
    let port = free_udp_port();
    let gossip = multicast(port, None);
    loopback_only(&gossip);
    let mut discovery = Discovery::start(DiscoveryConfig {
        gossip: Some(gossip),
        max_nodes: 3,
        ..DiscoveryConfig::default()
    })
    .expect("starts");
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let codec = HeartbeatCodec::plain();
    for i in 0..50 {
        let d = codec.write(&node(&format!("fake{i}@127.0.0.1")), [0; IV_LEN]);
        socket
            .send_to(&d, (Ipv4Addr::LOCALHOST, port))
            .expect("send");
    }
    for _ in 0..3 {
        let e = tokio::time::timeout(SLACK, discovery.recv()).await;
        assert!(
            matches!(e, Ok(Some(DiscoveryEvent::NodeSeen { .. }))),
            "{e:?}"
        );
    }
    let deadline = tokio::time::Instant::now() + SLACK;
    while discovery.nodes_refused() < 47 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            discovery.nodes_refused()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(discovery.events().try_recv().is_err());
}
