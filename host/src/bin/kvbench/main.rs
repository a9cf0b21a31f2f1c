//! `kvbench`: a load generator for raftwasm and etcd, driving both through their gRPC APIs with
//! the same client code, so their numbers compare.
//!
//! `kvbench --target raftwasm --endpoints localhost:10001 --clients 64 --op put` or
//! `kvbench --target etcd --endpoints localhost:2379 --clients 64 --op get --preload`.
//! Prints a progress line each second (stderr), then ops/s, latency percentiles and errors, and
//! a last line of JSON for scripts. `--watchers N` also keeps N watches of every key open on the
//! first endpoint during the run and reports the events they received.

mod conn;
#[path = "../common/connection.rs"]
mod connection;
#[path = "../common/retry.rs"]
mod retry;
mod watchers;

use anyhow::{bail, Result};
use clap::{Parser, ValueEnum};
use conn::{Conn, Dialer};
use connection::ConnectionArgs;
use host::proto;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum Target {
    Raftwasm,
    Etcd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum Op {
    Put,
    Get,
    Mixed,
}

/// Load generator for raftwasm and etcd (gRPC).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[arg(long, value_enum, default_value = "raftwasm")]
    target: Target,
    /// Comma-separated gRPC addresses; clients are spread over them.
    #[arg(long, default_value = "localhost:10001")]
    endpoints: String,
    /// Concurrent clients, each with one request in flight.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// HTTP/2 connections shared by the clients.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    #[arg(long, default_value_t = 8)]
    key_size: usize,
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    #[arg(long, value_enum, default_value = "put")]
    op: Op,
    /// Share of gets in `--op mixed`, percent.
    #[arg(long, default_value_t = 50)]
    read_percent: u32,
    /// Distinct keys.
    #[arg(long, default_value_t = 10_000)]
    keyspace: u64,
    /// Write every key once before the run (so gets find values).
    #[arg(long)]
    preload: bool,
    /// Reads from the contacted node's state (raftwasm stale, etcd serializable) instead of
    /// linearizable reads.
    #[arg(long)]
    stale: bool,
    /// Each client opens a client session and numbers its puts in it (raftwasm), so a retried
    /// put applies once; compares the cost of sessions with plain puts.
    #[arg(long)]
    sessions: bool,
    /// Retries of a put that failed without being applied or, with --sessions, with an
    /// unknown outcome (at the leader the error names); 0 counts every failure as an error.
    #[arg(long, default_value_t = 0)]
    retries: u32,
    /// Watches of every key kept open on the first endpoint while the load runs (raftwasm
    /// WatchKeys, etcd Watch with previous values), each on its own connection.
    #[arg(long, default_value_t = 0)]
    watchers: usize,
    /// Free-form label echoed in the JSON line.
    #[arg(long, default_value = "")]
    label: String,
    #[command(flatten)]
    connection: ConnectionArgs,
}

/// xorshift64*: a tiny deterministic generator per client.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn key(i: u64, size: usize) -> String {
    let digits = format!("{i}");
    if digits.len() >= size {
        digits
    } else {
        format!("{}{digits}", "0".repeat(size - digits.len()))
    }
}

struct ClientResult {
    latencies_us: Vec<u32>,
    errors: u64,
    last_error: Option<String>,
}

async fn connect(args: &Args, dialer: &Dialer) -> Result<Vec<Conn>> {
    let endpoints: Vec<&str> = args
        .endpoints
        .split(',')
        .filter(|e| !e.is_empty())
        .collect();
    if endpoints.is_empty() {
        bail!("--endpoints is empty");
    }
    let mut conns = Vec::new();
    for i in 0..args.connections.max(1) {
        conns.push(dialer.dial(endpoints[i % endpoints.len()]).await?);
    }
    Ok(conns)
}

/// What one client writes with: its connection, and its session if it has one.
struct Writer {
    conn: Conn,
    dialer: Dialer,
    session: Option<proto::Session>,
    retries: u32,
    retried: Arc<AtomicU64>,
}

