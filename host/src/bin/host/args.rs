//! `host`'s command line: one clap group per configuration group of [`host::config`], each
//! mapped onto it whole. Defaults come from `host::config`'s constants; every flag can also be
//! set through the environment variable `--help` names.

use clap::{Args, Parser, Subcommand, ValueEnum};
use host::config::{
    self, AuthConfig, FsmSource, GuestLimits, Limits, NetworkConfig, NodeConfig, RaftTiming,
    StorageConfig, TlsConfig, WatchConfig,
};
use std::path::PathBuf;
use std::time::Duration;

/// One raftwasm node: Raft over gRPC, a wasm state machine, an HTTP gateway. A flag given twice
/// takes its last value, as Go's flag package (the original kvserver's) does, so a wrapper
/// script's defaults can be overridden by appending.
#[derive(Debug, Parser)]
#[command(
    version,
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true,
    args_override_self = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Log lines on stderr: `text` for people (coloured only on a terminal) or `json`, one
    /// object per line, for a log collector. RUST_LOG filters them (default
    /// `info,openraft=warn`).
    #[arg(
        long,
        env = "RAFTWASM_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
    /// Tokio worker threads for the node's async work (guest calls and log writes have threads
    /// of their own). Default: half the cores, at least 1.
    #[arg(
        long,
        env = "RAFTWASM_WORKER_THREADS",
        default_value_t = config::default_worker_threads() as u16,
        value_parser = clap::value_parser!(u16).range(1..=config::MAX_WORKER_THREADS as i64),
        global = true
    )]
    pub worker_threads: u16,
    /// This node's id (letters, digits, '-', '_', '.').
    #[arg(long, env = "RAFTWASM_ID", required = true)]
    pub id: Option<String>,
    /// Bootstrap a one-node cluster with this node, if it was never initialized.
    #[arg(long, env = "RAFTWASM_BOOTSTRAP")]
    pub bs: bool,
    #[command(flatten)]
    pub fsm: FsmArgs,
    #[command(flatten)]
    pub network: NetworkArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub auth: AuthArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub guest: GuestArgs,
    #[command(flatten)]
    pub raft: RaftArgs,
    #[command(flatten)]
    pub storage: StorageArgs,
    #[command(flatten)]
    pub watch: WatchArgs,
}

/// The change feed watchers read.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Revisions (log entries) whose changes are kept for watchers; at least --snapshot-keep-logs.
    #[arg(long, env = "RAFTWASM_WATCH_HISTORY", default_value_t = config::DEFAULT_WATCH_HISTORY_ENTRIES)]
    pub watch_history: u64,
    /// Bytes of memory the change feed keeps for watchers; past it the oldest revisions go first.
    #[arg(long, env = "RAFTWASM_WATCH_HISTORY_BYTES", default_value_t = config::DEFAULT_WATCH_HISTORY_BYTES)]
    pub watch_history_bytes: usize,
    /// A watcher that reads nothing for this long while its stream is full is cut off, ms.
    #[arg(long, env = "RAFTWASM_WATCH_SLOW_CUTOFF_MS", default_value_t = config::DEFAULT_WATCH_SLOW_CUTOFF.as_millis() as u64)]
    pub watch_slow_cutoff_ms: u64,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The state machine.
#[derive(Debug, Args)]
pub struct FsmArgs {
    /// Guest component to seed a new cluster with; the embedded guest-kv when absent. A node
    /// that already has data runs the module its data says (changed only by an upgrade).
    #[arg(long, env = "RAFTWASM_FSM")]
    pub fsm: Option<PathBuf>,
    /// Benchmark baseline only: run guest-kv compiled natively into the host instead of a wasm
    /// guest (no fuel, no memory cap, no isolation). Not for production.
    #[arg(
        long,
        env = "RAFTWASM_NATIVE_FSM",
        conflicts_with = "fsm",
        hide_short_help = true
    )]
    pub native_fsm: bool,
}

/// Where the node listens and what it advertises.
#[derive(Debug, Args)]
pub struct NetworkArgs {
    /// gRPC address to listen on (Raft and client services); `0.0.0.0:P` listens on every
    /// interface (then set --advertise-address). Port 0 picks a free port.
    #[arg(long, env = "RAFTWASM_ADDRESS", default_value = config::DEFAULT_ADDRESS)]
    pub address: String,
    /// gRPC address other nodes and clients use to reach this node (a name that resolves to
    /// it, behind NAT or in a container); --address when absent. Port 0: the port bound.
    #[arg(long, env = "RAFTWASM_ADVERTISE_ADDRESS")]
    pub advertise_address: Option<String>,
    /// HTTP gateway address to listen on.
    #[arg(long, env = "RAFTWASM_HTTP", default_value = config::DEFAULT_HTTP_ADDRESS)]
    pub http: String,
    /// Listen beyond loopback without TLS and client certificates (a network you trust).
    #[arg(long, env = "RAFTWASM_INSECURE")]
    pub insecure: bool,
}

