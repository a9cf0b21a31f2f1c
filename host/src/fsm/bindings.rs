//! The only place the WIT worlds are turned into Rust: one `bindgen!` call per version of
//! `raftwasm:fsm` the host runs (0.1.0: exports only; 0.2.0: the same exports, plus the
//! `context` import; 0.3.0: snapshot and restore streamed through `context`), an [`Fsm`] over
//! any of them, linking (with deterministic WASI, [`super::wasi`]), and conversions from
//! generated types to the host's own ([`GuestError`]).

use super::context::Level;
use super::error::{bounded, GuestError, MAX_GUEST_MESSAGE_BYTES};
use super::limiter::StoreState;
use super::stream::Sink;
use super::wasi;
use crate::snapshot_data::SnapshotData;
use std::io::Write;
use std::sync::Arc;
use wasmtime::component::{Component, HasSelf, InstancePre, Linker};
use wasmtime::Store;

mod v1 {
    wasmtime::component::bindgen!({
        path: "../wit/0.1.0",
        world: "fsm",
    });
}

mod v2 {
    wasmtime::component::bindgen!({
        path: "../wit/0.2.0",
        world: "fsm",
    });
}

mod v3 {
    wasmtime::component::bindgen!({
        path: "../wit/0.3.0",
        world: "fsm",
    });
}

use v2::raftwasm::fsm::context as wit_context;
use v3::raftwasm::fsm::context as wit_context3;

/// The world version a component targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorldVersion {
    V0_1,
    V0_2,
    V0_3,
}

impl WorldVersion {
    /// As WIT writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            WorldVersion::V0_1 => "raftwasm:fsm@0.1.0",
            WorldVersion::V0_2 => "raftwasm:fsm@0.2.0",
            WorldVersion::V0_3 => "raftwasm:fsm@0.3.0",
        }
    }
}

/// A component ready to instantiate, in the world it exports.
#[derive(Clone)]
pub(super) enum FsmPre {
    V1(v1::FsmPre<StoreState>),
    V2(v2::FsmPre<StoreState>),
    V3(v3::FsmPre<StoreState>),
}

/// One instance's exports.
pub(super) enum Fsm {
    V1(v1::Fsm),
    V2(v2::Fsm),
    V3(v3::Fsm),
}

/// A guest's error, as either world's bindings type it.
type Guest<T> = wasmtime::Result<Result<T, GuestError>>;

impl FsmPre {
    /// Links `component` (the context of the world whose state machine it exports, and
    /// deterministic WASI 0.2) and checks its exports. Anything else it imports refuses it.
    pub(super) fn link(
        linker: &mut Linker<StoreState>,
        component: &Component,
    ) -> Result<FsmPre, LinkError> {
        let version = exported_version(component);
        let linked = match version {
            Some(WorldVersion::V0_2) => {
                wit_context::add_to_linker::<StoreState, HasSelf<StoreState>>(linker, |s| s)
            }
            Some(WorldVersion::V0_3) => {
                wit_context3::add_to_linker::<StoreState, HasSelf<StoreState>>(linker, |s| s)
            }
            _ => Ok(()),
        };
        linked.map_err(|e| LinkError::Exports(format!("{e:#}")))?;
        wasi::add_to_linker(linker).map_err(|e| LinkError::Exports(format!("{e:#}")))?;
        let provided = shape(component, version.unwrap_or(WorldVersion::V0_1));
        if let Some((name, _)) = provided.imports.iter().find(|(_, ok)| !ok) {
            return Err(LinkError::Import(name.clone()));
        }
        // A provided package can still lack a function the guest expects (a newer 0.2.x).
        let pre: InstancePre<StoreState> = linker
            .instantiate_pre(component)
            .map_err(|e| LinkError::Import(format!("{e:#}")))?;
        match version {
            Some(WorldVersion::V0_2) => v2::FsmPre::new(pre)
                .map(FsmPre::V2)
                .map_err(|e| LinkError::Exports(format!("{e:#}"))),
            Some(WorldVersion::V0_3) => v3::FsmPre::new(pre)
                .map(FsmPre::V3)
                .map_err(|e| LinkError::Exports(format!("{e:#}"))),
            _ => v1::FsmPre::new(pre)
                .map(FsmPre::V1)
                .map_err(|e| LinkError::Exports(format!("{e:#}"))),
        }
    }

    pub(super) fn version(&self) -> WorldVersion {
        match self {
            FsmPre::V1(_) => WorldVersion::V0_1,
            FsmPre::V2(_) => WorldVersion::V0_2,
            FsmPre::V3(_) => WorldVersion::V0_3,
        }
    }

    pub(super) fn instantiate(&self, store: &mut Store<StoreState>) -> wasmtime::Result<Fsm> {
        Ok(match self {
            FsmPre::V1(pre) => Fsm::V1(pre.instantiate(store)?),
            FsmPre::V2(pre) => Fsm::V2(pre.instantiate(store)?),
            FsmPre::V3(pre) => Fsm::V3(pre.instantiate(store)?),
        })
    }
}

