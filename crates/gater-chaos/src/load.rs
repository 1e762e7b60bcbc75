//! A steady mixed load over the daemon's HTTP API: writers append one event per request
//! to a stream of their own (so the acknowledged order is the stream's order), readers
//! read versions and events, SSE subscribers (optional) hold a subscription's event
//! stream open for a while, read it, drop it and open it again. Every outcome is
//! recorded with its time; every acknowledged append with its stream, event id and the
//! version the daemon returned. The load can be paused (every task finishes its request
//! and waits) so that the daemon's gauges can be read at rest.

use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Shape of the load.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Daemon URL.
    pub url: String,
    /// Store to use.
    pub store: String,
    /// Writer tasks (one stream each).
    pub writers: usize,
    /// Reader tasks.
    pub readers: usize,
    /// Pause between one task's requests (`None`: as fast as answers come).
    pub pace: Option<Duration>,
    /// Per-request client time-out.
    pub timeout: Duration,
    /// Prefix of the streams (unique per run).
    pub stream_prefix: String,
    /// Bearer token, when authentication is on.
    pub token: Option<String>,
    /// SSE subscriber tasks. Subscriber `i` creates a transient subscription to writer
    /// `i`'s stream, opens its event stream, reads it, drops it (which ends the transient
    /// subscription), and again.
    pub sse_subscribers: usize,
    /// How long a subscriber keeps one stream open before dropping it.
    pub sse_hold: Duration,
}

impl LoadConfig {
    /// A load of `writers` and `readers` on `store` at `url`, no SSE subscribers, no
    /// token, 20 s per-request time-out.
    pub fn new(
        url: &str,
        store: &str,
        stream_prefix: &str,
        writers: usize,
        readers: usize,
    ) -> Self {
        Self {
            url: url.to_owned(),
            store: store.to_owned(),
            writers,
            readers,
            pace: None,
            timeout: Duration::from_secs(20),
            stream_prefix: stream_prefix.to_owned(),
            token: None,
            sse_subscribers: 0,
            sse_hold: Duration::from_secs(2),
        }
    }
}

/// One request's outcome.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// When it finished, from the start of the load.
    pub at: Duration,
    /// `true` for appends.
    pub write: bool,
    /// `true` for an SSE stream (opened, read for a while, dropped).
    pub sse: bool,
    /// Success.
    pub ok: bool,
    /// Status code or error kind on failure.
    pub error: Option<String>,
    /// Latency.
    pub latency: Duration,
}

/// One acknowledged append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked {
    /// Stream.
    pub stream: String,
    /// Event id sent.
    pub event_id: String,
    /// Version (event number) the daemon returned.
    pub version: i64,
}

#[derive(Default)]
struct Shared {
    outcomes: Vec<Outcome>,
    acked: Vec<Acked>,
}

/// A running load.
pub struct Load {
    started: Instant,
    stop: watch::Sender<bool>,
    paused: watch::Sender<bool>,
    busy: Arc<std::sync::atomic::AtomicUsize>,
    tasks: Vec<JoinHandle<()>>,
    shared: Arc<Mutex<Shared>>,
}

impl Load {
    /// Starts the tasks.
    pub fn start(cfg: LoadConfig) -> Self {
        let started = Instant::now();
        let (stop, stop_rx) = watch::channel(false);
        let (paused, paused_rx) = watch::channel(false);
        let busy = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let gate = Gate {
            stop: stop_rx.clone(),
            paused: paused_rx,
            busy: busy.clone(),
        };
        let shared = Arc::new(Mutex::new(Shared::default()));
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .pool_max_idle_per_host(64)
            .build()
            .unwrap_or_default();
        let mut tasks = Vec::new();
        for w in 0..cfg.writers {
            tasks.push(tokio::spawn(writer(
                w,
                cfg.clone(),
                client.clone(),
                started,
                gate.clone(),
                shared.clone(),
            )));
        }
        for r in 0..cfg.readers {
            tasks.push(tokio::spawn(reader(
                r,
                cfg.clone(),
                client.clone(),
                started,
                gate.clone(),
                shared.clone(),
            )));
        }
        // SSE streams stay open longer than any request: a client without a time-out.
        let sse_client = reqwest::Client::builder()
            .connect_timeout(cfg.timeout)
            .build()
            .unwrap_or_default();
        for i in 0..cfg.sse_subscribers {
            tasks.push(tokio::spawn(subscriber(
                i,
                cfg.clone(),
                sse_client.clone(),
                started,
                gate.clone(),
                shared.clone(),
            )));
        }
        drop(stop_rx);
        Self {
            started,
            stop,
            paused,
            busy,
            tasks,
            shared,
        }
    }

