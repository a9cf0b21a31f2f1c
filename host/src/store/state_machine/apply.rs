//! Applying one committed entry: a batch of commands (each through its client session when it
//! has one, with the context a 0.2.0 guest sees: the entry, its position in it, the log's clock),
//! a session opening, a module switch, a membership change.

use super::command::apply_command;
use super::{module_logged, observe, sm_err, Applied, StateMachine};
use crate::fsm::{CallError, EntryContext, Machine, MachineSpec};
use crate::metrics::guest::Call;
use crate::store::modules::{migrate, ModuleRejected};
use crate::store::pace;
use crate::types::{Entry, ModuleRecord, Request, Response, StoredMembership};
use openraft::EntryPayload;
use std::io;
use std::sync::TryLockError;
use std::time::Instant;

impl StateMachine {
    /// Applies one committed entry and returns its response (what openraft's `apply` does for
    /// each entry it is given). Blocking: async callers go through [`offload`], or first try
    /// [`StateMachine::apply_here`].
    pub fn apply_entry(&self, entry: Entry) -> Result<Response, io::Error> {
        self.apply_locked(&mut self.lock(), entry)
    }

    /// Applies `entry` on the calling async worker when that is sure to be brief, and gives it
    /// back otherwise (for [`offload`]): a batch of commands whose guest cannot block (see
    /// [`Machine::applies_briefly`]), with the guest free now (a query or snapshot holding it
    /// would hold the worker too) and inline applies not paused for running slow (see
    /// [`pace`]). This spares a lone write the two thread wake-ups of a hand-off to the
    /// blocking pool and back, several times a guest-kv put's own cost.
    pub fn apply_here(&self, entry: Entry) -> Result<Result<Response, io::Error>, Entry> {
        if self.shared.pace.paused(Instant::now()) {
            return Err(entry);
        }
        let mut applied = match self.shared.applied.try_lock() {
            Ok(applied) => applied,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return Err(entry),
        };
        if !brief(&applied.fsm, &entry) {
            return Err(entry);
        }
        let started = Instant::now();
        let response = self.apply_locked(&mut applied, entry);
        drop(applied);
        let took = started.elapsed();
        if self.shared.pace.took(took, Instant::now()) {
            tracing::info!(?took, pause = ?pace::PAUSE, "inline applies were slow; handing them to the blocking pool");
        }
        if let Some(m) = self.metrics() {
            m.guest().inline_apply();
        }
        Ok(response)
    }

    fn apply_locked(&self, applied: &mut Applied, entry: Entry) -> Result<Response, io::Error> {
        let index = entry.log_id.index;
        applied.last_applied = Some(entry.log_id);
        applied.sessions.expire(index);
        let mut response = Response::default();
        let mut changed_module = false;
        let mut commands_applied = 0;
        let at = |position: usize, unix_ms: u64| EntryContext {
            index,
            term: entry.log_id.leader_id.term,
            unix_ms,
            position: position as u32,
        };
        match entry.payload {
            EntryPayload::Blank => {}
            EntryPayload::Normal(Request::Commands(commands)) => {
                commands_applied = commands.len();
                for (n, command) in commands.iter().enumerate() {
                    // An FsmError means the guest could not be put back after a failed call:
                    // stop applying rather than diverge.
                    let (fsm, to) = (&mut applied.fsm, self.observers());
                    let outcome = observe::call(fsm, to, Call::Apply, command, at(n, 0));
                    response.results.push(outcome.map_err(sm_err)?.result);
                }
            }
            EntryPayload::Normal(Request::Batch(commands)) => {
                commands_applied = commands.len();
                let unix_ms = applied.clock_ms;
                self.apply_batch(applied, &commands, &mut response, |n| at(n, unix_ms))?;
            }
            EntryPayload::Normal(Request::Stamped { unix_ms, commands }) => {
                commands_applied = commands.len();
                applied.clock_ms = applied.clock_ms.max(unix_ms);
                let unix_ms = applied.clock_ms;
                self.apply_batch(applied, &commands, &mut response, |n| at(n, unix_ms))?;
            }
            EntryPayload::Normal(Request::OpenSession) => {
                let id = applied.sessions.open(index);
                response.results.push(Ok(id.to_le_bytes().to_vec()));
            }
            EntryPayload::Normal(Request::Module { bytes, seed }) => {
                let result = self.apply_module(applied, &bytes, seed, entry.log_id.index)?;
                response.results.push(result);
                changed_module = true;
            }
            EntryPayload::Membership(membership) => {
                applied.membership = StoredMembership::new(Some(entry.log_id), membership);
                changed_module = true;
            }
        }
        self.feed().seal(index);
        self.shared.trigger.applied(commands_applied as u64);
        if changed_module {
            self.publish(applied);
        } else {
            let mut summary = self.summary();
            summary.last_applied = applied.last_applied;
            summary.sessions = applied.sessions.len();
        }
        Ok(response)
    }

