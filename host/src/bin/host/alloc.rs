//! The node's memory allocator: jemalloc, with its settings compiled in.
//!
//! Why not glibc's malloc: a put allocates about 60 times on the leader, mostly in the gRPC
//! stack, and 64 clients answered together free the same sizes in bursts. glibc's per-thread
//! cache holds 7 blocks of a size, and blocks over 1 KiB (tonic's two 8 KiB codec buffers per
//! call) bypass it, so most of those calls took its slow paths: malloc and free were about 29%
//! of the leader's worker thread at put x64. With jemalloc, set as below, the nodes spent 8-11%
//! less CPU per put there (BENCHMARKS.md, issue 21).
//!
//! Why these settings: one arena, because a node's allocating threads are few (one async worker
//! per two cores, the log writer, the blocking pool) and each has its own cache in front of it;
//! those caches hold blocks up to 4 KiB and half jemalloc's default count of each size; and
//! freed pages go back to the system after 100 ms (a background thread does it), not jemalloc's
//! default 10 s, so the resident set after a burst falls back instead of staying near its peak.
//! Against glibc with the settings this node used before, over kvbench then h2load put x64 runs
//! of 10 s: 36.8-36.9 against 40.0-41.4 µs of node CPU per put (h2load), 90-97 against 84-87
//! MiB per node at the end of the h2load runs (peak 124-126 against 110-113), 61-62 against 61
//! idle. jemalloc's default cache sizes saved a few µs more per put for 4 MiB more idle.
//!
//! jemalloc reads `_RJEM_MALLOC_CONF` from the environment after these, so an operator can
//! override any of them (jemalloc's own `name:value,...` syntax).

use std::ffi::c_char;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A C string pointer jemalloc reads before `main`.
#[repr(transparent)]
struct Conf(*const c_char);

// SAFETY: the pointer is to a string literal, which lives for the whole run and is never
// written; sharing it between threads is sharing a `&'static CStr`.
unsafe impl Sync for Conf {}

/// The settings, where jemalloc looks for them (its `malloc_conf`, under the symbol prefix the
/// tikv-jemalloc-sys build gives it).
#[export_name = "_rjem_malloc_conf"]
static MALLOC_CONF: Conf =
    Conf(c"narenas:1,tcache_max:4096,lg_tcache_nslots_mul:-1,background_thread:true,dirty_decay_ms:100,muzzy_decay_ms:0".as_ptr());
