//! Watching changes: the change feed's events for one key or a prefix, from a revision, in
//! order, each once, with a progress notice when nothing matched for a while.
//!
//! Any node serves a watch from its own feed, which follows its applied index: a follower's
//! feed may lag the leader's, never reorders nor skips a change. Each watcher is one task
//! reading the shared feed at its own cursor into a small channel, so a watcher holds at most
//! [`QUEUED`] batches of memory; one whose channel stays full for the configured cut-off is
//! ended with [`ServiceError::WatcherTooSlow`], and one that falls out of the feed's retention
//! with [`ServiceError::Compacted`].

use super::{Service, ServiceError};
use crate::auth::{Caller, Permission, Scope};
use crate::metrics::watch::{Ended, WatchMetrics};
use crate::store::{ChangeEvent, ChangeFeed, Cursor};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Batches a watcher's channel holds: with [`READ_BYTES`], what a watcher may hold of the
/// node's memory beyond the HTTP/2 send buffer.
const QUEUED: usize = 4;
/// Changes one read of the feed takes, at most.
const READ_BATCH: usize = 512;
/// Bytes of changes one read of the feed takes, about (at least one change): a batch is one
/// gRPC reply (a client's default limit for one is 4 MiB).
const READ_BYTES: usize = 256 << 10;
/// Progress interval when the watcher does not ask for one.
pub const DEFAULT_PROGRESS: Duration = Duration::from_secs(5);

/// One change as the HTTP API and kvclient show it (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeView {
    pub revision: u64,
    pub seq: u32,
    pub key: String,
    /// The guest's payload when it is JSON (guest-kv's [`guest_kv::schema::Change`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<serde_json::Value>,
    /// The payload in base64 when it is not JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_base64: Option<String>,
}

impl ChangeView {
    pub fn of(event: &ChangeEvent) -> Self {
        use base64::Engine;
        let change = serde_json::from_slice(&event.payload).ok();
        let payload_base64 = match change {
            Some(_) => None,
            None => Some(base64::engine::general_purpose::STANDARD.encode(&event.payload)),
        };
        ChangeView {
            revision: event.revision,
            seq: event.seq,
            key: event.key.clone(),
            change,
            payload_base64,
        }
    }

    /// Its position: what a resuming watcher gives as `Last-Event-ID` (`R.S`).
    pub fn id(&self) -> String {
        format!("{}.{}", self.revision, self.seq)
    }
}

/// A resume position as a watcher gives it: `R.S` (after change S of revision R) or `R`
/// (after all of revision R).
pub fn parse_position(text: &str) -> Result<Cursor, ServiceError> {
    let bad = || ServiceError::invalid(format!("bad watch position {text:?}: want R or R.S"));
    let (revision, seq) = match text.split_once('.') {
        Some((r, s)) => (r, Some(s)),
        None => (text, None),
    };
    let revision = revision.trim().parse().map_err(|_| bad())?;
    let seq = match seq {
        Some(s) => s.trim().parse().map_err(|_| bad())?,
        None => u32::MAX,
    };
    Ok(Cursor { revision, seq })
}

/// What to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchSpec {
    /// The key, or the prefix when `prefix` (an empty prefix: every key).
    pub key: String,
    pub prefix: bool,
    /// Where to start: after this position (`Cursor::after_revision(R - 1)` to start at
    /// revision R). None: after the node's applied revision, new changes only.
    pub after: Option<Cursor>,
    /// A progress notice after this long without a matching change.
    pub progress: Duration,
}

impl WatchSpec {
    fn matches(&self, key: &str) -> bool {
        match self.prefix {
            true => key.starts_with(&self.key),
            false => key == self.key,
        }
    }
}

/// One message of a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchItem {
    /// Matching changes, in order (a revision's may continue in the next item: positions say
    /// where a watcher resumes).
    Changes(Vec<Arc<ChangeEvent>>),
    /// Nothing matched up to and including `revision` since the last item.
    Progress { revision: u64 },
}

/// A running watch; ends with an error, or never while the node runs.
#[derive(Debug)]
pub struct Watch {
    rx: mpsc::Receiver<Result<WatchItem, ServiceError>>,
}

impl Watch {
    /// The next item; `None` once the watch ended (after its error).
    pub async fn next(&mut self) -> Option<Result<WatchItem, ServiceError>> {
        self.rx.recv().await
    }
}

impl Service {
    /// This node's name (what watch replies carry).
    pub fn node_name(&self) -> &str {
        &self.inner.name
    }

