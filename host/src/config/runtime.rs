//! How many Tokio worker threads drive a node's async work (gRPC and HTTP serving, Raft's core
//! and replication streams). The process setting `--worker-threads`; the rest of the config is
//! per node.
//!
//! Why half the cores: the heavy work is not on these threads. Guest calls run on Tokio's
//! blocking pool and the log's writes and syncs on a thread of their own, so under load those
//! keep about one core each busy beside the async work. More async workers than the cores left
//! over only add cross-thread wake-ups: on a 2-core machine one worker per node gave more puts
//! per second at 1 and at 64 clients, and 10% less CPU per put at 1 client, than two (see
//! BENCHMARKS.md).

/// Tokio worker threads a node starts with unless told otherwise: half the cores the process
/// may use, at least one.
pub fn default_worker_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / 2).clamp(1, MAX_WORKER_THREADS)
}

/// The most `--worker-threads` accepts (Tokio's own limit is far higher; a node never needs it).
pub const MAX_WORKER_THREADS: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_half_the_cores_and_at_least_one_worker() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let workers = default_worker_threads();
        assert!((1..=MAX_WORKER_THREADS).contains(&workers));
        assert!(
            workers * 2 <= cores.max(2),
            "{workers} workers on {cores} cores"
        );
    }
}