impl Writer {
    /// Runs `call` on the connection, retrying as [`retry::after`] says and following a leader
    /// hint by dialling it.
    async fn run<T, F, Fut>(&mut self, mut call: F) -> Result<T, tonic::Status>
    where
        F: FnMut(Conn) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let mut attempt = 0;
        loop {
            let status = match call(self.conn.clone()).await {
                Ok(done) => return Ok(done),
                Err(status) => status,
            };
            let leader = match retry::after(&status, self.session.is_some()) {
                retry::Retry::Again { leader } if attempt < self.retries => leader,
                _ => return Err(status),
            };
            attempt += 1;
            self.retried.fetch_add(1, Ordering::Relaxed);
            if let Some(conn) = match leader {
                Some(addr) => self.dialer.dial(&addr).await.ok(),
                None => None,
            } {
                self.conn = conn;
            }
            tokio::time::sleep(retry::backoff(attempt)).await;
        }
    }

    /// Opens this client's session (retried like a put).
    async fn open_session(&mut self) -> Result<(), tonic::Status> {
        self.session = Some(proto::Session {
            client_id: 0,
            seq: 0,
        });
        let client_id = self
            .run(|mut c| async move { c.open_session().await })
            .await?;
        self.session = Some(proto::Session { client_id, seq: 0 });
        Ok(())
    }

    /// One put, with the session's next sequence number.
    async fn put(&mut self, key: &str, value: &str) -> Result<(), tonic::Status> {
        if let Some(s) = &mut self.session {
            s.seq += 1;
        }
        let session = self.session;
        self.run(|mut c| async move { c.put(key, value, session).await })
            .await
    }
}

async fn preload(args: &Args, conns: &[Conn], value: &str) -> Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let mut conn = conns[c % conns.len()].clone();
        let (next, value, keyspace, key_size) = (
            next.clone(),
            value.to_string(),
            args.keyspace,
            args.key_size,
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= keyspace {
                    return Ok::<(), tonic::Status>(());
                }
                conn.put(&key(i, key_size), &value, None).await?;
            }
        }));
    }
    for t in tasks {
        t.await?
            .map_err(|e| anyhow::anyhow!("preload failed: {}", e.message()))?;
    }
    Ok(())
}

/// What every client does, and when.
struct Load {
    op: Op,
    read_percent: u32,
    keyspace: u64,
    key_size: usize,
    stale: bool,
    sessions: bool,
    value: String,
    measure_from: Instant,
    end: Instant,
}

