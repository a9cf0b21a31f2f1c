//! Raft metrics: the node's term, role and log indexes and, on the leader, each member's
//! replication (set from the node's view when scraped); elections and leader changes (counted
//! from the changes of openraft's metrics the node passes on); snapshot builds and installs.

use super::{name, register, LATENCY_BUCKETS};
use crate::types::NodeId;
use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntGauge, IntGaugeVec, Opts, Registry};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where the node stands, as the gauges report it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Position {
    pub term: u64,
    pub leader: bool,
    pub last_log_index: u64,
    pub committed: u64,
    pub applied: u64,
    pub snapshot: u64,
    pub members: usize,
}

/// Snapshot work, for [`RaftMetricsSet::snapshot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotWork {
    /// This node built one from its state.
    Build,
    /// This node installed one a leader sent.
    Install,
}

/// The Raft families.
#[derive(Clone)]
pub struct RaftMetricsSet {
    term: IntGauge,
    is_leader: IntGauge,
    last_log_index: IntGauge,
    commit_index: IntGauge,
    applied_index: IntGauge,
    snapshot_index: IntGauge,
    members: IntGauge,
    matched: IntGaugeVec,
    lag: IntGaugeVec,
    leader_changes: IntCounter,
    elections: IntCounter,
    snapshots: HistogramVec,
    /// What was last passed to [`RaftMetricsSet::saw`].
    last: Arc<Mutex<Option<Seen>>>,
}

fn gauge(registry: &Registry, short: &str, help: &str) -> prometheus::Result<IntGauge> {
    register(registry, IntGauge::with_opts(Opts::new(name(short), help)))
}

fn counter(registry: &Registry, short: &str, help: &str) -> prometheus::Result<IntCounter> {
    register(
        registry,
        IntCounter::with_opts(Opts::new(name(short), help)),
    )
}

fn per_member(registry: &Registry, short: &str, help: &str) -> prometheus::Result<IntGaugeVec> {
    register(
        registry,
        IntGaugeVec::new(Opts::new(name(short), help), &["member"]),
    )
}

impl std::fmt::Debug for RaftMetricsSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftMetricsSet").finish_non_exhaustive()
    }
}

impl RaftMetricsSet {
    pub(super) fn new(registry: &Registry) -> prometheus::Result<Self> {
        Ok(RaftMetricsSet {
            term: gauge(registry, "raft_term", "The node's current term.")?,
            is_leader: gauge(registry, "raft_is_leader", "1 on the leader, else 0.")?,
            last_log_index: gauge(
                registry,
                "raft_last_log_index",
                "Index of the last entry in this node's log.",
            )?,
            commit_index: gauge(
                registry,
                "raft_commit_index",
                "Index of the last entry this node knows committed.",
            )?,
            applied_index: gauge(
                registry,
                "raft_applied_index",
                "Index of the last entry applied to the state machine.",
            )?,
            snapshot_index: gauge(
                registry,
                "raft_snapshot_index",
                "Last index covered by this node's latest snapshot.",
            )?,
            members: gauge(
                registry,
                "raft_members",
                "Members (voters and learners) in the configuration in effect.",
            )?,
            matched: per_member(
                registry,
                "raft_member_matched_index",
                "On the leader: the highest index known replicated to each member.",
            )?,
            lag: per_member(
                registry,
                "raft_member_lag_entries",
                "On the leader: entries each member trails the leader's last log index.",
            )?,
            leader_changes: counter(
                registry,
                "raft_leader_changes_total",
                "Times this node saw a different leader (or none become one).",
            )?,
            elections: counter(
                registry,
                "raft_elections_started_total",
                "Times this node became a candidate.",
            )?,
            snapshots: register(
                registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        name("raft_snapshot_duration_seconds"),
                        "Time to build a snapshot or install a received one, by kind.",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                    &["kind"],
                ),
            )?,
            last: Arc::default(),
        })
    }

    /// Sets the node's gauges, and drops every member's (the leader sets them again with
    /// [`RaftMetricsSet::member`]: only it knows replication, and a member that left must not
    /// linger).
    pub fn position(&self, p: Position) {
        self.term.set(p.term as i64);
        self.is_leader.set(i64::from(p.leader));
        self.last_log_index.set(p.last_log_index as i64);
        self.commit_index.set(p.committed as i64);
        self.applied_index.set(p.applied as i64);
        self.snapshot_index.set(p.snapshot as i64);
        self.members.set(p.members as i64);
        self.matched.reset();
        self.lag.reset();
    }

    /// On the leader: member `id` has `matched` entries and trails by `lag`.
    pub fn member(&self, id: &str, matched: u64, lag: u64) {
        self.matched.with_label_values(&[id]).set(matched as i64);
        self.lag.with_label_values(&[id]).set(lag as i64);
    }

    /// A snapshot was built or installed in `took`.
    pub fn snapshot(&self, work: SnapshotWork, took: Duration) {
        let kind = match work {
            SnapshotWork::Build => "build",
            SnapshotWork::Install => "install",
        };
        self.snapshots
            .with_label_values(&[kind])
            .observe(took.as_secs_f64());
    }

    /// What openraft's metrics say after a change: counts an election when the term went up
    /// with this node's vote for itself (it campaigned), and a leader change when the leader
    /// differs from the one seen last. Changes that come faster than they are looked at
    /// coalesce: a count is a lower bound.
    pub fn saw(&self, seen: Seen) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(before) = *last {
            if seen.term > before.term && seen.voted_for_self {
                self.elections.inc();
            }
            if seen.leader != before.leader {
                self.leader_changes.inc();
            }
        }
        *last = Some(seen);
    }
}

/// The part of openraft's metrics the election counters follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub term: u64,
    pub voted_for_self: bool,
    pub leader: Option<NodeId>,
}
