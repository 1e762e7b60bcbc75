//! Shared by the examples: a Gater for the cluster of `cargo xtask testbed up`.
//!
//! `GATER_NODES` (comma-separated, default `testbed0..2@127.0.0.1`), `GATER_COOKIE`
//! (default `testbed`), `GATER_STORE` (default `reg_gh`), `ERL_EPMD_PORT` (default 4369).

use gater_api::{Gater, GaterConfig, GaterError};

pub fn store() -> String {
    std::env::var("GATER_STORE").unwrap_or_else(|_| "reg_gh".into())
}

pub async fn connect() -> Result<Gater, GaterError> {
    let nodes = std::env::var("GATER_NODES")
        .unwrap_or_else(|_| "testbed0@127.0.0.1,testbed1@127.0.0.1,testbed2@127.0.0.1".into());
    let cookie = std::env::var("GATER_COOKIE").unwrap_or_else(|_| "testbed".into());
    let mut config = GaterConfig::new(cookie).nodes(nodes.split(',').map(str::trim));
    if let Some(port) = std::env::var("ERL_EPMD_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
    {
        config = config.epmd_port(port);
    }
    let gater = Gater::connect(config).await?;
    let status = gater.cluster_status();
    for n in &status.nodes {
        println!(
            "node {} connected={} exesdb={:?} workers={:?}",
            n.node, n.connected, n.exesdb, n.workers
        );
    }
    Ok(gater)
}
