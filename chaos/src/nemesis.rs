//! Nemeses: faults injected one at a time, chosen by a seeded random generator, each held for a
//! while and then healed. Every step is appended to the fault log with its time.

use crate::cluster::Cluster;
use crate::net::Net;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The kinds of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Cut one random node off from the others (both ways).
    IsolateOne,
    /// Cut the current leader off.
    IsolateLeader,
    /// Random two-group split of the nodes (1|2 with three nodes).
    Split,
    /// One node stops receiving from the others but can still send to them.
    OneWay,
    /// SIGKILL a random node, restart it after the hold.
    Kill,
    /// SIGKILL the leader, restart it after the hold.
    KillLeader,
    /// SIGSTOP a random node, SIGCONT after the hold.
    Pause,
    /// SIGSTOP the leader, SIGCONT after the hold.
    PauseLeader,
    /// Remove a node from the membership, wipe it, start it empty and add it back.
    Membership,
}

impl Fault {
    pub const ALL: [Fault; 9] = [
        Fault::IsolateOne,
        Fault::IsolateLeader,
        Fault::Split,
        Fault::OneWay,
        Fault::Kill,
        Fault::KillLeader,
        Fault::Pause,
        Fault::PauseLeader,
        Fault::Membership,
    ];

    /// The name used on the command line and in the log.
    pub fn name(self) -> &'static str {
        match self {
            Fault::IsolateOne => "isolate-one",
            Fault::IsolateLeader => "isolate-leader",
            Fault::Split => "split",
            Fault::OneWay => "one-way",
            Fault::Kill => "kill",
            Fault::KillLeader => "kill-leader",
            Fault::Pause => "pause",
            Fault::PauseLeader => "pause-leader",
            Fault::Membership => "membership",
        }
    }

    /// Parses [`Fault::name`].
    pub fn parse(s: &str) -> Option<Fault> {
        Fault::ALL.into_iter().find(|f| f.name() == s)
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the nemesis did, for the report.
#[derive(Debug, Default)]
pub struct FaultLog {
    pub lines: Vec<String>,
    pub injected: Vec<Fault>,
}

impl FaultLog {
    fn note(&mut self, start: Instant, msg: String) {
        let line = format!("{:>8.3}s {msg}", start.elapsed().as_secs_f64());
        eprintln!("nemesis {line}");
        self.lines.push(line);
    }
}

/// Timing of the fault schedule.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    /// Quiet time between faults, min..max.
    pub quiet: (Duration, Duration),
    /// How long a fault is held, min..max.
    pub hold: (Duration, Duration),
}

fn between(rng: &mut StdRng, (lo, hi): (Duration, Duration)) -> Duration {
    if hi <= lo {
        return lo;
    }
    rng.gen_range(lo..hi)
}

/// Sleeps `d`, or less if `stop` is raised.
async fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(50).min(until - Instant::now())).await;
    }
}

/// The fault injector: the network it controls, its seeded generator and what it did.
#[derive(Debug)]
pub struct Nemesis {
    pub net: Net,
    rng: StdRng,
    faults: Vec<Fault>,
    schedule: Schedule,
    pub log: FaultLog,
    start: Instant,
}

impl Nemesis {
    /// A nemesis drawing from `faults` with `rng`; times in the log count from `start`.
    pub fn new(
        net: Net,
        rng: StdRng,
        faults: Vec<Fault>,
        schedule: Schedule,
        start: Instant,
    ) -> Self {
        Nemesis {
            net,
            rng,
            faults,
            schedule,
            log: FaultLog::default(),
            start,
        }
    }

    /// Notes `msg` in the fault log.
    pub fn note(&mut self, msg: String) {
        self.log.note(self.start, msg);
    }

    /// Injects faults until `stop` is raised, healing each before the next.
    pub async fn run(&mut self, cluster: &mut Cluster, stop: Arc<AtomicBool>) {
        while !stop.load(Ordering::Relaxed) {
            let quiet = between(&mut self.rng, self.schedule.quiet);
            sleep_unless(&stop, quiet).await;
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let Some(&fault) = self.faults.choose(&mut self.rng) else {
                break;
            };
            let hold = between(&mut self.rng, self.schedule.hold);
            self.log.injected.push(fault);
            if let Err(e) = self.inject(cluster, fault, hold, &stop).await {
                self.note(format!("{fault}: {e}"));
            }
            self.heal(cluster);
        }
    }

