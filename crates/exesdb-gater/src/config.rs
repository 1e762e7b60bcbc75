//! Settings: command-line flags, then environment variables (the Elixir gater's names),
//! then an optional TOML file, then defaults.
//!
//! Every setting has one environment variable; flags and TOML keys are mapped onto those
//! names first, so one reader (`Layers::get`) applies the precedence for all of them, and
//! gater-gossip's own environment reader sees the merged view too. Secrets come from a
//! variable or its `*_FILE` twin, never both, and never appear in an error.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use gater_gossip::DiscoveryConfig;

/// One named setting: its TOML key and environment variable.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// Key in the TOML file.
    pub key: &'static str,
    /// Environment variable.
    pub env: &'static str,
    /// Whether the value is a secret (never printed).
    pub secret: bool,
}

macro_rules! settings {
    ($($name:ident = $key:literal, $env:literal, $secret:literal;)*) => {
        $(#[doc = concat!("`", $env, "` (TOML `", $key, "`).")]
        pub const $name: Setting = Setting { key: $key, env: $env, secret: $secret };)*
        /// Every setting the TOML file may hold.
        pub const ALL: &[Setting] = &[$($name),*];
    };
}

settings! {
    LISTEN = "listen", "EX_ESDB_GATER_LISTEN", false;
    COOKIE = "cookie", "EX_ESDB_COOKIE", true;
    COOKIE_FILE = "cookie_file", "EX_ESDB_COOKIE_FILE", false;
    RELEASE_COOKIE = "release_cookie", "RELEASE_COOKIE", true;
    RELEASE_COOKIE_FILE = "release_cookie_file", "RELEASE_COOKIE_FILE", false;
    CLUSTER_SECRET = "cluster_secret", "EX_ESDB_CLUSTER_SECRET", true;
    CLUSTER_SECRET_FILE = "cluster_secret_file", "EX_ESDB_CLUSTER_SECRET_FILE", false;
    CONNECT_TO = "connect_to", "EX_ESDB_GATER_CONNECT_TO", false;
    PUB_SUB = "pub_sub", "EX_ESDB_PUB_SUB", false;
    LOG_LEVEL = "log_level", "LOG_LEVEL", false;
    LOG_FORMAT = "log_format", "EX_ESDB_GATER_LOG_FORMAT", false;
    CLUSTER_PORT = "cluster_port", "EX_ESDB_CLUSTER_PORT", false;
    CLUSTER_INTERFACE = "cluster_interface", "EX_ESDB_CLUSTER_INTERFACE", false;
    GOSSIP_MULTICAST_ADDR = "gossip_multicast_addr", "EX_ESDB_GOSSIP_MULTICAST_ADDR", false;
    GOSSIP = "gossip", "EX_ESDB_GATER_GOSSIP", false;
    NODE_NAME = "node_name", "EX_ESDB_GATER_NODE_NAME", false;
    EPMD_PORT = "epmd_port", "ERL_EPMD_PORT", false;
    AUTH_SECRET = "auth_secret", "EX_ESDB_GATER_AUTH_SECRET", true;
    AUTH_SECRET_FILE = "auth_secret_file", "EX_ESDB_GATER_AUTH_SECRET_FILE", false;
    TLS_CERT = "tls_cert", "EX_ESDB_GATER_TLS_CERT", false;
    TLS_KEY = "tls_key", "EX_ESDB_GATER_TLS_KEY", false;
    MAX_BODY_BYTES = "max_body_bytes", "EX_ESDB_GATER_MAX_BODY_BYTES", false;
    MAX_READ_COUNT = "max_read_count", "EX_ESDB_GATER_MAX_READ_COUNT", false;
    MAX_SSE_STREAMS = "max_sse_streams", "EX_ESDB_GATER_MAX_SSE_STREAMS", false;
    REQUEST_TIMEOUT_MS = "request_timeout_ms", "EX_ESDB_GATER_REQUEST_TIMEOUT_MS", false;
    SHUTDOWN_GRACE_MS = "shutdown_grace_ms", "EX_ESDB_GATER_SHUTDOWN_GRACE_MS", false;
    SSE_KEEPALIVE_MS = "sse_keepalive_ms", "EX_ESDB_GATER_SSE_KEEPALIVE_MS", false;
    NET_TICKTIME = "net_ticktime", "EX_ESDB_GATER_NET_TICKTIME", false;
    WORKER_THREADS = "worker_threads", "EX_ESDB_GATER_WORKER_THREADS", false;
}

