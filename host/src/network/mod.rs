//! The client side of node-to-node traffic: openraft's `RaftNetworkFactory` over the `Raft`
//! gRPC service, and the pool of gRPC channels shared with leader forwarding.
//!
//! One channel per peer address, created lazily and reused. Channels have connect and request
//! deadlines and HTTP/2 keepalive, so a dead peer is noticed and a healed network reconnects.

mod removal;

pub use removal::{not_member_index, not_member_status, Removals, NOT_MEMBER_HEADER};

use crate::config::MAX_GRPC_MESSAGE_BYTES;
use crate::proto::raft_client::RaftClient;
use crate::proto::RaftMessage;
use crate::types::{Member, NodeId, Snapshot, SnapshotData, SnapshotMeta, TypeConfig, Vote};
use openraft::base::{BoxFuture, BoxStream};
use openraft::error::Fatal;
use openraft::error::{
    NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult, VoteRequest,
    VoteResponse,
};
use openraft::RaftNetworkV2;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Turns a configured endpoint into a channel: `Endpoint::connect_lazy` over TCP by default; a
/// simulation supplies one that connects through its own network.
pub type ChannelFactory = Arc<dyn Fn(Endpoint) -> Channel + Send + Sync>;

/// A peer address that is not a valid `host:port`.
#[derive(Debug, thiserror::Error)]
#[error("bad address {addr:?}: {source}")]
pub struct BadAddress {
    addr: String,
    #[source]
    source: tonic::transport::Error,
}

/// gRPC channels by peer address; clones share the pool.
#[derive(Clone, Default)]
pub struct PeerPool {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    factory: Option<ChannelFactory>,
    /// How to dial over TLS (trust and identity), when the cluster speaks TLS.
    tls: Arc<Mutex<Option<ClientTlsConfig>>>,
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
            tls: Arc::default(),
        }
    }

    /// Dials peers over TLS with `tls` from now on (`None`: plain TCP). Channels made before
    /// are dropped from the pool, so the next RPC to each peer connects with the new identity.
    pub fn set_tls(&self, tls: Option<ClientTlsConfig>) {
        *lock(&self.tls) = tls;
        lock(&self.channels).clear();
    }

    /// The channel to `addr` (`host:port`), created on first use. Connection happens lazily and
    /// is re-established by tonic after a failure.
    pub fn channel(&self, addr: &str) -> Result<Channel, BadAddress> {
        let mut channels = lock(&self.channels);
        if let Some(ch) = channels.get(addr) {
            return Ok(ch.clone());
        }
        let tls = lock(&self.tls).clone();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let bad = |source| BadAddress {
            addr: addr.to_string(),
            source,
        };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(bad)?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        if let Some(tls) = tls {
            endpoint = endpoint.tls_config(tls).map_err(bad)?;
        }
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
    removals: Removals,
}

impl Network {
    pub fn new(peers: PeerPool) -> Self {
        Network {
            peers,
            removals: Removals::default(),
        }
    }

    /// Records in `removals` each member's word that this node is not in the cluster.
    pub fn reporting_removals(mut self, removals: Removals) -> Self {
        self.removals = removals;
        self
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
            removals: self.removals.clone(),
        }
    }
}

/// Raft RPCs to one peer.
#[derive(Debug)]
pub struct Connection {
    target: NodeId,
    addr: String,
    client: Result<RaftClient<Channel>, BadAddress>,
    removals: Removals,
}

#[derive(Clone, Copy)]
enum Method {
    Append,
    Vote,
    PreVote,
}

/// Extra time a request of `bytes` gets to be answered, on top of the TTL: a batch with a large
/// entry (a module upgrade is tens of MiB) takes a while to send, write and sync, and a follower
/// doing that is not silent.
fn transfer_allowance(bytes: usize) -> Duration {
    Duration::from_millis(50 * (bytes >> 20) as u64)
}

/// Bytes of snapshot data per message of a snapshot stream.
const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// The header of a snapshot stream; the data follows in raw chunks.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct SnapshotHeader {
    pub vote: Vote,
    pub meta: SnapshotMeta,
}

