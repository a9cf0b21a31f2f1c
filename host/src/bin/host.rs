//! `host`: one raftwasm node.
//!
//! `host --id node1 --address localhost:10001 --http localhost:9000 --bs` starts a node running
//! the embedded guest-kv and bootstraps a one-node cluster (first start only). Every flag can also
//! be set through the environment variable named in `--help`.

use anyhow::{Context, Result};
use clap::Parser;
use host::fsm::{module, GuestLimits, GuestModule, MachineSpec};
use host::node::{self, NodeConfig, DEFAULT_ELECTION_TIMEOUT_MS, DEFAULT_HEARTBEAT_MS};
use host::service::{self, Limits};
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

const DEFAULT_ADDRESS: &str = "localhost:10001";
const DEFAULT_HTTP: &str = "localhost:9000";

/// One raftwasm node: Raft over gRPC, a wasm state machine, an HTTP gateway.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// This node's id (letters, digits, '-', '_', '.').
    #[arg(long, env = "RAFTWASM_ID")]
    id: String,
    /// gRPC address to listen on and advertise (Raft and client services). Port 0 picks a free
    /// port, which is then advertised.
    #[arg(long, env = "RAFTWASM_ADDRESS", default_value = DEFAULT_ADDRESS)]
    address: String,
    /// HTTP gateway address.
    #[arg(long, env = "RAFTWASM_HTTP", default_value = DEFAULT_HTTP)]
    http: String,
    /// Bootstrap a one-node cluster with this node, if it was never initialized.
    #[arg(long, env = "RAFTWASM_BOOTSTRAP")]
    bs: bool,
    /// Guest component to run; the embedded guest-kv when absent.
    #[arg(long, env = "RAFTWASM_FSM")]
    fsm: Option<PathBuf>,
    /// Benchmark baseline only: run guest-kv compiled natively into the host instead of a wasm
    /// guest (no fuel, no memory cap, no isolation). Not for production.
    #[arg(
        long,
        env = "RAFTWASM_NATIVE_FSM",
        conflicts_with = "fsm",
        hide_short_help = true
    )]
    native_fsm: bool,
    /// Data directory; `./data/<id>` when absent.
    #[arg(long, env = "RAFTWASM_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Fuel for one apply or query call into the guest.
    #[arg(long, env = "RAFTWASM_FUEL_PER_APPLY", default_value_t = module::DEFAULT_FUEL_PER_APPLY)]
    fuel_per_apply: u64,
    /// Fuel for one snapshot or restore call into the guest.
    #[arg(long, env = "RAFTWASM_FUEL_PER_SNAPSHOT", default_value_t = module::DEFAULT_FUEL_PER_SNAPSHOT)]
    fuel_per_snapshot: u64,
    /// Cap on the guest's linear memory, MiB.
    #[arg(long, env = "RAFTWASM_GUEST_MEMORY_MIB", default_value_t = module::DEFAULT_GUEST_MEMORY_MIB)]
    guest_memory_mib: u64,
    /// Largest key, bytes.
    #[arg(long, env = "RAFTWASM_MAX_KEY_BYTES", default_value_t = service::DEFAULT_MAX_KEY_BYTES)]
    max_key_bytes: usize,
    /// Largest value, bytes.
    #[arg(long, env = "RAFTWASM_MAX_VALUE_BYTES", default_value_t = service::DEFAULT_MAX_VALUE_BYTES)]
    max_value_bytes: usize,
    /// Largest Apply command or Query request, bytes.
    #[arg(long, env = "RAFTWASM_MAX_COMMAND_BYTES", default_value_t = service::DEFAULT_MAX_COMMAND_BYTES)]
    max_command_bytes: usize,
    /// Largest HTTP request body, bytes.
    #[arg(long, env = "RAFTWASM_MAX_BODY_BYTES", default_value_t = host::http::DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// How long a write waits for commit (or a read for its read index), ms.
    #[arg(long, env = "RAFTWASM_REQUEST_TIMEOUT_MS", default_value_t = service::DEFAULT_REQUEST_TIMEOUT.as_millis() as u64)]
    request_timeout_ms: u64,
    /// How long AddNode waits for a new node to catch up, ms.
    #[arg(long, env = "RAFTWASM_CATCH_UP_TIMEOUT_MS", default_value_t = service::DEFAULT_CATCH_UP_TIMEOUT.as_millis() as u64)]
    catch_up_timeout_ms: u64,
    /// Raft heartbeat interval, ms.
    #[arg(long, env = "RAFTWASM_HEARTBEAT_MS", default_value_t = DEFAULT_HEARTBEAT_MS)]
    heartbeat_ms: u64,
    /// Build a snapshot (and purge the log behind it) every this many applied entries.
    #[arg(long, env = "RAFTWASM_SNAPSHOT_EVERY", default_value_t = node::DEFAULT_SNAPSHOT_EVERY)]
    snapshot_every: u64,
    /// Log entries kept behind a snapshot, so briefly lagging followers need no snapshot.
    #[arg(long, env = "RAFTWASM_SNAPSHOT_KEEP_LOGS", default_value_t = node::DEFAULT_SNAPSHOT_KEEP_LOGS)]
    snapshot_keep_logs: u64,
    /// Size each write-ahead log segment file is preallocated to, bytes.
    #[arg(long, env = "RAFTWASM_WAL_SEGMENT_BYTES", default_value_t = host::store::wal::DEFAULT_SEGMENT_BYTES,
          value_parser = clap::value_parser!(u64).range(4096..))]
    wal_segment_bytes: u64,
    /// Minimum Raft election timeout, ms (the maximum is twice this).
    #[arg(long, env = "RAFTWASM_ELECTION_TIMEOUT_MS", default_value_t = DEFAULT_ELECTION_TIMEOUT_MS)]
    election_timeout_ms: u64,
}

