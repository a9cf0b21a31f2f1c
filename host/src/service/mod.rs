//! The service layer: every client operation, called by both the gRPC `Client` service and the
//! HTTP gateway, so neither holds logic of its own. Split by audience, as openraft's
//! `raft/api/{app,management,protocol}` is:
//!
//! - this module, the core: limits, [`Service::apply`] and [`Service::query`] for any guest,
//!   status, watch and the snapshot trigger.
//!   - Writes go through the Raft log, batched with other concurrent writes into one entry
//!     (`batcher`).
//!   - Reads are linearizable by default: the leader confirms its leadership with a quorum
//!     (openraft's read index; concurrent reads share one confirmation, `read_index`), waits until
//!     it has applied up to that index, then reads locally. [`Consistency::Stale`] reads this
//!     node's state as it is.
//! - `forward`: a follower sends writes, linearizable reads and administrative requests to the
//!   leader (at most [`MAX_HOPS`] hops); `convert` maps protobuf messages to domain types.
//! - `kv`: guest-kv's typed calls (get, put, delete, scan), built from guest-kv's own schema.
//! - `membership`: add (as learner, catch up, promote), probe, remove.
//! - `transfer`: the leadership hand-over protocol, both halves.
//! - `upgrade`: replacing the guest module through the log.
//! - `guest_log`: the lines guests logged on this node.
//! - `changes`: watches of the changes guests announced, by key or prefix, from a revision.
//! - `debug`: openraft's own stage timings and batch sizes.

mod backup;
mod batcher;
mod changes;
mod convert;
mod dashboard;
mod debug;
mod error;
mod forward;
mod guest_log;
mod health;
mod kv;
mod membership;
mod pacing;
mod read_index;
mod standing;
mod status;
pub mod transfer;
mod upgrade;

pub use backup::{BackupStream, SnapshotInfo};
pub use changes::{parse_position, ChangeView, Watch, WatchItem, WatchSpec, DEFAULT_PROGRESS};
pub use dashboard::{ClusterView, MemberView};
pub use error::{ErrorBody, ServiceError};
pub use forward::{hops, never_sent, HOPS_HEADER, MAX_HOPS};
pub use guest_kv::schema::{KeyValue, ScanResponse};
pub use guest_log::GuestLogPage;
pub use health::{Readiness, READY_MAX_APPLY_LAG};
pub use kv::{DeleteResult, PutResult, ScanParams};
pub use standing::Standing;
pub use status::{Counters, MemberStatus, StateHash, Status};
pub use upgrade::ModuleUpgrade;

use crate::auth::{Caller, Permission, Scope};
use crate::config::{Limits, WatchConfig};
use crate::events::EventLog;
use crate::metrics::Metrics;
use crate::network::{PeerPool, Removals};
use crate::store::{Raft, StateMachine};
use crate::types::{node_id, Command, Member, NodeId, RaftMetrics, Request, SessionRef};
use forward::{Forwarder, Leader};
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, LinearizableReadError, RaftError};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tokio::time::timeout;

/// Read consistency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    /// Sees every write acknowledged before the read started.
    #[default]
    Linearizable,
    /// This node's applied state, possibly behind.
    Stale,
}

/// A committed command's response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub response: Vec<u8>,
    pub log_index: u64,
}

/// Where a request is answered: here, or by the leader it is forwarded to.
enum Route<T> {
    Here(T),
    Leader(Box<Leader>),
}

struct Inner {
    name: String,
    id: NodeId,
    addr: String,
    raft: Raft,
    batcher: batcher::Batcher,
    read_index: read_index::ReadIndex,
    handover: transfer::HandOver,
    sm: StateMachine,
    forward: Forwarder,
    limits: Limits,
    metrics: Metrics,
    /// Members' word that this node is not in the cluster.
    removals: Removals,
    events: EventLog,
    watch: WatchConfig,
}

/// The node's client-facing operations. Cheap to clone.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}

/// What a [`Service`] is built from: the node's name and advertised address, and the parts
/// [`crate::node::start`] made.
pub struct Parts {
    pub name: String,
    pub addr: String,
    pub raft: Raft,
    pub sm: StateMachine,
    pub peers: PeerPool,
    pub limits: Limits,
    pub metrics: Metrics,
    /// Members' word that this node is not in the cluster (the network records it).
    pub removals: Removals,
    /// The latest cluster events this node saw.
    pub events: EventLog,
    pub watch: WatchConfig,
}

