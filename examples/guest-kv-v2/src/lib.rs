//! guest-kv v2: the example of a state machine upgrade (see the README walkthrough).
//!
//! What changes from v1 (`guest-kv`):
//! - a new command, `{"op":"incr","key":K,"by":N}` → `{"value":"M"}`: adds `N` (default 1) to the
//!   key's value read as a decimal integer (absent counts as 0), announced to watchers as an
//!   `incr` change;
//! - a new piece of state, the revision: how many commands have changed the state, and a new
//!   query, `{"op":"revision"}` → `{"revision":R,"keys":K}`;
//! - so a new snapshot layout, `GKV2`: the magic, the revision (u64 LE), then v1's `GKV1` bytes.
//!
//! Every v1 command and query works unchanged, and announces the same changes as v1 does, so
//! watchers go on across the upgrade. `restore()` takes both layouts: a `GKV1` snapshot (what
//! v1's `snapshot()` hands over during a live upgrade) is migrated, with the revision starting at
//! 0; a `GKV2` one is read as is.

pub mod v2;

pub use v2::KvV2;

#[cfg(target_arch = "wasm32")]
mod export {
    use crate::v2::KvV2;
    use guest_kv::schema::Change;
    use guest_kv::KvError;
    use raftwasm_guest::{Context, Error, StateMachine};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// The v2 state on the SDK. Commands and queries stay bytes: v2 tells its own from v1's by
    /// trying to decode them. Serde sees the state as its `GKV2` snapshot.
    #[derive(Default)]
    struct GuestKvV2(KvV2);

    impl Serialize for GuestKvV2 {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.serialize_bytes(&self.0.snapshot())
        }
    }

    impl<'de> Deserialize<'de> for GuestKvV2 {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            let bytes = Vec::<u8>::deserialize(deserializer)?;
            KvV2::restore(&bytes)
                .map(GuestKvV2)
                .map_err(|e| serde::de::Error::custom(format!("{e:?}")))
        }
    }

    fn err(e: KvError) -> Error {
        match e {
            KvError::InvalidInput(m) => Error::invalid_input(m),
            KvError::Rejected(m) => Error::rejected(m),
        }
    }

    impl StateMachine for GuestKvV2 {
        type Command = Vec<u8>;
        type Query = Vec<u8>;
        type Response = Vec<u8>;

        fn apply(&mut self, ctx: &Context, command: Vec<u8>) -> Result<Vec<u8>, Error> {
            let mut announce = |key: &str, change: Change<'_>| {
                // A change that cannot be announced must not be made: the trap rolls the
                // command back, the same way on every node.
                if let Err(e) = ctx.emit(key, &change.encode()) {
                    panic!("announcing a change of {key:?}: {e}");
                }
            };
            self.0.apply_observed(&command, &mut announce).map_err(err)
        }

        fn query(&self, _: &Context, query: Vec<u8>) -> Result<Vec<u8>, Error> {
            self.0.query(&query).map_err(err)
        }

        fn decode_command(bytes: &[u8]) -> Result<Vec<u8>, Error> {
            Ok(bytes.to_vec())
        }

        fn decode_query(bytes: &[u8]) -> Result<Vec<u8>, Error> {
            Ok(bytes.to_vec())
        }

        fn encode_response(response: &Vec<u8>) -> Vec<u8> {
            response.clone()
        }

        fn snapshot(&self) -> Vec<u8> {
            self.0.snapshot()
        }

        fn restore(bytes: &[u8]) -> Result<Self, Error> {
            KvV2::restore(bytes).map(GuestKvV2).map_err(err)
        }
    }

    raftwasm_guest::export!(GuestKvV2);
}
