//! The one error type of the service layer, shared by gRPC and HTTP. Each edge maps it to a
//! status (see `grpc::client_service` and `http`); forwarding between nodes carries it whole, as
//! JSON in the gRPC status details, so a client sees the leader's error unchanged.

use crate::auth::AuthError;
use crate::fsm::{bounded, CallError, GuestError};
use crate::types::TypeConfig;
use openraft::error::{ClientWriteError, RaftError};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum ServiceError {
    /// Malformed request: bad JSON, bad node id, empty key.
    #[error("invalid request: {message}")]
    InvalidInput { message: String },
    /// The key, node or route does not exist.
    #[error("{message}")]
    NotFound { message: String },
    /// A key, value, command or body over its configured limit.
    #[error("{what} exceeds the limit of {limit} bytes")]
    TooLarge {
        what: String,
        /// The offending size, when known (a streamed HTTP body is cut off at the limit).
        size: Option<usize>,
        limit: usize,
    },
    /// The guest refused or failed the command (deterministically, on every node).
    #[error("{error}")]
    Guest {
        #[serde(rename = "guest")]
        error: CallError,
    },
    /// The request contradicts the cluster's state (an id reused with another address).
    #[error("{message}")]
    Conflict { message: String },
    /// The request did not take effect and can be retried anywhere: no leader is known, the
    /// leader could not be reached, or (for a read) no quorum answered in time.
    #[error("{message}")]
    Unavailable {
        message: String,
        leader_id: Option<String>,
        leader_address: Option<String>,
    },
    /// This node is not in a cluster (never joined, or removed): the request did not take
    /// effect; send it to a member.
    #[error("{message}")]
    NotMember { message: String },
    /// A write that may or may not have taken effect: it was proposed (or sent on to the
    /// leader) and no answer came, because it timed out, the connection was lost, or
    /// leadership changed after it was proposed. Retrying it may apply it twice.
    #[error("{message}")]
    UnknownOutcome {
        message: String,
        leader_id: Option<String>,
        leader_address: Option<String>,
        /// True when the request's time ran out (gRPC DEADLINE_EXCEEDED, else UNKNOWN).
        #[serde(default)]
        timed_out: bool,
    },
    /// A write of a client session that expired (or was never opened): not applied.
    #[error("{message}")]
    SessionExpired { message: String, client_id: u64 },
    /// No credentials where the request needs some, or credentials that do not check out.
    #[error("{message}")]
    Unauthenticated { message: String },
    /// The caller is known but may not do this.
    #[error("{message}")]
    PermissionDenied { message: String },
    /// The route exists but not for this HTTP method.
    #[error("{message}")]
    MethodNotAllowed { message: String },
    /// A watch from a revision whose changes this node no longer keeps.
    #[error("{message}")]
    Compacted {
        message: String,
        /// The revision asked for.
        wanted: u64,
        /// The oldest revision the node still has every change of.
        oldest: u64,
    },
    /// A watcher that left its stream full for too long: cut off so it cannot hold the node's
    /// memory. It may watch again from `resume_from`.
    #[error("{message}")]
    WatcherTooSlow { message: String, resume_from: u64 },
    /// A fault on this node.
    #[error("internal error: {message}")]
    Internal { message: String },
}

/// The JSON body of every HTTP error: `code` (the kind, as [`ServiceError`] tags it), `error` (one
/// line for people), `message` (the cause alone), and the kind's own fields (`leader_id`,
/// `limit`, `guest`, ...).
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    pub error: String,
    /// Given here only for kinds that have no `message` field of their own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(flatten)]
    pub detail: &'a ServiceError,
}

impl<'a> ErrorBody<'a> {
    pub fn new(detail: &'a ServiceError) -> Self {
        let message = match detail {
            ServiceError::TooLarge { .. } => Some(detail.to_string()),
            ServiceError::Guest { error } => Some(match error {
                CallError::Guest { error } => match error {
                    GuestError::InvalidInput(m)
                    | GuestError::Rejected(m)
                    | GuestError::Internal(m) => m.clone(),
                },
                other => other.to_string(),
            }),
            _ => None,
        };
        ErrorBody {
            error: detail.to_string(),
            message,
            detail,
        }
    }
}

