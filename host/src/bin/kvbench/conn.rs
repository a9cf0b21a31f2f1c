//! kvbench's connections: one client type over raftwasm's and etcd's gRPC APIs, and the dialer
//! that makes them (and watchers) with the command line's TLS and credentials.

use super::connection::ConnectionArgs;
use super::{watchers, Target};
use anyhow::{Context, Result};
use host::auth::WithCredentials;
use host::grpc::coalesce;
use host::proto::etcd::{self, kv_client::KvClient};
use host::proto::{self, client_client::ClientClient, Consistency};
use std::sync::Arc;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

#[derive(Clone)]
pub enum Conn {
    Raftwasm(ClientClient<InterceptedService<Channel, WithCredentials>>),
    Etcd(KvClient<Channel>),
}

impl Conn {
    pub async fn put(
        &mut self,
        key: &str,
        value: &str,
        session: Option<proto::Session>,
    ) -> Result<(), tonic::Status> {
        match self {
            Conn::Raftwasm(c) => c
                .put(proto::PutRequest {
                    session,
                    key: key.to_string(),
                    value: value.to_string(),
                })
                .await
                .map(drop),
            Conn::Etcd(c) => c
                .put(etcd::PutRequest {
                    key: key.as_bytes().to_vec(),
                    value: value.as_bytes().to_vec(),
                })
                .await
                .map(drop),
        }
    }

    /// Opens a client session (raftwasm only).
    pub async fn open_session(&mut self) -> Result<u64, tonic::Status> {
        match self {
            Conn::Raftwasm(c) => Ok(c
                .open_session(proto::OpenSessionRequest {})
                .await?
                .into_inner()
                .client_id),
            Conn::Etcd(_) => Err(tonic::Status::unimplemented("etcd has no client sessions")),
        }
    }

    pub async fn get(&mut self, key: &str, stale: bool) -> Result<(), tonic::Status> {
        match self {
            Conn::Raftwasm(c) => {
                let consistency = if stale {
                    Consistency::Stale
                } else {
                    Consistency::Linearizable
                };
                match c
                    .get(proto::GetRequest {
                        key: key.to_string(),
                        consistency: consistency.into(),
                    })
                    .await
                {
                    Ok(_) => Ok(()),
                    // A missing key is an answer, not a failure.
                    Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
                    Err(s) => Err(s),
                }
            }
            Conn::Etcd(c) => c
                .range(etcd::RangeRequest {
                    key: key.as_bytes().to_vec(),
                    range_end: Vec::new(),
                    limit: 1,
                    serializable: stale,
                })
                .await
                .map(drop),
        }
    }
}

/// Makes connections to any node with the command line's TLS and credentials.
#[derive(Clone)]
pub struct Dialer {
    target: Target,
    credentials: WithCredentials,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Dialer {
    pub fn new(target: Target, c: &ConnectionArgs) -> Result<Self> {
        Ok(Dialer {
            target,
            credentials: c.credentials()?,
            tls: host::tls::cli_rustls(c.ca.as_deref(), c.cert.as_deref(), c.cert_key.as_deref())?,
        })
    }

    pub async fn dial(&self, addr: &str) -> Result<Conn> {
        let channel = self.channel(addr).await?;
        Ok(match self.target {
            Target::Raftwasm => Conn::Raftwasm(ClientClient::with_interceptor(
                channel,
                self.credentials.clone(),
            )),
            Target::Etcd => Conn::Etcd(KvClient::new(channel)),
        })
    }

    /// A watcher of its own connection.
    pub async fn watcher(&self, addr: &str) -> Result<watchers::Watcher> {
        let channel = self.channel(addr).await?;
        Ok(match self.target {
            Target::Raftwasm => watchers::Watcher::Raftwasm(ClientClient::with_interceptor(
                channel,
                self.credentials.clone(),
            )),
            Target::Etcd => watchers::Watcher::Etcd(etcd::watch_client::WatchClient::new(channel)),
        })
    }

    async fn channel(&self, addr: &str) -> Result<Channel> {
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))?;
        // TLS (when configured) runs inside the connector, under the coalescing layer.
        match self.tls.clone() {
            Some(tls) => {
                let connect = move |uri| coalesce::connect_tls(uri, tls.clone());
                endpoint
                    .connect_with_connector(tower::service_fn(connect))
                    .await
            }
            None => {
                endpoint
                    .connect_with_connector(tower::service_fn(coalesce::connect))
                    .await
            }
        }
        .with_context(|| format!("connecting to {addr}"))
    }
}
