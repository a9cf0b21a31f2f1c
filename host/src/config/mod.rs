//! A node's configuration in one place: [`NodeConfig`], made of typed groups, each with its
//! defaults (the constants below are the only defaults in the crate) and a `validate()` that
//! refuses inconsistent combinations with a message naming the command-line flags involved.
//!
//! `bin/host.rs` maps its flag groups onto these groups one to one; tests and benchmarks build
//! them directly. [`NodeConfig::validate`] runs before a node starts.

mod runtime;
mod security;
mod watch;

pub use runtime::{default_worker_threads, MAX_WORKER_THREADS};
pub use security::{AuthConfig, TlsConfig};
pub use watch::{
    WatchConfig, DEFAULT_WATCH_HISTORY_BYTES, DEFAULT_WATCH_HISTORY_ENTRIES,
    DEFAULT_WATCH_SLOW_CUTOFF,
};

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;
use thiserror::Error;

/// gRPC address a node listens on and advertises when none is given.
pub const DEFAULT_ADDRESS: &str = "localhost:10001";
/// HTTP gateway address when none is given.
pub const DEFAULT_HTTP_ADDRESS: &str = "localhost:9000";

pub const DEFAULT_MAX_KEY_BYTES: usize = 4 * 1024;
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1024 * 1024;
pub const DEFAULT_MAX_COMMAND_BYTES: usize = 4 * 1024 * 1024;
/// Default cap on an HTTP request body.
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest guest module an upgrade accepts (not configurable: it bounds one log entry). Python and
/// JavaScript guests weigh tens of MiB (their interpreter is in the component).
pub const MAX_MODULE_BYTES: usize = 96 << 20;
/// Largest gRPC message a node sends or accepts (Raft batches and snapshot chunks included): room
/// for one module upgrade entry and framing.
pub const MAX_GRPC_MESSAGE_BYTES: usize = 128 << 20;

/// Default fuel for one `apply` or `query` call. A guest-kv put costs a few thousand units, so
/// this leaves four orders of magnitude of headroom while stopping a runaway loop in well under
/// a second.
pub const DEFAULT_FUEL_PER_APPLY: u64 = 100_000_000;
/// Default fuel for one `snapshot` or `restore` call, which walk the whole state.
pub const DEFAULT_FUEL_PER_SNAPSHOT: u64 = 200_000_000_000;
/// Default cap on a guest's linear memory. A guest holds its state and, while snapshotting, a
/// serialized copy of it: 2 GiB leaves room for a few hundred MiB of state.
pub const DEFAULT_GUEST_MEMORY_MIB: u64 = 2048;
/// A 32-bit wasm memory cannot grow past 4 GiB.
const MAX_GUEST_MEMORY_MIB: u64 = 4096;

pub const DEFAULT_HEARTBEAT_MS: u64 = 100;
pub const DEFAULT_ELECTION_TIMEOUT_MS: u64 = 1000;
/// Default number of applied entries between two automatic snapshots.
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 10_000;
/// Default number of log entries kept behind a snapshot for lagging followers.
pub const DEFAULT_SNAPSHOT_KEEP_LOGS: u64 = 1_000;
/// Default number of applied commands between two automatic snapshots (etcd's
/// `--snapshot-count` default): what a restart replays at most.
pub const DEFAULT_SNAPSHOT_EVERY_COMMANDS: u64 = 100_000;

/// Default size each write-ahead log segment file is preallocated to.
pub const DEFAULT_SEGMENT_BYTES: u64 = 8 << 20;
/// Smallest segment size: one page.
pub const MIN_SEGMENT_BYTES: u64 = 4096;

/// Room a guest-kv put command needs beyond its key and value (`{"op":"put","key":…}`).
const PUT_ENVELOPE_BYTES: usize = 64;

/// A configuration that cannot work; the message names the flags to change.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(String),
}

fn invalid(message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(message.into())
}

/// A node name that cannot be used.
#[derive(Debug, Error)]
#[error("node id {name:?} {rule}")]
pub struct BadNodeName {
    name: String,
    rule: &'static str,
}

