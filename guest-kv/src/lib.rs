//! guest-kv: the default raftwasm state machine, a string→string map.
//!
//! Commands and queries are JSON objects tagged by `op`, responses are JSON too: all of them are
//! typed in [`schema`], the one definition the host, tools and tests share. The state is a
//! `BTreeMap`, so iteration order, and with it the snapshot bytes, is the same on every node.
//!
//! Layout:
//! - [`schema`]: commands, queries and responses (serde types).
//! - [`kv`]: the map and its operations, plain Rust, usable natively (the benchmark baseline).
//! - the WebAssembly export (only on `wasm32`, with the default `component` feature): the map
//!   as a `raftwasm:fsm@0.3.0` component on the guest SDK. `examples/guest-kv-raw` exports the
//!   same map on raw `wit-bindgen` bindings; `cargo bench --bench fsm` compares the two.

mod json;
pub mod kv;
pub mod schema;

pub use kv::{Kv, KvError};
pub use schema::{Command, Query, TxnOp};

#[cfg(all(target_arch = "wasm32", feature = "component"))]
mod export {
    use crate::kv::{Kv, KvError};
    use crate::schema::{Change, Command, Query};
    use raftwasm_guest::{Context, Error, StateMachine};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// The map as the SDK's state. The map encodes each response itself (a type per
    /// operation), so `Response` is those bytes; the snapshot is the map's `GKV1` layout, which
    /// every earlier guest-kv wrote and read. Serde sees the state as those same bytes.
    #[derive(Default)]
    struct GuestKv(Kv);

    impl Serialize for GuestKv {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.serialize_bytes(&self.0.snapshot())
        }
    }

    impl<'de> Deserialize<'de> for GuestKv {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            let bytes = Vec::<u8>::deserialize(deserializer)?;
            Kv::restore(&bytes)
                .map(GuestKv)
                .map_err(|e| serde::de::Error::custom(format!("{e:?}")))
        }
    }

    fn error(e: KvError) -> Error {
        match e {
            KvError::InvalidInput(m) => Error::invalid_input(m),
            KvError::Rejected(m) => Error::rejected(m),
        }
    }

    impl StateMachine for GuestKv {
        type Command = Command;
        type Query = Query;
        type Response = Vec<u8>;

        fn apply(&mut self, ctx: &Context, command: Command) -> Result<Vec<u8>, Error> {
            let mut announce = |key: &str, change: Change<'_>| {
                // A change that cannot be announced must not be made: the trap rolls the
                // command back, the same way on every node.
                if let Err(e) = ctx.emit(key, &change.encode()) {
                    panic!("announcing a change of {key:?}: {e}");
                }
            };
            self.0.apply_observed(command, &mut announce).map_err(error)
        }

        fn query(&self, _: &Context, query: Query) -> Result<Vec<u8>, Error> {
            self.0.query(&query).map_err(error)
        }

        // guest-kv's own messages for input that does not decode.
        fn decode_command(bytes: &[u8]) -> Result<Command, Error> {
            Command::decode(bytes)
                .map_err(|e| Error::invalid_input(format!("invalid command: {e}")))
        }

        fn decode_query(bytes: &[u8]) -> Result<Query, Error> {
            serde_json::from_slice(bytes)
                .map_err(|e| Error::invalid_input(format!("invalid query: {e}")))
        }

        fn encode_response(response: &Vec<u8>) -> Vec<u8> {
            response.clone()
        }

        fn snapshot(&self) -> Vec<u8> {
            self.0.snapshot()
        }

        fn restore(bytes: &[u8]) -> Result<Self, Error> {
            Kv::restore(bytes).map(GuestKv).map_err(error)
        }

        // Streamed: a node holding a large map never holds its encoding too.
        fn write_snapshot(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
            self.0.write_snapshot(out)
        }

        fn read_snapshot(input: &mut dyn std::io::Read) -> Result<Self, Error> {
            Kv::read_snapshot(input).map(GuestKv).map_err(error)
        }
    }

    raftwasm_guest::export!(GuestKv);
}