/// Default HTTP address.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 4000);
/// Default PubSub name for ExESDB's operational messages.
pub const DEFAULT_PUB_SUB: &str = "ex_esdb_pubsub";

/// A setting that stops start-up; its `Display` is the one line printed, naming the
/// setting and never a secret's value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value that cannot be used.
    #[error("{setting}={value}: expected {expected}")]
    Invalid {
        /// The variable (or flag, or TOML key) at fault.
        setting: String,
        /// Its value, or `<redacted>` for secrets.
        value: String,
        /// What would do.
        expected: String,
    },
    /// A required setting is missing.
    #[error("{0}")]
    Missing(String),
    /// A discovery setting (gater-gossip's message names the variable).
    #[error("{0}")]
    Discovery(String),
    /// A file could not be read.
    #[error("{setting}: cannot read {path}: {reason}")]
    File {
        /// The setting naming the file.
        setting: String,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Both a secret and its `*_FILE` twin are set.
    #[error("{0} and {1} are both set; set only one")]
    Conflict(&'static str, &'static str),
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line.
    Json,
}

/// The settings with flags, environment and file merged.
#[derive(Debug, Default, Clone)]
pub struct Layers {
    flags: BTreeMap<&'static str, String>,
    env: BTreeMap<String, String>,
    file: BTreeMap<&'static str, String>,
    file_path: Option<PathBuf>,
}

impl Layers {
    /// Layers from flags (already mapped to variable names), an environment and an
    /// optional TOML text.
    pub fn new(
        flags: BTreeMap<&'static str, String>,
        env: impl IntoIterator<Item = (String, String)>,
        toml_text: Option<(&Path, &str)>,
    ) -> Result<Self, ConfigError> {
        let mut file = BTreeMap::new();
        let mut file_path = None;
        if let Some((path, text)) = toml_text {
            file_path = Some(path.to_path_buf());
            let table: toml::Table =
                text.parse()
                    .map_err(|e: toml::de::Error| ConfigError::Invalid {
                        setting: format!("config file {}", path.display()),
                        value: "<file>".into(),
                        expected: format!("TOML ({})", e.message()),
                    })?;
            for (k, v) in table {
                let Some(s) = ALL.iter().find(|s| s.key == k) else {
                    return Err(ConfigError::Invalid {
                        setting: format!("{}: key `{k}`", path.display()),
                        value: "…".into(),
                        expected: "a known setting (see docs/configuration.md)".into(),
                    });
                };
                let text = match v {
                    toml::Value::String(s) => s,
                    toml::Value::Integer(i) => i.to_string(),
                    toml::Value::Boolean(b) => b.to_string(),
                    toml::Value::Array(a) => a
                        .iter()
                        .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
                        .collect::<Vec<_>>()
                        .join(","),
                    other => {
                        return Err(ConfigError::Invalid {
                            setting: format!("{}: key `{k}`", path.display()),
                            value: if s.secret {
                                "<redacted>".into()
                            } else {
                                other.to_string()
                            },
                            expected: "a string, integer, boolean or list".into(),
                        });
                    }
                };
                file.insert(s.env, text);
            }
        }
        Ok(Self {
            flags,
            env: env.into_iter().collect(),
            file,
            file_path,
        })
    }

    /// The value of a variable: flag, then environment, then file. Empty values count as unset.
    pub fn get(&self, env: &str) -> Option<String> {
        self.flags
            .get(env)
            .or_else(|| self.env.get(env))
            .or_else(|| self.file.get(env))
            .filter(|v| !v.trim().is_empty())
            .cloned()
    }

    /// Whether the variable is set at all (even empty), for secrets where empty is a value.
    fn raw(&self, env: &str) -> Option<String> {
        self.flags
            .get(env)
            .or_else(|| self.env.get(env))
            .or_else(|| self.file.get(env))
            .cloned()
    }

    /// Where a value came from, for messages.
    fn name(&self, s: Setting) -> String {
        if self.flags.contains_key(s.env) {
            format!("--{}", s.key.replace('_', "-"))
        } else if self.env.contains_key(s.env) || self.file_path.is_none() {
            s.env.to_owned()
        } else {
            match &self.file_path {
                Some(p) if self.file.contains_key(s.env) => format!("{} ({})", s.key, p.display()),
                _ => s.env.to_owned(),
            }
        }
    }

