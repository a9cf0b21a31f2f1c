//! Write a raftwasm state machine as one trait over your own state type.
//!
//! A guest implements [`StateMachine`] for its state (a `Default + Serialize + Deserialize`
//! type) with typed commands, queries and responses, and exports it with [`export!`]:
//!
//! ```ignore
//! use raftwasm_guest::{Context, Error, StateMachine};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Default, Serialize, Deserialize)]
//! struct Counter { total: i64 }
//!
//! #[derive(Deserialize)]
//! #[serde(rename_all = "lowercase")]
//! enum Command { Add(i64) }
//!
//! impl StateMachine for Counter {
//!     type Command = Command;
//!     type Query = ();
//!     type Response = i64;
//!
//!     fn apply(&mut self, _: &Context, Command::Add(n): Command) -> Result<i64, Error> {
//!         self.total = self.total.checked_add(n).ok_or(Error::rejected("overflow"))?;
//!         Ok(self.total)
//!     }
//!
//!     fn query(&self, _: &Context, (): ()) -> Result<i64, Error> {
//!         Ok(self.total)
//!     }
//! }
//!
//! raftwasm_guest::export!(Counter);
//! ```
//!
//! What the SDK does for the guest:
//! - commands, queries and responses travel as JSON (`curl -d '{"add":5}' …/v1/apply`); a
//!   command that does not decode is refused as invalid input, with serde's message (override
//!   [`StateMachine::decode_command`] and its siblings for a wire format of your own);
//! - the snapshot is the state in a compact, deterministic binary encoding (bincode with
//!   variable-length integers), and restore decodes it; override
//!   [`StateMachine::snapshot`] and [`StateMachine::restore`] for a layout of your own, or to
//!   migrate an earlier version's state (restore is where an upgrade meets the old state);
//!   the bytes travel to and from the host in pieces, and a large state can override
//!   [`StateMachine::write_snapshot`] and [`StateMachine::read_snapshot`] to encode and decode
//!   as it goes, so the guest never holds an encoded copy beside the state (guest-kv does);
//! - the [`Context`] of each call: the entry being applied, its time and deterministic random
//!   bytes, replicated through the log (`raftwasm:fsm@0.3.0`), and a log.
//!
//! Determinism is still the guest's to keep: iterate `BTreeMap`s, not `HashMap`s (whose order
//! differs between instances), take time and randomness only from the [`Context`], and change
//! nothing in `query`. `host guest check` finds most slips before a cluster does.

mod context;
mod error;
mod stream;

pub use context::{Context, Level};
pub use error::Error;
pub use stream::{SnapshotReader, SnapshotWriter};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A replicated state machine: the state type itself, with the commands that change it and the
/// queries that read it.
pub trait StateMachine: Default + Serialize + DeserializeOwned + 'static {
    /// What `apply` takes: decoded from the command's JSON.
    type Command: DeserializeOwned;
    /// What `query` takes: decoded from the request's JSON.
    type Query: DeserializeOwned;
    /// What both answer: encoded as JSON.
    type Response: Serialize;

    /// Applies one committed command, on every node, in log order. An error leaves the state
    /// as the guest left it (return before changing anything to refuse a command cleanly); a
    /// panic rolls back everything the call changed.
    fn apply(&mut self, ctx: &Context, command: Self::Command) -> Result<Self::Response, Error>;

    /// Answers a read on one node. Cannot change the state.
    fn query(&self, ctx: &Context, query: Self::Query) -> Result<Self::Response, Error>;

    /// A command from its bytes. By default JSON; override for a wire format of your own.
    fn decode_command(bytes: &[u8]) -> Result<Self::Command, Error> {
        serde_json::from_slice(bytes).map_err(|e| Error::invalid_input(format!("bad command: {e}")))
    }

    /// A query from its bytes. By default JSON.
    fn decode_query(bytes: &[u8]) -> Result<Self::Query, Error> {
        serde_json::from_slice(bytes).map_err(|e| Error::invalid_input(format!("bad query: {e}")))
    }

    /// A response's bytes. By default JSON.
    fn encode_response(response: &Self::Response) -> Vec<u8> {
        // Into memory, JSON fails only for maps with non-string keys: a bug of the response
        // type, which then traps the same way on every node.
        serde_json::to_vec(response)
            .unwrap_or_else(|e| panic!("the response cannot be encoded as JSON: {e}"))
    }

    /// The whole state as bytes. By default the state's own serde encoding (bincode, variable
    /// length integers): deterministic as long as the state's maps are ordered.
    fn snapshot(&self) -> Vec<u8> {
        encode_state(self)
    }

    /// The state from [`StateMachine::snapshot`]'s bytes, possibly written by an earlier
    /// version of the guest (an upgrade restores the old guest's snapshot into the new one).
    fn restore(bytes: &[u8]) -> Result<Self, Error> {
        decode_state(bytes)
    }

    /// Writes the whole state to `out`, the host's snapshot stream, as it is encoded. By default
    /// [`StateMachine::snapshot`]'s bytes in one go; override it (with
    /// [`StateMachine::read_snapshot`]) for a large state, so the guest never holds an encoded
    /// copy of it. The bytes must be those `snapshot` would return.
    fn write_snapshot(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        out.write_all(&self.snapshot())
    }

    /// The state read from `input`, the host's restore stream (the bytes some `write_snapshot`
    /// or `snapshot` produced). By default reads them all, then [`StateMachine::restore`].
    fn read_snapshot(input: &mut dyn std::io::Read) -> Result<Self, Error> {
        let mut bytes = Vec::new();
        input
            .read_to_end(&mut bytes)
            .map_err(|e| Error::internal(format!("reading the snapshot: {e}")))?;
        Self::restore(&bytes)
    }
}

