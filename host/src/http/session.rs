//! Where an HTTP write stands in a client session: `client_id` and `seq` query parameters, or
//! an `Idempotency-Key: <client_id>:<seq>` header (one or the other, not both). Writes without
//! either are plain writes.

use super::error::ApiError;
use crate::service::ServiceError;
use crate::types::SessionRef;
use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use serde::Deserialize;

/// The header naming a write's session and sequence number.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// A write's session, if it has one.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Sessioned(pub Option<SessionRef>);

#[derive(Debug, Default, Deserialize)]
struct SessionQuery {
    client_id: Option<u64>,
    seq: Option<u64>,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ServiceError::invalid(message).into()
}

/// `<client_id>:<seq>`, both decimal.
fn parse_key(value: &str) -> Option<SessionRef> {
    let (client_id, seq) = value.trim().split_once(':')?;
    Some(SessionRef {
        client_id: client_id.parse().ok()?,
        seq: seq.parse().ok()?,
    })
}

impl<S: Send + Sync> FromRequestParts<S> for Sessioned {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Query(query) = Query::<SessionQuery>::try_from_uri(&parts.uri)
            .map_err(|e| invalid(format!("bad client_id or seq parameter: {e}")))?;
        let from_query = match (query.client_id, query.seq) {
            (Some(client_id), Some(seq)) => Some(SessionRef { client_id, seq }),
            (None, None) => None,
            _ => return Err(invalid("client_id and seq go together")),
        };
        let from_header = match parts.headers.get(IDEMPOTENCY_KEY) {
            Some(value) => Some(
                value
                    .to_str()
                    .ok()
                    .and_then(parse_key)
                    .ok_or_else(|| invalid("Idempotency-Key must be <client_id>:<seq>"))?,
            ),
            None => None,
        };
        match (from_query, from_header) {
            (Some(_), Some(_)) => Err(invalid(
                "give the session as client_id/seq parameters or as Idempotency-Key, not both",
            )),
            (a, b) => Ok(Sessioned(a.or(b))),
        }
    }
}
