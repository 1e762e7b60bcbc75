//! Settings, and reading them from the Elixir gater's environment variables.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::epmd::DEFAULT_EPMD_PORT;
use crate::node::NodeName;
use crate::secret::Secret;

/// `EX_ESDB_CLUSTER_PORT`: the gossip UDP port (default 45892).
pub const ENV_PORT: &str = "EX_ESDB_CLUSTER_PORT";
/// `EX_ESDB_CLUSTER_INTERFACE`: the address the gossip socket binds to (default 0.0.0.0).
pub const ENV_INTERFACE: &str = "EX_ESDB_CLUSTER_INTERFACE";
/// `EX_ESDB_GOSSIP_MULTICAST_ADDR`: the multicast group, or the broadcast address in
/// broadcast-only mode (default 239.255.0.1).
pub const ENV_MULTICAST_ADDR: &str = "EX_ESDB_GOSSIP_MULTICAST_ADDR";
/// `EX_ESDB_CLUSTER_SECRET`: the gossip secret (default `dev_cluster_secret`, as ExESDB).
pub const ENV_SECRET: &str = "EX_ESDB_CLUSTER_SECRET";
/// `EX_ESDB_CLUSTER_SECRET_FILE`: a file holding the secret (Docker/Kubernetes secrets).
pub const ENV_SECRET_FILE: &str = "EX_ESDB_CLUSTER_SECRET_FILE";
/// `EX_ESDB_GATER_CONNECT_TO`: comma-separated node names, always reported.
pub const ENV_CONNECT_TO: &str = "EX_ESDB_GATER_CONNECT_TO";
/// `EX_ESDB_GATER_GOSSIP`: `false` turns gossip off (default `true`).
pub const ENV_GOSSIP: &str = "EX_ESDB_GATER_GOSSIP";
/// `EX_ESDB_GATER_GOSSIP_PLAIN`: `true` reads unsealed heartbeats (libcluster without a
/// secret) and ignores the secret settings.
pub const ENV_GOSSIP_PLAIN: &str = "EX_ESDB_GATER_GOSSIP_PLAIN";
/// `EX_ESDB_GATER_GOSSIP_MULTICAST_IF`: the interface address for multicast
/// (`IP_MULTICAST_IF` and the group membership); default: the kernel's choice.
pub const ENV_MULTICAST_IF: &str = "EX_ESDB_GATER_GOSSIP_MULTICAST_IF";
/// `EX_ESDB_GATER_GOSSIP_TTL`: multicast TTL (default 1).
pub const ENV_TTL: &str = "EX_ESDB_GATER_GOSSIP_TTL";
/// `EX_ESDB_GATER_GOSSIP_BROADCAST_ONLY`: `true` for broadcast instead of multicast.
pub const ENV_BROADCAST_ONLY: &str = "EX_ESDB_GATER_GOSSIP_BROADCAST_ONLY";
/// `EX_ESDB_GATER_GOSSIP_SEND_AS`: a node name; when set, the gateway also sends
/// heartbeats for it (off by default: a hidden node should not invite connections).
pub const ENV_SEND_AS: &str = "EX_ESDB_GATER_GOSSIP_SEND_AS";
/// `EX_ESDB_GATER_NODE_GONE_AFTER_MS`: how long an unseen node stays alive (default 20000).
pub const ENV_GONE_AFTER_MS: &str = "EX_ESDB_GATER_NODE_GONE_AFTER_MS";
/// `EX_ESDB_GATER_EPMD_HOSTS`: comma-separated hosts whose EPMD is asked for node names.
pub const ENV_EPMD_HOSTS: &str = "EX_ESDB_GATER_EPMD_HOSTS";
/// `EX_ESDB_GATER_EPMD_PORT`: the EPMD port on those hosts (default 4369).
pub const ENV_EPMD_PORT: &str = "EX_ESDB_GATER_EPMD_PORT";
/// `EX_ESDB_GATER_EPMD_INTERVAL_MS`: how often the EPMD hosts are asked (default 5000).
pub const ENV_EPMD_INTERVAL_MS: &str = "EX_ESDB_GATER_EPMD_INTERVAL_MS";

