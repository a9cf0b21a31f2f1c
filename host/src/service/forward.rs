//! Forwarding a request from a follower to the leader, over the leader's `Client` gRPC service:
//! the request as the client made it (a put as a put, not as the command it becomes), with the
//! client's credentials, so the leader checks the caller's permission for exactly that.
//!
//! One [`Forwarder`] per node owns everything about it: which leader to call, the hop count that
//! stops a request bouncing between nodes during a leader change (at most [`MAX_HOPS`]), building
//! the tonic client from the shared [`PeerPool`], and turning the leader's answer back into the
//! domain types (conversions in [`super::convert`]). The leader's [`ServiceError`] rides whole in
//! the gRPC status details, so the client sees it unchanged.

use super::{
    Applied, DeleteResult, ModuleUpgrade, PutResult, ScanParams, ScanResponse, ServiceError, Status,
};
use crate::auth::Caller;
use crate::config::MAX_GRPC_MESSAGE_BYTES;
use crate::metrics::requests::RequestMetrics;
use crate::network::PeerPool;
use crate::proto::{self, client_client::ClientClient};
use crate::types::{Member, SessionRef};
use std::time::Duration;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;

/// How many times a request may be forwarded between nodes before giving up (a leader change
/// in flight can take one extra hop).
pub const MAX_HOPS: u32 = 3;
/// Longest a forwarded backup may take.
const BACKUP_DEADLINE: Duration = Duration::from_secs(600);
/// gRPC metadata key carrying the hop count of a forwarded request.
pub const HOPS_HEADER: &str = "x-raftwasm-hops";

