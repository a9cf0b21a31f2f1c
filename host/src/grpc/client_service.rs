//! The client-facing gRPC service: authenticates each call (credentials in the `authorization`
//! metadata, or the client certificate), translates protobuf messages to calls on the
//! [`Service`] layer and its errors to statuses (the whole [`ServiceError`] rides in the status
//! details as JSON, so a forwarding node relays the leader's error unchanged).

use crate::auth::{self, Authenticator, Caller, Credentials};
use crate::proto;
use crate::proto::client_server::Client;
use crate::service::{
    hops, Consistency, ScanParams, Service, ServiceError, WatchItem, WatchSpec, DEFAULT_PROGRESS,
};
use crate::store::Cursor;
use crate::tls::PeerCerts;
use futures::StreamExt;
use std::pin::Pin;
use tonic::{Request, Response, Status};

/// Serves the `Client` gRPC service.
#[derive(Clone, Debug)]
pub struct ClientService {
    service: Service,
    auth: Authenticator,
    /// On a TLS node: the node certificates whose forwarded user names are believed.
    peers: Option<PeerCerts>,
}

impl ClientService {
    pub fn new(service: Service, auth: Authenticator, peers: Option<PeerCerts>) -> Self {
        ClientService {
            service,
            auth,
            peers,
        }
    }

    /// Who the call is from. A user named in [`auth::USER_HEADER`] counts only over a
    /// connection whose certificate is a member node's; a client certificate's names count
    /// when it is not one.
    async fn caller<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        let metadata = req.metadata();
        let text = |key: &str| metadata.get(key).and_then(|v| v.to_str().ok());
        let authorization = text(auth::AUTHORIZATION);
        let certs = req.peer_certs();
        let leaf = certs.as_ref().and_then(|c| c.first());
        let forwarded = text(auth::USER_HEADER);
        // Without authentication nothing depends on who the caller is, and with credentials
        // of its own a call's certificate matters only if it forwards for a user.
        let ask = self.auth.enabled() && (forwarded.is_some() || authorization.is_none());
        let from_node = match (&self.peers, &certs) {
            _ if !ask => false,
            (Some(peers), Some(chain)) => peers
                .admit(Some(chain.as_slice()), &self.service.member_hosts())
                .is_ok(),
            _ => false,
        };
        let credentials = Credentials {
            hops: hops(metadata),
            authorization,
            certificate_names: match leaf {
                Some(cert) if ask && !from_node => auth::certificate_names(cert),
                _ => Vec::new(),
            },
            forwarded_user: forwarded.filter(|_| from_node),
        };
        self.auth
            .authenticate(credentials)
            .await
            .map_err(|e| ServiceError::from(e).to_status())
    }
}

type Reply<T> = Result<Response<T>, Status>;

fn reply<T, U>(result: Result<T, ServiceError>, f: impl FnOnce(T) -> U) -> Reply<U> {
    result
        .map(|v| Response::new(f(v)))
        .map_err(|e| e.to_status())
}

#[tonic::async_trait]
impl Client for ClientService {
    async fn get(&self, req: Request<proto::GetRequest>) -> Reply<proto::GetReply> {
        let caller = self.caller(&req).await?;
        let r = req.into_inner();
        let result = self
            .service
            .get(&caller, &r.key, Consistency::from(r.consistency))
            .await;
        reply(result, |value| proto::GetReply { value })
    }

    async fn put(&self, req: Request<proto::PutRequest>) -> Reply<proto::PutReply> {
        let caller = self.caller(&req).await?;
        let r = req.into_inner();
        let session = r.session.map(Into::into);
        let result = self.service.put(&caller, &r.key, &r.value, session).await;
        reply(result, proto::PutReply::from)
    }

    async fn delete(&self, req: Request<proto::DeleteRequest>) -> Reply<proto::DeleteReply> {
        let caller = self.caller(&req).await?;
        let r = req.into_inner();
        let session = r.session.map(Into::into);
        let result = self.service.delete(&caller, &r.key, session).await;
        reply(result, proto::DeleteReply::from)
    }

    async fn scan(&self, req: Request<proto::ScanRequest>) -> Reply<proto::ScanReply> {
        let caller = self.caller(&req).await?;
        let r = req.into_inner();
        let consistency = Consistency::from(r.consistency);
        let result = self
            .service
            .scan(&caller, &ScanParams::from(r), consistency)
            .await;
        reply(result, proto::ScanReply::from)
    }

    async fn apply(&self, req: Request<proto::ApplyRequest>) -> Reply<proto::ApplyReply> {
        let caller = self.caller(&req).await?;
        let r = req.into_inner();
        let session = r.session.map(Into::into);
        let result = self.service.apply(&caller, r.command, session).await;
        reply(result, proto::ApplyReply::from)
    }

    async fn open_session(
        &self,
        req: Request<proto::OpenSessionRequest>,
    ) -> Reply<proto::OpenSessionReply> {
        let caller = self.caller(&req).await?;
        let result = self.service.open_session(&caller).await;
        reply(result, |client_id| proto::OpenSessionReply {
            client_id,
            log_index: client_id,
        })
    }

    async fn query(&self, req: Request<proto::QueryRequest>) -> Reply<proto::QueryReply> {
        let caller = self.caller(&req).await?;
        let r = req.into_inner();
        let result = self
            .service
            .query(&caller, r.request, Consistency::from(r.consistency))
            .await;
        reply(result, |response| proto::QueryReply { response })
    }

