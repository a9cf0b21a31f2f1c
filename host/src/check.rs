//! `host guest check`: runs a guest component the way a cluster would, several times over, and
//! reports in one go what would make replicas part or a deployment fail:
//! - its world version, exports, and imports the host does not provide (calls to those trap);
//! - a script of commands applied to two fresh instances: every response, the fuel each command
//!   burned, and the final snapshots must be byte-identical;
//! - a third instance also answers the script's queries, as one node would: its responses and
//!   final state must still be the others' (a query that changes the state shows here). Its fuel
//!   is not compared: a query may leave the guest's allocator in another state, and later
//!   commands then cost a little more or less;
//! - snapshot → restore into a fresh instance halfway, then the rest of the script: the restored
//!   instance must answer and end like the uninterrupted one (fuel not compared, as above);
//! - fuel and memory per command (min, median, max) and the largest snapshot.
//!
//! Each command gets the context a cluster would give it (index, term 1, a time 10 ms after the
//! previous one), the same on every instance.

use crate::fsm::{EntryContext, FsmError, GuestFsm, GuestModule, Outcome};
use serde::Deserialize;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Divergences listed in a report; more are counted.
const LISTED_DIVERGENCES: usize = 20;
/// The first command's time in a check (2026-01-01T00:00:00Z), ms since the Unix epoch.
const FIRST_UNIX_MS: u64 = 1_767_225_600_000;

/// One line of a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A command, applied as a committed entry.
    Apply(Vec<u8>),
    /// A query, answered by the first instance only.
    Query(Vec<u8>),
}

/// A script line that cannot be read.
#[derive(Debug, Error)]
#[error("line {line}: {reason}")]
pub struct ScriptError {
    pub line: usize,
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
enum Line {
    Apply(serde_json::Value),
    Query(serde_json::Value),
}

/// The bytes a script value stands for: a JSON string is its text, anything else its JSON.
fn bytes_of(value: serde_json::Value) -> Vec<u8> {
    match value {
        serde_json::Value::String(s) => s.into_bytes(),
        other => other.to_string().into_bytes(),
    }
}

/// Reads a script: one step per non-empty line, `{"apply": X}` or `{"query": X}`, where X is a
/// JSON string (sent as its text, `{"apply":"open alice 100"}`) or any other JSON value (sent as
/// its JSON, `{"apply":{"op":"put","key":"a","value":"1"}}`). Any other line is a command's
/// bytes as they are.
pub fn parse_script(text: &str) -> Result<Vec<Step>, ScriptError> {
    let mut steps = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let step = match serde_json::from_str::<Line>(line) {
            Ok(Line::Apply(v)) => Step::Apply(bytes_of(v)),
            Ok(Line::Query(v)) => Step::Query(bytes_of(v)),
            Err(_) if !line.trim_start().starts_with('{') => Step::Apply(line.as_bytes().to_vec()),
            Err(e) => {
                return Err(ScriptError {
                    line: n + 1,
                    reason: format!("not {{\"apply\": …}} or {{\"query\": …}}: {e}"),
                })
            }
        };
        steps.push(step);
    }
    Ok(steps)
}

/// A script for guest-kv: `count` steps over 1,000 keys (puts, appends, deletes, compare-and-
/// swaps, transactions, and one get in ten), the same for the same `seed`.
pub fn guest_kv_script(count: usize, seed: u64) -> Vec<Step> {
    use guest_kv::{Command, Query, TxnOp};
    let mut state = seed | 1;
    let mut next = move || {
        // xorshift64: any fixed sequence will do.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..count)
        .map(|i| {
            let r = next();
            let key = format!("k{}", r % 1_000);
            let value = format!("v{i}");
            match r >> 60 {
                0 => Step::Query(Query::Get { key }.encode()),
                1 => Step::Apply(Command::Delete { key }.encode()),
                2 => Step::Apply(
                    Command::Cas {
                        key,
                        expected: None,
                        value: Some(value),
                    }
                    .encode(),
                ),
                3 => Step::Apply(Command::Append { key, value }.encode()),
                4 => Step::Apply(
                    Command::Txn {
                        ops: vec![TxnOp::Get { key: key.clone() }, TxnOp::Put { key, value }],
                    }
                    .encode(),
                ),
                _ => Step::Apply(Command::Put { key, value }.encode()),
            }
        })
        .collect()
}

/// Smallest, median and largest of a series.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spread {
    pub min: u64,
    pub median: u64,
    pub max: u64,
}