/// TLS for clients (gRPC and HTTP) and between nodes (the gRPC port). Files are reloaded when
/// they change and on SIGHUP.
#[derive(Debug, Args)]
pub struct TlsArgs {
    /// PEM certificate chain (leaf first) to serve; turns TLS on for gRPC and HTTP.
    #[arg(long, env = "RAFTWASM_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "RAFTWASM_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates; clients must then present a certificate one of them signed.
    #[arg(long, env = "RAFTWASM_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// PEM CA certificates that sign node certificates (needed with --tls-cert): the Raft
    /// service admits only those, naming the node they speak for.
    #[arg(long, env = "RAFTWASM_PEER_CA", requires = "tls_cert")]
    pub peer_ca: Option<PathBuf>,
    /// PEM certificate this node presents when it dials other nodes; --tls-cert when absent.
    #[arg(long, env = "RAFTWASM_PEER_CERT", requires = "peer_key")]
    pub peer_cert: Option<PathBuf>,
    /// PEM private key of --peer-cert.
    #[arg(long, env = "RAFTWASM_PEER_KEY", requires = "peer_cert")]
    pub peer_key: Option<PathBuf>,
}

/// Authentication and authorization.
#[derive(Debug, Args)]
pub struct AuthArgs {
    /// Users file (JSON, or TOML if it ends in .toml): users with argon2 password hashes,
    /// bearer token hashes or client certificate names, and their permissions. Without it,
    /// every request may do everything.
    #[arg(long, env = "RAFTWASM_AUTH_FILE")]
    pub auth_file: Option<PathBuf>,
}

/// Helpers that run instead of a node.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Secrets for the users file.
    #[command(subcommand)]
    Auth(AuthCommand),
    /// The write-ahead log of a stopped node.
    #[command(subcommand)]
    Wal(WalCommand),
    /// Seeds a new one-node cluster from a backup file (`kvclient --command backup`, or
    /// `GET /v1/backup`): checks the file whole, then writes the state at the backup's index into
    /// an empty data dir. Start the node on it afterwards (without --bs) and add nodes as usual.
    Restore(RestoreArgs),
    /// Guest components: write a new one on the SDK, check one before deploying it.
    #[command(subcommand)]
    Guest(GuestCommand),
    /// A one-node cluster for developing a guest: it watches the wasm file and, each time it
    /// changes, checks the new version (as `guest check`), prints the verdict, and upgrades the
    /// running state machine through the log (as `POST /v1/fsm`), so the state migrates.
    Dev(DevArgs),
}

#[derive(Debug, Args)]
pub struct DevArgs {
    /// The guest component to run and watch.
    #[arg(long)]
    pub fsm: PathBuf,
    /// A `guest check` script for each new version (default: 1,000 generated guest-kv steps).
    #[arg(long)]
    pub commands: Option<PathBuf>,
    /// gRPC address.
    #[arg(long, default_value = config::DEFAULT_ADDRESS)]
    pub address: String,
    /// HTTP address.
    #[arg(long, default_value = config::DEFAULT_HTTP_ADDRESS)]
    pub http: String,
    /// Data directory (default: a new one under the system's temporary directory).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum GuestCommand {
    /// Runs a guest component over a script on two fresh instances, and on a third restored
    /// from a snapshot halfway; prints its world, exports and imports, fuel and memory per
    /// command and the largest snapshot, and exits non-zero if any run answers or ends
    /// differently (or it imports what the host does not provide).
    Check(CheckArgs),
    /// Writes a new guest crate on the SDK (a counter to edit) that `cargo build --release`
    /// builds as it is.
    New(NewArgs),
}

