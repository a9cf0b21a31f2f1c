//! Memory and time per client session: fills the replicated session table with N sessions,
//! each holding the result of one guest-kv put, and counts the heap bytes the table holds (a
//! counting global allocator around the system one: bytes asked for, before the allocator's own
//! overhead) and its bytes in a snapshot; then times what applying one command in a session
//! adds (a check and a record of its result) on that table.
//!
//! Run: `cargo bench --bench sessions` (optionally `-- N`). Prints bytes per session for a put
//! that answered `{"prev":null}` and for one that answered a 256-byte previous value, and ns per
//! command.

use host::fsm::CallError;
use host::store::Sessions;
use host::types::SessionRef;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// The system allocator, counting the bytes live at any moment.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed to the system allocator unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on as it is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as for `alloc`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as for `alloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const DEFAULT_SESSIONS: u64 = 100_000;

/// Heap bytes and snapshot bytes per session for `n` sessions whose kept result is `result`.
fn measure(n: u64, result: &[u8]) -> (f64, f64) {
    let before = LIVE.load(Ordering::Relaxed);
    let mut table = Sessions::default();
    // As in a log: session i opened at index i, its first command applied at n + i.
    for id in 1..=n {
        table.open(id);
    }
    let kept: Result<Vec<u8>, CallError> = Ok(result.to_vec());
    for id in 1..=n {
        let at = SessionRef {
            client_id: id,
            seq: 1,
        };
        table.record(at, n + id, &kept);
    }
    let heap = LIVE.load(Ordering::Relaxed) - before;
    let snapshot = table.encode().len();
    assert_eq!(table.len() as u64, n);
    drop(table);
    (heap as f64 / n as f64, snapshot as f64 / n as f64)
}

/// Nanoseconds a session adds to one command on a table of `n` sessions: the check before the
/// guest call and the record of its result after, each command the next in its session.
fn time_per_command(n: u64, result: &[u8]) -> f64 {
    let mut table = Sessions::default();
    for id in 1..=n {
        table.open(id);
    }
    let kept: Result<Vec<u8>, CallError> = Ok(result.to_vec());
    let rounds = 5;
    let started = Instant::now();
    let mut index = n;
    for seq in 1..=rounds {
        for id in 1..=n {
            index += 1;
            let at = SessionRef { client_id: id, seq };
            std::hint::black_box(table.check(at));
            table.record(at, index, &kept);
        }
    }
    started.elapsed().as_nanos() as f64 / (n * rounds) as f64
}

fn main() {
    let n = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(DEFAULT_SESSIONS);
    let no_prev = br#"{"prev":null}"#.to_vec();
    let prev = format!(r#"{{"prev":"{}"}}"#, "v".repeat(256)).into_bytes();
    for (what, result) in [
        ("put answering no previous value", &no_prev),
        ("put answering a 256-byte previous value", &prev),
    ] {
        let (heap, snapshot) = measure(n, result);
        let ns = time_per_command(n, result);
        println!(
            "{n} sessions, {what} ({} bytes): {heap:.0} heap bytes per session, {snapshot:.0} \
             snapshot bytes per session, {ns:.0} ns per command",
            result.len()
        );
    }
}
