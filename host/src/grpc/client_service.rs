//! The client-facing gRPC service: translates protobuf messages to calls on the
//! [`Service`] layer and its errors to statuses (the whole [`ServiceError`] rides in the status
//! details as JSON, so a forwarding node relays the leader's error unchanged).

use crate::proto;
use crate::proto::client_server::Client;
use crate::service::{hops, Consistency, ScanParams, Service, ServiceError};
use futures::StreamExt;
use std::pin::Pin;
use tonic::{Request, Response, Status};

/// Serves the `Client` gRPC service.
#[derive(Clone, Debug)]
pub struct ClientService {
    service: Service,
}

impl ClientService {
    pub fn new(service: Service) -> Self {
        ClientService { service }
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
        let hops = hops(req.metadata());
        let r = req.into_inner();
        let result = self
            .service
            .get(&r.key, Consistency::from(r.consistency), hops)
            .await;
        reply(result, |value| proto::GetReply { value })
    }

    async fn put(&self, req: Request<proto::PutRequest>) -> Reply<proto::PutReply> {
        let hops = hops(req.metadata());
        let r = req.into_inner();
        let result = self.service.put(&r.key, &r.value, hops).await;
        reply(result, proto::PutReply::from)
    }

    async fn delete(&self, req: Request<proto::DeleteRequest>) -> Reply<proto::DeleteReply> {
        let hops = hops(req.metadata());
        let result = self.service.delete(&req.into_inner().key, hops).await;
        reply(result, proto::DeleteReply::from)
    }

    async fn scan(&self, req: Request<proto::ScanRequest>) -> Reply<proto::ScanReply> {
        let hops = hops(req.metadata());
        let r = req.into_inner();
        let consistency = Consistency::from(r.consistency);
        let result = self
            .service
            .scan(&ScanParams::from(r), consistency, hops)
            .await;
        reply(result, proto::ScanReply::from)
    }

    async fn apply(&self, req: Request<proto::ApplyRequest>) -> Reply<proto::ApplyReply> {
        let hops = hops(req.metadata());
        let result = self.service.apply(req.into_inner().command, hops).await;
        reply(result, proto::ApplyReply::from)
    }

    async fn query(&self, req: Request<proto::QueryRequest>) -> Reply<proto::QueryReply> {
        let hops = hops(req.metadata());
        let r = req.into_inner();
        let result = self
            .service
            .query(r.request, Consistency::from(r.consistency), hops)
            .await;
        reply(result, |response| proto::QueryReply { response })
    }

    async fn add_node(&self, req: Request<proto::AddNodeRequest>) -> Reply<proto::Status> {
        let hops = hops(req.metadata());
        let r = req.into_inner();
        let result = self
            .service
            .add_node(&r.id, &r.address, r.learner, hops)
            .await;
        reply(result, proto::Status::from)
    }

    async fn remove_node(&self, req: Request<proto::RemoveNodeRequest>) -> Reply<proto::Status> {
        let hops = hops(req.metadata());
        let result = self.service.remove_node(&req.into_inner().id, hops).await;
        reply(result, proto::Status::from)
    }

    async fn transfer_leader(
        &self,
        req: Request<proto::TransferLeaderRequest>,
    ) -> Reply<proto::Status> {
        let hops = hops(req.metadata());
        let result = self
            .service
            .transfer_leader(&req.into_inner().id, hops)
            .await;
        reply(result, proto::Status::from)
    }

    async fn monitor(&self, req: Request<proto::MonitorRequest>) -> Reply<proto::Status> {
        if req.into_inner().state_hash {
            let result = self.service.status_with_state_hash().await;
            return reply(result, proto::Status::from);
        }
        Ok(Response::new(self.service.status().into()))
    }

    async fn snapshot(&self, _req: Request<proto::SnapshotRequest>) -> Reply<proto::SnapshotReply> {
        let result = self.service.snapshot().await;
        reply(result, proto::SnapshotReply::from)
    }

    async fn upgrade_fsm(
        &self,
        req: Request<proto::UpgradeFsmRequest>,
    ) -> Reply<proto::UpgradeFsmReply> {
        let hops = hops(req.metadata());
        let r = req.into_inner();
        let result = self.service.upgrade_fsm(r.module, r.dry_run, hops).await;
        reply(result, proto::UpgradeFsmReply::from)
    }

    type WatchStream = Pin<Box<dyn futures::Stream<Item = Result<proto::Status, Status>> + Send>>;

    async fn watch(&self, _req: Request<proto::MonitorRequest>) -> Reply<Self::WatchStream> {
        let stream = self.service.watch().map(|s| Ok(proto::Status::from(s)));
        Ok(Response::new(Box::pin(stream)))
    }
}
