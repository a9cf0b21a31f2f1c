//! Work the storage does on the async worker that asked for it instead of handing it to another
//! thread (a follower's log append, a short guest apply), and the rule that stops doing so when
//! it runs slow.
//!
//! Why inline at all: on this kind of machine a hand-off to a parked thread and back costs two
//! thread wake-ups, 35-60 µs each (BENCHMARKS.md, issue 21), several times the work itself. Why
//! a rule: an async worker held by slow work stalls every task scheduled on it (heartbeats,
//! replies). Inline work pauses for [`PAUSE`] once its moving average (each new sample weighs
//! 1/8) exceeds [`SLOW`]: one late sample on a shared machine, a few ms, does not pause it, a
//! slow disk or a costly guest soon does, and one sample over 16 ms does at once.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Inline work pauses when its moving average exceeds this. A sync on this kind of machine takes
/// 0.1-0.2 ms, a guest-kv put's apply 20-70 µs.
pub(super) const SLOW: Duration = Duration::from_millis(2);
/// How long inline work stays paused once it was slow.
pub(super) const PAUSE: Duration = Duration::from_secs(5);

/// The inline work's moving average, and the end of a pause. Shared by the threads doing it.
#[derive(Default)]
pub(super) struct Pace(Mutex<Averages>);

#[derive(Default)]
struct Averages {
    average: Duration,
    paused_until: Option<Instant>,
}

impl Pace {
    /// Whether inline work is paused at `now`.
    pub(super) fn paused(&self, now: Instant) -> bool {
        let mut a = self.lock();
        match a.paused_until {
            Some(t) if now < t => true,
            Some(_) => {
                a.paused_until = None;
                false
            }
            None => false,
        }
    }

    /// Counts inline work that took `took`, ending at `now`; true when that starts a pause.
    pub(super) fn took(&self, took: Duration, now: Instant) -> bool {
        let mut a = self.lock();
        a.average = (a.average * 7 + took) / 8;
        if a.average <= SLOW {
            return false;
        }
        a.average = Duration::ZERO;
        a.paused_until = Some(now + PAUSE);
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Averages> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_late_sample_does_not_pause_inline_work_but_slow_work_does() {
        let (pace, now) = (Pace::default(), Instant::now());
        let fast = Duration::from_micros(200);
        for _ in 0..20 {
            assert!(!pace.took(fast, now));
        }
        // A 10 ms sample among fast ones: the average stays under 2 ms.
        assert!(!pace.took(Duration::from_millis(10), now));
        assert!(!pace.paused(now));
        // Work that takes 5 ms each time: paused within a few samples, then resumed after.
        let slow = Duration::from_millis(5);
        let pausing = (0..8).position(|_| pace.took(slow, now));
        assert!(matches!(pausing, Some(1..=4)), "{pausing:?}");
        assert!(pace.paused(now + PAUSE / 2));
        assert!(!pace.paused(now + PAUSE));
        // One sample over 16 ms pauses at once.
        assert!(pace.took(Duration::from_millis(20), now));
    }
}
