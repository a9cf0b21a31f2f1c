//! Snapshot build, snapshot install and restart times for a large guest-kv state, on real
//! nodes in this process (real sockets on 127.0.0.1, real files, fsync on).
//!
//! Run: `cargo bench --bench snapshot` (optionally `-- KEYS VALUE_BYTES`; default 1,000,000 keys
//! of 100-byte values). Prints one line per phase.

use futures::stream::{FuturesUnordered, StreamExt};
use host::auth::Caller;
use host::config::{NodeConfig, StorageConfig};
use host::node::{self, Started};
use openraft::async_runtime::WatchReceiver;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const DEFAULT_KEYS: usize = 1_000_000;
const DEFAULT_VALUE_BYTES: usize = 100;
const IN_FLIGHT: usize = 512;

struct Running {
    started: Started,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    addr: String,
}

async fn launch(dir: &Path, name: &str, bootstrap: bool) -> anyhow::Result<Running> {
    let grpc = TcpListener::bind("127.0.0.1:0").await?;
    let http = TcpListener::bind("127.0.0.1:0").await?;
    let addr = grpc.local_addr()?.to_string();
    let mut config = NodeConfig::new(name);
    config.bootstrap = bootstrap;
    config.storage = StorageConfig {
        data_dir: dir.join(name),
        ..StorageConfig::for_node(name)
    };
    config.limits.catch_up_timeout = Duration::from_secs(600);
    config.limits.max_body_bytes = 1 << 20;
    // Snapshots only when asked, so each phase is measured alone.
    config.raft.snapshot_every = u64::MAX / 2;
    config.raft.snapshot_keep_logs = 0;
    let started = node::start(&config, addr.clone()).await?;
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = started.clone();
    let task = tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        if let Err(e) = node::serve(&config, serving, grpc, http, shutdown).await {
            eprintln!("node stopped: {e}");
        }
    });
    Ok(Running {
        started,
        stop,
        task,
        addr,
    })
}

async fn wait_applied(started: &Started, index: u64) {
    let mut rx = started.raft.metrics();
    loop {
        if rx
            .borrow_watched()
            .last_applied
            .map(|l| l.index)
            .unwrap_or(0)
            >= index
        {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let keys = args.first().copied().unwrap_or(DEFAULT_KEYS);
    let value_bytes = args.get(1).copied().unwrap_or(DEFAULT_VALUE_BYTES);
    let dir = tempfile::tempdir()?;
    let a = launch(dir.path(), "a", true).await?;
    wait_applied(&a.started, 1).await;
    let value = "v".repeat(value_bytes);
    let start = Instant::now();
    let mut pending = FuturesUnordered::new();
    for i in 0..keys {
        let service = a.started.service.clone();
        let command = guest_kv::Command::Put {
            key: format!("key{i:08}"),
            value: value.clone(),
        }
        .encode();
        pending.push(async move { service.apply(&Caller::open(0), command, None).await });
        if pending.len() >= IN_FLIGHT {
            pending.next().await.transpose()?;
        }
    }
    while let Some(r) = pending.next().await {
        r?;
    }
    let load = start.elapsed();
    println!(
        "load: {keys} puts of {value_bytes}-byte values in {:.1} s ({:.0} puts/s, one node, fsync on, {IN_FLIGHT} in flight through the service layer)",
        load.as_secs_f64(),
        keys as f64 / load.as_secs_f64()
    );

    let start = Instant::now();
    let snap = a.started.service.snapshot(&Caller::open(0)).await?;
    println!(
        "snapshot build: {:.2} s, {:.1} MiB at index {}",
        start.elapsed().as_secs_f64(),
        snap.size as f64 / (1 << 20) as f64,
        snap.index
    );
    let last = a
        .started
        .raft
        .metrics()
        .borrow_watched()
        .last_log_index
        .unwrap_or(0);

    let b = launch(dir.path(), "b", false).await?;
    let start = Instant::now();
    a.started
        .service
        .add_node(&Caller::open(0), "b", &b.addr, true)
        .await?;
    wait_applied(&b.started, last).await;
    println!(
        "snapshot install on a new node: {:.2} s (add learner until it applied index {last})",
        start.elapsed().as_secs_f64()
    );
    let _ = b.stop.send(());
    let _ = b.task.await;

    let Running {
        started,
        stop,
        task,
        ..
    } = a;
    let _ = stop.send(());
    let _ = task.await;
    drop(started);
    let start = Instant::now();
    // The old instance's storage closes when its last handle is gone; retry until it has.
    let a = loop {
        match launch(dir.path(), "a", false).await {
            Ok(a) => break a,
            Err(e)
                if start.elapsed() < Duration::from_secs(10)
                    && e.to_string().contains("already open") =>
            {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Err(e) => return Err(e),
        }
    };
    wait_applied(&a.started, last).await;
    println!(
        "restart: {:.2} s until the node applied index {last} again (snapshot restore + log replay)",
        start.elapsed().as_secs_f64()
    );
    let _ = a.stop.send(());
    let _ = a.task.await;
    Ok(())
}
