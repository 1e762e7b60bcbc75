//! Regression test for a bug found by the `http_json` fuzz target: JSON
//! `{"$int": "<2500+ digits>"}` maps to a bignum past gater-term's default 1024-byte
//! decode limit. The daemon accepts and stores it, then can no longer decode what the
//! cluster sends back: the stream (or the store's subscription list) answers 502
//! `decode` to every client from then on. Fixed: the daemon now refuses such a body with
//! 400 naming the field.

use gater_chaos::Daemon;
use gater_testkit::testbed::{Testbed, TestbedConfig};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_bignum_past_the_decode_limit_is_refused_not_stored() {
    let tb = Testbed::start(TestbedConfig {
        nodes: 1,
        stores: vec!["reg_gh".into()],
        workers_per_store: 1,
        cookie: format!("bignum_{}", std::process::id()),
        name_prefix: "bignum".into(),
        lag_ms: 0,
        gossip: None,

        ..TestbedConfig::default()
    })
    .expect("testbed");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut d = Daemon::start(&tb, &[], &dir.path().join("daemon.log")).expect("daemon");
    d.wait_ready(Duration::from_secs(30)).await.expect("ready");
    let http = reqwest::Client::new();
    let digits = "9".repeat(2600);

    let ev = serde_json::json!({"events": [{"event_type": "T", "data": {"k": {"$int": digits}}}]});
    let r = http
        .post(format!("{}/v1/stores/reg_gh/streams/big/events", d.url()))
        .json(&ev)
        .send()
        .await
        .expect("append");
    // Today: 200 {"version":0}, and the read below answers 502 decode.
    assert_eq!(r.status(), 400, "an undecodable-to-us bignum is refused");
    let r = http
        .get(format!("{}/v1/stores/reg_gh/streams/big/events", d.url()))
        .send()
        .await
        .expect("read");
    assert_eq!(r.status(), 200, "the stream stays readable");

    let sub = serde_json::json!({"type": "by_event_pattern", "selector": {"k": {"$int": digits}}, "name": "big"});
    let r = http
        .post(format!("{}/v1/stores/reg_gh/subscriptions", d.url()))
        .json(&sub)
        .send()
        .await
        .expect("subscribe");
    // Today: 504 not_confirmed, and the list below answers 502 decode.
    assert_eq!(r.status(), 400);
    let r = http
        .get(format!("{}/v1/stores/reg_gh/subscriptions", d.url()))
        .send()
        .await
        .expect("list");
    assert_eq!(
        r.status(),
        200,
        "the store's subscription list stays readable"
    );
}
