//! The HTTP gateway (axum) on `--http`: the original curl routes and a JSON API, both thin
//! wrappers over the [`Service`] layer.
//!
//! Original routes (path segments are percent-decoded; `%2F` puts a `/` in a key):
//! `GET /Get/{key}` (the value as text), `GET /Put/{key}/{value}` (`/Put/{key}/` for an empty
//! value), `GET /Delete/{key}`,
//! `GET /AddVoter/{address}/{id}`, `GET /TransferLeader/{id}`, `GET /Monitor`.
//!
//! JSON API: `GET|PUT|DELETE /v1/kv/{key}` (value as the PUT body; keys may contain `/`; a
//! delete of a missing key answers `deleted: false`, as gRPC does), `GET
//! /v1/kv?prefix=&start=&end=&limit=` (an empty parameter counts as absent), `POST
//! /v1/cluster/nodes`, `DELETE /v1/cluster/nodes/{id}`, `POST /v1/cluster/leader` (`{"id":
//! ...}`), `GET /v1/status` (`?state_hash=true` adds a hash of the guest state), `POST
//! /v1/snapshot`, `POST /v1/apply`, `POST /v1/query`, `POST /v1/fsm`. JSON bodies are read
//! whatever their `Content-Type`. For operators (`ops`): `GET /metrics`, `/livez`, `/readyz`,
//! `/v1/backup`; the dashboard (`dashboard`): `GET /ui` and its data, `GET /v1/dashboard`;
//! the change feed (`watch`): `GET /v1/watch`, server-sent events.
//! Reads take `?consistency=stale`. Every error, 404 and 405 included, is one JSON shape (see
//! [`crate::service::ErrorBody`]): `{"code": kind, "error": text, "message": cause, ...}`.
//! With `--auth-file`, requests authenticate with HTTP Basic or Bearer credentials or a client
//! certificate (see `caller`); a refusal is 401 (with `WWW-Authenticate`) or 403.

mod caller;
mod dashboard;
mod error;
mod ops;
mod session;
mod watch;

pub use caller::ClientCertificate;

use crate::auth::{Authenticator, Caller};
use crate::config::MAX_MODULE_BYTES;
use crate::service::{Consistency, ScanParams, ScanResponse, Service, Status};
use crate::types::SessionRef;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Extension, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use error::{body, json_body, path, query, utf8, ApiResult};
use serde::{Deserialize, Serialize};
use session::Sessioned;

/// Header carrying the log index of a committed write.
const LOG_INDEX_HEADER: &str = "x-raft-index";

/// A key's value (`GET /v1/kv/{key}`).
#[derive(Debug, Serialize)]
struct KvReply {
    key: String,
    value: String,
}

/// A committed put. `value` is echoed by the original `/Put` route only.
#[derive(Debug, Serialize)]
struct PutReply {
    key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    prev: Option<String>,
    log_index: u64,
}

/// A committed delete; `deleted` is false when the key was not there (etcd's `deleted: 0`).
#[derive(Debug, Serialize)]
struct DeleteReply {
    key: String,
    deleted: bool,
    prev: Option<String>,
    log_index: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadParams {
    #[serde(default)]
    consistency: Consistency,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScanQuery {
    prefix: Option<String>,
    start: Option<String>,
    end: Option<String>,
    limit: Option<usize>,
    #[serde(default)]
    consistency: Consistency,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddNodeBody {
    id: String,
    address: String,
    #[serde(default)]
    learner: bool,
}

#[derive(Clone)]
struct Gateway {
    service: Service,
    auth: Authenticator,
    max_body_bytes: usize,
}

/// The gateway's routes over `service`, each request authenticated by `auth`, with request
/// bodies capped at `max_body_bytes`.
pub fn router(service: Service, auth: Authenticator, max_body_bytes: usize) -> Router {
    let state = Gateway {
        service,
        auth,
        max_body_bytes,
    };
    Router::new()
        .route("/Get/{key}", get(legacy_get))
        .route("/Put/{key}/{value}", get(legacy_put))
        .route("/Put/{key}/", get(legacy_put_empty))
        .route("/Delete/{key}", get(legacy_delete))
        .route("/AddVoter/{address}/{id}", get(legacy_add_voter))
        .route("/TransferLeader/{id}", get(legacy_transfer_leader))
        .route("/Monitor", get(status))
        .route("/v1/status", get(status))
        .route("/v1/snapshot", post(snapshot))
        .route("/v1/backup", get(ops::backup))
        .route("/v1/guest/log", get(ops::guest_log))
        .route("/v1/debug/raft", get(ops::raft_stats))
        .route("/v1/watch", get(watch::watch))
        .route("/ui", get(dashboard::page))
        .route("/v1/dashboard", get(dashboard::view))
        .route("/v1/kv", get(scan))
        .route("/v1/kv/{*key}", get(kv_get).put(kv_put).delete(kv_delete))
        .route("/v1/cluster/nodes", post(add_node))
        .route("/v1/cluster/nodes/{id}", delete(remove_node))
        .route("/v1/cluster/leader", post(transfer_leader))
        .route("/v1/apply", post(apply))
        .route("/v1/sessions", post(open_session))
        .route("/v1/query", post(query_raw))
        .route("/metrics", get(ops::metrics))
        .route("/livez", get(ops::livez))
        .route("/readyz", get(ops::readyz))
        // A module may be larger than other bodies.
        .route(
            "/v1/fsm",
            post(upgrade_fsm).layer(DefaultBodyLimit::max(MAX_MODULE_BYTES)),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            ops::track,
        ))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            caller::authenticate,
        ))
        .with_state(state)
}