/// Longest message of an error about a request, in bytes: such messages may quote the request
/// (a parser names the bad field or value, a 404 names the path), and an error must not send a
/// large input back. Cut at a character boundary, the cut noted.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 512;

impl ServiceError {
    pub fn invalid(message: impl Into<String>) -> Self {
        ServiceError::InvalidInput {
            message: bounded(message.into(), MAX_ERROR_MESSAGE_BYTES),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ServiceError::NotFound {
            message: bounded(message.into(), MAX_ERROR_MESSAGE_BYTES),
        }
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        ServiceError::MethodNotAllowed {
            message: bounded(message.into(), MAX_ERROR_MESSAGE_BYTES),
        }
    }

    pub fn internal(message: impl ToString) -> Self {
        ServiceError::Internal {
            message: message.to_string(),
        }
    }

    pub fn unavailable(message: impl Into<String>, leader: Option<(String, String)>) -> Self {
        let (leader_id, leader_address) = leader.unzip();
        ServiceError::Unavailable {
            message: message.into(),
            leader_id,
            leader_address,
        }
    }

    /// A write whose outcome is unknown (see [`ServiceError::UnknownOutcome`]).
    pub fn unknown_outcome(
        message: impl Into<String>,
        leader: Option<(String, String)>,
        timed_out: bool,
    ) -> Self {
        let (leader_id, leader_address) = leader.unzip();
        ServiceError::UnknownOutcome {
            message: message.into(),
            leader_id,
            leader_address,
            timed_out,
        }
    }

    /// True when the request certainly did not take effect: a client may retry it anywhere.
    /// False for an unknown outcome and for errors a retry would not change.
    pub fn retry_is_safe(&self) -> bool {
        matches!(
            self,
            ServiceError::Unavailable { .. } | ServiceError::NotMember { .. }
        )
    }

    /// The HTTP status this error maps to.
    pub fn http_status(&self) -> u16 {
        match self {
            ServiceError::InvalidInput { .. } => 400,
            ServiceError::NotFound { .. } => 404,
            ServiceError::TooLarge { .. } => 413,
            ServiceError::Guest { error } => match error {
                CallError::Guest {
                    error: GuestError::InvalidInput(_),
                } => 400,
                CallError::Guest {
                    error: GuestError::Rejected(_),
                } => 409,
                _ => 422,
            },
            ServiceError::Conflict { .. } => 409,
            ServiceError::SessionExpired { .. } => 410,
            ServiceError::Unauthenticated { .. } => 401,
            ServiceError::PermissionDenied { .. } => 403,
            ServiceError::MethodNotAllowed { .. } => 405,
            ServiceError::Unavailable { .. } | ServiceError::NotMember { .. } => 503,
            ServiceError::UnknownOutcome { .. } => 504,
            ServiceError::Compacted { .. } => 410,
            ServiceError::WatcherTooSlow { .. } => 429,
            ServiceError::Internal { .. } => 500,
        }
    }

    /// The gRPC code this error maps to.
    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            ServiceError::InvalidInput { .. } => tonic::Code::InvalidArgument,
            ServiceError::NotFound { .. } => tonic::Code::NotFound,
            ServiceError::TooLarge { .. } => tonic::Code::OutOfRange,
            ServiceError::Guest { error } => match error {
                CallError::Guest {
                    error: GuestError::InvalidInput(_),
                } => tonic::Code::InvalidArgument,
                _ => tonic::Code::FailedPrecondition,
            },
            ServiceError::Conflict { .. } => tonic::Code::AlreadyExists,
            ServiceError::SessionExpired { .. } => tonic::Code::FailedPrecondition,
            ServiceError::Unauthenticated { .. } => tonic::Code::Unauthenticated,
            ServiceError::PermissionDenied { .. } => tonic::Code::PermissionDenied,
            ServiceError::MethodNotAllowed { .. } => tonic::Code::Unimplemented,
            ServiceError::Unavailable { .. } => tonic::Code::Unavailable,
            ServiceError::NotMember { .. } => tonic::Code::FailedPrecondition,
            ServiceError::UnknownOutcome {
                timed_out: true, ..
            } => tonic::Code::DeadlineExceeded,
            ServiceError::UnknownOutcome { .. } => tonic::Code::Unknown,
            ServiceError::Compacted { .. } => tonic::Code::OutOfRange,
            ServiceError::WatcherTooSlow { .. } => tonic::Code::ResourceExhausted,
            ServiceError::Internal { .. } => tonic::Code::Internal,
        }
    }

    /// As a gRPC status, with the whole error as JSON in the details.
    pub fn to_status(&self) -> tonic::Status {
        let details = serde_json::to_vec(self).unwrap_or_default();
        tonic::Status::with_details(self.grpc_code(), self.to_string(), details.into())
    }

    /// Back from a gRPC status: exact when it came from [`ServiceError::to_status`], otherwise
    /// mapped by code (a transport failure becomes `Unavailable`: callers that sent a write
    /// decide for themselves whether it may have arrived, as the forwarder does).
    pub fn from_status(status: &tonic::Status) -> Self {
        if let Ok(e) = serde_json::from_slice::<ServiceError>(status.details()) {
            return e;
        }
        let message = status.message().to_string();
        match status.code() {
            tonic::Code::InvalidArgument => ServiceError::InvalidInput { message },
            tonic::Code::NotFound => ServiceError::NotFound { message },
            tonic::Code::AlreadyExists => ServiceError::Conflict { message },
            tonic::Code::Unauthenticated => ServiceError::Unauthenticated { message },
            tonic::Code::PermissionDenied => ServiceError::PermissionDenied { message },
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                ServiceError::unavailable(message, None)
            }
            _ => ServiceError::Internal { message },
        }
    }
}

