//! The only place the WIT world is turned into Rust: the `bindgen!` call for `raftwasm:fsm`,
//! plus conversions from generated types to the host's own ([`GuestError`]).

use super::error::GuestError;

wasmtime::component::bindgen!({
    path: "../wit",
    world: "fsm",
});

pub(super) use exports::raftwasm::fsm::state_machine::Error as WitError;

impl From<WitError> for GuestError {
    fn from(e: WitError) -> Self {
        match e {
            WitError::InvalidInput(m) => GuestError::InvalidInput(m),
            WitError::Rejected(m) => GuestError::Rejected(m),
            WitError::Internal(m) => GuestError::Internal(m),
        }
    }
}