impl Spread {
    fn of(mut values: Vec<u64>) -> Spread {
        values.sort_unstable();
        match values.as_slice() {
            [] => Spread::default(),
            v => Spread {
                min: v[0],
                median: v[v.len() / 2],
                max: v[v.len() - 1],
            },
        }
    }
}

/// What a check found.
#[derive(Debug, Clone)]
pub struct Report {
    pub world: &'static str,
    pub exports: Vec<String>,
    /// Every import, and whether the host provides it.
    pub imports: Vec<(String, bool)>,
    pub commands: usize,
    pub queries: usize,
    /// Where the instances parted, first ones first.
    pub divergences: Vec<String>,
    /// How many there were in all.
    pub divergence_count: usize,
    pub fuel: Spread,
    /// Guest memory after each command, bytes.
    pub memory: Spread,
    /// The largest snapshot taken (halfway and at the end), bytes.
    pub largest_snapshot: usize,
    pub took: Duration,
}

impl Report {
    /// True when nothing diverged and every import is provided.
    pub fn passed(&self) -> bool {
        self.divergence_count == 0 && self.imports.iter().all(|(_, provided)| *provided)
    }
}

/// What stops a check before it can report: the guest could not be started or kept running.
#[derive(Debug, Error)]
pub enum CheckError {
    #[error("{0}")]
    Fsm(#[from] FsmError),
}

/// The instances of a check and what they disagreed on.
struct Run {
    /// The commands, and a snapshot halfway.
    a: GuestFsm,
    /// The same calls as `a`: the same fuel.
    b: GuestFsm,
    /// The commands and the queries.
    q: GuestFsm,
    /// Restored from a's snapshot halfway; then the commands.
    c: Option<GuestFsm>,
    divergences: Vec<String>,
    count: usize,
    fuel: Vec<u64>,
    memory: Vec<u64>,
    largest_snapshot: usize,
}

impl Run {
    fn diverged(&mut self, what: String) {
        self.count += 1;
        if self.divergences.len() < LISTED_DIVERGENCES {
            self.divergences.push(what);
        }
    }

    fn apply(&mut self, step: usize, command: &[u8], at: EntryContext) -> Result<(), FsmError> {
        let a = self.a.apply(command, at)?;
        let b = self.b.apply(command, at)?;
        self.fuel.push(a.fuel_used);
        self.memory.push(self.a.memory_bytes());
        if let Some(what) = differ(&a, &b, true) {
            self.diverged(format!("step {step}: two fresh instances {what}"));
        }
        let q = self.q.apply(command, at)?;
        if let Some(what) = differ(&a, &q, false) {
            self.diverged(format!(
                "step {step}: the instance that also answered the queries {what}"
            ));
        }
        if let Some(c) = &mut self.c {
            let c = c.apply(command, at)?;
            if let Some(what) = differ(&a, &c, false) {
                self.diverged(format!("step {step}: the instance restored halfway {what}"));
            }
        }
        Ok(())
    }

