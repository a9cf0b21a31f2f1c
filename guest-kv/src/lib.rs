//! guest-kv: the default raftwasm state machine, a string→string map.
//!
//! Commands and queries are JSON objects tagged by `op`, responses are JSON too: all of them are
//! typed in [`schema`], the one definition the host, tools and tests share. The state is a `BTreeMap`, so iteration order, and with it the snapshot bytes,
//! is the same on every node.
//!
//! Layout:
//! - [`schema`]: commands, queries and responses (serde types).
//! - [`kv`]: the map and its operations, plain Rust, usable natively (the benchmark baseline).
//! - the WebAssembly export (only on `wasm32`, with the default `component` feature): adapts
//!   [`kv::Kv`] to the `raftwasm:fsm` world.

pub mod kv;
pub mod schema;

pub use kv::{Kv, KvError};
pub use schema::{Command, Query, TxnOp};

#[cfg(all(target_arch = "wasm32", feature = "component"))]
mod export {
    use crate::kv::{Kv, KvError};
    use std::cell::RefCell;

    wit_bindgen::generate!({ path: "../wit/0.1.0", world: "fsm" });

    use exports::raftwasm::fsm::state_machine::{Error, Guest};

    thread_local! {
        /// The guest is single-threaded; the host serializes every call.
        static KV: RefCell<Kv> = RefCell::new(Kv::default());
    }

    impl From<KvError> for Error {
        fn from(e: KvError) -> Self {
            match e {
                KvError::InvalidInput(m) => Error::InvalidInput(m),
                KvError::Rejected(m) => Error::Rejected(m),
            }
        }
    }

    struct GuestKv;

    impl Guest for GuestKv {
        fn apply(command: Vec<u8>) -> Result<Vec<u8>, Error> {
            KV.with_borrow_mut(|kv| kv.apply_bytes(&command))
                .map_err(Error::from)
        }

        fn query(request: Vec<u8>) -> Result<Vec<u8>, Error> {
            KV.with_borrow(|kv| kv.query_bytes(&request))
                .map_err(Error::from)
        }

        fn snapshot() -> Vec<u8> {
            KV.with_borrow(|kv| kv.snapshot())
        }

        fn restore(state: Vec<u8>) -> Result<(), Error> {
            let restored = Kv::restore(&state)?;
            KV.set(restored);
            Ok(())
        }
    }

    export!(GuestKv);
}
