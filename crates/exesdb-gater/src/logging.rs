//! Log set-up: one target per component (`cluster`, `api`, `http`, `system`), as the
//! Elixir gater's themed loggers, for the libraries' module targets too.
//!
//! gater-pool, gater-registry and gater-gossip log under their module paths
//! (`gater_pool::pool`, ...); here they are the `cluster` component, gater-api's are
//! `api`, gater-http's `http`, this binary's `system`. `LOG_LEVEL=cluster=debug` reaches
//! them (the filter names their modules too), and every line shows the component as its
//! `target`, with the module beside it (`module`) when that is more precise.

use std::fmt;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{DefaultFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::{DaemonConfig, LogFormat};

/// Each component and the module targets that belong to it.
pub const COMPONENTS: &[(&str, &[&str])] = &[
    ("cluster", &["gater_pool", "gater_registry", "gater_gossip"]),
    ("api", &["gater_api"]),
    ("http", &["gater_http"]),
    ("system", &["exesdb_gater"]),
];

/// The component of a target: itself when it names one, the component of its crate when
/// it is a module path of ours, `None` for anything else (dependencies).
pub fn component_of(target: &str) -> Option<&'static str> {
    let krate = target.split("::").next().unwrap_or(target);
    COMPONENTS
        .iter()
        .find(|(c, modules)| *c == krate || modules.contains(&krate))
        .map(|(c, _)| *c)
}