#[derive(Debug, Args)]
pub struct NewArgs {
    /// The crate's name (and directory).
    pub name: String,
    /// Where to create it.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// The SDK crate (`guest-sdk/` of this repository, where this host was built).
    #[arg(long)]
    pub sdk: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The component (.wasm).
    pub guest: PathBuf,
    /// A script, one step per line: `{"apply": X}` or `{"query": X}` (X a JSON string, sent as
    /// its text, or any other JSON value, sent as its JSON), or a command's bytes as they are.
    /// Without it: a generated guest-kv script of --generate steps.
    #[arg(long)]
    pub commands: Option<PathBuf>,
    /// Steps of the generated guest-kv script.
    #[arg(long, default_value_t = 10_000)]
    pub generate: usize,
    /// Seed of the generated guest-kv script.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup file.
    #[arg(long)]
    pub from: PathBuf,
    /// The new node's id.
    #[arg(long)]
    pub id: String,
    /// Its data directory (must be empty or absent); `./data/<id>` when absent.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The gRPC address the node will be started with (its address in the new cluster).
    #[arg(long, default_value = config::DEFAULT_ADDRESS)]
    pub address: String,
    /// The address other nodes and clients will reach it at, if not --address.
    #[arg(long)]
    pub advertise_address: Option<String>,
}

impl RestoreArgs {
    /// The configuration of the node the backup is restored into.
    pub fn into_config(self) -> NodeConfig {
        let mut config = NodeConfig::new(&self.id);
        if let Some(dir) = self.data_dir {
            config.storage.data_dir = dir;
        }
        config.network.address = self.address;
        config.network.advertise_address = self.advertise_address;
        config
    }
}

#[derive(Debug, Subcommand)]
pub enum WalCommand {
    /// Checks a stopped node's log and snapshot without changing them: prints what each
    /// segment holds, and exits with status 1 naming the damage if a node could not start on
    /// it (or would be missing data).
    Verify {
        /// The node's data directory (its `--data-dir`).
        #[arg(long)]
        data_dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Reads a password from standard input (one line) and prints its argon2id hash, for a
    /// user's `password` in the users file.
    HashPassword,
    /// Prints a new random bearer token, then the line that stores it in a user's `tokens`.
    NewToken,
}

/// Request size and time limits.
#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Largest key, bytes.
    #[arg(long, env = "RAFTWASM_MAX_KEY_BYTES", default_value_t = config::DEFAULT_MAX_KEY_BYTES)]
    pub max_key_bytes: usize,
    /// Largest value, bytes.
    #[arg(long, env = "RAFTWASM_MAX_VALUE_BYTES", default_value_t = config::DEFAULT_MAX_VALUE_BYTES)]
    pub max_value_bytes: usize,
    /// Largest Apply command or Query request, bytes.
    #[arg(long, env = "RAFTWASM_MAX_COMMAND_BYTES", default_value_t = config::DEFAULT_MAX_COMMAND_BYTES)]
    pub max_command_bytes: usize,
    /// Largest HTTP request body, bytes.
    #[arg(long, env = "RAFTWASM_MAX_BODY_BYTES", default_value_t = config::DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// How long a write waits for commit (or a read for its read index), ms.
    #[arg(long, env = "RAFTWASM_REQUEST_TIMEOUT_MS", default_value_t = config::DEFAULT_REQUEST_TIMEOUT.as_millis() as u64)]
    pub request_timeout_ms: u64,
    /// How long AddNode waits for a new node to catch up, ms.
    #[arg(long, env = "RAFTWASM_CATCH_UP_TIMEOUT_MS", default_value_t = config::DEFAULT_CATCH_UP_TIMEOUT.as_millis() as u64)]
    pub catch_up_timeout_ms: u64,
}

/// Limits of every guest call (the same on every node of a cluster).
#[derive(Debug, Args)]
pub struct GuestArgs {
    /// Fuel for one apply or query call into the guest.
    #[arg(long, env = "RAFTWASM_FUEL_PER_APPLY", default_value_t = config::DEFAULT_FUEL_PER_APPLY)]
    pub fuel_per_apply: u64,
    /// Fuel for one snapshot or restore call into the guest.
    #[arg(long, env = "RAFTWASM_FUEL_PER_SNAPSHOT", default_value_t = config::DEFAULT_FUEL_PER_SNAPSHOT)]
    pub fuel_per_snapshot: u64,
    /// Cap on the guest's linear memory, MiB.
    #[arg(long, env = "RAFTWASM_GUEST_MEMORY_MIB", default_value_t = config::DEFAULT_GUEST_MEMORY_MIB)]
    pub guest_memory_mib: u64,
}

