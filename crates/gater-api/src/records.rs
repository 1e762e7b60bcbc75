//! Typed records: what the API takes and returns, and their terms on the wire.

use crate::GaterError;
use gater_term::build::{atom, binary, int, list, tuple};
use gater_term::{Term, TermExt, elixir};
use std::sync::atomic::{AtomicU64, Ordering};
use time::OffsetDateTime;

pub use gater_registry::StoreId;

const NEW_EVENT: &str = "Elixir.ExESDB.Schema.NewEvent";
const EVENT_RECORD: &str = "Elixir.ExESDB.Schema.EventRecord";

/// What an append expects of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// The stream is at exactly this version (0-based: the number of its last event).
    Exact(i64),
    /// The stream must not exist (`-1` on the wire).
    NoStream,
    /// No check (`any`).
    Any,
    /// The stream must exist (`stream_exists`).
    StreamExists,
}

impl ExpectedVersion {
    /// The term ExESDB expects.
    pub fn to_term(self) -> Term {
        match self {
            ExpectedVersion::Exact(v) => int(v),
            ExpectedVersion::NoStream => int(-1),
            ExpectedVersion::Any => atom("any"),
            ExpectedVersion::StreamExists => atom("stream_exists"),
        }
    }

    /// The version the stream is expected to be at, when the expectation names one.
    pub fn version(self) -> Option<i64> {
        match self {
            ExpectedVersion::Exact(v) => Some(v),
            ExpectedVersion::NoStream => Some(-1),
            _ => None,
        }
    }
}

/// Which way a read goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// From `start` up.
    #[default]
    Forward,
    /// From `start` down.
    Backward,
}

impl Direction {
    fn atom(self) -> Term {
        match self {
            Direction::Forward => atom("forward"),
            Direction::Backward => atom("backward"),
        }
    }

    pub(crate) fn to_term(self) -> Term {
        self.atom()
    }
}

/// An event's data or metadata as sent.
#[derive(Debug, Clone, PartialEq)]
pub enum EventData {
    /// JSON (content type 1); sent as an Elixir map with binary keys.
    Json(serde_json::Value),
    /// Raw bytes (content type 0); sent as a binary.
    Raw(Vec<u8>),
    /// Any term, with the content type given.
    Term {
        /// The term.
        term: Term,
        /// 0 binary, 1 JSON.
        content_type: i64,
    },
}

impl EventData {
    fn content_type(&self) -> i64 {
        match self {
            EventData::Json(_) => 1,
            EventData::Raw(_) => 0,
            EventData::Term { content_type, .. } => *content_type,
        }
    }

    fn to_term(&self) -> Term {
        match self {
            EventData::Json(v) => gater_term::json::json_to_term(v),
            EventData::Raw(b) => binary(b.clone()),
            EventData::Term { term, .. } => term.clone(),
        }
    }
}

/// An event to append.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// The event's id; a UUIDv7 is drawn by [`NewEvent::json`] and [`NewEvent::raw`].
    pub event_id: String,
    /// The event's type (`"UserCreated:v1"`).
    pub event_type: String,
    /// The data.
    pub data: EventData,
    /// The metadata; `None` is `nil`.
    pub metadata: Option<EventData>,
}

impl NewEvent {
    /// A JSON event with a fresh UUIDv7 id.
    pub fn json(event_type: impl Into<String>, data: serde_json::Value) -> Self {
        Self {
            event_id: uuid_v7(),
            event_type: event_type.into(),
            data: EventData::Json(data),
            metadata: None,
        }
    }

    /// A raw-bytes event with a fresh UUIDv7 id.
    pub fn raw(event_type: impl Into<String>, data: impl Into<Vec<u8>>) -> Self {
        Self {
            event_id: uuid_v7(),
            event_type: event_type.into(),
            data: EventData::Raw(data.into()),
            metadata: None,
        }
    }

    /// Sets the event id.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.event_id = id.into();
        self
    }

    /// Sets the metadata.
    pub fn with_metadata(mut self, metadata: EventData) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// `%ExESDB.Schema.NewEvent{}` with `__unknown_fields__: []`, as ExESDB expects.
    pub fn to_term(&self) -> Term {
        let (metadata, metadata_ct) = match &self.metadata {
            Some(m) => (m.to_term(), m.content_type()),
            None => (elixir::nil(), 1),
        };
        elixir::struct_term(
            NEW_EVENT,
            [
                ("__unknown_fields__", list(vec![])),
                ("event_id", binary(self.event_id.as_bytes().to_vec())),
                ("event_type", binary(self.event_type.as_bytes().to_vec())),
                ("data_content_type", int(self.data.content_type())),
                ("metadata_content_type", int(metadata_ct)),
                ("data", self.data.to_term()),
                ("metadata", metadata),
            ],
        )
    }
}