/// ExESDB's gossip port.
pub const DEFAULT_PORT: u16 = 45892;
/// ExESDB's multicast group (libcluster's own default is 233.252.1.32).
pub const DEFAULT_MULTICAST_ADDR: Ipv4Addr = Ipv4Addr::new(239, 255, 0, 1);
/// ExESDB's default secret, used when `EX_ESDB_CLUSTER_SECRET` is unset.
pub const DEFAULT_SECRET: &str = "dev_cluster_secret";
/// Default time after which an unseen node is gone (four of libcluster's longest intervals).
pub const DEFAULT_GONE_AFTER: Duration = Duration::from_secs(20);

/// The gossip socket and codec (libcluster `Cluster.Strategy.Gossip` options).
#[derive(Debug, Clone)]
pub struct GossipConfig {
    /// Address the socket binds to (libcluster `if_addr`). Keep 0.0.0.0 to receive
    /// multicast and broadcast: on Linux a socket bound to a unicast address does not
    /// receive datagrams sent to a group or broadcast address.
    pub bind_addr: Ipv4Addr,
    /// UDP port, shared with the ExESDB nodes on the same host.
    pub port: u16,
    /// Multicast group, or the broadcast address when `broadcast_only`.
    pub multicast_addr: Ipv4Addr,
    /// Interface address for `IP_MULTICAST_IF` and the group membership
    /// (libcluster `multicast_if`); `None` lets the kernel choose.
    pub multicast_if: Option<Ipv4Addr>,
    /// Multicast TTL (1: the local network only).
    pub multicast_ttl: u32,
    /// Whether our own multicast datagrams come back to sockets on this host.
    pub multicast_loop: bool,
    /// Broadcast to `multicast_addr` instead of joining a group.
    pub broadcast_only: bool,
    /// The cluster secret; `None` for plain heartbeats.
    pub secret: Option<Secret>,
    /// Send heartbeats too (off by default).
    pub sender: Option<SenderConfig>,
    /// A node whose heartbeats are ignored; the sender's node is always ignored.
    pub ignore_node: Option<NodeName>,
}

impl Default for GossipConfig {
    fn default() -> Self {
        Self {
            bind_addr: Ipv4Addr::UNSPECIFIED,
            port: DEFAULT_PORT,
            multicast_addr: DEFAULT_MULTICAST_ADDR,
            multicast_if: None,
            multicast_ttl: 1,
            multicast_loop: true,
            broadcast_only: false,
            secret: Some(Secret::new(DEFAULT_SECRET)),
            sender: None,
            ignore_node: None,
        }
    }
}

/// Sending our own heartbeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderConfig {
    /// The node name to announce.
    pub node: NodeName,
    /// Shortest wait between two heartbeats (libcluster: 1 ms).
    pub min_interval: Duration,
    /// Longest wait between two heartbeats (libcluster: 5000 ms); each wait is uniformly
    /// random between the two.
    pub max_interval: Duration,
}

impl SenderConfig {
    /// Sends as `node` with libcluster's 1..5000 ms random interval.
    pub fn new(node: NodeName) -> Self {
        Self {
            node,
            min_interval: Duration::from_millis(1),
            max_interval: Duration::from_millis(5000),
        }
    }
}

/// Asking hosts' EPMD for node names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpmdConfig {
    /// Hosts to ask; each registered name `N` becomes the node `N@host`.
    pub hosts: Vec<String>,
    /// EPMD port on those hosts.
    pub port: u16,
    /// How often to ask.
    pub interval: Duration,
    /// Time-out for one request.
    pub timeout: Duration,
}

impl EpmdConfig {
    /// These hosts on the default port, every 5 s.
    pub fn new(hosts: Vec<String>) -> Self {
        Self {
            hosts,
            port: DEFAULT_EPMD_PORT,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
        }
    }
}

