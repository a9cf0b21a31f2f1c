//! The node's account of what happens to it in the cluster: elections, leader changes,
//! membership changes, snapshots and module upgrades, one log line each with the node's name and
//! term (openraft's own lines name nodes by their numeric id). The same observer counts
//! elections and leader changes for the metrics. It follows openraft's metrics from before the
//! node's first election on.

use crate::metrics::raft::Seen;
use crate::metrics::Metrics;
use crate::store::{Raft, StateMachine};
use crate::types::{NodeId, RaftMetrics};
use openraft::async_runtime::WatchReceiver;

/// What the log lines follow, as of one change of openraft's metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
struct View {
    seen: Seen,
    leader: Option<String>,
    /// Log index of the configuration, its voters and learners by name.
    membership: (u64, Vec<String>, Vec<String>),
    snapshot: Option<u64>,
    module: String,
}

impl View {
    fn of(m: &RaftMetrics, sm: &StateMachine) -> View {
        let config = &m.membership_config;
        let name = |id: &NodeId| {
            config
                .get_node(id)
                .map_or_else(|| id.to_string(), |member| member.name.clone())
        };
        let membership = config.membership();
        View {
            seen: Seen {
                term: m.current_term,
                voted_for_self: m.vote.leader_id().node_id == m.id,
                leader: m.current_leader,
            },
            leader: m.current_leader.as_ref().map(name),
            membership: (
                config.log_id().as_ref().map_or(0, |l| l.index),
                membership.voter_ids().map(|id| name(&id)).collect(),
                membership.learner_ids().map(|id| name(&id)).collect(),
            ),
            snapshot: m.snapshot.map(|l| l.index),
            module: sm.module_hash(),
        }
    }
}

/// Follows `raft`'s metrics until it stops: counts elections and leader changes into `metrics`
/// and logs each event under the node's `name`.
pub fn watch(raft: &Raft, name: String, sm: StateMachine, metrics: Metrics) {
    let mut rx = raft.metrics();
    tokio::spawn(async move {
        let mut last: Option<View> = None;
        loop {
            let view = View::of(&rx.borrow_watched(), &sm);
            metrics.raft().saw(view.seen);
            if let Some(before) = &last {
                log_changes(&name, before, &view);
            }
            last = Some(view);
            if rx.changed().await.is_err() {
                return;
            }
        }
    });
}

fn log_changes(node: &str, before: &View, now: &View) {
    let term = now.seen.term;
    if now.seen.term > before.seen.term && now.seen.voted_for_self {
        tracing::info!(node, term, "campaigning for leadership");
    }
    if now.leader != before.leader {
        match &now.leader {
            Some(leader) => tracing::info!(node, term, leader = %leader, "leader elected"),
            None => tracing::info!(node, term, "no leader known"),
        }
    }
    if now.membership != before.membership {
        let (index, voters, learners) = &now.membership;
        tracing::info!(
            node,
            term,
            log_index = index,
            ?voters,
            ?learners,
            "membership changed"
        );
    }
    if now.snapshot != before.snapshot {
        if let Some(index) = now.snapshot {
            tracing::info!(node, term, log_index = index, "snapshot in place");
        }
    }
    if now.module != before.module {
        let hash = &now.module;
        tracing::info!(node, term, module = %hash, "guest module replaced");
    }
}
