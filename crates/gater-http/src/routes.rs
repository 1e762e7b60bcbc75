//! The handlers of `/v1`, `/health` and `/metrics`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use gater_api::{Direction, GaterError, Subscription};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{Claims, Op, TokenError};
use crate::error::ApiError;
use crate::state::AppState;
use crate::{input, records};

type Result<T> = std::result::Result<T, ApiError>;

/// Maps a gater-api error onto a status code and kind.
pub fn from_gater(e: GaterError) -> ApiError {
    match &e {
        GaterError::Timeout { .. } => {
            ApiError::new(StatusCode::GATEWAY_TIMEOUT, "timeout", e.to_string())
        }
        GaterError::NoWorkers { .. } => ApiError::unavailable("no_workers", e.to_string()),
        GaterError::WrongExpectedVersion { current } => ApiError::new(
            StatusCode::CONFLICT,
            "wrong_expected_version",
            e.to_string(),
        )
        .with("current", *current),
        GaterError::StoreNotFound { store } => ApiError::unknown_store(store),
        GaterError::NodeDown { .. } | GaterError::WorkerDown { .. } => {
            ApiError::new(StatusCode::BAD_GATEWAY, e.kind(), e.to_string())
        }
        GaterError::NotConfirmed { .. } => {
            ApiError::new(StatusCode::GATEWAY_TIMEOUT, e.kind(), e.to_string())
        }
        GaterError::InvalidRequest(m) => {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m.clone())
        }
        GaterError::SubscriptionClosed(_) => ApiError::unavailable(e.kind(), e.to_string()),
        _ => ApiError::new(StatusCode::BAD_GATEWAY, e.kind(), e.to_string()),
    }
}

/// Runs an API call within the request time-out (504 past it). The same deadline bounds
/// gater-api's no-workers back-off, so a store without workers answers 503 `no_workers`
/// before the time-out rather than 504.
async fn call<T>(
    st: &AppState,
    f: impl std::future::Future<Output = std::result::Result<T, GaterError>>,
) -> Result<T> {
    let deadline = Instant::now() + st.limits.request_timeout;
    let f = gater_api::with_deadline(deadline, f);
    match tokio::time::timeout(st.limits.request_timeout, f).await {
        Ok(r) => r.map_err(|e| {
            if matches!(e, GaterError::StoreNotFound { .. }) {
                st.metrics.unknown_store();
            }
            from_gater(e)
        }),
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            "the cluster did not answer within the request time-out (EX_ESDB_GATER_REQUEST_TIMEOUT_MS)",
        )),
    }
}

/// Checks the bearer token (when auth is on) and that it allows `op` on `store`
/// (`None`: any store the token names).
pub fn authorize(
    st: &AppState,
    headers: &HeaderMap,
    store: Option<&str>,
    op: Option<Op>,
) -> Result<Option<Claims>> {
    let Some(key) = &st.auth else {
        return Ok(None);
    };
    let fail = |e: ApiError| {
        st.metrics.auth_failure();
        e
    };
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| fail(TokenError::Missing.into()))?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .ok_or_else(|| fail(TokenError::Malformed.into()))?;
    let claims = key
        .verify(token.trim(), SystemTime::now())
        .map_err(|e| fail(e.into()))?;
    let ok = match (store, op) {
        (Some(s), Some(op)) => claims.allows(s, op),
        (Some(s), None) => claims.covers_store(s),
        (None, Some(op)) => claims.ops.contains(&op),
        (None, None) => true,
    };
    if !ok {
        return Err(fail(ApiError::forbidden(format!(
            "the token does not allow {} on {}",
            op.map_or("this", Op::as_str),
            store.unwrap_or("this resource")
        ))));
    }
    Ok(Some(claims))
}

/// Counts every request by route template and status class.
pub async fn track(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = crate::metrics::route_index(
        req.extensions()
            .get::<MatchedPath>()
            .map_or("other", MatchedPath::as_str),
    );
    let resp = next.run(req).await;
    st.metrics
        .observe_route(route, resp.status().as_u16(), started.elapsed());
    resp
}