/// Why a component could not be linked.
#[derive(Debug)]
pub(super) enum LinkError {
    /// It imports something the host does not provide (named).
    Import(String),
    /// Its exports are not a `raftwasm:fsm` world.
    Exports(String),
}

/// What a component exports and imports, by name, and whether the host provides each import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    pub exports: Vec<String>,
    /// Each import, and true when the host provides it (a component importing anything else
    /// is refused).
    pub imports: Vec<(String, bool)>,
}

/// The exports and imports of `component`, which targets `version`.
pub(super) fn shape(component: &Component, version: WorldVersion) -> Shape {
    let engine = component.engine();
    let ty = component.component_type();
    let provided = |name: &str| {
        (version == WorldVersion::V0_2 && name == "raftwasm:fsm/context@0.2.0")
            || (version == WorldVersion::V0_3 && name == "raftwasm:fsm/context@0.3.0")
            || wasi::provides(name)
    };
    Shape {
        exports: ty
            .exports(engine)
            .map(|(name, _)| name.to_string())
            .collect(),
        imports: ty
            .imports(engine)
            .map(|(name, _)| (name.to_string(), provided(name)))
            .collect(),
    }
}

/// Whether calls into `component` may block their thread: it imports something other than the
/// host's `raftwasm:fsm/context` (WASI), and wasmtime-wasi's synchronous WASI finishes some
/// calls with `block_on` on the thread's Tokio runtime (see [`super::wasi::outside_async`]).
/// The host's context functions never block.
pub(super) fn may_block(component: &Component) -> bool {
    let engine = component.engine();
    let ty = component.component_type();
    let blocks = ty
        .imports(engine)
        .any(|(name, _)| !name.starts_with("raftwasm:fsm/context@"));
    blocks
}

/// The newest world whose state machine `component` exports, if any.
fn exported_version(component: &Component) -> Option<WorldVersion> {
    let engine = component.engine();
    let ty = component.component_type();
    let mut found = None;
    for (name, _) in ty.exports(engine) {
        match name {
            "raftwasm:fsm/state-machine@0.3.0" => return Some(WorldVersion::V0_3),
            "raftwasm:fsm/state-machine@0.2.0" => found = Some(WorldVersion::V0_2),
            "raftwasm:fsm/state-machine@0.1.0" => {
                found = found.or(Some(WorldVersion::V0_1));
            }
            _ => {}
        }
    }
    found
}

impl Fsm {
    pub(super) fn apply(&self, store: &mut Store<StoreState>, command: &[u8]) -> Guest<Vec<u8>> {
        Ok(match self {
            Fsm::V1(f) => f
                .raftwasm_fsm_state_machine()
                .call_apply(store, command)?
                .map_err(GuestError::from),
            Fsm::V2(f) => f
                .raftwasm_fsm_state_machine()
                .call_apply(store, command)?
                .map_err(GuestError::from),
            Fsm::V3(f) => f
                .raftwasm_fsm_state_machine()
                .call_apply(store, command)?
                .map_err(GuestError::from),
        })
    }

    pub(super) fn query(&self, store: &mut Store<StoreState>, request: &[u8]) -> Guest<Vec<u8>> {
        Ok(match self {
            Fsm::V1(f) => f
                .raftwasm_fsm_state_machine()
                .call_query(store, request)?
                .map_err(GuestError::from),
            Fsm::V2(f) => f
                .raftwasm_fsm_state_machine()
                .call_query(store, request)?
                .map_err(GuestError::from),
            Fsm::V3(f) => f
                .raftwasm_fsm_state_machine()
                .call_query(store, request)?
                .map_err(GuestError::from),
        })
    }

    /// Writes the guest's state to `sink`; returns the sink and the state's length. (A 0.1.0 or
    /// 0.2.0 guest returns its state as one list, which is then copied to the sink.)
    pub(super) fn snapshot(
        &self,
        store: &mut Store<StoreState>,
        sink: Sink,
    ) -> wasmtime::Result<(Sink, usize)> {
        let whole = match self {
            Fsm::V1(f) => f.raftwasm_fsm_state_machine().call_snapshot(store)?,
            Fsm::V2(f) => f.raftwasm_fsm_state_machine().call_snapshot(store)?,
            Fsm::V3(f) => {
                store.data_mut().stream.begin_snapshot(sink);
                let done = f.raftwasm_fsm_state_machine().call_snapshot(&mut *store);
                let taken = store.data_mut().stream.take_snapshot();
                done?;
                return taken.ok_or_else(|| wasmtime::Error::msg("the snapshot stream was lost"));
            }
        };
        let len = whole.len();
        let sink = match sink {
            Sink::Memory(out) if out.is_empty() => Sink::Memory(whole),
            Sink::Memory(mut out) => {
                out.extend_from_slice(&whole);
                Sink::Memory(out)
            }
            Sink::File(mut file) => {
                file.write_all(&whole)?;
                Sink::File(file)
            }
        };
        Ok((sink, len))
    }

