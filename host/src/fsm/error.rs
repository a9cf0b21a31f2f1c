//! Errors of the guest runtime: loading a module, a call the guest refused or failed, and host
//! faults that leave the state machine unusable.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Longest message a guest's error may carry, in bytes; the rest is cut (at a character
/// boundary) and the cut noted. Guests may quote their input or state in their messages, and
/// an error must not carry stored data or a large input back to a client or into the log.
/// Deterministic, so every node stores the same truncated message.
pub const MAX_GUEST_MESSAGE_BYTES: usize = 256;

/// `message` cut to at most `max` bytes (plus a note of how much was cut).
pub fn bounded(mut message: String, max: usize) -> String {
    if message.len() <= max {
        return message;
    }
    let mut end = max;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let cut = message.len() - end;
    message.truncate(end);
    message.push_str(&format!("… ({cut} more bytes not shown)"));
    message
}

/// A guest component could not be loaded. Reported at start-up, naming the module.
#[derive(Debug, Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read guest module {name}: {source}")]
    Read {
        name: String,
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not WebAssembly at all.
    #[error("guest module {name} is not a WebAssembly file (it does not start with \"\\0asm\")")]
    NotWasm { name: String },
    /// A core module where a component is needed.
    #[error(
        "guest module {name} is a core WebAssembly module, not a component: build the guest for \
         wasm32-wasip2, or for wasm32-unknown-unknown linked with wasm-component-ld"
    )]
    CoreModule { name: String },
    /// The component failed to validate or compile.
    #[error("guest module {name} failed to compile: {reason}")]
    Compile { name: String, reason: String },
    /// The component does not export the `raftwasm:fsm/state-machine` interface as the WIT says.
    #[error(
        "guest module {name} does not implement a raftwasm:fsm world (0.1.0, 0.2.0 or 0.3.0): {reason}"
    )]
    WrongExports { name: String, reason: String },
    /// The component imports something the host does not provide.
    #[error(
        "guest module {name} imports {import}, which the host does not provide (it provides \
         raftwasm:fsm/context@0.2.0 and @0.3.0 and deterministic WASI 0.2: cli, clocks, filesystem, io, \
         random, sockets)"
    )]
    Import { name: String, import: String },
    /// The component compiled but cannot be instantiated under the configured limits.
    #[error("guest module {name} cannot be instantiated: {reason}")]
    Instantiate { name: String, reason: String },
}

/// The error variant a guest returned, mirrored from the WIT `error` so generated types stay
/// inside this module.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub enum GuestError {
    /// The input could not be decoded.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The input was refused by the state machine's rules.
    #[error("rejected: {0}")]
    Rejected(String),
    /// Anything else the guest reported.
    #[error("internal guest error: {0}")]
    Internal(String),
}

/// Why one call into the guest produced no response. Deterministic: every node that makes the
/// same call on the same state gets the same value, so it can be returned to clients and stored.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CallError {
    /// The guest returned its `error` variant.
    #[error("{error}")]
    Guest { error: GuestError },
    /// The call used up its fuel budget (a runaway loop, or a command too costly for the budget).
    #[error("guest ran out of fuel (budget {budget} units per call)")]
    OutOfFuel { budget: u64 },
    /// The call tried to grow guest memory past the cap.
    #[error("guest exceeded its memory limit of {limit_mib} MiB")]
    MemoryLimit { limit_mib: u64 },
    /// The guest trapped (`unreachable`, a panic, stack overflow, out-of-bounds access, or a call
    /// into an import the host does not provide).
    #[error("guest trapped: {message}")]
    Trap { message: String },
    /// A module entry (upgrade) was refused: the new module does not load, or the old guest's
    /// state did not go into it. The old guest stays active, on every node.
    #[error("module upgrade rejected: {reason}")]
    ModuleRejected { reason: String },
    /// A command of a client session that expired (or was never opened): not applied.
    #[error(
        "session {client_id} has expired or was never opened; the command was not applied \
         (open a new session)"
    )]
    SessionExpired { client_id: u64 },
    /// A command behind its session's latest one: not applied (again).
    #[error(
        "sequence number {seq} of session {client_id} is behind the session's latest ({latest}); \
         the command was not applied now"
    )]
    StaleSequence {
        client_id: u64,
        seq: u64,
        latest: u64,
    },
    /// A retried command was applied the first time, but its result was too large to keep.
    #[error(
        "the command was applied; its result ({size} bytes) was too large to keep for a retry"
    )]
    ResultNotKept { size: u64 },
}

/// The state machine itself failed; the node cannot go on applying entries.
#[derive(Debug, Error)]
pub enum FsmError {
    /// After a failed call the instance could not be rebuilt to its previous state.
    #[error("cannot rebuild the guest after a failed call: {0}")]
    Rebuild(String),
    /// The guest's `snapshot` failed (the state itself is unchanged).
    #[error("guest snapshot failed: {0}")]
    Snapshot(CallError),
    /// A fresh instance could not be created.
    #[error("cannot instantiate the guest: {0}")]
    Instantiate(String),
    /// The state to restore could not be read from its file.
    #[error("cannot read the state to restore: {0}")]
    ReadState(std::io::Error),
}