    /// Undoes every fault: network rules cleared, stopped nodes continued, dead nodes restarted.
    pub fn heal(&mut self, cluster: &mut Cluster) {
        if !self.net.blocked().is_empty() {
            match self.net.heal() {
                Ok(()) => self.note("network healed".into()),
                Err(e) => self.note(format!("heal network: {e}")),
            }
        }
        for i in 0..cluster.len() {
            if cluster.is_paused(i) {
                let _ = cluster.signal_pause(i, false);
                self.note(format!("resume {}", cluster.specs[i].name));
            }
            if !cluster.is_running(i) {
                match cluster.start(i, false) {
                    Ok(()) => self.note(format!("restart {}", cluster.specs[i].name)),
                    Err(e) => self.note(format!("restart failed: {e}")),
                }
            }
        }
    }

    async fn inject(
        &mut self,
        cluster: &mut Cluster,
        fault: Fault,
        hold: Duration,
        stop: &AtomicBool,
    ) -> anyhow::Result<()> {
        let n = cluster.len();
        let random = self.rng.gen_range(0..n);
        let leader = cluster.leader().await;
        let names: Vec<String> = cluster.specs.iter().map(|s| s.name.clone()).collect();
        let name = |i: usize| names[i].clone();
        let others = |i: usize| (0..n).filter(|&j| j != i).collect::<Vec<_>>();
        match fault {
            Fault::IsolateOne | Fault::IsolateLeader => {
                let target = if fault == Fault::IsolateLeader {
                    leader.unwrap_or(random)
                } else {
                    random
                };
                self.note(format!("{fault}: {} cut off for {hold:?}", name(target)));
                self.net.partition(&[target], &others(target))?;
                sleep_unless(stop, hold).await;
            }
            Fault::Split => {
                let mut order: Vec<usize> = (0..n).collect();
                order.shuffle(&mut self.rng);
                let cut = self.rng.gen_range(1..n);
                let (a, b) = order.split_at(cut);
                let show = |g: &[usize]| g.iter().map(|&i| name(i)).collect::<Vec<_>>();
                self.note(format!(
                    "{fault}: {:?} | {:?} for {hold:?}",
                    show(a),
                    show(b)
                ));
                self.net.partition(a, b)?;
                sleep_unless(stop, hold).await;
            }
            Fault::OneWay => {
                let target = if self.rng.gen_bool(0.5) {
                    leader.unwrap_or(random)
                } else {
                    random
                };
                self.note(format!(
                    "{fault}: {} receives nothing from peers for {hold:?}",
                    name(target)
                ));
                self.net.block_inbound(target, &others(target))?;
                sleep_unless(stop, hold).await;
            }
            Fault::Kill | Fault::KillLeader => {
                let target = if fault == Fault::KillLeader {
                    leader.unwrap_or(random)
                } else {
                    random
                };
                self.note(format!("{fault}: SIGKILL {} for {hold:?}", name(target)));
                cluster.kill(target);
                sleep_unless(stop, hold).await;
            }
            Fault::Pause | Fault::PauseLeader => {
                let target = if fault == Fault::PauseLeader {
                    leader.unwrap_or(random)
                } else {
                    random
                };
                self.note(format!("{fault}: SIGSTOP {} for {hold:?}", name(target)));
                cluster.signal_pause(target, true)?;
                sleep_unless(stop, hold).await;
            }
            Fault::Membership => {
                self.replace_node(cluster, random, others(random)[0])
                    .await?
            }
        }
        Ok(())
    }

    /// Removes node `target` through node `via`, wipes it, restarts it empty and adds it back.
    async fn replace_node(
        &mut self,
        cluster: &mut Cluster,
        target: usize,
        via: usize,
    ) -> anyhow::Result<()> {
        let fault = Fault::Membership;
        let name = cluster.specs[target].name.clone();
        self.note(format!("{fault}: remove {name}"));
        cluster.remove_node(via, target).await?;
        cluster.kill(target);
        cluster.wipe(target)?;
        cluster.start(target, false)?;
        self.note(format!("{fault}: {name} wiped and restarted empty"));
        add_back(cluster, target, &mut self.log, self.start).await
    }
}

/// Adds `target` back as a voter, retrying through any other node for up to 60 s.
pub async fn add_back(
    cluster: &Cluster,
    target: usize,
    log: &mut FaultLog,
    start: Instant,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let n = cluster.len();
    let mut attempt = 0;
    loop {
        let via = (target + 1 + attempt % (n - 1)) % n;
        match cluster.add_node(via, target).await {
            Ok(_) => {
                log.note(start, format!("{} is a voter", cluster.specs[target].name));
                return Ok(());
            }
            Err(e) if Instant::now() < deadline => {
                if attempt == 0 {
                    log.note(
                        start,
                        format!("adding {}, will retry: {e}", cluster.specs[target].name),
                    );
                }
            }
            Err(e) => return Err(e.into()),
        }
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