fn status_err(addr: &str, status: &tonic::Status) -> RPCError<TypeConfig> {
    let msg = format!("{addr} ({}): {}", status.code(), status.message());
    match status.code() {
        tonic::Code::Unavailable => unreachable(msg),
        _ => net_err(msg),
    }
}

impl Connection {
    fn client(&mut self) -> Result<&mut RaftClient<Channel>, RPCError<TypeConfig>> {
        match &mut self.client {
            Ok(c) => Ok(c),
            Err(e) => Err(unreachable(e)),
        }
    }

    async fn call<Req, Resp>(
        &mut self,
        method: Method,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let payload = bincode::serialize(req).map_err(net_err)?;
        let mut request = tonic::Request::new(RaftMessage { payload });
        request.set_timeout(timeout);
        let client = self.client()?;
        let reply = match method {
            Method::Append => client.append_entries(request).await,
            Method::Vote => client.vote(request).await,
            Method::PreVote => client.pre_vote(request).await,
        };
        let reply = reply.map_err(|status| {
            if let Some(index) = not_member_index(&status) {
                self.removals.report(index);
            }
            status_err(&self.addr, &status)
        })?;
        let result: Result<Resp, RaftError<TypeConfig>> =
            bincode::deserialize(&reply.into_inner().payload).map_err(net_err)?;
        // The only error a peer returns is fatal (its Raft stopped): unreachable, so replication
        // backs off instead of retrying at once.
        result.map_err(|e| unreachable(format!("node {} at {}: {e}", self.target, self.addr)))
    }
}

impl RaftNetworkV2<TypeConfig> for Connection {
    type SnapshotData = crate::types::SnapshotData;