    fn parse<T: std::str::FromStr>(
        &self,
        s: Setting,
        expected: &str,
    ) -> Result<Option<T>, ConfigError> {
        match self.get(s.env) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| ConfigError::Invalid {
                    setting: self.name(s),
                    value: if s.secret {
                        "<redacted>".into()
                    } else {
                        format!("{v:?}")
                    },
                    expected: expected.into(),
                }),
        }
    }

    /// A secret from its variable or its `*_FILE` twin.
    fn secret(&self, var: Setting, file: Setting) -> Result<Option<String>, ConfigError> {
        match (self.raw(var.env), self.get(file.env)) {
            (Some(_), Some(_)) => Err(ConfigError::Conflict(var.env, file.env)),
            (Some(v), None) => Ok(Some(v)),
            (None, Some(path)) => {
                let bytes = std::fs::read(&path).map_err(|e| ConfigError::File {
                    setting: self.name(file),
                    path: PathBuf::from(&path),
                    reason: e.kind().to_string(),
                })?;
                let text = String::from_utf8(bytes).map_err(|_| ConfigError::Invalid {
                    setting: self.name(file),
                    value: path.clone(),
                    expected: "a UTF-8 text file".into(),
                })?;
                Ok(Some(text.trim_end_matches(['\n', '\r']).to_owned()))
            }
            (None, None) => Ok(None),
        }
    }
}

/// Everything the daemon needs.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// HTTP address (forced to 127.0.0.1 when there is no auth secret).
    pub listen: SocketAddr,
    /// Whether `listen` was moved to loopback for lack of an auth secret.
    pub listen_forced_local: bool,
    /// The Erlang cookie.
    pub cookie: Secret,
    /// Discovery settings (gossip, static nodes), from gater-gossip's reader.
    pub discovery: DiscoveryConfig,
    /// PubSub name for ExESDB's operational messages.
    pub pub_sub: String,
    /// Log filter (`LOG_LEVEL`).
    pub log_level: String,
    /// Log format.
    pub log_format: LogFormat,
    /// Our hidden node's name (`None`: gater-pool's default).
    pub node_name: Option<String>,
    /// EPMD port of the ExESDB hosts.
    pub epmd_port: u16,
    /// `net_ticktime` of the distribution connections (as the cluster's
    /// `-kernel net_ticktime`, in whole seconds).
    pub net_ticktime: Duration,
    /// The token secret; `None` turns authentication off.
    pub auth_secret: Option<Secret>,
    /// TLS certificate chain and key (PEM files).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Limits of the HTTP layer.
    pub limits: gater_http::Limits,
    /// How long in-flight requests get at shutdown.
    pub shutdown_grace: Duration,
    /// Runtime threads: 1 runs everything on one thread (a current-thread runtime), N > 1
    /// a multi-thread runtime with N workers; `None` picks by the machine's cores.
    pub worker_threads: Option<usize>,
}

