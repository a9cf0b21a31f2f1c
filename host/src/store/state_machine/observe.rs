//! Guest calls as the node's metrics see them: each apply and query timed, its fuel and the
//! guest's memory recorded, each snapshot call timed, and a call that did not return counted by how it failed; and the
//! lines the guest logged, passed to the node's guest log; and the changes an apply announced,
//! staged in the change feed.

use super::feed::ChangeFeed;
use super::guest_log::GuestLog;
use crate::fsm::{CallError, EntryContext, FsmError, Machine, Outcome};
use crate::metrics::guest::{Call, Failure};
use crate::metrics::Metrics;
use std::sync::Arc;
use std::time::Instant;

/// Where a call's observations go.
#[derive(Clone, Copy)]
pub(super) struct Observers<'a> {
    pub metrics: Option<&'a Metrics>,
    pub log: &'a GuestLog,
    pub feed: &'a ChangeFeed,
}

/// Runs `call` on `fsm` (`apply` or `query` with `input`, for `entry`) and records it.
pub(super) fn call(
    fsm: &mut Machine,
    to: Observers<'_>,
    call: Call,
    input: &[u8],
    entry: EntryContext,
) -> Result<Outcome<Vec<u8>>, FsmError> {
    let started = Instant::now();
    let outcome = match call {
        Call::Apply => fsm.apply(input, entry),
        Call::Query => fsm.query(input, entry),
    };
    to.log.record(fsm.take_logs());
    if call == Call::Apply {
        to.feed.stage(entry.index, fsm.take_events());
    }
    let metrics = to.metrics;
    if let (Some(m), Ok(outcome)) = (metrics, &outcome) {
        let guest = m.guest();
        guest.call(call, started.elapsed(), outcome.fuel_used);
        let failure = match &outcome.result {
            Err(CallError::Trap { .. }) => Some(Failure::Trap),
            Err(CallError::OutOfFuel { .. }) => Some(Failure::OutOfFuel),
            Err(CallError::MemoryLimit { .. }) => Some(Failure::MemoryCap),
            _ => None,
        };
        if let Some(failure) = failure {
            guest.failed(failure);
        }
        guest.memory(fsm.memory_bytes());
    }
    outcome
}

/// Takes the guest's whole state, timed (see [`snapshot_into`]).
pub(super) fn snapshot(
    fsm: &mut Machine,
    metrics: Option<&Metrics>,
) -> Result<Arc<Vec<u8>>, FsmError> {
    let mut state = Vec::new();
    snapshot_into(fsm, metrics, &mut state)?;
    Ok(Arc::new(state))
}

/// Writes the guest's whole state to `file` at `offset`, timed (see [`Machine::snapshot_to`]).
pub(super) fn snapshot_to(
    fsm: &mut Machine,
    metrics: Option<&Metrics>,
    file: std::fs::File,
    offset: u64,
) -> Result<(std::fs::File, u64), FsmError> {
    let started = Instant::now();
    let done = fsm.snapshot_to(file, offset);
    if let (Some(m), Ok(_)) = (metrics, &done) {
        m.guest().snapshot_took(started.elapsed());
    }
    done
}

/// Appends the guest's whole state to `out`, timed: the guest is held, and applies wait, that
/// long.
pub(super) fn snapshot_into(
    fsm: &mut Machine,
    metrics: Option<&Metrics>,
    out: &mut Vec<u8>,
) -> Result<(), FsmError> {
    let started = Instant::now();
    let done = fsm.snapshot_into(out);
    if let (Some(m), Ok(_)) = (metrics, &done) {
        m.guest().snapshot_took(started.elapsed());
    }
    done
}