/// A stored event, as reads and subscriptions return it.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    /// The stream.
    pub stream_id: String,
    /// Its position in the stream, from 0.
    pub event_number: i64,
    /// The event's id.
    pub event_id: String,
    /// The event's type.
    pub event_type: String,
    /// 0 binary, 1 JSON.
    pub data_content_type: i64,
    /// 0 binary, 1 JSON.
    pub metadata_content_type: i64,
    /// The data exactly as stored (a map for JSON data, a binary for raw data).
    pub data: Term,
    /// The metadata exactly as stored (`nil` when none).
    pub metadata: Term,
    /// When it was stored.
    pub created: OffsetDateTime,
    /// The same instant in microseconds since the Unix epoch.
    pub created_epoch: i64,
}

impl From<gater_term::records::EventRecord> for EventRecord {
    fn from(r: gater_term::records::EventRecord) -> Self {
        EventRecord {
            stream_id: r.event_stream_id,
            event_number: r.event_number,
            event_id: r.event_id,
            event_type: r.event_type,
            data_content_type: r.data_content_type,
            metadata_content_type: r.metadata_content_type,
            data: r.data.0,
            metadata: r.metadata.0,
            created: r.created.0,
            created_epoch: r.created_epoch,
        }
    }
}

impl EventRecord {
    /// Reads an `'Elixir.ExESDB.Schema.EventRecord'` term.
    pub fn from_term(t: &Term) -> Result<Self, GaterError> {
        let bad = |what: &str| GaterError::Decode(format!("EventRecord: {what}"));
        let s = |k: &str| {
            t.get(k)
                .and_then(TermExt::as_str)
                .map(str::to_owned)
                .ok_or_else(|| bad(k))
        };
        let i = |k: &str| t.get(k).and_then(TermExt::as_i64).ok_or_else(|| bad(k));
        let created = t
            .get("created")
            .ok_or_else(|| bad("created"))
            .and_then(|c| {
                elixir::datetime_from_term(c).map_err(|e| bad(&format!("created: {e}")))
            })?;
        Ok(EventRecord {
            stream_id: s("event_stream_id")?,
            event_number: i("event_number")?,
            event_id: s("event_id")?,
            event_type: s("event_type")?,
            data_content_type: i("data_content_type").unwrap_or(1),
            metadata_content_type: i("metadata_content_type").unwrap_or(1),
            data: t.get("data").cloned().unwrap_or_else(elixir::nil),
            metadata: t.get("metadata").cloned().unwrap_or_else(elixir::nil),
            created_epoch: i("created_epoch")
                .unwrap_or_else(|_| (created.unix_timestamp_nanos() / 1000) as i64),
            created,
        })
    }

    /// The `'Elixir.ExESDB.Schema.EventRecord'` term (as ExESDB sends it, with
    /// `__unknown_fields__: []`); what `ack_event` sends back.
    pub fn to_term(&self) -> Term {
        elixir::struct_term(
            EVENT_RECORD,
            [
                ("__unknown_fields__", list(vec![])),
                (
                    "event_stream_id",
                    binary(self.stream_id.as_bytes().to_vec()),
                ),
                ("event_number", int(self.event_number)),
                ("event_id", binary(self.event_id.as_bytes().to_vec())),
                ("event_type", binary(self.event_type.as_bytes().to_vec())),
                ("data_content_type", int(self.data_content_type)),
                ("metadata_content_type", int(self.metadata_content_type)),
                ("data", self.data.clone()),
                ("metadata", self.metadata.clone()),
                ("created", elixir::datetime_to_term(self.created)),
                ("created_epoch", int(self.created_epoch)),
            ],
        )
    }

    /// The data as JSON (see `docs/json-mapping.md`).
    pub fn data_json(&self) -> serde_json::Value {
        gater_term::json::term_to_json(&self.data)
    }

    /// The metadata as JSON (`null` for `nil`).
    pub fn metadata_json(&self) -> serde_json::Value {
        gater_term::json::term_to_json(&self.metadata)
    }
}

/// A snapshot: the term stored under `(source, stream, version)`.
///
/// ExESDB stores and returns the record term unchanged (a plain map in practice).
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotRecord {
    /// The source (aggregate) id.
    pub source_uuid: String,
    /// The stream id.
    pub stream_uuid: String,
    /// The version the snapshot was taken at.
    pub version: i64,
    /// The stored term.
    pub record: Term,
}

impl SnapshotRecord {
    /// The stored term as JSON.
    pub fn record_json(&self) -> serde_json::Value {
        gater_term::json::term_to_json(&self.record)
    }
}

