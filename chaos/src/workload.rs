//! The list-append workload: concurrent clients, each bound to one node, running small
//! transactions of reads and appends of unique elements over a few hot keys.
//!
//! A transaction with an append goes through the log as one guest-kv `txn` command (reads in it
//! are read at the transaction's log position); a read-only one is a linearizable `get_many`
//! query (the read-index path). Lists are stored as space-separated decimal elements. Keys are
//! retired after [`MAX_APPENDS_PER_KEY`] appends so lists stay short and the checker fast.
//!
//! Outcomes: a reply is `ok`; a guest or input error, or an error that proves the command never
//! reached a log (no connection, no leader), is `fail`; any other error or a timeout on a write
//! is `info` (it may still commit) and the client takes a new process id, as a Jepsen client
//! does after an indeterminate operation. A failed read is `fail`: reads change nothing.
//! (The clients of [`crate::retry`] retry such writes instead.)

use crate::cluster::Client;
use crate::history::{Mop, Outcome, Recorder};
use guest_kv::schema::{
    self, Command, GetManyResponse, GetResponse, Query, TxnOp, TxnResponse, TxnResult,
};
use host::proto::{ApplyRequest, Consistency, QueryRequest, Session};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Keys written at once.
pub const ACTIVE_KEYS: usize = 6;
/// Appends after which a key is retired and replaced by a fresh one.
pub const MAX_APPENDS_PER_KEY: u32 = 150;
/// Longest transaction, in micro-operations.
const MAX_TXN_LEN: usize = 4;

/// The key a list lives under in guest-kv.
pub fn key_name(key: u64) -> String {
    format!("chaos/{key}")
}

/// Parses a stored list ("1 5 9 ").
pub fn parse_list(value: Option<&str>) -> Result<Vec<u64>, String> {
    value
        .unwrap_or("")
        .split_whitespace()
        .map(|t| t.parse().map_err(|_| format!("bad list element {t:?}")))
        .collect()
}

#[derive(Debug)]
struct KeySlots {
    keys: Vec<u64>,
    appends: Vec<u32>,
    next_key: u64,
}

/// Shared by every client: which keys are live, and the next unique element.
#[derive(Debug)]
pub struct Keys {
    slots: Mutex<KeySlots>,
    next_element: AtomicU64,
}

impl Default for Keys {
    fn default() -> Self {
        Keys {
            slots: Mutex::new(KeySlots {
                keys: (0..ACTIVE_KEYS as u64).collect(),
                appends: vec![0; ACTIVE_KEYS],
                next_key: ACTIVE_KEYS as u64,
            }),
            next_element: AtomicU64::new(1),
        }
    }
}

impl Keys {
    fn read_key(&self, rng: &mut StdRng) -> u64 {
        let s = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        s.keys[rng.gen_range(0..s.keys.len())]
    }

    fn append_key(&self, rng: &mut StdRng) -> u64 {
        let mut s = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let slot = rng.gen_range(0..s.keys.len());
        let key = s.keys[slot];
        s.appends[slot] += 1;
        if s.appends[slot] >= MAX_APPENDS_PER_KEY {
            s.keys[slot] = s.next_key;
            s.appends[slot] = 0;
            s.next_key += 1;
        }
        key
    }

    /// Every key used so far (0..next).
    pub fn all_keys(&self) -> Vec<u64> {
        let s = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        (0..s.next_key).collect()
    }

    /// A random transaction: 1..=4 micro-operations, each a read or an append of a new element.
    pub fn generate(&self, rng: &mut StdRng) -> Vec<Mop> {
        let len = rng.gen_range(1..=MAX_TXN_LEN);
        (0..len)
            .map(|_| {
                if rng.gen_bool(0.5) {
                    Mop::Read {
                        key: self.read_key(rng),
                        value: None,
                    }
                } else {
                    Mop::Append {
                        key: self.append_key(rng),
                        value: self.next_element.fetch_add(1, Ordering::Relaxed),
                    }
                }
            })
            .collect()
    }
}

/// The result of sending one transaction.
#[derive(Debug)]
pub struct TxnOutcome {
    pub outcome: Outcome,
    /// The transaction with read results filled in (only meaningful when `ok`).
    pub txn: Vec<Mop>,
    pub error: Option<String>,
}

/// How a failed write is counted: by the error's code, never its text. The node says in the
/// status details whether the write certainly did not take effect (`unavailable`, or a refusal)
/// or may have (`unknown_outcome`); a status without details is this client's own transport
/// failure, definite only when the connection was never made.
pub fn classify_write_error(status: &tonic::Status) -> Outcome {
    use host::service::ServiceError;
    if status.details().is_empty() {
        return match host::service::never_sent(status) {
            true => Outcome::Fail,
            false => Outcome::Info,
        };
    }
    match ServiceError::from_status(status) {
        ServiceError::UnknownOutcome { .. } | ServiceError::Internal { .. } => Outcome::Info,
        // Not applied: no leader or not reachable, refused, malformed, or refused by the guest
        // deterministically.
        _ => Outcome::Fail,
    }
}

/// True when `txn` only reads (it goes out as a query, not through the log).
pub fn read_only(txn: &[Mop]) -> bool {
    txn.iter().all(|m| matches!(m, Mop::Read { .. }))
}