    async fn add_node(&self, req: Request<proto::AddNodeRequest>) -> Reply<proto::Status> {
        let caller = self.caller(&req).await?;
        let r = req.into_inner();
        let result = self
            .service
            .add_node(&caller, &r.id, &r.address, r.learner)
            .await;
        reply(result, proto::Status::from)
    }

    async fn remove_node(&self, req: Request<proto::RemoveNodeRequest>) -> Reply<proto::Status> {
        let caller = self.caller(&req).await?;
        let result = self
            .service
            .remove_node(&caller, &req.into_inner().id)
            .await;
        reply(result, proto::Status::from)
    }

    async fn transfer_leader(
        &self,
        req: Request<proto::TransferLeaderRequest>,
    ) -> Reply<proto::Status> {
        let caller = self.caller(&req).await?;
        let result = self
            .service
            .transfer_leader(&caller, &req.into_inner().id)
            .await;
        reply(result, proto::Status::from)
    }

    async fn monitor(&self, req: Request<proto::MonitorRequest>) -> Reply<proto::Status> {
        let caller = self.caller(&req).await?;
        let asked = req.into_inner();
        let status = match asked.state_hash {
            true => self.service.status_with_state_hash(&caller).await,
            false => self.service.status(&caller),
        };
        let status = status.map(|s| match asked.counters {
            true => self.service.with_counters(s),
            false => s,
        });
        reply(status, proto::Status::from)
    }

    async fn snapshot(&self, req: Request<proto::SnapshotRequest>) -> Reply<proto::SnapshotReply> {
        let caller = self.caller(&req).await?;
        let result = self.service.snapshot(&caller).await;
        reply(result, proto::SnapshotReply::from)
    }

    async fn upgrade_fsm(
        &self,
        req: Request<proto::UpgradeFsmRequest>,
    ) -> Reply<proto::UpgradeFsmReply> {
        let caller = self.caller(&req).await?;
        let r = req.into_inner();
        let result = self.service.upgrade_fsm(&caller, r.module, r.dry_run).await;
        reply(result, proto::UpgradeFsmReply::from)
    }

    type BackupStream =
        Pin<Box<dyn futures::Stream<Item = Result<proto::BackupChunk, Status>> + Send>>;

    async fn backup(&self, req: Request<proto::BackupRequest>) -> Reply<Self::BackupStream> {
        let caller = self.caller(&req).await?;
        let stream = self
            .service
            .backup(&caller)
            .await
            .map_err(|e| e.to_status())?
            .map(|chunk| {
                chunk
                    .map(|data| proto::BackupChunk { data })
                    .map_err(|e| e.to_status())
            });
        Ok(Response::new(Box::pin(stream)))
    }

    type WatchStream = Pin<Box<dyn futures::Stream<Item = Result<proto::Status, Status>> + Send>>;

    async fn watch(&self, req: Request<proto::MonitorRequest>) -> Reply<Self::WatchStream> {
        let caller = self.caller(&req).await?;
        let stream = self
            .service
            .watch(&caller)
            .map_err(|e| e.to_status())?
            .map(|s| Ok(proto::Status::from(s)));
        Ok(Response::new(Box::pin(stream)))
    }

    type WatchKeysStream =
        Pin<Box<dyn futures::Stream<Item = Result<proto::WatchKeysReply, Status>> + Send>>;

    async fn watch_keys(
        &self,
        req: Request<proto::WatchKeysRequest>,
    ) -> Reply<Self::WatchKeysStream> {
        let caller = self.caller(&req).await?;
        let r = req.into_inner();
        let after = match (r.start_revision, r.start_after_seq) {
            (0, _) => None,
            (start, 0) => Some(Cursor::after_revision(start - 1)),
            (start, seq) => Some(Cursor {
                revision: start,
                seq: seq - 1,
            }),
        };
        let progress = match r.progress_ms {
            0 => DEFAULT_PROGRESS,
            ms => std::time::Duration::from_millis(u64::from(ms)),
        };
        let spec = WatchSpec {
            key: r.key,
            prefix: r.prefix,
            after,
            progress,
        };
        let watch = self
            .service
            .watch_changes(&caller, spec)
            .map_err(|e| e.to_status())?;
        let node = self.service.node_name().to_string();
        let replies = futures::stream::unfold(Some(watch), move |watch| {
            let node = node.clone();
            async move {
                let mut watch = watch?;
                let reply = match watch.next().await? {
                    Ok(WatchItem::Changes(changes)) => proto::WatchKeysReply {
                        revision: changes.last().map_or(0, |c| c.revision),
                        events: changes
                            .iter()
                            .map(|c| proto::ChangeEvent {
                                revision: c.revision,
                                seq: c.seq,
                                key: c.key.clone(),
                                payload: c.payload.clone(),
                            })
                            .collect(),
                        node,
                    },
                    Ok(WatchItem::Progress { revision }) => proto::WatchKeysReply {
                        events: Vec::new(),
                        revision,
                        node,
                    },
                    Err(e) => return Some((Err(e.to_status()), None)),
                };
                Some((Ok(reply), Some(watch)))
            }
        });
        Ok(Response::new(Box::pin(replies)))
    }
}
