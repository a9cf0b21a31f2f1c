//! Retrying a write as `kvclient` and `kvbench` do: when the failure says it was not applied
//! (`unavailable`: retry anywhere), or, for a write in a client session, when its outcome is
//! unknown (a timeout, a lost connection: the retry carries the same session and sequence
//! number, and the cluster applies it at most once). Where the error names the leader, the
//! retry goes there. Anything else (refused, invalid, a guest's error) is final.

use host::service::{never_sent, ServiceError};
use std::time::Duration;

/// What to do after a failed write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retry {
    /// Try again, at `leader` when the error named one.
    Again { leader: Option<String> },
    /// Report the failure.
    Stop,
}

/// After `status`, for a write with (`in_session`) or without a session.
pub fn after(status: &tonic::Status, in_session: bool) -> Retry {
    if status.details().is_empty() {
        // This client's own transport failure: definite only if the request never left.
        let again = never_sent(status) || in_session;
        return match again {
            true => Retry::Again { leader: None },
            false => Retry::Stop,
        };
    }
    match ServiceError::from_status(status) {
        ServiceError::Unavailable { leader_address, .. } => Retry::Again {
            leader: leader_address,
        },
        ServiceError::UnknownOutcome { leader_address, .. } if in_session => Retry::Again {
            leader: leader_address,
        },
        _ => Retry::Stop,
    }
}

/// The pause before retry `n` (from 1): 50 ms, doubling, at most 1 s.
pub fn backoff(n: u32) -> Duration {
    Duration::from_millis((50u64 << n.saturating_sub(1).min(5)).min(1000))
}
