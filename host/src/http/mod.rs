//! The HTTP gateway (axum) on `--http`: the original curl routes and a JSON API, both thin
//! wrappers over the [`Service`] layer.
//!
//! Original routes (path segments are percent-decoded; `%2F` puts a `/` in a key):
//! `GET /Get/{key}` (the value as text), `GET /Put/{key}/{value}` (`/Put/{key}/` for an empty
//! value), `GET /Delete/{key}`,
//! `GET /AddVoter/{address}/{id}`, `GET /TransferLeader/{id}`, `GET /Monitor`.
//!
//! JSON API: `GET|PUT|DELETE /v1/kv/{key}` (value as the PUT body; keys may contain `/`),
//! `GET /v1/kv?prefix=&start=&end=&limit=`, `POST /v1/cluster/nodes`,
//! `DELETE /v1/cluster/nodes/{id}`, `POST /v1/cluster/leader` (`{"id": ...}`), `GET /v1/status` (`?state_hash=true` adds a hash of the guest
//! state), `POST /v1/snapshot`, `POST /v1/apply`, `POST /v1/query`.
//! Reads take `?consistency=stale`. Every error is JSON: `{"error": message, "code": kind, ...}`.

use crate::service::{Consistency, ScanParams, Service, ServiceError};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

/// Default cap on a request body.
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// Header carrying the log index of a committed write.
const LOG_INDEX_HEADER: &str = "x-raft-index";

/// An error as the gateway sends it.
struct ApiError(ServiceError);

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut body = serde_json::to_value(&self.0).unwrap_or_else(|_| json!({}));
        if let Some(obj) = body.as_object_mut() {
            obj.insert("error".into(), json!(self.0.to_string()));
        }
        (status, Json(body)).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn path<T>(p: Result<Path<T>, PathRejection>) -> ApiResult<T> {
    p.map(|Path(v)| v)
        .map_err(|e| ServiceError::invalid(format!("bad path: {}", e.body_text())).into())
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> ApiResult<T> {
    q.map(|Query(v)| v)
        .map_err(|e| ServiceError::invalid(format!("bad query string: {}", e.body_text())).into())
}

fn body(b: Result<Bytes, BytesRejection>, limit: usize) -> ApiResult<Bytes> {
    b.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large_body(limit)
        } else {
            ServiceError::invalid(format!("cannot read the request body: {}", e.body_text())).into()
        }
    })
}

fn json_body<T>(j: Result<Json<T>, JsonRejection>, limit: usize) -> ApiResult<T> {
    j.map(|Json(v)| v).map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large_body(limit)
        } else {
            ServiceError::invalid(format!("bad JSON body: {}", e.body_text())).into()
        }
    })
}

fn too_large_body(limit: usize) -> ApiError {
    ServiceError::TooLarge {
        what: "request body".into(),
        size: None,
        limit,
    }
    .into()
}

fn utf8(bytes: Bytes, what: &str) -> ApiResult<String> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| ServiceError::invalid(format!("{what} must be UTF-8 text")).into())
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
    max_body_bytes: usize,
}

/// The gateway's routes over `service`, with request bodies capped at `max_body_bytes`.
pub fn router(service: Service, max_body_bytes: usize) -> Router {
    let state = Gateway {
        service,
        max_body_bytes,
    };
    Router::new()
        .route("/Get/{key}", get(legacy_get))
        .route("/Put/{key}/{value}", get(legacy_put))
        .route("/Put/{key}/", get(legacy_put_empty))
        .route("/Delete/{key}", get(legacy_delete))
        .route("/AddVoter/{address}/{id}", get(legacy_add_voter))
        .route("/Monitor", get(status))
        .route("/v1/status", get(status))
        .route("/v1/snapshot", axum::routing::post(snapshot))
        .route("/v1/kv", get(scan))
        .route("/v1/kv/{*key}", get(kv_get).put(kv_put).delete(kv_delete))
        .route("/v1/cluster/nodes", axum::routing::post(add_node))
        .route("/v1/cluster/nodes/{id}", axum::routing::delete(remove_node))
        .route("/v1/cluster/leader", axum::routing::post(transfer_leader))
        .route("/TransferLeader/{id}", get(legacy_transfer_leader))
        .route("/v1/apply", axum::routing::post(apply))
        .route("/v1/query", axum::routing::post(query_raw))
        // A module may be larger than other bodies.
        .route(
            "/v1/fsm",
            axum::routing::post(upgrade_fsm)
                .layer(DefaultBodyLimit::max(crate::service::MAX_MODULE_BYTES)),
        )
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ServiceError::not_found(format!("no route for {method} {}", uri.path())).into()
}

async fn legacy_get(
    State(g): State<Gateway>,
    key: Result<Path<String>, PathRejection>,
    params: Result<Query<ReadParams>, QueryRejection>,
) -> ApiResult<String> {
    let key = path(key)?;
    let params = query(params)?;
    Ok(g.service.get(&key, params.consistency, 0).await?)
}

