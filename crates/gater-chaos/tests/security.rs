//! Security promises, checked on the real daemon against a real testbed:
//! a wrong cookie and a wrong gossip secret never connect, a token for one store never
//! reaches another, and no secret ever appears in the daemon's log (each test greps the
//! log it captured).
//!
//! Needs the daemon binary (`cargo build -p exesdb-gater`, or `EXESDB_GATER_BIN`).

use gater_chaos::Daemon;
use gater_testkit::testbed::{GossipConfig, Testbed, TestbedConfig};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

fn testbed(prefix: &str, stores: &[&str], gossip: Option<GossipConfig>) -> Testbed {
    Testbed::start(TestbedConfig {
        nodes: if gossip.is_some() { 1 } else { 2 },
        stores: stores.iter().map(|s| (*s).to_owned()).collect(),
        workers_per_store: 1,
        cookie: format!("sec_cookie_{}", std::process::id()),
        name_prefix: prefix.into(),
        lag_ms: 0,
        gossip,

        ..TestbedConfig::default()
    })
    .expect("testbed starts")
}

fn log_path(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let p = dir.path().join(format!("{name}.log"));
    (dir, p)
}

/// Waits (bounded) until the daemon's log holds `n` lines containing `needle`.
async fn await_log_lines(d: &Daemon, needle: &str, n: usize, within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let count = d.log_text().lines().filter(|l| l.contains(needle)).count();
        if count >= n || Instant::now() > deadline {
            return count;
        }
        // The log file is the daemon's only report of these attempts.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn ready_status(d: &Daemon) -> u16 {
    reqwest::get(format!("{}/health/ready", d.url()))
        .await
        .expect("ready answers")
        .status()
        .as_u16()
}

