//! The nodes under test: real `host` processes, one per network namespace, and the calls the
//! suite makes on them (status, membership) over the same gRPC API every client uses.

use crate::secure::Secure;
use host::auth::WithCredentials;
use host::proto::client_client::ClientClient;
use host::proto::{self, AddNodeRequest, MonitorRequest, RemoveNodeRequest};
use std::fs::{self, File};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// A gRPC client of one node, sending the suite's credentials (if any) with every call.
pub type Client = ClientClient<InterceptedService<Channel, WithCredentials>>;

/// gRPC port every node listens on inside its namespace.
pub const GRPC_PORT: u16 = 7000;
/// HTTP port every node listens on inside its namespace.
pub const HTTP_PORT: u16 = 8000;
const RPC_TIMEOUT: Duration = Duration::from_secs(3);

/// Where a node runs.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub name: String,
    pub namespace: String,
    pub ip: String,
}

impl NodeSpec {
    /// `ip:port` of its gRPC API.
    pub fn grpc_addr(&self) -> String {
        format!("{}:{GRPC_PORT}", self.ip)
    }
}

/// A node's process state as the suite left it.
#[derive(Debug, Default)]
struct Proc {
    child: Option<Child>,
    paused: bool,
    /// Times started, to name log files.
    starts: u32,
}

/// The cluster: node specs, their processes and data directories.
#[derive(Debug)]
pub struct Cluster {
    host_bin: PathBuf,
    work: PathBuf,
    extra_args: Vec<String>,
    pub specs: Vec<NodeSpec>,
    procs: Vec<Proc>,
    channels: Vec<Channel>,
    /// TLS and authentication, in the secure mode.
    secure: Option<Secure>,
}

/// A call the suite made that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("node {node}: {message}")]
    Process { node: String, message: String },
    #[error("node {node}: {status}")]
    Rpc { node: String, status: tonic::Status },
    #[error("bad address {0}")]
    Address(String),
    #[error("client TLS: {0}")]
    Tls(String),
}

impl Cluster {
    /// Describes the cluster; starts nothing. With `secure`, nodes and clients speak TLS and
    /// authenticate.
    pub fn new(
        host_bin: PathBuf,
        work: PathBuf,
        specs: Vec<NodeSpec>,
        extra_args: Vec<String>,
        secure: Option<Secure>,
    ) -> Result<Self, ClusterError> {
        let tls = match &secure {
            Some(s) => Some(
                s.client_tls()
                    .map_err(|e| ClusterError::Tls(e.to_string()))?,
            ),
            None => None,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut channels = Vec::new();
        for s in &specs {
            let mut endpoint = Endpoint::from_shared(format!("{scheme}://{}", s.grpc_addr()))
                .map_err(|_| ClusterError::Address(s.grpc_addr()))?;
            if let Some(tls) = &tls {
                endpoint = endpoint
                    .tls_config(tls.clone())
                    .map_err(|e| ClusterError::Tls(e.to_string()))?;
            }
            let endpoint = endpoint
                .connect_timeout(Duration::from_secs(1))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(1))
                .keep_alive_timeout(Duration::from_secs(2))
                .keep_alive_while_idle(true);
            channels.push(endpoint.connect_lazy());
        }
        let procs = specs.iter().map(|_| Proc::default()).collect();
        Ok(Cluster {
            host_bin,
            work,
            extra_args,
            specs,
            procs,
            channels,
            secure,
        })
    }

    /// Node count.
    pub fn len(&self) -> usize {
        self.specs.len()
    }

