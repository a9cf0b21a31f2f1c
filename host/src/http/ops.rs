//! Routes for operators: `GET /metrics` (Prometheus text format; needs `read` when there is a
//! users file), `GET /livez` and `GET /readyz` (no credentials needed: probes carry none),
//! `GET /v1/backup` (a backup file, streamed; needs `admin`), `GET /v1/guest/log` (what guests
//! logged on this node; needs `read`), `GET /v1/debug/raft` (openraft's stage timings and batch
//! sizes on this node, as text; needs `read`), and the middleware that counts and times every request by
//! its route.

use super::error::ApiResult;
use super::Gateway;
use crate::auth::Caller;
use crate::metrics::requests::Api;
use crate::metrics::CONTENT_TYPE;
use crate::service::{GuestLogPage, Readiness};
use axum::extract::rejection::QueryRejection;
use axum::extract::{MatchedPath, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use std::time::Instant;

pub(super) async fn metrics(
    State(g): State<Gateway>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Response> {
    let text = g.service.scrape(&caller)?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response())
}

/// openraft's runtime statistics on this node, as text.
pub(super) async fn raft_stats(
    State(g): State<Gateway>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Response> {
    let text = g.service.raft_stats(&caller).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

/// A backup file of the whole state, streamed as it is read (from the leader).
pub(super) async fn backup(
    State(g): State<Gateway>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Response> {
    use futures::StreamExt;
    let chunks = g.service.backup(&caller).await?;
    // An error after the first bytes can only cut the body short; the file is then refused on
    // restore as truncated.
    let body = axum::body::Body::from_stream(
        chunks.map(|chunk| chunk.map_err(|e| std::io::Error::other(e.to_string()))),
    );
    let headers = [
        (header::CONTENT_TYPE, "application/octet-stream"),
        (
            header::CONTENT_DISPOSITION,
            "attachment; filename=\"raftwasm.backup\"",
        ),
    ];
    Ok((headers, body).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GuestLogParams {
    /// Lines numbered after this one (0: every kept line).
    #[serde(default)]
    after: u64,
}

/// The lines guests logged on this node after `?after=N`.
pub(super) async fn guest_log(
    State(g): State<Gateway>,
    Extension(caller): Extension<Caller>,
    params: Result<Query<GuestLogParams>, QueryRejection>,
) -> ApiResult<Json<GuestLogPage>> {
    let after = super::error::query(params)?.after;
    Ok(Json(g.service.guest_log(&caller, after)?))
}

#[derive(Debug, Serialize)]
struct Live {
    live: bool,
    id: String,
}

/// The process is up and answering.
pub(super) async fn livez(State(g): State<Gateway>) -> Response {
    let id = g.service.local_status().id;
    Json(Live { live: true, id }).into_response()
}

/// 200 when ready for client traffic, 503 with the reason when not.
pub(super) async fn readyz(State(g): State<Gateway>) -> Response {
    let readiness: Readiness = g.service.readiness();
    let code = match readiness.ready {
        true => StatusCode::OK,
        false => StatusCode::SERVICE_UNAVAILABLE,
    };
    (code, Json(readiness)).into_response()
}

/// Counts and times each routed request by its route pattern and answer's status.
pub(super) async fn track(
    State(g): State<Gateway>,
    route: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route = route.map(|r| r.as_str().to_string());
    let response = next.run(request).await;
    let operation = route.as_deref().unwrap_or("unmatched");
    g.service.recorder().requests().answered(
        Api::Http,
        operation,
        response.status().as_str(),
        started.elapsed(),
    );
    response
}
