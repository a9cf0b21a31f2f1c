//! glibc's malloc settings for a node, set once at start before any thread is spawned.
//!
//! Why: with glibc's defaults a node's resident memory after a burst of writes stays near its
//! peak. Every thread that allocates gets an arena of its own (up to 8 per core), and freed
//! memory inside an arena stays with the process; the thresholds for trimming and for serving
//! large blocks with `mmap` rise as large blocks are freed, so less and less goes back. Measured
//! with 64 clients on 3 nodes (BENCHMARKS.md, issue 21): 128-156 MB per node after the run with
//! the defaults, 82-87 MB with the settings below, at the same throughput. A variable from the
//! environment (`MALLOC_ARENA_MAX`, `MALLOC_TRIM_THRESHOLD_`, `MALLOC_MMAP_THRESHOLD_` or
//! `GLIBC_TUNABLES`) leaves the settings to it.

/// Arenas threads share: the async worker, the log writer and the blocking pool contend little.
const ARENA_MAX: i32 = 2;
/// Free memory at the top of an arena above this goes back to the system.
const TRIM_THRESHOLD: i32 = 128 << 10;
/// Blocks this large or larger are mapped on their own and unmapped when freed.
const MMAP_THRESHOLD: i32 = 128 << 10;

const ENVIRONMENT: [&str; 4] = [
    "MALLOC_ARENA_MAX",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_MMAP_THRESHOLD_",
    "GLIBC_TUNABLES",
];

/// Applies the settings, unless the environment sets malloc's own. Call before any thread is
/// spawned (arenas made before stay).
pub fn tune() {
    if ENVIRONMENT.iter().any(|v| std::env::var_os(v).is_some()) {
        return;
    }
    set();
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn set() {
    for (param, value) in [
        (libc::M_ARENA_MAX, ARENA_MAX),
        (libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        (libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD),
    ] {
        // SAFETY: mallopt only changes malloc's parameters. It refuses only an unknown
        // parameter (these are glibc's own), and a refused one leaves glibc's default: nothing
        // to report, and logging is not set up yet.
        let _ = unsafe { libc::mallopt(param, value) };
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set() {}