    /// Applies a batch's commands, each through its session if it has one; `at` gives the
    /// context of the command at a position.
    fn apply_batch(
        &self,
        applied: &mut Applied,
        commands: &[crate::types::Command],
        response: &mut Response,
        at: impl Fn(usize) -> EntryContext,
    ) -> Result<(), io::Error> {
        for (n, command) in commands.iter().enumerate() {
            let (result, first) = apply_command(applied, self.observers(), command, at(n))?;
            if let Some(first) = first {
                response.retried.push((n, first));
            }
            response.results.push(result);
        }
        Ok(())
    }

    /// Applies a module entry at `index`. The inner error is the deterministic rejection; the
    /// outer one a local storage failure (the module file could not be written).
    fn apply_module(
        &self,
        applied: &mut Applied,
        bytes: &[u8],
        seed: bool,
        index: u64,
    ) -> Result<Result<Vec<u8>, CallError>, io::Error> {
        if seed && (module_logged(&applied.modules) || !self.shared.modules.can_switch()) {
            // A cluster is seeded once; a later seed (a bootstrap retried) changes nothing.
            let active = applied.modules.last().cloned().unwrap_or_default();
            return Ok(Ok(serde_json::to_vec(&serde_json::json!({
                "hash": active.hash, "size": active.size, "since_index": active.since_index,
                "ignored": true,
            }))
            .unwrap_or_default()));
        }
        let switched = self.shared.modules.compile(bytes).and_then(|module| {
            let fsm = if seed {
                // Nothing was applied before a seed: the new module starts empty.
                Machine::Wasm(module.start().map_err(ModuleRejected::Start)?)
            } else {
                let state = observe::snapshot(&mut applied.fsm, self.metrics())
                    .map_err(ModuleRejected::Snapshot)?;
                migrate(&module, state)?
            };
            Ok((module, fsm))
        });
        let (module, fsm) = match switched {
            Ok(s) => s,
            Err(rejected) => {
                return Ok(Err(CallError::ModuleRejected {
                    reason: rejected.to_string(),
                }))
            }
        };
        self.shared.modules.keep(&module).map_err(sm_err)?;
        let rec = ModuleRecord {
            hash: module.hash().to_string(),
            size: module.size() as u64,
            since_index: index,
        };
        applied.fsm = fsm;
        applied.spec = MachineSpec::Wasm(module);
        if seed {
            // The module a node was started with is not replicated state (nodes may differ in
            // `--fsm`): from the seed on, every node's history is the same.
            applied.modules.clear();
        }
        applied.modules.push(rec.clone());
        if let (Some(m), false) = (self.metrics(), seed) {
            m.guest().upgraded();
        }
        Ok(Ok(serde_json::to_vec(&rec).unwrap_or_default()))
    }
}

/// Whether `entry` is a batch of commands that `fsm` applies briefly (see
/// [`Machine::applies_briefly`]).
fn brief(fsm: &Machine, entry: &Entry) -> bool {
    match &entry.payload {
        EntryPayload::Normal(Request::Commands(c)) => fsm.applies_briefly(c.iter().map(|c| &c[..])),
        EntryPayload::Normal(Request::Batch(c) | Request::Stamped { commands: c, .. }) => {
            fsm.applies_briefly(c.iter().map(|c| &c.bytes[..]))
        }
        _ => false,
    }
}