/// A secret string whose `Debug` shows nothing of it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// The value (hand it only to what needs it).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl DaemonConfig {
    /// Reads and checks every setting.
    pub fn from_layers(l: &Layers) -> Result<Self, ConfigError> {
        let mut listen = l
            .parse::<SocketAddr>(LISTEN, "host:port, for example 0.0.0.0:4000")?
            .unwrap_or(DEFAULT_LISTEN);

        let cookie = match l.secret(COOKIE, COOKIE_FILE)? {
            Some(c) => c,
            None => l.secret(RELEASE_COOKIE, RELEASE_COOKIE_FILE)?.ok_or_else(|| {
                ConfigError::Missing(
                    "EX_ESDB_COOKIE is not set (nor EX_ESDB_COOKIE_FILE, RELEASE_COOKIE, RELEASE_COOKIE_FILE): the gateway needs the cluster's Erlang cookie".into(),
                )
            })?,
        };
        if cookie.trim().is_empty() {
            return Err(ConfigError::Missing("EX_ESDB_COOKIE is empty".into()));
        }

        // gater-gossip reads its own variables; it sees the merged layers. Its errors name
        // the variable and never print the secret.
        let discovery = DiscoveryConfig::from_env(|k| {
            if k == CLUSTER_SECRET.env {
                l.raw(k)
            } else {
                l.get(k)
            }
        })
        .map_err(|e| ConfigError::Discovery(e.to_string()))?;

        let pub_sub = l.get(PUB_SUB.env).unwrap_or_else(|| DEFAULT_PUB_SUB.into());
        if !pub_sub
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            return Err(ConfigError::Invalid {
                setting: l.name(PUB_SUB),
                value: format!("{pub_sub:?}"),
                expected: "an atom name [A-Za-z0-9_.]+".into(),
            });
        }
        let log_level = l.get(LOG_LEVEL.env).unwrap_or_else(|| "info".into());
        check_log_level(&log_level).map_err(|expected| ConfigError::Invalid {
            setting: l.name(LOG_LEVEL),
            value: format!("{log_level:?}"),
            expected,
        })?;
        let log_format = match l.get(LOG_FORMAT.env).as_deref().map(str::trim) {
            None | Some("plain") | Some("text") => LogFormat::Plain,
            Some("json") => LogFormat::Json,
            Some(v) => {
                return Err(ConfigError::Invalid {
                    setting: l.name(LOG_FORMAT),
                    value: format!("{v:?}"),
                    expected: "plain or json".into(),
                });
            }
        };
        let node_name = l.get(NODE_NAME.env);
        if let Some(n) = &node_name {
            if gater_gossip::NodeName::parse(n).is_err() {
                return Err(ConfigError::Invalid {
                    setting: l.name(NODE_NAME),
                    value: format!("{n:?}"),
                    expected: "a node name name@host".into(),
                });
            }
        }
        let epmd_port = l.parse(EPMD_PORT, "a port number")?.unwrap_or(4369);
        let net_ticktime = nonzero::<u64>(
            l,
            NET_TICKTIME,
            "seconds, a positive integer (as -kernel net_ticktime)",
        )?
        .map_or(gater_pool::DEFAULT_NET_TICKTIME, Duration::from_secs);
        let auth_secret = l.secret(AUTH_SECRET, AUTH_SECRET_FILE)?;
        if let Some(s) = &auth_secret {
            if s.len() < 16 {
                return Err(ConfigError::Invalid {
                    setting: l.name(AUTH_SECRET),
                    value: "<redacted>".into(),
                    expected: "at least 16 bytes".into(),
                });
            }
        }
        let tls = match (l.get(TLS_CERT.env), l.get(TLS_KEY.env)) {
            (Some(c), Some(k)) => Some((PathBuf::from(c), PathBuf::from(k))),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::Missing(format!(
                    "{} is set but {} is not",
                    l.name(TLS_CERT),
                    TLS_KEY.env
                )));
            }
            (None, Some(_)) => {
                return Err(ConfigError::Missing(format!(
                    "{} is set but {} is not",
                    l.name(TLS_KEY),
                    TLS_CERT.env
                )));
            }
        };
        let d = gater_http::Limits::default();
        let positive = "a positive integer";
        let limits = gater_http::Limits {
            max_body_bytes: nonzero(l, MAX_BODY_BYTES, positive)?.unwrap_or(d.max_body_bytes),
            max_read_count: nonzero(l, MAX_READ_COUNT, positive)?.unwrap_or(d.max_read_count),
            max_sse_streams: nonzero(l, MAX_SSE_STREAMS, positive)?.unwrap_or(d.max_sse_streams),
            request_timeout: nonzero::<u64>(l, REQUEST_TIMEOUT_MS, "milliseconds")?
                .map_or(d.request_timeout, Duration::from_millis),
            sse_keepalive: nonzero::<u64>(l, SSE_KEEPALIVE_MS, "milliseconds")?
                .map_or(d.sse_keepalive, Duration::from_millis),
        };
        let shutdown_grace = l
            .parse::<u64>(SHUTDOWN_GRACE_MS, "milliseconds")?
            .map_or(Duration::from_secs(10), Duration::from_millis);
        let worker_threads = nonzero::<usize>(l, WORKER_THREADS, "a number of threads, 1 or more")?;

        let mut listen_forced_local = false;
        if auth_secret.is_none() && !listen.ip().is_loopback() {
            listen.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
            listen_forced_local = true;
        }
        Ok(Self {
            listen,
            listen_forced_local,
            cookie: Secret(cookie),
            discovery,
            pub_sub,
            log_level,
            log_format,
            node_name,
            epmd_port,
            net_ticktime,
            auth_secret: auth_secret.map(Secret),
            tls,
            limits,
            shutdown_grace,
            worker_threads,
        })
    }
}

/// The token secret alone (for `token issue`).
pub fn auth_secret(l: &Layers) -> Result<Option<Secret>, ConfigError> {
    Ok(l.secret(AUTH_SECRET, AUTH_SECRET_FILE)?.map(Secret))
}

