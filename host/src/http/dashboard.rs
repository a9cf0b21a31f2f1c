//! The cluster dashboard: `GET /ui` serves one self-contained page (HTML, CSS and script
//! embedded in the binary, nothing fetched from elsewhere) that polls `GET /v1/dashboard` once a
//! second (needs `read`) and draws members, replication lag, rates, modules, the replicas' state
//! hash agreement and recent events. The page needs no credentials; its data does.

use super::error::{query, ApiResult};
use super::Gateway;
use crate::auth::Caller;
use crate::service::ClusterView;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

/// The page, as built into the binary.
const PAGE: &str = include_str!("ui/index.html");

pub(super) async fn page() -> Response {
    let headers = [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CACHE_CONTROL, "no-cache"),
    ];
    (headers, PAGE).into_response()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ViewParams {
    /// Also compare the replicas' state hashes (one guest snapshot() call on each member).
    #[serde(default)]
    state_hash: bool,
}

pub(super) async fn view(
    State(g): State<Gateway>,
    Extension(caller): Extension<Caller>,
    params: Result<Query<ViewParams>, QueryRejection>,
) -> ApiResult<Json<ClusterView>> {
    let state_hash = query(params)?.state_hash;
    Ok(Json(g.service.dashboard(&caller, state_hash).await?))
}
