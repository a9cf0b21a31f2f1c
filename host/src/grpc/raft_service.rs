//! The node-to-node Raft service (append entries, vote, install snapshot, and the follower half
//! of leadership transfer: `SuspendElections`, `Campaign`, see [`crate::service::transfer`]).
//! For cluster members only, and clients must use the `Client` service instead. On a TLS node
//! it admits a call only over a connection whose certificate `--peer-ca` signed and names the
//! address of the node the call speaks for (the sender of a vote, the leader of an append or a
//! snapshot; any member for the hand-over calls, which name no sender). A node that knows no
//! members yet (it has not joined) admits any node certificate.
//!
//! Requests and responses are openraft's own types, bincode-encoded in a `RaftMessage`.

use crate::config::host_of;
use crate::network::{not_member_status, SnapshotHeader};
use crate::proto::raft_server::Raft as RaftRpc;
use crate::proto::RaftMessage;
use crate::service::transfer::ElectionGate;
use crate::store::SnapshotError;
use crate::store::StateMachine;
use crate::tls::{PeerCerts, PeerRefused};
use crate::types::{NodeId, Snapshot, SnapshotData, TypeConfig, Vote};
use openraft::async_runtime::WatchReceiver;
use openraft::error::RaftError;
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::storage::RaftStateMachine;
use rustls::pki_types::CertificateDer;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Request, Response, Status, Streaming};

/// Serves Raft RPCs into the local openraft instance. Generic over the state machine only so
/// the simulation test can run the real protocol over its own in-memory one.
#[derive(Clone)]
pub struct RaftService<SM: RaftStateMachine<TypeConfig> = StateMachine> {
    raft: openraft::Raft<TypeConfig, SM>,
    elections: ElectionGate,
    /// Verifies a received snapshot's bytes before openraft installs them.
    check_snapshot: Option<SnapshotCheck>,
    /// On a TLS node: which node certificates are admitted.
    peers: Option<PeerCerts>,
    /// A snapshot stream longer than this is refused as it arrives.
    max_snapshot_bytes: usize,
}

/// Verifies a snapshot's bytes are complete and well-formed.
pub type SnapshotCheck = fn(&[u8]) -> Result<(), SnapshotError>;

impl<SM: RaftStateMachine<TypeConfig>> std::fmt::Debug for RaftService<SM> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftService").finish_non_exhaustive()
    }
}

impl<SM: RaftStateMachine<TypeConfig>> RaftService<SM> {
    pub fn new(raft: openraft::Raft<TypeConfig, SM>) -> Self {
        RaftService {
            raft,
            elections: ElectionGate::default(),
            check_snapshot: None,
            peers: None,
            max_snapshot_bytes: usize::MAX,
        }
    }

    /// Refuses snapshot streams longer than `bytes` (before buffering more of them).
    pub fn limiting_snapshots(mut self, bytes: usize) -> Self {
        self.max_snapshot_bytes = bytes;
        self
    }

    /// Refuses received snapshots that `check` rejects (truncated or corrupt), with an error
    /// to the sender instead of handing them to openraft.
    pub fn checking_snapshots(mut self, check: SnapshotCheck) -> Self {
        self.check_snapshot = Some(check);
        self
    }

    /// Admits only calls from nodes presenting a certificate `peers` accepts.
    pub fn admitting(mut self, peers: PeerCerts) -> Self {
        self.peers = Some(peers);
        self
    }

    /// Checks that the connection's certificate speaks for node `claimed` (any member when
    /// `None`). Always admits on a node without TLS.
    fn admit(&self, certs: &Certs, claimed: Option<NodeId>) -> Result<(), Status> {
        admit(&self.raft, self.peers.as_ref(), certs, claimed)
    }
}

/// See [`RaftService::admit`].
fn admit<SM: RaftStateMachine<TypeConfig>>(
    raft: &openraft::Raft<TypeConfig, SM>,
    peers: Option<&PeerCerts>,
    certs: &Certs,
    claimed: Option<NodeId>,
) -> Result<(), Status> {
    let Some(peers) = peers else {
        return Ok(());
    };
    let members: Vec<(NodeId, String)> = {
        let metrics = raft.metrics();
        let metrics = metrics.borrow_watched();
        metrics
            .membership_config
            .membership()
            .nodes()
            .map(|(id, m)| (*id, m.addr.clone()))
            .collect()
    };
    let hosts: Vec<String> = match claimed {
        _ if members.is_empty() => Vec::new(),
        Some(id) => match members.iter().find(|(m, _)| *m == id) {
            Some((_, addr)) => vec![host_of(addr).to_string()],
            None => {
                return Err(Status::permission_denied(format!(
                    "node {id} is not a member of this cluster"
                )))
            }
        },
        None => members
            .iter()
            .map(|(_, a)| host_of(a).to_string())
            .collect(),
    };
    peers
        .admit(certs.as_deref().map(Vec::as_slice), &hosts)
        .map_err(|e| match e {
            PeerRefused::NoCertificate => Status::unauthenticated(e.to_string()),
            e => Status::permission_denied(e.to_string()),
        })
}

/// Refuses a vote from `candidate` when this node's committed configuration does not hold it:
/// a removed node that never received its removal learns of it this way (see
/// [`crate::network::Removals`]).
fn refuse_non_member<SM: RaftStateMachine<TypeConfig>>(
    raft: &openraft::Raft<TypeConfig, SM>,
    candidate: NodeId,
) -> Result<(), Status> {
    let metrics = raft.metrics();
    let metrics = metrics.borrow_watched();
    let committed = &metrics.committed_membership_config;
    let Some(log_id) = committed.log_id() else {
        return Ok(());
    };
    match committed.get_node(&candidate) {
        Some(_) => Ok(()),
        None => Err(not_member_status(candidate, log_id.index)),
    }
}

