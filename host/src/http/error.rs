//! How the gateway reads requests and reports failures: every error, whatever its source (a
//! service error, a bad path, query or body, an unknown route, a wrong method), is one JSON shape,
//! [`ErrorBody`], with the HTTP status of its kind. JSON bodies are read whatever their
//! `Content-Type`, as etcd's gateway and rqlite do (`curl -d` sends form encoding).

use crate::service::{ErrorBody, ServiceError};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;

/// An error as the gateway sends it.
pub(super) struct ApiError(ServiceError);

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(ErrorBody::new(&self.0))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            // Tells a browser or curl which credentials to offer.
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Basic realm=\"raftwasm\", charset=\"UTF-8\""),
            );
        }
        response
    }
}

pub(super) type ApiResult<T> = Result<T, ApiError>;

pub(super) fn path<T>(p: Result<Path<T>, PathRejection>) -> ApiResult<T> {
    p.map(|Path(v)| v)
        .map_err(|e| ServiceError::invalid(format!("bad path: {}", e.body_text())).into())
}

pub(super) fn query<T>(q: Result<Query<T>, QueryRejection>) -> ApiResult<T> {
    q.map(|Query(v)| v)
        .map_err(|e| ServiceError::invalid(format!("bad query string: {}", e.body_text())).into())
}

pub(super) fn body(b: Result<Bytes, BytesRejection>, limit: usize) -> ApiResult<Bytes> {
    b.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ServiceError::TooLarge {
                what: "request body".into(),
                size: None,
                limit,
            }
            .into()
        } else {
            ServiceError::invalid(format!("cannot read the request body: {}", e.body_text())).into()
        }
    })
}

/// A JSON body, whatever the request's `Content-Type` says.
pub(super) fn json_body<T: DeserializeOwned>(
    b: Result<Bytes, BytesRejection>,
    limit: usize,
) -> ApiResult<T> {
    let bytes = body(b, limit)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ServiceError::invalid(format!("bad JSON body: {e}")).into())
}

pub(super) fn utf8(bytes: Bytes, what: &str) -> ApiResult<String> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| ServiceError::invalid(format!("{what} must be UTF-8 text")).into())
}

/// Any path no route matches.
pub(super) async fn not_found(method: Method, uri: Uri) -> ApiError {
    ServiceError::not_found(format!("no route for {method} {}", uri.path())).into()
}

/// A route that exists, called with another method.
pub(super) async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ServiceError::method_not_allowed(format!("{} does not accept {method}", uri.path())).into()
}