impl From<crate::store::Compacted> for ServiceError {
    fn from(c: crate::store::Compacted) -> Self {
        ServiceError::Compacted {
            message: c.to_string(),
            wanted: c.wanted,
            oldest: c.oldest,
        }
    }
}

impl From<AuthError> for ServiceError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Unauthenticated(message) => ServiceError::Unauthenticated { message },
            AuthError::Denied(message) => ServiceError::PermissionDenied { message },
        }
    }
}

impl From<CallError> for ServiceError {
    fn from(error: CallError) -> Self {
        match error {
            CallError::SessionExpired { client_id } => ServiceError::SessionExpired {
                message: error.to_string(),
                client_id,
            },
            CallError::StaleSequence { .. } => ServiceError::Conflict {
                message: error.to_string(),
            },
            error => ServiceError::Guest { error },
        }
    }
}

impl From<crate::store::GuestCallError> for ServiceError {
    /// The guest runtime failed on this node (not a deterministic guest error): internal.
    fn from(error: crate::store::GuestCallError) -> Self {
        ServiceError::internal(error)
    }
}

impl From<RaftError<TypeConfig, ClientWriteError<TypeConfig>>> for ServiceError {
    fn from(e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> Self {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ServiceError::unavailable(
                "leadership changed during the request; retry",
                f.leader_node.map(|m| (m.name, m.addr)),
            ),
            RaftError::APIError(ClientWriteError::LogEntryDiscarded(f)) => {
                ServiceError::unknown_outcome(
                    "leadership changed after the write was proposed: another leader may still \
                     commit it",
                    f.leader_node.map(|m| (m.name, m.addr)),
                    false,
                )
            }
            RaftError::APIError(ClientWriteError::PreconditionFailed(e)) => {
                ServiceError::Conflict {
                    message: format!("precondition failed: {e}"),
                }
            }
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                ServiceError::Conflict {
                    message: format!("membership change refused: {e}"),
                }
            }
            RaftError::Fatal(e) => ServiceError::unknown_outcome(
                format!("raft stopped on this node while the write was in flight: {e}"),
                None,
                false,
            ),
        }
    }
}