/// Raft timing and log compaction.
#[derive(Debug, Args)]
pub struct RaftArgs {
    /// Raft heartbeat interval, ms.
    #[arg(long, env = "RAFTWASM_HEARTBEAT_MS", default_value_t = config::DEFAULT_HEARTBEAT_MS)]
    pub heartbeat_ms: u64,
    /// Minimum Raft election timeout, ms (the maximum is twice this).
    #[arg(long, env = "RAFTWASM_ELECTION_TIMEOUT_MS", default_value_t = config::DEFAULT_ELECTION_TIMEOUT_MS)]
    pub election_timeout_ms: u64,
    /// Build a snapshot (and purge the log behind it) every this many applied entries.
    #[arg(long, env = "RAFTWASM_SNAPSHOT_EVERY", default_value_t = config::DEFAULT_SNAPSHOT_EVERY)]
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot, so briefly lagging followers need no snapshot.
    #[arg(long, env = "RAFTWASM_SNAPSHOT_KEEP_LOGS", default_value_t = config::DEFAULT_SNAPSHOT_KEEP_LOGS)]
    pub snapshot_keep_logs: u64,
    /// Also build a snapshot once this many commands were applied since the last (0: only by
    /// entries): bounds what a restart replays when entries carry large batches.
    #[arg(long, env = "RAFTWASM_SNAPSHOT_EVERY_COMMANDS", default_value_t = config::DEFAULT_SNAPSHOT_EVERY_COMMANDS)]
    pub snapshot_every_commands: u64,
}

/// Where data lives.
#[derive(Debug, Args)]
pub struct StorageArgs {
    /// Data directory; `./data/<id>` when absent.
    #[arg(long, env = "RAFTWASM_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Size each write-ahead log segment file is preallocated to, bytes.
    #[arg(long, env = "RAFTWASM_WAL_SEGMENT_BYTES", default_value_t = config::DEFAULT_SEGMENT_BYTES)]
    pub wal_segment_bytes: u64,
}

impl Cli {
    /// The node configuration these flags describe (validated when the node starts).
    pub fn into_config(self) -> NodeConfig {
        // clap requires --id whenever no subcommand is given.
        let id = self.id.unwrap_or_default();
        let storage = StorageConfig {
            data_dir: self
                .storage
                .data_dir
                .unwrap_or_else(|| StorageConfig::for_node(&id).data_dir),
            wal_segment_bytes: self.storage.wal_segment_bytes,
        };
        NodeConfig {
            bootstrap: self.bs,
            fsm: self.fsm.into(),
            network: self.network.into(),
            tls: self.tls.into(),
            auth: AuthConfig {
                users_file: self.auth.auth_file,
            },
            limits: self.limits.into(),
            guest: self.guest.into(),
            raft: self.raft.into(),
            storage,
            watch: WatchConfig {
                history_entries: self.watch.watch_history,
                history_bytes: self.watch.watch_history_bytes,
                slow_cutoff: Duration::from_millis(self.watch.watch_slow_cutoff_ms),
            },
            name: id,
        }
    }
}

impl From<FsmArgs> for FsmSource {
    fn from(a: FsmArgs) -> Self {
        match a.fsm {
            _ if a.native_fsm => FsmSource::NativeGuestKv,
            Some(path) => FsmSource::File(path),
            None => FsmSource::Embedded,
        }
    }
}

impl From<NetworkArgs> for NetworkConfig {
    fn from(a: NetworkArgs) -> Self {
        NetworkConfig {
            address: a.address,
            advertise_address: a.advertise_address,
            http_address: a.http,
            insecure: a.insecure,
        }
    }
}

impl From<TlsArgs> for TlsConfig {
    fn from(a: TlsArgs) -> Self {
        TlsConfig {
            cert: a.tls_cert,
            key: a.tls_key,
            client_ca: a.tls_client_ca,
            peer_ca: a.peer_ca,
            peer_cert: a.peer_cert,
            peer_key: a.peer_key,
        }
    }
}

impl From<LimitArgs> for Limits {
    fn from(a: LimitArgs) -> Self {
        Limits {
            max_key_bytes: a.max_key_bytes,
            max_value_bytes: a.max_value_bytes,
            max_command_bytes: a.max_command_bytes,
            max_body_bytes: a.max_body_bytes,
            request_timeout: Duration::from_millis(a.request_timeout_ms),
            catch_up_timeout: Duration::from_millis(a.catch_up_timeout_ms),
        }
    }
}

impl From<GuestArgs> for GuestLimits {
    fn from(a: GuestArgs) -> Self {
        GuestLimits {
            fuel_per_apply: a.fuel_per_apply,
            fuel_per_snapshot: a.fuel_per_snapshot,
            memory_mib: a.guest_memory_mib,
        }
    }
}

impl From<RaftArgs> for RaftTiming {
    fn from(a: RaftArgs) -> Self {
        RaftTiming {
            heartbeat_ms: a.heartbeat_ms,
            election_timeout_ms: a.election_timeout_ms,
            snapshot_every: a.snapshot_every,
            snapshot_keep_logs: a.snapshot_keep_logs,
            snapshot_every_commands: a.snapshot_every_commands,
        }
    }
}