/// Unknown paths: 404 in the API's error shape.
pub async fn fallback() -> ApiError {
    ApiError::not_found("not_found", "no such route (see /v1/openapi.json)")
}

// ------------------------------------------------------------------ streams

/// `POST /v1/stores/{store}/streams/{stream}/events`
pub async fn append(
    State(st): State<Arc<AppState>>,
    Path((store, stream)): Path<(String, String)>,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Json<Value>> {
    let store = input::store(&store)?;
    authorize(&st, &headers, Some(store), Some(Op::Append))?;
    let stream = input::name("stream", &stream)?;
    let body = input::json_body(body)?;
    if !body.is_object() {
        return Err(ApiError::bad_field(
            "body",
            "must be an object with `events`",
        ));
    }
    let events = records::new_events(&body)?;
    let version = match body.get("expected_version") {
        None | Some(Value::Null) => {
            call(&st, st.gater.append_events(store, stream, events)).await?
        }
        v => {
            let expected = records::expected_version(v)?;
            call(
                &st,
                st.gater
                    .append_events_expected(store, stream, expected, events),
            )
            .await?
        }
    };
    Ok(Json(json!({ "version": version })))
}

/// Query of `GET .../events`.
#[derive(Debug, Deserialize)]
pub struct ReadQuery {
    from: Option<String>,
    count: Option<String>,
    direction: Option<String>,
}

/// `GET /v1/stores/{store}/streams/{stream}/events`
pub async fn read(
    State(st): State<Arc<AppState>>,
    Path((store, stream)): Path<(String, String)>,
    headers: HeaderMap,
    query: std::result::Result<Query<ReadQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response> {
    let store = input::store(&store)?;
    authorize(&st, &headers, Some(store), Some(Op::Read))?;
    let stream = input::name("stream", &stream)?;
    let Query(q) = query.map_err(|e| ApiError::bad_field("query", e.body_text()))?;
    let direction = match q.direction.as_deref() {
        None | Some("forward") => Direction::Forward,
        Some("backward") => Direction::Backward,
        Some(_) => {
            return Err(ApiError::bad_field(
                "direction",
                "must be forward or backward",
            ));
        }
    };
    let count = match q.count.as_deref() {
        None => 100.min(st.limits.max_read_count),
        Some(c) => match c.parse::<u32>() {
            Ok(n) if n >= 1 && n <= st.limits.max_read_count => n,
            _ => {
                return Err(ApiError::bad_field(
                    "count",
                    format!("must be an integer 1..={}", st.limits.max_read_count),
                ));
            }
        },
    };
    let from = match q.from.as_deref() {
        Some(f) => input::version("from", f)?,
        None if direction == Direction::Backward => {
            let v = call(&st, st.gater.get_version(store, stream)).await?;
            if v < 0 {
                return Ok(Json(json!({ "events": [] })).into_response());
            }
            v
        }
        None => 0,
    };
    let events = call(
        &st,
        st.gater
            .get_events(store, stream, from, count as usize, direction),
    )
    .await?;
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        records::events_body(&events),
    )
        .into_response())
}