/// The default snapshot encoding of a state: bincode with variable-length integers.
pub fn encode_state<T: Serialize>(state: &T) -> Vec<u8> {
    use bincode::Options;
    // Serializing a value into memory only fails for types serde cannot describe to bincode
    // (maps of unknown length): a bug of the state type, caught by its first snapshot.
    bincode::DefaultOptions::new()
        .serialize(state)
        .unwrap_or_else(|e| panic!("the state cannot be encoded: {e}"))
}

/// Decodes a state written by [`encode_state`].
pub fn decode_state<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .deserialize(bytes)
        .map_err(|e| Error::invalid_input(format!("bad snapshot: {e}")))
}

/// What [`export!`] expands to calls; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;

    pub mod bindings {
        wit_bindgen::generate!({
            path: "../wit/0.3.0",
            world: "fsm",
            pub_export_macro: true,
            export_macro_name: "__export_fsm",
            default_bindings_module: "raftwasm_guest::__private::bindings",
            runtime_path: "raftwasm_guest::__private::wit_bindgen::rt",
        });
    }

    pub use bindings::exports::raftwasm::fsm::state_machine::{Error as WitError, Guest};

    use super::{Context, StateMachine};

    pub fn apply<S: StateMachine>(state: &mut S, command: &[u8]) -> Result<Vec<u8>, WitError> {
        let command = S::decode_command(command)?;
        let response = state.apply(&Context::applying(), command)?;
        Ok(S::encode_response(&response))
    }

    pub fn query<S: StateMachine>(state: &S, request: &[u8]) -> Result<Vec<u8>, WitError> {
        let query = S::decode_query(request)?;
        let response = state.query(&Context::querying(), query)?;
        Ok(S::encode_response(&response))
    }

    pub fn snapshot<S: StateMachine>(state: &S) {
        use std::io::Write;
        let mut out = crate::SnapshotWriter::new();
        // The host refuses a write only outside `snapshot`: a trap is the one answer left.
        if let Err(e) = state.write_snapshot(&mut out).and_then(|()| out.flush()) {
            panic!("writing the snapshot: {e}");
        }
    }

    pub fn restore<S: StateMachine>() -> Result<S, WitError> {
        Ok(S::read_snapshot(&mut crate::SnapshotReader::new())?)
    }
}

extern crate self as raftwasm_guest;

/// Exports a [`StateMachine`] as the guest's `raftwasm:fsm@0.3.0` component: one instance of
/// the state, created with `Default`, lives for the life of the guest.
#[macro_export]
macro_rules! export {
    ($state:ty) => {
        const _: () = {
            ::std::thread_local! {
                static STATE: ::std::cell::RefCell<$state> =
                    ::std::cell::RefCell::new(<$state as ::core::default::Default>::default());
            }

            struct Export;

            impl $crate::__private::Guest for Export {
                fn apply(
                    command: ::std::vec::Vec<u8>,
                ) -> ::core::result::Result<::std::vec::Vec<u8>, $crate::__private::WitError> {
                    STATE.with_borrow_mut(|s| $crate::__private::apply(s, &command))
                }

                fn query(
                    request: ::std::vec::Vec<u8>,
                ) -> ::core::result::Result<::std::vec::Vec<u8>, $crate::__private::WitError> {
                    STATE.with_borrow(|s| $crate::__private::query(s, &request))
                }

                fn snapshot() {
                    STATE.with_borrow(|s| $crate::__private::snapshot(s))
                }

                fn restore() -> ::core::result::Result<(), $crate::__private::WitError> {
                    let restored = $crate::__private::restore::<$state>()?;
                    STATE.set(restored);
                    Ok(())
                }
            }

            $crate::__private::bindings::__export_fsm!(Export with_types_in $crate::__private::bindings);
        };
    };
}