/// What a subscription selects.
#[derive(Debug, Clone, PartialEq)]
pub enum Selector {
    /// Every stream (`by_stream`, `"$all"`).
    AllStreams,
    /// One stream (`by_stream`, `"$<stream>"`).
    Stream(String),
    /// Events of one type (`by_event_type`).
    EventType(String),
    /// Events matching a pattern map (`by_event_pattern`).
    EventPattern(Term),
    /// Events whose payload matches a map (`by_event_payload`).
    EventPayload(Term),
}

impl Selector {
    /// The subscription type atom's name.
    pub fn type_name(&self) -> &'static str {
        match self {
            Selector::AllStreams | Selector::Stream(_) => "by_stream",
            Selector::EventType(_) => "by_event_type",
            Selector::EventPattern(_) => "by_event_pattern",
            Selector::EventPayload(_) => "by_event_payload",
        }
    }

    /// The selector term.
    pub fn to_term(&self) -> Term {
        match self {
            Selector::AllStreams => binary(b"$all".to_vec()),
            Selector::Stream(s) => binary(format!("${s}").into_bytes()),
            Selector::EventType(t) => binary(t.as_bytes().to_vec()),
            Selector::EventPattern(m) | Selector::EventPayload(m) => m.clone(),
        }
    }

    /// Reads a `(type, selector)` pair from `get_subscriptions`.
    pub fn from_terms(ty: &str, sel: &Term) -> Option<Self> {
        Some(match ty {
            "by_stream" => match sel.as_str()? {
                "$all" => Selector::AllStreams,
                s => Selector::Stream(s.strip_prefix('$').unwrap_or(s).to_owned()),
            },
            "by_event_type" => Selector::EventType(sel.as_str()?.to_owned()),
            "by_event_pattern" => Selector::EventPattern(sel.clone()),
            "by_event_payload" => Selector::EventPayload(sel.clone()),
            _ => return None,
        })
    }
}

/// A subscription: what it selects, its name, and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    /// The store.
    pub store: StoreId,
    /// What it selects.
    pub selector: Selector,
    /// `None`: transient (`<<"transient">>`, new events only); `Some(name)`: persistent
    /// (replays from `start_from`, resumes after the last ack).
    pub name: Option<String>,
    /// The first event number a persistent subscription replays.
    pub start_from: i64,
}

impl Subscription {
    /// A transient subscription.
    pub fn transient(store: impl Into<StoreId>, selector: Selector) -> Self {
        Self {
            store: store.into(),
            selector,
            name: None,
            start_from: 0,
        }
    }

    /// A persistent subscription named `name`, from event 0.
    pub fn persistent(
        store: impl Into<StoreId>,
        selector: Selector,
        name: impl Into<String>,
    ) -> Self {
        Self {
            store: store.into(),
            selector,
            name: Some(name.into()),
            start_from: 0,
        }
    }

    /// Sets where a persistent subscription starts.
    pub fn start_from(mut self, n: i64) -> Self {
        self.start_from = n;
        self
    }

    /// The name on the wire (`<<"transient">>` for transient ones).
    pub fn wire_name(&self) -> &str {
        self.name.as_deref().unwrap_or("transient")
    }

    /// The Phoenix.PubSub topic the emitter broadcasts on: `Store:Selector` for text
    /// selectors, `Store:Name` for map selectors.
    pub fn topic(&self) -> String {
        match &self.selector {
            Selector::AllStreams => format!("{}:$all", self.store),
            Selector::Stream(s) => format!("{}:${s}", self.store),
            Selector::EventType(t) => format!("{}:{t}", self.store),
            Selector::EventPattern(_) | Selector::EventPayload(_) => {
                format!("{}:{}", self.store, self.wire_name())
            }
        }
    }

    pub(crate) fn save_request(&self) -> Term {
        tuple(vec![
            atom("save_subscription"),
            atom(self.store.as_str()),
            atom(self.selector.type_name()),
            self.selector.to_term(),
            binary(self.wire_name().as_bytes().to_vec()),
            int(self.start_from),
            elixir::nil(),
        ])
    }

    pub(crate) fn remove_request(&self) -> Term {
        tuple(vec![
            atom("remove_subscription"),
            atom(self.store.as_str()),
            atom(self.selector.type_name()),
            self.selector.to_term(),
            binary(self.wire_name().as_bytes().to_vec()),
        ])
    }
}

