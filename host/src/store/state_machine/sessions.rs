//! Client sessions: the replicated table that makes a retried command apply once (the Raft
//! dissertation's §6.3). Part of the state machine beside the guest, in every snapshot, and
//! changed only by applying log entries, so it is the same on every node.
//!
//! A session is opened by a log entry; its id is that entry's index. Each command of a session
//! carries a sequence number: a higher one than the session's latest is applied and its result
//! kept; the latest one again gets the kept result without calling the guest; a lower one, or a
//! session that does not exist (expired, or never opened), is refused, never applied.
//!
//! Expiry is decided by log indexes, never by a clock: a session not used for
//! [`EXPIRY_ENTRIES`] entries is dropped, and opening one when [`MAX_SESSIONS`] exist drops the
//! least recently used. Results over [`MAX_KEPT_RESULT`] bytes are not kept (a retry learns the
//! command was applied, not its result).

use crate::fsm::CallError;
use crate::types::SessionRef;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Log entries a session may go unused before it expires.
pub const EXPIRY_ENTRIES: u64 = 1_000_000;
/// Most sessions kept at once.
pub const MAX_SESSIONS: usize = 100_000;
/// Largest result kept for a retry, in bytes.
pub const MAX_KEPT_RESULT: usize = 64 * 1024;

/// One session: its latest command and when it was last used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Session {
    /// The latest sequence number applied (0 before the first command).
    seq: u64,
    /// Its result, as a retry gets it.
    result: Result<Vec<u8>, CallError>,
    /// The index of the entry that applied it.
    applied_at: u64,
    /// Index of the entry that last used it.
    last_used: u64,
}

/// What to do with a session's command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Apply it, then [`Sessions::record`] the result.
    Apply,
    /// A retry of the latest command: answer its result and the index that applied it, apply
    /// nothing.
    Retry(Result<Vec<u8>, CallError>, u64),
    /// Refuse it: apply nothing.
    Refuse(CallError),
}

/// Every live session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sessions {
    by_id: BTreeMap<u64, Session>,
    /// (last used, id), oldest first: what expires next.
    by_use: BTreeSet<(u64, u64)>,
}

impl Sessions {
    /// Opens a session at log index `index` (its id), dropping the least recently used one if
    /// the table is full.
    pub fn open(&mut self, index: u64) -> u64 {
        while self.by_id.len() >= MAX_SESSIONS {
            match self.by_use.pop_first() {
                Some((_, id)) => self.by_id.remove(&id),
                None => break,
            };
        }
        self.by_id.insert(
            index,
            Session {
                seq: 0,
                result: Ok(Vec::new()),
                applied_at: index,
                last_used: index,
            },
        );
        self.by_use.insert((index, index));
        index
    }

    /// What to do with command `at` of a session.
    pub fn check(&self, at: SessionRef) -> Check {
        let Some(session) = self.by_id.get(&at.client_id) else {
            return Check::Refuse(CallError::SessionExpired {
                client_id: at.client_id,
            });
        };
        if at.seq == session.seq && at.seq > 0 {
            return Check::Retry(session.result.clone(), session.applied_at);
        }
        if at.seq <= session.seq {
            return Check::Refuse(CallError::StaleSequence {
                client_id: at.client_id,
                seq: at.seq,
                latest: session.seq,
            });
        }
        Check::Apply
    }

    /// Records that command `at` was applied (or retried) at `index` with `result`.
    pub fn record(&mut self, at: SessionRef, index: u64, result: &Result<Vec<u8>, CallError>) {
        let Some(session) = self.by_id.get_mut(&at.client_id) else {
            return;
        };
        self.by_use.remove(&(session.last_used, at.client_id));
        session.last_used = index;
        self.by_use.insert((index, at.client_id));
        if at.seq > session.seq {
            session.seq = at.seq;
            session.applied_at = index;
            session.result = match result {
                Ok(bytes) if bytes.len() > MAX_KEPT_RESULT => Err(CallError::ResultNotKept {
                    size: bytes.len() as u64,
                }),
                other => other.clone(),
            };
        }
    }