async fn legacy_put(
    State(g): State<Gateway>,
    kv: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<Response> {
    let (key, value) = path(kv)?;
    let put = g.service.put(&key, &value, 0).await?;
    Ok(with_index(
        put.log_index,
        Json(json!({"key": key, "value": value, "prev": put.prev, "log_index": put.log_index})),
    ))
}

/// `/Put/{key}/`: a path segment cannot be empty, so an empty value has a route of its own.
async fn legacy_put_empty(
    State(g): State<Gateway>,
    key: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    let key = path(key)?;
    legacy_put(State(g), Ok(Path((key, String::new())))).await
}

async fn legacy_delete(
    State(g): State<Gateway>,
    key: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    let key = path(key)?;
    let d = g.service.delete(&key, 0).await?;
    Ok(with_index(
        d.log_index,
        Json(json!({"key": key, "deleted": d.deleted, "prev": d.prev, "log_index": d.log_index})),
    ))
}

async fn legacy_add_voter(
    State(g): State<Gateway>,
    p: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<Json<crate::service::Status>> {
    let (address, id) = path(p)?;
    Ok(Json(g.service.add_node(&id, &address, false, 0).await?))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusParams {
    #[serde(default)]
    state_hash: bool,
}

async fn status(
    State(g): State<Gateway>,
    params: Result<Query<StatusParams>, QueryRejection>,
) -> ApiResult<Json<crate::service::Status>> {
    if query(params)?.state_hash {
        return Ok(Json(g.service.status_with_state_hash()?));
    }
    Ok(Json(g.service.status()))
}

async fn snapshot(State(g): State<Gateway>) -> ApiResult<Json<crate::service::SnapshotInfo>> {
    Ok(Json(g.service.snapshot().await?))
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
    key: Result<Path<String>, PathRejection>,
    params: Result<Query<ReadParams>, QueryRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let key = path(key)?;
    let params = query(params)?;
    let value = g.service.get(&key, params.consistency, 0).await?;
    Ok(Json(json!({"key": key, "value": value})))
}

async fn kv_put(
    State(g): State<Gateway>,
    key: Result<Path<String>, PathRejection>,
    value: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let key = path(key)?;
    let value = utf8(body(value, g.max_body_bytes)?, "value")?;
    let put = g.service.put(&key, &value, 0).await?;
    Ok(with_index(
        put.log_index,
        Json(json!({"key": key, "prev": put.prev, "log_index": put.log_index})),
    ))
}

async fn kv_delete(
    State(g): State<Gateway>,
    key: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    let key = path(key)?;
    let d = g.service.delete(&key, 0).await?;
    if !d.deleted {
        return Err(ServiceError::not_found(format!("key {key:?} not found")).into());
    }
    Ok(with_index(
        d.log_index,
        Json(json!({"key": key, "prev": d.prev, "log_index": d.log_index})),
    ))
}

async fn scan(
    State(g): State<Gateway>,
    params: Result<Query<ScanQuery>, QueryRejection>,
) -> ApiResult<Json<crate::service::ScanPage>> {
    let q = query(params)?;
    let params = ScanParams {
        prefix: q.prefix,
        start: q.start,
        end: q.end,
        limit: q.limit,
    };
    Ok(Json(g.service.scan(&params, q.consistency, 0).await?))
}

async fn add_node(
    State(g): State<Gateway>,
    req: Result<Json<AddNodeBody>, JsonRejection>,
) -> ApiResult<Json<crate::service::Status>> {
    let req = json_body(req, g.max_body_bytes)?;
    Ok(Json(
        g.service
            .add_node(&req.id, &req.address, req.learner, 0)
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
    req: Result<Json<TransferBody>, JsonRejection>,
) -> ApiResult<Json<crate::service::Status>> {
    let req = json_body(req, g.max_body_bytes)?;
    Ok(Json(g.service.transfer_leader(&req.id, 0).await?))
}

async fn legacy_transfer_leader(
    State(g): State<Gateway>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<crate::service::Status>> {
    let id = path(id)?;
    Ok(Json(g.service.transfer_leader(&id, 0).await?))
}

async fn remove_node(
    State(g): State<Gateway>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<crate::service::Status>> {
    let id = path(id)?;
    Ok(Json(g.service.remove_node(&id, 0).await?))
}

async fn apply(
    State(g): State<Gateway>,
    command: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let command = body(command, g.max_body_bytes)?;
    let applied = g.service.apply(command.to_vec(), 0).await?;
    Ok(with_index(
        applied.log_index,
        (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            applied.response,
        ),
    ))
}

async fn query_raw(
    State(g): State<Gateway>,
    params: Result<Query<ReadParams>, QueryRejection>,
    request: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let params = query(params)?;
    let request = body(request, g.max_body_bytes)?;
    let response = g
        .service
        .query(request.to_vec(), params.consistency, 0)
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
    params: Result<Query<UpgradeParams>, QueryRejection>,
    module: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let params = query(params)?;
    let module = body(module, crate::service::MAX_MODULE_BYTES)?;
    let upgrade = g
        .service
        .upgrade_fsm(module.to_vec(), params.dry_run, 0)
        .await?;
    Ok(with_index(upgrade.log_index, Json(upgrade)))
}