/// A filter directive for a component names its modules as well:
/// `cluster=debug` → `cluster=debug,gater_pool=debug,gater_registry=debug,gater_gossip=debug`.
pub fn expand_components(filter: &str) -> String {
    filter
        .split(',')
        .flat_map(|d| {
            let mut out = vec![d.to_owned()];
            if let Some((target, level)) = d.split_once('=') {
                if let Some((_, modules)) = COMPONENTS.iter().find(|(c, _)| *c == target.trim()) {
                    out.extend(modules.iter().map(|m| format!("{m}={level}")));
                }
            }
            out
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Installs the global subscriber.
pub fn init(cfg: &DaemonConfig) {
    let filter = expand_components(&crate::config::log_filter(&cfg.log_level));
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .event_format(ComponentFormat {
            json: cfg.log_format == LogFormat::Json,
        })
        .init();
}

/// Lines with the component as target: plain
/// `2026-11-28T04:00:00.000000Z  INFO cluster: node up node=... module=gater_pool::pool`,
/// or one JSON object (`timestamp`, `level`, `target`, `module`, the event's fields,
/// `spans`).
#[derive(Debug, Clone, Copy)]
pub struct ComponentFormat {
    /// One JSON object per line.
    pub json: bool,
}

impl<S, N> FormatEvent<S, N> for ComponentFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let target = meta.target();
        let component = component_of(target).unwrap_or(target);
        let module = (component != target).then_some(target);
        let mut now = String::new();
        SystemTime.format_time(&mut Writer::new(&mut now))?;
        let spans: Vec<(String, String)> = ctx
            .event_scope()
            .map(|scope| {
                scope
                    .from_root()
                    .map(|span| {
                        let ext = span.extensions();
                        let fields = ext
                            .get::<FormattedFields<N>>()
                            .map(|f| f.fields.clone())
                            .unwrap_or_default();
                        (span.name().to_owned(), fields)
                    })
                    .collect()
            })
            .unwrap_or_default();
        if self.json {
            let mut fields = JsonFields::default();
            event.record(&mut fields);
            let mut obj = serde_json::Map::new();
            obj.insert("timestamp".into(), now.into());
            obj.insert("level".into(), meta.level().as_str().into());
            obj.insert("target".into(), component.into());
            if let Some(m) = module {
                obj.insert("module".into(), m.into());
            }
            for (k, v) in fields.0 {
                obj.entry(k).or_insert(v);
            }
            if !spans.is_empty() {
                let list: Vec<serde_json::Value> = spans
                    .into_iter()
                    .map(|(name, fields)| serde_json::json!({ "name": name, "fields": fields }))
                    .collect();
                obj.insert("spans".into(), list.into());
            }
            writeln!(writer, "{}", serde_json::Value::Object(obj))
        } else {
            write!(writer, "{now} {:>5} {component}:", meta.level())?;
            for (name, fields) in &spans {
                if fields.is_empty() {
                    write!(writer, " {name}:")?;
                } else {
                    write!(writer, " {name}{{{fields}}}:")?;
                }
            }
            write!(writer, " ")?;
            DefaultFields::new().format_fields(writer.by_ref(), event)?;
            if let Some(m) = module {
                write!(writer, " module={m}")?;
            }
            writeln!(writer)
        }
    }
}

/// The fields of an event as JSON values.
#[derive(Default)]
struct JsonFields(Vec<(String, serde_json::Value)>);

impl tracing::field::Visit for JsonFields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        self.0
            .push((field.name().to_owned(), format!("{value:?}").into()));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.push((field.name().to_owned(), value.into()));
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.push((field.name().to_owned(), value.into()));
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.push((field.name().to_owned(), value.into()));
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.push((field.name().to_owned(), value.into()));
    }
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.0.push((field.name().to_owned(), value.into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_modules_are_their_components() {
        assert_eq!(component_of("gater_pool::pool"), Some("cluster"));
        assert_eq!(component_of("gater_registry"), Some("cluster"));
        assert_eq!(component_of("gater_gossip::discovery"), Some("cluster"));
        assert_eq!(component_of("gater_api::gater"), Some("api"));
        assert_eq!(component_of("gater_http::sse"), Some("http"));
        assert_eq!(component_of("cluster"), Some("cluster"));
        assert_eq!(component_of("system"), Some("system"));
        assert_eq!(component_of("hyper::proto"), None);
        assert_eq!(component_of("gater_poolish"), None);
    }

    #[test]
    fn component_filters_name_their_modules() {
        assert_eq!(
            expand_components("cluster=debug,info"),
            "cluster=debug,gater_pool=debug,gater_registry=debug,gater_gossip=debug,info"
        );
        assert_eq!(
            expand_components("gater_pool::core=trace,api=warn"),
            "gater_pool::core=trace,api=warn,gater_api=warn"
        );
    }

    #[test]
    fn lines_name_the_component_and_keep_the_module() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0
                    .lock()
                    .map_err(|_| std::io::ErrorKind::Other)?
                    .extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        for json in [true, false] {
            let buf = Buf::default();
            let w = buf.clone();
            let sub = tracing_subscriber::fmt()
                .with_writer(move || w.clone())
                .with_ansi(false)
                .event_format(ComponentFormat { json })
                .finish();
            tracing::subscriber::with_default(sub, || {
                let span = tracing::info_span!("dist_peer", peer = "n@h");
                let _g = span.enter();
                tracing::info!(target: "gater_pool::pool", node = "n@h", n = 3, "node up");
            });
            let text = String::from_utf8(buf.0.lock().map(|b| b.clone()).unwrap_or_default())
                .unwrap_or_default();
            if json {
                let v: serde_json::Value = serde_json::from_str(text.trim()).expect("json line");
                assert_eq!(v["target"], "cluster", "{text}");
                assert_eq!(v["module"], "gater_pool::pool", "{text}");
                assert_eq!(v["message"], "node up", "{text}");
                assert_eq!(v["n"], 3, "{text}");
                assert_eq!(v["level"], "INFO", "{text}");
                assert_eq!(v["spans"][0]["name"], "dist_peer", "{text}");
            } else {
                assert!(
                    text.contains(" INFO cluster: dist_peer{peer=\"n@h\"}: node up")
                        && text.contains("module=gater_pool::pool"),
                    "{text}"
                );
            }
        }
    }
}
