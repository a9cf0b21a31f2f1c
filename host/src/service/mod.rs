//! The service layer: every client operation, called by both the gRPC `Client` service and the
//! HTTP gateway, so neither holds logic of its own.
//!
//! - Writes go through the Raft log, batched with other concurrent writes into one entry
//!   (`batcher`). A follower forwards them to the leader over the leader's
//!   `Client` gRPC service and relays the answer (at most [`MAX_HOPS`] hops).
//! - Reads are linearizable by default: the leader confirms its leadership with a quorum
//!   (openraft's read index; concurrent reads share one confirmation, `read_index`), waits until
//!   it has applied up to that index, then reads locally. A
//!   follower forwards linearizable reads to the leader. [`Consistency::Stale`] reads this node's
//!   state as it is.
//! - Membership changes run on the leader: add as learner, wait for it to catch up (bounded),
//!   then promote to voter.
//!
//! The key-value operations speak guest-kv's JSON; other guests use [`Service::apply`] and
//! [`Service::query`] with their own bytes.

mod batcher;
mod error;
mod pacing;
mod read_index;
mod status;

pub use error::ServiceError;
pub use status::{MemberStatus, StateHash, Status};

use crate::grpc::proto::{self, client_client::ClientClient};
use crate::network::{PeerPool, MAX_GRPC_MESSAGE_BYTES};
use crate::store::StateMachine;
use crate::types::{
    node_id, validate_node_name, Member, ModuleRecord, NodeId, Raft, RaftMetrics, Request,
    TypeConfig,
};
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, ForwardToLeader, LinearizableReadError, RaftError};
use openraft::ChangeMembers;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::timeout;
use tonic::transport::Channel;

/// How many times a request may be forwarded between nodes before giving up (a leader change
/// in flight can take one extra hop).
pub const MAX_HOPS: u32 = 3;
/// gRPC metadata key carrying the hop count of a forwarded request.
pub const HOPS_HEADER: &str = "x-raftwasm-hops";

/// Largest guest module an upgrade accepts.
pub const MAX_MODULE_BYTES: usize = 32 * 1024 * 1024;

/// What an accepted (or, on a dry run, validated) guest module upgrade reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleUpgrade {
    /// SHA-256 (hex) of the new module.
    pub hash: String,
    pub size: u64,
    /// The log index from which every node runs it (0 on a dry run).
    pub log_index: u64,
    /// True when only validated, nothing logged.
    pub dry_run: bool,
}

/// Logs the node's `--fsm` module as a cluster's first module entry (a seed), so every node that
/// ever replays the log runs the same module from the start, whatever its own `--fsm` (see
/// [`crate::store::state_machine`]). Called by the bootstrap node right after initializing, and
/// by a leader before it proposes commands into a log that has no module entry yet (the
/// bootstrap node may have died in between). A seed after another module entry is ignored when
/// applied, so racing seeds are harmless. Retries for up to `retry_for` while the node is not
/// (yet) leader. Nothing to do on the native baseline.
pub async fn seed_module(
    raft: &Raft,
    sm: &StateMachine,
    retry_for: Duration,
) -> Result<(), String> {
    let bytes = sm.active_module_bytes();
    if bytes.is_empty() {
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + retry_for;
    loop {
        let write = raft.client_write(Request::Module {
            bytes: bytes.clone(),
            seed: true,
        });
        match write.await {
            Ok(_) => return Ok(()),
            // A fresh one-node cluster elects itself within an election timeout.
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "seed module entry not accepted yet; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(format!("logging the seed module failed: {e}")),
        }
    }
}

/// Default limits (all configurable on the command line).
pub const DEFAULT_MAX_KEY_BYTES: usize = 4 * 1024;
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1024 * 1024;
pub const DEFAULT_MAX_COMMAND_BYTES: usize = 4 * 1024 * 1024;
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long AddNode waits for a new node to answer before refusing it.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Size and time limits of the service.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    /// Largest `Apply` command or `Query` request.
    pub max_command_bytes: usize,
    /// How long a write may wait for commit, or a read for its read index.
    pub request_timeout: Duration,
    /// How long AddNode waits for a new learner to catch up.
    pub catch_up_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: DEFAULT_MAX_KEY_BYTES,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            max_command_bytes: DEFAULT_MAX_COMMAND_BYTES,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            catch_up_timeout: DEFAULT_CATCH_UP_TIMEOUT,
        }
    }
}

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

