//! Starting a node: opens its storage, starts openraft, bootstraps a one-node cluster when
//! asked (once), and serves gRPC and HTTP until shutdown.
//!
//! The caller binds the listeners (tests bind `127.0.0.1:0`), as mini-redis's `server::run` does;
//! the configuration is [`NodeConfig`], validated here before anything starts.

pub use crate::config::NodeConfig;

use crate::auth::{Authenticator, UsersFileError};
use crate::config::{ConfigError, FsmSource, MAX_GRPC_MESSAGE_BYTES};
use crate::fsm::{CodeCache, GuestModule, LoadError, MachineSpec};
use crate::grpc::client_service::ClientService;
use crate::grpc::coalesce::Coalescing;
use crate::grpc::observe::ObserveLayer;
use crate::grpc::raft_service::RaftService;
use crate::http::ClientCertificate;
use crate::metrics::Metrics;
use crate::network::{Network, PeerPool, Removals};
use crate::proto::{client_server::ClientServer, raft_server::RaftServer};
use crate::service::{Parts, Service};
use crate::store::{offload, verify_envelope, LogStore, Raft, Retention, StateMachine};
use crate::tls::{self, PeerCerts, ServerTls, TlsListener};
use crate::types::{metrics_settled, node_id, Member};
use futures::{Stream, StreamExt};
use openraft::async_runtime::WatchReceiver;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

/// How long a restarted node waits for its committed log to be replayed before it reports which
/// module it runs.
const REPLAY_WAIT: Duration = Duration::from_secs(10);

