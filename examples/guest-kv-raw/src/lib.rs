//! guest-kv's map on raw bindings: the `raftwasm:fsm@0.1.0` world from `wit-bindgen`, a
//! thread-local and byte handling written out by hand, no SDK.
//!
//! It answers every command and query with the same bytes as guest-kv and writes the same
//! snapshot (the map's `GKV1` layout, so each restores the other's state). `cargo bench --bench
//! fsm` runs both over the same commands: the difference is what the SDK costs per call. It is
//! also what a guest without the SDK looks like.

#[cfg(target_arch = "wasm32")]
mod export {
    use guest_kv::{Kv, KvError};
    use std::cell::RefCell;

    wit_bindgen::generate!({ path: "../../wit/0.1.0", world: "fsm" });

    use exports::raftwasm::fsm::state_machine::{Error, Guest};

    thread_local! {
        /// The guest is single-threaded; the host serializes every call.
        static KV: RefCell<Kv> = RefCell::new(Kv::default());
    }

    fn error(e: KvError) -> Error {
        match e {
            KvError::InvalidInput(m) => Error::InvalidInput(m),
            KvError::Rejected(m) => Error::Rejected(m),
        }
    }

    struct GuestKvRaw;

    impl Guest for GuestKvRaw {
        fn apply(command: Vec<u8>) -> Result<Vec<u8>, Error> {
            KV.with_borrow_mut(|kv| kv.apply_bytes(&command))
                .map_err(error)
        }

        fn query(request: Vec<u8>) -> Result<Vec<u8>, Error> {
            KV.with_borrow(|kv| kv.query_bytes(&request)).map_err(error)
        }

        fn snapshot() -> Vec<u8> {
            KV.with_borrow(|kv| kv.snapshot())
        }

        fn restore(state: Vec<u8>) -> Result<(), Error> {
            KV.set(Kv::restore(&state).map_err(error)?);
            Ok(())
        }
    }

    export!(GuestKvRaw);
}