/// Checks a node name: non-empty, at most 64 bytes, letters, digits, `-`, `_` and `.` only, so
/// it is safe in a path (the default data dir) and in a URL.
pub fn validate_node_name(name: &str) -> Result<(), BadNodeName> {
    let bad = |rule| {
        Err(BadNodeName {
            name: name.to_string(),
            rule,
        })
    };
    if name.is_empty() || name.len() > 64 {
        return bad("must be 1 to 64 bytes long");
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if !name.chars().all(allowed) || name.starts_with('.') {
        return bad(
            "may contain only letters, digits, '-', '_' and '.', and must not start with '.'",
        );
    }
    Ok(())
}

/// Where a node listens and how others reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// gRPC address to bind (`--address`); `0.0.0.0:P` binds every interface, port 0 picks one.
    pub address: String,
    /// gRPC address other nodes and clients dial (`--advertise-address`); `address` when absent.
    /// Port 0 stands for the port actually bound.
    pub advertise_address: Option<String>,
    /// HTTP gateway address to bind (`--http`).
    pub http_address: String,
    /// Serve beyond loopback without TLS and client authentication (`--insecure`).
    pub insecure: bool,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            address: DEFAULT_ADDRESS.into(),
            advertise_address: None,
            http_address: DEFAULT_HTTP_ADDRESS.into(),
            insecure: false,
        }
    }
}

fn split_host_port(addr: &str) -> Option<(&str, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host, port.parse().ok()?)).filter(|(h, _)| !h.is_empty())
}

fn is_unspecified(host: &str) -> bool {
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified())
}

impl NetworkConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (flag, addr) in [("--address", &self.address), ("--http", &self.http_address)] {
            if split_host_port(addr).is_none() {
                return Err(invalid(format!("{flag} {addr:?} must be host:port")));
            }
        }
        match &self.advertise_address {
            Some(adv) => match split_host_port(adv) {
                Some((host, _)) if !is_unspecified(host) => Ok(()),
                _ => Err(invalid(format!(
                    "--advertise-address {adv:?} must be a host:port other nodes can dial \
                     (a name or an address, not 0.0.0.0)"
                ))),
            },
            None => match split_host_port(&self.address) {
                Some((host, _)) if is_unspecified(host) => Err(invalid(format!(
                    "--address {} binds every interface, which no other node can dial: \
                     set --advertise-address to a host:port that reaches this node",
                    self.address
                ))),
                _ => Ok(()),
            },
        }
    }

    /// The gRPC address this node advertises, once its listener is bound to `bound`: the
    /// advertise address or else the bind address, a zero port replaced by the bound one.
    pub fn advertised(&self, bound: SocketAddr) -> String {
        let requested = self.advertise_address.as_ref().unwrap_or(&self.address);
        with_bound_port(requested, bound)
    }
}

/// The host part of a `host:port` address (brackets of an IPv6 address removed).
pub fn host_of(addr: &str) -> &str {
    split_host_port(addr).map_or(addr, |(host, _)| host)
}

/// Replaces a zero port in `requested` by the port actually bound.
pub fn with_bound_port(requested: &str, bound: SocketAddr) -> String {
    match requested.rsplit_once(':') {
        Some((host, "0")) => format!("{host}:{}", bound.port()),
        _ => requested.to_string(),
    }
}

/// Size and time limits of client requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    /// Largest `Apply` command or `Query` request.
    pub max_command_bytes: usize,
    /// Largest HTTP request body (a module upgrade has its own cap, [`MAX_MODULE_BYTES`]).
    pub max_body_bytes: usize,
    /// How long a write may wait for commit, or a read for its read index.
    pub request_timeout: Duration,
    /// How long AddNode waits for a new learner to catch up.
    pub catch_up_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: DEFAULT_MAX_KEY_BYTES,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            max_command_bytes: DEFAULT_MAX_COMMAND_BYTES,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            catch_up_timeout: DEFAULT_CATCH_UP_TIMEOUT,
        }
    }
}