/// Why a node could not start or stopped.
#[derive(Debug, Error)]
pub enum NodeError {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Module(#[from] LoadError),
    #[error("cannot open storage in {dir}: {source}")]
    Storage {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("raft failed: {0}")]
    Raft(#[from] openraft::error::Fatal<crate::types::TypeConfig>),
    #[error("bootstrap failed: {0}")]
    Bootstrap(
        #[source]
        openraft::error::RaftError<
            crate::types::TypeConfig,
            openraft::error::InitializeError<crate::types::TypeConfig>,
        >,
    ),
    #[error(transparent)]
    Seed(#[from] crate::seed::SeedError),
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Auth(#[from] UsersFileError),
    #[error("server failed: {0}")]
    Serve(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// A started node: its Raft handle and service layer, for the binary and for tests.
#[derive(Clone)]
pub struct Started {
    pub raft: Raft,
    pub service: Service,
    /// The module the configuration named (what `--fsm` loaded).
    pub configured: MachineSpec,
    /// Channels to the other nodes (Raft and forwarding share them).
    pub peers: PeerPool,
    /// Checks clients' credentials (lets everyone through without `--auth-file`).
    pub auth: Authenticator,
}

impl std::fmt::Debug for Started {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Started")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

/// Starts the node and serves until `shutdown` resolves, then stops Raft. The advertised
/// address comes from the configuration and the bound gRPC listener.
pub async fn run(
    config: NodeConfig,
    grpc: TcpListener,
    http: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    let advertise = config
        .network
        .advertised(grpc.local_addr().map_err(serve_error)?);
    let started = start(&config, advertise).await?;
    serve(&config, started, grpc, http, shutdown).await
}

fn serve_error(e: impl std::error::Error + Send + Sync + 'static) -> NodeError {
    NodeError::Serve(Box::new(e))
}

/// Serves a started node's gRPC and HTTP (over TLS when `config.tls` says so) until `shutdown`
/// resolves, then stops Raft.
pub async fn serve(
    config: &NodeConfig,
    started: Started,
    grpc: TcpListener,
    http: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    let tls = match config.tls.enabled() {
        true => Some((
            ServerTls::load(&config.tls, tls::Listener::Grpc)?,
            ServerTls::load(&config.tls, tls::Listener::Http)?,
        )),
        false => None,
    };
    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let stopped = |tx: &tokio::sync::broadcast::Sender<()>| {
        let mut rx = tx.subscribe();
        async move {
            let _ = rx.recv().await;
        }
    };

    let routes = grpc_routes(config, &started, tls.as_ref().map(|(grpc, _)| grpc.peers()));
    let app = crate::http::router(
        started.service.clone(),
        started.auth.clone(),
        config.limits.max_body_bytes,
    );
    let (grpc_task, http_task) = match tls {
        Some((grpc_tls, http_tls)) => {
            let (pool, files) = (started.peers.clone(), config.tls.clone());
            tls::watch(
                vec![grpc_tls.clone(), http_tls.clone()],
                move || match tls::peer_client(&files) {
                    Ok(dial) => pool.set_tls(dial),
                    Err(e) => tracing::error!(error = %e, "keeping the peer certificate in use"),
                },
            );
            // Coalescing above TLS: HTTP/2 sees a stream that is not vectored and buffers
            // small replies (a TLS stream is vectored, and HTTP/2 then flushed each reply on
            // its own), and one flush becomes one run of records and one send.
            let incoming =
                tls::incoming(no_delay(grpc), grpc_tls).map(|conn| conn.map(Coalescing::new));
            let http = TlsListener::new(http, http_tls).map_err(serve_error)?;
            let app = app.into_make_service_with_connect_info::<ClientCertificate>();
            let http_server = axum::serve(http, app).with_graceful_shutdown(stopped(&stop_tx));
            (
                tokio::spawn(routes.serve_with_incoming_shutdown(incoming, stopped(&stop_tx))),
                tokio::spawn(async move { http_server.await }),
            )
        }
        None => {
            let http = axum::serve::ListenerExt::tap_io(http, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let http_server = axum::serve(http, app).with_graceful_shutdown(stopped(&stop_tx));
            (
                tokio::spawn(routes.serve_with_incoming_shutdown(
                    no_delay(grpc).map(|conn| conn.map(Coalescing::new)),
                    stopped(&stop_tx),
                )),
                tokio::spawn(async move { http_server.await }),
            )
        }
    };
    // Raft stopping on its own (a failed write to the log, a panic) stops the node: it must
    // not go on answering reads or taking writes it can no longer make durable.
    let failed = tokio::select! {
        _ = shutdown => None,
        fatal = raft_stopped(&started.raft) => Some(fatal),
    };
    let _ = stop_tx.send(());
    let _ = started.raft.shutdown().await;
    grpc_task.await.map_err(serve_error)?.map_err(serve_error)?;
    http_task.await.map_err(serve_error)?.map_err(serve_error)?;
    match failed {
        Some(fatal) => Err(NodeError::Raft(fatal)),
        None => Ok(()),
    }
}

/// Resolves once Raft has stopped, with why.
async fn raft_stopped(raft: &Raft) -> openraft::error::Fatal<crate::types::TypeConfig> {
    let mut metrics = raft.metrics();
    loop {
        if let Err(fatal) = &metrics.borrow_and_update().running_state {
            tracing::error!(error = %fatal, "raft stopped; the node stops");
            return fatal.clone();
        }
        if metrics.changed().await.is_err() {
            return openraft::error::Fatal::Stopped;
        }
    }
}

/// Keeps the gRPC health service's answer (overall and for `raftwasm.v1.Client`) at the node's
/// readiness, looked at on each change of openraft's metrics and at least every second (a
/// transfer's pause changes no metric).
async fn watch_health(started: Started, health: tonic_health::server::HealthReporter) {
    use tonic_health::ServingStatus;
    let mut rx = started.raft.metrics();
    let mut serving = None;
    loop {
        let ready = started.service.readiness().ready;
        if serving != Some(ready) {
            let status = match ready {
                true => ServingStatus::Serving,
                false => ServingStatus::NotServing,
            };
            health.set_service_status("", status).await;
            health
                .set_service_status(HEALTH_CLIENT_SERVICE, status)
                .await;
            serving = Some(ready);
        }
        let tick = tokio::time::sleep(HEALTH_TICK);
        tokio::select! {
            running = metrics_settled(&mut rx, HEALTH_SETTLE) => if !running { return },
            _ = tick => {}
        }
    }
}

/// The name the gRPC health service reports the client service under.
const HEALTH_CLIENT_SERVICE: &str = "raftwasm.v1.Client";
/// How often readiness is looked at when nothing in Raft changes.
const HEALTH_TICK: Duration = Duration::from_secs(1);
/// How long a change of Raft's metrics waits for more before readiness is looked at again: a
/// probe's period is seconds, and under load the metrics change thousands of times a second.
const HEALTH_SETTLE: Duration = Duration::from_millis(50);

type Routes = tonic::transport::server::Router<
    tower::layer::util::Stack<ObserveLayer, tower::layer::util::Identity>,
>;

/// Every gRPC service: node-to-node `Raft` (admitting only `peers`' node certificates on a TLS
/// node), client-facing `Client`, and `grpc.health.v1.Health`; each call recorded in the
/// node's metrics.
fn grpc_routes(config: &NodeConfig, started: &Started, peers: Option<PeerCerts>) -> Routes {
    let (reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(watch_health(started.clone(), reporter));
    let mut raft = RaftService::new(started.raft.clone())
        .checking_snapshots(verify_envelope)
        .limiting_snapshots(config.max_snapshot_bytes());
    if let Some(peers) = peers.clone() {
        raft = raft.admitting(peers);
    }
    tonic::transport::Server::builder()
        .layer(ObserveLayer::new(
            started.service.recorder().requests().clone(),
        ))
        .add_service(health)
        .add_service(
            RaftServer::new(raft)
                .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES),
        )
        .add_service(
            ClientServer::new(ClientService::new(
                started.service.clone(),
                started.auth.clone(),
                peers,
            ))
            .max_decoding_message_size(config.max_client_message_bytes())
            .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES),
        )
}

/// Accepted connections with Nagle's algorithm off (Raft and client RPCs are small
/// request/response exchanges, and Nagle plus delayed ACKs would hold each reply for ~40 ms).
/// The caller wraps each in [`Coalescing`] (above TLS, when there is TLS), so replies that are
/// ready together are sent together.
fn no_delay(listener: TcpListener) -> impl Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    TcpListenerStream::new(listener).map(|conn| {
        let conn = conn?;
        conn.set_nodelay(true)?;
        Ok(conn)
    })
}

/// Loads (compiles and validates) the state machine the configuration names.
pub fn load_machine(config: &NodeConfig) -> Result<MachineSpec, LoadError> {
    let cache = CodeCache::in_data_dir(&config.storage.data_dir);
    Ok(match &config.fsm {
        FsmSource::NativeGuestKv => MachineSpec::NativeGuestKv,
        FsmSource::File(path) => {
            MachineSpec::Wasm(GuestModule::load_file(path, config.guest, Some(&cache))?)
        }
        FsmSource::Embedded => MachineSpec::Wasm(GuestModule::load(
            crate::guests::GUEST_KV_NAME,
            crate::guests::GUEST_KV,
            config.guest,
            Some(&cache),
        )?),
    })
}

/// Creates the data directory, where guests' large rollback checkpoints are spilled too.
fn prepare_data_dir(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    crate::fsm::spill_checkpoints_in(dir);
    Ok(())
}

/// Validates the configuration, opens storage and starts Raft (without serving); bootstraps if
/// configured to. `advertise` is the gRPC address other nodes and clients use to reach it.
pub async fn start(config: &NodeConfig, advertise: String) -> Result<Started, NodeError> {
    config.validate()?;
    // TLS files that do not load stop the node before it touches its data.
    let dial = tls::peer_client(&config.tls)?;
    if config.tls.enabled() {
        ServerTls::load(&config.tls, tls::Listener::Grpc)?;
    }
    let auth = match &config.auth.users_file {
        Some(path) => Authenticator::load(path)?,
        None => Authenticator::default(),
    };
    let configured = {
        let config = config.clone();
        offload(move || load_machine(&config))
            .await
            .map_err(serve_error)??
    };
    let dir = config.storage.data_dir.clone();
    let storage = |source: std::io::Error| NodeError::Storage {
        dir: dir.clone(),
        source,
    };
    prepare_data_dir(&dir).map_err(storage)?;
    let metrics = Metrics::new()?;
    let segment_bytes = config.storage.wal_segment_bytes;
    let log =
        LogStore::open(&dir, segment_bytes, Some(metrics.storage().clone())).map_err(storage)?;
    log.set_node(node_id(&config.name));
    let sm = {
        let (dir, spec, metrics) = (dir.clone(), configured.clone(), metrics.clone());
        let retention = Retention {
            entries: config.watch.history_entries,
            bytes: config.watch.history_bytes,
        };
        offload(move || StateMachine::open(dir, spec, Some(metrics), retention))
            .await
            .map_err(serve_error)?
            .map_err(storage)?
    };

    let raft_config = raft_config(config)?;

    let peers = PeerPool::default();
    peers.set_tls(dial);
    let id = node_id(&config.name);
    let removals = Removals::default();
    let network = Network::new(peers.clone()).reporting_removals(removals.clone());
    let raft = Raft::new(id, Arc::new(raft_config), network, log, sm.clone()).await?;
    sm.snapshot_trigger()
        .set_every(config.raft.snapshot_every_commands);
    tokio::spawn(snapshot_by_commands(raft.clone(), sm.clone()));
    let events = crate::events::watch(&raft, config.name.clone(), sm.clone(), metrics.clone());

    if raft.is_initialized().await? {
        restarted(config, &raft).await;
    } else if config.bootstrap {
        bootstrap(config, &advertise, &raft, &sm).await?;
    }
    let service = Service::new(Parts {
        name: config.name.clone(),
        addr: advertise,
        raft: raft.clone(),
        sm,
        peers: peers.clone(),
        limits: config.limits,
        metrics,
        removals,
        events,
        watch: config.watch,
    });
    service.watch_standing();
    Ok(Started {
        raft,
        service,
        configured,
        peers,
        auth,
    })
}

/// Builds a snapshot whenever the state machine has applied `--snapshot-every-commands` since
/// the last one (openraft's own policy counts entries). Ends when the node does.
async fn snapshot_by_commands(raft: Raft, sm: StateMachine) {
    loop {
        sm.snapshot_trigger().wanted().await;
        if raft.trigger().snapshot().await.is_err() {
            return;
        }
    }
}

/// A node started on an initialized data directory: `--bs` has nothing to do, and a node that
/// is its cluster's only voter campaigns at once instead of after an election timeout (1-2 s by
/// default): no other node can lead, so the wait would only delay its first read and write.
async fn restarted(config: &NodeConfig, raft: &Raft) {
    if config.bootstrap {
        tracing::info!(node = %config.name, "already initialized; --bs ignored");
    }
    let sole = {
        let m = raft.metrics();
        let m = m.borrow_watched();
        let mut voters = m.membership_config.membership().voter_ids();
        voters.next() == Some(m.id) && voters.next().is_none()
    };
    if sole {
        if let Err(e) = raft.trigger().elect(false).await {
            tracing::warn!(error = %e, "could not start an election as the only voter");
        }
    }
}

/// openraft's configuration from the node's Raft timing.
fn raft_config(config: &NodeConfig) -> Result<openraft::Config, ConfigError> {
    let timing = &config.raft;
    openraft::Config {
        cluster_name: "raftwasm".into(),
        heartbeat_interval: timing.heartbeat_ms,
        election_timeout_min: timing.election_timeout_ms,
        election_timeout_max: timing.election_timeout_ms * 2,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(timing.snapshot_every),
        max_in_snapshot_log_to_keep: timing.snapshot_keep_logs,
        // A restarted leader must win an election in a new term, as in Raft. openraft's leader
        // restore lets it lead again in its old term, but it replicated entries its own log had
        // not made durable: after a crash it writes different entries at those indexes, which
        // the followers already hold under the same term, and replicas part.
        enable_leader_restore: Some(false),
        ..Default::default()
    }
    .validate()
    .map_err(|e| ConfigError::Invalid(e.to_string()))
}

/// Initializes a one-node cluster of this node and logs its module as the seed entry.
async fn bootstrap(
    config: &NodeConfig,
    advertise: &str,
    raft: &Raft,
    sm: &StateMachine,
) -> Result<(), NodeError> {
    let me = Member {
        name: config.name.clone(),
        addr: advertise.to_string(),
    };
    raft.initialize(BTreeMap::from([(node_id(&config.name), me)]))
        .await
        .map_err(NodeError::Bootstrap)?;
    tracing::info!(node = %config.name, "bootstrapped a one-node cluster");
    // The failpoint stands for a crash between initializing and seeding (tests only): the
    // first write on the leader then logs the seed instead.
    if crate::failpoints::is_set(crate::failpoints::SKIP_SEED) {
        return Ok(());
    }
    crate::seed::seed_module(raft, sm, Duration::from_secs(30)).await?;
    Ok(())
}

/// The hash of the module the node runs once the committed log it restarted with is replayed
/// (waited for at most a few seconds). When that is not the module `--fsm` named, warns that the
/// flag was ignored: a cluster's module changes only through an upgrade.
pub async fn active_module(started: &Started) -> String {
    let mut rx = started.raft.metrics();
    let committed = rx.borrow_watched().local_committed.map(|l| l.index);
    let replayed =
        rx.wait_until(|m: &crate::types::RaftMetrics| m.last_applied.map(|l| l.index) >= committed);
    let _ = tokio::time::timeout(REPLAY_WAIT, replayed).await;
    let active = started.service.local_status();
    let configured = &started.configured;
    if active.fsm_module_hash != configured.hash() {
        let hash = &active.fsm_module_hash;
        tracing::warn!(
            "--fsm {} ignored: this data dir already runs module sha256:{} (active since log \
             index {}); a cluster's module changes only through an upgrade (POST /v1/fsm)",
            configured.name(),
            &hash[..12.min(hash.len())],
            active.fsm_module_since_index,
        );
    }
    active.fsm_module_hash
}