    async fn append_entries(
        &mut self,
        req: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(Method::Append, &req, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        req: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(Method::Vote, &req, option.hard_ttl()).await
    }

    async fn pre_vote(
        &mut self,
        req: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(Method::PreVote, &req, option.hard_ttl()).await
    }

    /// AppendEntries as one long-lived bidirectional stream per replication session: requests
    /// go out as openraft produces them, without waiting for earlier replies (the follower
    /// answers in order). A reply later than `soft_ttl` after its request ends the stream with
    /// an error, so a silent peer is noticed.
    fn stream_append<'s, S>(
        &'s mut self,
        mut input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, AppendStreamResult<'s>>
    where
        S: futures::Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
    {
        Box::pin(async move {
            use futures::StreamExt;
            // Wait for the first request before calling: openraft applies its backoff while
            // producing requests, so a peer that is down is not redialled in a tight loop.
            let Some(first) = input.next().await else {
                return Ok(Box::pin(futures::stream::empty()) as BoxStream<'s, _>);
            };
            let ttl = option.soft_ttl();
            // The stream opens once the peer has the first request, which may carry a module.
            let first_bytes = bincode::serialized_size(&first).unwrap_or(0) as usize;
            let open_ttl = ttl + transfer_allowance(first_bytes);
            let input = futures::stream::once(std::future::ready(first)).chain(input);
            let addr = self.addr.clone();
            let mut client = self.client()?.clone();
            // When each request not answered yet is overdue, oldest first.
            let pending: Arc<Mutex<VecDeque<Instant>>> = Arc::default();
            let sent = pending.clone();
            let requests = input.map(move |req| {
                // Our own types always encode; an empty payload would end the stream.
                let payload = bincode::serialize(&req).unwrap_or_default();
                lock(&sent).push_back(Instant::now() + ttl + transfer_allowance(payload.len()));
                RaftMessage { payload }
            });
            let replies = tokio::time::timeout(open_ttl, client.stream_append(requests))
                .await
                .map_err(|_| unreachable(format!("{addr}: no append stream within {open_ttl:?}")))?
                .map_err(|status| status_err(&addr, &status))?
                .into_inner();
            let out =
                futures::stream::unfold(Some((replies, pending, addr)), move |state| async move {
                    let (mut replies, pending, addr) = state?;
                    loop {
                        let reply = match tokio::time::timeout(ttl, replies.message()).await {
                            Ok(reply) => reply,
                            Err(_) => {
                                let oldest = lock(&pending).front().copied();
                                if oldest.is_some_and(|due| Instant::now() >= due) {
                                    let msg = format!("{addr}: no append reply within {ttl:?}");
                                    return Some((Err(net_err(msg)), None));
                                }
                                continue;
                            }
                        };
                        let message = match reply {
                            Ok(Some(m)) => m,
                            Ok(None) => return None,
                            Err(status) => return Some((Err(status_err(&addr, &status)), None)),
                        };
                        lock(&pending).pop_front();
                        let decoded: Result<StreamAppendResult<TypeConfig>, Fatal<TypeConfig>> =
                            match bincode::deserialize(&message.payload) {
                                Ok(d) => d,
                                Err(e) => return Some((Err(net_err(e)), None)),
                            };
                        return match decoded {
                            Ok(result) => Some((Ok(result), Some((replies, pending, addr)))),
                            Err(fatal) => {
                                let msg = format!("{addr}: {fatal}");
                                let err = unreachable(msg);
                                Some((Err(err), None))
                            }
                        };
                    }
                });
            Ok(Box::pin(out) as BoxStream<'s, _>)
        })
    }

    /// Sends the whole snapshot as one client stream: a header (vote and metadata), then the
    /// data in chunks. Dropped (and so cancelled) when `cancel` resolves first.
    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let header = bincode::serialize(&SnapshotHeader {
            vote,
            meta: snapshot.meta,
        })
        .map_err(|e| StreamingError::Network(NetworkError::from_string(e)))?;
        let mut request =
            tonic::Request::new(snapshot_stream(header, snapshot.snapshot, self.target));
        request.set_timeout(option.hard_ttl());
        let addr = self.addr.clone();
        let target = self.target;
        let client = self.client().map_err(rpc_to_streaming)?;
        let send = client.install_snapshot(request);
        let reply = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            reply = send => reply.map_err(|status| rpc_to_streaming(status_err(&addr, &status)))?,
        };
        let result: Result<SnapshotResponse<TypeConfig>, RaftError<TypeConfig>> =
            bincode::deserialize(&reply.into_inner().payload)
                .map_err(|e| StreamingError::Network(NetworkError::from_string(e)))?;
        result.map_err(|e| {
            StreamingError::Network(NetworkError::from_string(format!(
                "node {target} at {addr} refused the snapshot: {e}"
            )))
        })
    }
}

/// The messages of a snapshot stream: `header`, then `data` a chunk at a time, each read (off
/// the async threads) only as the stream is polled. A chunk that cannot be read ends the stream
/// early, which the receiver refuses as a truncated snapshot.
fn snapshot_stream(
    header: Vec<u8>,
    data: SnapshotData,
    target: NodeId,
) -> impl futures::Stream<Item = RaftMessage> + Send + 'static {
    let head = futures::stream::iter([RaftMessage { payload: header }]);
    let data = Arc::new(data);
    let chunks = futures::stream::unfold(0u64, move |at| {
        let data = data.clone();
        async move {
            if at >= data.len() {
                return None;
            }
            let read = tokio::task::spawn_blocking(move || data.read_at(at, SNAPSHOT_CHUNK_BYTES));
            match read.await.map_err(std::io::Error::other).and_then(|r| r) {
                Ok(payload) => {
                    let next = at + payload.len() as u64;
                    Some((RaftMessage { payload }, next))
                }
                Err(e) => {
                    tracing::warn!(target, error = %e, "cannot read the snapshot being sent");
                    None
                }
            }
        }
    });
    futures::StreamExt::chain(head, chunks)
}

type AppendStreamResult<'s> = Result<
    BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>,
    RPCError<TypeConfig>,
>;

fn unreachable(e: impl ToString) -> RPCError<TypeConfig> {
    RPCError::Unreachable(Unreachable::from_string(e))
}

fn net_err(e: impl ToString) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::from_string(e))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn rpc_to_streaming(e: RPCError<TypeConfig>) -> StreamingError<TypeConfig> {
    match e {
        RPCError::Timeout(t) => StreamingError::Timeout(t),
        RPCError::Unreachable(u) => StreamingError::Unreachable(u),
        RPCError::Network(n) => StreamingError::Network(n),
        RPCError::RemoteError(r) => StreamingError::Network(NetworkError::from_string(r)),
    }
}
