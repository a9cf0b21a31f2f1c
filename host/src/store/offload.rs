//! The one way async code calls into the guest: [`offload`] runs the call on Tokio's blocking
//! pool, never on an async worker. A guest call can take long (a snapshot or state hash of a
//! large state, a restore, a query over many keys, a module compile for an upgrade); run on a
//! worker it would stall every other task scheduled there (heartbeats, replies, other clients).
//! Every guest call the state machine makes for async callers (openraft's apply, snapshot build
//! and install, queries, state hashes, upgrade checks) goes through it, but for a committed
//! batch its guest is sure to apply briefly (see `StateMachine::apply_here`).

use crate::fsm::FsmError;
use thiserror::Error;

/// A guest call that could not produce its deterministic outcome on this node.
#[derive(Debug, Error)]
pub enum GuestCallError {
    /// The guest runtime failed (see [`FsmError`]).
    #[error(transparent)]
    Fsm(#[from] FsmError),
    /// The blocking task panicked or was cancelled at shutdown.
    #[error("the guest call did not complete: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Runs `call` off the async workers and waits for it.
pub async fn offload<R, F>(call: F) -> Result<R, tokio::task::JoinError>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    tokio::task::spawn_blocking(call).await
}
