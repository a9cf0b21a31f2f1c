//! The change feed under faults: one watcher per node follows every change of the workload's
//! keys from the first revision, through kills, pauses and partitions, resuming after each
//! disconnect where it stopped; its checks run as the changes arrive, so no payload is kept.
//!
//! A node's feed is correct when, for every key, each change starts from the value the previous
//! change left (none missed, none twice), positions only increase, and the lists the feed built
//! end up equal to the final read: then every acknowledged append is in it once, in the list's
//! order. The nodes' feeds must also be the same sequence (compared by digest).

use crate::cluster::Client;
use crate::workload::{key_name, parse_list};
use guest_kv::schema::{Change, ChangeOp};
use host::proto::{ChangeEvent, WatchKeysRequest};
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::Hasher;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Problems kept per node; past this only the count grows.
const MAX_PROBLEMS: usize = 20;
/// How often an idle watch reports progress.
const PROGRESS_MS: u32 = 500;

/// What one node's watcher saw.
#[derive(Debug, Default)]
pub struct NodeFeed {
    /// Every change through this revision has been received.
    pub through: u64,
    /// Changes received.
    pub changes: u64,
    /// Times the watch was reopened after an error or a disconnect.
    pub resumes: u64,
    /// The lists as the feed built them, by key.
    pub lists: BTreeMap<u64, Vec<u64>>,
    /// What was wrong, first [`MAX_PROBLEMS`] of `problem_count`.
    pub problems: Vec<String>,
    pub problem_count: u64,
    /// Digest of the whole sequence (position, key, payload).
    digest: DefaultHasher,
    /// Where the next change must come after.
    last: Option<(u64, u32)>,
    /// The watch cannot resume: the node no longer has the changes after `last`.
    pub compacted: Option<String>,
}

impl NodeFeed {
    fn problem(&mut self, what: String) {
        self.problem_count += 1;
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(what);
        }
    }

    /// The digest of the sequence so far.
    pub fn digest(&self) -> u64 {
        self.digest.finish()
    }

    /// Checks one change against what came before and applies it to the lists.
    fn take(&mut self, e: &ChangeEvent) {
        let at = (e.revision, e.seq);
        if self.last.is_some_and(|last| at <= last) {
            self.problem(format!(
                "{at:?} after {:?}: out of order or twice",
                self.last
            ));
        }
        self.last = Some(at);
        self.changes += 1;
        self.digest.write_u64(e.revision);
        self.digest.write_u32(e.seq);
        self.digest.write(e.key.as_bytes());
        self.digest.write_usize(e.payload.len());
        self.digest.write(&e.payload);
        let Some(key) = e
            .key
            .strip_prefix("chaos/")
            .and_then(|k| k.parse::<u64>().ok())
            .filter(|k| key_name(*k) == e.key)
        else {
            return self.problem(format!("{at:?}: a change of {:?}", e.key));
        };
        let change: Change<'static> = match serde_json::from_slice(&e.payload) {
            Ok(c) => c,
            Err(err) => return self.problem(format!("{at:?} {}: payload {err}", e.key)),
        };
        let (prev, value) = match (
            change.op,
            parse_list(change.prev.as_deref()),
            parse_list(change.value.as_deref()),
        ) {
            (ChangeOp::Append, Ok(prev), Ok(value)) => (prev, value),
            (op, prev, value) => {
                return self.problem(format!("{at:?} {}: {op:?} {prev:?} -> {value:?}", e.key))
            }
        };
        let list = self.lists.entry(key).or_default();
        if *list != prev || !value.starts_with(&prev) {
            let seen = list.clone();
            self.problem(format!(
                "{at:?} {}: change from {prev:?} to {value:?}, but the feed had {seen:?}",
                e.key
            ));
        }
        *self.lists.entry(key).or_default() = value;
    }
}

