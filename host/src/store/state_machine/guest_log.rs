//! What guests logged on this node (`log` of `raftwasm:fsm/context@0.2.0`): each line goes to
//! the node's log (target `raftwasm::guest`) and into a ring of the latest lines, numbered so a
//! reader can ask for the lines after the last one it saw (`GET /v1/guest/log?after=N`).

use crate::fsm::{Level, LogLine};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// Lines the ring keeps.
pub const KEPT_GUEST_LINES: usize = 1000;

/// One line in the ring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumberedLine {
    /// This node's number for the line: 1, 2, … since the node started.
    pub seq: u64,
    #[serde(flatten)]
    pub line: LogLine,
}

#[derive(Debug, Default)]
struct Ring {
    lines: VecDeque<NumberedLine>,
    last_seq: u64,
}

/// The latest guest log lines of a node. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct GuestLog(Arc<Mutex<Ring>>);

impl GuestLog {
    /// Logs `lines` and keeps them (dropping the oldest beyond [`KEPT_GUEST_LINES`]).
    pub fn record(&self, lines: Vec<LogLine>) {
        if lines.is_empty() {
            return;
        }
        let mut ring = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for line in lines {
            emit(&line);
            ring.last_seq += 1;
            if ring.lines.len() == KEPT_GUEST_LINES {
                ring.lines.pop_front();
            }
            let seq = ring.last_seq;
            ring.lines.push_back(NumberedLine { seq, line });
        }
    }

    /// The kept lines numbered after `after`, oldest first, and the number of the last line
    /// logged so far.
    pub fn after(&self, after: u64) -> (Vec<NumberedLine>, u64) {
        let ring = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let lines = ring
            .lines
            .iter()
            .filter(|l| l.seq > after)
            .cloned()
            .collect();
        (lines, ring.last_seq)
    }
}

/// One guest line in the node's log.
fn emit(line: &LogLine) {
    let (index, query, message) = (line.index, line.query, &line.message);
    match line.level {
        Level::Trace => tracing::trace!(target: "raftwasm::guest", index, query, "{message}"),
        Level::Debug => tracing::debug!(target: "raftwasm::guest", index, query, "{message}"),
        Level::Info => tracing::info!(target: "raftwasm::guest", index, query, "{message}"),
        Level::Warn => tracing::warn!(target: "raftwasm::guest", index, query, "{message}"),
        Level::Error => tracing::error!(target: "raftwasm::guest", index, query, "{message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(n: u64) -> LogLine {
        LogLine {
            level: Level::Info,
            message: format!("line {n}"),
            index: n,
            unix_ms: 0,
            query: false,
        }
    }

    #[test]
    fn keeps_the_latest_lines_numbered() {
        let log = GuestLog::default();
        log.record((1..=KEPT_GUEST_LINES as u64 + 5).map(line).collect());
        let (all, last) = log.after(0);
        assert_eq!(last, KEPT_GUEST_LINES as u64 + 5);
        assert_eq!(all.len(), KEPT_GUEST_LINES);
        assert_eq!(all[0].seq, 6);
        let (tail, _) = log.after(last - 2);
        assert_eq!(
            tail.iter().map(|l| l.seq).collect::<Vec<_>>(),
            [last - 1, last]
        );
    }
}
