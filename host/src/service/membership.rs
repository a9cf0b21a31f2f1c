//! Membership changes, run on the leader (a follower forwards them): adding a node (probe it,
//! add it as a learner, wait for it to catch up, bounded, then promote it to voter) and removing
//! one (a leader that removes itself first hands leadership to the most caught-up voter, see
//! [`super::transfer`]), as rqlite's `cluster/{join,remove}` split them.

use super::{Service, ServiceError, Status};
use crate::auth::{Caller, Permission, Scope};
use crate::config::validate_node_name;
use crate::types::{node_id, Member, NodeId, RaftMetrics, TypeConfig};
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, RaftError};
use openraft::errors::ForwardReason;
use openraft::raft::ClientWriteResponse;
use openraft::ChangeMembers;
use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;
use tokio::time::{timeout, timeout_at, Instant};

/// How long AddNode waits for a new node to answer before refusing it.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

type Membership = openraft::Membership<NodeId, Member>;

/// The member called `name`, or NotFound.
pub(super) fn member_named(membership: &Membership, name: &str) -> Result<Member, ServiceError> {
    match membership.get_node(&node_id(name)) {
        Some(m) if m.name == name => Ok(m.clone()),
        _ => Err(ServiceError::not_found(format!(
            "node {name} is not a member"
        ))),
    }
}

/// Whether adding `name` at `addr` to a cluster with `membership` is already done (a member the
/// way it is asked for), or a conflict.
fn already_added(
    membership: &Membership,
    name: &str,
    addr: &str,
    learner_only: bool,
) -> Result<bool, ServiceError> {
    let id = node_id(name);
    let Some(existing) = membership.get_node(&id) else {
        if let Some((_, other)) = membership.nodes().find(|(_, n)| n.addr == addr) {
            return Err(ServiceError::Conflict {
                message: format!("address {addr} already belongs to node {}", other.name),
            });
        }
        return Ok(false);
    };
    if existing.name != name {
        return Err(ServiceError::Conflict {
            message: format!(
                "node id {name:?} maps to the same internal id as member {:?}; choose another id",
                existing.name
            ),
        });
    }
    if existing.addr != addr {
        return Err(ServiceError::Conflict {
            message: format!(
                "node {name} is already a member at {}; remove it before adding it at {addr}",
                existing.addr
            ),
        });
    }
    let is_voter = membership.voter_ids().any(|v| v == id);
    Ok(is_voter || learner_only)
}

impl Service {
    /// Adds node `name` at `addr`: as a learner, waits for it to catch up, then (unless
    /// `learner_only`) promotes it to voter. Re-adding a member with the same address is a no-op.
    pub async fn add_node(
        &self,
        caller: &Caller,
        name: &str,
        addr: &str,
        learner_only: bool,
    ) -> Result<Status, ServiceError> {
        caller.allow(Permission::Admin, Scope::Cluster)?;
        validate_node_name(name).map_err(|e| ServiceError::invalid(e.to_string()))?;
        if addr.is_empty() || !addr.contains(':') {
            return Err(ServiceError::invalid(format!(
                "address {addr:?} must be host:port"
            )));
        }
        let metrics = self.metrics();
        if let Some(leader) = self.forward_target(&metrics, caller)? {
            return leader.add_node(name, addr, learner_only).await;
        }
        let membership = metrics.membership_config.membership();
        if already_added(membership, name, addr, learner_only)? {
            return Ok(self.local_status());
        }
        // A learner being promoted goes through this too: it must be caught up first.
        self.probe(name, addr, caller).await?;
        let index = self.add_learner(name, addr).await?;
        self.audit(caller, &format!("add learner {name} at {addr}"), index);
        if !learner_only {
            let promote = ChangeMembers::AddVoterIds(BTreeSet::from([node_id(name)]));
            let changed = self
                .committed("promotion to voter was not committed", || {
                    self.inner.raft.change_membership(promote.clone(), false)
                })
                .await?;
            self.audit(
                caller,
                &format!("promote {name} to voter"),
                changed.log_id.index,
            );
            let last = self.metrics().last_log_index.unwrap_or(0);
            self.wait_holds(node_id(name), last).await;
        }
        Ok(self.local_status())
    }

    /// Waits (at most the request timeout) until member `id` holds the log up to `index`, so
    /// the answer to an add shows the promoted voter caught up, not an entry or two behind.
    async fn wait_holds(&self, id: NodeId, index: u64) {
        let mut rx = self.inner.raft.metrics();
        let holds = rx.wait_until(|m: &RaftMetrics| {
            let progress = m.replication.as_ref();
            let matched = progress.and_then(|r| r.get(&id).cloned().flatten());
            matched.map(|l| l.index) >= Some(index)
        });
        let _ = timeout(self.inner.limits.request_timeout, holds).await;
    }

