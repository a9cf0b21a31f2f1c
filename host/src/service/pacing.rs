//! Pacing of rounds for the write batcher and the read index: how many requests the next round
//! waits for, and for how long at most.
//!
//! Closed-loop clients send their next request as soon as they get a reply, so a round that just
//! finished predicts who will be back shortly. Starting the next round the moment one ends
//! splits steady load into two groups that alternate, each idle for a whole round while the
//! other is in flight. So a round waits briefly for as many requests as the last one served plus
//! those queued when it ended: never longer than half the last round's duration (at most
//! [`MAX_LINGER`]), and not at all for a lone client (its next request completes the count).
//! Measured with 64 clients: see BENCHMARKS.md.

use std::time::Duration;
use tokio::time::Instant;

/// Longest wait for the requests answered by the last round, whatever that round took.
const MAX_LINGER: Duration = Duration::from_millis(2);

/// What the last round tells the next one.
#[derive(Debug, Default)]
pub(super) struct Pacing {
    expect: usize,
    linger: Duration,
}

impl Pacing {
    /// For a round whose first request just arrived: how many requests to gather, and when to
    /// stop waiting for them.
    pub(super) fn target(&self) -> (usize, Instant) {
        (self.expect, Instant::now() + self.linger)
    }

    /// Records a round that started at `started`, served `served` requests and left `queued`
    /// waiting when it ended.
    pub(super) fn finished(&mut self, started: Instant, served: usize, queued: usize) {
        self.expect = served + queued;
        self.linger = (started.elapsed() / 2).min(MAX_LINGER);
    }
}
