//! The change feed: the changes guests announced (`emit` of `raftwasm:fsm/context@0.2.0`),
//! numbered by revision (the index of the entry that made them) and sequence within the entry,
//! kept for watchers.
//!
//! Every node applies the same entries, so every node's feed holds the same changes in the same
//! order; a node's feed only lags its applied index. An entry's changes become visible together
//! when the entry is applied (`seal`), so a reader never sees half an applied entry. The feed keeps the
//! latest `entries` revisions and at most `bytes` of keys and payloads; everything at or below
//! `compacted` may be gone, and a reader asking for it gets [`Compacted`]. Snapshots carry the
//! feed, so a node that installs one (or restarts from one) goes on serving the same revisions.

use crate::fsm::GuestEvent;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use thiserror::Error;
use tokio::sync::watch;

/// One announced change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeEvent {
    /// The index of the entry that made it.
    pub revision: u64,
    /// Its place among the entry's changes, from 0.
    pub seq: u32,
    pub key: String,
    pub payload: Vec<u8>,
}

/// Memory one kept change takes beyond its key and payload: the shared [`ChangeEvent`] with its
/// reference counts, the queue's slot, and the allocator's header on each of its three
/// allocations. Counted so that the retention's bytes are what the feed holds of the heap.
const PER_CHANGE_BYTES: usize = std::mem::size_of::<ChangeEvent>() + 16 + 8 + 3 * 16;

impl ChangeEvent {
    fn bytes(&self) -> usize {
        self.key.capacity() + self.payload.capacity() + PER_CHANGE_BYTES
    }
}

/// A position in the feed: after change `seq` of `revision` (`seq == u32::MAX`: after all of
/// the revision's changes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    pub revision: u64,
    pub seq: u32,
}

impl Cursor {
    /// After every change of `revision` and before.
    pub fn after_revision(revision: u64) -> Cursor {
        Cursor {
            revision,
            seq: u32::MAX,
        }
    }

    fn of(event: &ChangeEvent) -> Cursor {
        Cursor {
            revision: event.revision,
            seq: event.seq,
        }
    }
}

/// The changes a reader asked for are no longer kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error(
    "revision {wanted} is compacted: the oldest revision this node keeps changes from is {oldest}"
)]
pub struct Compacted {
    pub wanted: u64,
    pub oldest: u64,
}

/// How much of the feed a node keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Revisions (log entries) whose changes are kept behind the applied index.
    pub entries: u64,
    /// Bytes of memory kept (keys, payloads and each change's bookkeeping); past it the oldest
    /// revisions go first.
    pub bytes: usize,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            entries: crate::config::DEFAULT_WATCH_HISTORY_ENTRIES,
            bytes: crate::config::DEFAULT_WATCH_HISTORY_BYTES,
        }
    }
}

#[derive(Debug, Default)]
struct Kept {
    events: VecDeque<Arc<ChangeEvent>>,
    bytes: usize,
    /// Changes of revisions at or below this one may be gone.
    compacted: u64,
    /// The last revision sealed: applied, its changes visible.
    sealed: u64,
    /// The changes of the entry being applied.
    staged: Vec<Arc<ChangeEvent>>,
}

/// A node's change feed. Clones share it.
#[derive(Debug, Clone)]
pub struct ChangeFeed {
    kept: Arc<Mutex<Kept>>,
    sealed: watch::Sender<u64>,
    retention: Retention,
}