/// `GET /v1/stores/{store}/streams/{stream}/version`
pub async fn version(
    State(st): State<Arc<AppState>>,
    Path((store, stream)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>> {
    let store = input::store(&store)?;
    authorize(&st, &headers, Some(store), Some(Op::Read))?;
    let stream = input::name("stream", &stream)?;
    let v = call(&st, st.gater.get_version(store, stream)).await?;
    Ok(Json(json!({ "version": v })))
}

/// `GET /v1/stores/{store}/streams`
pub async fn streams(
    State(st): State<Arc<AppState>>,
    Path(store): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>> {
    let store = input::store(&store)?;
    authorize(&st, &headers, Some(store), Some(Op::Read))?;
    let mut s = call(&st, st.gater.get_streams(store)).await?;
    s.sort();
    Ok(Json(json!({ "streams": s })))
}

/// `GET /v1/stores`: the stores the cluster lists (those the token covers).
pub async fn stores(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Result<Json<Value>> {
    let claims = authorize(&st, &headers, None, None)?;
    let infos = call(&st, st.gater.list_stores()).await?;
    let mut by_store: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for i in infos {
        by_store
            .entry(i.store.as_str().to_owned())
            .or_default()
            .push(i.node);
    }
    let list: Vec<Value> = by_store
        .into_iter()
        .filter(|(s, _)| claims.as_ref().is_none_or(|c| c.covers_store(s)))
        .map(|(store, mut nodes)| {
            nodes.sort();
            json!({ "store": store, "nodes": nodes })
        })
        .collect();
    Ok(Json(json!({ "stores": list })))
}

// ------------------------------------------------------------------ subscriptions

/// `GET /v1/stores/{store}/subscriptions`
pub async fn list_subscriptions(
    State(st): State<Arc<AppState>>,
    Path(store): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>> {
    let store = input::store(&store)?;
    authorize(&st, &headers, Some(store), Some(Op::Subscribe))?;
    let subs = call(&st, st.gater.get_subscriptions(store)).await?;
    let mut list: Vec<Value> = subs.iter().map(records::subscription_json).collect();
    list.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Ok(Json(json!({ "subscriptions": list })))
}

/// A subscription from a POST or DELETE body.
pub(crate) fn subscription_from(store: &str, body: &Value) -> Result<Subscription> {
    if !body.is_object() {
        return Err(ApiError::bad_field("body", "must be an object"));
    }
    let ty = input::str_field(body, "type")?;
    let selector = records::selector_from(ty, body.get("selector").unwrap_or(&Value::Null))?;
    let name = input::name("name", input::str_field(body, "name")?)?;
    let persistent = match body.get("persistent") {
        None | Some(Value::Null) => name != "transient",
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::bad_field("persistent", "must be a boolean")),
    };
    let mut sub = if persistent {
        if name == "transient" {
            return Err(ApiError::bad_field(
                "name",
                "`transient` is reserved for transient subscriptions",
            ));
        }
        Subscription::persistent(store, selector, name)
    } else {
        Subscription::transient(store, selector)
    };
    match body.get("start_from") {
        None | Some(Value::Null) => {}
        Some(v) => match v.as_i64() {
            Some(n) if n >= 0 => sub = sub.start_from(n),
            _ => {
                return Err(ApiError::bad_field(
                    "start_from",
                    "must be a non-negative integer",
                ));
            }
        },
    }
    Ok(sub)
}

/// `POST /v1/stores/{store}/subscriptions`
pub async fn create_subscription(
    State(st): State<Arc<AppState>>,
    Path(store): Path<String>,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let store = input::store(&store)?;
    authorize(&st, &headers, Some(store), Some(Op::Subscribe))?;
    let body = input::json_body(body)?;
    let sub = subscription_from(store, &body)?;
    call(&st, st.gater.save_subscription(&sub)).await?;
    let (ty, selector) = records::selector_json(&sub.selector);
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "name": sub.wire_name(),
            "type": ty,
            "selector": selector,
            "start_from": sub.start_from,
            "persistent": sub.name.is_some(),
        })),
    )
        .into_response())
}

