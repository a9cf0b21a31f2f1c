//! guest-kv v2: the example of a state machine upgrade (see the README walkthrough).
//!
//! What changes from v1 (`guest-kv`):
//! - a new command, `{"op":"incr","key":K,"by":N}` → `{"value":"M"}`: adds `N` (default 1) to the
//!   key's value read as a decimal integer (absent counts as 0);
//! - a new piece of state, the revision: how many commands have changed the state, and a new
//!   query, `{"op":"revision"}` → `{"revision":R,"keys":K}`;
//! - so a new snapshot layout, `GKV2`: the magic, the revision (u64 LE), then v1's `GKV1` bytes.
//!
//! Every v1 command and query works unchanged. `restore()` takes both layouts: a `GKV1` snapshot
//! (what v1's `snapshot()` hands over during a live upgrade) is migrated, with the revision
//! starting at 0; a `GKV2` one is read as is.

pub mod v2;

pub use v2::KvV2;

#[cfg(target_arch = "wasm32")]
mod export {
    use crate::v2::KvV2;
    use guest_kv::KvError;
    use std::cell::RefCell;

    wit_bindgen::generate!({ path: "../../wit/0.1.0", world: "fsm" });

    use exports::raftwasm::fsm::state_machine::{Error, Guest};

    thread_local! {
        static STATE: RefCell<KvV2> = RefCell::new(KvV2::default());
    }

    fn err(e: KvError) -> Error {
        match e {
            KvError::InvalidInput(m) => Error::InvalidInput(m),
            KvError::Rejected(m) => Error::Rejected(m),
        }
    }

    struct GuestKvV2;

    impl Guest for GuestKvV2 {
        fn apply(command: Vec<u8>) -> Result<Vec<u8>, Error> {
            STATE.with_borrow_mut(|s| s.apply(&command)).map_err(err)
        }

        fn query(request: Vec<u8>) -> Result<Vec<u8>, Error> {
            STATE.with_borrow(|s| s.query(&request)).map_err(err)
        }

        fn snapshot() -> Vec<u8> {
            STATE.with_borrow(|s| s.snapshot())
        }

        fn restore(state: Vec<u8>) -> Result<(), Error> {
            let restored = KvV2::restore(&state).map_err(err)?;
            STATE.set(restored);
            Ok(())
        }
    }

    export!(GuestKvV2);
}
