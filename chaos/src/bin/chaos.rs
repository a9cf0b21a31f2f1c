//! `chaos`: one fault-injection run against a fresh 3-node (by default) cluster. Normally
//! started by `chaos/run.sh`, which creates the network namespaces this expects and removes
//! them afterwards. Exit code 0 only when the history is strictly serializable, no acknowledged
//! write is lost, every node's change feed holds each change once and in order, and every replica
//! ends at the same state hash.

use anyhow::{bail, Context};
use chaos::check;
use chaos::cluster::{Cluster, NodeSpec};
use chaos::feed::{self, NodeFeed};
use chaos::history::{self, Mop, Outcome, Recorder};
use chaos::nemesis::{self, Fault, FaultLog, Nemesis, Schedule};
use chaos::net::Net;
use chaos::retry::{self, Retrying};
use chaos::secure::Secure;
use chaos::upgrade::{upgrade_during_faults, UpgradeOutcome};
use chaos::workload::{self, Keys, Processes, Shared};
use clap::Parser;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Fault-injection run against a raftwasm cluster in network namespaces"
)]
struct Args {
    /// The `host` binary to run.
    #[arg(long)]
    host: PathBuf,
    /// Directory for data dirs, node logs, the history and the report.
    #[arg(long)]
    work: PathBuf,
    /// Network namespaces, one per node, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    namespaces: Vec<String>,
    /// Node addresses inside those namespaces, comma-separated, same order.
    #[arg(long, value_delimiter = ',', required = true)]
    ips: Vec<String>,
    /// Seconds of traffic under faults.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Seed for the fault schedule and the workload (random when absent; printed either way).
    #[arg(long)]
    seed: Option<u64>,
    /// Concurrent clients per node.
    #[arg(long, default_value_t = 2)]
    clients_per_node: usize,
    /// Faults to draw from (comma-separated names; default all).
    #[arg(long, value_delimiter = ',')]
    faults: Vec<String>,
    /// Quiet time between faults, ms: min,max.
    #[arg(long, value_delimiter = ',', default_values_t = [1000u64, 3000])]
    quiet_ms: Vec<u64>,
    /// How long a fault is held, ms: min,max.
    #[arg(long, value_delimiter = ',', default_values_t = [2000u64, 6000])]
    hold_ms: Vec<u64>,
    /// Client request deadline, ms (a write past it is recorded as unknown).
    #[arg(long, default_value_t = 3000)]
    timeout_ms: u64,
    /// A guest module to upgrade to, through the log, while the faults go on (see --upgrade-at).
    #[arg(long)]
    upgrade_module: Option<PathBuf>,
    /// Seconds into the run at which the upgrade is sent (retried through every node until
    /// acknowledged).
    #[arg(long, default_value_t = 20)]
    upgrade_at: u64,
    /// Extra flags for every node, e.g. "--snapshot-every=300".
    #[arg(long, allow_hyphen_values = true, value_delimiter = ' ')]
    node_args: Vec<String>,
    /// Run the cluster as a production one: TLS for clients and between nodes, client
    /// certificates and a users file; the suite's clients authenticate.
    #[arg(long)]
    secure: bool,
    /// Retry writes whose outcome is unknown instead of giving up on them: `session` (each
    /// client in its own session, a retry repeats the sequence number: must never apply twice)
    /// or `plain` (no session: a retry may apply twice, and the checker must find it).
    #[arg(long, value_parser = parse_retry)]
    retry: Option<retry::Mode>,
}

fn parse_retry(name: &str) -> Result<retry::Mode, String> {
    retry::Mode::parse(name).ok_or_else(|| format!("{name:?}: give session or plain"))
}

fn range(v: &[u64], what: &str) -> anyhow::Result<(Duration, Duration)> {
    match v {
        [lo, hi] if lo <= hi => Ok((Duration::from_millis(*lo), Duration::from_millis(*hi))),
        _ => bail!("--{what} takes min,max in ms"),
    }
}