/// Follows node `node`'s feed of the workload's keys from revision 1 into `feed`, forever
/// (abort the task to stop), or until the node cannot resume it.
pub async fn follow(client: Client, node: String, feed: Arc<Mutex<NodeFeed>>) {
    loop {
        let (revision, after_seq) = {
            let f = feed.lock().unwrap_or_else(|p| p.into_inner());
            match f.last {
                None => (1, 0),
                Some((r, s)) => (r, s + 1),
            }
        };
        let request = WatchKeysRequest {
            key: "chaos/".into(),
            prefix: true,
            start_revision: revision,
            progress_ms: PROGRESS_MS,
            start_after_seq: after_seq,
        };
        match client.clone().watch_keys(request).await {
            Ok(stream) => {
                let mut stream = stream.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(reply)) => {
                            let mut f = feed.lock().unwrap_or_else(|p| p.into_inner());
                            for e in &reply.events {
                                f.take(e);
                            }
                            f.through = f.through.max(reply.revision);
                        }
                        Ok(None) => break,
                        Err(status) => {
                            if compacted(&feed, &node, &status) {
                                return;
                            }
                            break;
                        }
                    }
                }
            }
            Err(status) => {
                if compacted(&feed, &node, &status) {
                    return;
                }
            }
        }
        feed.lock().unwrap_or_else(|p| p.into_inner()).resumes += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Records a compacted answer (the watch cannot go on without a gap); true if it was one.
fn compacted(feed: &Mutex<NodeFeed>, node: &str, status: &tonic::Status) -> bool {
    if status.code() != tonic::Code::OutOfRange {
        return false;
    }
    let mut f = feed.lock().unwrap_or_else(|p| p.into_inner());
    f.compacted = Some(format!("{node}: {}", status.message()));
    true
}