/// Everything discovery needs: which sources, and when a node is gone.
#[derive(Debug, Clone)]
pub struct DiscoveryConfig {
    /// The gossip listener (and optional sender); `None` turns gossip off.
    pub gossip: Option<GossipConfig>,
    /// Nodes always reported, never gone (`EX_ESDB_GATER_CONNECT_TO`).
    pub static_nodes: Vec<NodeName>,
    /// EPMD hosts to ask; `None` for none.
    pub epmd: Option<EpmdConfig>,
    /// An unseen node is reported gone after this long.
    pub gone_after: Duration,
    /// Most nodes tracked at once (see [`Liveness::with_max_nodes`](crate::Liveness::with_max_nodes)).
    pub max_nodes: usize,
    /// Capacity of the event channel.
    pub channel_capacity: usize,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            gossip: Some(GossipConfig::default()),
            static_nodes: Vec::new(),
            epmd: None,
            gone_after: DEFAULT_GONE_AFTER,
            max_nodes: crate::liveness::DEFAULT_MAX_NODES,
            channel_capacity: 1024,
        }
    }
}

/// A setting that could not be read. The secret's value never appears in it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A variable has a value that cannot be used.
    #[error("{var}={value:?}: {expected}")]
    Invalid {
        /// The variable.
        var: &'static str,
        /// Its value (never the secret's).
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// A secret file could not be read.
    #[error("{var}: cannot read {path}: {source}")]
    SecretFile {
        /// The `*_FILE` variable.
        var: &'static str,
        /// The file it names.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
    /// Two variables that exclude each other are both set.
    #[error("{0} and {1} are both set; set only one")]
    Conflict(&'static str, &'static str),
}

impl DiscoveryConfig {
    /// Reads the settings from environment variables through `lookup` (for example
    /// `|k| std::env::var(k).ok()`); secret files are read from the file system.
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Self::from_env_with(lookup, |p| std::fs::read(p))
    }

    /// As [`DiscoveryConfig::from_env`], with the file reader passed in (for tests).
    pub fn from_env_with(
        lookup: impl Fn(&str) -> Option<String>,
        read_file: impl Fn(&Path) -> std::io::Result<Vec<u8>>,
    ) -> Result<Self, ConfigError> {
        let get = |var: &str| lookup(var).filter(|v| !v.trim().is_empty());
        let mut config = DiscoveryConfig::default();

        if let Some(v) = get(ENV_GONE_AFTER_MS) {
            config.gone_after =
                Duration::from_millis(parse(ENV_GONE_AFTER_MS, &v, "milliseconds")?);
        }

        if let Some(v) = get(ENV_CONNECT_TO) {
            config.static_nodes = node_list(ENV_CONNECT_TO, &v)?;
        }

        if let Some(v) = get(ENV_EPMD_HOSTS) {
            let mut epmd = EpmdConfig::new(
                v.split(',')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .map(str::to_owned)
                    .collect(),
            );
            if let Some(p) = get(ENV_EPMD_PORT) {
                epmd.port = parse(ENV_EPMD_PORT, &p, "a port number")?;
            }
            if let Some(i) = get(ENV_EPMD_INTERVAL_MS) {
                epmd.interval =
                    Duration::from_millis(parse(ENV_EPMD_INTERVAL_MS, &i, "milliseconds")?);
            }
            config.epmd = Some(epmd);
        }

        if let Some(v) = get(ENV_GOSSIP) {
            if !parse_bool(ENV_GOSSIP, &v)? {
                config.gossip = None;
                return Ok(config);
            }
        }

        let mut gossip = GossipConfig::default();
        if let Some(v) = get(ENV_PORT) {
            gossip.port = parse(ENV_PORT, &v, "a port number")?;
        }
        if let Some(v) = get(ENV_INTERFACE) {
            gossip.bind_addr = parse(ENV_INTERFACE, &v, "an IPv4 address")?;
        }
        if let Some(v) = get(ENV_MULTICAST_ADDR) {
            gossip.multicast_addr = parse(ENV_MULTICAST_ADDR, &v, "an IPv4 address")?;
        }
        if let Some(v) = get(ENV_MULTICAST_IF) {
            gossip.multicast_if = Some(parse(ENV_MULTICAST_IF, &v, "an IPv4 address")?);
        }
        if let Some(v) = get(ENV_TTL) {
            gossip.multicast_ttl = parse(ENV_TTL, &v, "an integer 0..=255")?;
            if gossip.multicast_ttl > 255 {
                return Err(invalid(ENV_TTL, &v, "an integer 0..=255"));
            }
        }
        if let Some(v) = get(ENV_BROADCAST_ONLY) {
            gossip.broadcast_only = parse_bool(ENV_BROADCAST_ONLY, &v)?;
        }
        if let Some(v) = get(ENV_SEND_AS) {
            let node = NodeName::parse(v.trim())
                .map_err(|_| invalid(ENV_SEND_AS, &v, "a node name name@host"))?;
            gossip.ignore_node = Some(node.clone());
            gossip.sender = Some(SenderConfig::new(node));
        }

        let plain = match get(ENV_GOSSIP_PLAIN) {
            Some(v) => parse_bool(ENV_GOSSIP_PLAIN, &v)?,
            None => false,
        };
        // An empty EX_ESDB_CLUSTER_SECRET is a valid (empty) secret, as in Elixir.
        let secret_var = lookup(ENV_SECRET);
        let secret_file = get(ENV_SECRET_FILE);
        gossip.secret = match (plain, secret_var, secret_file) {
            (true, _, _) => None,
            (false, Some(_), Some(_)) => {
                return Err(ConfigError::Conflict(ENV_SECRET, ENV_SECRET_FILE));
            }
            (false, Some(s), None) => Some(Secret::new(s)),
            (false, None, Some(path)) => {
                let path = PathBuf::from(path);
                let bytes = read_file(&path).map_err(|source| ConfigError::SecretFile {
                    var: ENV_SECRET_FILE,
                    path: path.clone(),
                    source,
                })?;
                Some(Secret::new(trim_line_end(&bytes)))
            }
            (false, None, None) => Some(Secret::new(DEFAULT_SECRET)),
        };

        config.gossip = Some(gossip);
        Ok(config)
    }
}

