//! The node-to-node Raft service (append entries, vote, install snapshot, and the follower half
//! of leadership transfer: `SuspendElections`, `Campaign`, see [`crate::service::transfer`]).
//! For cluster members only: it trusts its peers, and clients must use the `Client` service
//! instead.
//!
//! Requests and responses are openraft's own types, bincode-encoded in a `RaftMessage`.

use crate::network::SnapshotHeader;
use crate::proto::raft_server::Raft as RaftRpc;
use crate::proto::RaftMessage;
use crate::service::transfer::ElectionGate;
use crate::store::SnapshotError;
use crate::store::StateMachine;
use crate::types::{Snapshot, SnapshotData, TypeConfig};
use openraft::error::RaftError;
use openraft::raft::AppendEntriesRequest;
use openraft::storage::RaftStateMachine;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::pin::Pin;
use tonic::{Request, Response, Status, Streaming};

/// Serves Raft RPCs into the local openraft instance. Generic over the state machine only so
/// the simulation test can run the real protocol over its own in-memory one.
#[derive(Clone)]
pub struct RaftService<SM: RaftStateMachine<TypeConfig> = StateMachine> {
    raft: openraft::Raft<TypeConfig, SM>,
    elections: ElectionGate,
    /// Verifies a received snapshot's bytes before openraft installs them.
    check_snapshot: Option<SnapshotCheck>,
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
        }
    }

    /// Refuses received snapshots that `check` rejects (truncated or corrupt), with an error
    /// to the sender instead of handing them to openraft.
    pub fn checking_snapshots(mut self, check: SnapshotCheck) -> Self {
        self.check_snapshot = Some(check);
        self
    }
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
        let rpc = decode(req)?;
        encode(&self.raft.append_entries(rpc).await)
    }

    async fn vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let rpc = decode(req)?;
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
        let requests = req.into_inner().scan((), |_, message| {
            let decoded = message.ok().and_then(|m| {
                bincode::deserialize::<AppendEntriesRequest<TypeConfig>>(&m.payload).ok()
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
        let rpc = decode(req)?;
        encode(&self.raft.pre_vote(rpc).await)
    }

    /// A snapshot stream: the header (vote and metadata), then the data in chunks.
    async fn install_snapshot(
        &self,
        req: Request<Streaming<RaftMessage>>,
    ) -> Result<Response<RaftMessage>, Status> {
        let mut stream = req.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let header: SnapshotHeader = bincode::deserialize(&first.payload)
            .map_err(|e| Status::invalid_argument(format!("undecodable snapshot header: {e}")))?;
        let mut data = Vec::new();
        while let Some(chunk) = stream.message().await? {
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
            snapshot: data,
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
        let ms: u64 = decode(req)?;
        self.elections.suspend(&self.raft, ms);
        encode(&())
    }

    async fn campaign(&self, _req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.elections.suspend(&self.raft, 0);
        self.raft
            .trigger()
            .elect(false)
            .await
            .map_err(|e| Status::unavailable(format!("cannot campaign: {e}")))?;
        encode(&())
    }
}