impl ChangeFeed {
    pub fn new(retention: Retention) -> Self {
        ChangeFeed {
            kept: Arc::default(),
            sealed: watch::Sender::new(0),
            retention,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a command's changes to the entry `revision` being applied.
    pub fn stage(&self, revision: u64, events: Vec<GuestEvent>) {
        if events.is_empty() {
            return;
        }
        let mut kept = self.lock();
        for GuestEvent { key, payload } in events {
            let seq = kept.staged.len() as u32;
            let event = ChangeEvent {
                revision,
                seq,
                key,
                payload,
            };
            kept.staged.push(Arc::new(event));
        }
    }

    /// Entry `revision` is applied: its staged changes become visible, and what falls out of
    /// the retention goes.
    pub fn seal(&self, revision: u64) {
        let mut kept = self.lock();
        let staged = std::mem::take(&mut kept.staged);
        for event in staged {
            kept.bytes += event.bytes();
            kept.events.push_back(event);
        }
        kept.sealed = kept.sealed.max(revision);
        let by_age = kept.sealed.saturating_sub(self.retention.entries);
        kept.compacted = kept.compacted.max(by_age);
        while let Some(front) = kept.events.front() {
            let too_big = kept.bytes > self.retention.bytes;
            if front.revision > kept.compacted && !too_big {
                break;
            }
            // A whole revision goes at a time: `compacted` must cover all of it.
            kept.compacted = kept.compacted.max(front.revision);
            let gone = kept.events.pop_front().map_or(0, |e| e.bytes());
            kept.bytes -= gone;
        }
        let sealed = kept.sealed;
        drop(kept);
        self.sealed.send_replace(sealed);
    }

    /// The last sealed revision, and a way to wait for the next.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.sealed.subscribe()
    }

    /// The last sealed revision.
    pub fn revision(&self) -> u64 {
        self.lock().sealed
    }

    /// The oldest revision whose changes are all kept.
    pub fn oldest(&self) -> u64 {
        self.lock().compacted + 1
    }

    /// The changes after `after`, at most `max` of them and about `max_bytes` (at least one),
    /// and the last sealed revision.
    pub fn read(
        &self,
        after: Cursor,
        max: usize,
        max_bytes: usize,
    ) -> Result<(Vec<Arc<ChangeEvent>>, u64), Compacted> {
        let kept = self.lock();
        let complete = after.seq == u32::MAX;
        if after.revision < kept.compacted || (after.revision == kept.compacted && !complete) {
            return Err(Compacted {
                wanted: after.revision + u64::from(complete),
                oldest: kept.compacted + 1,
            });
        }
        let start = kept.events.partition_point(|e| Cursor::of(e) <= after);
        let (mut out, mut bytes) = (Vec::new(), 0);
        for event in kept.events.range(start..).take(max) {
            bytes += event.bytes();
            if bytes > max_bytes && !out.is_empty() {
                break;
            }
            out.push(Arc::clone(event));
        }
        Ok((out, kept.sealed))
    }

    /// The feed as a snapshot carries it.
    pub fn encode(&self) -> Vec<u8> {
        let kept = self.lock();
        let mut out = Vec::with_capacity(24 + kept.bytes);
        out.extend_from_slice(&kept.compacted.to_le_bytes());
        out.extend_from_slice(&kept.sealed.to_le_bytes());
        out.extend_from_slice(&(kept.events.len() as u64).to_le_bytes());
        for e in &kept.events {
            out.extend_from_slice(&e.revision.to_le_bytes());
            out.extend_from_slice(&e.seq.to_le_bytes());
            out.extend_from_slice(&(e.key.len() as u32).to_le_bytes());
            out.extend_from_slice(e.key.as_bytes());
            out.extend_from_slice(&(e.payload.len() as u32).to_le_bytes());
            out.extend_from_slice(&e.payload);
        }
        out
    }

    /// Replaces the feed with one a snapshot at `revision` carried (empty bytes: a snapshot
    /// without a feed, so everything up to `revision` is compacted).
    pub fn restore(&self, bytes: &[u8], revision: u64) -> Result<(), String> {
        let mut fresh = decode(bytes)?.unwrap_or(Kept {
            compacted: revision,
            sealed: revision,
            ..Kept::default()
        });
        fresh.sealed = revision;
        fresh.bytes = fresh.events.iter().map(|e| e.bytes()).sum();
        *self.lock() = fresh;
        self.sealed.send_replace(revision);
        Ok(())
    }
}

fn decode(bytes: &[u8]) -> Result<Option<Kept>, String> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let mut rest = bytes;
    let mut take = |n: usize| -> Result<&[u8], String> {
        if rest.len() < n {
            return Err("the change feed is truncated".to_string());
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Ok(head)
    };
    let u64_at = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or_default());
    let u32_at = |b: &[u8]| u32::from_le_bytes(b.try_into().unwrap_or_default());
    let compacted = u64_at(take(8)?);
    let sealed = u64_at(take(8)?);
    let count = u64_at(take(8)?);
    let mut events = VecDeque::new();
    for _ in 0..count {
        let revision = u64_at(take(8)?);
        let seq = u32_at(take(4)?);
        let len = u32_at(take(4)?) as usize;
        let key = String::from_utf8(take(len)?.to_vec()).map_err(|e| e.to_string())?;
        let len = u32_at(take(4)?) as usize;
        let payload = take(len)?.to_vec();
        let event = ChangeEvent {
            revision,
            seq,
            key,
            payload,
        };
        events.push_back(Arc::new(event));
    }
    if !rest.is_empty() {
        return Err("trailing bytes after the change feed".into());
    }
    Ok(Some(Kept {
        events,
        compacted,
        sealed,
        ..Kept::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(key: &str) -> GuestEvent {
        GuestEvent {
            key: key.into(),
            payload: b"x".to_vec(),
        }
    }

    fn keys(events: &[Arc<ChangeEvent>]) -> Vec<String> {
        events
            .iter()
            .map(|e| format!("{}.{}:{}", e.revision, e.seq, e.key))
            .collect()
    }

    #[test]
    fn entries_become_visible_whole_and_age_out() {
        let feed = ChangeFeed::new(Retention {
            entries: 3,
            bytes: 1 << 20,
        });
        feed.stage(1, vec![event("a"), event("b")]);
        let (seen, sealed) = feed.read(Cursor::after_revision(0), 10, 1 << 20).unwrap();
        assert!(
            seen.is_empty() && sealed == 0,
            "staged changes are not visible"
        );
        feed.seal(1);
        feed.seal(2);
        feed.stage(3, vec![event("c")]);
        feed.stage(3, vec![event("d")]);
        feed.seal(3);
        let (seen, sealed) = feed.read(Cursor::after_revision(0), 10, 1 << 20).unwrap();
        assert_eq!(keys(&seen), ["1.0:a", "1.1:b", "3.0:c", "3.1:d"]);
        assert_eq!(sealed, 3);
        // Resumption inside a revision, and the count limit.
        let after = Cursor {
            revision: 1,
            seq: 0,
        };
        assert_eq!(keys(&feed.read(after, 1, 1 << 20).unwrap().0), ["1.1:b"]);
        assert_eq!(
            keys(&feed.read(Cursor::after_revision(1), 1, 1 << 20).unwrap().0),
            ["3.0:c"]
        );
        // A byte budget smaller than one change still returns one.
        assert_eq!(
            keys(&feed.read(Cursor::after_revision(0), 10, 40).unwrap().0),
            ["1.0:a"]
        );
        feed.seal(4);
        feed.seal(5);
        // Revisions up to 2 are now behind the window of 3.
        assert_eq!(
            feed.read(Cursor::after_revision(1), 10, 1 << 20),
            Err(Compacted {
                wanted: 2,
                oldest: 3
            })
        );
        assert_eq!(
            keys(&feed.read(Cursor::after_revision(2), 10, 1 << 20).unwrap().0),
            ["3.0:c", "3.1:d"]
        );
        assert_eq!(feed.oldest(), 3);
    }

    #[test]
    fn the_byte_cap_drops_whole_revisions_and_snapshots_carry_the_feed() {
        // Room for a revision's two changes (of 1 + 1 bytes and their bookkeeping), not four.
        let cap = 2 * (2 + PER_CHANGE_BYTES) + 10;
        let feed = ChangeFeed::new(Retention {
            entries: 100,
            bytes: cap,
        });
        for revision in 1..=3 {
            feed.stage(revision, vec![event("k"), event("l")]);
            feed.seal(revision);
        }
        // Only the last revision fits.
        let (seen, _) = feed.read(Cursor::after_revision(2), 10, 1 << 20).unwrap();
        assert_eq!(keys(&seen), ["3.0:k", "3.1:l"]);
        assert!(feed.read(Cursor::after_revision(1), 10, 1 << 20).is_err());

        let copy = ChangeFeed::new(Retention {
            entries: 100,
            bytes: cap,
        });
        copy.restore(&feed.encode(), 3).unwrap();
        assert_eq!(
            copy.read(Cursor::after_revision(2), 10, 1 << 20),
            feed.read(Cursor::after_revision(2), 10, 1 << 20)
        );
        assert_eq!(copy.oldest(), 3);
        let bare = ChangeFeed::new(Retention {
            entries: 100,
            bytes: 100,
        });
        bare.restore(&[], 7).unwrap();
        assert_eq!(bare.oldest(), 8);
        assert!(copy.restore(&feed.encode()[..30], 3).is_err());
    }
}