fn assert_not_in_log(d: &Daemon, secrets: &[&str]) {
    let log = d.log_text();
    assert!(!log.is_empty(), "the daemon logged something");
    for s in secrets {
        assert!(
            !log.contains(s),
            "secret {s:?} appears in the daemon's log:\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_cookie_never_connects_and_no_cookie_is_logged() {
    let tb = testbed("seccookie", &["reg_gh"], None);
    let wrong = format!("wrong_cookie_{}_x", std::process::id());
    let (_dir, log) = log_path("wrong-cookie");
    let d = Daemon::start(&tb, &[("EX_ESDB_COOKIE", &wrong)], &log).expect("daemon");
    // Every node refuses the handshake, again and again (back-off).
    let failures = await_log_lines(
        &d,
        "connection attempt failed",
        2 * tb.node_names().len(),
        Duration::from_secs(20),
    )
    .await;
    assert!(
        failures >= 2 * tb.node_names().len(),
        "attempts logged: {failures}"
    );
    let text = d.log_text();
    assert!(
        text.lines().any(|l| l.contains("connection attempt failed") && l.to_lowercase().contains("cookie")),
        "the refusal names the cookie as the cause:\n{text}"
    );
    assert!(!text.contains("node up"), "no node ever came up:\n{text}");
    assert_eq!(ready_status(&d).await, 503);
    assert_not_in_log(&d, &[&wrong, tb.cookie()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_gossip_secret_never_connects_and_no_secret_is_logged() {
    // Sealed heartbeats from the testbed node to 127.0.0.1:<port> every 20..60 ms.
    let port = gater_testkit::erl::free_tcp_port();
    let right = format!("right_gossip_secret_{}", std::process::id());
    let gossip = GossipConfig {
        port,
        addr: Ipv4Addr::LOCALHOST,
        secret: Some(right.clone()),
        interval_ms: (20, 60),
    };
    let tb = testbed("secgossip", &["reg_gh"], Some(gossip));
    let wrong = format!("wrong_gossip_secret_{}", std::process::id());
    let env = |secret: &str| -> Vec<(&'static str, String)> {
        vec![
            ("EX_ESDB_COOKIE", tb.cookie().to_owned()),
            ("ERL_EPMD_PORT", tb.epmd_port().to_string()),
            ("EX_ESDB_GATER_GOSSIP", "true".into()),
            ("EX_ESDB_CLUSTER_PORT", port.to_string()),
            ("EX_ESDB_CLUSTER_SECRET", secret.to_owned()),
            // Loopback only: no multicast membership on a real interface.
            ("EX_ESDB_CLUSTER_INTERFACE", "127.0.0.1".into()),
            ("EX_ESDB_GATER_GOSSIP_BROADCAST_ONLY", "true".into()),
            ("EX_ESDB_GOSSIP_MULTICAST_ADDR", "127.255.255.255".into()),
            ("LOG_LEVEL", "gater_gossip=trace,info".into()),
        ]
    };
    // The wrong secret: every heartbeat is rejected, no node is ever seen.
    let (_dir, log) = log_path("wrong-secret");
    let d = Daemon::start_with_env(&env(&wrong), &log).expect("daemon");
    let rejected = await_log_lines(&d, "datagram rejected", 20, Duration::from_secs(20)).await;
    assert!(
        rejected >= 20,
        "heartbeats reached the daemon and were rejected: {rejected}\n{}",
        d.log_text()
    );
    let text = d.log_text();
    assert!(
        !text.contains("node seen"),
        "no node seen with the wrong secret:\n{text}"
    );
    assert!(
        !text.contains("node up"),
        "no connection with the wrong secret"
    );
    assert_eq!(ready_status(&d).await, 503);
    assert_not_in_log(&d, &[&wrong, &right, tb.cookie()]);
    drop(d);

    // Control: the same set-up with the right secret connects (so the refusal above was
    // the secret's doing).
    let (_dir2, log2) = log_path("right-secret");
    let mut d = Daemon::start_with_env(&env(&right), &log2).expect("daemon");
    d.wait_ready(Duration::from_secs(30))
        .await
        .expect("ready with the right secret");
    assert_not_in_log(&d, &[&wrong, &right, tb.cookie()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_one_store_never_reaches_another_and_no_token_is_logged() {
    let tb = testbed("sectoken", &["store_a", "store_b"], None);
    let secret = format!("auth_secret_{}_0123456789abcdef", std::process::id());
    let issue = |store: &str, ops: &str| -> String {
        let out = Command::new(gater_chaos::daemon::binary().expect("daemon binary"))
            .args([
                "token", "issue", "--store", store, "--ops", ops, "--ttl", "1h",
            ])
            .env("EX_ESDB_GATER_AUTH_SECRET", &secret)
            .output()
            .expect("token issue runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let token_a = issue("store_a", "read,append,subscribe,snapshot");
    let (_dir, log) = log_path("tokens");
    let mut d = Daemon::start(
        &tb,
        &[
            ("EX_ESDB_GATER_AUTH_SECRET", &secret),
            ("LOG_LEVEL", "debug"),
        ],
        &log,
    )
    .expect("daemon");
    d.wait_ready(Duration::from_secs(30)).await.expect("ready");
    let http = reqwest::Client::new();
    let body =
        serde_json::json!({"events": [{"event_type": "T", "data": {"x": 1}, "event_id": "sec-1"}]});
    let append = |store: &str| format!("{}/v1/stores/{store}/streams/sec-s/events", d.url());

    // Store A: allowed.
    let r = http
        .post(append("store_a"))
        .bearer_auth(&token_a)
        .json(&body)
        .send()
        .await
        .expect("a");
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    // Store B, every route family: refused before reaching the cluster.
    let routes = [
        http.post(append("store_b")).json(&body),
        http.get(append("store_b")),
        http.get(format!(
            "{}/v1/stores/store_b/streams/sec-s/version",
            d.url()
        )),
        http.get(format!("{}/v1/stores/store_b/streams", d.url())),
        http.get(format!("{}/v1/stores/store_b/subscriptions", d.url())),
        http.get(format!("{}/v1/stores/store_b/snapshots", d.url())),
        http.get(format!("{}/v1/cluster/nodes", d.url())),
    ];
    for rb in routes {
        let r = rb.bearer_auth(&token_a).send().await.expect("b");
        assert_eq!(r.status(), 403, "store_b with store_a's token");
    }
    // The listing shows only store A.
    let r = http
        .get(format!("{}/v1/stores", d.url()))
        .bearer_auth(&token_a)
        .send()
        .await
        .expect("list");
    let text = r.text().await.expect("body");
    assert!(
        text.contains("store_a") && !text.contains("store_b"),
        "{text}"
    );
    // Nothing reached store B's log.
    let b_events = tb.stored_events(0, "store_b").expect("store_b log");
    assert!(b_events.is_empty(), "store_b got {b_events:?}");
    // A forged token (store changed, MAC kept) is refused as invalid.
    let forged = token_a.replacen("store_a", "store_b", 1);
    let r = http
        .get(append("store_b"))
        .bearer_auth(&forged)
        .send()
        .await
        .expect("forged");
    assert!(matches!(r.status().as_u16(), 401 | 403), "{}", r.status());
    assert_not_in_log(&d, &[&secret, &token_a, tb.cookie()]);
}
