//! One command of a batch, applied through its client session when it has one: a retry gets
//! the kept result and a refused command changes nothing, neither calling the guest.

use super::observe::{self, Observers};
use super::sessions::Check;
use super::{sm_err, Applied};
use crate::fsm::{CallError, EntryContext, Machine};
use crate::metrics::guest::Call;
use std::io;

/// A command's result, and for a retried one the index that first applied it.
pub(super) type CommandResult = (Result<Vec<u8>, CallError>, Option<u64>);

/// Applies one command of a batch for `entry`, through its session if it has one: a retry
/// gets the kept result and a refused command changes nothing, without calling the guest.
pub(super) fn apply_command(
    applied: &mut Applied,
    to: Observers<'_>,
    command: &crate::types::Command,
    entry: EntryContext,
) -> Result<CommandResult, io::Error> {
    let index = entry.index;
    let apply = |fsm: &mut Machine| {
        observe::call(fsm, to, Call::Apply, &command.bytes, entry).map_err(sm_err)
    };
    let Some(at) = command.session else {
        return Ok((apply(&mut applied.fsm)?.result, None));
    };
    let (result, first) = match applied.sessions.check(at) {
        Check::Refuse(refused) => return Ok((Err(refused), None)),
        Check::Retry(kept, first) => (kept, Some(first)),
        Check::Apply => (apply(&mut applied.fsm)?.result, None),
    };
    applied.sessions.record(at, index, &result);
    Ok((result, first))
}