/// Drops the trailing newline that editors and `echo` leave in secret files.
fn trim_line_end(bytes: &[u8]) -> &[u8] {
    let mut end = bytes.len();
    while end > 0 && matches!(bytes[end - 1], b'\n' | b'\r') {
        end -= 1;
    }
    &bytes[..end]
}

fn invalid(var: &'static str, value: &str, expected: &'static str) -> ConfigError {
    ConfigError::Invalid {
        var,
        value: value.to_owned(),
        expected,
    }
}

fn parse<T: std::str::FromStr>(
    var: &'static str,
    value: &str,
    expected: &'static str,
) -> Result<T, ConfigError> {
    value
        .trim()
        .parse()
        .map_err(|_| invalid(var, value, expected))
}

fn parse_bool(var: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(invalid(var, value, "true or false")),
    }
}

fn node_list(var: &'static str, value: &str) -> Result<Vec<NodeName>, ConfigError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|n| {
            NodeName::parse(n)
                .map_err(|_| invalid(var, value, "node names name@host, comma-separated"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn no_files(_: &Path) -> std::io::Result<Vec<u8>> {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no such file",
        ))
    }

    fn gossip(c: &DiscoveryConfig) -> &GossipConfig {
        c.gossip.as_ref().expect("gossip on")
    }

    #[test]
    fn defaults_match_exesdb() {
        let c = DiscoveryConfig::from_env_with(env(&[]), no_files).expect("config");
        let g = gossip(&c);
        assert_eq!(g.port, 45892);
        assert_eq!(g.bind_addr, Ipv4Addr::UNSPECIFIED);
        assert_eq!(g.multicast_addr, Ipv4Addr::new(239, 255, 0, 1));
        assert_eq!(g.multicast_ttl, 1);
        assert!(g.multicast_loop && !g.broadcast_only);
        assert_eq!(g.secret, Some(Secret::new("dev_cluster_secret")));
        assert!(g.sender.is_none(), "listen-only by default");
        assert!(c.static_nodes.is_empty() && c.epmd.is_none());
    }

    #[test]
    fn reads_every_variable() {
        let c = DiscoveryConfig::from_env_with(
            env(&[
                (ENV_PORT, "45999"),
                (ENV_INTERFACE, "127.0.0.1"),
                (ENV_MULTICAST_ADDR, "239.1.2.3"),
                (ENV_SECRET, "s"),
                (ENV_CONNECT_TO, " a@h1, b@h2 ,"),
                (ENV_MULTICAST_IF, "127.0.0.1"),
                (ENV_TTL, "2"),
                (ENV_BROADCAST_ONLY, "true"),
                (ENV_SEND_AS, "gater@h"),
                (ENV_GONE_AFTER_MS, "1500"),
                (ENV_EPMD_HOSTS, "h1,h2"),
                (ENV_EPMD_PORT, "4370"),
                (ENV_EPMD_INTERVAL_MS, "100"),
            ]),
            no_files,
        )
        .expect("config");
        let g = gossip(&c);
        assert_eq!(g.port, 45999);
        assert_eq!(g.bind_addr, Ipv4Addr::LOCALHOST);
        assert_eq!(g.multicast_addr, Ipv4Addr::new(239, 1, 2, 3));
        assert_eq!(g.multicast_if, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(g.multicast_ttl, 2);
        assert!(g.broadcast_only);
        assert_eq!(g.secret, Some(Secret::new("s")));
        assert_eq!(g.sender.as_ref().map(|s| s.node.as_str()), Some("gater@h"));
        assert_eq!(c.gone_after, Duration::from_millis(1500));
        assert_eq!(
            c.static_nodes
                .iter()
                .map(NodeName::as_str)
                .collect::<Vec<_>>(),
            ["a@h1", "b@h2"]
        );
        let e = c.epmd.expect("epmd");
        assert_eq!(e.hosts, ["h1", "h2"]);
        assert_eq!((e.port, e.interval), (4370, Duration::from_millis(100)));
    }

    #[test]
    fn secret_file_and_plain_mode() {
        let files = |p: &Path| {
            if p == Path::new("/run/secrets/gossip") {
                Ok(b"from-file\n".to_vec())
            } else {
                no_files(p)
            }
        };
        let c =
            DiscoveryConfig::from_env_with(env(&[(ENV_SECRET_FILE, "/run/secrets/gossip")]), files)
                .expect("config");
        assert_eq!(gossip(&c).secret, Some(Secret::new("from-file")));

        let c = DiscoveryConfig::from_env_with(env(&[(ENV_GOSSIP_PLAIN, "true")]), no_files)
            .expect("config");
        assert_eq!(gossip(&c).secret, None);

        let c =
            DiscoveryConfig::from_env_with(env(&[(ENV_GOSSIP, "off")]), no_files).expect("config");
        assert!(c.gossip.is_none());
    }

    #[test]
    fn errors_name_the_variable_and_never_the_secret() {
        let err = |pairs: &[(&str, &str)]| {
            DiscoveryConfig::from_env_with(env(pairs), no_files)
                .expect_err("must fail")
                .to_string()
        };
        assert!(err(&[(ENV_PORT, "70000")]).starts_with(ENV_PORT));
        assert!(err(&[(ENV_INTERFACE, "eth0")]).starts_with(ENV_INTERFACE));
        assert!(err(&[(ENV_MULTICAST_ADDR, "x")]).starts_with(ENV_MULTICAST_ADDR));
        assert!(err(&[(ENV_CONNECT_TO, "a@b,nope")]).starts_with(ENV_CONNECT_TO));
        assert!(err(&[(ENV_TTL, "300")]).starts_with(ENV_TTL));
        assert!(err(&[(ENV_BROADCAST_ONLY, "maybe")]).starts_with(ENV_BROADCAST_ONLY));
        let e = err(&[(ENV_SECRET, "hunter2"), (ENV_SECRET_FILE, "/x")]);
        assert!(e.contains(ENV_SECRET_FILE) && !e.contains("hunter2"), "{e}");
        let e = err(&[(ENV_SECRET_FILE, "/nonexistent")]);
        assert!(e.starts_with(ENV_SECRET_FILE), "{e}");
        let c = DiscoveryConfig::from_env_with(env(&[(ENV_SECRET, "hunter2")]), no_files)
            .expect("config");
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