/// How many times a request arriving with `metadata` was already forwarded (0 from a client).
pub fn hops(metadata: &MetadataMap) -> u32 {
    metadata
        .get(HOPS_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Builds clients for the leader.
#[derive(Debug, Clone)]
pub(super) struct Forwarder {
    /// This node's advertised address: a "leader" at it means the cluster's view is stale.
    own_addr: String,
    peers: PeerPool,
    /// Deadline of a forwarded call: the leader's own request timeout plus a margin for the hop.
    timeout: Duration,
    metrics: RequestMetrics,
}

impl Forwarder {
    pub(super) fn new(
        own_addr: String,
        peers: PeerPool,
        request_timeout: Duration,
        metrics: RequestMetrics,
    ) -> Self {
        Forwarder {
            own_addr,
            peers,
            timeout: request_timeout + Duration::from_secs(1),
            metrics,
        }
    }

    /// A client for `leader`, to forward `caller`'s request (with its credentials).
    pub(super) fn to(
        &self,
        leader: Option<Member>,
        caller: &Caller,
    ) -> Result<Leader, ServiceError> {
        let hops = caller.hops;
        let Some(leader) = leader else {
            return Err(ServiceError::unavailable(
                "no leader is known: the cluster is electing one or has no quorum",
                None,
            ));
        };
        if hops >= MAX_HOPS || leader.addr == self.own_addr {
            return Err(ServiceError::unavailable(
                format!("request forwarded {hops} times without reaching a leader"),
                Some((leader.name.clone(), leader.addr.clone())),
            ));
        }
        let channel = self
            .peers
            .channel(&leader.addr)
            .map_err(ServiceError::internal)?;
        Ok(Leader {
            client: ClientClient::new(channel)
                .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES),
            leader,
            hops: hops + 1,
            caller: caller.clone(),
            timeout: self.timeout,
            metrics: self.metrics.clone(),
        })
    }

    /// A plain client for the node at `addr` (not a forward: no hop count).
    pub(super) fn client(&self, addr: &str) -> Result<ClientClient<Channel>, ServiceError> {
        let channel = self
            .peers
            .channel(addr)
            .map_err(|e| ServiceError::invalid(e.to_string()))?;
        Ok(ClientClient::new(channel))
    }

    /// The node-to-node `Raft` client for the member at `addr` (leadership transfer).
    pub(super) fn raft_client(
        &self,
        addr: &str,
    ) -> Result<proto::raft_client::RaftClient<Channel>, ServiceError> {
        let channel = self.peers.channel(addr).map_err(ServiceError::internal)?;
        Ok(proto::raft_client::RaftClient::new(channel))
    }
}

/// One forwarded call's client: the leader, and the hop count the call carries.
#[derive(Debug)]
pub(super) struct Leader {
    client: ClientClient<Channel>,
    leader: Member,
    hops: u32,
    caller: Caller,
    timeout: Duration,
    metrics: RequestMetrics,
}

impl Leader {
    /// The call carrying `message`, counted as a forwarded request for its operation (the
    /// message type's name without `Request`: `Put`, `Apply`, ...).
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let name = std::any::type_name::<T>().rsplit("::").next().unwrap_or("");
        self.metrics
            .forwarded(name.strip_suffix("Request").unwrap_or(name));
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.timeout);
        self.caller.forwarding(request.metadata_mut());
        if let Ok(v) = self.hops.to_string().parse() {
            request.metadata_mut().insert(HOPS_HEADER, v);
        }
        request
    }

    /// The leader's error as it sent it, for a read. A transport failure names the leader in
    /// its message but gives no leader hint: the leader could not be reached, so the caller
    /// should retry here, where the next leader will be known.
    fn error(&self, status: tonic::Status) -> ServiceError {
        match ServiceError::from_status(&status) {
            ServiceError::Unavailable {
                message,
                leader_id: None,
                ..
            } => ServiceError::unavailable(
                format!("forwarding to leader {} failed: {message}", self.leader),
                None,
            ),
            other => other,
        }
    }

    /// The leader's error as it sent it, for a write. A failure of the call itself is definite
    /// only if the request never left this node; otherwise the leader may have applied it.
    fn write_error(&self, status: tonic::Status) -> ServiceError {
        if !status.details().is_empty() || never_sent(&status) {
            return self.error(status);
        }
        ServiceError::unknown_outcome(
            format!(
                "forwarding to leader {} failed after the request was sent: {}; it may have \
                 been applied",
                self.leader,
                status.message()
            ),
            None,
            status.code() == tonic::Code::DeadlineExceeded,
        )
    }

    pub(super) async fn apply(
        mut self,
        command: Vec<u8>,
        session: Option<SessionRef>,
    ) -> Result<Applied, ServiceError> {
        let request = self.request(proto::ApplyRequest {
            command,
            session: session.map(Into::into),
        });
        let reply = self
            .client
            .apply(request)
            .await
            .map_err(|s| self.write_error(s))?;
        Ok(reply.into_inner().into())
    }

    pub(super) async fn query(mut self, request: Vec<u8>) -> Result<Vec<u8>, ServiceError> {
        let request = self.request(proto::QueryRequest {
            request,
            consistency: proto::Consistency::Linearizable.into(),
        });
        let reply = self
            .client
            .query(request)
            .await
            .map_err(|s| self.error(s))?;
        Ok(reply.into_inner().response)
    }

    pub(super) async fn get(mut self, key: &str) -> Result<String, ServiceError> {
        let request = self.request(proto::GetRequest {
            key: key.to_string(),
            consistency: proto::Consistency::Linearizable.into(),
        });
        let reply = self.client.get(request).await.map_err(|s| self.error(s))?;
        Ok(reply.into_inner().value)
    }

    pub(super) async fn put(
        mut self,
        key: &str,
        value: &str,
        session: Option<SessionRef>,
    ) -> Result<PutResult, ServiceError> {
        let request = self.request(proto::PutRequest {
            key: key.to_string(),
            value: value.to_string(),
            session: session.map(Into::into),
        });
        let reply = self
            .client
            .put(request)
            .await
            .map_err(|s| self.write_error(s))?;
        Ok(reply.into_inner().into())
    }

    pub(super) async fn delete(
        mut self,
        key: &str,
        session: Option<SessionRef>,
    ) -> Result<DeleteResult, ServiceError> {
        let request = self.request(proto::DeleteRequest {
            key: key.to_string(),
            session: session.map(Into::into),
        });
        let reply = self
            .client
            .delete(request)
            .await
            .map_err(|s| self.write_error(s))?;
        Ok(reply.into_inner().into())
    }

    pub(super) async fn scan(mut self, params: &ScanParams) -> Result<ScanResponse, ServiceError> {
        let request = self.request(proto::ScanRequest::from(params));
        let reply = self.client.scan(request).await.map_err(|s| self.error(s))?;
        Ok(reply.into_inner().into())
    }

    pub(super) async fn open_session(mut self) -> Result<u64, ServiceError> {
        let request = self.request(proto::OpenSessionRequest {});
        let reply = self
            .client
            .open_session(request)
            .await
            .map_err(|s| self.write_error(s))?;
        Ok(reply.into_inner().client_id)
    }

    pub(super) async fn add_node(
        mut self,
        name: &str,
        addr: &str,
        learner: bool,
    ) -> Result<Status, ServiceError> {
        let request = self.request(proto::AddNodeRequest {
            id: name.to_string(),
            address: addr.to_string(),
            learner,
        });
        let reply = self
            .client
            .add_node(request)
            .await
            .map_err(|s| self.write_error(s))?;
        Ok(reply.into_inner().into())
    }

    pub(super) async fn remove_node(mut self, name: &str) -> Result<Status, ServiceError> {
        let request = self.request(proto::RemoveNodeRequest {
            id: name.to_string(),
        });
        let reply = self
            .client
            .remove_node(request)
            .await
            .map_err(|s| self.write_error(s))?;
        Ok(reply.into_inner().into())
    }

    pub(super) async fn transfer_leader(mut self, name: &str) -> Result<Status, ServiceError> {
        let request = self.request(proto::TransferLeaderRequest {
            id: name.to_string(),
        });
        let reply = self
            .client
            .transfer_leader(request)
            .await
            .map_err(|s| self.write_error(s))?;
        Ok(reply.into_inner().into())
    }

    /// The leader's backup, passed on chunk by chunk (a large state takes longer to send than
    /// a request may take, so the call has a longer deadline).
    pub(super) async fn backup(mut self) -> Result<super::BackupStream, ServiceError> {
        use futures::StreamExt;
        let mut request = self.request(proto::BackupRequest {});
        request.set_timeout(BACKUP_DEADLINE);
        let stream = self
            .client
            .backup(request)
            .await
            .map_err(|s| self.error(s))?
            .into_inner();
        Ok(Box::pin(stream.map(|chunk| {
            chunk
                .map(|c| c.data)
                .map_err(|s| ServiceError::from_status(&s))
        })))
    }

    pub(super) async fn upgrade_fsm(
        mut self,
        module: Vec<u8>,
        dry_run: bool,
    ) -> Result<ModuleUpgrade, ServiceError> {
        let request = self.request(proto::UpgradeFsmRequest { module, dry_run });
        let reply = self
            .client
            .upgrade_fsm(request)
            .await
            .map_err(|s| self.write_error(s))?;
        Ok(reply.into_inner().into())
    }
}

/// True when `status` is a failure to connect: the request never left this node, so whoever it
/// was for never saw it. Judged by the kind of the underlying I/O error, not by message text.
pub fn never_sent(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionRefused | AddrNotAvailable | HostUnreachable | NetworkUnreachable
            ) {
                return true;
            }
        }
        source = e.source();
    }
    false
}
