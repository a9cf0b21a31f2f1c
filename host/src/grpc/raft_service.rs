//! The node-to-node Raft service (append entries, vote, install snapshot). For cluster members
//! only: it trusts its peers, and clients must use the `Client` service instead.
//!
//! Requests and responses are openraft's own types, bincode-encoded in a `RaftMessage`.

use super::proto::raft_server::Raft as RaftRpc;
use super::proto::RaftMessage;
use crate::network::SnapshotHeader;
use crate::store::StateMachine;
use crate::types::{Snapshot, SnapshotData, TypeConfig};
use openraft::error::RaftError;
use openraft::raft::AppendEntriesRequest;
use openraft::storage::RaftStateMachine;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tonic::{Request, Response, Status, Streaming};

/// Serves Raft RPCs into the local openraft instance. Generic over the state machine only so
/// the simulation test can run the real protocol over its own in-memory one.
#[derive(Clone)]
pub struct RaftService<SM: RaftStateMachine<TypeConfig> = StateMachine> {
    raft: openraft::Raft<TypeConfig, SM>,
    /// Until when elections are suspended (leadership transfer). The suspension always lifts by
    /// itself, so a leader that dies mid-transfer cannot leave the cluster unable to elect.
    suspended_until: Arc<Mutex<Option<Instant>>>,
}

impl<SM: RaftStateMachine<TypeConfig>> std::fmt::Debug for RaftService<SM> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftService").finish_non_exhaustive()
    }
}

impl<SM: RaftStateMachine<TypeConfig>> RaftService<SM> {
    pub fn new(raft: openraft::Raft<TypeConfig, SM>) -> Self {
        RaftService {
            raft,
            suspended_until: Arc::new(Mutex::new(None)),
        }
    }

    /// Suspends elections on this node for `ms` milliseconds (0 lifts a suspension now).
    pub fn suspend_elections_for(&self, ms: u64) {
        let mut until = self
            .suspended_until
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if ms == 0 {
            *until = None;
            self.raft.runtime_config().elect(true);
            return;
        }
        let end = Instant::now() + Duration::from_millis(ms);
        *until = Some(until.map_or(end, |u| u.max(end)));
        self.raft.runtime_config().elect(false);
        let (raft, shared) = (self.raft.clone(), self.suspended_until.clone());
        tokio::spawn(async move {
            tokio::time::sleep_until(end).await;
            let mut until = shared.lock().unwrap_or_else(|p| p.into_inner());
            // Only the timer of the latest suspension lifts it.
            if until.is_some_and(|u| u <= Instant::now()) {
                *until = None;
                raft.runtime_config().elect(true);
            }
        });
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
        self.suspend_elections_for(ms);
        encode(&())
    }

    async fn campaign(&self, _req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.suspend_elections_for(0);
        self.raft
            .trigger()
            .elect(false)
            .await
            .map_err(|e| Status::unavailable(format!("cannot campaign: {e}")))?;
        encode(&())
    }
}
