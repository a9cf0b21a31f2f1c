//! The operation history: every client transaction with its invocation and completion, kept in
//! real-time order and written as Jepsen/Elle JSON lines, the input of the checker.
//!
//! Order is the point: an event is recorded under one lock, the invocation before the request
//! leaves and the completion after the reply arrives, so "A completed before B was invoked" in
//! the file means it happened that way.

use serde_json::{json, Value};
use std::sync::Mutex;
use std::time::Instant;

/// One micro-operation of a list-append transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mop {
    /// Read the list at `key`; `None` until the read completes.
    Read { key: u64, value: Option<Vec<u64>> },
    /// Append the unique element `value` to the list at `key`.
    Append { key: u64, value: u64 },
}

impl Mop {
    fn to_json(&self) -> Value {
        match self {
            Mop::Read { key, value } => json!(["r", key, value]),
            Mop::Append { key, value } => json!(["append", key, value]),
        }
    }
}

/// How an operation ended: `Info` means unknown (it may or may not have taken effect).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Fail,
    Info,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Invoke,
    Done(Outcome),
}

/// One line of the history.
#[derive(Clone, Debug)]
pub struct Event {
    kind: Kind,
    pub process: u64,
    pub txn: Vec<Mop>,
    /// Nanoseconds since the run started.
    pub time: u128,
    /// Why it failed or is unknown, for the log; not part of the model.
    pub error: Option<String>,
}

impl Event {
    /// The outcome, for completions.
    pub fn outcome(&self) -> Option<Outcome> {
        match self.kind {
            Kind::Invoke => None,
            Kind::Done(o) => Some(o),
        }
    }
}

/// Collects events from every client.
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    events: Mutex<Vec<Event>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            start: Instant::now(),
            events: Mutex::new(Vec::new()),
        }
    }
}

impl Recorder {
    fn push(&self, kind: Kind, process: u64, txn: &[Mop], error: Option<String>) {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        events.push(Event {
            kind,
            process,
            txn: txn.to_vec(),
            time: self.start.elapsed().as_nanos(),
            error,
        });
    }

    /// Records that `process` is about to send `txn`.
    pub fn invoke(&self, process: u64, txn: &[Mop]) {
        self.push(Kind::Invoke, process, txn, None);
    }

    /// Records how `process`'s pending transaction ended (`txn` with read results filled in).
    pub fn complete(&self, process: u64, outcome: Outcome, txn: &[Mop], error: Option<String>) {
        self.push(Kind::Done(outcome), process, txn, error);
    }

    /// A copy of every event so far, in order.
    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The events as JSON lines in the format adya (and Elle) read.
pub fn to_jsonl(events: &[Event]) -> String {
    let mut out = String::new();
    for (index, e) in events.iter().enumerate() {
        let kind = match e.kind {
            Kind::Invoke => "invoke",
            Kind::Done(Outcome::Ok) => "ok",
            Kind::Done(Outcome::Fail) => "fail",
            Kind::Done(Outcome::Info) => "info",
        };
        let mut line = json!({
            "index": index,
            "type": kind,
            "process": e.process,
            "time": e.time as i64,
            "value": e.txn.iter().map(Mop::to_json).collect::<Vec<_>>(),
        });
        if let Some(err) = &e.error {
            line["error"] = json!(err);
        }
        out.push_str(&line.to_string());
        out.push('\n');
    }
    out
}

/// Counts of completed operations by outcome: (ok, fail, info).
pub fn outcome_counts(events: &[Event]) -> (usize, usize, usize) {
    let mut counts = (0, 0, 0);
    for e in events {
        match e.outcome() {
            Some(Outcome::Ok) => counts.0 += 1,
            Some(Outcome::Fail) => counts.1 += 1,
            Some(Outcome::Info) => counts.2 += 1,
            None => {}
        }
    }
    counts
}
