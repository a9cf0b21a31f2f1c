//! Test harness: real `host` processes on 127.0.0.1 with ephemeral ports and their own data
//! dirs, plus HTTP and gRPC clients and polling helpers (never fixed sleeps).

#![allow(dead_code)]

use host::proto::client_client::ClientClient;
use host::service::Status;

pub mod certs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long any wait in these tests may take before it fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A temporary directory for a test's nodes, kept (and its path printed) when the test fails,
/// so the node logs and data dirs of a failure can be read afterwards.
pub struct TestDir(Option<tempfile::TempDir>);

impl TestDir {
    pub fn new() -> TestDir {
        TestDir(Some(tempfile::tempdir().expect("temp dir")))
    }

    pub fn path(&self) -> &Path {
        self.0.as_ref().expect("temp dir").path()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if let (true, Some(dir)) = (std::thread::panicking(), self.0.take()) {
            eprintln!("test data kept in {}", dir.keep().display());
        }
    }
}

/// One `host` process.
pub struct Node {
    pub name: String,
    pub data_dir: PathBuf,
    /// gRPC address, `127.0.0.1:port`.
    pub grpc: String,
    /// HTTP address, `127.0.0.1:port`.
    pub http: String,
    extra: Vec<String>,
    /// Extra environment for the process (failpoints).
    pub env: Vec<(String, String)>,
    /// The first line the process printed (addresses and the active module).
    pub banner: String,
    child: Option<Child>,
}

impl Node {
    /// Starts node `name` with its data under `root`, on fresh ports.
    pub fn start(root: &Path, name: &str, bootstrap: bool, extra: &[&str]) -> Node {
        Self::start_with_env(root, name, bootstrap, extra, &[])
    }

    /// [`Node::start`] with extra environment variables (failpoints) from the first start on.
    pub fn start_with_env(
        root: &Path,
        name: &str,
        bootstrap: bool,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Node {
        Self::start_full(root, name, bootstrap, extra, env, "127.0.0.1:0")
    }

    /// [`Node::start`] with its gRPC listener bound to `grpc_bind` (say `0.0.0.0:0`, with an
    /// `--advertise-address` in `extra`); `grpc` is then the advertised address.
    pub fn start_bound(
        root: &Path,
        name: &str,
        bootstrap: bool,
        extra: &[&str],
        grpc_bind: &str,
    ) -> Node {
        Self::start_full(root, name, bootstrap, extra, &[], grpc_bind)
    }

    fn start_full(
        root: &Path,
        name: &str,
        bootstrap: bool,
        extra: &[&str],
        env: &[(&str, &str)],
        grpc_bind: &str,
    ) -> Node {
        let mut node = Node {
            name: name.to_string(),
            data_dir: root.join(name),
            grpc: grpc_bind.into(),
            http: "127.0.0.1:0".into(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            banner: String::new(),
            child: None,
        };
        node.spawn(bootstrap);
        node
    }

    /// The command line this node runs with.
    pub fn command(&self, bootstrap: bool) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_host"));
        cmd.args([
            "--id",
            &self.name,
            "--address",
            &self.grpc,
            "--http",
            &self.http,
        ])
        .arg("--data-dir")
        .arg(&self.data_dir)
        .args(["--heartbeat-ms", "50", "--election-timeout-ms", "300"])
        .args(&self.extra)
        .env("RUST_LOG", "warn")
        .envs(self.env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(self.log_file());
        if bootstrap {
            cmd.arg("--bs");
        }
        cmd
    }

    /// The node's log (stderr, kept across restarts) beside its data dir.
    pub fn log_path(&self) -> PathBuf {
        self.data_dir.with_extension("log")
    }

    fn log_file(&self) -> Stdio {
        std::fs::create_dir_all(self.data_dir.parent().unwrap_or(Path::new("."))).ok();
        match std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
        {
            Ok(f) => f.into(),
            Err(_) => Stdio::null(),
        }
    }

    /// What the node has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn spawn(&mut self, bootstrap: bool) {
        let mut child = self.command(bootstrap).spawn().expect("spawn host");
        // The first stdout line names the bound addresses.
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read banner");
        let field = |key: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .unwrap_or_else(|| panic!("no {key} in {line:?}"))
                .to_string()
        };
        self.grpc = field("grpc=");
        self.http = field("http=");
        self.banner = line.trim().to_string();
        self.child = Some(child);
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs the node's command line expecting the process to exit on its own (a refused
    /// start); returns its exit success and stderr.
    pub fn run_to_exit(&self, extra: &[&str]) -> (bool, String) {
        let mut cmd = self.command(false);
        cmd.args(extra).stderr(Stdio::piped());
        let out = cmd.output().expect("run host");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The process id (0 when not running).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => child.try_wait().map(|s| s.is_none()).unwrap_or(false),
            None => false,
        }
    }

