//! The node-to-node Raft service (append entries, vote, install snapshot). For cluster members
//! only: it trusts its peers, and clients must use the `Client` service instead.
//!
//! Requests and responses are openraft's own types, bincode-encoded in a `RaftMessage`.

use super::proto::raft_server::Raft as RaftRpc;
use super::proto::RaftMessage;
use crate::types::Raft;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

/// Serves Raft RPCs into the local openraft instance.
#[derive(Clone)]
pub struct RaftService {
    raft: Raft,
    /// Until when elections are suspended (leadership transfer). The suspension always lifts by
    /// itself, so a leader that dies mid-transfer cannot leave the cluster unable to elect.
    suspended_until: Arc<Mutex<Option<Instant>>>,
}

impl std::fmt::Debug for RaftService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftService").finish_non_exhaustive()
    }
}

impl RaftService {
    pub fn new(raft: Raft) -> Self {
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
impl RaftRpc for RaftService {
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

    async fn install_snapshot(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let rpc = decode(req)?;
        encode(&self.raft.install_snapshot(rpc).await)
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
            .elect()
            .await
            .map_err(|e| Status::unavailable(format!("cannot campaign: {e}")))?;
        encode(&())
    }
}