    /// True when there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    fn data_dir(&self, i: usize) -> PathBuf {
        self.work.join(&self.specs[i].name)
    }

    /// A gRPC client for node `i` (channels are shared and reconnect by themselves).
    pub fn client(&self, i: usize) -> Client {
        let credentials = self
            .secure
            .as_ref()
            .map(Secure::credentials)
            .unwrap_or_default();
        ClientClient::with_interceptor(self.channels[i].clone(), credentials)
    }

    /// Starts node `i` (bootstrapping a new cluster when `bootstrap`), with its log in the work dir.
    pub fn start(&mut self, i: usize, bootstrap: bool) -> Result<(), ClusterError> {
        let spec = self.specs[i].clone();
        let perr = |message: String| ClusterError::Process {
            node: spec.name.clone(),
            message,
        };
        self.procs[i].starts += 1;
        let log = self
            .work
            .join(format!("{}.{}.log", spec.name, self.procs[i].starts));
        let log = File::create(&log).map_err(|e| perr(e.to_string()))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &spec.namespace])
            .arg(&self.host_bin)
            .args(["--id", &spec.name])
            .args(["--address", &spec.grpc_addr()])
            // Nodes listen on their namespace's address: with TLS and authentication in the
            // secure mode, else on the run's own network, declared trusted.
            .args(match &self.secure {
                Some(s) => s.node_args(&spec.name),
                None => vec!["--insecure".to_string()],
            })
            .args(["--http", &format!("{}:{HTTP_PORT}", spec.ip)])
            .arg("--data-dir")
            .arg(self.data_dir(i))
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if bootstrap {
            cmd.arg("--bs");
        }
        // `ip netns exec` execs the host in place, so the child's pid is the node's.
        let child = cmd.spawn().map_err(|e| perr(e.to_string()))?;
        self.procs[i].child = Some(child);
        self.procs[i].paused = false;
        Ok(())
    }

    /// True when node `i`'s process is running (possibly paused).
    pub fn is_running(&mut self, i: usize) -> bool {
        match &mut self.procs[i].child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILL node `i` and reap it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.procs[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.procs[i].paused = false;
    }

    /// SIGSTOP (`pause`) or SIGCONT node `i`.
    pub fn signal_pause(&mut self, i: usize, pause: bool) -> Result<(), ClusterError> {
        let Some(c) = &self.procs[i].child else {
            return Ok(());
        };
        let signal = if pause { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .args([signal, &c.id().to_string()])
            .status()
            .map_err(|e| ClusterError::Process {
                node: self.specs[i].name.clone(),
                message: e.to_string(),
            })?;
        if !status.success() {
            return Err(ClusterError::Process {
                node: self.specs[i].name.clone(),
                message: format!("kill {signal} failed"),
            });
        }
        self.procs[i].paused = pause;
        Ok(())
    }

    /// True when node `i` is stopped by SIGSTOP.
    pub fn is_paused(&self, i: usize) -> bool {
        self.procs[i].paused
    }

    /// Deletes node `i`'s data directory (the node must be stopped).
    pub fn wipe(&mut self, i: usize) -> Result<(), ClusterError> {
        let dir = self.data_dir(i);
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(|e| ClusterError::Process {
                node: self.specs[i].name.clone(),
                message: format!("wipe {}: {e}", dir.display()),
            })?;
        }
        Ok(())
    }

    /// Kills every process the suite started (SIGCONT first, so none stays stopped).
    pub fn stop_all(&mut self) {
        for i in 0..self.len() {
            let _ = self.signal_pause(i, false);
            self.kill(i);
        }
    }

    fn rpc_err(&self, i: usize, status: tonic::Status) -> ClusterError {
        ClusterError::Rpc {
            node: self.specs[i].name.clone(),
            status,
        }
    }

    /// Node `i`'s status, with its state hash when asked.
    pub async fn status(&self, i: usize, state_hash: bool) -> Result<proto::Status, ClusterError> {
        let mut req = tonic::Request::new(MonitorRequest {
            state_hash,
            ..Default::default()
        });
        req.set_timeout(RPC_TIMEOUT);
        self.client(i)
            .monitor(req)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| self.rpc_err(i, s))
    }

    /// The index of the node that some reachable node names as leader, if any.
    pub async fn leader(&self) -> Option<usize> {
        for i in 0..self.len() {
            if self.is_paused(i) {
                continue;
            }
            if let Ok(s) = self.status(i, false).await {
                if let Some(l) = self.specs.iter().position(|n| n.name == s.leader_id) {
                    return Some(l);
                }
            }
        }
        None
    }

    /// Adds node `i` as a voter, asking node `via` (which forwards to the leader).
    pub async fn add_node(&self, via: usize, i: usize) -> Result<proto::Status, ClusterError> {
        let mut req = tonic::Request::new(AddNodeRequest {
            id: self.specs[i].name.clone(),
            address: self.specs[i].grpc_addr(),
            learner: false,
        });
        req.set_timeout(Duration::from_secs(30));
        self.client(via)
            .add_node(req)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| self.rpc_err(via, s))
    }

    /// Removes node `i` from the membership, asking node `via`.
    pub async fn remove_node(&self, via: usize, i: usize) -> Result<proto::Status, ClusterError> {
        let mut req = tonic::Request::new(RemoveNodeRequest {
            id: self.specs[i].name.clone(),
        });
        req.set_timeout(Duration::from_secs(15));
        self.client(via)
            .remove_node(req)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| self.rpc_err(via, s))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}
