//! Clients that retry writes whose outcome is unknown, instead of giving up on them.
//!
//! A client of [`crate::workload`] records a write with an unknown outcome as `info` and goes on
//! as a new process, as a Jepsen client does. These clients send that same transaction again,
//! through the next node each time, until an attempt is answered (or the run ends), so the
//! history holds one operation per transaction with the outcome its last attempt got.
//!
//! With [`Mode::Session`] every write carries the client's session and a new sequence number,
//! and each retry repeats them: the cluster must apply the transaction once, and answer a retry
//! of one that was applied with its first result. With [`Mode::Plain`] a retry is a new command,
//! so a write that committed before its reply was lost is applied twice: the run exists to show
//! that the checker then finds the element twice, i.e. that the check can fail.

use crate::cluster::Client;
use crate::history::{Mop, Outcome};
use crate::workload::{self, Processes, Shared, TxnOutcome};
use host::proto::{OpenSessionRequest, Session};
use host::service::ServiceError;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Pause between two attempts at the same write.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// How a retried write is identified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// In the client's session, with the same sequence number on every attempt.
    Session,
    /// Without a session: every attempt is a new command.
    Plain,
}

impl Mode {
    /// Parses a mode's name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "session" => Some(Mode::Session),
            "plain" => Some(Mode::Plain),
            _ => None,
        }
    }

    /// The mode's name, as [`Mode::parse`] takes it.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Session => "session",
            Mode::Plain => "plain",
        }
    }
}

/// What the retrying clients did, summed over all of them.
#[derive(Debug, Default)]
pub struct Stats {
    /// Writes sent more than once.
    retried_writes: AtomicU64,
    /// Attempts after a write's first.
    retries: AtomicU64,
    /// Retried writes that ended acknowledged.
    retried_ok: AtomicU64,
    /// Retried writes still unknown when the run ended or their session expired.
    retried_unknown: AtomicU64,
    sessions_opened: AtomicU64,
    sessions_expired: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Stats {
    /// The counts, for the run's report.
    pub fn to_json(&self, mode: Mode) -> Value {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        json!({
            "mode": mode.name(),
            "retried_writes": get(&self.retried_writes),
            "retries": get(&self.retries),
            "retried_ok": get(&self.retried_ok),
            "retried_unknown": get(&self.retried_unknown),
            "sessions_opened": get(&self.sessions_opened),
            "sessions_expired": get(&self.sessions_expired),
        })
    }
}

/// One retrying client: bound to its home node, retrying through every node.
#[derive(Debug)]
pub struct Retrying {
    /// A client of every node, in node order.
    clients: Vec<Client>,
    home: usize,
    mode: Mode,
    /// (session id, latest sequence number used) in [`Mode::Session`], once opened.
    session: Option<(u64, u64)>,
    stats: Arc<Stats>,
}

impl Retrying {
    /// A client living on node `home` of `clients`.
    pub fn new(clients: Vec<Client>, home: usize, mode: Mode, stats: Arc<Stats>) -> Self {
        Retrying {
            clients,
            home,
            mode,
            session: None,
            stats,
        }
    }

    /// The node an attempt goes to: home first, then each other node in turn.
    fn client(&mut self, attempt: usize) -> &mut Client {
        let n = self.clients.len();
        &mut self.clients[(self.home + attempt) % n]
    }

    /// Opens a session through any node; `None` when the run ended first.
    async fn open_session(&mut self, run: &Shared) -> Option<u64> {
        let mut attempt = 0;
        while !run.stopping() {
            let mut req = tonic::Request::new(OpenSessionRequest {});
            req.set_timeout(run.timeout);
            // An open with an unknown outcome may have made a session no one uses: it expires.
            if let Ok(reply) = self.client(attempt).open_session(req).await {
                bump(&self.stats.sessions_opened);
                return Some(reply.into_inner().client_id);
            }
            attempt += 1;
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        None
    }

    /// Runs transactions until the run stops, recording each.
    pub async fn run(mut self, processes: Processes, seed: u64, run: Shared) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut process = processes.first;
        while !run.stopping() {
            if self.mode == Mode::Session && self.session.is_none() {
                match self.open_session(&run).await {
                    Some(id) => self.session = Some((id, 0)),
                    None => break,
                }
            }
            let txn = run.keys.generate(&mut rng);
            run.recorder.invoke(process, &txn);
            let result = match workload::read_only(&txn) {
                true => workload::execute(self.client(0), &txn, run.timeout).await,
                false => self.write(&txn, &run).await,
            };
            // Unknown even after retrying: it may still commit, so the process moves on.
            process = processes.complete(process, result, &run).await;
        }
    }

    /// Sends `txn` until an attempt is answered. A first attempt that certainly did not apply
    /// is a failure, as in the default mode; after one with an unknown outcome only an answer
    /// settles it, so definite failures of later attempts (no leader, connection refused) are
    /// retried too.
    async fn write(&mut self, txn: &[Mop], run: &Shared) -> TxnOutcome {
        let session = self.session.as_mut().map(|(client_id, seq)| {
            *seq += 1;
            Session {
                client_id: *client_id,
                seq: *seq,
            }
        });
        let mut attempt = 0;
        loop {
            let timeout = run.timeout;
            let status = match workload::write(self.client(attempt), txn, session, timeout).await {
                Ok(done) => {
                    if attempt > 0 && done.outcome == Outcome::Ok {
                        bump(&self.stats.retried_ok);
                    }
                    return done;
                }
                Err(status) => status,
            };
            let error = ServiceError::from_status(&status);
            let unknown = attempt > 0 || workload::classify_write_error(&status) == Outcome::Info;
            let settled = match &error {
                // Refused, never applied; but if an earlier attempt may have been, unknown.
                ServiceError::SessionExpired { .. } => {
                    bump(&self.stats.sessions_expired);
                    self.session = None;
                    Some(if unknown {
                        Outcome::Info
                    } else {
                        Outcome::Fail
                    })
                }
                _ if !unknown => Some(Outcome::Fail),
                _ if run.stopping() => Some(Outcome::Info),
                // Not applied by this attempt, or unknown: worth another one. Anything else
                // (a refusal) will not change by retrying.
                _ if status.details().is_empty() || error.retry_is_safe() => None,
                ServiceError::UnknownOutcome { .. } | ServiceError::Internal { .. } => None,
                _ => Some(Outcome::Info),
            };
            if let Some(outcome) = settled {
                if attempt > 0 && outcome == Outcome::Info {
                    bump(&self.stats.retried_unknown);
                }
                return TxnOutcome {
                    outcome,
                    txn: txn.to_vec(),
                    error: Some(status.to_string()),
                };
            }
            if attempt == 0 {
                bump(&self.stats.retried_writes);
            }
            bump(&self.stats.retries);
            attempt += 1;
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}