    /// Drops the sessions unused for more than [`EXPIRY_ENTRIES`] entries before `index`.
    pub fn expire(&mut self, index: u64) {
        while let Some(&(used, id)) = self.by_use.first() {
            if used.saturating_add(EXPIRY_ENTRIES) >= index {
                break;
            }
            self.by_use.pop_first();
            self.by_id.remove(&id);
        }
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// True with no live session.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The table's bytes in a snapshot: the same on every node for the same table.
    pub fn encode(&self) -> Vec<u8> {
        bincode::serialize(&self.by_id).unwrap_or_default()
    }

    /// Back from [`Sessions::encode`]'s bytes (empty bytes: no sessions).
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        if bytes.is_empty() {
            return Ok(Sessions::default());
        }
        let by_id: BTreeMap<u64, Session> =
            bincode::deserialize(bytes).map_err(|e| format!("bad session table: {e}"))?;
        let by_use = by_id.iter().map(|(id, s)| (s.last_used, *id)).collect();
        Ok(Sessions { by_id, by_use })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(client_id: u64, seq: u64) -> SessionRef {
        SessionRef { client_id, seq }
    }

    #[test]
    fn a_retry_gets_the_kept_result_and_older_or_unknown_commands_are_refused() {
        let mut t = Sessions::default();
        let id = t.open(7);
        assert_eq!(t.check(at(id, 1)), Check::Apply);
        t.record(at(id, 1), 8, &Ok(b"one".to_vec()));
        assert_eq!(t.check(at(id, 1)), Check::Retry(Ok(b"one".to_vec()), 8));
        assert_eq!(t.check(at(id, 3)), Check::Apply);
        t.record(at(id, 3), 9, &Err(CallError::OutOfFuel { budget: 5 }));
        assert_eq!(
            t.check(at(id, 3)),
            Check::Retry(Err(CallError::OutOfFuel { budget: 5 }), 9)
        );
        assert!(matches!(
            t.check(at(id, 2)),
            Check::Refuse(CallError::StaleSequence { latest: 3, .. })
        ));
        assert!(matches!(
            t.check(at(id, 0)),
            Check::Refuse(CallError::StaleSequence { .. })
        ));
        assert!(matches!(
            t.check(at(99, 1)),
            Check::Refuse(CallError::SessionExpired { client_id: 99 })
        ));
        let big = vec![0u8; MAX_KEPT_RESULT + 1];
        t.record(at(id, 4), 10, &Ok(big));
        assert!(matches!(
            t.check(at(id, 4)),
            Check::Retry(Err(CallError::ResultNotKept { .. }), 10)
        ));
    }

    #[test]
    fn sessions_expire_by_log_index_and_the_least_recently_used_goes_first() {
        let mut t = Sessions::default();
        let (a, b) = (t.open(1), t.open(2));
        t.record(at(a, 1), 5, &Ok(Vec::new()));
        t.expire(2 + EXPIRY_ENTRIES);
        assert_eq!(t.len(), 2);
        t.expire(3 + EXPIRY_ENTRIES);
        assert!(matches!(
            t.check(at(b, 1)),
            Check::Refuse(CallError::SessionExpired { .. })
        ));
        assert_eq!(t.check(at(a, 2)), Check::Apply);
        t.expire(6 + EXPIRY_ENTRIES);
        assert!(t.is_empty());

        let mut full = Sessions::default();
        for i in 0..MAX_SESSIONS as u64 {
            full.open(10 + i);
        }
        full.record(at(10, 1), 10 + MAX_SESSIONS as u64, &Ok(Vec::new()));
        full.open(20 + MAX_SESSIONS as u64);
        assert_eq!(full.len(), MAX_SESSIONS);
        assert_eq!(full.check(at(10, 2)), Check::Apply, "used recently, kept");
        assert!(
            matches!(full.check(at(11, 1)), Check::Refuse(_)),
            "least recent, dropped"
        );
    }

    #[test]
    fn the_encoding_round_trips_and_is_the_same_for_the_same_table() {
        let mut t = Sessions::default();
        for i in [5, 3, 9] {
            t.open(i);
            t.record(at(i, 1), i + 1, &Ok(vec![i as u8]));
        }
        let back = Sessions::decode(&t.encode()).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.encode(), t.encode());
        assert!(Sessions::decode(b"garbage").is_err());
        assert!(Sessions::decode(&[]).unwrap().is_empty());
    }
}