/// Result of a put.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResult {
    pub prev: Option<String>,
    pub log_index: u64,
}

/// Result of a delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteResult {
    pub deleted: bool,
    pub prev: Option<String>,
    pub log_index: u64,
}

/// What a scan asks for (guest-kv's `scan` query).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanParams {
    pub prefix: Option<String>,
    pub start: Option<String>,
    pub end: Option<String>,
    pub limit: Option<usize>,
}

/// One page of a scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanPage {
    pub items: Vec<KeyValue>,
    pub more: bool,
}

/// A snapshot built on demand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// Last log index the snapshot covers.
    pub index: u64,
    pub term: u64,
    /// Snapshot file size in bytes.
    pub size: u64,
}

/// A key and its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

struct Inner {
    name: String,
    id: NodeId,
    addr: String,
    raft: Raft,
    batcher: batcher::Batcher,
    read_index: read_index::ReadIndex,
    /// One leadership transfer at a time.
    transfer: tokio::sync::Mutex<()>,
    /// True while this leader hands leadership over: client writes and linearizable reads wait,
    /// because their replication traffic would renew the followers' leader leases.
    paused: tokio::sync::watch::Sender<bool>,
    sm: StateMachine,
    peers: PeerPool,
    limits: Limits,
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

fn parse_guest_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ServiceError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ServiceError::internal(format!(
            "the guest's answer is not guest-kv JSON ({e}); is this node running guest-kv?"
        ))
    })
}

impl Service {
    pub fn new(
        name: String,
        addr: String,
        raft: Raft,
        sm: StateMachine,
        peers: PeerPool,
        limits: Limits,
    ) -> Self {
        Service {
            inner: Arc::new(Inner {
                id: node_id(&name),
                name,
                addr,
                batcher: batcher::Batcher::start(raft.clone(), sm.clone()),
                read_index: read_index::ReadIndex::start(raft.clone()),
                transfer: tokio::sync::Mutex::new(()),
                paused: tokio::sync::watch::channel(false).0,
                raft,
                sm,
                peers,
                limits,
            }),
        }
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

    fn check_key(&self, key: &str) -> Result<(), ServiceError> {
        if key.is_empty() {
            return Err(ServiceError::invalid("key must not be empty"));
        }
        Self::check_size("key", key.len(), self.inner.limits.max_key_bytes)
    }

    /// The leader's client, for forwarding a request that arrived with `hops` hops so far.
    fn leader_client(
        &self,
        leader: Option<&Member>,
        hops: u32,
    ) -> Result<ClientClient<Channel>, ServiceError> {
        let Some(leader) = leader else {
            return Err(ServiceError::unavailable(
                "no leader is known: the cluster is electing one or has no quorum",
                None,
            ));
        };
        if hops >= MAX_HOPS || leader.addr == self.inner.addr {
            return Err(ServiceError::unavailable(
                format!("request forwarded {hops} times without reaching a leader"),
                Some((leader.name.clone(), leader.addr.clone())),
            ));
        }
        let channel = self
            .inner
            .peers
            .channel(&leader.addr)
            .map_err(ServiceError::internal)?;
        Ok(ClientClient::new(channel)
            .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES))
    }

    /// When this node is not the leader: a client for the leader (and its record), to forward a
    /// request that arrived with `hops` hops so far. `None` when this node leads.
    fn forward_target(
        &self,
        metrics: &crate::types::RaftMetrics,
        hops: u32,
    ) -> Result<Option<(ClientClient<Channel>, Member)>, ServiceError> {
        if metrics.current_leader == Some(self.inner.id) {
            return Ok(None);
        }
        let leader = self.leader();
        let client = self.leader_client(leader.as_ref(), hops)?;
        Ok(Some((client, leader.unwrap_or_default())))
    }

