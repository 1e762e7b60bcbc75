//! Live delivery of a subscription as Server-Sent Events.
//!
//! Each SSE event is `event: event`, `id: <event_number>`, `data: <EventRecord JSON>`.
//! A client that reconnects with `Last-Event-ID: n` (or `?after=n`) resumes at `n + 1`:
//! the subscription replays from there (persistent ones), and for a single-stream
//! subscription nothing at or below `n` is sent again. The id is a number within one
//! stream, so only single-stream resumes are exact (`docs/http-api.md` says what
//! happens for the others). At shutdown the stream ends with
//! `event: shutdown`, so clients know to reconnect elsewhere.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use gater_api::Selector;
use serde::Deserialize;
use serde_json::json;

use crate::auth::Op;
use crate::error::ApiError;
use crate::routes::{authorize, find_subscription, from_gater};
use crate::state::AppState;
use crate::{input, records};

/// Query of the SSE route.
#[derive(Debug, Deserialize)]
pub struct SseQuery {
    after: Option<String>,
}

/// Gives the stream slot back when the response body is dropped.
struct Slot(Arc<AppState>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.sse_streams.fetch_sub(1, Ordering::Relaxed);
        self.0.metrics.sse_delta(-1);
    }
}

/// `GET /v1/stores/{store}/subscriptions/{name}/events`
pub async fn events(
    State(st): State<Arc<AppState>>,
    Path((store, name)): Path<(String, String)>,
    headers: HeaderMap,
    query: Result<Query<SseQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let store = input::store(&store)?;
    authorize(&st, &headers, Some(store), Some(Op::Subscribe))?;
    let name = input::name("name", &name)?;
    let Query(q) = query.map_err(|e| ApiError::bad_field("query", e.body_text()))?;
    let last_id = match headers.get("last-event-id") {
        Some(v) => Some(input::version(
            "Last-Event-ID",
            v.to_str()
                .map_err(|_| ApiError::bad_field("Last-Event-ID", "must be an integer"))?,
        )?),
        None => match q.after.as_deref() {
            Some(a) => Some(input::version("after", a)?),
            None => None,
        },
    };
    if st.shutting_down() {
        return Err(ApiError::unavailable(
            "shutting_down",
            "the gateway is shutting down",
        ));
    }
    if st.sse_streams.fetch_add(1, Ordering::Relaxed) >= st.limits.max_sse_streams {
        st.sse_streams.fetch_sub(1, Ordering::Relaxed);
        return Err(ApiError::unavailable(
            "too_many_streams",
            "too many open event streams (EX_ESDB_GATER_MAX_SSE_STREAMS)",
        ));
    }
    st.metrics.sse_delta(1);
    let slot = Slot(st.clone());

    let mut sub = find_subscription(&st, store, name).await?;
    if let Some(id) = last_id {
        sub = sub.start_from(id + 1);
    }
    let single_stream = matches!(sub.selector, Selector::Stream(_));
    let deadline = std::time::Instant::now() + st.limits.request_timeout;
    let subscribing = gater_api::with_deadline(deadline, st.gater.subscribe(sub));
    let source = tokio::time::timeout(st.limits.request_timeout, subscribing)
        .await
        .map_err(|_| {
            ApiError::new(
                axum::http::StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                "subscribing timed out",
            )
        })?
        .map_err(from_gater)?;
    tracing::debug!(target: "http", store, name, ?last_id, "SSE stream opened");

    let shutdown = st.shutdown.clone();
    let events = sse_stream(
        source,
        shutdown,
        slot,
        single_stream.then_some(last_id).flatten(),
    );
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(st.limits.sse_keepalive))
        .into_response())
}

enum Phase {
    Live,
    Done,
}

fn sse_stream(
    source: gater_api::EventStream,
    shutdown: tokio::sync::watch::Receiver<bool>,
    slot: Slot,
    skip_through: Option<i64>,
) -> impl Stream<Item = Result<Event, Infallible>> + Send {
    futures::stream::unfold(
        (Box::pin(source), shutdown, slot, Phase::Live),
        move |(mut source, mut shutdown, slot, phase)| async move {
            if let Phase::Done = phase {
                return None;
            }
            loop {
                if *shutdown.borrow() {
                    let ev = Event::default()
                        .event("shutdown")
                        .data("{\"reason\":\"the gateway is shutting down\"}");
                    return Some((Ok(ev), (source, shutdown, slot, Phase::Done)));
                }
                tokio::select! {
                    _ = shutdown.changed() => continue,
                    item = source.next() => {
                        let ev = match item {
                            None => {
                                let ev = Event::default().event("end").data("{\"reason\":\"the subscription ended\"}");
                                return Some((Ok(ev), (source, shutdown, slot, Phase::Done)));
                            }
                            Some(Err(e)) => {
                                let e = from_gater(e);
                                let ev = Event::default()
                                    .event("error")
                                    .data(json!({"error": e.kind, "message": e.message}).to_string());
                                return Some((Ok(ev), (source, shutdown, slot, Phase::Done)));
                            }
                            Some(Ok(rec)) => {
                                if skip_through.is_some_and(|n| rec.event_number <= n) {
                                    continue;
                                }
                                slot.0.metrics.sse_event();
                                Event::default()
                                    .event("event")
                                    .id(rec.event_number.to_string())
                                    .data(records::event_json_text(&rec))
                            }
                        };
                        return Some((Ok(ev), (source, shutdown, slot, Phase::Live)));
                    }
                }
            }
        },
    )
}