/// Client `c`: requests one at a time until the end, latencies recorded after the warm-up.
async fn client(
    c: usize,
    mut writer: Writer,
    load: Load,
    done: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
) -> ClientResult {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (c as u64 + 1));
    let mut result = ClientResult {
        latencies_us: Vec::new(),
        errors: 0,
        last_error: None,
    };
    if load.sessions {
        if let Err(e) = writer.open_session().await {
            result.errors += 1;
            result.last_error = Some(format!("opening a session: {}", e.message()));
            failed.fetch_add(1, Ordering::Relaxed);
            return result;
        }
    }
    loop {
        let now = Instant::now();
        if now >= load.end {
            return result;
        }
        let k = key(rng.next() % load.keyspace, load.key_size);
        let read = match load.op {
            Op::Put => false,
            Op::Get => true,
            Op::Mixed => (rng.next() % 100) < load.read_percent as u64,
        };
        let outcome = if read {
            writer.conn.get(&k, load.stale).await
        } else {
            writer.put(&k, &load.value).await
        };
        let elapsed = now.elapsed();
        done.fetch_add(1, Ordering::Relaxed);
        if now >= load.measure_from {
            match outcome {
                Ok(()) => result
                    .latencies_us
                    .push(elapsed.as_micros().min(u32::MAX as u128) as u32),
                Err(e) => {
                    result.errors += 1;
                    result.last_error = Some(e.message().to_string());
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Events per second the watchers received in the measured window: in all, and the slowest and
/// fastest watcher's.
struct WatchSummary {
    total: f64,
    min: f64,
    max: f64,
}

fn watch_summary(per_watcher: &[u64], seconds: f64) -> WatchSummary {
    let rate = |n: u64| n as f64 / seconds;
    WatchSummary {
        total: rate(per_watcher.iter().sum()),
        min: rate(per_watcher.iter().copied().min().unwrap_or(0)),
        max: rate(per_watcher.iter().copied().max().unwrap_or(0)),
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let value = "v".repeat(args.value_size);
    let dialer = Dialer::new(args.target, &args.connection)?;
    let conns = connect(&args, &dialer).await?;
    let retried = Arc::new(AtomicU64::new(0));
    if args.preload {
        let start = Instant::now();
        preload(&args, &conns, &value).await?;
        eprintln!(
            "preloaded {} keys in {:.1} s",
            args.keyspace,
            start.elapsed().as_secs_f64()
        );
    }

    let watching = match args.watchers {
        0 => None,
        n => {
            let first = args.endpoints.split(',').next().unwrap_or_default();
            let mut opened = Vec::new();
            for _ in 0..n {
                opened.push(dialer.watcher(first).await?);
            }
            Some(Arc::new(watchers::Watchers::start(opened).await?))
        }
    };

    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let end = measure_from + Duration::from_secs_f64(args.duration);
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let writer = Writer {
            conn: conns[c % conns.len()].clone(),
            dialer: dialer.clone(),
            session: None,
            retries: args.retries,
            retried: retried.clone(),
        };
        let load = Load {
            op: args.op,
            read_percent: args.read_percent,
            keyspace: args.keyspace.max(1),
            key_size: args.key_size,
            stale: args.stale,
            sessions: args.sessions,
            value: value.clone(),
            measure_from,
            end,
        };
        let (done, failed) = (done.clone(), failed.clone());
        tasks.push(tokio::spawn(client(c, writer, load, done, failed)));
    }

    let window = watching
        .clone()
        .map(|w| tokio::spawn(async move { w.received_between(measure_from, end).await }));
    let progress = {
        let (done, failed) = (done.clone(), failed.clone());
        tokio::spawn(async move {
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let now = done.load(Ordering::Relaxed);
                let phase = if Instant::now() < measure_from {
                    "warmup"
                } else {
                    "measure"
                };
                eprintln!(
                    "[{:>5.1}s {phase}] {} ops/s, {} errors",
                    start.elapsed().as_secs_f64(),
                    now - last,
                    failed.load(Ordering::Relaxed)
                );
                last = now;
            }
        })
    };

    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut last_error = None;
    for t in tasks {
        let r = t.await?;
        latencies.extend(r.latencies_us);
        errors += r.errors;
        last_error = r.last_error.or(last_error);
    }
    progress.abort();
    let watched = match window {
        Some(w) => Some(w.await?),
        None => None,
    };
    latencies.sort_unstable();
    let measured = args.duration;
    let ops = latencies.len() as f64 / measured;
    let (p50, p90, p99, p999) = (
        percentile(&latencies, 50.0),
        percentile(&latencies, 90.0),
        percentile(&latencies, 99.0),
        percentile(&latencies, 99.9),
    );
    println!(
        "{:?} {:?}: {} clients, {} connections, {}-byte keys, {}-byte values, {} keys{}",
        args.target,
        args.op,
        args.clients,
        args.connections,
        args.key_size,
        args.value_size,
        args.keyspace,
        if args.stale { ", stale reads" } else { "" }
    );
    let retried = retried.load(Ordering::Relaxed);
    let sessions = if args.sessions {
        ", in client sessions"
    } else {
        ""
    };
    println!("  {ops:.0} ops/s over {measured} s, {errors} errors, {retried} retries{sessions}");
    println!("  latency ms: p50 {p50:.3}  p90 {p90:.3}  p99 {p99:.3}  p99.9 {p999:.3}");
    if let Some(e) = &last_error {
        println!("  last error: {e}");
    }
    let watch = watched.as_deref().map(|per| watch_summary(per, measured));
    if let (Some(w), Some(watching)) = (&watch, &watching) {
        println!(
            "  {} watchers: {:.0} events/s delivered in all, {:.0}-{:.0} per watcher{}",
            args.watchers,
            w.total,
            w.min,
            w.max,
            watching
                .failure()
                .map(|e| format!(", a watcher failed: {e}"))
                .unwrap_or_default()
        );
    }
    let json = serde_json::json!({
        "label": args.label,
        "target": args.target,
        "op": args.op,
        "clients": args.clients,
        "connections": args.connections,
        "key_size": args.key_size,
        "value_size": args.value_size,
        "keyspace": args.keyspace,
        "stale": args.stale,
        "duration_s": measured,
        "ops_per_sec": ops.round(),
        "p50_ms": p50,
        "p90_ms": p90,
        "p99_ms": p99,
        "p999_ms": p999,
        "errors": errors,
        "retries": retried,
        "sessions": args.sessions,
        "watchers": args.watchers,
        "watch_events_per_sec": watch.as_ref().map(|w| w.total.round()),
        "watch_events_per_sec_min": watch.as_ref().map(|w| w.min.round()),
        "watch_events_per_sec_max": watch.as_ref().map(|w| w.max.round()),
        "watch_failure": watching.as_ref().and_then(|w| w.failure()),
    });
    println!("{json}");
    Ok(())
}
