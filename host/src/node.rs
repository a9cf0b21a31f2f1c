//! Starting a node: opens its storage, starts openraft, bootstraps a one-node cluster when
//! asked (once), and serves gRPC and HTTP until shutdown.
//!
//! The caller binds the listeners (tests bind `127.0.0.1:0`), as mini-redis's `server::run` does.

use crate::fsm::MachineSpec;
use crate::grpc::client_service::ClientService;
use crate::grpc::coalesce::Coalescing;
use crate::grpc::proto::client_server::ClientServer;
use crate::grpc::proto::raft_server::RaftServer;
use crate::grpc::raft_service::RaftService;
use crate::network::{Network, PeerPool, MAX_GRPC_MESSAGE_BYTES};
use crate::service::{Limits, Service};
use crate::store::{LogStore, StateMachine};
use crate::types::{node_id, validate_node_name, Member, Raft};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

/// Default number of applied entries between two automatic snapshots.
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 10_000;
/// Default number of log entries kept behind a snapshot for lagging followers.
pub const DEFAULT_SNAPSHOT_KEEP_LOGS: u64 = 1_000;
/// Raft timing defaults, in milliseconds.
pub const DEFAULT_HEARTBEAT_MS: u64 = 100;
pub const DEFAULT_ELECTION_TIMEOUT_MS: u64 = 1000;

/// Everything a node needs besides its listeners.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The node's name (`--id`).
    pub name: String,
    /// The gRPC address other nodes and clients use to reach this node.
    pub advertise_addr: String,
    pub data_dir: PathBuf,
    /// The state machine: a wasm guest (or the native benchmark baseline).
    pub module: MachineSpec,
    /// Initialize a one-node cluster if this node has never been initialized.
    pub bootstrap: bool,
    pub limits: Limits,
    pub max_body_bytes: usize,
    pub heartbeat_ms: u64,
    /// Minimum election timeout; the maximum is twice this.
    pub election_timeout_ms: u64,
    /// Build a snapshot every this many applied entries.
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot when the log is purged.
    pub snapshot_keep_logs: u64,
    /// Size of a write-ahead log segment file.
    pub wal_segment_bytes: u64,
}

/// Why a node could not start or stopped.
#[derive(Debug, Error)]
pub enum NodeError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot open storage in {dir}: {reason}")]
    Storage { dir: PathBuf, reason: String },
    #[error("raft failed: {0}")]
    Raft(String),
    #[error("server failed: {0}")]
    Serve(String),
}

/// A started node: its Raft handle and service layer, for the binary and for tests.
#[derive(Clone)]
pub struct Started {
    pub raft: Raft,
    pub service: Service,
}

