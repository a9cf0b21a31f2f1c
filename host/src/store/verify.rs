//! `host wal verify`: checks a stopped node's data directory (its write-ahead log and its
//! snapshot) without changing anything, and says what it finds.

use super::log_writer::{PURGED_KEY, VOTE_KEY};
use super::snapshot;
use super::wal::{damage_of, SegmentEnd, Wal};
use crate::types::{LogId, Vote};
use std::fmt::Write;
use std::path::Path;

/// What a check found: a readable account, and whether a node could start on it.
#[derive(Debug, Clone)]
pub struct Verified {
    pub report: String,
    /// What would stop a node or lose data; empty when the directory is sound.
    pub problems: Vec<String>,
}

/// Checks the log under `data_dir/wal` and the snapshot in `data_dir`.
pub fn verify(data_dir: &Path) -> Verified {
    let mut found = Verified {
        report: String::new(),
        problems: Vec::new(),
    };
    let purged = check_log(&data_dir.join("wal"), &mut found);
    check_snapshot(data_dir, purged, &mut found);
    found
}

/// Reports on the log in `dir`; returns how far it is purged.
fn check_log(dir: &Path, found: &mut Verified) -> Option<LogId> {
    let out = &mut found.report;
    let log = match Wal::verify(dir) {
        Ok(log) => log,
        Err(e) => {
            let what = match damage_of(&e) {
                Some(damage) => damage.to_string(),
                None => format!("{}: {e}", dir.display()),
            };
            let _ = writeln!(out, "log: DAMAGED: {what}");
            found.problems.push(what);
            return None;
        }
    };
    for seg in &log.segments {
        let entries = seg.entries.map_or("no entries".to_string(), |(a, b)| {
            format!("entries {a}..={b}")
        });
        let end = match seg.end {
            SegmentEnd::Closed(at) => format!("closed at offset {at}"),
            SegmentEnd::Cut(at) => format!("open, records end at offset {at}"),
        };
        let file = seg.file.display();
        let _ = writeln!(out, "{file}: {} records, {entries}, {end}", seg.records);
    }
    let meta = |key| log.meta.get(&key).map(|v| v.as_slice());
    let vote: Option<Vote> = meta(VOTE_KEY).and_then(|v| bincode::deserialize(v).ok());
    let purged = meta(PURGED_KEY)
        .and_then(|v| bincode::deserialize::<Option<LogId>>(v).ok())
        .flatten();
    let _ = writeln!(
        out,
        "log: {}; purged up to {}; vote {}",
        log.entries
            .map_or("no entries".into(), |(a, b)| format!("entries {a}..={b}")),
        purged.map_or("nothing".into(), |p| p.to_string()),
        vote.map_or("none".into(), |v| v.to_string()),
    );
    purged
}

/// Reports on the snapshot in `data_dir`, which must cover the log's purged prefix.
fn check_snapshot(data_dir: &Path, purged: Option<LogId>, found: &mut Verified) {
    let out = &mut found.report;
    let (meta, envelope) = match snapshot::read(data_dir) {
        Ok(Some(read)) => read,
        Ok(None) => {
            let _ = writeln!(out, "snapshot: none");
            if let Some(p) = purged {
                found.problems.push(format!(
                    "the log is purged up to {p} but there is no snapshot to cover it"
                ));
            }
            return;
        }
        Err(e) => {
            let _ = writeln!(out, "snapshot: DAMAGED: {e}");
            found.problems.push(e.to_string());
            return;
        }
    };
    let contents = match snapshot::open(&envelope) {
        Ok(contents) => contents,
        Err(e) => {
            let _ = writeln!(out, "snapshot: DAMAGED: {e}");
            found.problems.push(e.to_string());
            return;
        }
    };
    let last = meta.last_log_id;
    let _ = writeln!(
        out,
        "snapshot: up to {}, module {}, {} bytes of state, checksum ok",
        last.map_or("nothing".into(), |l| l.to_string()),
        &contents.module_hash[..12],
        contents.state.len()
    );
    if let Some(p) = purged.filter(|p| last.map(|l| l.index) < Some(p.index)) {
        found.problems.push(format!(
            "the log is purged up to {p} but the snapshot only reaches {}",
            last.map_or("nothing".into(), |l| l.to_string())
        ));
    }
}
