//! What a node runs: a wasm guest ([`GuestModule`] / [`GuestFsm`]), or, as a benchmark baseline
//! only, guest-kv's code compiled natively into the host (no fuel, no memory cap, no isolation),
//! so a benchmark can show what the wasm sandbox costs inside the cluster.

use super::context::{EntryContext, GuestEvent, LogLine};
use super::{CallError, FsmError, GuestError, GuestFsm, GuestModule, Outcome};
use crate::snapshot_data::SnapshotData;
use guest_kv::schema::Change;
use guest_kv::{Kv, KvError};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Name of the native baseline in status and messages.
pub const NATIVE_GUEST_KV_NAME: &str = "native guest-kv (benchmark baseline)";

/// The state machine a node is configured to run.
#[derive(Debug, Clone)]
pub enum MachineSpec {
    Wasm(GuestModule),
    /// guest-kv compiled into the host. Its snapshots carry a distinct module hash, so they are
    /// never mixed with a wasm guest's.
    NativeGuestKv,
}

impl MachineSpec {
    pub fn name(&self) -> &str {
        match self {
            MachineSpec::Wasm(m) => m.name(),
            MachineSpec::NativeGuestKv => NATIVE_GUEST_KV_NAME,
        }
    }

    /// SHA-256 (hex) identifying the state machine's code.
    pub fn hash(&self) -> String {
        match self {
            MachineSpec::Wasm(m) => m.hash().to_string(),
            MachineSpec::NativeGuestKv => {
                hex::encode(Sha256::digest(NATIVE_GUEST_KV_NAME.as_bytes()))
            }
        }
    }

    /// Size of the module in bytes (0 for the native baseline).
    pub fn size(&self) -> usize {
        match self {
            MachineSpec::Wasm(m) => m.size(),
            MachineSpec::NativeGuestKv => 0,
        }
    }

    /// A running state machine with an empty state.
    pub fn start(&self) -> Result<Machine, FsmError> {
        Ok(match self {
            MachineSpec::Wasm(m) => Machine::Wasm(m.start()?),
            MachineSpec::NativeGuestKv => Machine::Native(Kv::default(), Vec::new()),
        })
    }
}

/// A running state machine; the same calls as [`GuestFsm`].
#[derive(Debug)]
pub enum Machine {
    Wasm(GuestFsm),
    /// guest-kv compiled in, and the changes its last apply announced.
    Native(Kv, Vec<GuestEvent>),
}

fn native_error(e: KvError) -> CallError {
    let error = match e {
        KvError::InvalidInput(m) => GuestError::InvalidInput(m),
        KvError::Rejected(m) => GuestError::Rejected(m),
    };
    CallError::Guest { error }
}

impl Machine {
    /// Bytes of linear memory the guest holds (0 for the native baseline, which has none).
    pub fn memory_bytes(&self) -> u64 {
        match self {
            Machine::Wasm(fsm) => fsm.memory_bytes(),
            Machine::Native(..) => 0,
        }
    }

    /// Whether applying `commands` is sure to be a short call that cannot block its thread
    /// (see [`GuestFsm::applies_briefly`]); the native baseline's always is.
    pub fn applies_briefly<'a>(&self, commands: impl Iterator<Item = &'a [u8]>) -> bool {
        match self {
            Machine::Wasm(fsm) => fsm.applies_briefly(commands),
            Machine::Native(..) => true,
        }
    }

    pub fn apply(
        &mut self,
        command: &[u8],
        entry: EntryContext,
    ) -> Result<Outcome<Vec<u8>>, FsmError> {
        match self {
            Machine::Wasm(fsm) => fsm.apply(command, entry),
            Machine::Native(kv, events) => {
                let mut announce = |key: &str, change: Change<'_>| {
                    let (key, payload) = (key.to_string(), change.encode());
                    events.push(GuestEvent { key, payload });
                };
                let result = kv.apply_bytes_observed(command, &mut announce);
                if result.is_err() {
                    events.clear();
                }
                Ok(Outcome {
                    result: result.map_err(native_error),
                    fuel_used: 0,
                })
            }
        }
    }

    pub fn query(
        &mut self,
        request: &[u8],
        read: EntryContext,
    ) -> Result<Outcome<Vec<u8>>, FsmError> {
        match self {
            Machine::Wasm(fsm) => fsm.query(request, read),
            Machine::Native(kv, _) => Ok(Outcome {
                result: kv.query_bytes(request).map_err(native_error),
                fuel_used: 0,
            }),
        }
    }

    /// The lines the guest logged since the last take (none from the native baseline).
    pub fn take_logs(&mut self) -> Vec<LogLine> {
        match self {
            Machine::Wasm(fsm) => fsm.take_logs(),
            Machine::Native(..) => Vec::new(),
        }
    }

    /// The changes the last `apply` announced (none if it was refused or failed).
    pub fn take_events(&mut self) -> Vec<GuestEvent> {
        match self {
            Machine::Wasm(fsm) => fsm.take_events(),
            Machine::Native(_, events) => std::mem::take(events),
        }
    }

    pub fn snapshot(&mut self) -> Result<Arc<Vec<u8>>, FsmError> {
        match self {
            Machine::Wasm(fsm) => fsm.snapshot(),
            Machine::Native(kv, _) => Ok(Arc::new(kv.snapshot())),
        }
    }

    /// Appends the state to `out` (see [`GuestFsm::snapshot_into`]).
    pub fn snapshot_into(&mut self, out: &mut Vec<u8>) -> Result<(), FsmError> {
        match self {
            Machine::Wasm(fsm) => fsm.snapshot_into(out),
            Machine::Native(kv, _) => {
                out.extend_from_slice(&kv.snapshot());
                Ok(())
            }
        }
    }

    /// Writes the state to `file` at `offset` (see [`GuestFsm::snapshot_to`]).
    pub fn snapshot_to(
        &mut self,
        mut file: std::fs::File,
        offset: u64,
    ) -> Result<(std::fs::File, u64), FsmError> {
        match self {
            Machine::Wasm(fsm) => fsm.snapshot_to(file, offset),
            Machine::Native(kv, _) => {
                let state = kv.snapshot();
                std::io::Write::write_all(&mut file, &state).map_err(|e| {
                    FsmError::Snapshot(CallError::Trap {
                        message: format!("writing the snapshot: {e}"),
                    })
                })?;
                Ok((file, state.len() as u64))
            }
        }
    }

    pub fn restore(&mut self, state: Arc<Vec<u8>>) -> Result<Outcome<()>, FsmError> {
        self.restore_from(SnapshotData::Bytes(state))
    }

    /// Restores from wherever the state is (see [`GuestFsm::restore_from`]).
    pub fn restore_from(&mut self, state: SnapshotData) -> Result<Outcome<()>, FsmError> {
        match self {
            Machine::Wasm(fsm) => fsm.restore_from(state),
            Machine::Native(kv, _) => {
                let state = state.into_bytes().map_err(FsmError::ReadState)?;
                let result = Kv::restore(&state)
                    .map(|restored| *kv = restored)
                    .map_err(native_error);
                Ok(Outcome {
                    result,
                    fuel_used: 0,
                })
            }
        }
    }
}
