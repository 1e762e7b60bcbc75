//! Typed ExESDB records (v0.11), read straight from the bytes with serde.
//!
//! The API crate defines its own records; these are the shapes in `WIRE.md` for the
//! layers and benchmarks that need them now. Field order is term order, so encoding
//! a record writes the bytes OTP writes.

use serde::{Deserialize, Serialize};

use crate::elixir::DateTime;
use crate::raw::{RawTerm, TermValue};

/// `'Elixir.ExESDB.Schema.EventRecord'`, as reads return it (owned).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename = "Elixir.ExESDB.Schema.EventRecord")]
pub struct EventRecord {
    /// Protobuf's unknown fields (`[]`); present on records from real clusters.
    #[serde(
        rename = "__unknown_fields__",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub unknown_fields: Option<TermValue>,
    /// When the event was stored.
    pub created: DateTime,
    /// The same instant in microseconds since the Unix epoch.
    pub created_epoch: i64,
    /// The event's data: a map for JSON data, a binary for raw data.
    pub data: TermValue,
    /// 0 binary, 1 JSON.
    pub data_content_type: i64,
    /// The event's id (a UUID).
    pub event_id: String,
    /// Its position in the stream, from 0.
    pub event_number: i64,
    /// The stream.
    pub event_stream_id: String,
    /// The event's type.
    pub event_type: String,
    /// Metadata (any term, `nil` when absent).
    pub metadata: TermValue,
    /// 0 binary, 1 JSON.
    pub metadata_content_type: i64,
}

/// An [`EventRecord`] read without copying: strings borrow from the input and `data`
/// and `metadata` stay as validated bytes until asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename = "Elixir.ExESDB.Schema.EventRecord")]
pub struct EventRecordRef<'a> {
    /// Protobuf's unknown fields (`[]`); present on records from real clusters.
    #[serde(
        rename = "__unknown_fields__",
        default,
        borrow,
        skip_serializing_if = "Option::is_none"
    )]
    pub unknown_fields: Option<RawTerm<'a>>,
    /// When the event was stored.
    pub created: DateTime,
    /// The same instant in microseconds since the Unix epoch.
    pub created_epoch: i64,
    /// The event's data.
    #[serde(borrow)]
    pub data: RawTerm<'a>,
    /// 0 binary, 1 JSON.
    pub data_content_type: i64,
    /// The event's id (a UUID).
    pub event_id: &'a str,
    /// Its position in the stream, from 0.
    pub event_number: i64,
    /// The stream.
    pub event_stream_id: &'a str,
    /// The event's type.
    pub event_type: &'a str,
    /// Metadata.
    #[serde(borrow)]
    pub metadata: RawTerm<'a>,
    /// 0 binary, 1 JSON.
    pub metadata_content_type: i64,
}

/// `'Elixir.ExESDB.Schema.NewEvent'`: what an append sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename = "Elixir.ExESDB.Schema.NewEvent")]
pub struct NewEvent {
    /// Protobuf's unknown fields: real ExESDB expects `[]` ([`NewEvent::new`] sets it).
    #[serde(
        rename = "__unknown_fields__",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub unknown_fields: Option<TermValue>,
    /// The event's data: a map for JSON data, a binary for raw data.
    pub data: TermValue,
    /// 0 binary, 1 JSON.
    pub data_content_type: i64,
    /// The event's id (a UUID).
    pub event_id: String,
    /// The event's type.
    pub event_type: String,
    /// Metadata (`nil` when absent).
    pub metadata: TermValue,
    /// 0 binary, 1 JSON.
    pub metadata_content_type: i64,
}

impl NewEvent {
    /// A JSON-typed event (content types 1) with `'__unknown_fields__' => []` set.
    pub fn new(
        event_id: &str,
        event_type: &str,
        data: crate::Term,
        metadata: Option<crate::Term>,
    ) -> Self {
        NewEvent {
            unknown_fields: Some(TermValue(crate::build::nil())),
            data: TermValue(data),
            data_content_type: 1,
            event_id: event_id.to_owned(),
            event_type: event_type.to_owned(),
            metadata: TermValue(crate::elixir::option(metadata)),
            metadata_content_type: 1,
        }
    }
}
