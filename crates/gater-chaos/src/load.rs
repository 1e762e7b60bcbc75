//! A steady mixed load over the daemon's HTTP API: writers append one event per request
//! to a stream of their own (so the acknowledged order is the stream's order), readers
//! read versions and events. Every outcome is recorded with its time; every
//! acknowledged append with its stream, event id and the version the daemon returned.

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
}

/// One request's outcome.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// When it finished, from the start of the load.
    pub at: Duration,
    /// `true` for appends.
    pub write: bool,
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
    tasks: Vec<JoinHandle<()>>,
    shared: Arc<Mutex<Shared>>,
}

impl Load {
    /// Starts the tasks.
    pub fn start(cfg: LoadConfig) -> Self {
        let started = Instant::now();
        let (stop, stop_rx) = watch::channel(false);
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
                stop_rx.clone(),
                shared.clone(),
            )));
        }
        for r in 0..cfg.readers {
            tasks.push(tokio::spawn(reader(
                r,
                cfg.clone(),
                client.clone(),
                started,
                stop_rx.clone(),
                shared.clone(),
            )));
        }
        Self {
            started,
            stop,
            tasks,
            shared,
        }
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

async fn pace(cfg: &LoadConfig, stop: &mut watch::Receiver<bool>) -> bool {
    if let Some(p) = cfg.pace {
        tokio::select! {
            _ = tokio::time::sleep(p) => {}
            _ = stop.changed() => {}
        }
    }
    !*stop.borrow()
}

async fn writer(
    w: usize,
    cfg: LoadConfig,
    client: reqwest::Client,
    started: Instant,
    mut stop: watch::Receiver<bool>,
    shared: Arc<Mutex<Shared>>,
) {
    let stream = format!("{}-w{w}", cfg.stream_prefix);
    let url = format!(
        "{}/v1/stores/{}/streams/{stream}/events",
        cfg.url, cfg.store
    );
    let mut seq: u64 = 0;
    while !*stop.borrow() {
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
        if !pace(&cfg, &mut stop).await {
            break;
        }
    }
}

async fn reader(
    r: usize,
    cfg: LoadConfig,
    client: reqwest::Client,
    started: Instant,
    mut stop: watch::Receiver<bool>,
    shared: Arc<Mutex<Shared>>,
) {
    let mut i = 0usize;
    while !*stop.borrow() {
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
                ok,
                error,
                latency: t0.elapsed(),
            });
        }
        if !pace(&cfg, &mut stop).await {
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
