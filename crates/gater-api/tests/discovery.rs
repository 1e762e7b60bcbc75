//! Connecting through libcluster gossip instead of a node list.

mod common;
use common::*;
use gater_api::{DiscoveryConfig, Gater, GaterConfig};
use gater_testkit::testbed::{GossipConfig, Testbed, TestbedConfig};
use std::net::Ipv4Addr;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_discovery_finds_every_node_and_its_workers() {
    let port = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|s| s.local_addr())
        .expect("a free port")
        .port();
    let tb = Testbed::start(TestbedConfig {
        name_prefix: "apigossip".into(),
        gossip: Some(GossipConfig {
            secret: Some("api-test-secret".into()),
            interval_ms: (20, 200),
            ..GossipConfig::on_port(port)
        }),
        ..TestbedConfig::default()
    })
    .expect("testbed");
    let mut config = GaterConfig::new(tb.cookie())
        .epmd_port(tb.epmd_port())
        .discovery(DiscoveryConfig {
            gossip: Some(gater_gossip::GossipConfig {
                port,
                multicast_if: Some(Ipv4Addr::LOCALHOST),
                secret: Some(gater_gossip::Secret::new("api-test-secret")),
                ..gater_gossip::GossipConfig::default()
            }),
            ..DiscoveryConfig::default()
        });
    config.refresh_interval = Duration::from_millis(500);
    config.startup_timeout = Duration::from_secs(1);
    let g = bounded(Gater::connect(config), 10).await.expect("connect");
    let nodes = tb.node_names();
    eventually(15, || {
        let s = g.cluster_status();
        nodes.iter().all(|n| {
            s.nodes.iter().any(|i| {
                &i.node == n
                    && i.connected
                    && i.exesdb == Some(true)
                    && i.workers.get(STORE) == Some(&2)
            })
        })
    })
    .await;
    assert_eq!(g.get_version(STORE, "gossip").await.expect("version"), -1);
}