/// Waits until every feed has received everything through `revision`; false when one has not
/// within `wait`.
pub async fn settle(feeds: &[Arc<Mutex<NodeFeed>>], revision: u64, wait: Duration) -> bool {
    let deadline = std::time::Instant::now() + wait;
    loop {
        let behind = feeds.iter().any(|f| {
            let f = f.lock().unwrap_or_else(|p| p.into_inner());
            f.through < revision && f.compacted.is_none()
        });
        if !behind {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The verdict on every node's feed against the final read. `unknown`: the appends whose
/// outcome the clients never learned, `(key, element)`: they may commit after the final read
/// (a command held by a node that was cut off or paused), so they may follow its list in a
/// feed, and nothing else may.
pub fn check(
    feeds: &[(String, &NodeFeed)],
    final_read: &BTreeMap<u64, Vec<u64>>,
    unknown: &BTreeSet<(u64, u64)>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (node, f) in feeds {
        if let Some(c) = &f.compacted {
            problems.push(format!("{node}: the watch could not resume: {c}"));
        }
        for p in &f.problems {
            problems.push(format!("{node}: {p}"));
        }
        if f.problem_count > f.problems.len() as u64 {
            problems.push(format!("{node}: {} problems in all", f.problem_count));
        }
        let keys: BTreeSet<u64> = final_read.keys().chain(f.lists.keys()).copied().collect();
        for key in keys {
            let read = final_read.get(&key).map_or(&[][..], Vec::as_slice);
            let fed = f.lists.get(&key).map_or(&[][..], Vec::as_slice);
            if let Some(p) = compare(key, fed, read, unknown) {
                problems.push(format!("{node}: {p}"));
            }
        }
    }
    if let Some(((first, a), rest)) = feeds.split_first() {
        for (node, b) in rest {
            if (a.changes, a.digest()) != (b.changes, b.digest()) {
                problems.push(format!(
                    "{first} and {node} fed different sequences ({} and {} changes)",
                    a.changes, b.changes
                ));
            }
        }
    }
    problems
}

/// What is wrong with one key's list as a feed built it, given the final read's.
fn compare(key: u64, fed: &[u64], read: &[u64], unknown: &BTreeSet<(u64, u64)>) -> Option<String> {
    if !fed.starts_with(read) {
        let at = fed.iter().zip(read).take_while(|(a, b)| a == b).count();
        return Some(format!(
            "key {key}: the feed built {} elements, the final read has {}; they part at \
             position {at} ({:?} vs {:?})",
            fed.len(),
            read.len(),
            fed.get(at),
            read.get(at)
        ));
    }
    let late: Vec<u64> = fed[read.len()..]
        .iter()
        .copied()
        .filter(|e| !unknown.contains(&(key, *e)))
        .collect();
    (!late.is_empty()).then(|| {
        format!("key {key}: {late:?} follow the final read in the feed, but were not unknown")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An append change of `key` from `prev` to `prev` plus `add`, at (revision, seq).
    fn append(at: (u64, u32), key: u64, prev: &[u64], add: u64) -> ChangeEvent {
        let list = |l: &[u64]| l.iter().map(|e| format!("{e} ")).collect::<String>();
        let mut value = prev.to_vec();
        value.push(add);
        let change = Change {
            op: ChangeOp::Append,
            value: Some(list(&value).into()),
            prev: (!prev.is_empty()).then(|| list(prev).into()),
        };
        ChangeEvent {
            revision: at.0,
            seq: at.1,
            key: key_name(key),
            payload: change.encode(),
        }
    }

    fn fed(events: &[ChangeEvent]) -> NodeFeed {
        let mut f = NodeFeed::default();
        for e in events {
            f.take(e);
        }
        f
    }

    fn verdict(events: &[ChangeEvent], final_read: &[(u64, &[u64])]) -> Vec<String> {
        let f = fed(events);
        let final_read = final_read.iter().map(|(k, l)| (*k, l.to_vec())).collect();
        let unknown = BTreeSet::from([(1, 99)]);
        check(&[("n1".into(), &f)], &final_read, &unknown)
    }

    #[test]
    fn a_complete_feed_passes() {
        let events = [
            append((3, 0), 1, &[], 10),
            append((3, 1), 2, &[], 11),
            append((5, 0), 1, &[10], 12),
        ];
        assert_eq!(
            verdict(&events, &[(1, &[10, 12]), (2, &[11]), (3, &[])]),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_missed_change_a_repeat_and_a_short_feed_are_caught() {
        // The change that appended 10 never came.
        let missed = [append((5, 0), 1, &[10], 12)];
        assert!(!verdict(&missed, &[(1, &[10, 12])]).is_empty());
        // The same change twice.
        let twice = [append((3, 0), 1, &[], 10), append((3, 0), 1, &[], 10)];
        assert!(!verdict(&twice, &[(1, &[10])]).is_empty());
        // Positions going back, even with consistent values.
        let back = [append((4, 0), 1, &[], 10), append((3, 0), 1, &[10], 12)];
        assert!(!verdict(&back, &[(1, &[10, 12])]).is_empty());
        // The final read has an append the feed never showed.
        let short = [append((3, 0), 1, &[], 10)];
        assert!(!verdict(&short, &[(1, &[10, 12])]).is_empty());
        // An append after the final read whose client learned the outcome (ok or fail) ...
        let late = [append((3, 0), 1, &[], 10), append((9, 0), 1, &[10], 12)];
        assert!(!verdict(&late, &[(1, &[10])]).is_empty());
        // ... but one of unknown outcome may commit after it.
        let unknown = [append((3, 0), 1, &[], 10), append((9, 0), 1, &[10], 99)];
        assert_eq!(verdict(&unknown, &[(1, &[10])]), Vec::<String>::new());
    }

    #[test]
    fn nodes_with_different_sequences_disagree() {
        let a = fed(&[append((3, 0), 1, &[], 10)]);
        let b = fed(&[append((4, 0), 1, &[], 10)]);
        let final_read = BTreeMap::from([(1, vec![10])]);
        let found = check(
            &[("n1".into(), &a), ("n2".into(), &b)],
            &final_read,
            &BTreeSet::new(),
        );
        assert_eq!(found.len(), 1, "{found:?}");
    }
}