impl std::fmt::Debug for Started {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Started")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

/// Starts the node and serves until `shutdown` resolves, then stops Raft.
pub async fn run(
    config: NodeConfig,
    grpc: TcpListener,
    http: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    let started = start(&config).await?;
    serve(&config, started, grpc, http, shutdown).await
}

/// Serves a started node's gRPC and HTTP until `shutdown` resolves, then stops Raft.
pub async fn serve(
    config: &NodeConfig,
    started: Started,
    grpc: TcpListener,
    http: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let stopped = |tx: &tokio::sync::broadcast::Sender<()>| {
        let mut rx = tx.subscribe();
        async move {
            let _ = rx.recv().await;
        }
    };

    let grpc_server = tonic::transport::Server::builder()
        .add_service(
            RaftServer::new(RaftService::new(started.raft.clone()))
                .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES),
        )
        .add_service(
            ClientServer::new(ClientService::new(started.service.clone()))
                .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(no_delay(grpc), stopped(&stop_tx));
    let http = axum::serve::ListenerExt::tap_io(http, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let http_server = axum::serve(
        http,
        crate::http::router(started.service.clone(), config.max_body_bytes),
    )
    .with_graceful_shutdown(stopped(&stop_tx));

    let grpc_task = tokio::spawn(grpc_server);
    let http_task = tokio::spawn(async move { http_server.await });
    shutdown.await;
    let _ = stop_tx.send(());
    let _ = started.raft.shutdown().await;
    grpc_task
        .await
        .map_err(|e| NodeError::Serve(e.to_string()))?
        .map_err(|e| NodeError::Serve(e.to_string()))?;
    http_task
        .await
        .map_err(|e| NodeError::Serve(e.to_string()))?
        .map_err(|e| NodeError::Serve(e.to_string()))?;
    Ok(())
}

/// Accepted connections with Nagle's algorithm off (Raft and client RPCs are small
/// request/response exchanges, and Nagle plus delayed ACKs would hold each reply for ~40 ms),
/// and with replies that are ready together sent together ([`Coalescing`]).
fn no_delay(
    listener: TcpListener,
) -> impl futures::Stream<Item = std::io::Result<Coalescing<tokio::net::TcpStream>>> {
    use futures::StreamExt;
    TcpListenerStream::new(listener).map(|conn| {
        let conn = conn?;
        conn.set_nodelay(true)?;
        Ok(Coalescing::new(conn))
    })
}

/// Failpoint for tests: when set, a bootstrapping node does not log its seed module entry, as if
/// it had crashed right after initializing the cluster. Never set it in production.
pub const FAILPOINT_SKIP_SEED: &str = "RAFTWASM_FAILPOINT_SKIP_SEED";

/// Opens storage and starts Raft (without serving); bootstraps if configured to.
pub async fn start(config: &NodeConfig) -> Result<Started, NodeError> {
    validate_node_name(&config.name).map_err(NodeError::Config)?;
    let storage = |reason: String| NodeError::Storage {
        dir: config.data_dir.clone(),
        reason,
    };
    std::fs::create_dir_all(&config.data_dir).map_err(|e| storage(e.to_string()))?;
    let log = LogStore::open(&config.data_dir, config.wal_segment_bytes)
        .map_err(|e| storage(e.to_string()))?;
    let sm = StateMachine::open(config.data_dir.clone(), config.module.clone())
        .map_err(|e| storage(e.to_string()))?;

    let raft_config = openraft::Config {
        cluster_name: "raftwasm".into(),
        heartbeat_interval: config.heartbeat_ms,
        election_timeout_min: config.election_timeout_ms,
        election_timeout_max: config.election_timeout_ms * 2,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_every.max(1)),
        max_in_snapshot_log_to_keep: config.snapshot_keep_logs,
        ..Default::default()
    }
    .validate()
    .map_err(|e| NodeError::Config(e.to_string()))?;

    let peers = PeerPool::default();
    let id = node_id(&config.name);
    let raft = Raft::new(
        id,
        Arc::new(raft_config),
        Network::new(peers.clone()),
        log,
        sm.clone(),
    )
    .await
    .map_err(|e| NodeError::Raft(e.to_string()))?;

    if config.bootstrap {
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))?;
        if !initialized {
            let me = Member {
                name: config.name.clone(),
                addr: config.advertise_addr.clone(),
            };
            raft.initialize(BTreeMap::from([(id, me)]))
                .await
                .map_err(|e| NodeError::Raft(format!("bootstrap failed: {e}")))?;
            tracing::info!(node = %config.name, "bootstrapped a one-node cluster");
            // The failpoint stands for a crash between initializing and seeding (tests only):
            // the first write on the leader then logs the seed instead.
            if std::env::var_os(FAILPOINT_SKIP_SEED).is_none() {
                crate::service::seed_module(&raft, &sm, std::time::Duration::from_secs(30))
                    .await
                    .map_err(NodeError::Raft)?;
            }
        } else {
            tracing::info!(node = %config.name, "already initialized; --bs ignored");
        }
    }
    let service = Service::new(
        config.name.clone(),
        config.advertise_addr.clone(),
        raft.clone(),
        sm,
        peers,
        config.limits,
    );
    Ok(Started { raft, service })
}
