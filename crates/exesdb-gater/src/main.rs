//! `exesdb-gater`: the gateway daemon (`run`, the default), token minting, and operator
//! commands against a running daemon.
//!
//! Configuration: flags, then environment variables (the Elixir gater's names), then an
//! optional TOML file (`--config`), then defaults; see `docs/configuration.md`.
#![forbid(unsafe_code)]

mod client;
mod config;
mod logging;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Args, Parser, Subcommand};
use config::{DaemonConfig, Layers};
use gater_http::{HttpApi, Op, TokenKey};

#[derive(Debug, Parser)]
#[command(
    name = "exesdb-gater",
    version,
    about = "HTTP gateway into ExESDB clusters"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    client: client::ClientArgs,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the daemon (the default).
    Run(Box<RunArgs>),
    /// Bearer tokens.
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
    /// Exit 0 when a URL answers 2xx (container health checks; no curl needed).
    Probe {
        /// The URL to GET.
        #[arg(long, default_value = "http://127.0.0.1:4000/health/ready")]
        url: String,
    },
    #[command(flatten)]
    Client(client::ClientCmd),
}

#[derive(Debug, Subcommand)]
enum TokenCmd {
    /// Mint a token signed with the auth secret (EX_ESDB_GATER_AUTH_SECRET[_FILE]).
    Issue {
        /// The store, or `*` for every store.
        #[arg(long)]
        store: String,
        /// Comma-separated: read, append, subscribe, snapshot, admin.
        #[arg(long, default_value = "read")]
        ops: String,
        /// Lifetime: 90s, 30m, 24h, 7d.
        #[arg(long, default_value = "24h")]
        ttl: String,
        /// A file holding the auth secret.
        #[arg(long)]
        auth_secret_file: Option<PathBuf>,
        /// The TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// Daemon flags; each maps onto the environment variable of the same setting.
#[derive(Debug, Clone, Default, Args)]
struct RunArgs {
    /// TOML configuration file (EX_ESDB_GATER_CONFIG).
    #[arg(long)]
    config: Option<PathBuf>,
    /// HTTP address (EX_ESDB_GATER_LISTEN, default 127.0.0.1:4000).
    #[arg(long)]
    listen: Option<String>,
    /// File holding the Erlang cookie (EX_ESDB_COOKIE_FILE).
    #[arg(long)]
    cookie_file: Option<String>,
    /// File holding the gossip secret (EX_ESDB_CLUSTER_SECRET_FILE).
    #[arg(long)]
    cluster_secret_file: Option<String>,
    /// Comma-separated node names to connect to (EX_ESDB_GATER_CONNECT_TO).
    #[arg(long)]
    connect_to: Option<String>,
    /// Operational Phoenix.PubSub name (EX_ESDB_PUB_SUB).
    #[arg(long)]
    pub_sub: Option<String>,
    /// Log level (LOG_LEVEL): debug, info, warning, error, or a tracing filter.
    #[arg(long)]
    log_level: Option<String>,
    /// plain or json (EX_ESDB_GATER_LOG_FORMAT).
    #[arg(long)]
    log_format: Option<String>,
    /// Gossip UDP port (EX_ESDB_CLUSTER_PORT).
    #[arg(long)]
    cluster_port: Option<String>,
    /// Gossip bind address (EX_ESDB_CLUSTER_INTERFACE).
    #[arg(long)]
    cluster_interface: Option<String>,
    /// Gossip multicast group (EX_ESDB_GOSSIP_MULTICAST_ADDR).
    #[arg(long)]
    gossip_multicast_addr: Option<String>,
    /// Turn gossip discovery off (EX_ESDB_GATER_GOSSIP=false).
    #[arg(long)]
    no_gossip: bool,
    /// Our hidden node's name (EX_ESDB_GATER_NODE_NAME).
    #[arg(long)]
    node_name: Option<String>,
    /// EPMD port of the cluster's hosts (ERL_EPMD_PORT).
    #[arg(long)]
    epmd_port: Option<String>,
    /// Distribution tick time in seconds, as the cluster's -kernel net_ticktime
    /// (EX_ESDB_GATER_NET_TICKTIME, default 60).
    #[arg(long)]
    net_ticktime: Option<String>,
    /// File holding the token secret (EX_ESDB_GATER_AUTH_SECRET_FILE).
    #[arg(long)]
    auth_secret_file: Option<String>,
    /// TLS certificate chain, PEM (EX_ESDB_GATER_TLS_CERT).
    #[arg(long)]
    tls_cert: Option<String>,
    /// TLS private key, PEM (EX_ESDB_GATER_TLS_KEY).
    #[arg(long)]
    tls_key: Option<String>,
    /// Largest request body in bytes (EX_ESDB_GATER_MAX_BODY_BYTES).
    #[arg(long)]
    max_body_bytes: Option<String>,
    /// Request time-out in ms (EX_ESDB_GATER_REQUEST_TIMEOUT_MS).
    #[arg(long)]
    request_timeout_ms: Option<String>,
    /// How long in-flight requests get at shutdown, ms (EX_ESDB_GATER_SHUTDOWN_GRACE_MS).
    #[arg(long)]
    shutdown_grace_ms: Option<String>,
    /// Runtime threads; 1 = one thread for everything (EX_ESDB_GATER_WORKER_THREADS,
    /// default 1 on machines with up to 2 cores, else one per core).
    #[arg(long)]
    worker_threads: Option<String>,
}

impl RunArgs {
    fn flags(&self) -> BTreeMap<&'static str, String> {
        use config::*;
        let mut m = BTreeMap::new();
        let mut put = |s: Setting, v: &Option<String>| {
            if let Some(v) = v {
                m.insert(s.env, v.clone());
            }
        };
        put(LISTEN, &self.listen);
        put(COOKIE_FILE, &self.cookie_file);
        put(CLUSTER_SECRET_FILE, &self.cluster_secret_file);
        put(CONNECT_TO, &self.connect_to);
        put(PUB_SUB, &self.pub_sub);
        put(LOG_LEVEL, &self.log_level);
        put(LOG_FORMAT, &self.log_format);
        put(CLUSTER_PORT, &self.cluster_port);
        put(CLUSTER_INTERFACE, &self.cluster_interface);
        put(GOSSIP_MULTICAST_ADDR, &self.gossip_multicast_addr);
        put(NODE_NAME, &self.node_name);
        put(EPMD_PORT, &self.epmd_port);
        put(NET_TICKTIME, &self.net_ticktime);
        put(AUTH_SECRET_FILE, &self.auth_secret_file);
        put(TLS_CERT, &self.tls_cert);
        put(TLS_KEY, &self.tls_key);
        put(MAX_BODY_BYTES, &self.max_body_bytes);
        put(REQUEST_TIMEOUT_MS, &self.request_timeout_ms);
        put(SHUTDOWN_GRACE_MS, &self.shutdown_grace_ms);
        put(WORKER_THREADS, &self.worker_threads);
        if self.no_gossip {
            m.insert(GOSSIP.env, "false".into());
        }
        m
    }
}

/// Builds the layers: flags, the process environment, and the TOML file if any.
fn layers(
    flags: BTreeMap<&'static str, String>,
    config: Option<PathBuf>,
) -> Result<Layers, String> {
    let path = config.or_else(|| std::env::var_os("EX_ESDB_GATER_CONFIG").map(PathBuf::from));
    let text = match &path {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| format!("--config {}: cannot read: {}", p.display(), e.kind()))?,
        ),
        None => None,
    };
    Layers::new(
        flags,
        std::env::vars(),
        path.as_deref().zip(text.as_deref()),
    )
    .map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        None => run_daemon(cli.run),
        Some(Cmd::Run(args)) => run_daemon(*args),
        Some(Cmd::Token { cmd }) => issue_token(cmd),
        Some(Cmd::Probe { url }) => probe(&url),
        Some(Cmd::Client(cmd)) => runtime().and_then(|rt| {
            rt.block_on(client::run(&cli.client, cmd))
                .map_err(|e| format!("{e:#}"))
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(line) => {
            eprintln!("exesdb-gater: {line}");
            ExitCode::from(2)
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

/// The daemon's runtime. One thread (a current-thread runtime) unless more are asked for
/// or the machine has more than 2 cores: on a 2-core machine it cost about a fifth less
/// CPU per HTTP read than a 2-worker runtime, at the same throughput (fewer thread
/// wake-ups; see docs/configuration.md).
fn daemon_runtime(threads: Option<usize>) -> Result<tokio::runtime::Runtime, String> {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let threads = threads.unwrap_or(if cores <= 2 { 1 } else { cores });
    let mut b = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    b.enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

fn issue_token(cmd: TokenCmd) -> Result<(), String> {
    let TokenCmd::Issue {
        store,
        ops,
        ttl,
        auth_secret_file,
        config,
    } = cmd;
    if store != "*"
        && !store
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(format!(
            "--store {store:?}: expected a store name [A-Za-z0-9_-]+ or *"
        ));
    }
    let ops: Vec<Op> = gater_http::auth::parse_ops(&ops).map_err(|e| format!("--ops: {e}"))?;
    let ttl = gater_http::auth::parse_ttl(&ttl).map_err(|e| format!("--ttl: {e}"))?;
    let mut flags = BTreeMap::new();
    if let Some(f) = auth_secret_file {
        flags.insert(config::AUTH_SECRET_FILE.env, f.display().to_string());
    }
    let l = layers(flags, config)?;
    let secret = config::auth_secret(&l)
        .map_err(|e| e.to_string())?
        .ok_or("no auth secret: set EX_ESDB_GATER_AUTH_SECRET or EX_ESDB_GATER_AUTH_SECRET_FILE, or pass --auth-secret-file")?;
    println!(
        "{}",
        TokenKey::new(secret.expose()).issue(&store, &ops, ttl, SystemTime::now())
    );
    Ok(())
}

fn probe(url: &str) -> Result<(), String> {
    let rt = runtime()?;
    rt.block_on(async {
        let resp = reqwest::Client::new()
            .get(url)
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("{url}: {}", resp.status()))
        }
    })
}

fn run_daemon(args: RunArgs) -> Result<(), String> {
    let l = layers(args.flags(), args.config.clone())?;
    let cfg = DaemonConfig::from_layers(&l).map_err(|e| e.to_string())?;
    logging::init(&cfg);
    let rt = daemon_runtime(cfg.worker_threads)?;
    rt.block_on(daemon(cfg))
}

async fn daemon(cfg: DaemonConfig) -> Result<(), String> {
    let listener = std::net::TcpListener::bind(cfg.listen)
        .map_err(|e| format!("EX_ESDB_GATER_LISTEN={}: cannot listen: {e}", cfg.listen))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("EX_ESDB_GATER_LISTEN={}: {e}", cfg.listen))?;
    let tls = match &cfg.tls {
        Some((cert, key)) => {
            let _ = rustls::crypto::ring::default_provider().install_default();
            Some(
                gater_http::RustlsConfig::from_pem_file(cert, key)
                    .await
                    .map_err(|e| {
                        format!(
                            "EX_ESDB_GATER_TLS_CERT={} / EX_ESDB_GATER_TLS_KEY={}: {e}",
                            cert.display(),
                            key.display()
                        )
                    })?,
            )
        }
        None => None,
    };

    let mut gcfg = gater_api::GaterConfig::new(cfg.cookie.expose())
        .epmd_port(cfg.epmd_port)
        .net_ticktime(cfg.net_ticktime)
        .nodes(cfg.discovery.static_nodes.iter().map(|n| n.to_string()));
    gcfg.ops_pubsub = cfg.pub_sub.clone();
    if let Some(n) = &cfg.node_name {
        gcfg = gcfg.node_name(n.clone());
    }
    if cfg.discovery.gossip.is_some() || cfg.discovery.epmd.is_some() {
        let mut d = cfg.discovery.clone();
        d.static_nodes.clear();
        gcfg = gcfg.discovery(d);
    }
    tracing::info!(
        target: "system",
        version = env!("CARGO_PKG_VERSION"),
        connect_to = ?cfg.discovery.static_nodes.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        gossip = cfg.discovery.gossip.as_ref().map(|g| format!("{}:{}", g.multicast_addr, g.port)),
        "starting exesdb-gater"
    );
    if cfg.auth_secret.is_none() {
        if cfg.listen_forced_local {
            tracing::warn!(target: "system", "no EX_ESDB_GATER_AUTH_SECRET: authentication is off, so the API listens on 127.0.0.1 only (EX_ESDB_GATER_LISTEN asked for another address)");
        } else {
            tracing::warn!(target: "system", "no EX_ESDB_GATER_AUTH_SECRET: authentication is off; the API listens on 127.0.0.1 only");
        }
    }
    let gater = gater_api::Gater::connect(gcfg)
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(target: "cluster", node = gater.node_name(), "joined as a hidden node");
    // Subscribe first, then report the nodes connected during start-up (their Up events
    // were sent before anyone listened), as the Elixir ClusterMonitor logs node-ups.
    let mut events = gater.pool().subscribe();
    for n in gater.cluster_status().nodes.iter().filter(|n| n.connected) {
        tracing::info!(target: "cluster", node = %n.node, "node up");
    }
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(gater_pool::NodeEvent::Up { node, .. }) => {
                    tracing::info!(target: "cluster", %node, "node up")
                }
                Ok(gater_pool::NodeEvent::Down { node, reason }) => {
                    tracing::warn!(target: "cluster", %node, %reason, "node down")
                }
                Ok(gater_pool::NodeEvent::ConnectFailed { node, error }) => {
                    tracing::debug!(target: "cluster", %node, %error, "connect failed")
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::debug!(target: "cluster", skipped = n, "node events lagged")
                }
                Err(_) => break,
            }
        }
    });

    let api = HttpApi::new(gater)
        .auth(cfg.auth_secret.as_ref().map(|s| TokenKey::new(s.expose())))
        .limits(cfg.limits.clone());
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(target: "http", url = %format!("{scheme}://{local}"), auth = cfg.auth_secret.is_some(), "listening on {scheme}://{local}");
    api.serve(listener, tls, cfg.shutdown_grace, shutdown_signal())
        .await
        .map_err(|e| format!("HTTP server: {e}"))?;
    tracing::info!(target: "system", "stopped");
    Ok(())
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => tracing::info!(target: "system", "SIGTERM"),
        _ = tokio::signal::ctrl_c() => tracing::info!(target: "system", "interrupt"),
    }
}
