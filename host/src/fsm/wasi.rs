//! Deterministic WASI 0.2: what a guest built for `wasm32-wasip2`, or by componentize-py or
//! componentize-js, imports besides the state machine world, answered so that every node
//! computes the same thing.
//!
//! - Clocks: the wall clock and the monotonic clock both read the time of the entry being
//!   applied (stamped by the leader, never going back), the read's time in a query, and 0
//!   outside calls. Time stands still within a call, so a sleep or timer returns at once
//!   instead of blocking the node.
//! - Random: `wasi:random` (secure and insecure) returns bytes derived from the entry and the
//!   command's position, the same stream the `context` import's `random-bytes` uses; the
//!   insecure seed is a constant.
//! - Nothing of the node: no environment, arguments or working directory, no preopened
//!   directories, no sockets or name lookups, an empty stdin.
//! - stdout and stderr are captured, at most [`MAX_OUTPUT_BYTES`] per call, and become the
//!   guest's log lines (info and warn).
//! - A guest holds at most [`MAX_RESOURCES`] WASI handles at once; past that the call traps.
//!
//! Everything else a component imports is refused when it is loaded.

use super::context::Shared;
use bytes::Bytes;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use wasmtime::component::{Linker, Resource, ResourceTable};
use wasmtime::StoreContextMut;
use wasmtime_wasi::cli::{IsTerminal, StdinStream, StdoutStream};
use wasmtime_wasi::p2::pipe::ClosedInputStream;
use wasmtime_wasi::p2::{DynPollable, InputStream, OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder};

/// Bytes of stdout and stderr (together) kept from one call; the rest is dropped and counted.
pub const MAX_OUTPUT_BYTES: usize = 64 << 10;
/// WASI handles (streams, pollables, descriptors) a guest may hold at once.
pub const MAX_RESOURCES: usize = 4096;
/// The WASI interfaces a component may import: version 0.2 of these packages.
const PROVIDED_PACKAGES: &[&str] = &[
    "wasi:cli/",
    "wasi:clocks/",
    "wasi:filesystem/",
    "wasi:io/",
    "wasi:random/",
    "wasi:sockets/",
];
/// The monotonic clock interface as the host defines it (guests' 0.2.x imports match it).
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// True when `import` names a WASI interface the host provides (calls then behave as this
/// module describes); whether each function the guest expects is there is checked at link.
pub fn provides(import: &str) -> bool {
    PROVIDED_PACKAGES.iter().any(|p| {
        import
            .strip_prefix(p)
            .and_then(|rest| rest.split_once("@0.2."))
            .is_some()
    })
}

/// `wasi:clocks/wall-clock`: the call's time.
struct WallClock(Shared);

impl HostWallClock for WallClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn now(&self) -> Duration {
        Duration::from_millis(self.0.unix_ms())
    }
}

/// `wasi:clocks/monotonic-clock`: the call's time in nanoseconds since the Unix epoch, which
/// never goes back because the log's clock does not.
struct MonotonicClock(Shared);

impl HostMonotonicClock for MonotonicClock {
    fn resolution(&self) -> u64 {
        1_000_000
    }

    fn now(&self) -> u64 {
        self.0.unix_ms().saturating_mul(1_000_000)
    }
}

/// `wasi:random`: the call's random stream.
struct Random(Shared);

impl rand_core::TryRng for Random {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0; 4];
        self.0.fill(&mut b);
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0; 8];
        self.0.fill(&mut b);
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.0.fill(dst);
        Ok(())
    }
}

/// What the guest wrote to stdout and stderr during a call.
#[derive(Debug, Default)]
pub(super) struct Output {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Bytes past [`MAX_OUTPUT_BYTES`], dropped.
    pub dropped: usize,
}

#[derive(Debug, Clone, Default)]
struct Capture(Arc<Mutex<Output>>);

impl Capture {
    fn lock(&self) -> MutexGuard<'_, Output> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One of the guest's two output streams.
#[derive(Clone)]
struct CaptureStream {
    capture: Capture,
    stderr: bool,
}

impl IsTerminal for CaptureStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CaptureStream {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        // Only WASI 0.3 guests use it, and the host links 0.2.
        Box::new(tokio::io::sink())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CaptureStream {
    async fn ready(&mut self) {}
}

impl OutputStream for CaptureStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        let mut out = self.capture.lock();
        let room = MAX_OUTPUT_BYTES.saturating_sub(out.stdout.len() + out.stderr.len());
        let keep = bytes.len().min(room);
        out.dropped += bytes.len() - keep;
        let buf = if self.stderr {
            &mut out.stderr
        } else {
            &mut out.stdout
        };
        buf.extend_from_slice(&bytes[..keep]);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always ready: what does not fit is dropped, so a chatty guest never blocks.
        Ok(MAX_OUTPUT_BYTES)
    }
}

/// stdin: closed from the start.
struct NoInput;