/// `DELETE /v1/stores/{store}/subscriptions` (body as for POST), or
/// `DELETE /v1/stores/{store}/subscriptions/{name}`.
pub async fn delete_subscription(
    State(st): State<Arc<AppState>>,
    Path(store): Path<String>,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<StatusCode> {
    let store = input::store(&store)?;
    authorize(&st, &headers, Some(store), Some(Op::Subscribe))?;
    let body = input::json_body(body)?;
    let sub = subscription_from(store, &body)?;
    call(&st, st.gater.remove_subscription(&sub)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /v1/stores/{store}/subscriptions/{name}`: looks the subscription up by name.
pub async fn delete_subscription_by_name(
    State(st): State<Arc<AppState>>,
    Path((store, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode> {
    let store = input::store(&store)?;
    authorize(&st, &headers, Some(store), Some(Op::Subscribe))?;
    let name = input::name("name", &name)?;
    let sub = find_subscription(&st, store, name).await?;
    call(&st, st.gater.remove_subscription(&sub)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The subscription named `name` as the cluster lists it (404 when there is none).
pub(crate) async fn find_subscription(
    st: &AppState,
    store: &str,
    name: &str,
) -> Result<Subscription> {
    let subs = call(st, st.gater.get_subscriptions(store)).await?;
    let info = subs.into_iter().find(|s| s.name == name).ok_or_else(|| {
        ApiError::not_found(
            "subscription_not_found",
            format!("no subscription named `{name}` in `{store}`"),
        )
    })?;
    let sub = if info.name == "transient" {
        Subscription::transient(store, info.selector)
    } else {
        Subscription::persistent(store, info.selector, info.name)
    };
    Ok(sub.start_from(info.start_from))
}

/// The event an ack body names: `(event_stream_id, event_number)`.
pub(crate) fn ack_target(body: &Value) -> Result<(&str, i64)> {
    let stream = input::name(
        "event_stream_id",
        input::str_field(body, "event_stream_id")?,
    )?;
    let number = body
        .get("event_number")
        .and_then(Value::as_i64)
        .filter(|n| *n >= 0)
        .ok_or_else(|| ApiError::bad_field("event_number", "must be a non-negative integer"))?;
    Ok((stream, number))
}

/// `POST /v1/stores/{store}/subscriptions/{name}/ack`, body
/// `{"event_stream_id": s, "event_number": n}`: a persistent subscription moves on to n+1.
pub async fn ack(
    State(st): State<Arc<AppState>>,
    Path((store, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<StatusCode> {
    let store = input::store(&store)?;
    authorize(&st, &headers, Some(store), Some(Op::Subscribe))?;
    let name = input::name("name", &name)?;
    let body = input::json_body(body)?;
    let (stream, number) = ack_target(&body)?;
    // ExESDB acks the event record itself: read it back rather than trust the client's copy.
    let events = call(
        &st,
        st.gater
            .get_events(store, stream, number, 1, Direction::Forward),
    )
    .await?;
    let event = events
        .into_iter()
        .find(|e| e.event_number == number)
        .ok_or_else(|| {
            ApiError::not_found(
                "event_not_found",
                format!("no event {number} in stream `{stream}`"),
            )
        })?;
    call(&st, st.gater.ack_event(store, name, &event)).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ------------------------------------------------------------------ snapshots

fn snapshot_path(source: &str, stream: &str, version: &str) -> Result<(String, String, i64)> {
    Ok((
        input::name("source_uuid", source)?.to_owned(),
        input::name("stream_uuid", stream)?.to_owned(),
        input::version("version", version)?,
    ))
}

/// `PUT /v1/stores/{store}/snapshots/{source_uuid}/{stream_uuid}/{version}`, body: the
/// snapshot (any JSON value).
pub async fn put_snapshot(
    State(st): State<Arc<AppState>>,
    Path((store, source, stream, version)): Path<(String, String, String, String)>,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<StatusCode> {
    let store = input::store(&store)?;
    authorize(&st, &headers, Some(store), Some(Op::Snapshot))?;
    let (source, stream, version) = snapshot_path(&source, &stream, &version)?;
    let body = input::json_body(body)?;
    let record = records::checked_term("body", &body)?;
    call(
        &st,
        st.gater
            .record_snapshot(store, &source, &stream, version, record),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/stores/{store}/snapshots/{source_uuid}/{stream_uuid}/{version}`
pub async fn get_snapshot(
    State(st): State<Arc<AppState>>,
    Path((store, source, stream, version)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>> {
    let store = input::store(&store)?;
    authorize(&st, &headers, Some(store), Some(Op::Snapshot))?;
    let (source, stream, version) = snapshot_path(&source, &stream, &version)?;
    match call(
        &st,
        st.gater.read_snapshot(store, &source, &stream, version),
    )
    .await?
    {
        Some(s) => Ok(Json(records::snapshot_json(&s))),
        None => Err(ApiError::not_found(
            "snapshot_not_found",
            format!("no snapshot {source}/{stream}/{version}"),
        )),
    }
}

/// `DELETE /v1/stores/{store}/snapshots/{source_uuid}/{stream_uuid}/{version}`
pub async fn delete_snapshot(
    State(st): State<Arc<AppState>>,
    Path((store, source, stream, version)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode> {
    let store = input::store(&store)?;
    authorize(&st, &headers, Some(store), Some(Op::Snapshot))?;
    let (source, stream, version) = snapshot_path(&source, &stream, &version)?;
    call(
        &st,
        st.gater.delete_snapshot(store, &source, &stream, version),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Query of `GET .../snapshots`.
#[derive(Debug, Deserialize)]
pub struct SnapshotQuery {
    source_uuid: Option<String>,
    stream_uuid: Option<String>,
}

/// `GET /v1/stores/{store}/snapshots[?source_uuid=&stream_uuid=]`
pub async fn list_snapshots(
    State(st): State<Arc<AppState>>,
    Path(store): Path<String>,
    headers: HeaderMap,
    query: std::result::Result<Query<SnapshotQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>> {
    let store = input::store(&store)?;
    authorize(&st, &headers, Some(store), Some(Op::Snapshot))?;
    let Query(q) = query.map_err(|e| ApiError::bad_field("query", e.body_text()))?;
    if let Some(s) = &q.source_uuid {
        input::name("source_uuid", s)?;
    }
    if let Some(s) = &q.stream_uuid {
        input::name("stream_uuid", s)?;
    }
    let list = call(
        &st,
        st.gater
            .list_snapshots(store, q.source_uuid.as_deref(), q.stream_uuid.as_deref()),
    )
    .await?;
    Ok(Json(
        json!({ "snapshots": list.iter().map(records::snapshot_json).collect::<Vec<_>>() }),
    ))
}

// ------------------------------------------------------------------ cluster, health, metrics

/// `GET /v1/cluster/nodes`
pub async fn nodes(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Result<Json<Value>> {
    authorize(&st, &headers, None, Some(Op::Admin))?;
    let s = st.gater.cluster_status();
    let nodes: Vec<Value> = s
        .nodes
        .iter()
        .map(|n| {
            json!({
                "node": n.node,
                "connected": n.connected,
                "exesdb": n.exesdb,
                "workers": n.workers,
            })
        })
        .collect();
    let stores: Vec<Value> = s
        .stores
        .iter()
        .map(|x| json!({ "store": x.store.as_str(), "leader": x.leader, "workers": x.workers }))
        .collect();
    Ok(Json(
        json!({ "gateway": s.node_name, "nodes": nodes, "stores": stores }),
    ))
}

/// Whether at least one connected ExESDB node has a gateway worker.
pub fn is_ready(st: &AppState) -> (bool, usize, usize) {
    let s = st.gater.cluster_status();
    let exesdb: Vec<_> = s
        .nodes
        .iter()
        .filter(|n| n.connected && n.exesdb == Some(true))
        .collect();
    let with_workers = exesdb
        .iter()
        .filter(|n| n.workers.values().any(|c| *c > 0))
        .count();
    (with_workers > 0, exesdb.len(), with_workers)
}

/// `GET /health/live`: the process serves HTTP.
pub async fn live() -> Json<Value> {
    Json(json!({ "status": "live" }))
}

/// `GET /health/ready`: 200 when an ExESDB node with a worker is connected, 503 otherwise.
pub async fn ready(State(st): State<Arc<AppState>>) -> Response {
    if st.shutting_down() {
        return ApiError::unavailable("shutting_down", "the gateway is shutting down")
            .into_response();
    }
    let (ok, nodes, with_workers) = is_ready(&st);
    let body = json!({
        "status": if ok { "ready" } else { "not_ready" },
        "exesdb_nodes_connected": nodes,
        "nodes_with_workers": with_workers,
    });
    if ok {
        (StatusCode::OK, Json(body)).into_response()
    } else {
        let mut e = ApiError::unavailable(
            "not_ready",
            "no connected ExESDB node with a gateway worker",
        );
        if let Value::Object(m) = body {
            e.extra.extend(m);
        }
        e.into_response()
    }
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let out = crate::state::render_metrics(&st);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

/// `GET /v1/openapi.json`
pub async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::OPENAPI_JSON,
    )
        .into_response()
}