impl Limits {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let nonzero = [
            ("--max-key-bytes", self.max_key_bytes),
            ("--max-value-bytes", self.max_value_bytes),
            ("--max-command-bytes", self.max_command_bytes),
            ("--max-body-bytes", self.max_body_bytes),
        ];
        if let Some((flag, _)) = nonzero.iter().find(|(_, v)| *v == 0) {
            return Err(invalid(format!("{flag} must be at least 1")));
        }
        let put = self.max_key_bytes + self.max_value_bytes + PUT_ENVELOPE_BYTES;
        if put > self.max_command_bytes {
            return Err(invalid(format!(
                "a put of the largest key and value ({} + {} bytes, plus {PUT_ENVELOPE_BYTES} of \
                 JSON) would not fit in --max-command-bytes {}: raise --max-command-bytes or \
                 lower --max-key-bytes / --max-value-bytes",
                self.max_key_bytes, self.max_value_bytes, self.max_command_bytes
            )));
        }
        if self.max_body_bytes < self.max_value_bytes {
            return Err(invalid(format!(
                "--max-body-bytes {} is below --max-value-bytes {}: an HTTP PUT carries the \
                 value as its body",
                self.max_body_bytes, self.max_value_bytes
            )));
        }
        if self.max_command_bytes >= MAX_GRPC_MESSAGE_BYTES {
            return Err(invalid(format!(
                "--max-command-bytes {} must be below the gRPC message limit of {} bytes \
                 (commands are forwarded and replicated over gRPC)",
                self.max_command_bytes, MAX_GRPC_MESSAGE_BYTES
            )));
        }
        if self.request_timeout.is_zero() || self.catch_up_timeout.is_zero() {
            return Err(invalid(
                "--request-timeout-ms and --catch-up-timeout-ms must be at least 1",
            ));
        }
        Ok(())
    }
}

/// The limits every guest call runs under. Part of the replicated contract: all nodes of a
/// cluster must use the same values, or a command near a limit could succeed on one node and fail
/// on another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestLimits {
    /// Fuel for one `apply` or `query` call (`--fuel-per-apply`).
    pub fuel_per_apply: u64,
    /// Fuel for one `snapshot` or `restore` call (`--fuel-per-snapshot`).
    pub fuel_per_snapshot: u64,
    /// Cap on guest linear memory, in MiB (`--guest-memory-mib`).
    pub memory_mib: u64,
}

impl Default for GuestLimits {
    fn default() -> Self {
        GuestLimits {
            fuel_per_apply: DEFAULT_FUEL_PER_APPLY,
            fuel_per_snapshot: DEFAULT_FUEL_PER_SNAPSHOT,
            memory_mib: DEFAULT_GUEST_MEMORY_MIB,
        }
    }
}

impl GuestLimits {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.fuel_per_apply == 0 || self.fuel_per_snapshot == 0 {
            return Err(invalid(
                "--fuel-per-apply and --fuel-per-snapshot must be at least 1",
            ));
        }
        if self.memory_mib == 0 || self.memory_mib > MAX_GUEST_MEMORY_MIB {
            return Err(invalid(format!(
                "--guest-memory-mib {} must be between 1 and {MAX_GUEST_MEMORY_MIB} (a wasm32 \
                 memory tops out at 4 GiB)",
                self.memory_mib
            )));
        }
        Ok(())
    }

    /// The memory cap in bytes.
    pub fn memory_bytes(&self) -> usize {
        usize::try_from(self.memory_mib.saturating_mul(1 << 20)).unwrap_or(usize::MAX)
    }
}

/// Raft timing and log compaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftTiming {
    /// `--heartbeat-ms`.
    pub heartbeat_ms: u64,
    /// Minimum election timeout (`--election-timeout-ms`); the maximum is twice this.
    pub election_timeout_ms: u64,
    /// Build a snapshot every this many applied entries (`--snapshot-every`).
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot when the log is purged (`--snapshot-keep-logs`).
    pub snapshot_keep_logs: u64,
    /// Also build a snapshot once this many commands were applied since the last one, however
    /// few entries carried them (`--snapshot-every-commands`; 0: only by entries).
    pub snapshot_every_commands: u64,
}

impl Default for RaftTiming {
    fn default() -> Self {
        RaftTiming {
            heartbeat_ms: DEFAULT_HEARTBEAT_MS,
            election_timeout_ms: DEFAULT_ELECTION_TIMEOUT_MS,
            snapshot_every: DEFAULT_SNAPSHOT_EVERY,
            snapshot_keep_logs: DEFAULT_SNAPSHOT_KEEP_LOGS,
            snapshot_every_commands: DEFAULT_SNAPSHOT_EVERY_COMMANDS,
        }
    }
}