/// Replaces a zero port in `requested` by the port actually bound.
fn advertised(requested: &str, bound: std::net::SocketAddr) -> String {
    match requested.rsplit_once(':') {
        Some((host, "0")) => format!("{host}:{}", bound.port()),
        _ => requested.to_string(),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,openraft=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let limits = GuestLimits {
        fuel_per_apply: args.fuel_per_apply,
        fuel_per_snapshot: args.fuel_per_snapshot,
        memory_mib: args.guest_memory_mib,
    };
    let module = match &args.fsm {
        _ if args.native_fsm => MachineSpec::NativeGuestKv,
        Some(path) => MachineSpec::Wasm(GuestModule::from_file(path, limits)?),
        None => MachineSpec::Wasm(GuestModule::from_bytes(
            host::guests::GUEST_KV_NAME,
            host::guests::GUEST_KV,
            limits,
        )?),
    };
    let grpc = TcpListener::bind(&args.address)
        .await
        .with_context(|| format!("binding gRPC address {}", args.address))?;
    let http = TcpListener::bind(&args.http)
        .await
        .with_context(|| format!("binding HTTP address {}", args.http))?;
    let grpc_addr = advertised(&args.address, grpc.local_addr()?);
    let http_addr = advertised(&args.http, http.local_addr()?);
    let config = NodeConfig {
        data_dir: args
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("data").join(&args.id)),
        name: args.id.clone(),
        advertise_addr: grpc_addr.clone(),
        module: module.clone(),
        bootstrap: args.bs,
        limits: Limits {
            max_key_bytes: args.max_key_bytes,
            max_value_bytes: args.max_value_bytes,
            max_command_bytes: args.max_command_bytes,
            request_timeout: Duration::from_millis(args.request_timeout_ms),
            catch_up_timeout: Duration::from_millis(args.catch_up_timeout_ms),
        },
        max_body_bytes: args.max_body_bytes,
        heartbeat_ms: args.heartbeat_ms,
        election_timeout_ms: args.election_timeout_ms,
        snapshot_every: args.snapshot_every,
        snapshot_keep_logs: args.snapshot_keep_logs,
        wal_segment_bytes: args.wal_segment_bytes,
    };
    // One line on stdout that scripts and tests read to learn the bound addresses.
    println!(
        "raftwasm node {} grpc={grpc_addr} http={http_addr} fsm={} ({})",
        args.id,
        module.name(),
        &module.hash()[..12]
    );
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    node::run(config, grpc, http, shutdown).await?;
    Ok(())
}
