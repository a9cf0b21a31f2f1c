//! What the other members tell a node about its own membership.
//!
//! A node removed from the cluster may never receive the entry that removed it: the leader
//! stops replicating to it once the change commits. It keeps its old configuration, in which it
//! is still a voter, and campaigns for ever. So a member refuses a vote (or pre-vote) from a node
//! its committed configuration does not hold, naming that configuration's log index in the
//! status ([`not_member_status`]); the candidate keeps the highest index it was told
//! ([`Removals`]) and counts itself removed while its own configuration is older than that. A
//! member that lags (it has not seen the entry that added a new voter yet) names an older
//! configuration than the candidate's own, and is not believed.

use crate::types::NodeId;
use std::sync::Arc;
use tokio::sync::watch;

/// gRPC metadata key of a refused vote: the log index of the refusing member's committed
/// configuration.
pub const NOT_MEMBER_HEADER: &str = "x-raftwasm-not-member";

/// The highest configuration index at which a member said this node is not in the cluster
/// (0: none said so). Clones share it.
#[derive(Debug, Clone)]
pub struct Removals {
    reported: Arc<watch::Sender<u64>>,
}

impl Default for Removals {
    fn default() -> Self {
        Removals {
            reported: Arc::new(watch::channel(0).0),
        }
    }
}

impl Removals {
    /// A member's configuration at log index `index` does not hold this node.
    pub fn report(&self, index: u64) {
        self.reported.send_if_modified(|seen| {
            let newer = index > *seen;
            if newer {
                *seen = index;
            }
            newer
        });
    }

    /// The highest index reported so far (0: none).
    pub fn reported(&self) -> u64 {
        *self.reported.borrow()
    }

    /// Wakes on each new report.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.reported.subscribe()
    }
}

/// The answer to a vote from `node`, which the committed configuration at log index `index`
/// does not hold.
pub fn not_member_status(node: NodeId, index: u64) -> tonic::Status {
    let mut status = tonic::Status::failed_precondition(format!(
        "node {node} is not a member of this cluster (configuration at log index {index})"
    ));
    if let Ok(value) = index.to_string().parse() {
        status.metadata_mut().insert(NOT_MEMBER_HEADER, value);
    }
    status
}

/// The configuration index a [`not_member_status`] names; `None` for any other status.
pub fn not_member_index(status: &tonic::Status) -> Option<u64> {
    if status.code() != tonic::Code::FailedPrecondition {
        return None;
    }
    status
        .metadata()
        .get(NOT_MEMBER_HEADER)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_its_configuration_and_reports_only_go_up() {
        let status = not_member_status(7, 42);
        assert_eq!(not_member_index(&status), Some(42));
        assert_eq!(not_member_index(&tonic::Status::unavailable("x")), None);
        let removals = Removals::default();
        assert_eq!(removals.reported(), 0);
        removals.report(42);
        removals.report(10);
        assert_eq!(removals.reported(), 42);
    }
}