    /// Replaces the extra flags used from the next (re)start on.
    pub fn set_extra(&mut self, extra: &[&str]) {
        self.extra = extra.iter().map(|s| s.to_string()).collect();
    }

    /// Starts the process again on the same ports and data dir.
    pub fn restart(&mut self, bootstrap: bool) {
        self.kill();
        self.spawn(bootstrap);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    pub async fn grpc_client(&self) -> ClientClient<tonic::transport::Channel> {
        ClientClient::connect(format!("http://{}", self.grpc))
            .await
            .expect("grpc connect")
    }

    pub async fn status(&self) -> Option<Status> {
        let resp = http().get(self.url("/v1/status")).send().await.ok()?;
        resp.json().await.ok()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// SIGKILL by pid, for killing a node while another task borrows it.
pub fn sigkill(pid: u32) {
    if pid != 0 {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
}

/// Polls `check` until it returns `Some`, failing after [`DEADLINE`].
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until one of `nodes` reports itself leader and every one of them agrees; returns its index.
pub async fn wait_for_leader(nodes: &[&Node]) -> usize {
    wait_for("a leader all nodes agree on", || async {
        let mut leader = None;
        for node in nodes {
            let s = node.status().await?;
            let l = s.leader_id?;
            if leader.get_or_insert(l.clone()) != &l {
                return None;
            }
        }
        let leader = leader?;
        nodes.iter().position(|n| n.name == leader)
    })
    .await
}

/// Puts `key{i}` = `value{i}` for every `i` in `range` through `node`, `concurrency` requests at
/// a time; returns the keys whose write was acknowledged (stops early if the node goes away).
pub async fn put_many(
    node: &Node,
    range: std::ops::Range<usize>,
    concurrency: usize,
) -> Vec<usize> {
    use futures::StreamExt;
    let client = http();
    let base = node.url("/v1/kv/");
    futures::stream::iter(range)
        .map(|i| {
            let (client, base) = (client.clone(), base.clone());
            async move {
                let resp = client
                    .put(format!("{base}key{i:06}"))
                    .body(format!("value{i}"))
                    .send()
                    .await
                    .ok()?;
                resp.status().is_success().then_some(i)
            }
        })
        .buffer_unordered(concurrency)
        .filter_map(|r| async move { r })
        .collect()
        .await
}

/// `GET /Get/{key}` with the key percent-encoded and an optional query string (`""` for none):
/// the status code and the body.
pub async fn get_value(node: &Node, key: &str, query: &str) -> (u16, String) {
    let mut url = node.url(&format!("/Get/{}", seg(key)));
    if !query.is_empty() {
        url = format!("{url}?{query}");
    }
    let resp = http().get(url).send().await.expect("GET /Get");
    (resp.status().as_u16(), resp.text().await.expect("body"))
}

/// Percent-encodes one path segment.
pub fn seg(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Adds `node` as a voter through `via`'s `/AddVoter` route, expecting success.
/// `/AddVoter` through `via`; the status it answers with.
pub async fn add_voter(via: &Node, node: &Node) -> Status {
    let resp = http()
        .get(via.url(&format!("/AddVoter/{}/{}", node.grpc, node.name)))
        .send()
        .await
        .expect("AddVoter");
    let code = resp.status();
    let body = resp.text().await.unwrap_or_default();
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Runs `kvclient --server <server> <args>`: (success, stdout, stderr), trimmed.
pub fn kvclient(server: &str, args: &[&str]) -> (bool, String, String) {
    let (code, out, err) = kvclient_exit(server, args);
    (code == Some(0), out, err)
}

/// [`kvclient`] with the exit status (`None`: killed by a signal).
pub fn kvclient_exit(server: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kvclient"))
        .args(["--server", server])
        .args(args)
        .output()
        .expect("run kvclient");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

/// A port free on 127.0.0.1 a moment ago, for a node that must know its address before it
/// starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Starts a three-node cluster: node1 bootstraps, node2 and node3 join via `/AddVoter`.
pub async fn three_nodes(root: &Path, extra: &[&str]) -> Vec<Node> {
    let n1 = Node::start(root, "node1", true, extra);
    let n2 = Node::start(root, "node2", false, extra);
    let n3 = Node::start(root, "node3", false, extra);
    wait_for_leader(&[&n1]).await;
    for n in [&n2, &n3] {
        // With no writes going on, the answer shows the promoted node caught up.
        let status = add_voter(&n1, n).await;
        let added = status
            .members
            .iter()
            .find(|m| m.id == n.name)
            .expect("added");
        assert!(added.voter, "{status:?}");
        assert_eq!(added.lag, Some(0), "{status:?}");
    }
    let nodes = vec![n1, n2, n3];
    wait_for("three voters everywhere", || async {
        for n in &nodes {
            let s = n.status().await?;
            if s.members.iter().filter(|m| m.voter).count() != 3 {
                return None;
            }
        }
        Some(())
    })
    .await;
    nodes
}

/// `/v1/status` with the state hash.
pub async fn status_with_hash(node: &Node) -> Option<Status> {
    http()
        .get(node.url("/v1/status?state_hash=true"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// Waits until every node reports the same state hash; on timeout the failure names each
/// node's applied index and hash (a node that diverged differs at an equal index, one that lags
/// has a lower index).
pub async fn wait_for_equal_state(nodes: &[&Node]) -> Status {
    let start = Instant::now();
    loop {
        let mut seen = Vec::new();
        for n in nodes {
            seen.push(status_with_hash(n).await);
        }
        let all: Option<Vec<Status>> = seen.iter().cloned().collect();
        if let Some(all) = all {
            if all.iter().all(|s| s.state_hash == all[0].state_hash) {
                return all[0].clone();
            }
        }
        if start.elapsed() > DEADLINE {
            let views: Vec<String> = nodes
                .iter()
                .zip(&seen)
                .map(|(n, s)| match s {
                    Some(s) => format!(
                        "{}: {} term {} applied {} last log {} snapshot {} hash {:?}",
                        n.name,
                        s.state,
                        s.term,
                        s.applied_index,
                        s.last_log_index,
                        s.snapshot_index,
                        s.state_hash
                    ),
                    None => format!("{}: no status", n.name),
                })
                .collect();
            panic!("timed out waiting for identical state on every node: {views:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `POST path` on `node` with a text body: the status and the body.
pub async fn post_text(node: &Node, path: &str, body: &str) -> (u16, String) {
    let resp = http()
        .post(node.url(path))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// Runs `host ARGS` (a subcommand, not a node) to its end: whether it succeeded, and its stdout
/// then its stderr.
pub fn host_command(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_host"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// The value of one series of the node's `/metrics` (`name` or `name{a="b",...}` exactly as
/// rendered), 0 when absent.
pub async fn metric_value(node: &Node, series: &str) -> f64 {
    let resp = http().get(node.url("/metrics")).send().await.unwrap();
    let text = resp.text().await.unwrap();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// POST /v1/fsm with `module` as the body: (HTTP status, JSON body). The node compiles the
/// module before it answers (seconds for a Python or JavaScript guest), so the client waits up
/// to a minute.
pub async fn upgrade_fsm(node: &Node, module: Vec<u8>, dry_run: bool) -> (u16, serde_json::Value) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client");
    let resp = client
        .post(node.url(&format!("/v1/fsm?dry_run={dry_run}")))
        .body(module)
        .send()
        .await
        .expect("POST /v1/fsm");
    let code = resp.status().as_u16();
    (code, resp.json().await.unwrap_or_default())
}

/// `GET url`, expecting a JSON body.
pub async fn get_json(url: &str) -> serde_json::Value {
    let resp = http().get(url).send().await.expect("GET");
    resp.json().await.expect("a JSON body")
}