    fn restore_halfway(&mut self, step: usize, module: &GuestModule) -> Result<(), FsmError> {
        // A snapshot call moves the guest allocator's state, and with it the fuel of later
        // commands: a and b both take one, so their fuel stays comparable.
        let snapshot = self.a.snapshot()?;
        if self.b.snapshot()? != snapshot {
            self.diverged(format!(
                "step {step}: two fresh instances' snapshots differ: the state depends on more \
                 than the commands"
            ));
        }
        self.largest_snapshot = self.largest_snapshot.max(snapshot.len());
        let mut c = module.start()?;
        let restored = c.restore(Arc::clone(&snapshot))?;
        match restored.result {
            Ok(()) => {
                if c.snapshot()? != snapshot {
                    self.diverged(format!(
                        "step {step}: snapshot → restore → snapshot gives different bytes"
                    ));
                }
                self.c = Some(c);
            }
            Err(e) => self.diverged(format!(
                "step {step}: restore refused the guest's own snapshot: {e}"
            )),
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), FsmError> {
        let (a, b, q) = (self.a.snapshot()?, self.b.snapshot()?, self.q.snapshot()?);
        self.largest_snapshot = self.largest_snapshot.max(a.len());
        if a != b {
            self.diverged(format!(
                "end: two fresh instances' final snapshots differ ({} and {} bytes): the state \
                 depends on more than the commands",
                a.len(),
                b.len()
            ));
        }
        if a != q {
            self.diverged(
                "end: the instance that also answered the queries ends in a different state: \
                 a query changed it"
                    .to_string(),
            );
        }
        if let Some(c) = &mut self.c {
            if c.snapshot()? != a {
                self.diverged(
                    "end: the instance restored halfway ends in a different state".to_string(),
                );
            }
        }
        Ok(())
    }
}

/// How two outcomes of the same call differ, if they do (in fuel too, when `fuel`).
fn differ(x: &Outcome<Vec<u8>>, y: &Outcome<Vec<u8>>, fuel: bool) -> Option<String> {
    if x.result != y.result {
        return Some(format!(
            "answered differently: {} vs {}",
            shown(&x.result),
            shown(&y.result)
        ));
    }
    (fuel && x.fuel_used != y.fuel_used)
        .then(|| format!("burned different fuel: {} vs {}", x.fuel_used, y.fuel_used))
}

fn shown(result: &Result<Vec<u8>, crate::fsm::CallError>) -> String {
    match result {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(bytes);
            let cut: String = text.chars().take(80).collect();
            format!("{cut:?}")
        }
        Err(e) => format!("error ({e})"),
    }
}

/// Checks `module` with `steps`.
pub fn check(module: &GuestModule, steps: &[Step]) -> Result<Report, CheckError> {
    let started = Instant::now();
    let mut run = Run {
        a: module.start()?,
        b: module.start()?,
        q: module.start()?,
        c: None,
        divergences: Vec::new(),
        count: 0,
        fuel: Vec::new(),
        memory: Vec::new(),
        largest_snapshot: 0,
    };
    let halfway = steps.len() / 2;
    let mut queries = 0;
    for (n, step) in steps.iter().enumerate() {
        if n == halfway {
            run.restore_halfway(n + 1, module)?;
        }
        let at = EntryContext {
            index: n as u64 + 1,
            term: 1,
            unix_ms: FIRST_UNIX_MS + 10 * n as u64,
            position: 0,
        };
        match step {
            Step::Apply(command) => run.apply(n + 1, command, at)?,
            Step::Query(request) => {
                queries += 1;
                run.q.query(request, at)?;
            }
        }
    }
    run.finish()?;
    let shape = module.shape();
    Ok(Report {
        world: module.world().as_str(),
        exports: shape.exports,
        imports: shape.imports,
        commands: steps.len() - queries,
        queries,
        divergences: run.divergences,
        divergence_count: run.count,
        fuel: Spread::of(run.fuel),
        memory: Spread::of(run.memory),
        largest_snapshot: run.largest_snapshot,
        took: started.elapsed(),
    })
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "world: {}", self.world)?;
        writeln!(f, "exports: {}", self.exports.join(", "))?;
        match self.imports.is_empty() {
            true => writeln!(f, "imports: none")?,
            false => {
                let listed: Vec<String> = self
                    .imports
                    .iter()
                    .map(|(name, provided)| match provided {
                        true => name.clone(),
                        false => format!("{name} (NOT PROVIDED)"),
                    })
                    .collect();
                writeln!(f, "imports: {}", listed.join(", "))?;
            }
        }
        writeln!(
            f,
            "script: {} commands, {} queries; four instances: two on the commands, one also on \
             the queries, one restored halfway ({:.2?})",
            self.commands, self.queries, self.took
        )?;
        let (fu, m) = (self.fuel, self.memory);
        writeln!(
            f,
            "fuel per command: min {} median {} max {}",
            fu.min, fu.median, fu.max
        )?;
        writeln!(
            f,
            "memory: min {} median {} max {} bytes",
            m.min, m.median, m.max
        )?;
        writeln!(f, "largest snapshot: {} bytes", self.largest_snapshot)?;
        for d in &self.divergences {
            writeln!(f, "DIVERGED {d}")?;
        }
        if self.divergence_count > self.divergences.len() {
            let more = self.divergence_count - self.divergences.len();
            writeln!(f, "… and {more} more")?;
        }
        match self.passed() {
            true => write!(f, "ok: deterministic over this script"),
            false => write!(f, "FAILED: {} divergences", self.divergence_count),
        }
    }
}