impl RaftTiming {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.heartbeat_ms == 0 {
            return Err(invalid("--heartbeat-ms must be at least 1"));
        }
        // A follower must hear a few heartbeats per election timeout, or it campaigns against a
        // healthy leader.
        if self.election_timeout_ms < self.heartbeat_ms * 2 {
            return Err(invalid(format!(
                "--election-timeout-ms {} must be at least twice --heartbeat-ms {}",
                self.election_timeout_ms, self.heartbeat_ms
            )));
        }
        if self.snapshot_every == 0 {
            return Err(invalid("--snapshot-every must be at least 1"));
        }
        Ok(())
    }
}

/// Where and how the node keeps its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageConfig {
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// Size each write-ahead log segment file is preallocated to (`--wal-segment-bytes`).
    pub wal_segment_bytes: u64,
}

impl StorageConfig {
    /// `./data/<name>` with the default segment size.
    pub fn for_node(name: &str) -> Self {
        StorageConfig {
            data_dir: PathBuf::from("data").join(name),
            wal_segment_bytes: DEFAULT_SEGMENT_BYTES,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.wal_segment_bytes < MIN_SEGMENT_BYTES {
            return Err(invalid(format!(
                "--wal-segment-bytes {} must be at least {MIN_SEGMENT_BYTES}",
                self.wal_segment_bytes
            )));
        }
        Ok(())
    }
}

/// What a node runs as its state machine when it seeds a new cluster (`--fsm`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum FsmSource {
    /// The guest-kv component built into the binary.
    #[default]
    Embedded,
    /// A component file.
    File(PathBuf),
    /// Benchmark baseline only: guest-kv compiled natively, no sandbox (`--native-fsm`).
    NativeGuestKv,
}

/// Everything a node needs besides its listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// The node's name (`--id`).
    pub name: String,
    /// Initialize a one-node cluster if this node has never been initialized (`--bs`).
    pub bootstrap: bool,
    pub fsm: FsmSource,
    pub network: NetworkConfig,
    pub tls: TlsConfig,
    pub auth: AuthConfig,
    pub limits: Limits,
    pub guest: GuestLimits,
    pub raft: RaftTiming,
    pub storage: StorageConfig,
    pub watch: WatchConfig,
}

impl NodeConfig {
    /// Node `name` with every default (data in `./data/<name>`).
    pub fn new(name: &str) -> Self {
        NodeConfig {
            name: name.to_string(),
            bootstrap: false,
            fsm: FsmSource::Embedded,
            network: NetworkConfig::default(),
            tls: TlsConfig::default(),
            auth: AuthConfig::default(),
            limits: Limits::default(),
            guest: GuestLimits::default(),
            raft: RaftTiming::default(),
            storage: StorageConfig::for_node(name),
            watch: WatchConfig::default(),
        }
    }

    /// The largest snapshot this node could ever hold: its guest's memory cap (a snapshot is
    /// made in guest memory), the largest module, the change feed, and framing. A snapshot stream longer than
    /// this is refused as it arrives.
    pub fn max_snapshot_bytes(&self) -> usize {
        self.guest.memory_bytes() + MAX_MODULE_BYTES + self.watch.history_bytes + (1 << 20)
    }

    /// The largest gRPC message a client call may send: a command or a module (upgrade), and
    /// framing. A longer one is refused by its length, before it is read.
    pub fn max_client_message_bytes(&self) -> usize {
        self.limits.max_command_bytes.max(MAX_MODULE_BYTES) + (64 << 10)
    }

    /// Checks every group; the first problem found is the error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_node_name(&self.name).map_err(|e| invalid(format!("--id: {e}")))?;
        self.network.validate()?;
        self.tls.validate()?;
        self.check_exposure()?;
        self.limits.validate()?;
        self.guest.validate()?;
        self.raft.validate()?;
        self.watch.validate(self.raft.snapshot_keep_logs)?;
        self.storage.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(c: &NodeConfig) -> String {
        c.validate().unwrap_err().to_string()
    }

