//! `GET /v1/watch?prefix=P` (or `?key=K`), `&from=R`, `&progress_ms=N`: the changes guests
//! announced, as server-sent events, for a caller with `read` on the keys.
//!
//! Each change is an event `change` whose `id` is its position `R.S` (revision R, its S-th
//! change), so a browser's `EventSource` resumes exactly after the last change it received
//! (`Last-Event-ID`, which wins over `from`). When nothing matches for `progress_ms` (default
//! 5,000), an event `progress` with `id: R` says every change through revision R was sent.
//! A watch that cannot go on ends with an event `error` (the API's error JSON: `compacted` with
//! the oldest revision kept, or `watcher_too_slow` with where to resume); a start from a
//! compacted revision is refused before the stream, with 410.

use super::error::{query, ApiResult};
use super::Gateway;
use crate::auth::Caller;
use crate::service::{
    parse_position, ChangeView, ErrorBody, ServiceError, WatchItem, WatchSpec, DEFAULT_PROGRESS,
};
use crate::store::Cursor;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WatchParams {
    key: Option<String>,
    prefix: Option<String>,
    /// First revision to send (inclusive).
    from: Option<u64>,
    progress_ms: Option<u64>,
}

fn spec(params: WatchParams, headers: &HeaderMap) -> Result<WatchSpec, ServiceError> {
    let (key, prefix) = match (params.key, params.prefix) {
        (Some(key), None) => (key, false),
        (None, Some(prefix)) => (prefix, true),
        _ => {
            return Err(ServiceError::invalid(
                "give exactly one of key= and prefix=",
            ))
        }
    };
    let resumed = headers
        .get("last-event-id")
        .map(|v| parse_position(v.to_str().unwrap_or_default()))
        .transpose()?;
    let after = match (resumed, params.from) {
        (Some(at), _) => Some(at),
        (None, Some(0)) => return Err(ServiceError::invalid("from= starts at revision 1")),
        (None, Some(from)) => Some(Cursor::after_revision(from - 1)),
        (None, None) => None,
    };
    let progress = params
        .progress_ms
        .map_or(DEFAULT_PROGRESS, Duration::from_millis);
    Ok(WatchSpec {
        key,
        prefix,
        after,
        progress,
    })
}

pub(super) async fn watch(
    State(g): State<Gateway>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    params: Result<Query<WatchParams>, QueryRejection>,
) -> ApiResult<Response> {
    let spec = spec(query(params)?, &headers)?;
    let watch = g.service.watch_changes(&caller, spec)?;
    let events = futures::stream::unfold(Some(watch), |watch| async move {
        let mut watch = watch?;
        let events: Vec<Event> = match watch.next().await? {
            Ok(WatchItem::Changes(changes)) => changes
                .iter()
                .map(|c| {
                    let view = ChangeView::of(c);
                    let data = serde_json::to_string(&view).unwrap_or_default();
                    Event::default().event("change").id(view.id()).data(data)
                })
                .collect(),
            Ok(WatchItem::Progress { revision }) => {
                let data = serde_json::json!({ "revision": revision }).to_string();
                vec![Event::default()
                    .event("progress")
                    .id(revision.to_string())
                    .data(data)]
            }
            Err(e) => {
                let data = serde_json::to_string(&ErrorBody::new(&e)).unwrap_or_default();
                let last = Event::default().event("error").data(data);
                return Some((vec![last], None));
            }
        };
        Some((events, Some(watch)))
    });
    use futures::StreamExt;
    let events = events.flat_map(|batch| {
        futures::stream::iter(batch.into_iter().map(Ok::<_, std::convert::Infallible>))
    });
    Ok(Sse::new(events).into_response())
}
