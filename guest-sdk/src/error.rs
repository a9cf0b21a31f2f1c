//! Why a guest refused a command, a query or a snapshot: what the client is told, the same on
//! every node.

use crate::__private::WitError;
use std::fmt;

/// A refusal, passed to the client unchanged (HTTP 400 for invalid input, 409 for rejected,
/// 422 for internal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The input could not be decoded or names something that does not exist in the API.
    InvalidInput(String),
    /// The input was understood and refused by the state machine's rules.
    Rejected(String),
    /// Anything else; the state machine is still consistent.
    Internal(String),
}

impl Error {
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Error::InvalidInput(message.into())
    }

    pub fn rejected(message: impl Into<String>) -> Self {
        Error::Rejected(message.into())
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Error::Internal(message.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidInput(m) => write!(f, "invalid input: {m}"),
            Error::Rejected(m) => write!(f, "rejected: {m}"),
            Error::Internal(m) => write!(f, "internal: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<Error> for WitError {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidInput(m) => WitError::InvalidInput(m),
            Error::Rejected(m) => WitError::Rejected(m),
            Error::Internal(m) => WitError::Internal(m),
        }
    }
}