    /// Restores `state`: 0.3.0 guests read it a piece at a time (from its file, if it is in
    /// one); earlier ones take it whole.
    pub(super) fn restore(&self, store: &mut Store<StoreState>, state: &SnapshotData) -> Guest<()> {
        let whole = || -> wasmtime::Result<Arc<Vec<u8>>> {
            match state {
                SnapshotData::Bytes(bytes) => Ok(bytes.clone()),
                SnapshotData::File { .. } => Ok(Arc::new(state.clone().into_bytes()?)),
            }
        };
        Ok(match self {
            Fsm::V1(f) => f
                .raftwasm_fsm_state_machine()
                .call_restore(store, &whole()?)?
                .map_err(GuestError::from),
            Fsm::V2(f) => f
                .raftwasm_fsm_state_machine()
                .call_restore(store, &whole()?)?
                .map_err(GuestError::from),
            Fsm::V3(f) => {
                store.data_mut().stream.begin_restore(state.clone());
                let done = f.raftwasm_fsm_state_machine().call_restore(&mut *store);
                store.data_mut().stream.end_restore();
                done?.map_err(GuestError::from)
            }
        })
    }
}

/// A guest's error, its message cut to [`MAX_GUEST_MESSAGE_BYTES`].
fn guest_error(kind: fn(String) -> GuestError, message: String) -> GuestError {
    kind(bounded(message, MAX_GUEST_MESSAGE_BYTES))
}

impl From<v1::exports::raftwasm::fsm::state_machine::Error> for GuestError {
    fn from(e: v1::exports::raftwasm::fsm::state_machine::Error) -> Self {
        use v1::exports::raftwasm::fsm::state_machine::Error as E;
        match e {
            E::InvalidInput(m) => guest_error(GuestError::InvalidInput, m),
            E::Rejected(m) => guest_error(GuestError::Rejected, m),
            E::Internal(m) => guest_error(GuestError::Internal, m),
        }
    }
}

impl From<v2::exports::raftwasm::fsm::state_machine::Error> for GuestError {
    fn from(e: v2::exports::raftwasm::fsm::state_machine::Error) -> Self {
        use v2::exports::raftwasm::fsm::state_machine::Error as E;
        match e {
            E::InvalidInput(m) => guest_error(GuestError::InvalidInput, m),
            E::Rejected(m) => guest_error(GuestError::Rejected, m),
            E::Internal(m) => guest_error(GuestError::Internal, m),
        }
    }
}

impl From<v3::exports::raftwasm::fsm::state_machine::Error> for GuestError {
    fn from(e: v3::exports::raftwasm::fsm::state_machine::Error) -> Self {
        use v3::exports::raftwasm::fsm::state_machine::Error as E;
        match e {
            E::InvalidInput(m) => guest_error(GuestError::InvalidInput, m),
            E::Rejected(m) => guest_error(GuestError::Rejected, m),
            E::Internal(m) => guest_error(GuestError::Internal, m),
        }
    }
}

/// The 0.2.0 context, answered from the call the store is in.
impl wit_context::Host for StoreState {
    fn current_entry(&mut self) -> wit_context::Entry {
        let entry = self.context.entry();
        wit_context::Entry {
            index: entry.index,
            term: entry.term,
            unix_ms: entry.unix_ms,
        }
    }

    fn random_bytes(&mut self, len: u32) -> Result<Vec<u8>, String> {
        self.context.random_bytes(len)
    }

    fn log(&mut self, level: wit_context::Level, message: String) {
        let level = match level {
            wit_context::Level::Trace => Level::Trace,
            wit_context::Level::Debug => Level::Debug,
            wit_context::Level::Info => Level::Info,
            wit_context::Level::Warn => Level::Warn,
            wit_context::Level::Error => Level::Error,
        };
        self.context.log(level, message);
    }

    fn emit(&mut self, key: String, payload: Vec<u8>) -> Result<(), String> {
        self.context.emit(key, payload)
    }
}

/// The 0.3.0 context: 0.2.0's, and the snapshot stream.
impl wit_context3::Host for StoreState {
    fn current_entry(&mut self) -> wit_context3::Entry {
        let e = wit_context::Host::current_entry(self);
        wit_context3::Entry {
            index: e.index,
            term: e.term,
            unix_ms: e.unix_ms,
        }
    }

    fn random_bytes(&mut self, len: u32) -> Result<Vec<u8>, String> {
        self.context.random_bytes(len)
    }

    fn log(&mut self, level: wit_context3::Level, message: String) {
        let level = match level {
            wit_context3::Level::Trace => wit_context::Level::Trace,
            wit_context3::Level::Debug => wit_context::Level::Debug,
            wit_context3::Level::Info => wit_context::Level::Info,
            wit_context3::Level::Warn => wit_context::Level::Warn,
            wit_context3::Level::Error => wit_context::Level::Error,
        };
        wit_context::Host::log(self, level, message);
    }

    fn emit(&mut self, key: String, payload: Vec<u8>) -> Result<(), String> {
        self.context.emit(key, payload)
    }

    fn snapshot_write(&mut self, bytes: Vec<u8>) -> Result<(), String> {
        self.stream.write(&bytes)
    }

    fn restore_read(&mut self, max: u32) -> Result<Vec<u8>, String> {
        self.stream.read(max)
    }
}