impl std::fmt::Debug for Parts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parts")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Service {
    pub fn new(parts: Parts) -> Self {
        let Parts {
            name,
            addr,
            raft,
            sm,
            peers,
            limits,
            metrics,
            removals,
            events,
            watch,
        } = parts;
        let requests = metrics.requests().clone();
        Service {
            inner: Arc::new(Inner {
                id: node_id(&name),
                name,
                forward: Forwarder::new(
                    addr.clone(),
                    peers,
                    limits.request_timeout,
                    requests.clone(),
                ),
                addr,
                batcher: batcher::Batcher::start(raft.clone(), sm.clone(), requests.clone()),
                read_index: read_index::ReadIndex::start(raft.clone(), requests),
                handover: transfer::HandOver::default(),
                raft,
                sm,
                limits,
                metrics,
                removals,
                events,
                watch,
            }),
        }
    }

    /// The node's metrics in the Prometheus text format, the Raft gauges brought up to date
    /// from this node's view first.
    pub fn scrape(&self, caller: &Caller) -> Result<String, ServiceError> {
        caller.allow(Permission::Read, Scope::Cluster)?;
        let committed = self.metrics().local_committed.map_or(0, |l| l.index);
        status::observe(self.inner.metrics.raft(), &self.local_status(), committed);
        Ok(self.inner.metrics.render())
    }

    /// The node's metrics, to record into.
    pub fn recorder(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The service's limits.
    pub fn limits(&self) -> Limits {
        self.inner.limits
    }

    fn check_size(what: &str, size: usize, limit: usize) -> Result<(), ServiceError> {
        if size > limit {
            return Err(ServiceError::TooLarge {
                what: what.to_string(),
                size: Some(size),
                limit,
            });
        }
        Ok(())
    }

    fn metrics(&self) -> RaftMetrics {
        self.inner.raft.metrics().borrow_watched().clone()
    }

    /// When this node is not the leader: a client for the leader, to forward `caller`'s
    /// request. `None` when this node leads.
    fn forward_target(
        &self,
        metrics: &RaftMetrics,
        caller: &Caller,
    ) -> Result<Option<Leader>, ServiceError> {
        if metrics.current_leader == Some(self.inner.id) {
            return Ok(None);
        }
        self.forward_to(self.leader(), caller).map(Some)
    }

    /// A client for `leader`, to forward `caller`'s request; `not_member` instead when this
    /// node is not in a cluster (whatever leader it last knew).
    fn forward_to(&self, leader: Option<Member>, caller: &Caller) -> Result<Leader, ServiceError> {
        self.check_member()?;
        self.inner.forward.to(leader, caller)
    }

    /// Proposes `command` to the log and returns the guest's response once it is applied.
    /// Needs `write` over every key (an opaque command may touch any).
    /// With a `session`, a retry of the session's latest command is answered with its first
    /// result and not applied again.
    pub async fn apply(
        &self,
        caller: &Caller,
        command: Vec<u8>,
        session: Option<SessionRef>,
    ) -> Result<Applied, ServiceError> {
        caller.allow(Permission::Write, Scope::AnyKey)?;
        match self.propose(caller, command.clone(), session).await? {
            Route::Here(applied) => Ok(applied),
            Route::Leader(leader) => leader.apply(command, session).await,
        }
    }

    /// Opens a client session through the log; returns its id (the index of the entry that
    /// opened it). Needs `write`.
    pub async fn open_session(&self, caller: &Caller) -> Result<u64, ServiceError> {
        caller.allow(Permission::Write, Scope::AnyKey)?;
        let write = self.inner.raft.client_write(Request::OpenSession);
        let written = timeout(self.inner.limits.request_timeout, write)
            .await
            .map_err(|_| self.timed_out("opening a session was not committed"))?;
        match written {
            Ok(w) => Ok(w.log_id.index),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(fwd))) => {
                self.forward_to(fwd.leader_node, caller)?
                    .open_session()
                    .await
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Proposes `command` here, or names the leader to send the caller's request to (the
    /// request as the caller made it, so the leader checks the caller's permission for it).
    async fn propose(
        &self,
        caller: &Caller,
        command: Vec<u8>,
        session: Option<SessionRef>,
    ) -> Result<Route<Applied>, ServiceError> {
        let limit = self.inner.limits.max_command_bytes;
        Self::check_size("command", command.len(), limit)?;
        if session.is_some_and(|s| s.seq == 0) {
            return Err(ServiceError::invalid(
                "a session's sequence numbers start at 1",
            ));
        }
        let write = self.inner.batcher.propose(Command {
            bytes: command,
            session,
        });
        let result = timeout(self.inner.limits.request_timeout, write)
            .await
            .map_err(|_| self.timed_out("write was not committed"))?
            .ok_or_else(|| {
                ServiceError::unknown_outcome(
                    "the node is shutting down; the write may still commit",
                    None,
                    false,
                )
            })?;
        match result {
            Ok((log_index, response)) => Ok(Route::Here(Applied {
                response: response?,
                log_index,
            })),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(fwd))) => {
                let leader = self.forward_to(fwd.leader_node, caller)?;
                Ok(Route::Leader(Box::new(leader)))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Answers a read-only `request` with the given consistency. Needs `read` over every key.
    pub async fn query(
        &self,
        caller: &Caller,
        request: Vec<u8>,
        consistency: Consistency,
    ) -> Result<Vec<u8>, ServiceError> {
        caller.allow(Permission::Read, Scope::AnyKey)?;
        let limit = self.inner.limits.max_command_bytes;
        Self::check_size("query", request.len(), limit)?;
        if let Some(leader) = self.read_barrier(caller, consistency).await? {
            return leader.query(request).await;
        }
        self.query_here(request).await
    }

    /// The guest's answer to `request` from this node's state.
    async fn query_here(&self, request: Vec<u8>) -> Result<Vec<u8>, ServiceError> {
        let outcome = self.inner.sm.query(request).await?;
        Ok(outcome.result?)
    }

    /// Makes a read with `consistency` safe to answer here: a linearizable one waits for the
    /// leader's read index to be applied. `Some(leader)` when this node is not the leader and
    /// the caller's request should go there.
    async fn read_barrier(
        &self,
        caller: &Caller,
        consistency: Consistency,
    ) -> Result<Option<Leader>, ServiceError> {
        // Not even a stale read: a node outside any cluster has no state worth reading.
        self.check_member()?;
        if consistency == Consistency::Stale {
            return Ok(None);
        }
        self.inner
            .handover
            .wait_unpaused(self.inner.limits.request_timeout)
            .await;
        let check = timeout(
            self.inner.limits.request_timeout,
            self.inner.read_index.confirm(),
        )
        .await
        .map_err(|_| self.read_timed_out("leadership was not confirmed"))?
        .ok_or_else(|| ServiceError::unavailable("the node is shutting down", None))?;
        match check {
            Ok(_) => Ok(None),
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(fwd))) => {
                Ok(Some(self.forward_to(fwd.leader_node, caller)?))
            }
            Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(e))) => Err(
                ServiceError::unavailable(format!("no quorum for a linearizable read: {e}"), None),
            ),
            Err(RaftError::Fatal(e)) => Err(ServiceError::internal(e)),
        }
    }

    /// A proposed change that did not commit in time: it may still commit.
    fn timed_out(&self, what: &str) -> ServiceError {
        let leader = self.leader();
        ServiceError::unknown_outcome(
            format!(
                "{what} within {:?}: no quorum answered; it may still commit",
                self.inner.limits.request_timeout
            ),
            leader.map(|m| (m.name, m.addr)),
            true,
        )
    }

    /// A read that could not be made safe in time: nothing happened.
    fn read_timed_out(&self, what: &str) -> ServiceError {
        let leader = self.leader();
        ServiceError::unavailable(
            format!(
                "{what} within {:?}: no quorum answered",
                self.inner.limits.request_timeout
            ),
            leader.map(|m| (m.name, m.addr)),
        )
    }

    /// The hosts of the cluster's members' addresses: a node certificate must name one of them.
    pub fn member_hosts(&self) -> Vec<String> {
        let metrics = self.metrics();
        metrics
            .membership_config
            .membership()
            .nodes()
            .map(|(_, m)| crate::config::host_of(&m.addr).to_string())
            .collect()
    }

    /// The current leader's member record, if known.
    fn leader(&self) -> Option<Member> {
        let metrics = self.metrics();
        let leader = metrics.current_leader?;
        metrics
            .membership_config
            .membership()
            .get_node(&leader)
            .cloned()
    }

    /// This node's view, with the hash of its full guest state.
    pub async fn status_with_state_hash(&self, caller: &Caller) -> Result<Status, ServiceError> {
        caller.allow(Permission::Read, Scope::Cluster)?;
        let (applied_index, sha256) = self.inner.sm.state_hash().await?;
        let mut status = self.local_status();
        status.state_hash = Some(StateHash {
            applied_index,
            sha256,
        });
        Ok(status)
    }

    /// This node's view of the cluster, for a caller with `read`.
    pub fn status(&self, caller: &Caller) -> Result<Status, ServiceError> {
        caller.allow(Permission::Read, Scope::Cluster)?;
        Ok(self.local_status())
    }

    /// This node's view of the cluster, for this process (no caller to check).
    pub fn local_status(&self) -> Status {
        Status::new(
            &self.inner.name,
            &self.inner.addr,
            &self.metrics(),
            &self.inner.sm.status(),
        )
    }

    /// A stream of [`Status`] values, one each time the node's view changes.
    pub fn watch(
        &self,
        caller: &Caller,
    ) -> Result<impl futures::Stream<Item = Status> + Send + 'static, ServiceError> {
        caller.allow(Permission::Read, Scope::Cluster)?;
        let service = self.clone();
        let rx = self.inner.raft.metrics();
        Ok(futures::stream::unfold(
            (rx, None::<Status>),
            move |(mut rx, last)| {
                let service = service.clone();
                async move {
                    loop {
                        let status = service.local_status();
                        if last.as_ref() != Some(&status) {
                            return Some((status.clone(), (rx, Some(status))));
                        }
                        rx.changed().await.ok()?;
                    }
                }
            },
        ))
    }

    /// One audit line: who did what to the cluster, at which log index.
    fn audit(&self, caller: &Caller, action: &str, log_index: u64) {
        tracing::info!(target: "raftwasm::audit", user = caller.name(), action, log_index, node = %self.inner.name);
    }
}
