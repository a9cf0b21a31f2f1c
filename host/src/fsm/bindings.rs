//! The only place the WIT world is turned into Rust: the `bindgen!` call for `raftwasm:fsm`,
//! plus conversions from generated types to the host's own ([`GuestError`]).

use super::error::{bounded, GuestError, MAX_GUEST_MESSAGE_BYTES};

wasmtime::component::bindgen!({
    path: "../wit",
    world: "fsm",
});

pub(super) use exports::raftwasm::fsm::state_machine::Error as WitError;

/// A guest's error, its message cut to [`MAX_GUEST_MESSAGE_BYTES`].
impl From<WitError> for GuestError {
    fn from(e: WitError) -> Self {
        let b = |m| bounded(m, MAX_GUEST_MESSAGE_BYTES);
        match e {
            WitError::InvalidInput(m) => GuestError::InvalidInput(b(m)),
            WitError::Rejected(m) => GuestError::Rejected(b(m)),
            WitError::Internal(m) => GuestError::Internal(b(m)),
        }
    }
}
