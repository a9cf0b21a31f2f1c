//! Leadership transfer, both halves of the protocol in one place. openraft's own
//! `transfer_leader` is not used; the hand-over is built from its primitives:
//!
//! Leader half ([`Service::transfer_leader`], run on the leader):
//! 1. wait until the target holds every log entry (or it could not win, and must not);
//! 2. pause client writes and linearizable reads ([`HandOver`]), whose replication traffic
//!    would renew the followers' leader leases; stop heartbeats and this node's own elections;
//! 3. ask every other voter to suspend its elections for a while (`Raft/SuspendElections`);
//! 4. wait until every follower's leader lease (`election_timeout_max`) has run out;
//! 5. tell the target to campaign (`Raft/Campaign`); it wins, since its log is complete and
//!    nobody else campaigns; lift the suspensions and resume.
//!
//! Follower half ([`ElectionGate`], called by the node-to-node service in
//! [`crate::grpc::raft_service`]): `SuspendElections` turns elections off for the given time and
//! always lifts by itself, so a leader that dies mid-transfer cannot leave the cluster unable to
//! elect; `Campaign` lifts any suspension and starts an election now.

use super::membership::member_named;
use super::{Service, ServiceError, Status};
use crate::auth::{Caller, Permission, Scope};
use crate::proto;
use crate::types::{node_id, Member, NodeId, RaftMetrics, TypeConfig};
use openraft::async_runtime::WatchReceiver;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::{timeout, Instant};

/// The leader's side state: one transfer at a time, and the pause client requests wait on.
#[derive(Debug)]
pub(super) struct HandOver {
    one_at_a_time: tokio::sync::Mutex<()>,
    /// True while this leader hands leadership over: client writes and linearizable reads wait,
    /// because their replication traffic would renew the followers' leader leases.
    paused: tokio::sync::watch::Sender<bool>,
}

impl Default for HandOver {
    fn default() -> Self {
        HandOver {
            one_at_a_time: tokio::sync::Mutex::new(()),
            paused: tokio::sync::watch::channel(false).0,
        }
    }
}

impl HandOver {
    /// True while a leadership transfer holds client traffic.
    pub(super) fn is_paused(&self) -> bool {
        *self.paused.borrow()
    }

    /// Waits (at most `limit`) while a leadership transfer is under way.
    pub(super) async fn wait_unpaused(&self, limit: Duration) {
        let mut rx = self.paused.subscribe();
        let _ = timeout(limit, rx.wait_for(|p| !*p)).await;
    }
}

/// The follower's side: elections suspended until a deadline, lifted by a timer or a campaign.
#[derive(Debug, Clone, Default)]
pub struct ElectionGate {
    suspended_until: Arc<Mutex<Option<Instant>>>,
}