/// Sends `txn` to `client` and interprets the reply.
pub async fn execute(client: &mut Client, txn: &[Mop], timeout: Duration) -> TxnOutcome {
    if read_only(txn) {
        return read(client, txn, timeout).await;
    }
    match write(client, txn, None, timeout).await {
        Ok(done) => done,
        Err(status) => TxnOutcome {
            outcome: classify_write_error(&status),
            txn: txn.to_vec(),
            error: Some(status.to_string()),
        },
    }
}

/// A read-only transaction as one linearizable `get_many` query.
async fn read(client: &mut Client, txn: &[Mop], timeout: Duration) -> TxnOutcome {
    let keys: Vec<String> = txn
        .iter()
        .map(|m| match m {
            Mop::Read { key, .. } | Mop::Append { key, .. } => key_name(*key),
        })
        .collect();
    let mut req = tonic::Request::new(QueryRequest {
        request: Query::GetMany { keys }.encode(),
        consistency: Consistency::Linearizable as i32,
    });
    req.set_timeout(timeout);
    match client.query(req).await {
        Ok(reply) => fill_reads(txn, read_many(&reply.into_inner().response)),
        Err(status) => TxnOutcome {
            outcome: Outcome::Fail,
            txn: txn.to_vec(),
            error: Some(status.to_string()),
        },
    }
}

/// Sends a transaction with appends through the log as one guest-kv `txn` command, in
/// `session` when given; the error, when there is one, is for the caller to classify.
pub async fn write(
    client: &mut Client,
    txn: &[Mop],
    session: Option<Session>,
    timeout: Duration,
) -> Result<TxnOutcome, tonic::Status> {
    let ops: Vec<TxnOp> = txn
        .iter()
        .map(|m| match m {
            Mop::Read { key, .. } => TxnOp::Get {
                key: key_name(*key),
            },
            Mop::Append { key, value } => TxnOp::Append {
                key: key_name(*key),
                value: format!("{value} "),
            },
        })
        .collect();
    let mut req = tonic::Request::new(ApplyRequest {
        session,
        command: Command::Txn { ops }.encode(),
    });
    req.set_timeout(timeout);
    let reply = client.apply(req).await?;
    Ok(fill_reads(txn, read_txn(&reply.into_inner().response)))
}

/// The values a `get_many` reply holds, one per key.
fn read_many(response: &[u8]) -> Result<Vec<Option<String>>, String> {
    let reply: GetManyResponse = schema::decode(response).map_err(|e| e.to_string())?;
    Ok(reply.values)
}

/// One item per operation of a `txn` reply: the value for a `get`, nothing for an append.
fn read_txn(response: &[u8]) -> Result<Vec<Option<String>>, String> {
    let reply: TxnResponse = schema::decode(response).map_err(|e| e.to_string())?;
    Ok(reply
        .results
        .into_iter()
        .map(|r| match r {
            TxnResult::Get(GetResponse { value }) => value,
            _ => None,
        })
        .collect())
}

/// Fills each read of `txn` from `values` (one item per micro-operation for `txn`, one per
/// read for `get_many`, which only ever holds reads).
fn fill_reads(txn: &[Mop], values: Result<Vec<Option<String>>, String>) -> TxnOutcome {
    let parsed = values.and_then(|values| {
        if values.len() != txn.len() {
            return Err(format!(
                "{} results for {} operations",
                values.len(),
                txn.len()
            ));
        }
        txn.iter()
            .zip(&values)
            .map(|(m, value)| match m {
                Mop::Read { key, .. } => Ok(Mop::Read {
                    key: *key,
                    value: Some(parse_list(value.as_deref())?),
                }),
                other => Ok(other.clone()),
            })
            .collect::<Result<Vec<_>, String>>()
    });
    match parsed {
        Ok(filled) => TxnOutcome {
            outcome: Outcome::Ok,
            txn: filled,
            error: None,
        },
        // The write happened but the reply is unreadable: unknown, and worth reporting.
        Err(e) => TxnOutcome {
            outcome: Outcome::Info,
            txn: txn.to_vec(),
            error: Some(format!("unreadable reply: {e}")),
        },
    }
}

/// What every client of a run shares.
#[derive(Clone, Debug)]
pub struct Shared {
    pub keys: Arc<Keys>,
    pub recorder: Arc<Recorder>,
    pub stop: Arc<AtomicBool>,
    /// Deadline of one request.
    pub timeout: Duration,
}

impl Shared {
    /// True once the run's traffic should end.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// Process ids a client uses: its first, then steps of `stride` (one per indeterminate write),
/// so no two clients share one.
#[derive(Clone, Copy, Debug)]
pub struct Processes {
    pub first: u64,
    pub stride: u64,
}

/// One client: runs transactions against its node until `stop`, recording each.
pub async fn client_loop(mut client: Client, processes: Processes, seed: u64, run: Shared) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut process = processes.first;
    while !run.stopping() {
        let txn = run.keys.generate(&mut rng);
        run.recorder.invoke(process, &txn);
        let result = execute(&mut client, &txn, run.timeout).await;
        process = processes.complete(process, result, &run).await;
    }
}

impl Processes {
    /// Records how `process`'s transaction ended; returns the process id for the next one: a
    /// new one after an unknown outcome (it may still commit), after a short pause on a failure
    /// so a down node is not hammered.
    pub async fn complete(&self, process: u64, result: TxnOutcome, run: &Shared) -> u64 {
        run.recorder
            .complete(process, result.outcome, &result.txn, result.error);
        match result.outcome {
            Outcome::Info => return process + self.stride,
            Outcome::Fail => tokio::time::sleep(Duration::from_millis(50)).await,
            Outcome::Ok => {}
        }
        process
    }
}
