//! The static list and EPMD hosts, merged into the same event stream as gossip.

use std::time::Duration;

use gater_gossip::{
    Discovery, DiscoveryConfig, DiscoveryEvent, EpmdConfig, NodeName, Source, epmd,
};
use gater_testkit::erl::{Epmd, ErlNode, NodeSpec, unique_name};

const WAIT: Duration = Duration::from_secs(20);

async fn next(discovery: &mut Discovery) -> DiscoveryEvent {
    tokio::time::timeout(WAIT, discovery.recv())
        .await
        .unwrap_or_else(|_| panic!("no event within {WAIT:?}"))
        .expect("channel open")
}

#[tokio::test]
async fn static_nodes_are_reported_once_and_never_gone() {
    let config = DiscoveryConfig::from_env_with(
        |k| (k == "EX_ESDB_GATER_CONNECT_TO").then(|| "a@h1,b@h2".to_owned()),
        |_| Err(std::io::ErrorKind::NotFound.into()),
    )
    .expect("config");
    let mut discovery = Discovery::start(DiscoveryConfig {
        gossip: None,
        gone_after: Duration::from_millis(1),
        ..config
    })
    .expect("starts");
    let mut seen = Vec::new();
    for _ in 0..2 {
        match next(&mut discovery).await {
            DiscoveryEvent::NodeSeen {
                node,
                source: Source::Static,
            } => seen.push(node.to_string()),
            other => panic!("unexpected {other:?}"),
        }
    }
    seen.sort();
    assert_eq!(seen, ["a@h1", "b@h2"]);
    // With no source left and nothing that can expire, the stream ends.
    assert_eq!(
        tokio::time::timeout(WAIT, discovery.recv())
            .await
            .expect("ends"),
        None
    );
}

#[tokio::test]
async fn nodes_registered_with_an_epmd_host_are_seen_then_gone() {
    let epmd_server = match Epmd::start() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("skipped: {e}");
            return;
        }
    };
    let name = unique_name("epmd_src");
    let mut erl_node = ErlNode::start(&epmd_server, NodeSpec::new(&name, "cookie").eval("ok"))
        .expect("erl node starts");
    let expected = NodeName::parse(erl_node.name()).expect("node name");

    // The pure client first.
    let names = epmd::names("127.0.0.1", epmd_server.port(), WAIT)
        .await
        .expect("EPMD answers");
    assert!(names.iter().any(|(n, _)| *n == name), "{names:?}");

    let mut epmd_config = EpmdConfig::new(vec!["127.0.0.1".into()]);
    epmd_config.port = epmd_server.port();
    epmd_config.interval = Duration::from_millis(100);
    let mut discovery = Discovery::start(DiscoveryConfig {
        gossip: None,
        epmd: Some(epmd_config),
        gone_after: Duration::from_millis(1500),
        ..DiscoveryConfig::default()
    })
    .expect("starts");

    match next(&mut discovery).await {
        DiscoveryEvent::NodeSeen {
            node,
            source: Source::Epmd { host, port },
        } => {
            assert_eq!(node, expected);
            assert_eq!((host.as_str(), port), ("127.0.0.1", epmd_server.port()));
        }
        other => panic!("unexpected {other:?}"),
    }

    // The node stops: EPMD forgets it, and it is gone after `gone_after`.
    erl_node.kill();
    match next(&mut discovery).await {
        DiscoveryEvent::NodeGone { node, .. } => assert_eq!(node, expected),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn an_unreachable_epmd_host_is_an_error_not_a_hang() {
    // A port nothing listens on (bound and released).
    let port = gater_testkit::erl::free_tcp_port();
    let err = epmd::names("127.0.0.1", port, Duration::from_secs(2))
        .await
        .expect_err("nothing listens");
    assert!(err.to_string().contains(&port.to_string()), "{err}");
}
