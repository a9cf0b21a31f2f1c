//! Health as probes see it: a node is live while it answers at all, and ready to serve clients
//! when it knows a leader, has applied (nearly) everything it knows committed, and is not
//! holding traffic for a leadership transfer.

use super::Service;
use serde::{Deserialize, Serialize};

/// Committed entries a node may have left to apply and still call itself ready: a node
/// replaying its log or a snapshot's worth of entries is not, one behind by a few batches is.
pub const READY_MAX_APPLY_LAG: u64 = 1_000;

/// The readiness verdict (`GET /readyz`, the gRPC health service).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    pub ready: bool,
    /// Why not, when not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub leader_id: Option<String>,
    pub commit_index: u64,
    pub applied_index: u64,
}

impl Service {
    /// Whether this node should get client traffic now, and why not.
    pub fn readiness(&self) -> Readiness {
        let m = self.metrics();
        let commit_index = m.local_committed.map_or(0, |l| l.index);
        let applied_index = m.last_applied.map_or(0, |l| l.index);
        let membership = m.membership_config.membership();
        let leader_id = m
            .current_leader
            .and_then(|l| membership.get_node(&l))
            .map(|member| member.name.clone());
        let behind = commit_index.saturating_sub(applied_index);
        let reason = if let Err(fatal) = &m.running_state {
            Some(format!("raft stopped: {fatal}"))
        } else if let Err(e) = self.check_member() {
            Some(e.to_string())
        } else if leader_id.is_none() {
            Some("no leader is known: the cluster is electing one or has no quorum".into())
        } else if behind > READY_MAX_APPLY_LAG {
            Some(format!(
                "{behind} committed entries not applied yet (ready at {READY_MAX_APPLY_LAG} or \
                 fewer)"
            ))
        } else if self.inner.handover.is_paused() {
            Some("client traffic is held for a leadership transfer".into())
        } else {
            None
        };
        Readiness {
            ready: reason.is_none(),
            reason,
            leader_id,
            commit_index,
            applied_index,
        }
    }
}