impl IsTerminal for NoInput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdinStream for NoInput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncRead + Send + Sync> {
        Box::new(tokio::io::empty())
    }

    fn p2_stream(&self) -> Box<dyn InputStream> {
        Box::new(ClosedInputStream)
    }
}

/// A store's WASI state: the context wasmtime-wasi reads, the guest's handles, and what the
/// guest wrote.
pub(super) struct WasiState {
    pub(super) ctx: WasiCtx,
    pub(super) table: ResourceTable,
    capture: Capture,
}

impl std::fmt::Debug for WasiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasiState").finish_non_exhaustive()
    }
}

impl WasiState {
    /// A context that answers from `shared` and grants nothing of the node.
    pub(super) fn new(shared: &Shared) -> Self {
        let capture = Capture::default();
        let ctx = WasiCtxBuilder::new()
            .wall_clock(WallClock(shared.clone()))
            .monotonic_clock(MonotonicClock(shared.clone()))
            .secure_random(Random(shared.clone()))
            .insecure_random(Random(shared.clone()))
            .insecure_random_seed(0x7261_6674_7761_736d)
            .stdin(NoInput)
            .stdout(CaptureStream {
                capture: capture.clone(),
                stderr: false,
            })
            .stderr(CaptureStream {
                capture: capture.clone(),
                stderr: true,
            })
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        WasiState {
            ctx,
            table,
            capture,
        }
    }

    /// What the guest wrote since the last take.
    pub(super) fn take_output(&self) -> Output {
        std::mem::take(&mut *self.capture.lock())
    }
}

/// Runs a guest call (or instantiation) so that WASI may block: wasmtime-wasi's synchronous
/// WASI finishes some calls (stream writes and flushes, polls, dropping a stream) with
/// `block_on` on the thread's Tokio runtime, which panics on a thread that drives async tasks.
/// The node makes its guest calls on the blocking pool, where this costs a check; the guest
/// checker and tests may call from async code, which `block_in_place` steps out of. On a
/// current-thread runtime's own thread it cannot, so guest calls must not be made there. A call
/// into a module that imports no WASI (`may_block` false) cannot block and runs as it is.
pub(super) fn outside_async<R>(may_block: bool, call: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    if !may_block {
        return call();
    }
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(call)
        }
        _ => call(),
    }
}

/// A pollable that is always ready: what a timer becomes when time stands still in a call.
struct Elapsed;

#[wasmtime_wasi::async_trait]
impl Pollable for Elapsed {
    async fn ready(&mut self) {}
}

/// Adds deterministic WASI 0.2 to `linker`: wasmtime-wasi's synchronous implementation over
/// [`WasiState`], with the monotonic clock's timers replaced by ones that are ready at once
/// (wasmtime-wasi's would sleep the node's thread for real).
pub(super) fn add_to_linker<T>(linker: &mut Linker<T>) -> wasmtime::Result<()>
where
    T: wasmtime_wasi::WasiView + 'static,
{
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK)?;
    clock.func_wrap("subscribe-instant", |store, (_,): (u64,)| elapsed(store))?;
    clock.func_wrap("subscribe-duration", |store, (_,): (u64,)| elapsed(store))?;
    linker.allow_shadowing(false);
    Ok(())
}

fn elapsed<T: wasmtime_wasi::WasiView>(
    mut store: StoreContextMut<'_, T>,
) -> wasmtime::Result<(Resource<DynPollable>,)> {
    let table = store.data_mut().ctx().table;
    let timer = table.push(Elapsed)?;
    Ok((wasmtime_wasi::p2::subscribe(table, timer)?,))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provides_wasi_0_2_and_nothing_else() {
        for ok in [
            "wasi:cli/environment@0.2.9",
            "wasi:clocks/monotonic-clock@0.2.12",
            "wasi:io/streams@0.2.0",
            "wasi:filesystem/preopens@0.2.3",
        ] {
            assert!(provides(ok), "{ok}");
        }
        for no in [
            "wasi:http/types@0.2.0",
            "wasi:cli/environment@0.3.0",
            "wasi:keyvalue/store@0.2.0",
            "raftwasm:fsm/context@0.2.0",
        ] {
            assert!(!provides(no), "{no}");
        }
    }

    #[test]
    fn output_past_the_bound_is_dropped_and_counted() {
        let capture = Capture::default();
        let mut out = CaptureStream {
            capture: capture.clone(),
            stderr: false,
        };
        let mut err = CaptureStream {
            capture: capture.clone(),
            stderr: true,
        };
        err.write(Bytes::from_static(b"oops\n")).unwrap();
        out.write(Bytes::from(vec![b'x'; MAX_OUTPUT_BYTES]))
            .unwrap();
        let taken = std::mem::take(&mut *capture.lock());
        assert_eq!(taken.stderr, b"oops\n");
        assert_eq!(taken.stdout.len(), MAX_OUTPUT_BYTES - 5);
        assert_eq!(taken.dropped, 5);
    }
}