    /// Pauses the load: every task finishes the request (or SSE stream) it is in, then
    /// waits; returns once none is busy (bounded by `within`; `false` on time-out).
    pub async fn pause(&self, within: Duration) -> bool {
        let _ = self.paused.send(true);
        let deadline = Instant::now() + within;
        while self.busy.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            if Instant::now() > deadline {
                return false;
            }
            // The tasks decrement the counter when a request ends; checked every 10 ms.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// Resumes a paused load.
    pub fn resume(&self) {
        let _ = self.paused.send(false);
    }

    /// Time since the load started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Outcomes so far (a copy).
    pub fn outcomes(&self) -> Vec<Outcome> {
        self.shared
            .lock()
            .map(|s| s.outcomes.clone())
            .unwrap_or_default()
    }

    /// Number of outcomes so far.
    pub fn count(&self) -> usize {
        self.shared.lock().map(|s| s.outcomes.len()).unwrap_or(0)
    }

    /// Waits (bounded by `within`) until `n` appends started from now on succeed in a
    /// row (reads in between must succeed too); returns when the last of them finished,
    /// or `None` on time-out.
    pub async fn await_successes(&self, n: usize, within: Duration) -> Option<Duration> {
        let deadline = Instant::now() + within;
        let from = self.count();
        while Instant::now() < deadline {
            {
                let s = self.shared.lock().ok()?;
                let tail = &s.outcomes[from.min(s.outcomes.len())..];
                let mut run = 0;
                for o in tail {
                    if o.ok {
                        run += usize::from(o.write);
                        if run >= n {
                            return Some(o.at);
                        }
                    } else {
                        run = 0;
                    }
                }
            }
            // The outcomes are written by the load tasks; checked every 20 ms.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// Stops the tasks and returns (outcomes, acknowledged appends).
    pub async fn stop(self) -> (Vec<Outcome>, Vec<Acked>) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        let s = std::mem::take(&mut *self.shared.lock().unwrap_or_else(|e| e.into_inner()));
        (s.outcomes, s.acked)
    }
}

fn auth(rb: reqwest::RequestBuilder, token: &Option<String>) -> reqwest::RequestBuilder {
    match token {
        Some(t) => rb.bearer_auth(t),
        None => rb,
    }
}

/// What every task watches: stop, pause, and the count of tasks inside a request.
#[derive(Clone)]
struct Gate {
    stop: watch::Receiver<bool>,
    paused: watch::Receiver<bool>,
    busy: Arc<std::sync::atomic::AtomicUsize>,
}

/// Marks a task busy (inside a request) while alive.
struct Busy(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Gate {
    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Waits while paused; `None` once stopped, else the busy mark for one request.
    async fn enter(&mut self) -> Option<Busy> {
        loop {
            if self.stopped() {
                return None;
            }
            if !*self.paused.borrow_and_update() {
                self.busy.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                // Re-check: pause() may have read the counter before our increment.
                if *self.paused.borrow() {
                    self.busy.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    continue;
                }
                return Some(Busy(self.busy.clone()));
            }
            // A closed channel: the load was dropped without stop(); end the task.
            let open = tokio::select! {
                r = self.paused.changed() => r.is_ok(),
                r = self.stop.changed() => r.is_ok(),
            };
            if !open {
                return None;
            }
        }
    }
}

async fn pace(cfg: &LoadConfig, gate: &mut Gate) -> bool {
    if let Some(p) = cfg.pace {
        tokio::select! {
            _ = tokio::time::sleep(p) => {}
            r = gate.stop.changed() => {
                if r.is_err() {
                    return false;
                }
            }
        }
    }
    !gate.stopped()
}

async fn writer(
    w: usize,
    cfg: LoadConfig,
    client: reqwest::Client,
    started: Instant,
    mut gate: Gate,
    shared: Arc<Mutex<Shared>>,
) {
    let stream = format!("{}-w{w}", cfg.stream_prefix);
    let url = format!(
        "{}/v1/stores/{}/streams/{stream}/events",
        cfg.url, cfg.store
    );
    let mut seq: u64 = 0;
    while let Some(busy) = gate.enter().await {
        seq += 1;
        let event_id = format!("{stream}-{seq}");
        let body = json!({"events": [{"event_type": "ChaosTick", "data": {"w": w, "seq": seq}, "event_id": event_id}]});
        let t0 = Instant::now();
        let r = auth(client.post(&url).json(&body), &cfg.token).send().await;
        let (ok, error, version) = match r {
            Ok(resp) if resp.status() == 200 => match resp.json::<Value>().await {
                Ok(v) => match v.get("version").and_then(Value::as_i64) {
                    Some(ver) => (true, None, Some(ver)),
                    None => (false, Some(format!("200 without version: {v}")), None),
                },
                Err(e) => (false, Some(format!("body: {e}")), None),
            },
            Ok(resp) => {
                let st = resp.status().as_u16();
                let kind = resp
                    .json::<Value>()
                    .await
                    .ok()
                    .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
                    .unwrap_or_default();
                (false, Some(format!("{st} {kind}")), None)
            }
            Err(e) => (false, Some(client_error(&e)), None),
        };
        if let Ok(mut s) = shared.lock() {
            s.outcomes.push(Outcome {
                at: started.elapsed(),
                write: true,
                sse: false,
                ok,
                error,
                latency: t0.elapsed(),
            });
            if let Some(version) = version {
                s.acked.push(Acked {
                    stream: stream.clone(),
                    event_id,
                    version,
                });
            }
        }
        drop(busy);
        if !pace(&cfg, &mut gate).await {
            break;
        }
    }
}

async fn reader(
    r: usize,
    cfg: LoadConfig,
    client: reqwest::Client,
    started: Instant,
    mut gate: Gate,
    shared: Arc<Mutex<Shared>>,
) {
    let mut i = 0usize;
    while let Some(busy) = gate.enter().await {
        i += 1;
        let stream = format!("{}-w{}", cfg.stream_prefix, (r + i) % cfg.writers.max(1));
        let url = if i % 2 == 0 {
            format!(
                "{}/v1/stores/{}/streams/{stream}/version",
                cfg.url, cfg.store
            )
        } else {
            format!(
                "{}/v1/stores/{}/streams/{stream}/events?direction=backward&count=10",
                cfg.url, cfg.store
            )
        };
        let t0 = Instant::now();
        let res = auth(client.get(&url), &cfg.token).send().await;
        let (ok, error) = match res {
            Ok(resp) if resp.status() == 200 => match resp.bytes().await {
                Ok(_) => (true, None),
                Err(e) => (false, Some(client_error(&e))),
            },
            Ok(resp) => (false, Some(resp.status().as_u16().to_string())),
            Err(e) => (false, Some(client_error(&e))),
        };
        if let Ok(mut s) = shared.lock() {
            s.outcomes.push(Outcome {
                at: started.elapsed(),
                write: false,
                sse: false,
                ok,
                error,
                latency: t0.elapsed(),
            });
        }
        drop(busy);
        if !pace(&cfg, &mut gate).await {
            break;
        }
    }
}

/// Creates a transient subscription to writer `i`'s stream, opens its event stream,
/// reads it for `sse_hold` (it must answer 200 and the body must not fail), drops it, and
/// again.
async fn subscriber(
    i: usize,
    cfg: LoadConfig,
    client: reqwest::Client,
    started: Instant,
    mut gate: Gate,
    shared: Arc<Mutex<Shared>>,
) {
    let subs = format!("{}/v1/stores/{}/subscriptions", cfg.url, cfg.store);
    let body = json!({
        "type": "by_stream",
        "selector": format!("${}-w{}", cfg.stream_prefix, i % cfg.writers.max(1)),
        "name": "transient",
        "persistent": false,
    });
    while let Some(busy) = gate.enter().await {
        let t0 = Instant::now();
        let created = auth(client.post(&subs).json(&body), &cfg.token)
            .timeout(cfg.timeout)
            .send()
            .await;
        let name = match created {
            Ok(r) if r.status() == 201 => r
                .json::<Value>()
                .await
                .ok()
                .and_then(|v| v.get("name").and_then(Value::as_str).map(str::to_owned))
                .ok_or_else(|| "sse subscription: no name".to_owned()),
            Ok(r) => Err(format!("sse subscription {}", r.status().as_u16())),
            Err(e) => Err(format!("sse subscription {}", client_error(&e))),
        };
        let opened = match name {
            Ok(name) => Ok(
                auth(client.get(format!("{subs}/{name}/events")), &cfg.token)
                    .send()
                    .await,
            ),
            Err(e) => Err(e),
        };
        let error = match opened {
            Err(e) => Some(e),
            Ok(opened) => match opened {
                Ok(mut resp) if resp.status() == 200 => {
                    let mut stop = gate.stop.clone();
                    let mut paused = gate.paused.clone();
                    let read = async {
                        loop {
                            match resp.chunk().await {
                                Ok(Some(_)) => {}
                                Ok(None) => return Some("sse stream ended".to_owned()),
                                Err(e) => return Some(format!("sse {}", client_error(&e))),
                            }
                        }
                    };
                    tokio::select! {
                        e = read => e,
                        _ = tokio::time::sleep(cfg.sse_hold) => None,
                        _ = stop.changed() => None,
                        _ = paused.wait_for(|p| *p) => None,
                    }
                    // The stream (and its connection) is dropped here.
                }
                Ok(resp) => Some(format!("sse {}", resp.status().as_u16())),
                Err(e) => Some(format!("sse {}", client_error(&e))),
            },
        };
        if let Ok(mut s) = shared.lock() {
            s.outcomes.push(Outcome {
                at: started.elapsed(),
                write: false,
                sse: true,
                ok: error.is_none(),
                error,
                latency: t0.elapsed(),
            });
        }
        drop(busy);
        if !pace(&cfg, &mut gate).await {
            break;
        }
    }
}

fn client_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "client timeout".into()
    } else if e.is_connect() {
        "connect error".into()
    } else {
        "client error".into()
    }
}