/// The certificates a connection presented (leaf first), if it is a TLS one.
type Certs = Option<Arc<Vec<CertificateDer<'static>>>>;

/// The node a vote speaks for.
fn voter(vote: &Vote) -> Option<NodeId> {
    Some(vote.leader_id().node_id)
}

fn decode<T: DeserializeOwned>(req: Request<RaftMessage>) -> Result<T, Status> {
    bincode::deserialize(&req.into_inner().payload)
        .map_err(|e| Status::invalid_argument(format!("undecodable Raft message: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Response<RaftMessage>, Status> {
    bincode::serialize(value)
        .map(|payload| Response::new(RaftMessage { payload }))
        .map_err(|e| Status::internal(format!("cannot encode Raft reply: {e}")))
}

#[tonic::async_trait]
impl<SM> RaftRpc for RaftService<SM>
where
    SM: RaftStateMachine<TypeConfig, SnapshotData = SnapshotData>,
{
    async fn append_entries(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let certs = req.peer_certs();
        let rpc: AppendEntriesRequest<TypeConfig> = decode(req)?;
        self.admit(&certs, voter(&rpc.vote))?;
        encode(&self.raft.append_entries(rpc).await)
    }

    async fn vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let certs = req.peer_certs();
        let rpc: VoteRequest<TypeConfig> = decode(req)?;
        // Before admission: on a TLS node a certificate naming no member is refused there,
        // and the candidate would not learn why.
        refuse_non_member(&self.raft, rpc.vote.leader_id().node_id)?;
        self.admit(&certs, voter(&rpc.vote))?;
        encode(&self.raft.vote(rpc).await)
    }

    type StreamAppendStream =
        Pin<Box<dyn futures::Stream<Item = Result<RaftMessage, Status>> + Send + 'static>>;

    /// A leader's stream of AppendEntries; replies go back in order on the response stream.
    /// The stream ends at the first undecodable request.
    async fn stream_append(
        &self,
        req: Request<Streaming<RaftMessage>>,
    ) -> Result<Response<Self::StreamAppendStream>, Status> {
        use futures::StreamExt;
        let (certs, raft, peers) = (req.peer_certs(), self.raft.clone(), self.peers.clone());
        // The stream ends at a message from a leader this connection may not speak for; each
        // leader is checked once.
        let mut admitted = None;
        let requests = req.into_inner().scan((), move |_, message| {
            let decoded = message.ok().and_then(|m| {
                bincode::deserialize::<AppendEntriesRequest<TypeConfig>>(&m.payload).ok()
            });
            let decoded = decoded.filter(|rpc| {
                let leader = voter(&rpc.vote);
                admitted == Some(leader)
                    || admit(&raft, peers.as_ref(), &certs, leader)
                        .map(|()| admitted = Some(leader))
                        .is_ok()
            });
            std::future::ready(decoded)
        });
        let replies = self.raft.stream_append(requests).map(|result| {
            bincode::serialize(&result)
                .map(|payload| RaftMessage { payload })
                .map_err(|e| Status::internal(format!("cannot encode Raft reply: {e}")))
        });
        Ok(Response::new(Box::pin(replies)))
    }

    async fn pre_vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let certs = req.peer_certs();
        let rpc: VoteRequest<TypeConfig> = decode(req)?;
        // Before admission: on a TLS node a certificate naming no member is refused there,
        // and the candidate would not learn why.
        refuse_non_member(&self.raft, rpc.vote.leader_id().node_id)?;
        self.admit(&certs, voter(&rpc.vote))?;
        encode(&self.raft.pre_vote(rpc).await)
    }

    /// A snapshot stream: the header (vote and metadata), then the data in chunks.
    async fn install_snapshot(
        &self,
        req: Request<Streaming<RaftMessage>>,
    ) -> Result<Response<RaftMessage>, Status> {
        let certs = req.peer_certs();
        let mut stream = req.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let header: SnapshotHeader = bincode::deserialize(&first.payload)
            .map_err(|e| Status::invalid_argument(format!("undecodable snapshot header: {e}")))?;
        self.admit(&certs, voter(&header.vote))?;
        let mut data = Vec::new();
        while let Some(chunk) = stream.message().await? {
            if data.len() + chunk.payload.len() > self.max_snapshot_bytes {
                return Err(Status::invalid_argument(format!(
                    "snapshot larger than {} bytes, the most this node's guest memory cap \
                     (--guest-memory-mib) and module size allow",
                    self.max_snapshot_bytes
                )));
            }
            data.extend_from_slice(&chunk.payload);
        }
        if let Some(check) = self.check_snapshot {
            // A stream cut short (the leader cancelled it) can end like a complete one: a
            // snapshot the state machine cannot take must not reach it, where it would be fatal.
            check(&data)
                .map_err(|e| Status::invalid_argument(format!("refusing a snapshot: {e}")))?;
        }
        let snapshot = Snapshot {
            meta: header.meta,
            snapshot: data.into(),
        };
        let result: Result<_, RaftError<TypeConfig>> = self
            .raft
            .install_full_snapshot(header.vote, snapshot)
            .await
            .map_err(RaftError::Fatal);
        encode(&result)
    }

    async fn suspend_elections(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.admit(&req.peer_certs(), None)?;
        let ms: u64 = decode(req)?;
        self.elections.suspend(&self.raft, ms);
        encode(&())
    }

    async fn campaign(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.admit(&req.peer_certs(), None)?;
        self.elections.suspend(&self.raft, 0);
        self.raft
            .trigger()
            .elect(false)
            .await
            .map_err(|e| Status::unavailable(format!("cannot campaign: {e}")))?;
        encode(&())
    }
}