    fn forwarded<T>(&self, message: T, hops: u32) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.inner.limits.request_timeout + Duration::from_secs(1));
        if let Ok(v) = (hops + 1).to_string().parse() {
            request.metadata_mut().insert(HOPS_HEADER, v);
        }
        request
    }

    fn forward_error(leader: &Member) -> impl Fn(tonic::Status) -> ServiceError + '_ {
        move |status| match ServiceError::from_status(&status) {
            ServiceError::Unavailable {
                message,
                leader_id: None,
                ..
            } => ServiceError::unavailable(
                format!("forwarding to leader {leader} failed: {message}"),
                Some((leader.name.clone(), leader.addr.clone())),
            ),
            other => other,
        }
    }

    /// Proposes `command` to the log and returns the guest's response once it is applied.
    pub async fn apply(&self, command: Vec<u8>, hops: u32) -> Result<Applied, ServiceError> {
        Self::check_size(
            "command",
            command.len(),
            self.inner.limits.max_command_bytes,
        )?;
        let write = self.inner.batcher.propose(command.clone());
        let result = timeout(self.inner.limits.request_timeout, write)
            .await
            .map_err(|_| self.timed_out("write was not committed"))?
            .ok_or_else(|| ServiceError::unavailable("the node is shutting down", None))?;
        match result {
            Ok((log_index, response)) => Ok(Applied {
                response: response?,
                log_index,
            }),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(fwd))) => {
                let leader = fwd.leader_node.clone();
                let mut client = self.leader_client(leader.as_ref(), hops)?;
                let leader = leader.unwrap_or_default();
                let reply = client
                    .apply(self.forwarded(proto::ApplyRequest { command }, hops))
                    .await
                    .map_err(Self::forward_error(&leader))?
                    .into_inner();
                Ok(Applied {
                    response: reply.response,
                    log_index: reply.log_index,
                })
            }
            Err(e) => Err(write_error(e)),
        }
    }

    /// Waits (bounded) while a leadership transfer is under way.
    async fn wait_unpaused(&self) {
        let mut rx = self.inner.paused.subscribe();
        let _ = timeout(self.inner.limits.request_timeout, rx.wait_for(|p| !*p)).await;
    }

    fn timed_out(&self, what: &str) -> ServiceError {
        let leader = self.leader();
        ServiceError::unavailable(
            format!(
                "{what} within {:?}: no quorum reachable (the outcome of a write is unknown)",
                self.inner.limits.request_timeout
            ),
            leader.map(|m| (m.name, m.addr)),
        )
    }

    /// The current leader's member record, if known.
    fn leader(&self) -> Option<Member> {
        let metrics = self.inner.raft.metrics().borrow_watched().clone();
        let leader = metrics.current_leader?;
        metrics
            .membership_config
            .membership()
            .get_node(&leader)
            .cloned()
    }

    /// Answers a read-only `request` with the given consistency.
    pub async fn query(
        &self,
        request: Vec<u8>,
        consistency: Consistency,
        hops: u32,
    ) -> Result<Vec<u8>, ServiceError> {
        Self::check_size("query", request.len(), self.inner.limits.max_command_bytes)?;
        if consistency == Consistency::Linearizable {
            self.wait_unpaused().await;
            let check = timeout(
                self.inner.limits.request_timeout,
                self.inner.read_index.confirm(),
            )
            .await
            .map_err(|_| self.timed_out("leadership was not confirmed"))?
            .ok_or_else(|| ServiceError::unavailable("the node is shutting down", None))?;
            match check {
                Ok(_) => {}
                Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(fwd))) => {
                    return self.forward_query(fwd, request, hops).await;
                }
                Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(e))) => {
                    return Err(ServiceError::unavailable(
                        format!("no quorum for a linearizable read: {e}"),
                        None,
                    ))
                }
                Err(RaftError::Fatal(e)) => return Err(ServiceError::internal(e)),
            }
        }
        let outcome = self
            .inner
            .sm
            .query(&request)
            .map_err(ServiceError::internal)?;
        Ok(outcome.result?)
    }

    async fn forward_query(
        &self,
        fwd: ForwardToLeader<TypeConfig>,
        request: Vec<u8>,
        hops: u32,
    ) -> Result<Vec<u8>, ServiceError> {
        let leader = fwd.leader_node.clone();
        let mut client = self.leader_client(leader.as_ref(), hops)?;
        let leader = leader.unwrap_or_default();
        let reply = client
            .query(self.forwarded(
                proto::QueryRequest {
                    request,
                    consistency: proto::Consistency::Linearizable.into(),
                },
                hops,
            ))
            .await
            .map_err(Self::forward_error(&leader))?;
        Ok(reply.into_inner().response)
    }

    /// guest-kv: the value of `key` ([`ServiceError::NotFound`] if it is not set).
    pub async fn get(
        &self,
        key: &str,
        consistency: Consistency,
        hops: u32,
    ) -> Result<String, ServiceError> {
        self.check_key(key)?;
        let q = json!({"op": "get", "key": key}).to_string().into_bytes();
        #[derive(Deserialize)]
        struct Get {
            value: Option<String>,
        }
        let got: Get = parse_guest_json(&self.query(q, consistency, hops).await?)?;
        got.value
            .ok_or_else(|| ServiceError::not_found(format!("key {key:?} not found")))
    }

    /// guest-kv: sets `key` to `value`.
    pub async fn put(&self, key: &str, value: &str, hops: u32) -> Result<PutResult, ServiceError> {
        self.check_key(key)?;
        Self::check_size("value", value.len(), self.inner.limits.max_value_bytes)?;
        let cmd = json!({"op": "put", "key": key, "value": value})
            .to_string()
            .into_bytes();
        let applied = self.apply(cmd, hops).await?;
        #[derive(Deserialize)]
        struct Put {
            prev: Option<String>,
        }
        let put: Put = parse_guest_json(&applied.response)?;
        Ok(PutResult {
            prev: put.prev,
            log_index: applied.log_index,
        })
    }

    /// guest-kv: removes `key`.
    pub async fn delete(&self, key: &str, hops: u32) -> Result<DeleteResult, ServiceError> {
        self.check_key(key)?;
        let cmd = json!({"op": "delete", "key": key}).to_string().into_bytes();
        let applied = self.apply(cmd, hops).await?;
        #[derive(Deserialize)]
        struct Delete {
            deleted: bool,
            prev: Option<String>,
        }
        let d: Delete = parse_guest_json(&applied.response)?;
        Ok(DeleteResult {
            deleted: d.deleted,
            prev: d.prev,
            log_index: applied.log_index,
        })
    }

    /// guest-kv: keys in order, by prefix and range.
    pub async fn scan(
        &self,
        params: &ScanParams,
        consistency: Consistency,
        hops: u32,
    ) -> Result<ScanPage, ServiceError> {
        let q = json!({
            "op": "scan",
            "prefix": params.prefix,
            "start": params.start,
            "end": params.end,
            "limit": params.limit,
        })
        .to_string()
        .into_bytes();
        parse_guest_json(&self.query(q, consistency, hops).await?)
    }

    /// Adds node `name` at `addr`: as a learner, waits for it to catch up, then (unless
    /// `learner_only`) promotes it to voter. Re-adding a member with the same address is a no-op.
    pub async fn add_node(
        &self,
        name: &str,
        addr: &str,
        learner_only: bool,
        hops: u32,
    ) -> Result<Status, ServiceError> {
        validate_node_name(name).map_err(ServiceError::invalid)?;
        if addr.is_empty() || !addr.contains(':') {
            return Err(ServiceError::invalid(format!(
                "address {addr:?} must be host:port"
            )));
        }
        let metrics = self.inner.raft.metrics().borrow_watched().clone();
        if let Some((mut client, leader)) = self.forward_target(&metrics, hops)? {
            let status = client
                .add_node(self.forwarded(
                    proto::AddNodeRequest {
                        id: name.to_string(),
                        address: addr.to_string(),
                        learner: learner_only,
                    },
                    hops,
                ))
                .await
                .map_err(Self::forward_error(&leader))?;
            return Ok(Status::from(status.into_inner()));
        }
        let id = node_id(name);
        let membership = metrics.membership_config.membership();
        if let Some(existing) = membership.get_node(&id) {
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
            if is_voter || learner_only {
                return Ok(self.status());
            }
        } else if let Some((_, other)) = membership.nodes().find(|(_, n)| n.addr == addr) {
            return Err(ServiceError::Conflict {
                message: format!("address {addr} already belongs to node {}", other.name),
            });
        }
        self.probe(name, addr).await?;

        let member = Member {
            name: name.to_string(),
            addr: addr.to_string(),
        };
        let raft = &self.inner.raft;
        match timeout(
            self.inner.limits.catch_up_timeout,
            raft.add_learner(id, member, true),
        )
        .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(write_error(e)),
            Err(_) => {
                // Leave no half-added learner behind.
                let _ = timeout(
                    self.inner.limits.request_timeout,
                    raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false),
                )
                .await;
                return Err(ServiceError::unavailable(
                    format!(
                        "node {name} at {addr} did not catch up within {:?}; it was not added",
                        self.inner.limits.catch_up_timeout
                    ),
                    None,
                ));
            }
        }
        if !learner_only {
            timeout(
                self.inner.limits.request_timeout,
                raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false),
            )
            .await
            .map_err(|_| self.timed_out("promotion to voter was not committed"))?
            .map_err(write_error)?;
        }
        Ok(self.status())
    }

    /// Checks that a node answers at `addr` and calls itself `name`.
    async fn probe(&self, name: &str, addr: &str) -> Result<(), ServiceError> {
        let channel = self
            .inner
            .peers
            .channel(addr)
            .map_err(ServiceError::invalid)?;
        let mut client = ClientClient::new(channel);
        let mut request = tonic::Request::new(proto::MonitorRequest { state_hash: false });
        request.set_timeout(PROBE_TIMEOUT);
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
    pub async fn remove_node(&self, name: &str, hops: u32) -> Result<Status, ServiceError> {
        let metrics = self.inner.raft.metrics().borrow_watched().clone();
        if let Some((client, leader)) = self.forward_target(&metrics, hops)? {
            return self.forward_remove(client, &leader, name, hops).await;
        }
        let id = node_id(name);
        let membership = metrics.membership_config.membership();
        member_named(membership, name)?;
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        if id == self.inner.id && voters.len() > 1 {
            // Removing the leader: leadership moves first, to the most caught-up other voter,
            // and the new leader removes this node.
            let progress = metrics.replication.clone().unwrap_or_default();
            let successor = voters
                .iter()
                .filter(|v| **v != id)
                .max_by_key(|v| progress.get(v).cloned().flatten().map(|l| l.index))
                .and_then(|v| membership.get_node(v).cloned())
                .ok_or_else(|| ServiceError::internal("no other voter to hand leadership to"))?;
            self.hand_over(node_id(&successor.name), &successor).await?;
            let client = self.leader_client(Some(&successor), hops)?;
            return self.forward_remove(client, &successor, name, hops).await;
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
        timeout(
            self.inner.limits.request_timeout,
            self.inner.raft.change_membership(change, false),
        )
        .await
        .map_err(|_| self.timed_out("membership change was not committed"))?
        .map_err(write_error)?;
        Ok(self.status())
    }

    async fn forward_remove(
        &self,
        mut client: ClientClient<Channel>,
        leader: &Member,
        name: &str,
        hops: u32,
    ) -> Result<Status, ServiceError> {
        let request = proto::RemoveNodeRequest {
            id: name.to_string(),
        };
        let status = client
            .remove_node(self.forwarded(request, hops))
            .await
            .map_err(Self::forward_error(leader))?;
        Ok(Status::from(status.into_inner()))
    }

    /// Hands leadership to voter `name`.
    pub async fn transfer_leader(&self, name: &str, hops: u32) -> Result<Status, ServiceError> {
        let metrics = self.inner.raft.metrics().borrow_watched().clone();
        if let Some((mut client, leader)) = self.forward_target(&metrics, hops)? {
            let status = client
                .transfer_leader(self.forwarded(
                    proto::TransferLeaderRequest {
                        id: name.to_string(),
                    },
                    hops,
                ))
                .await
                .map_err(Self::forward_error(&leader))?;
            return Ok(Status::from(status.into_inner()));
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
        }
        Ok(self.status())
    }

    /// Leadership transfer from openraft's primitives (its own `transfer_leader` is not used):
    /// wait until the target has the whole log, stop client traffic and heartbeats, suspend
    /// elections on the other voters, let every follower's leader lease run out, then tell the
    /// target to campaign. It wins: its log is complete and nobody else is campaigning.
    async fn hand_over(&self, target: NodeId, member: &Member) -> Result<(), ServiceError> {
        let _one_at_a_time = self.inner.transfer.lock().await;
        self.inner.paused.send_replace(true);
        let result = self.hand_over_paused(target, member).await;
        let raft = &self.inner.raft;
        raft.runtime_config().heartbeat(true);
        raft.runtime_config().elect(true);
        self.inner.paused.send_replace(false);
        result
    }

    async fn hand_over_paused(&self, target: NodeId, member: &Member) -> Result<(), ServiceError> {
        use crate::grpc::proto::raft_client::RaftClient;
        let raft = &self.inner.raft;
        let lease = Duration::from_millis(raft.config().election_timeout_max);
        let unavailable = |why: String| ServiceError::unavailable(why, None);

        // 1. The target must hold every entry, or it could not win (and must not).
        let mut rx = raft.metrics();
        timeout(
            self.inner.limits.request_timeout,
            rx.wait_until(|m: &RaftMetrics| {
                let last = m.last_log_index;
                let matched = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&target).cloned().flatten());
                matched.map(|l| l.index) == last
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
        .map_err(|_| unavailable("raft stopped".into()))?;

        // 2. Nobody else campaigns while the leases run out; the suspension lifts by itself.
        let metrics = raft.metrics().borrow_watched().clone();
        let membership = metrics.membership_config.membership();
        let suspend_ms = (lease * 4).as_millis() as u64;
        let others: Vec<Member> = membership
            .voter_ids()
            .filter(|v| *v != target && *v != self.inner.id)
            .filter_map(|v| membership.get_node(&v).cloned())
            .collect();
        let raft_client = |addr: &str| -> Result<RaftClient<Channel>, ServiceError> {
            Ok(RaftClient::new(
                self.inner
                    .peers
                    .channel(addr)
                    .map_err(ServiceError::internal)?,
            ))
        };
        let message = |value: &u64| proto::RaftMessage {
            payload: bincode::serialize(value).unwrap_or_default(),
        };
        for other in &others {
            let mut request = tonic::Request::new(message(&suspend_ms));
            request.set_timeout(lease);
            // Best effort: an unreachable voter cannot campaign either.
            let _ = raft_client(&other.addr)?.suspend_elections(request).await;
        }
        raft.runtime_config().elect(false);
        raft.runtime_config().heartbeat(false);

        // 3. Followers refuse to vote while their leader lease (election_timeout_max) runs.
        tokio::time::sleep(lease + lease / 4).await;

        // 4. The target campaigns and wins.
        let mut request = tonic::Request::new(proto::RaftMessage {
            payload: Vec::new(),
        });
        request.set_timeout(lease);
        raft_client(&member.addr)?
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

        for other in &others {
            let mut request = tonic::Request::new(message(&0));
            request.set_timeout(lease);
            let _ = raft_client(&other.addr)?.suspend_elections(request).await;
        }
        if !moved {
            return Err(unavailable(format!(
                "leadership did not move to {} in time",
                member.name
            )));
        }
        Ok(())
    }

    /// This node's view, with the hash of its full guest state.
    pub fn status_with_state_hash(&self) -> Result<Status, ServiceError> {
        let (applied_index, sha256) = self.inner.sm.state_hash().map_err(ServiceError::internal)?;
        let mut status = self.status();
        status.state_hash = Some(StateHash {
            applied_index,
            sha256,
        });
        Ok(status)
    }

    /// Builds a snapshot on this node now and waits until it is in place (openraft then purges
    /// the log behind it, keeping the configured tail).
    pub async fn snapshot(&self) -> Result<SnapshotInfo, ServiceError> {
        let raft = &self.inner.raft;
        let target = raft
            .metrics()
            .borrow_watched()
            .last_applied
            .map(|l| l.index);
        raft.trigger()
            .snapshot()
            .await
            .map_err(|e| ServiceError::internal(format!("cannot trigger a snapshot: {e}")))?;
        let mut rx = raft.metrics();
        let wait = async {
            loop {
                let snap = rx.borrow_watched().snapshot;
                if snap.map(|l| l.index) >= target {
                    return snap;
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        };
        let snap = timeout(self.inner.limits.catch_up_timeout, wait)
            .await
            .map_err(|_| ServiceError::internal("snapshot did not complete in time"))?;
        Ok(SnapshotInfo {
            index: snap.map(|l| l.index).unwrap_or(0),
            term: snap.map(|l| l.leader_id.term).unwrap_or(0),
            size: self.inner.sm.snapshot_file_size().unwrap_or(0),
        })
    }

    /// Replaces the guest module through the log, so every node switches at the same index
    /// (see [`crate::store::state_machine`]). The leader first validates the module: it must
    /// compile, be a component exporting the state machine world, and restore the current state
    /// in a dry run; a module that fails gets an error and nothing is logged. `dry_run` stops
    /// after that validation. Followers forward to the leader.
    pub async fn upgrade_fsm(
        &self,
        module: Vec<u8>,
        dry_run: bool,
        hops: u32,
    ) -> Result<ModuleUpgrade, ServiceError> {
        Self::check_size("module", module.len(), MAX_MODULE_BYTES)?;
        let metrics = self.inner.raft.metrics().borrow_watched().clone();
        if let Some((mut client, leader)) = self.forward_target(&metrics, hops)? {
            let reply = client
                .upgrade_fsm(self.forwarded(proto::UpgradeFsmRequest { module, dry_run }, hops))
                .await
                .map_err(Self::forward_error(&leader))?
                .into_inner();
            return Ok(ModuleUpgrade {
                hash: reply.hash,
                size: reply.size,
                log_index: reply.log_index,
                dry_run: reply.dry_run,
            });
        }
        // Compiling and the dry-run restore can take a while: keep them off the async workers.
        let sm = self.inner.sm.clone();
        let bytes = module.clone();
        let checked = tokio::task::spawn_blocking(move || sm.check_upgrade(&bytes))
            .await
            .map_err(ServiceError::internal)?
            .map_err(|reason| ServiceError::invalid(format!("module rejected: {reason}")))?;
        if dry_run {
            return Ok(ModuleUpgrade {
                hash: checked.hash,
                size: checked.size,
                log_index: 0,
                dry_run: true,
            });
        }
        let write = self.inner.raft.client_write(Request::Module {
            bytes: module,
            seed: false,
        });
        let written = timeout(self.inner.limits.request_timeout, write)
            .await
            .map_err(|_| self.timed_out("module upgrade was not committed"))?
            .map_err(write_error)?;
        match written.data.results.into_iter().next() {
            Some(Ok(response)) => {
                let rec: ModuleRecord = serde_json::from_slice(&response).map_err(|e| {
                    ServiceError::internal(format!("bad module upgrade response: {e}"))
                })?;
                Ok(ModuleUpgrade {
                    hash: rec.hash,
                    size: rec.size,
                    log_index: written.log_id.index,
                    dry_run: false,
                })
            }
            // Refused when applied (the same on every node); the old module stays active.
            Some(Err(error)) => Err(ServiceError::Guest { error }),
            None => Err(ServiceError::internal("module upgrade produced no result")),
        }
    }

    /// This node's view of the cluster.
    pub fn status(&self) -> Status {
        let metrics = self.inner.raft.metrics().borrow_watched().clone();
        Status::new(
            &self.inner.name,
            &self.inner.addr,
            &metrics,
            &self.inner.sm.status(),
        )
    }

    /// A stream of [`Status`] values, one each time the node's view changes.
    pub fn watch(&self) -> impl futures::Stream<Item = Status> + Send + 'static {
        let service = self.clone();
        let rx = self.inner.raft.metrics();
        futures::stream::unfold((rx, None::<Status>), move |(mut rx, last)| {
            let service = service.clone();
            async move {
                loop {
                    let status = service.status();
                    if last.as_ref() != Some(&status) {
                        return Some((status.clone(), (rx, Some(status))));
                    }
                    rx.changed().await.ok()?;
                }
            }
        })
    }
}

/// The member called `name`, or NotFound.
fn member_named(
    membership: &openraft::Membership<NodeId, Member>,
    name: &str,
) -> Result<Member, ServiceError> {
    match membership.get_node(&node_id(name)) {
        Some(m) if m.name == name => Ok(m.clone()),
        _ => Err(ServiceError::not_found(format!(
            "node {name} is not a member"
        ))),
    }
}

fn write_error(e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> ServiceError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ServiceError::unavailable(
            "leadership changed during the request; retry",
            f.leader_node.map(|m| (m.name, m.addr)),
        ),
        RaftError::APIError(ClientWriteError::LogEntryDiscarded(f)) => ServiceError::unavailable(
            "leadership changed before the write committed (the outcome of a write is unknown); retry",
            f.leader_node.map(|m| (m.name, m.addr)),
        ),
        RaftError::APIError(ClientWriteError::PreconditionFailed(e)) => ServiceError::Conflict {
            message: format!("precondition failed: {e}"),
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => ServiceError::Conflict {
            message: format!("membership change refused: {e}"),
        },
        RaftError::Fatal(e) => ServiceError::internal(format!("raft stopped: {e}")),
    }
}