/// A subscription as `get_subscriptions` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionInfo {
    /// Its key in the store (`integer_to_binary(phash2({Type, Selector, Name}))`).
    pub key: String,
    /// What it selects.
    pub selector: Selector,
    /// Its name (`"transient"` for transient ones).
    pub name: String,
    /// Where it (re)starts: after the last ack for persistent ones.
    pub start_from: i64,
    /// The subscriber pid, or `nil`.
    pub subscriber: Term,
}

impl SubscriptionInfo {
    /// Whether this entry is `s` (same type, selector and name).
    pub fn matches_subscription(&self, s: &Subscription) -> bool {
        self.selector == s.selector && self.name == s.wire_name()
    }
}

/// One entry of `list_stores`: a store as one node runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreInfo {
    /// The node.
    pub node: String,
    /// The store.
    pub store: StoreId,
    /// The store's configuration map as the node reported it.
    pub config: Term,
}

/// Which health check to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthCheck {
    /// `quick_health_check`.
    Quick,
    /// `verify_cluster_consistency`.
    ClusterConsistency,
    /// `verify_membership_consensus`.
    MembershipConsensus,
    /// `check_raft_log_consistency`.
    RaftLogConsistency,
}

impl HealthCheck {
    /// The request's tag.
    pub fn request_name(self) -> &'static str {
        match self {
            HealthCheck::Quick => "quick_health_check",
            HealthCheck::ClusterConsistency => "verify_cluster_consistency",
            HealthCheck::MembershipConsensus => "verify_membership_consensus",
            HealthCheck::RaftLogConsistency => "check_raft_log_consistency",
        }
    }
}

/// A health check's report map, as the worker returned it.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthReport {
    /// Which check.
    pub check: HealthCheck,
    /// The reply map.
    pub report: Term,
}

impl HealthReport {
    /// The report as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        gater_term::json::term_to_json(&self.report)
    }
}

static UUID_SEQ: AtomicU64 = AtomicU64::new(0);

/// A fresh UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then a 12-bit counter and
/// 62 random bits, so ids drawn in one process sort in drawing order within a ms.
pub fn uuid_v7() -> String {
    let ms =
        (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as u64 & ((1 << 48) - 1);
    let seq = UUID_SEQ.fetch_add(1, Ordering::Relaxed) & 0xfff;
    let rand_b: u64 = rand::random::<u64>() & ((1 << 62) - 1);
    let hi: u64 = (ms << 16) | (0x7 << 12) | seq;
    let lo: u64 = (0b10 << 62) | rand_b;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_v7_has_version_and_variant() {
        let u = uuid_v7();
        assert_eq!(u.len(), 36);
        let parts: Vec<_> = u.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('7'));
        assert!(matches!(parts[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'));
        assert_ne!(uuid_v7(), uuid_v7());
    }

    #[test]
    fn new_event_term_is_the_protobuf_struct() {
        let e = NewEvent::json("T", serde_json::json!({"a": 1})).with_id("id-1");
        let t = e.to_term();
        assert_eq!(t.struct_name(), Some(NEW_EVENT));
        assert_eq!(t.get("event_id").and_then(TermExt::as_str), Some("id-1"));
        assert_eq!(
            t.get("data_content_type").and_then(TermExt::as_i64),
            Some(1)
        );
        assert!(t.get("__unknown_fields__").is_some());
        assert!(t.get("metadata").is_some_and(elixir::is_nil));
    }

    #[test]
    fn event_records_round_trip_through_their_term() {
        let Some(dir) = gater_testkit::vectors::vectors_subdir("exesdb-real") else {
            return;
        };
        let bytes = std::fs::read(dir.join("13_get_events_forward.reply.etf")).expect("vector");
        let t = gater_term::decode(&bytes, &gater_term::DecodeLimits::default()).expect("decodes");
        let list = t
            .tagged("ok", 2)
            .and_then(|v| v[0].as_list().map(|l| l.into_owned()))
            .expect("{ok, List}");
        assert!(!list.is_empty());
        for r in list.iter() {
            let rec = EventRecord::from_term(r).expect("record");
            assert_eq!(&rec.to_term(), r);
            let typed: gater_term::records::EventRecord =
                gater_term::from_term(r).expect("serde path");
            assert_eq!(EventRecord::from(typed), rec);
        }
    }

    #[test]
    fn topics_follow_the_emitter() {
        let s = Subscription::transient("reg_gh", Selector::Stream("s-1".into()));
        assert_eq!(s.topic(), "reg_gh:$s-1");
        assert_eq!(
            Subscription::transient("reg_gh", Selector::AllStreams).topic(),
            "reg_gh:$all"
        );
        let p = Subscription::persistent(
            "reg_gh",
            Selector::EventPattern(gater_term::build::map([])),
            "p",
        );
        assert_eq!(p.topic(), "reg_gh:p");
    }
}