    /// Starts a watch of `spec` on this node's feed, for a caller allowed to read its keys.
    pub fn watch_changes(&self, caller: &Caller, spec: WatchSpec) -> Result<Watch, ServiceError> {
        let scope = match spec.prefix {
            true => Scope::Scan(Some(&spec.key)),
            false => Scope::Key(&spec.key),
        };
        caller.allow(Permission::Read, scope)?;
        if spec.progress.is_zero() {
            return Err(ServiceError::invalid(
                "the progress interval must be at least 1 ms",
            ));
        }
        let feed = self.inner.sm.feed().clone();
        let after = spec
            .after
            .unwrap_or_else(|| Cursor::after_revision(feed.revision()));
        // A compacted start is refused now, before a stream begins.
        feed.read(after, 0, 0)?;
        // One slot beyond the batches for the final error, so it is never lost to a full
        // channel.
        let (tx, rx) = mpsc::channel(QUEUED + 1);
        let cutoff = self.inner.watch.slow_cutoff;
        let metrics = self.inner.metrics.watch().clone();
        tokio::spawn(follow(
            feed,
            spec,
            after,
            Out {
                tx,
                cutoff,
                metrics,
            },
        ));
        Ok(Watch { rx })
    }
}

type Sender = mpsc::Sender<Result<WatchItem, ServiceError>>;

/// Where a watch's items go, how long they may wait for room, and what is counted.
struct Out {
    tx: Sender,
    cutoff: Duration,
    metrics: WatchMetrics,
}

/// Feeds one watcher until it goes away, falls behind the retention, or stops reading.
async fn follow(feed: ChangeFeed, spec: WatchSpec, mut after: Cursor, out: Out) {
    let _open = out.metrics.opened();
    let mut sealed = feed.subscribe();
    let mut quiet_since = tokio::time::Instant::now();
    loop {
        let (events, revision) = match feed.read(after, READ_BATCH, READ_BYTES) {
            Ok(read) => read,
            Err(compacted) => {
                out.metrics.ended(Ended::Compacted);
                return end(&out.tx, compacted.into()).await;
            }
        };
        if let Some(last) = events.last() {
            let before = after;
            after = Cursor {
                revision: last.revision,
                seq: last.seq,
            };
            let matching: Vec<_> = events
                .into_iter()
                .filter(|e| spec.matches(&e.key))
                .collect();
            if !matching.is_empty() {
                let count = matching.len();
                if !send(&out, WatchItem::Changes(matching), before).await {
                    return;
                }
                out.metrics.sent(count);
                quiet_since = tokio::time::Instant::now();
            }
            continue;
        }
        // Caught up: everything through `revision` has been seen.
        after = after.max(Cursor::after_revision(revision));
        let progress_at = quiet_since + spec.progress;
        tokio::select! {
            changed = sealed.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep_until(progress_at) => {
                let item = WatchItem::Progress { revision };
                if !send(&out, item, after).await {
                    return;
                }
                quiet_since = tokio::time::Instant::now();
            }
            _ = out.tx.closed() => return,
        }
    }
}

/// Sends `item`, waiting at most the cut-off for room; false when the watch is over. `from`: the
/// position before `item`, where a cut-off watcher resumes.
async fn send(out: &Out, item: WatchItem, from: Cursor) -> bool {
    let (tx, cutoff) = (&out.tx, out.cutoff);
    let deadline = tokio::time::Instant::now() + cutoff;
    // One slot stays free for the error. Only this task sends, so room only grows.
    while tx.capacity() < 2 {
        if tx.is_closed() {
            return false;
        }
        if tokio::time::Instant::now() >= deadline {
            out.metrics.ended(Ended::TooSlow);
            return too_slow(tx, cutoff, from).await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tx.try_send(Ok(item)).is_ok()
}

async fn too_slow(tx: &Sender, cutoff: Duration, at: Cursor) -> bool {
    let resume_from = match at.seq {
        u32::MAX => at.revision + 1,
        _ => at.revision,
    };
    let message = format!(
        "watcher too slow: its stream stayed full for {} ms; watch again from revision \
         {resume_from}",
        cutoff.as_millis()
    );
    end(
        tx,
        ServiceError::WatcherTooSlow {
            message,
            resume_from,
        },
    )
    .await;
    false
}

async fn end(tx: &Sender, error: ServiceError) {
    // The kept slot, if the watcher is still there at all.
    let _ = tx.try_send(Err(error));
}
