//! The node's account of what happens to it in the cluster: elections, leader changes,
//! membership changes, snapshots and module upgrades, one log line each with the node's name and
//! term (openraft's own lines name nodes by their numeric id). The same observer counts
//! elections and leader changes for the metrics. It follows openraft's metrics from before the
//! node's first election on, and keeps the latest events for the dashboard ([`EventLog`]).

use crate::metrics::raft::Seen;
use crate::metrics::Metrics;
use crate::store::{Raft, StateMachine};
use crate::types::{metrics_settled, NodeId, RaftMetrics};
use openraft::async_runtime::WatchReceiver;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Events an [`EventLog`] keeps.
const KEPT_EVENTS: usize = 100;
/// How long a change of openraft's metrics waits for more before they are looked at: the events
/// followed happen a few times a minute at most, the metrics change several times per write
/// batch under load.
const SETTLE: Duration = Duration::from_millis(20);

/// One thing that happened to the node in its cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When this node saw it, milliseconds since the Unix epoch.
    pub unix_ms: u64,
    pub term: u64,
    /// What happened, in words.
    pub what: String,
}

/// The latest events this node saw, oldest first. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct EventLog(Arc<Mutex<VecDeque<Event>>>);

impl EventLog {
    /// Records an event (dropping the oldest beyond the ones kept).
    pub fn record(&self, term: u64, what: String) {
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut events = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if events.len() == KEPT_EVENTS {
            events.pop_front();
        }
        events.push_back(Event {
            unix_ms,
            term,
            what,
        });
    }

    /// The events kept, oldest first.
    pub fn recent(&self) -> Vec<Event> {
        let events = self.0.lock().unwrap_or_else(|p| p.into_inner());
        events.iter().cloned().collect()
    }
}

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
/// and logs each event under the node's `name`. The returned log keeps the latest events.
pub fn watch(raft: &Raft, name: String, sm: StateMachine, metrics: Metrics) -> EventLog {
    let mut rx = raft.metrics();
    let events = EventLog::default();
    let log = events.clone();
    tokio::spawn(async move {
        let mut last: Option<View> = None;
        loop {
            let view = View::of(&rx.borrow_watched(), &sm);
            metrics.raft().saw(view.seen);
            if let Some(before) = &last {
                log_changes(&name, before, &view, &log);
            }
            last = Some(view);
            if !metrics_settled(&mut rx, SETTLE).await {
                return;
            }
        }
    });
    events
}

fn log_changes(node: &str, before: &View, now: &View, events: &EventLog) {
    let term = now.seen.term;
    if now.seen.term > before.seen.term && now.seen.voted_for_self {
        tracing::info!(node, term, "campaigning for leadership");
        events.record(term, format!("{node} campaigned"));
    }
    if now.leader != before.leader {
        match &now.leader {
            Some(leader) => {
                tracing::info!(node, term, leader = %leader, "leader elected");
                events.record(term, format!("{leader} leads"));
            }
            None => {
                tracing::info!(node, term, "no leader known");
                events.record(term, "no leader known".into());
            }
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
        let learners = match learners.is_empty() {
            true => String::new(),
            false => format!(", learners {}", learners.join(", ")),
        };
        let what = format!(
            "membership at index {index}: voters {}{learners}",
            voters.join(", ")
        );
        events.record(term, what);
    }
    if now.snapshot != before.snapshot {
        if let Some(index) = now.snapshot {
            tracing::info!(node, term, log_index = index, "snapshot in place");
            events.record(term, format!("snapshot at index {index}"));
        }
    }
    if now.module != before.module {
        let hash = &now.module;
        tracing::info!(node, term, module = %hash, "guest module replaced");
        let short = &hash[..12.min(hash.len())];
        events.record(term, format!("guest module now sha256:{short}"));
    }
}
