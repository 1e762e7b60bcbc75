//! Server-Sent Events delivery and resume, readiness following the cluster, and graceful
//! shutdown with requests and streams in flight.

mod common;
use common::*;

use std::time::Duration;

use gater_http::Limits;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_delivers_appended_events_and_resumes_after_last_event_id() {
    let tb = testbed("httpsse");
    let g = gater(&tb).await;
    let mut srv = Server::start(g, true, Limits::default()).await;
    let c = client();
    let t = admin_token();
    let subs = srv.url(&format!("/v1/stores/{STORE}/subscriptions"));
    let (s, b) = send(c.post(&subs).bearer_auth(&t).json(
        &json!({"type": "by_stream", "selector": "$sse-1", "name": "sse-sub", "start_from": 0}),
    ))
    .await;
    assert_eq!(s, 201, "{b}");

    let events_url = srv.url(&format!("/v1/stores/{STORE}/subscriptions/sse-sub/events"));
    let resp = c
        .get(&events_url)
        .bearer_auth(&t)
        .send()
        .await
        .expect("sse");
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/event-stream")
    );
    let mut sse = SseReader::new(resp);
    let append = srv.url(&format!("/v1/stores/{STORE}/streams/sse-1/events"));
    let (s, b) = send(c.post(&append).bearer_auth(&t).json(&json!({"events": [
        {"event_type": "A", "data": {"i": 0}}, {"event_type": "B", "data": {"i": 1}}, {"event_type": "C", "data": {"i": 2}}
    ]}))).await;
    assert_eq!((s, b["version"].as_i64()), (200, Some(2)), "{b}");
    for i in 0..3 {
        let f = sse.next_event(15).await;
        assert_eq!(f.id.as_deref(), Some(i.to_string().as_str()));
        let rec: Value = serde_json::from_str(&f.data).expect("json");
        assert_eq!(
            (
                rec["event_stream_id"].as_str(),
                rec["event_number"].as_i64()
            ),
            (Some("sse-1"), Some(i))
        );
        assert_eq!(rec["data"]["i"].as_i64(), Some(i));
        assert!(rec["created"].is_string() && rec["created_epoch"].is_i64());
    }
    assert_eq!(srv.api.sse_streams(), 1);
    drop(sse);
    eventually(5, || srv.api.sse_streams() == 0).await;

    // While nobody listens, two more events; the client comes back with Last-Event-ID: 2.
    let (s, _) = send(c.post(&append).bearer_auth(&t).json(&json!({"events": [
        {"event_type": "D", "data": {"i": 3}}, {"event_type": "E", "data": {"i": 4}}
    ]})))
    .await;
    assert_eq!(s, 200);
    let resp = c
        .get(&events_url)
        .bearer_auth(&t)
        .header("Last-Event-ID", "2")
        .send()
        .await
        .expect("sse");
    assert_eq!(resp.status(), 200);
    let mut sse = SseReader::new(resp);
    for i in 3..5 {
        let f = sse.next_event(15).await;
        assert_eq!(
            f.id.as_deref(),
            Some(i.to_string().as_str()),
            "resumed at the next event, none repeated"
        );
    }
    // And live ones after the catch-up.
    let (s, _) = send(
        c.post(&append)
            .bearer_auth(&t)
            .json(&json!({"events": [{"event_type": "F", "data": {"i": 5}}]})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(sse.next_event(15).await.id.as_deref(), Some("5"));

    // Ack moves a persistent subscription on.
    let ack = srv.url(&format!("/v1/stores/{STORE}/subscriptions/sse-sub/ack"));
    let (s, b) = send(
        c.post(&ack)
            .bearer_auth(&t)
            .json(&json!({"event_stream_id": "sse-1", "event_number": 5})),
    )
    .await;
    assert_eq!(s, 204, "{b}");
    let (_, b) = send(c.get(&subs).bearer_auth(&t)).await;
    let mine = b["subscriptions"]
        .as_array()
        .expect("list")
        .iter()
        .find(|s| s["name"] == "sse-sub")
        .cloned()
        .expect("listed");
    assert!(
        mine["start_from"].as_i64().is_some_and(|n| n >= 6),
        "{mine}"
    );
    let (s, b) = send(
        c.post(&ack)
            .bearer_auth(&t)
            .json(&json!({"event_stream_id": "sse-1", "event_number": 99})),
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (404, Some("event_not_found")));

    // Unknown subscription, bad Last-Event-ID.
    let (s, b) = send(
        c.get(srv.url(&format!("/v1/stores/{STORE}/subscriptions/nope/events")))
            .bearer_auth(&t),
    )
    .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (404, Some("subscription_not_found"))
    );
    let (s, b) = send(
        c.get(&events_url)
            .bearer_auth(&t)
            .header("Last-Event-ID", "x"),
    )
    .await;
    assert_eq!((s, b["field"].as_str()), (400, Some("Last-Event-ID")));

    // Shutdown ends the open stream with `event: shutdown`.
    srv.begin_stop();
    let end = bounded(
        async {
            loop {
                match sse.next().await {
                    Some(f) if f.event == "shutdown" => return Some(f),
                    Some(_) => continue,
                    None => return None,
                }
            }
        },
        10,
    )
    .await;
    assert!(end.is_some(), "stream ended without a shutdown event");
    assert!(
        sse.next().await.is_none(),
        "nothing after the shutdown event"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_cluster_away_and_back() {
    let tb = testbed("httpready");
    let g = gater(&tb).await;
    let limits = Limits {
        request_timeout: Duration::from_secs(3),
        ..Limits::default()
    };
    let mut srv = Server::start(g, false, limits).await;
    let c = client();
    let ready = || async { send(c.get(srv.url("/health/ready"))).await };
    assert_eq!(ready().await.0, 200);

    for i in 0..3 {
        tb.kill_node(i);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let body = loop {
        let (s, b) = ready().await;
        if s == 503 {
            break b;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still ready with every node dead"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(body["error"], "not_ready");
    assert_eq!(body["exesdb_nodes_connected"], 0);
    assert_eq!(
        send(c.get(srv.url("/health/live"))).await.0,
        200,
        "liveness does not depend on the cluster"
    );
    // A request now fails fast with a typed error instead of hanging.
    let started = std::time::Instant::now();
    let (s, b) = send(c.get(srv.url(&format!("/v1/stores/{STORE}/streams/x/version")))).await;
    assert!((502..=504).contains(&s), "{s} {b}");
    assert!(b["error"].is_string() && b["message"].is_string());
    assert!(started.elapsed() < Duration::from_secs(10));
    let text = c
        .get(srv.url("/metrics"))
        .send()
        .await
        .expect("m")
        .text()
        .await
        .expect("t");
    assert!(text.contains("gater_ready 0"));

    for i in 0..3 {
        tb.restart_node(i).expect("restart");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        let (s, _) = ready().await;
        if s == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not ready again after the nodes came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (s, b) = send(
        c.post(srv.url(&format!("/v1/stores/{STORE}/streams/back/events")))
            .json(&json!({"events": [{"event_type": "Back"}]})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_requests_and_refuses_new_ones() {
    let tb = testbed("httpstop");
    let g = gater(&tb).await;
    let mut srv = Server::start(g, false, Limits::default()).await;
    let c = client();
    // Every worker answers after 800 ms, so requests are in flight when shutdown begins.
    for i in 0..3 {
        tb.slow_workers(i, STORE, 800).expect("slow");
    }
    let url = srv.url(&format!("/v1/stores/{STORE}/streams/inflight/events"));
    let (tx, mut started) = tokio::sync::mpsc::channel::<()>(8);
    let inflight: Vec<_> = (0..4)
        .map(|i| {
            let (c, url, tx) = (c.clone(), url.clone(), tx.clone());
            tokio::spawn(async move {
                let req = c
                    .post(&url)
                    .json(&json!({"events": [{"event_type": "InFlight", "data": {"i": i}}]}));
                let fut = req.send();
                let _ = tx.send(()).await;
                let resp = fut.await.expect("in-flight request answered");
                (
                    resp.status().as_u16(),
                    resp.json::<Value>().await.unwrap_or(Value::Null),
                )
            })
        })
        .collect();
    for _ in 0..4 {
        started.recv().await.expect("started");
    }
    // Shut down once all four calls have reached the cluster (the pool's in-flight gauge).
    let base = srv.base.clone();
    wait_in_flight(&c, &base, 4).await;
    srv.begin_stop();
    for h in inflight {
        let (s, b) = bounded(h, 15).await.expect("join");
        assert_eq!(s, 200, "an in-flight request was cut off: {b}");
    }
    bounded(async { srv.stop().await }, 15).await;
    // New connections are refused once the server is down.
    let e = c
        .get(format!("{base}/health/live"))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(e.is_err(), "still accepting after shutdown");
}

/// Waits until the gateway has `want` calls to workers outstanding (pool in-flight gauge).
async fn wait_in_flight(c: &reqwest::Client, base: &str, want: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = c
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("m")
            .text()
            .await
            .expect("t");
        let n: i64 = text
            .lines()
            .find_map(|l| l.strip_prefix("gater_pool_calls_in_flight "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if n >= want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no call went in flight"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
