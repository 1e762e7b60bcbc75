//! A store without gateway workers answers 503 `no_workers` within the request
//! time-out, not 504: gater-api's no-workers back-off (the Elixir gater's ~26 s schedule)
//! is cut short by the request's deadline.

mod common;

use std::time::Duration;

use common::*;
use gater_http::Limits;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_workers_answers_503_before_the_request_timeout() {
    let tb = testbed("httpnowork");
    // Hide every worker from Swarm (the processes keep running).
    for i in 0..tb.node_names().len() {
        tb.unregister_workers(i, STORE).expect("unregister");
    }
    let g = bounded(gater_api::Gater::connect(gater_config(&tb)), 20)
        .await
        .expect("gater connects");
    assert!(g.registry().workers(&STORE.into()).is_empty());
    // The default back-off schedule (far longer than this time-out) is kept.
    assert!(gater_config(&tb).no_workers.total() > Duration::from_secs(20));
    let limits = Limits {
        request_timeout: Duration::from_secs(2),
        ..Limits::default()
    };
    let mut srv = Server::start(g.clone(), false, limits).await;
    let c = client();

    let (status, body) =
        send(c.get(srv.url(&format!("/v1/stores/{STORE}/streams/s/version")))).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "no_workers", "{body}");

    let (status, body) = send(
        c.post(srv.url(&format!("/v1/stores/{STORE}/streams/s/events")))
            .json(&serde_json::json!({"events": [{"event_type": "T", "data": {}}]})),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "no_workers", "{body}");

    // Counted as no_workers, not as the request time-out.
    let metrics = c
        .get(srv.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("gater_api_errors_total{kind=\"no_workers\"}"),
        "{metrics}"
    );
    srv.stop().await;
}