/// Starts node 0 as a new cluster and adds the others as voters.
async fn form_cluster(
    cluster: &mut Cluster,
    log: &mut FaultLog,
    start: Instant,
) -> anyhow::Result<()> {
    cluster.start(0, true)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(s) = cluster.status(0, false).await {
            if s.state == "Leader" {
                break;
            }
        }
        if Instant::now() > deadline {
            bail!("node 0 did not become leader; see its log in the work dir");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in 1..cluster.len() {
        cluster.start(i, false)?;
        nemesis::add_back(cluster, i, log, start).await?;
    }
    Ok(())
}

/// After healing: every node must be a voter again (a membership fault may have been cut short).
async fn restore_membership(
    cluster: &Cluster,
    log: &mut FaultLog,
    start: Instant,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(l) = cluster.leader().await {
            if let Ok(s) = cluster.status(l, false).await {
                let missing: Vec<usize> = (0..cluster.len())
                    .filter(|&i| {
                        !s.members
                            .iter()
                            .any(|m| m.id == cluster.specs[i].name && m.voter)
                    })
                    .collect();
                if missing.is_empty() {
                    return Ok(());
                }
                for i in missing {
                    nemesis::add_back(cluster, i, log, start).await?;
                }
                continue;
            }
        }
        if Instant::now() > deadline {
            bail!("no leader with a full membership within 60 s after healing");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Reads every key ever used, linearizably, through any node; recorded in the history.
async fn final_read(
    cluster: &Cluster,
    keys: &Keys,
    recorder: &Recorder,
    process: u64,
) -> anyhow::Result<BTreeMap<u64, Vec<u64>>> {
    let mut out = BTreeMap::new();
    for chunk in keys.all_keys().chunks(512) {
        let txn: Vec<Mop> = chunk
            .iter()
            .map(|&key| Mop::Read { key, value: None })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut attempt = 0usize;
        let done = loop {
            let mut client = cluster.client(attempt % cluster.len());
            recorder.invoke(process, &txn);
            let r = workload::execute(&mut client, &txn, Duration::from_secs(5)).await;
            recorder.complete(process, r.outcome, &r.txn, r.error.clone());
            if r.outcome == Outcome::Ok {
                break r.txn;
            }
            if Instant::now() > deadline {
                bail!("final read failed for 60 s: {:?}", r.error);
            }
            attempt += 1;
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        for m in done {
            if let Mop::Read {
                key,
                value: Some(list),
            } = m
            {
                out.insert(key, list);
            }
        }
    }
    Ok(out)
}

/// The faults to inject (all when none are named) and their pacing.
fn faults_and_schedule(args: &Args) -> anyhow::Result<(Vec<Fault>, Schedule)> {
    let faults: Vec<Fault> = if args.faults.is_empty() {
        Fault::ALL.to_vec()
    } else {
        args.faults
            .iter()
            .map(|f| Fault::parse(f).with_context(|| format!("unknown fault {f:?}")))
            .collect::<anyhow::Result<_>>()?
    };
    let schedule = Schedule {
        quiet: range(&args.quiet_ms, "quiet-ms")?,
        hold: range(&args.hold_ms, "hold-ms")?,
    };
    Ok((faults, schedule))
}

/// One node per namespace and address, named n1, n2, ...
fn node_specs(args: &Args) -> Vec<NodeSpec> {
    args.namespaces
        .iter()
        .zip(&args.ips)
        .enumerate()
        .map(|(i, (ns, ip))| NodeSpec {
            name: format!("n{}", i + 1),
            namespace: ns.clone(),
            ip: ip.clone(),
        })
        .collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.namespaces.len() != args.ips.len() || args.namespaces.len() < 3 {
        bail!("give at least 3 namespaces and as many ips");
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    let (faults, schedule) = faults_and_schedule(&args)?;
    eprintln!(
        "chaos: seed {seed}, {} s, {} nodes, faults {:?}",
        args.duration,
        args.ips.len(),
        faults.iter().map(|f| f.name()).collect::<Vec<_>>()
    );
    std::fs::create_dir_all(&args.work)?;
    let specs = node_specs(&args);
    let node_args: Vec<String> = args
        .node_args
        .iter()
        .filter(|a| !a.is_empty())
        .cloned()
        .collect();
    let secure = match args.secure {
        true => {
            let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
            Some(Secure::generate(&args.work, &names, &args.ips)?)
        }
        false => None,
    };
    let mut cluster = Cluster::new(
        args.host.clone(),
        args.work.clone(),
        specs,
        node_args,
        secure,
    )?;
    let mut net = Net::new(args.namespaces.clone(), args.ips.clone());
    net.heal()?;
    let start = Instant::now();
    let mut nemesis = Nemesis::new(net, StdRng::seed_from_u64(seed), faults, schedule, start);
    form_cluster(&mut cluster, &mut nemesis.log, start).await?;
    let upgrade_module = match &args.upgrade_module {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?),
        None => None,
    };

    let watchers = follow_feeds(&cluster);
    let stop = Arc::new(AtomicBool::new(false));
    let run = Shared {
        keys: Arc::new(Keys::default()),
        recorder: Arc::new(Recorder::default()),
        stop: stop.clone(),
        timeout: Duration::from_millis(args.timeout_ms),
    };
    let n = cluster.len();
    let retry_stats = Arc::new(retry::Stats::default());
    let plan = ClientPlan {
        per_node: args.clients_per_node.max(1),
        seed,
        retry: args.retry.map(|mode| (mode, retry_stats.clone())),
    };
    let clients = spawn_clients(&cluster, &plan, &run);
    let timer = {
        let stop = stop.clone();
        let d = Duration::from_secs(args.duration);
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            stop.store(true, Ordering::Relaxed);
        })
    };
    let upgrader = upgrade_module.map(|module| {
        let clients = (0..n).map(|i| cluster.client(i)).collect();
        tokio::spawn(upgrade_during_faults(
            clients,
            module,
            Duration::from_secs(args.upgrade_at),
            start,
            stop.clone(),
        ))
    });
    nemesis.run(&mut cluster, stop.clone()).await;
    let upgrade = match upgrader {
        Some(task) => Some(task.await?),
        None => None,
    };
    timer.await?;
    for c in clients {
        c.await?;
    }
    nemesis.heal(&mut cluster);
    restore_membership(&cluster, &mut nemesis.log, start).await?;
    let log = nemesis.log;

    let mut findings = Findings::gather(&cluster, &run, &log, &args.work, upgrade).await?;
    findings.check_feeds(&cluster, &watchers).await;
    findings.retries = args.retry.map(|mode| retry_stats.to_json(mode));
    cluster.stop_all();
    findings.conclude(seed, args.duration, n, &args.work, log.injected.len())
}

/// One watcher per node, following its change feed from the first revision.
struct Watchers {
    feeds: Vec<Arc<Mutex<NodeFeed>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn follow_feeds(cluster: &Cluster) -> Watchers {
    let feeds: Vec<Arc<Mutex<NodeFeed>>> = (0..cluster.len()).map(|_| Arc::default()).collect();
    let tasks = feeds
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let node = cluster.specs[i].name.clone();
            tokio::spawn(feed::follow(cluster.client(i), node, f.clone()))
        })
        .collect();
    Watchers { feeds, tasks }
}

/// How the clients are made: how many per node, their seeds, and whether they retry.
struct ClientPlan {
    per_node: usize,
    seed: u64,
    retry: Option<(retry::Mode, Arc<retry::Stats>)>,
}

/// Starts `per_node` list-append clients against each node.
fn spawn_clients(
    cluster: &Cluster,
    plan: &ClientPlan,
    run: &Shared,
) -> Vec<tokio::task::JoinHandle<()>> {
    let n = cluster.len();
    let mut clients = Vec::new();
    for i in 0..n {
        for c in 0..plan.per_node {
            let idx = (i * plan.per_node + c) as u64;
            let processes = Processes {
                first: idx,
                stride: (n * plan.per_node) as u64,
            };
            let seed = plan.seed.wrapping_add(idx + 1);
            let run = run.clone();
            clients.push(match &plan.retry {
                None => tokio::spawn(workload::client_loop(
                    cluster.client(i),
                    processes,
                    seed,
                    run,
                )),
                Some((mode, stats)) => {
                    let all = (0..n).map(|j| cluster.client(j)).collect();
                    let client = Retrying::new(all, i, *mode, stats.clone());
                    tokio::spawn(client.run(processes, seed, run))
                }
            });
        }
    }
    clients
}

/// What a run found once the workload stopped and the faults healed.
struct Findings {
    isolation: check::Isolation,
    check_s: f64,
    lost: Vec<(u64, u64)>,
    dups: Vec<(u64, u64)>,
    /// The final read of every key.
    final_state: BTreeMap<u64, Vec<u64>>,
    /// Appends of unknown outcome.
    unknown: std::collections::BTreeSet<(u64, u64)>,
    agreed: Result<check::Agreement, Vec<String>>,
    upgrade: Option<UpgradeOutcome>,
    acknowledged: usize,
    keys: usize,
    faults: BTreeMap<&'static str, usize>,
    /// What retrying clients did, when they ran.
    retries: Option<serde_json::Value>,
    /// Per node: changes received and resumes of its watch.
    feeds: Vec<serde_json::Value>,
    feed_problems: Vec<String>,
    ok: usize,
    fail: usize,
    info: usize,
}

impl Findings {
    /// Reads the final state, checks replicas and the history, and writes the history and
    /// fault log into `work`.
    async fn gather(
        cluster: &Cluster,
        run: &Shared,
        log: &FaultLog,
        work: &std::path::Path,
        upgrade: Option<UpgradeOutcome>,
    ) -> anyhow::Result<Self> {
        let final_state = final_read(cluster, &run.keys, &run.recorder, u64::MAX / 2).await?;
        let agreed = check::replicas_agree(cluster, Duration::from_secs(60)).await;
        let events = run.recorder.events();
        let jsonl = history::to_jsonl(&events);
        std::fs::write(work.join("history.jsonl"), &jsonl)?;
        std::fs::write(work.join("faults.log"), log.lines.join("\n") + "\n")?;
        let checking = Instant::now();
        let isolation = check::isolation(&jsonl)?;
        let check_s = checking.elapsed().as_secs_f64();
        let (ok, fail, info) = history::outcome_counts(&events);
        let mut faults: BTreeMap<&'static str, usize> = BTreeMap::new();
        for f in &log.injected {
            *faults.entry(f.name()).or_default() += 1;
        }
        Ok(Findings {
            isolation,
            check_s,
            lost: check::lost_appends(&events, &final_state),
            dups: check::duplicated_elements(&final_state),
            agreed,
            upgrade,
            acknowledged: check::acknowledged_appends(&events),
            keys: final_state.len(),
            final_state,
            unknown: check::unknown_appends(&events),
            faults,
            retries: None,
            feeds: Vec::new(),
            feed_problems: Vec::new(),
            ok,
            fail,
            info,
        })
    }

    /// Lets every watcher catch up with the replicas' applied index, stops them and checks
    /// their feeds against the final read (kept from `gather`).
    async fn check_feeds(&mut self, cluster: &Cluster, watchers: &Watchers) {
        let through = self.agreed.as_ref().map_or(0, |a| a.applied_index);
        if !feed::settle(&watchers.feeds, through, Duration::from_secs(60)).await {
            self.feed_problems.push(format!(
                "a watcher did not reach revision {through} within 60 s"
            ));
        }
        for t in &watchers.tasks {
            t.abort();
        }
        let guards: Vec<_> = watchers
            .feeds
            .iter()
            .map(|f| f.lock().unwrap_or_else(|p| p.into_inner()))
            .collect();
        let named: Vec<(String, &NodeFeed)> = guards
            .iter()
            .enumerate()
            .map(|(i, g)| (cluster.specs[i].name.clone(), &**g))
            .collect();
        self.feed_problems
            .extend(feed::check(&named, &self.final_state, &self.unknown));
        self.feeds = named
            .iter()
            .map(|(node, f)| {
                json!({"node": node, "changes": f.changes, "through": f.through,
                "resumes": f.resumes})
            })
            .collect();
    }

    fn report(&self, seed: u64, duration: u64, nodes: usize) -> serde_json::Value {
        json!({
            "seed": seed,
            "duration_s": duration,
            "nodes": nodes,
            "operations": {"ok": self.ok, "fail": self.fail, "info": self.info},
            "acknowledged_appends": self.acknowledged,
            "keys": self.keys,
            "faults": self.faults,
            "retries": self.retries,
            "adya": {"verdict": self.isolation.verdict, "anomalies": self.isolation.anomaly_types,
                "check_s": self.check_s},
            "lost_acknowledged_appends": self.lost.len(),
            "feeds": self.feeds,
            "feed_problems": self.feed_problems.len(),
            "duplicated_elements": self.dups.len(),
            "replicas": match &self.agreed {
                Ok(a) => json!({"agree": true, "applied_index": a.applied_index,
                    "state_hash": a.state_hash, "module_hash": a.module_hash}),
                Err(seen) => json!({"agree": false, "seen": seen}),
            },
            "upgrade": self.upgrade.as_ref().map(|u| json!({
                "module_hash": u.hash, "acknowledged_at_s": u.acknowledged_at_s,
                "log_index": u.log_index, "attempts": u.attempts, "refused": u.refused,
                "last_error": u.last_error,
            })),
        })
    }

    /// Writes and prints the report, then passes or fails the run.
    fn conclude(
        &self,
        seed: u64,
        duration: u64,
        nodes: usize,
        work: &std::path::Path,
        faults: usize,
    ) -> anyhow::Result<()> {
        let report = self.report(seed, duration, nodes);
        std::fs::write(
            work.join("report.json"),
            serde_json::to_string_pretty(&report)?,
        )?;
        println!("{report}");
        if let Some(retries) = &self.retries {
            eprintln!("retries: {retries}");
        }
        self.verdict(seed, work)?;
        let (ok, fail, info) = (self.ok, self.fail, self.info);
        eprintln!(
            "chaos run passed: seed {seed}, {} operations ({ok} ok, {fail} fail, {info} info), \
             {faults} faults",
            ok + fail + info
        );
        Ok(())
    }

    /// Passes, or prints every failure and fails.
    fn verdict(&self, seed: u64, work: &std::path::Path) -> anyhow::Result<()> {
        // An acknowledged upgrade must be what every replica runs; a refused one is a failure.
        let upgrade_ok = match (&self.upgrade, &self.agreed) {
            (Some(u), _) if u.refused => false,
            (Some(u), Ok(a)) if u.acknowledged_at_s.is_some() => a.module_hash == u.hash,
            _ => true,
        };
        let passed = self.isolation.valid
            && self.lost.is_empty()
            && self.dups.is_empty()
            && self.agreed.is_ok()
            && self.feed_problems.is_empty()
            && upgrade_ok;
        if passed {
            return Ok(());
        }
        if !self.isolation.valid {
            eprintln!(
                "adya: {}\n{}",
                self.isolation.verdict, self.isolation.details
            );
        }
        if !self.lost.is_empty() {
            eprintln!("lost acknowledged appends (key, element): {:?}", self.lost);
        }
        if !self.dups.is_empty() {
            eprintln!("elements present twice (key, element): {:?}", self.dups);
        }
        if let Err(seen) = &self.agreed {
            eprintln!("replicas disagree: {seen:#?}");
        }
        for p in &self.feed_problems {
            eprintln!("change feed: {p}");
        }
        if !upgrade_ok {
            eprintln!("upgrade failed: {:?}", self.upgrade);
        }
        bail!(
            "chaos run FAILED (seed {seed}); history, faults and node logs are in {}",
            work.display()
        );
    }
}