fn nonzero<T: std::str::FromStr + PartialEq + Default>(
    l: &Layers,
    s: Setting,
    expected: &str,
) -> Result<Option<T>, ConfigError> {
    match l.parse::<T>(s, expected)? {
        Some(v) if v == T::default() => Err(ConfigError::Invalid {
            setting: l.name(s),
            value: "0".into(),
            expected: expected.into(),
        }),
        v => Ok(v),
    }
}

/// Accepts Elixir's levels (`debug`, `info`, `warning`, `error`, ...) and tracing
/// filters made of them (`cluster=debug,info`).
fn check_log_level(v: &str) -> Result<(), String> {
    const LEVELS: [&str; 12] = [
        "trace",
        "debug",
        "info",
        "notice",
        "warn",
        "warning",
        "error",
        "critical",
        "alert",
        "emergency",
        "off",
        "none",
    ];
    let ok = v.split(',').all(|d| {
        let level = d.rsplit_once('=').map_or(
            d,
            |(target, level)| {
                if target.trim().is_empty() { "" } else { level }
            },
        );
        LEVELS.contains(&level.trim().to_ascii_lowercase().as_str())
    });
    if ok {
        Ok(())
    } else {
        Err("debug, info, warning or error (or a filter such as cluster=debug,info)".into())
    }
}

