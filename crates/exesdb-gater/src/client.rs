//! Operator subcommands: `nodes`, `status`, `stores`, `streams`, `read`, `append`, `tail`
//! against a running daemon's HTTP API (the counterpart of
//! `bin/ex_esdb_gater rpc "Node.list()"`).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use serde_json::{Value, json};

/// Where the daemon is and how to talk to it.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// The daemon's base URL.
    #[arg(
        long,
        env = "EX_ESDB_GATER_URL",
        default_value = "http://127.0.0.1:4000",
        global = true
    )]
    pub url: String,
    /// A bearer token (`exesdb-gater token issue`); not needed when the daemon has no auth secret.
    #[arg(
        long,
        env = "EX_ESDB_GATER_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub token: Option<String>,
    /// Print raw JSON instead of a summary.
    #[arg(long, global = true)]
    pub json: bool,
}

/// One operator command.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ClientCmd {
    /// Discovered and connected nodes, ExESDB or not, and workers per store.
    Nodes,
    /// Readiness, nodes and stores in one view.
    Status,
    /// Stores the cluster lists.
    Stores,
    /// Streams of a store.
    Streams {
        /// The store.
        store: String,
    },
    /// Read events of a stream.
    Read {
        /// The store.
        store: String,
        /// The stream.
        stream: String,
        /// First event number (default: 0 forward, the last backward).
        #[arg(long)]
        from: Option<i64>,
        /// How many events.
        #[arg(long, default_value_t = 20)]
        count: u32,
        /// forward or backward.
        #[arg(long, default_value = "forward")]
        direction: String,
    },
    /// Append one event.
    Append {
        /// The store.
        store: String,
        /// The stream.
        stream: String,
        /// The event type.
        #[arg(long = "type")]
        event_type: String,
        /// The data, as JSON.
        #[arg(long, default_value = "{}")]
        data: String,
        /// The expected version: an integer, any, stream_exists or no_stream.
        #[arg(long)]
        expected_version: Option<String>,
    },
    /// Follow a subscription's events (Server-Sent Events) until Ctrl-C.
    Tail {
        /// The store.
        store: String,
        /// The subscription's name.
        name: String,
        /// Resume after this event number.
        #[arg(long)]
        after: Option<i64>,
    },
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    fn new(a: &ClientArgs) -> Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .build()?,
            base: a.url.trim_end_matches('/').to_owned(),
            token: a.token.clone(),
        })
    }

    fn req(&self, m: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(m, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    async fn send(&self, r: reqwest::RequestBuilder) -> Result<Value> {
        let resp = r
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .with_context(|| format!("cannot reach the daemon at {}", self.base))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let kind = body["error"].as_str().unwrap_or("error");
            let msg = body["message"].as_str().unwrap_or("");
            bail!("{status}: {kind}: {msg}");
        }
        Ok(body)
    }

    async fn get(&self, path: &str) -> Result<Value> {
        self.send(self.req(reqwest::Method::GET, path)).await
    }
}

fn seg(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~$".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Runs one operator command, printing to stdout.
pub async fn run(args: &ClientArgs, cmd: ClientCmd) -> Result<()> {
    let c = Client::new(args)?;
    let out = match cmd {
        ClientCmd::Nodes => c.get("/v1/cluster/nodes").await?,
        ClientCmd::Stores => c.get("/v1/stores").await?,
        ClientCmd::Status => {
            let ready = c
                .req(reqwest::Method::GET, "/health/ready")
                .send()
                .await
                .with_context(|| format!("cannot reach the daemon at {}", c.base))?;
            let ready_code = ready.status().as_u16();
            let ready_body: Value = ready.json().await.unwrap_or(Value::Null);
            let nodes = c.get("/v1/cluster/nodes").await.unwrap_or(Value::Null);
            let stores = c.get("/v1/stores").await.unwrap_or(Value::Null);
            json!({"ready": ready_code == 200, "readiness": ready_body, "nodes": nodes, "stores": stores})
        }
        ClientCmd::Streams { store } => {
            c.get(&format!("/v1/stores/{}/streams", seg(&store)))
                .await?
        }
        ClientCmd::Read {
            store,
            stream,
            from,
            count,
            direction,
        } => {
            let mut q = format!("?count={count}&direction={}", seg(&direction));
            if let Some(f) = from {
                q.push_str(&format!("&from={f}"));
            }
            c.get(&format!(
                "/v1/stores/{}/streams/{}/events{q}",
                seg(&store),
                seg(&stream)
            ))
            .await?
        }
        ClientCmd::Append {
            store,
            stream,
            event_type,
            data,
            expected_version,
        } => {
            let data: Value = serde_json::from_str(&data).context("--data is not JSON")?;
            let mut body = json!({"events": [{"event_type": event_type, "data": data}]});
            if let Some(v) = expected_version {
                body["expected_version"] = match v.parse::<i64>() {
                    Ok(n) => json!(n),
                    Err(_) => json!(v),
                };
            }
            c.send(
                c.req(
                    reqwest::Method::POST,
                    &format!("/v1/stores/{}/streams/{}/events", seg(&store), seg(&stream)),
                )
                .json(&body),
            )
            .await?
        }
        ClientCmd::Tail { store, name, after } => return tail(&c, &store, &name, after).await,
    };
    if args.json {
        println!("{out}");
    } else {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}

/// Follows the SSE stream, printing one event per line, reconnecting with Last-Event-ID.
async fn tail(c: &Client, store: &str, name: &str, mut last: Option<i64>) -> Result<()> {
    let path = format!(
        "/v1/stores/{}/subscriptions/{}/events",
        seg(store),
        seg(name)
    );
    loop {
        let mut r = c.req(reqwest::Method::GET, &path);
        if let Some(id) = last {
            r = r.header("Last-Event-ID", id.to_string());
        }
        let resp = r
            .send()
            .await
            .with_context(|| format!("cannot reach the daemon at {}", c.base))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            bail!("{status}: {}", body["message"].as_str().unwrap_or(""));
        }
        let mut body = resp.bytes_stream();
        let mut buf = String::new();
        while let Some(chunk) = body.next().await {
            let Ok(chunk) = chunk else { break };
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let frame: String = buf.drain(..end + 2).collect();
                let mut data = String::new();
                for line in frame.lines() {
                    if let Some(id) = line.strip_prefix("id:") {
                        last = id.trim().parse().ok().or(last);
                    } else if let Some(d) = line.strip_prefix("data:") {
                        data.push_str(d.trim_start());
                    }
                }
                if !data.is_empty() {
                    println!("{data}");
                }
            }
        }
        eprintln!("stream ended; reconnecting");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
