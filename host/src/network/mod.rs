//! The client side of node-to-node traffic: openraft's `RaftNetworkFactory` over the `Raft`
//! gRPC service, and the pool of gRPC channels shared with leader forwarding.
//!
//! One channel per peer address, created lazily and reused. Channels have connect and request
//! deadlines and HTTP/2 keepalive, so a dead peer is noticed and a healed network reconnects.

use crate::grpc::proto::raft_client::RaftClient;
use crate::grpc::proto::RaftMessage;
use crate::types::{Member, NodeId, TypeConfig};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::AnyError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// Largest gRPC message a node sends or accepts (Raft batches and snapshot chunks included).
pub const MAX_GRPC_MESSAGE_BYTES: usize = 64 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Turns a configured endpoint into a channel: `Endpoint::connect_lazy` over TCP by default; a
/// simulation supplies one that connects through its own network.
pub type ChannelFactory = Arc<dyn Fn(Endpoint) -> Channel + Send + Sync>;

/// gRPC channels by peer address; clones share the pool.
#[derive(Clone, Default)]
pub struct PeerPool {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    factory: Option<ChannelFactory>,
}

impl std::fmt::Debug for PeerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerPool").finish_non_exhaustive()
    }
}

impl PeerPool {
    /// A pool whose channels are made by `factory` instead of plain TCP.
    pub fn with_factory(factory: ChannelFactory) -> Self {
        PeerPool {
            channels: Arc::default(),
            factory: Some(factory),
        }
    }

    /// The channel to `addr` (`host:port`), created on first use. Connection happens lazily and
    /// is re-established by tonic after a failure.
    pub fn channel(&self, addr: &str) -> Result<Channel, String> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ch) = channels.get(addr) {
            return Ok(ch.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("bad address {addr:?}: {e}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        let channel = match &self.factory {
            Some(make) => make(endpoint),
            None => endpoint.connect_lazy(),
        };
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }
}

/// Creates a [`Connection`] per target for openraft.
#[derive(Clone, Debug)]
pub struct Network {
    peers: PeerPool,
}

impl Network {
    pub fn new(peers: PeerPool) -> Self {
        Network { peers }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> Connection {
        let client = self.peers.channel(&node.addr).map(|ch| {
            RaftClient::new(ch)
                .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES)
        });
        Connection {
            target,
            addr: node.addr.clone(),
            client,
        }
    }
}

/// Raft RPCs to one peer.
#[derive(Debug)]
pub struct Connection {
    target: NodeId,
    addr: String,
    client: Result<RaftClient<Channel>, String>,
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, Member, RaftError<NodeId, E>>>;

fn network_err<E>(msg: String) -> RPCError<NodeId, Member, E>
where
    E: std::error::Error,
{
    RPCError::Network(NetworkError::from(AnyError::error(msg)))
}

impl Connection {
    async fn call<Req, Resp, E>(
        &mut self,
        method: RaftMethod,
        req: &Req,
        timeout: Duration,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let client = match &mut self.client {
            Ok(c) => c,
            Err(e) => return Err(RPCError::Unreachable(Unreachable::from(AnyError::error(e)))),
        };
        let payload = bincode::serialize(req).map_err(|e| network_err(e.to_string()))?;
        let mut request = tonic::Request::new(RaftMessage { payload });
        request.set_timeout(timeout);
        let reply = match method {
            RaftMethod::Append => client.append_entries(request).await,
            RaftMethod::Vote => client.vote(request).await,
            RaftMethod::Snapshot => client.install_snapshot(request).await,
        };
        let reply = reply.map_err(|status| {
            let msg = format!("{} ({}): {}", self.addr, status.code(), status.message());
            match status.code() {
                tonic::Code::Unavailable => {
                    RPCError::Unreachable(Unreachable::from(AnyError::error(msg)))
                }
                _ => network_err(msg),
            }
        })?;
        let result: Result<Resp, RaftError<NodeId, E>> =
            bincode::deserialize(&reply.into_inner().payload)
                .map_err(|e| network_err(e.to_string()))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

#[derive(Clone, Copy)]
enum RaftMethod {
    Append,
    Vote,
    Snapshot,
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        req: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        self.call(RaftMethod::Append, &req, option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        req: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.call(RaftMethod::Snapshot, &req, option.hard_ttl())
            .await
    }

    async fn vote(
        &mut self,
        req: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        self.call(RaftMethod::Vote, &req, option.hard_ttl()).await
    }
}
