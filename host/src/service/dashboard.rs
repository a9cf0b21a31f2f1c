//! The dashboard's picture of the cluster (`GET /v1/dashboard`, drawn by `/ui`): each member as
//! it answers for itself (asked over its `Client` service with the caller's credentials, in
//! parallel, briefly), the leader's view of replication, whether the replicas' state hashes
//! agree, counters for rates, and the latest events this node saw. Any node can answer it: the
//! parts only the leader knows come from the leader.

use super::{Counters, Service, ServiceError, Status};
use crate::auth::{Caller, Permission, Scope};
use crate::events::Event;
use crate::proto;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How long a member may take to answer before it shows as unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_millis(800);

/// One member as the page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    pub id: String,
    pub address: String,
    pub voter: bool,
    /// Its own status (with its counters, and its state hash when asked), if it answered.
    pub status: Option<Status>,
    /// Why it did not answer.
    pub error: Option<String>,
}

/// What `GET /v1/dashboard` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    /// The node that answered.
    pub node: String,
    pub unix_ms: u64,
    /// Its own status.
    pub local: Status,
    /// The leader's status (replication progress of every member), if it answered.
    pub leader: Option<Status>,
    pub members: Vec<MemberView>,
    /// With state hashes: whether the members at the same applied index report the same hash
    /// (`None` when fewer than two could be compared).
    pub hashes_agree: Option<bool>,
    /// Commands applied and apply time on the answering node (every node applies every
    /// command); queries answered summed over the members that answered.
    pub counters: Counters,
    /// The latest cluster events the answering node saw, oldest first.
    pub events: Vec<Event>,
}

impl Service {
    /// `status` with this node's guest call counters.
    pub fn with_counters(&self, mut status: Status) -> Status {
        let (commands_applied, queries_answered, apply) = self.inner.metrics.guest().totals();
        status.counters = Some(Counters {
            commands_applied,
            queries_answered,
            apply_micros: apply.as_micros() as u64,
        });
        status
    }

    /// The dashboard's view of the cluster; `state_hash` also compares the replicas' states
    /// (one guest `snapshot()` call on each member). Needs `read`.
    pub async fn dashboard(
        &self,
        caller: &Caller,
        state_hash: bool,
    ) -> Result<ClusterView, ServiceError> {
        caller.allow(Permission::Read, Scope::Cluster)?;
        let local = match state_hash {
            true => self.status_with_state_hash(caller).await?,
            false => self.local_status(),
        };
        let local = self.with_counters(local);
        let here = &local;
        let probes = local.members.iter().map(|m| async move {
            let answer = match m.id == here.id {
                true => Ok(here.clone()),
                false => self.ask_member(caller, &m.address, state_hash).await,
            };
            let (status, error) = match answer {
                Ok(status) => (Some(status), None),
                Err(e) => (None, Some(e.to_string())),
            };
            MemberView {
                id: m.id.clone(),
                address: m.address.clone(),
                voter: m.voter,
                status,
                error,
            }
        });
        let members = futures::future::join_all(probes).await;
        let statuses = || members.iter().filter_map(|m| m.status.as_ref());
        let leader = statuses()
            .find(|s| s.state == "Leader" && s.leader_id.as_deref() == Some(s.id.as_str()))
            .cloned();
        let queries_answered = statuses()
            .filter_map(|s| s.counters)
            .map(|c| c.queries_answered)
            .sum();
        let counters = Counters {
            queries_answered,
            ..local.counters.unwrap_or_default()
        };
        let hashes_agree = state_hash.then(|| agree(statuses())).flatten();
        Ok(ClusterView {
            node: self.inner.name.clone(),
            unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            events: self.inner.events.recent(),
            local,
            leader,
            members,
            hashes_agree,
            counters,
        })
    }

    /// Another member's status, asked with the caller's credentials.
    async fn ask_member(
        &self,
        caller: &Caller,
        addr: &str,
        state_hash: bool,
    ) -> Result<Status, ServiceError> {
        let mut client = self.inner.forward.client(addr)?;
        let mut request = tonic::Request::new(proto::MonitorRequest {
            state_hash,
            counters: true,
        });
        request.set_timeout(PROBE_TIMEOUT);
        caller.forwarding(request.metadata_mut());
        let call = tokio::time::timeout(PROBE_TIMEOUT, client.monitor(request));
        match call.await {
            Ok(Ok(reply)) => Ok(reply.into_inner().into()),
            Ok(Err(status)) => Err(ServiceError::from_status(&status)),
            Err(_) => Err(ServiceError::unavailable(
                format!("no answer within {PROBE_TIMEOUT:?}"),
                None,
            )),
        }
    }
}

/// Whether the state hashes of members at the same applied index are equal: `None` when no two
/// members reported a hash at one index (they are still catching up with each other).
fn agree<'a>(statuses: impl Iterator<Item = &'a Status>) -> Option<bool> {
    let mut by_index = std::collections::BTreeMap::<u64, Vec<&str>>::new();
    for hash in statuses.filter_map(|s| s.state_hash.as_ref()) {
        by_index
            .entry(hash.applied_index)
            .or_default()
            .push(&hash.sha256);
    }
    let comparable: Vec<&Vec<&str>> = by_index.values().filter(|h| h.len() > 1).collect();
    if comparable.is_empty() {
        return None;
    }
    Some(comparable.iter().all(|h| h.iter().all(|x| *x == h[0])))
}
