//! Where this node stands: a member of a cluster, not a member of any yet (never bootstrapped
//! nor added), or removed from its cluster. A node that is not a member answers client requests
//! with `not_member` (instead of forwarding them, or saying that an election is under way), is
//! not ready, and does not campaign.
//!
//! A removed node learns of its removal from its own log when the entry reached it, or else from
//! the members that refuse its votes ([`crate::network::Removals`]).

use super::{Service, ServiceError};
use crate::types::{metrics_settled, NodeId, RaftMetrics};
use openraft::async_runtime::WatchReceiver;
use serde::Serialize;
use std::time::Duration;

/// How long a change of openraft's metrics waits for more before the standing is looked at
/// again: it changes with membership, the metrics several times per write batch under load.
const SETTLE: Duration = Duration::from_millis(50);

/// This node's membership, as far as it knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    /// In the cluster's configuration (voter or learner).
    Member,
    /// Never bootstrapped and never added: it has no configuration at all.
    NotJoined,
    /// Its cluster's configuration no longer holds it.
    Removed,
}

impl Standing {
    /// The standing of node `id` whose Raft reports `metrics`, when members said at
    /// configuration index `reported` (0: never) that it is not in the cluster.
    pub fn of(metrics: &RaftMetrics, id: NodeId, reported: u64) -> Standing {
        let config = &metrics.membership_config;
        if config.nodes().next().is_none() {
            return Standing::NotJoined;
        }
        let own_index = config.log_id().as_ref().map_or(0, |l| l.index);
        match config.get_node(&id) {
            None => Standing::Removed,
            // A member knows a later configuration than this node's, one without it.
            Some(_) if reported > own_index => Standing::Removed,
            Some(_) => Standing::Member,
        }
    }
}

impl Service {
    /// Where this node stands now.
    pub fn standing(&self) -> Standing {
        // Borrowed, not cloned: every forwarded request and linearizable read asks. Nothing
        // else is locked while the borrow lasts.
        let reported = self.inner.removals.reported();
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow_watched();
        Standing::of(&metrics, self.inner.id, reported)
    }

    /// `Ok` on a member; the `not_member` error that tells a client (and an operator) what to do
    /// otherwise.
    pub(super) fn check_member(&self) -> Result<(), ServiceError> {
        let name = &self.inner.name;
        let message = match self.standing() {
            Standing::Member => return Ok(()),
            Standing::NotJoined => format!(
                "node {name} is not a member of any cluster yet: restart it with --bs to \
                 bootstrap a new cluster, or add it from a member of an existing one \
                 (curl MEMBER_HTTP/AddVoter/{}/{name}, or kvclient --command addnode --id {name} \
                 --address {})",
                self.inner.addr, self.inner.addr
            ),
            Standing::Removed => format!(
                "node {name} was removed from its cluster: it serves no requests and does not \
                 campaign; add it again from a member to rejoin (AddVoter), or stop it"
            ),
        };
        Err(ServiceError::NotMember { message })
    }

    /// Keeps elections off while this node is removed, and logs each change of its standing
    /// (with its name and term). Runs until Raft stops.
    pub(crate) fn watch_standing(&self) {
        let service = self.clone();
        let mut metrics = self.inner.raft.metrics();
        let mut reports = self.inner.removals.subscribe();
        tokio::spawn(async move {
            let mut last = None;
            loop {
                let now = service.standing();
                if last != Some(now) {
                    service.standing_changed(last, now);
                }
                last = Some(now);
                tokio::select! {
                    running = metrics_settled(&mut metrics, SETTLE) => if !running { return },
                    changed = reports.changed() => if changed.is_err() { return },
                }
            }
        });
    }

    fn standing_changed(&self, before: Option<Standing>, now: Standing) {
        let (node, term) = (&self.inner.name, self.metrics().current_term);
        match now {
            Standing::Removed => {
                self.inner.raft.runtime_config().elect(false);
                tracing::warn!(
                    %node, term,
                    "this node was removed from the cluster: it stops campaigning and answers \
                     not_member"
                );
                self.inner
                    .events
                    .record(term, format!("{node} learned it was removed"));
            }
            Standing::Member if before == Some(Standing::Removed) => {
                self.inner.raft.runtime_config().elect(true);
                tracing::info!(%node, term, "this node was added back to the cluster");
            }
            Standing::Member if before.is_some() => {
                tracing::info!(%node, term, "this node joined a cluster");
            }
            Standing::Member => {}
            Standing::NotJoined => tracing::info!(
                %node,
                "this node is not a member of any cluster yet (start it with --bs, or add it \
                 from a member)"
            ),
        }
    }
}