async fn legacy_get(
    State(g): State<Gateway>,
    Extension(caller): Extension<Caller>,
    key: Result<Path<String>, PathRejection>,
    params: Result<Query<ReadParams>, QueryRejection>,
) -> ApiResult<String> {
    let key = path(key)?;
    let params = query(params)?;
    Ok(g.service.get(&caller, &key, params.consistency).await?)
}

async fn legacy_put(
    State(g): State<Gateway>,
    Extension(caller): Extension<Caller>,
    Sessioned(session): Sessioned,
    kv: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<Response> {
    let (key, value) = path(kv)?;
    let put = g.service.put(&caller, &key, &value, session).await?;
    Ok(with_index(
        put.log_index,
        Json(PutReply {
            key,
            value: Some(value),
            prev: put.prev,
            log_index: put.log_index,
        }),
    ))
}

/// `/Put/{key}/`: a path segment cannot be empty, so an empty value has a route of its own.
async fn legacy_put_empty(
    State(g): State<Gateway>,
    Extension(caller): Extension<Caller>,
    session: Sessioned,
    key: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    let key = path(key)?;
    let kv = Ok(Path((key, String::new())));
    legacy_put(State(g), Extension(caller), session, kv).await
}

async fn legacy_delete(
    State(g): State<Gateway>,
    Extension(caller): Extension<Caller>,
    Sessioned(session): Sessioned,
    key: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    let key = path(key)?;
    deleted(&g, &caller, key, session).await
}

async fn deleted(
    g: &Gateway,
    caller: &Caller,
    key: String,
    session: Option<SessionRef>,
) -> ApiResult<Response> {
    let d = g.service.delete(caller, &key, session).await?;
    Ok(with_index(
        d.log_index,
        Json(DeleteReply {
            key,
            deleted: d.deleted,
            prev: d.prev,
            log_index: d.log_index,
        }),
    ))
}

async fn legacy_add_voter(
    State(g): State<Gateway>,
    Extension(caller): Extension<Caller>,
    p: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<Json<Status>> {
    let (address, id) = path(p)?;
    Ok(Json(
        g.service.add_node(&caller, &id, &address, false).await?,
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusParams {
    #[serde(default)]
    state_hash: bool,
}

async fn status(
    State(g): State<Gateway>,
    Extension(caller): Extension<Caller>,
    params: Result<Query<StatusParams>, QueryRejection>,
) -> ApiResult<Json<Status>> {
    if query(params)?.state_hash {
        return Ok(Json(g.service.status_with_state_hash(&caller).await?));
    }
    Ok(Json(g.service.status(&caller)?))
}

async fn snapshot(
    State(g): State<Gateway>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<crate::service::SnapshotInfo>> {
    Ok(Json(g.service.snapshot(&caller).await?))
}

fn with_index(index: u64, body: impl IntoResponse) -> Response {
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&index.to_string()) {
        headers.insert(LOG_INDEX_HEADER, v);
    }
    (headers, body).into_response()
}

async fn kv_get(
    State(g): State<Gateway>,
    Extension(caller): Extension<Caller>,
    key: Result<Path<String>, PathRejection>,
    params: Result<Query<ReadParams>, QueryRejection>,
) -> ApiResult<Json<KvReply>> {
    let key = path(key)?;
    let params = query(params)?;
    let value = g.service.get(&caller, &key, params.consistency).await?;
    Ok(Json(KvReply { key, value }))
}

async fn kv_put(
    State(g): State<Gateway>,
    Extension(caller): Extension<Caller>,
    Sessioned(session): Sessioned,
    key: Result<Path<String>, PathRejection>,
    value: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let key = path(key)?;
    let value = utf8(body(value, g.max_body_bytes)?, "value")?;
    let put = g.service.put(&caller, &key, &value, session).await?;
    Ok(with_index(
        put.log_index,
        Json(PutReply {
            key,
            value: None,
            prev: put.prev,
            log_index: put.log_index,
        }),
    ))
}

async fn kv_delete(
    State(g): State<Gateway>,
    Extension(caller): Extension<Caller>,
    Sessioned(session): Sessioned,
    key: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    let key = path(key)?;
    deleted(&g, &caller, key, session).await
}

async fn scan(
    State(g): State<Gateway>,
    Extension(caller): Extension<Caller>,
    params: Result<Query<ScanQuery>, QueryRejection>,
) -> ApiResult<Json<ScanResponse>> {
    let q = query(params)?;
    let params = ScanParams {
        prefix: q.prefix,
        start: q.start,
        end: q.end,
        limit: q.limit,
    };
    Ok(Json(g.service.scan(&caller, &params, q.consistency).await?))
}

async fn add_node(
    State(g): State<Gateway>,
    Extension(caller): Extension<Caller>,
    req: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Status>> {
    let req: AddNodeBody = json_body(req, g.max_body_bytes)?;
    Ok(Json(
        g.service
            .add_node(&caller, &req.id, &req.address, req.learner)
            .await?,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferBody {
    id: String,
}

async fn transfer_leader(
    State(g): State<Gateway>,
    Extension(caller): Extension<Caller>,
    req: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Status>> {
    let req: TransferBody = json_body(req, g.max_body_bytes)?;
    Ok(Json(g.service.transfer_leader(&caller, &req.id).await?))
}

async fn legacy_transfer_leader(
    State(g): State<Gateway>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Status>> {
    let id = path(id)?;
    Ok(Json(g.service.transfer_leader(&caller, &id).await?))
}

async fn remove_node(
    State(g): State<Gateway>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Status>> {
    let id = path(id)?;
    Ok(Json(g.service.remove_node(&caller, &id).await?))
}

async fn apply(
    State(g): State<Gateway>,
    Extension(caller): Extension<Caller>,
    Sessioned(session): Sessioned,
    command: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let command = body(command, g.max_body_bytes)?;
    let applied = g.service.apply(&caller, command.to_vec(), session).await?;
    Ok(with_index(
        applied.log_index,
        (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            applied.response,
        ),
    ))
}

#[derive(Debug, Serialize)]
struct SessionReply {
    client_id: u64,
}

async fn open_session(
    State(g): State<Gateway>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<SessionReply>> {
    let client_id = g.service.open_session(&caller).await?;
    Ok(Json(SessionReply { client_id }))
}

async fn query_raw(
    State(g): State<Gateway>,
    Extension(caller): Extension<Caller>,
    params: Result<Query<ReadParams>, QueryRejection>,
    request: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let params = query(params)?;
    let request = body(request, g.max_body_bytes)?;
    let response = g
        .service
        .query(&caller, request.to_vec(), params.consistency)
        .await?;
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        response,
    )
        .into_response())
}

#[derive(Debug, Default, Deserialize)]
struct UpgradeParams {
    #[serde(default)]
    dry_run: bool,
}

/// `POST /v1/fsm[?dry_run=true]` with the component as the body: replace the guest module
/// through the log (or only validate it).
async fn upgrade_fsm(
    State(g): State<Gateway>,
    Extension(caller): Extension<Caller>,
    params: Result<Query<UpgradeParams>, QueryRejection>,
    module: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let params = query(params)?;
    let module = body(module, MAX_MODULE_BYTES)?;
    let upgrade = g
        .service
        .upgrade_fsm(&caller, module.to_vec(), params.dry_run)
        .await?;
    Ok(with_index(upgrade.log_index, Json(upgrade)))
}
