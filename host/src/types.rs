//! The Raft type configuration: what a log entry carries, what applying one returns, and how a
//! node is named.
//!
//! Users name nodes as they like (`node1`); openraft gets a `u64` id: [`node_id`] maps a
//! name to it and the name travels in the [`Member`] record. Two names that map to the same
//! id are refused when the second one is added, so the mapping never silently merges nodes.

use crate::fsm::CallError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// openraft's node id: derived from the node's name by [`node_id`].
pub type NodeId = u64;

/// A cluster member as stored in the replicated membership.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The name the user gave the node (`--id`).
    pub name: String,
    /// Its gRPC address (`--address`), serving both the Raft and the client services.
    pub addr: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.addr)
    }
}

/// Where a command stands in a client session: the session (the log index of the entry that
/// opened it) and the command's sequence number in it. A command with the sequence number of
/// the session's latest one is a retry: it gets the recorded result and is not applied again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRef {
    pub client_id: u64,
    pub seq: u64,
}

/// One guest command as logged, with its session if it has one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    #[serde(with = "crate::wire_bytes")]
    pub bytes: Vec<u8>,
    pub session: Option<SessionRef>,
}

/// One log entry's payload. New variants go last: entries are bincode, and logs, snapshots
/// and peers of earlier versions use the earlier variants' numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// A batch of guest commands (opaque bytes), applied in order, one result each. Concurrent
    /// client writes are batched into one entry so they share one append and one fsync.
    Commands(Vec<Vec<u8>>),
    /// Switch the state machine to another guest component (its bytes). Every node applies it at
    /// the same index: the old guest's `snapshot()` goes into the new guest's `restore()`; if
    /// anything fails the old guest stays, on every node. A `seed` entry is a new cluster's first
    /// module: it starts empty (nothing has been applied before it) and is ignored once any
    /// module entry has been applied.
    Module {
        #[serde(with = "crate::wire_bytes")]
        bytes: Vec<u8>,
        seed: bool,
    },
    /// A batch of which some commands belong to client sessions (a batch without any is
    /// logged as [`Request::Commands`]).
    Batch(Vec<Command>),
    /// Opens a client session, whose id is this entry's log index.
    OpenSession,
    /// A batch of commands with the time the leader proposed it at (ms since the Unix epoch):
    /// what the batcher logs. The time a guest sees for it is this one, or the previous stamped
    /// entry's if that is later, so the log's clock never goes back (see
    /// `raftwasm:fsm/context@0.2.0`).
    Stamped {
        unix_ms: u64,
        commands: Vec<Command>,
    },
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Commands(c) => write!(f, "commands({})", c.len()),
            Request::Batch(c) => write!(f, "batch({})", c.len()),
            Request::OpenSession => write!(f, "open-session"),
            Request::Stamped { commands, .. } => write!(f, "stamped({})", commands.len()),
            Request::Module { bytes, seed } => {
                write!(f, "module({} bytes, seed: {seed})", bytes.len())
            }
        }
    }
}

impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "results({})", self.results.len())
    }
}

/// One guest module in a state machine's history: which, how big, and from which log index on
/// it ran (0: since the node started, before any module entry).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ModuleRecord {
    pub hash: String,
    pub size: u64,
    pub since_index: u64,
}

/// The result of applying one entry; the same on every node.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Response {
    /// One result per command of the entry, in order: the guest's response bytes, or why it
    /// gave none. Entries with no commands (membership changes, blank entries) have none.
    pub results: Vec<Result<Vec<u8>, CallError>>,
    /// For results that answer a retried session command (by position in `results`): the
    /// index of the entry that applied it the first time.
    pub retried: Vec<(usize, u64)>,
}

openraft::declare_raft_types!(
    /// raftwasm's Raft types.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = Member,
        AsyncRuntime = openraft::TokioRuntime,
);

/// Log id, vote, membership, snapshot metadata and errors with our type parameters.
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type Membership = openraft::Membership<NodeId, Member>;
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
/// A snapshot's bytes (a sealed envelope, see `store::snapshot`), kept in memory.
pub use crate::snapshot_data::SnapshotData;
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, SnapshotData>;
pub type RaftMetrics = openraft::RaftMetrics<TypeConfig>;
/// A receiver of openraft's metrics, as `Raft::metrics` hands them out.
pub type MetricsWatch = openraft::type_config::alias::WatchReceiverOf<TypeConfig, RaftMetrics>;

/// Waits until openraft's metrics change, then `settle` longer, and says whether Raft still
/// runs. Under load the metrics change several times per write batch; a watcher that loops on
/// this looks at them at most once per `settle`, the changes in between seen as their latest.
pub async fn metrics_settled(rx: &mut MetricsWatch, settle: std::time::Duration) -> bool {
    use openraft::async_runtime::WatchReceiver;
    if rx.changed().await.is_err() {
        return false;
    }
    tokio::time::sleep(settle).await;
    true
}

/// Maps a user-facing node name to openraft's id: the first 8 bytes of its SHA-256. Zero is
/// avoided so an id is never mistaken for "no node".
pub fn node_id(name: &str) -> NodeId {
    let digest = Sha256::digest(name.as_bytes());
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(id).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_stable_and_distinct() {
        assert_eq!(node_id("node1"), node_id("node1"));
        let ids: std::collections::BTreeSet<_> =
            (0..10_000).map(|i| node_id(&format!("node{i}"))).collect();
        assert_eq!(ids.len(), 10_000);
    }
}
