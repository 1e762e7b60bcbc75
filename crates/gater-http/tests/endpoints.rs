//! Every endpoint over a real socket against a real testbed cluster, with auth on.

mod common;
use common::*;

use gater_http::{Limits, Op};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_as_documented() {
    let tb = testbed("httpall");
    let g = gater(&tb).await;
    let mut srv = Server::start(g, true, Limits::default()).await;
    let c = client();
    let admin = admin_token();
    let auth = |r: reqwest::RequestBuilder| r.bearer_auth(&admin);

    // Health and metadata need no token.
    let (s, b) = send(c.get(srv.url("/health/live"))).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("live")));
    let (s, b) = send(c.get(srv.url("/health/ready"))).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("ready")), "{b}");
    let (s, b) = send(c.get(srv.url("/v1/openapi.json"))).await;
    assert_eq!(s, 200);
    assert_eq!(b["openapi"].as_str(), Some("3.1.0"));
    assert!(b["paths"]["/v1/stores/{store}/streams/{stream}/events"].is_object());

    // Stores and nodes.
    let (s, b) = send(auth(c.get(srv.url("/v1/stores")))).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["stores"][0]["store"], STORE);
    assert_eq!(b["stores"][0]["nodes"].as_array().map(Vec::len), Some(3));
    let (s, b) = send(auth(c.get(srv.url("/v1/cluster/nodes")))).await;
    assert_eq!(s, 200, "{b}");
    let nodes = b["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 3);
    assert!(
        nodes.iter().all(|n| n["connected"] == true
            && n["exesdb"] == true
            && n["workers"][STORE].as_u64() == Some(2)),
        "{b}"
    );
    assert_eq!(
        b["stores"][0]["workers"].as_object().map(|m| m.len()),
        Some(3)
    );

    // Append, read, version, streams.
    let ev =
        |t: &str, n: i64| json!({"event_type": t, "data": {"n": n}, "metadata": {"by": "test"}});
    let url = srv.url(&format!("/v1/stores/{STORE}/streams/order-1/events"));
    let (s, b) = send(auth(c.post(&url)).json(
        &json!({"events": [ev("Created", 0), ev("Paid", 1)], "expected_version": "no_stream"}),
    ))
    .await;
    assert_eq!((s, b["version"].as_i64()), (200, Some(1)), "{b}");
    let (s, b) = send(auth(c.post(&url)).json(&json!({"events": [{"event_type": "Shipped", "data": {"n": 2}, "event_id": "0190a9f6-0000-7000-8000-000000000002"}], "expected_version": 1}))).await;
    assert_eq!((s, b["version"].as_i64()), (200, Some(2)), "{b}");
    let (s, b) =
        send(auth(c.post(&url)).json(&json!({"events": [ev("Late", 9)], "expected_version": 0})))
            .await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(b["error"], "wrong_expected_version");
    assert_eq!(b["current"].as_i64(), Some(2));
    let (s, b) = send(
        auth(c.post(srv.url(&format!("/v1/stores/{STORE}/streams/nope/events"))))
            .json(&json!({"events": [ev("X", 0)], "expected_version": "stream_exists"})),
    )
    .await;
    assert_eq!((s, b["current"].as_i64()), (409, Some(-1)), "{b}");
    let (s, b) = send(
        auth(c.post(srv.url(&format!("/v1/stores/{STORE}/streams/any-1/events"))))
            .json(&json!({"events": [ev("X", 0)]})),
    )
    .await;
    assert_eq!((s, b["version"].as_i64()), (200, Some(0)), "{b}");

    let (s, b) = send(auth(c.get(&url))).await;
    assert_eq!(s, 200, "{b}");
    let events = b["events"].as_array().expect("events");
    assert_eq!(events.len(), 3);
    let e0 = &events[0];
    assert_eq!(e0["event_stream_id"], "order-1");
    assert_eq!(e0["event_number"], 0);
    assert_eq!(e0["event_type"], "Created");
    assert_eq!(e0["data"], json!({"n": 0}));
    assert_eq!(e0["metadata"], json!({"by": "test"}));
    assert!(e0["event_id"].as_str().is_some_and(|s| s.len() == 36));
    assert!(
        e0["created"]
            .as_str()
            .is_some_and(|s| s.ends_with('Z') && s.contains('T')),
        "{e0}"
    );
    assert!(
        e0["created_epoch"]
            .as_i64()
            .is_some_and(|t| t > 1_600_000_000_000_000)
    );
    assert_eq!(
        events[2]["event_id"],
        "0190a9f6-0000-7000-8000-000000000002"
    );
    let (_, b) = send(auth(c.get(format!("{url}?from=1&count=1")))).await;
    assert_eq!(b["events"][0]["event_number"], 1);
    let (_, b) = send(auth(c.get(format!("{url}?direction=backward&count=2")))).await;
    let nums: Vec<i64> = b["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["event_number"].as_i64())
        .collect();
    assert_eq!(nums, vec![2, 1]);
    let (s, b) = send(auth(
        c.get(srv.url(&format!("/v1/stores/{STORE}/streams/missing/events"))),
    ))
    .await;
    assert_eq!((s, b["events"].as_array().map(Vec::len)), (200, Some(0)));

    let (s, b) = send(auth(
        c.get(srv.url(&format!("/v1/stores/{STORE}/streams/order-1/version"))),
    ))
    .await;
    assert_eq!((s, b["version"].as_i64()), (200, Some(2)));
    let (s, b) = send(auth(
        c.get(srv.url(&format!("/v1/stores/{STORE}/streams/missing/version"))),
    ))
    .await;
    assert_eq!((s, b["version"].as_i64()), (200, Some(-1)));
    let (s, b) = send(auth(c.get(srv.url(&format!("/v1/stores/{STORE}/streams"))))).await;
    assert_eq!(s, 200);
    let streams: Vec<&str> = b["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        streams.contains(&"order-1") && streams.contains(&"any-1"),
        "{b}"
    );

    // Snapshots.
    let snap = srv.url(&format!("/v1/stores/{STORE}/snapshots/src-1/order-1/2"));
    let (s, _) = send(auth(c.put(&snap)).json(&json!({"total": 42, "items": ["a", "b"]}))).await;
    assert_eq!(s, 204);
    let (s, b) = send(auth(c.get(&snap))).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["record"], json!({"total": 42, "items": ["a", "b"]}));
    assert_eq!(
        (b["source_uuid"].as_str(), b["version"].as_i64()),
        (Some("src-1"), Some(2))
    );
    let (s, b) = send(auth(
        c.get(srv.url(&format!("/v1/stores/{STORE}/snapshots"))),
    ))
    .await;
    assert_eq!(
        (s, b["snapshots"].as_array().map(Vec::len)),
        (200, Some(1)),
        "{b}"
    );
    let (s, b) = send(auth(
        c.get(srv.url(&format!("/v1/stores/{STORE}/snapshots?source_uuid=other"))),
    ))
    .await;
    assert_eq!(
        (s, b["snapshots"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{b}"
    );
    let (s, _) = send(auth(c.delete(&snap))).await;
    assert_eq!(s, 204);
    let (s, b) = send(auth(c.get(&snap))).await;
    assert_eq!((s, b["error"].as_str()), (404, Some("snapshot_not_found")));

    // Subscriptions: create, list, delete (SSE delivery has its own test).
    let subs = srv.url(&format!("/v1/stores/{STORE}/subscriptions"));
    let body =
        json!({"type": "by_event_type", "selector": "Paid", "name": "payments", "start_from": 0});
    let (s, b) = send(auth(c.post(&subs)).json(&body)).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(
        (b["name"].as_str(), b["persistent"].as_bool()),
        (Some("payments"), Some(true))
    );
    let (s, b) = send(auth(c.get(&subs))).await;
    assert_eq!(s, 200);
    let list = b["subscriptions"].as_array().expect("list");
    assert!(
        list.iter().any(|x| x["name"] == "payments"
            && x["type"] == "by_event_type"
            && x["selector"] == "Paid"),
        "{b}"
    );
    let (s, b) = send(auth(c.delete(&subs)).json(&body)).await;
    assert_eq!(s, 204, "{b}");
    let (_, b) = send(auth(c.get(&subs))).await;
    assert!(
        !b["subscriptions"]
            .as_array()
            .expect("list")
            .iter()
            .any(|x| x["name"] == "payments")
    );

    // Metrics: Prometheus text with the routes used, and no secret.
    let resp = c.get(srv.url("/metrics")).send().await.expect("metrics");
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/plain")
    );
    let text = resp.text().await.expect("text");
    assert!(text.contains("gater_http_requests_total{route=\"/v1/stores/{store}/streams/{stream}/events\",status=\"2xx\"}"), "{text}");
    assert!(text.contains("gater_http_requests_total{route=\"/v1/stores/{store}/streams/{stream}/events\",status=\"4xx\"} 2"));
    assert!(text.contains("gater_ready 1") && text.contains("gater_pool_calls_total"));
    for gauge in [
        "gater_pool_local_pids",
        "gater_pool_peer_monitors",
        "gater_pool_own_monitors",
        "gater_http_sse_streams",
    ] {
        assert!(
            text.contains(&format!("# HELP {gauge} "))
                && text.contains(&format!("# TYPE {gauge} gauge\n"))
                && text.lines().any(|l| l
                    .strip_prefix(&format!("{gauge} "))
                    .is_some_and(|v| v.parse::<i64>().is_ok())),
            "{gauge} missing:\n{text}"
        );
    }
    assert!(!text.contains(SECRET) && !text.contains(tb.cookie()));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_and_bad_input_are_refused_before_the_cluster() {
    let tb = testbed("httpbad");
    let g = gater(&tb).await;
    let limits = Limits {
        max_body_bytes: 4096,
        max_read_count: 50,
        ..Limits::default()
    };
    let mut srv = Server::start(g, true, limits).await;
    let c = client();
    let read_url = srv.url(&format!("/v1/stores/{STORE}/streams/s-1/events"));
    let workers_before = tb.worker_names(0).expect("workers");

    // Authentication: 401 with a kind per cause.
    let (s, b) = send(c.get(&read_url)).await;
    assert_eq!((s, b["error"].as_str()), (401, Some("missing_token")));
    for bad in ["Basic abc", "Bearer nonsense", "Bearer egt1.e30.AAAA"] {
        let (s, b) = send(c.get(&read_url).header("authorization", bad)).await;
        assert_eq!(s, 401, "{bad}: {b}");
        assert!(
            matches!(
                b["error"].as_str(),
                Some("malformed_token" | "invalid_token")
            ),
            "{b}"
        );
    }
    let expired = gater_http::TokenKey::new(SECRET).issue(
        STORE,
        &[Op::Read],
        std::time::Duration::from_secs(1),
        std::time::SystemTime::now() - std::time::Duration::from_secs(10),
    );
    let (s, b) = send(c.get(&read_url).bearer_auth(&expired)).await;
    assert_eq!((s, b["error"].as_str()), (401, Some("expired_token")));
    let other_secret = gater_http::TokenKey::new("another-secret-0123456789").issue(
        STORE,
        &Op::ALL,
        std::time::Duration::from_secs(60),
        std::time::SystemTime::now(),
    );
    let (s, b) = send(c.get(&read_url).bearer_auth(&other_secret)).await;
    assert_eq!((s, b["error"].as_str()), (401, Some("invalid_token")));

    // Authorization: 403 for another store or another operation.
    let wrong_store = token("other_store", &Op::ALL);
    let (s, b) = send(c.get(&read_url).bearer_auth(&wrong_store)).await;
    assert_eq!((s, b["error"].as_str()), (403, Some("forbidden")));
    let read_only = token(STORE, &[Op::Read]);
    let (s, _) = send(c.get(&read_url).bearer_auth(&read_only)).await;
    assert_eq!(s, 200);
    let (s, b) = send(
        c.post(&read_url)
            .bearer_auth(&read_only)
            .json(&json!({"events": [{"event_type": "X"}]})),
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (403, Some("forbidden")));
    let (s, _) = send(c.get(srv.url("/v1/cluster/nodes")).bearer_auth(&read_only)).await;
    assert_eq!(s, 403);
    let (s, _) = send(
        c.get(srv.url(&format!("/v1/stores/{STORE}/snapshots")))
            .bearer_auth(&read_only),
    )
    .await;
    assert_eq!(s, 403);
    // A store-scoped token lists only its store.
    let (s, b) = send(c.get(srv.url("/v1/stores")).bearer_auth(&wrong_store)).await;
    assert_eq!((s, b["stores"].as_array().map(Vec::len)), (200, Some(0)));

    let t = admin_token();
    let post = |body: &'static str| {
        c.post(&read_url)
            .bearer_auth(&t)
            .header("content-type", "application/json")
            .body(body)
    };
    // Bad input: 400 naming the field.
    for (body, field) in [
        ("{not json", "body"),
        ("[]", "body"),
        ("{}", "events"),
        (r#"{"events": []}"#, "events"),
        (r#"{"events": [{"data": 1}]}"#, "events[0].event_type"),
        (
            r#"{"events": [{"event_type": "X", "event_id": 7}]}"#,
            "events[0].event_id",
        ),
        (
            r#"{"events": [{"event_type": "X"}], "expected_version": -2}"#,
            "expected_version",
        ),
        (
            r#"{"events": [{"event_type": "X"}], "expected_version": "sometimes"}"#,
            "expected_version",
        ),
    ] {
        let (s, b) = send(post(body)).await;
        assert_eq!(
            (s, b["error"].as_str(), b["field"].as_str()),
            (400, Some("bad_request"), Some(field)),
            "{body}: {b}"
        );
    }
    // Values the gateway could not read back from the cluster are refused, not stored:
    // a $int bignum past the decoding limit, nesting deeper than the limit.
    let digits = "9".repeat(2600);
    let (s, b) = send(
        c.post(&read_url)
            .bearer_auth(&t)
            .json(&json!({"events": [{"event_type": "X", "data": {"k": {"$int": digits}}}]})),
    )
    .await;
    assert_eq!(
        (s, b["field"].as_str()),
        (400, Some("events[0].data")),
        "{b}"
    );
    let (s, b) = send(
        c.post(&read_url)
            .bearer_auth(&t)
            .json(&json!({"events": [{"event_type": "X", "metadata": {"$int": digits}}]})),
    )
    .await;
    assert_eq!(
        (s, b["field"].as_str()),
        (400, Some("events[0].metadata")),
        "{b}"
    );
    let deep = format!("{}1{}", "[".repeat(125), "]".repeat(125));
    let (s, b) = send(
        c.put(srv.url(&format!("/v1/stores/{STORE}/snapshots/a/b/1")))
            .bearer_auth(&t)
            .header("content-type", "application/json")
            .body(deep),
    )
    .await;
    assert_eq!((s, b["field"].as_str()), (400, Some("body")), "{b}");
    let (s, b) = send(c.post(srv.url(&format!("/v1/stores/{STORE}/subscriptions"))).bearer_auth(&t).json(
        &json!({"type": "by_event_pattern", "selector": {"k": {"$int": digits}}, "name": "big"}),
    ))
    .await;
    assert_eq!((s, b["field"].as_str()), (400, Some("selector")), "{b}");
    let (s, _) = send(c.get(&read_url).bearer_auth(&t)).await;
    assert_eq!(s, 200, "the stream stays readable");
    let (s, _) = send(
        c.get(srv.url(&format!("/v1/stores/{STORE}/subscriptions")))
            .bearer_auth(&t),
    )
    .await;
    assert_eq!(s, 200, "the subscription list stays readable");
    // A bignum within the limit is stored and read back.
    let ok_digits = "9".repeat(2000);
    let (s, b) = send(
        c.post(srv.url(&format!("/v1/stores/{STORE}/streams/big-ok/events")))
            .bearer_auth(&t)
            .json(&json!({"events": [{"event_type": "X", "data": {"k": {"$int": ok_digits}}}]})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = send(
        c.get(srv.url(&format!("/v1/stores/{STORE}/streams/big-ok/events")))
            .bearer_auth(&t),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["events"][0]["data"]["k"]["$int"].as_str(),
        Some(ok_digits.as_str())
    );

    // Oversize body: 413.
    let big = format!(
        r#"{{"events": [{{"event_type": "X", "data": "{}"}}]}}"#,
        "x".repeat(8192)
    );
    let (s, b) = send(
        c.post(&read_url)
            .bearer_auth(&t)
            .header("content-type", "application/json")
            .body(big),
    )
    .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (413, Some("body_too_large")),
        "{b}"
    );
    // Bad names, versions and query values.
    for (path, field) in [
        (
            "/v1/stores/bad%20store/streams/s/events".to_string(),
            "store",
        ),
        (format!("/v1/stores/{STORE}/streams/a%0Ab/events"), "stream"),
        (
            format!("/v1/stores/{STORE}/streams/s/events?from=-1"),
            "from",
        ),
        (
            format!("/v1/stores/{STORE}/streams/s/events?count=0"),
            "count",
        ),
        (
            format!("/v1/stores/{STORE}/streams/s/events?count=51"),
            "count",
        ),
        (
            format!("/v1/stores/{STORE}/streams/s/events?direction=sideways"),
            "direction",
        ),
        (format!("/v1/stores/{STORE}/snapshots/a/b/-3"), "version"),
        (format!("/v1/stores/{STORE}/snapshots/a/b/x"), "version"),
    ] {
        let (s, b) = send(c.get(srv.url(&path)).bearer_auth(&t)).await;
        assert_eq!((s, b["field"].as_str()), (400, Some(field)), "{path}: {b}");
    }
    let subs = srv.url(&format!("/v1/stores/{STORE}/subscriptions"));
    for (body, field) in [
        (
            json!({"type": "by_magic", "selector": "$all", "name": "n"}),
            "type",
        ),
        (
            json!({"type": "by_stream", "selector": "all", "name": "n"}),
            "selector",
        ),
        (
            json!({"type": "by_event_pattern", "selector": "x", "name": "n"}),
            "selector",
        ),
        (json!({"type": "by_stream", "selector": "$all"}), "name"),
        (
            json!({"type": "by_stream", "selector": "$all", "name": "n", "start_from": -5}),
            "start_from",
        ),
    ] {
        let (s, b) = send(c.post(&subs).bearer_auth(&t).json(&body)).await;
        assert_eq!((s, b["field"].as_str()), (400, Some(field)), "{body}: {b}");
    }

    // An unknown store is 404 and never reaches a worker.
    for path in [
        "/v1/stores/no_such_store/streams/s/events",
        "/v1/stores/no_such_store/streams",
        "/v1/stores/no_such_store/snapshots",
        "/v1/stores/no_such_store/subscriptions",
    ] {
        let (s, b) = send(c.get(srv.url(path)).bearer_auth(&t)).await;
        assert_eq!(
            (s, b["error"].as_str()),
            (404, Some("store_not_found")),
            "{path}: {b}"
        );
    }
    let (s, _) = send(
        c.post(srv.url("/v1/stores/no_such_store/streams/s/events"))
            .bearer_auth(&t)
            .json(&json!({"events": [{"event_type": "X"}]})),
    )
    .await;
    assert_eq!(s, 404);
    assert_eq!(
        tb.worker_names(0).expect("workers"),
        workers_before,
        "a worker restarted: a bad request reached it"
    );
    let (s, b) = send(c.get(srv.url("/v2/whatever")).bearer_auth(&t)).await;
    assert_eq!((s, b["error"].as_str()), (404, Some("not_found")));

    let text = c
        .get(srv.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        text.lines()
            .any(|l| l.starts_with("gater_http_auth_failures_total ") && !l.ends_with(" 0")),
        "{text}"
    );
    assert!(text.contains("gater_http_unknown_store_total 5"), "{text}");
    srv.stop().await;
}
