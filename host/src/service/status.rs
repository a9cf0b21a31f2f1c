//! A node's view of the cluster, as Monitor, `/Monitor` and `/v1/status` report it.

use crate::metrics::raft::{Position, RaftMetricsSet};
use crate::store::StateMachineStatus;
use crate::types::{ModuleRecord, RaftMetrics};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// One member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub id: String,
    pub address: String,
    /// False for a learner.
    pub voter: bool,
    /// On the leader: the highest log index known to be replicated to this member.
    pub matched_index: Option<u64>,
    /// On the leader: how many entries this member trails the leader's last log index.
    pub lag: Option<u64>,
}

/// SHA-256 of the guest's `snapshot()` bytes at an applied index: equal on every node that
/// applied the same log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateHash {
    pub applied_index: u64,
    pub sha256: String,
}

/// Guest calls on one node since it started: rates come from two readings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Commands applied (every node applies every committed command).
    pub commands_applied: u64,
    /// Queries this node's guest answered.
    pub queries_answered: u64,
    /// Time spent applying commands, microseconds.
    pub apply_micros: u64,
}

/// A node's view of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub id: String,
    pub address: String,
    /// Leader, Follower, Candidate, Learner or Shutdown.
    pub state: String,
    pub leader_id: Option<String>,
    pub leader_address: Option<String>,
    pub term: u64,
    pub last_log_index: u64,
    pub applied_index: u64,
    /// Log index of the membership configuration in effect.
    pub membership_index: u64,
    pub members: Vec<MemberStatus>,
    pub fsm_module_hash: String,
    pub fsm_module_size: u64,
    /// The log index of the entry that activated the module (0: the one the node started with).
    pub fsm_module_since_index: u64,
    /// Every module this state machine has run, oldest first; the last is the active one.
    pub fsm_modules: Vec<ModuleRecord>,
    /// Last log index covered by this node's latest snapshot (0 when none).
    pub snapshot_index: u64,
    /// Present when asked for (it costs one guest `snapshot()` call).
    pub state_hash: Option<StateHash>,
    /// Last log index purged from this node's log (0 when none).
    pub purged_index: u64,
    /// Live client sessions in this node's state machine.
    #[serde(default)]
    pub sessions: u64,
    /// Present when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counters: Option<Counters>,
}

impl Status {
    pub(super) fn new(name: &str, addr: &str, m: &RaftMetrics, sm: &StateMachineStatus) -> Self {
        let membership = m.membership_config.membership();
        let voters: BTreeSet<_> = membership.voter_ids().collect();
        let leader = m
            .current_leader
            .and_then(|l| membership.get_node(&l).cloned());
        let last_log_index = m.last_log_index.unwrap_or(0);
        // Replication progress is known on the leader only.
        let matched = |id: &crate::types::NodeId| -> Option<u64> {
            if m.current_leader == Some(*id) && m.current_leader == Some(m.id) {
                return Some(last_log_index);
            }
            let progress = m.replication.as_ref()?;
            Some(progress.get(id)?.map(|l| l.index).unwrap_or(0))
        };
        Status {
            id: name.to_string(),
            address: addr.to_string(),
            state: format!("{:?}", m.state),
            leader_id: leader.as_ref().map(|l| l.name.clone()),
            leader_address: leader.map(|l| l.addr),
            term: m.current_term,
            last_log_index,
            applied_index: sm
                .last_applied
                .map(|l| l.index)
                .max(m.last_applied.map(|l| l.index))
                .unwrap_or(0),
            membership_index: m.membership_config.log_id().map(|l| l.index).unwrap_or(0),
            members: membership
                .nodes()
                .map(|(id, node)| MemberStatus {
                    id: node.name.clone(),
                    address: node.addr.clone(),
                    voter: voters.contains(id),
                    matched_index: matched(id),
                    lag: matched(id).map(|i| last_log_index.saturating_sub(i)),
                })
                .collect(),
            fsm_module_hash: sm.module_hash.clone(),
            fsm_module_size: sm.module_size as u64,
            fsm_module_since_index: sm.modules.last().map(|r| r.since_index).unwrap_or(0),
            fsm_modules: sm.modules.clone(),
            snapshot_index: m.snapshot.map(|l| l.index).unwrap_or(0),
            state_hash: None,
            purged_index: m.purged.map(|l| l.index).unwrap_or(0),
            sessions: sm.sessions as u64,
            counters: None,
        }
    }
}

/// Sets the Raft gauges from this node's view; `committed` is openraft's commit index.
pub(super) fn observe(metrics: &RaftMetricsSet, status: &Status, committed: u64) {
    metrics.position(Position {
        term: status.term,
        leader: status.leader_id.as_deref() == Some(status.id.as_str()),
        last_log_index: status.last_log_index,
        committed,
        applied: status.applied_index,
        snapshot: status.snapshot_index,
        members: status.members.len(),
    });
    for m in &status.members {
        if let (Some(matched), Some(lag)) = (m.matched_index, m.lag) {
            metrics.member(&m.id, matched, lag);
        }
    }
}