/// Maps `LOG_LEVEL` onto a tracing filter.
pub fn log_filter(v: &str) -> String {
    v.split(',')
        .map(|d| {
            let (target, level) = match d.rsplit_once('=') {
                Some((t, l)) => (Some(t.trim()), l),
                None => (None, d),
            };
            let level = match level.trim().to_ascii_lowercase().as_str() {
                "warning" => "warn".to_owned(),
                "notice" => "info".to_owned(),
                "critical" | "alert" | "emergency" => "error".to_owned(),
                "none" => "off".to_owned(),
                other => other.to_owned(),
            };
            match target {
                Some(t) => format!("{t}={level}"),
                None => level,
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers(
        flags: &[(&'static str, &str)],
        env: &[(&str, &str)],
        file: Option<&str>,
    ) -> Result<Layers, ConfigError> {
        Layers::new(
            flags.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
            env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
            file.map(|t| (Path::new("gater.toml"), t)),
        )
    }

    #[test]
    fn missing_cookie_names_the_setting() {
        let e = DaemonConfig::from_layers(&layers(&[], &[], None).unwrap_or_default())
            .expect_err("refused");
        assert!(
            e.to_string().starts_with("EX_ESDB_COOKIE is not set"),
            "{e}"
        );
    }

    #[test]
    fn precedence_is_flag_env_file_default() {
        let file = "listen = \"127.0.0.1:1111\"\ncookie = \"c\"\nlog_level = \"debug\"\npub_sub = \"from_file\"";
        let l = layers(
            &[("EX_ESDB_GATER_LISTEN", "127.0.0.1:3333")],
            &[
                ("EX_ESDB_GATER_LISTEN", "127.0.0.1:2222"),
                ("LOG_LEVEL", "warning"),
            ],
            Some(file),
        )
        .expect("layers");
        let c = DaemonConfig::from_layers(&l).expect("config");
        assert_eq!(c.listen.port(), 3333);
        assert_eq!(c.log_level, "warning");
        assert_eq!(c.pub_sub, "from_file");
        assert_eq!(
            c.limits.max_body_bytes,
            gater_http::Limits::default().max_body_bytes
        );
        assert_eq!(c.cookie.expose(), "c");
    }

    #[test]
    fn worker_threads_from_flag_env_or_file() {
        let c = DaemonConfig::from_layers(
            &layers(&[], &[("EX_ESDB_COOKIE", "c")], None).expect("layers"),
        )
        .expect("config");
        assert_eq!(c.worker_threads, None);
        let l = layers(
            &[("EX_ESDB_GATER_WORKER_THREADS", "1")],
            &[
                ("EX_ESDB_COOKIE", "c"),
                ("EX_ESDB_GATER_WORKER_THREADS", "3"),
            ],
            Some("worker_threads = 4"),
        )
        .expect("layers");
        assert_eq!(
            DaemonConfig::from_layers(&l)
                .expect("config")
                .worker_threads,
            Some(1)
        );
        let l =
            layers(&[], &[("EX_ESDB_COOKIE", "c")], Some("worker_threads = 4")).expect("layers");
        assert_eq!(
            DaemonConfig::from_layers(&l)
                .expect("config")
                .worker_threads,
            Some(4)
        );
        for bad in ["0", "-1", "two"] {
            let l = layers(
                &[],
                &[
                    ("EX_ESDB_COOKIE", "c"),
                    ("EX_ESDB_GATER_WORKER_THREADS", bad),
                ],
                None,
            )
            .expect("layers");
            let e = DaemonConfig::from_layers(&l).expect_err(bad).to_string();
            assert!(e.contains("EX_ESDB_GATER_WORKER_THREADS"), "{e}");
        }
    }

    #[test]
    fn net_ticktime_from_flag_env_or_file() {
        let c = DaemonConfig::from_layers(
            &layers(&[], &[("EX_ESDB_COOKIE", "c")], None).expect("layers"),
        )
        .expect("config");
        assert_eq!(c.net_ticktime, Duration::from_secs(60));
        let l = layers(
            &[("EX_ESDB_GATER_NET_TICKTIME", "20")],
            &[
                ("EX_ESDB_COOKIE", "c"),
                ("EX_ESDB_GATER_NET_TICKTIME", "30"),
            ],
            Some("net_ticktime = 40"),
        )
        .expect("layers");
        assert_eq!(
            DaemonConfig::from_layers(&l).expect("config").net_ticktime,
            Duration::from_secs(20)
        );
        let l = layers(&[], &[("EX_ESDB_COOKIE", "c")], Some("net_ticktime = 40")).expect("layers");
        assert_eq!(
            DaemonConfig::from_layers(&l).expect("config").net_ticktime,
            Duration::from_secs(40)
        );
        for bad in ["0", "-5", "1.5", "60s"] {
            let l = layers(
                &[],
                &[("EX_ESDB_COOKIE", "c"), ("EX_ESDB_GATER_NET_TICKTIME", bad)],
                None,
            )
            .expect("layers");
            let e = DaemonConfig::from_layers(&l)
                .expect_err("refused")
                .to_string();
            assert!(e.starts_with("EX_ESDB_GATER_NET_TICKTIME="), "{e}");
        }
    }

    #[test]
    fn invalid_values_name_the_setting_and_hide_secrets() {
        let l = layers(
            &[],
            &[("EX_ESDB_COOKIE", "c"), ("EX_ESDB_GATER_LISTEN", "nope")],
            None,
        )
        .expect("layers");
        let e = DaemonConfig::from_layers(&l)
            .expect_err("refused")
            .to_string();
        assert!(e.starts_with("EX_ESDB_GATER_LISTEN=\"nope\""), "{e}");

        let l = layers(
            &[],
            &[
                ("EX_ESDB_COOKIE", "c"),
                ("EX_ESDB_GATER_AUTH_SECRET", "short-secret"),
            ],
            None,
        )
        .expect("layers");
        let e = DaemonConfig::from_layers(&l)
            .expect_err("refused")
            .to_string();
        assert!(
            e.contains("EX_ESDB_GATER_AUTH_SECRET") && !e.contains("short-secret"),
            "{e}"
        );

        let l = layers(
            &[],
            &[("EX_ESDB_COOKIE", "c"), ("EX_ESDB_COOKIE_FILE", "/x")],
            None,
        )
        .expect("layers");
        assert!(
            DaemonConfig::from_layers(&l)
                .expect_err("refused")
                .to_string()
                .contains("both set")
        );

        let l = layers(
            &[],
            &[("EX_ESDB_COOKIE", "c"), ("EX_ESDB_CLUSTER_PORT", "99999")],
            None,
        )
        .expect("layers");
        let e = DaemonConfig::from_layers(&l)
            .expect_err("refused")
            .to_string();
        assert!(e.contains("EX_ESDB_CLUSTER_PORT"), "{e}");

        assert!(
            layers(&[], &[], Some("bogus_key = 1"))
                .expect_err("refused")
                .to_string()
                .contains("bogus_key")
        );
    }

    #[test]
    fn secret_files_are_read_and_no_secret_means_loopback_only() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("cookie");
        std::fs::write(&p, "from-file\n").expect("write");
        let l = layers(
            &[],
            &[
                ("EX_ESDB_COOKIE_FILE", p.to_str().unwrap_or_default()),
                ("EX_ESDB_GATER_LISTEN", "0.0.0.0:4000"),
            ],
            None,
        )
        .expect("layers");
        let c = DaemonConfig::from_layers(&l).expect("config");
        assert_eq!(c.cookie.expose(), "from-file");
        assert!(c.listen_forced_local && c.listen.ip().is_loopback());
        assert!(!format!("{c:?}").contains("from-file"));
    }
}