impl ElectionGate {
    /// Suspends elections on `raft`'s node for `ms` milliseconds (0 lifts a suspension now).
    pub fn suspend<SM>(&self, raft: &openraft::Raft<TypeConfig, SM>, ms: u64)
    where
        SM: openraft::storage::RaftStateMachine<TypeConfig>,
    {
        let mut until = lock(&self.suspended_until);
        if ms == 0 {
            *until = None;
            raft.runtime_config().elect(true);
            return;
        }
        let end = Instant::now() + Duration::from_millis(ms);
        *until = Some(until.map_or(end, |u| u.max(end)));
        raft.runtime_config().elect(false);
        let (raft, shared) = (raft.clone(), self.suspended_until.clone());
        tokio::spawn(async move {
            tokio::time::sleep_until(end).await;
            let mut until = lock(&shared);
            // Only the timer of the latest suspension lifts it.
            if until.is_some_and(|u| u <= Instant::now()) {
                *until = None;
                raft.runtime_config().elect(true);
            }
        });
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Service {
    /// Hands leadership to voter `name`.
    pub async fn transfer_leader(
        &self,
        caller: &Caller,
        name: &str,
    ) -> Result<Status, ServiceError> {
        caller.allow(Permission::Admin, Scope::Cluster)?;
        let metrics = self.metrics();
        if let Some(leader) = self.forward_target(&metrics, caller)? {
            return leader.transfer_leader(name).await;
        }
        let target = node_id(name);
        let membership = metrics.membership_config.membership();
        let member = member_named(membership, name)?;
        if !membership.voter_ids().any(|v| v == target) {
            return Err(ServiceError::invalid(format!(
                "node {name} is a learner; only a voter can lead"
            )));
        }
        if target != self.inner.id {
            self.hand_over(target, &member).await?;
            tracing::info!(user = caller.name(), to = name, "leadership transferred");
        }
        Ok(self.local_status())
    }

    /// Hands leadership to the most caught-up voter other than this node; returns it.
    pub(super) async fn hand_over_to_successor(
        &self,
        metrics: &RaftMetrics,
    ) -> Result<Member, ServiceError> {
        let membership = metrics.membership_config.membership();
        let progress = metrics.replication.clone().unwrap_or_default();
        let successor = membership
            .voter_ids()
            .filter(|v| *v != self.inner.id)
            .max_by_key(|v| progress.get(v).cloned().flatten().map(|l| l.index))
            .and_then(|v| membership.get_node(&v).cloned())
            .ok_or_else(|| ServiceError::internal("no other voter to hand leadership to"))?;
        self.hand_over(node_id(&successor.name), &successor).await?;
        Ok(successor)
    }

    /// Runs the leader half of the protocol (see the module docs) with client traffic paused,
    /// and resumes whatever the outcome.
    async fn hand_over(&self, target: NodeId, member: &Member) -> Result<(), ServiceError> {
        let handover = &self.inner.handover;
        let _one_at_a_time = handover.one_at_a_time.lock().await;
        handover.paused.send_replace(true);
        let result = self.hand_over_paused(target, member).await;
        let raft = &self.inner.raft;
        raft.runtime_config().heartbeat(true);
        raft.runtime_config().elect(true);
        handover.paused.send_replace(false);
        result
    }

    async fn hand_over_paused(&self, target: NodeId, member: &Member) -> Result<(), ServiceError> {
        let raft = &self.inner.raft;
        let lease = Duration::from_millis(raft.config().election_timeout_max);

        // 1. The target must hold every entry.
        self.wait_caught_up(target, member).await?;

        // 2 and 3. Nobody else campaigns while the leases run out.
        let others = self.other_voters(target);
        self.suspend_elections(&others, (lease * 4).as_millis() as u64, lease)
            .await?;
        raft.runtime_config().elect(false);
        raft.runtime_config().heartbeat(false);

        // 4. Followers refuse to vote while their leader lease runs.
        tokio::time::sleep(lease + lease / 4).await;

        // 5. The target campaigns and wins.
        let mut request = tonic::Request::new(proto::RaftMessage {
            payload: Vec::new(),
        });
        request.set_timeout(lease);
        self.inner
            .forward
            .raft_client(&member.addr)?
            .campaign(request)
            .await
            .map_err(|s| {
                unavailable(format!(
                    "node {} cannot campaign: {}",
                    member.name,
                    s.message()
                ))
            })?;
        let mut rx = raft.metrics();
        let moved = timeout(
            lease * 3,
            rx.wait_until(|m: &RaftMetrics| m.current_leader == Some(target)),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        self.suspend_elections(&others, 0, lease).await?;
        if !moved {
            return Err(unavailable(format!(
                "leadership did not move to {} in time",
                member.name
            )));
        }
        Ok(())
    }

    /// Waits until `target` has matched the leader's whole log.
    async fn wait_caught_up(&self, target: NodeId, member: &Member) -> Result<(), ServiceError> {
        let mut rx = self.inner.raft.metrics();
        timeout(
            self.inner.limits.request_timeout,
            rx.wait_until(|m: &RaftMetrics| {
                let matched = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&target).cloned().flatten());
                matched.map(|l| l.index) == m.last_log_index
            }),
        )
        .await
        .map_err(|_| {
            unavailable(format!(
                "node {} did not catch up; leadership stays here",
                member.name
            ))
        })?
        .map(|_| ())
        .map_err(|_| unavailable("raft stopped".into()))
    }

    /// The voters other than this node and `target`.
    fn other_voters(&self, target: NodeId) -> Vec<Member> {
        let metrics = self.metrics();
        let membership = metrics.membership_config.membership();
        membership
            .voter_ids()
            .filter(|v| *v != target && *v != self.inner.id)
            .filter_map(|v| membership.get_node(&v).cloned())
            .collect()
    }

    /// Asks each of `voters` to suspend its elections for `ms` (0: lift). Best effort: an
    /// unreachable voter cannot campaign either.
    async fn suspend_elections(
        &self,
        voters: &[Member],
        ms: u64,
        deadline: Duration,
    ) -> Result<(), ServiceError> {
        for voter in voters {
            let mut request = tonic::Request::new(proto::RaftMessage {
                payload: bincode::serialize(&ms).unwrap_or_default(),
            });
            request.set_timeout(deadline);
            let mut client = self.inner.forward.raft_client(&voter.addr)?;
            let _ = client.suspend_elections(request).await;
        }
        Ok(())
    }
}

fn unavailable(why: String) -> ServiceError {
    ServiceError::unavailable(why, None)
}
