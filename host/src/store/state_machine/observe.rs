//! Guest calls as the node's metrics see them: each apply and query timed, its fuel and the
//! guest's memory recorded, and a call that did not return counted by how it failed.

use crate::fsm::{CallError, FsmError, Machine, Outcome};
use crate::metrics::guest::{Call, Failure};
use crate::metrics::Metrics;
use std::time::Instant;

/// Runs `call` on `fsm` (`apply` or `query` with `input`) and records it in `metrics`.
pub(super) fn call(
    fsm: &mut Machine,
    metrics: Option<&Metrics>,
    call: Call,
    input: &[u8],
) -> Result<Outcome<Vec<u8>>, FsmError> {
    let started = Instant::now();
    let outcome = match call {
        Call::Apply => fsm.apply(input),
        Call::Query => fsm.query(input),
    };
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
