//! Shared set-up: a private testbed, a Gater on it, and the HTTP API served on a real
//! loopback socket, driven with reqwest.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use gater_api::{Gater, GaterConfig};
use gater_http::{HttpApi, Limits, Op, TokenKey};
use gater_testkit::testbed::{Testbed, TestbedConfig};
use serde_json::Value;

pub const STORE: &str = "reg_gh";
pub const SECRET: &str = "test-secret-0123456789abcdef";

pub fn testbed(prefix: &str) -> Testbed {
    Testbed::start(TestbedConfig {
        name_prefix: prefix.into(),
        ..TestbedConfig::default()
    })
    .expect("testbed starts")
}

pub fn gater_config(tb: &Testbed) -> GaterConfig {
    let mut c = GaterConfig::new(tb.cookie())
        .nodes(tb.node_names())
        .epmd_port(tb.epmd_port())
        .call_timeout(Duration::from_secs(5));
    c.refresh_interval = Duration::from_millis(300);
    c
}

/// A Gater that knows every node's workers and the leader.
pub async fn gater(tb: &Testbed) -> Gater {
    let g = bounded(Gater::connect(gater_config(tb)), 20)
        .await
        .expect("gater connects");
    let nodes = tb.node_names();
    eventually(15, || {
        let s = g.cluster_status();
        s.stores.iter().any(|st| {
            st.store.as_str() == STORE
                && st.leader.is_some()
                && nodes.iter().all(|n| st.workers.contains_key(n))
        })
    })
    .await;
    g
}

/// The API served on 127.0.0.1:<free port> until `stop` is called.
pub struct Server {
    pub base: String,
    pub api: Arc<HttpApi>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Server {
    pub async fn start(g: Gater, auth: bool, limits: Limits) -> Server {
        let api = HttpApi::new(g)
            .auth(auth.then(|| TokenKey::new(SECRET)))
            .limits(limits);
        Self::serve(api, Duration::from_secs(5))
    }

    pub fn serve(api: HttpApi, grace: Duration) -> Server {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let api = Arc::new(api);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let a = api.clone();
        let task = tokio::spawn(async move {
            a.serve(listener, None, grace, async {
                let _ = rx.await;
            })
            .await
        });
        Server {
            base,
            api,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Signals shutdown and waits for the server to finish.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            bounded(t, 30).await.expect("join").expect("serve");
        }
    }

    /// Signals shutdown without waiting.
    pub fn begin_stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

pub fn token(store: &str, ops: &[Op]) -> String {
    TokenKey::new(SECRET).issue(store, ops, Duration::from_secs(3600), SystemTime::now())
}

pub fn admin_token() -> String {
    token("*", &Op::ALL)
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// Sends and returns (status, JSON body).
pub async fn send(r: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = r.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// One parsed SSE frame.
#[derive(Debug, Clone, Default)]
pub struct Frame {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

/// Reads SSE frames from a response body (comments are skipped).
pub struct SseReader {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: String,
}

impl SseReader {
    pub fn new(resp: reqwest::Response) -> Self {
        Self {
            body: resp.bytes_stream().boxed(),
            buf: String::new(),
        }
    }

    /// The next frame, or `None` when the stream ends.
    pub async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let raw: String = self.buf.drain(..end + 2).collect();
                let mut f = Frame::default();
                let mut any = false;
                for line in raw.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        f.event = v.trim().into();
                        any = true;
                    } else if let Some(v) = line.strip_prefix("id:") {
                        f.id = Some(v.trim().into());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        f.data.push_str(v.strip_prefix(' ').unwrap_or(v));
                        any = true;
                    }
                }
                if any {
                    return Some(f);
                }
                continue;
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buf.push_str(&String::from_utf8_lossy(&chunk)),
                _ => return None,
            }
        }
    }

    /// The next `event: event` frame within `secs`.
    pub async fn next_event(&mut self, secs: u64) -> Frame {
        bounded(
            async {
                loop {
                    let f = self.next().await.expect("stream open");
                    if f.event == "event" {
                        return f;
                    }
                }
            },
            secs,
        )
        .await
    }
}

pub async fn bounded<F: std::future::Future>(f: F, secs: u64) -> F::Output {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .expect("bounded await timed out")
}

/// Polls `cond` (every 20 ms) until true, for at most `secs` seconds.
pub async fn eventually(secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