    #[test]
    fn node_names_are_checked() {
        assert!(validate_node_name("node1").is_ok());
        assert!(validate_node_name("db-2.eu_west").is_ok());
        for bad in ["", "../x", "a/b", "with space", ".hidden"] {
            assert!(validate_node_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_are_valid() {
        NodeConfig::new("node1").validate().unwrap();
    }

    #[test]
    fn inconsistent_combinations_name_their_flags() {
        let mut c = NodeConfig::new("node1");
        c.limits.max_value_bytes = c.limits.max_command_bytes;
        assert!(
            message(&c).contains("--max-command-bytes"),
            "{}",
            message(&c)
        );

        let mut c = NodeConfig::new("node1");
        c.limits.max_body_bytes = 1024;
        assert!(message(&c).contains("--max-body-bytes"));

        let mut c = NodeConfig::new("node1");
        c.raft.election_timeout_ms = c.raft.heartbeat_ms;
        assert!(message(&c).contains("--election-timeout-ms"));

        let mut c = NodeConfig::new("node1");
        c.guest.memory_mib = 8192;
        assert!(message(&c).contains("--guest-memory-mib"));

        let mut c = NodeConfig::new("bad name");
        c.name = "bad name".into();
        assert!(message(&c).contains("--id"));
    }

    #[test]
    fn a_wildcard_bind_needs_an_advertise_address() {
        let mut c = NodeConfig::new("node1");
        c.network.address = "0.0.0.0:10001".into();
        c.network.insecure = true;
        assert!(message(&c).contains("--advertise-address"));
        c.network.advertise_address = Some("0.0.0.0:10001".into());
        assert!(message(&c).contains("--advertise-address"));
        c.network.advertise_address = Some("node1.example:10001".into());
        c.validate().unwrap();
        let bound: SocketAddr = "0.0.0.0:10001".parse().unwrap();
        assert_eq!(c.network.advertised(bound), "node1.example:10001");
        c.network.advertise_address = Some("node1.example:0".into());
        assert_eq!(c.network.advertised(bound), "node1.example:10001");
    }

    #[test]
    fn tls_flags_are_checked_together() {
        let mut c = NodeConfig::new("node1");
        c.tls.cert = Some("node.pem".into());
        assert!(message(&c).contains("--tls-key"), "{}", message(&c));
        c.tls.key = Some("node.key".into());
        assert!(message(&c).contains("--peer-ca"), "{}", message(&c));
        c.tls.peer_ca = Some("ca.pem".into());
        c.validate().unwrap();
        c.tls.peer_cert = Some("peer.pem".into());
        assert!(message(&c).contains("--peer-key"), "{}", message(&c));
        let mut c = NodeConfig::new("node1");
        c.tls.client_ca = Some("ca.pem".into());
        assert!(message(&c).contains("--tls-cert"), "{}", message(&c));
        assert_eq!(host_of("[::1]:10001"), "::1");
        assert_eq!(host_of("db1.internal:10001"), "db1.internal");
    }

    #[test]
    fn listening_beyond_loopback_needs_tls_and_client_authentication_or_insecure() {
        let mut c = NodeConfig::new("node1");
        for loopback in ["localhost:1", "127.0.0.2:1", "[::1]:1"] {
            c.network.address = loopback.into();
            c.validate().unwrap();
        }
        c.network.address = "0.0.0.0:10001".into();
        c.network.advertise_address = Some("db1.internal:10001".into());
        assert!(message(&c).contains("--insecure"), "{}", message(&c));
        c.tls.cert = Some("n.pem".into());
        c.tls.key = Some("n.key".into());
        c.tls.peer_ca = Some("ca.pem".into());
        assert!(message(&c).contains("--tls-client-ca"), "{}", message(&c));
        assert!(message(&c).contains("--auth-file"), "{}", message(&c));
        c.tls.client_ca = Some("ca.pem".into());
        c.validate().unwrap();
        // Credentials instead of client certificates guard it as well.
        c.tls.client_ca = None;
        c.auth.users_file = Some("users.toml".into());
        c.validate().unwrap();
        // Credentials without TLS would cross the network in the clear.
        c.tls = TlsConfig::default();
        assert!(message(&c).contains("--insecure"), "{}", message(&c));
        let mut c = NodeConfig::new("node1");
        c.network.http_address = "db1.internal:9000".into();
        assert!(message(&c).contains("--http"), "{}", message(&c));
        c.network.insecure = true;
        c.validate().unwrap();
    }

    #[test]
    fn a_zero_port_advertises_the_bound_one() {
        let mut c = NodeConfig::new("node1");
        c.network.address = "127.0.0.1:0".into();
        let bound: SocketAddr = "127.0.0.1:4567".parse().unwrap();
        assert_eq!(c.network.advertised(bound), "127.0.0.1:4567");
    }
}