    /// Adds a learner and waits (bounded) until it has caught up; on a timeout it is removed
    /// again, so no half-added learner is left behind. Returns the change's log index.
    async fn add_learner(&self, name: &str, addr: &str) -> Result<u64, ServiceError> {
        let id = node_id(name);
        let member = Member {
            name: name.to_string(),
            addr: addr.to_string(),
        };
        let raft = &self.inner.raft;
        let limits = &self.inner.limits;
        match timeout(limits.catch_up_timeout, raft.add_learner(id, member, true)).await {
            Ok(Ok(added)) => Ok(added.log_id.index),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => {
                let remove = ChangeMembers::RemoveNodes(BTreeSet::from([id]));
                let _ = timeout(
                    limits.request_timeout,
                    raft.change_membership(remove, false),
                )
                .await;
                Err(ServiceError::unavailable(
                    format!(
                        "node {name} at {addr} did not catch up within {:?}; it was not added",
                        limits.catch_up_timeout
                    ),
                    None,
                ))
            }
        }
    }

    /// Checks that a node answers at `addr` and calls itself `name` (asked with `caller`'s
    /// credentials, which the new node checks too).
    async fn probe(&self, name: &str, addr: &str, caller: &Caller) -> Result<(), ServiceError> {
        let mut client = self.inner.forward.client(addr)?;
        let mut request = tonic::Request::new(crate::proto::MonitorRequest::default());
        request.set_timeout(PROBE_TIMEOUT);
        caller.forwarding(request.metadata_mut());
        let status = timeout(PROBE_TIMEOUT, client.monitor(request))
            .await
            .map_err(|_| {
                ServiceError::unavailable(
                    format!("node {name} at {addr} did not answer within {PROBE_TIMEOUT:?}"),
                    None,
                )
            })?
            .map_err(|s| {
                ServiceError::unavailable(
                    format!("cannot reach node {name} at {addr}: {}", s.message()),
                    None,
                )
            })?
            .into_inner();
        if status.id != name {
            return Err(ServiceError::invalid(format!(
                "the node at {addr} is {:?}, not {name:?}",
                status.id
            )));
        }
        Ok(())
    }

    /// Removes node `name` from the cluster (voter or learner).
    pub async fn remove_node(&self, caller: &Caller, name: &str) -> Result<Status, ServiceError> {
        caller.allow(Permission::Admin, Scope::Cluster)?;
        let metrics = self.metrics();
        if let Some(leader) = self.forward_target(&metrics, caller)? {
            return leader.remove_node(name).await;
        }
        let id = node_id(name);
        let membership = metrics.membership_config.membership();
        member_named(membership, name)?;
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        if id == self.inner.id && voters.len() > 1 {
            // Removing the leader: leadership moves first, to the most caught-up other voter,
            // and the new leader removes this node.
            let successor = self.hand_over_to_successor(&metrics).await?;
            let leader = self.forward_to(Some(successor), caller)?;
            return leader.remove_node(name).await;
        }
        let change = if voters.contains(&id) {
            if voters.len() == 1 {
                return Err(ServiceError::invalid(format!(
                    "node {name} is the only voter; a cluster cannot remove its last voter"
                )));
            }
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        let changed = self
            .committed("membership change was not committed", || {
                self.inner.raft.change_membership(change.clone(), false)
            })
            .await?;
        self.audit(caller, &format!("remove {name}"), changed.log_id.index);
        Ok(self.local_status())
    }

    /// Runs the membership change `change` until it commits, within the request timeout. A
    /// leader elected a moment ago refuses writes until a quorum has acknowledged it (openraft's
    /// leader lease; a removal that follows a hand-over lands exactly then): nothing was written,
    /// so the change is tried again once a quorum answers.
    async fn committed<F, Fut>(
        &self,
        what: &str,
        change: F,
    ) -> Result<ClientWriteResponse<TypeConfig>, ServiceError>
    where
        F: Fn() -> Fut,
        Fut: Future<
            Output = Result<
                ClientWriteResponse<TypeConfig>,
                RaftError<TypeConfig, ClientWriteError<TypeConfig>>,
            >,
        >,
    {
        let deadline = Instant::now() + self.inner.limits.request_timeout;
        let mut rx = self.inner.raft.metrics();
        let recheck = Duration::from_millis(self.inner.raft.config().heartbeat_interval);
        loop {
            match timeout_at(deadline, change()).await {
                Err(_) => return Err(self.timed_out(what)),
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))))
                    if f.reason == ForwardReason::LeaseExpired && Instant::now() < deadline =>
                {
                    // A quorum's acknowledgement shows up as a replication metrics change.
                    let _ = timeout(recheck, rx.changed()).await;
                }
                Ok(result) => return result.map_err(Into::into),
            }
        }
    }
}
