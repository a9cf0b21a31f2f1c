//! Unit tests of the write-ahead log: replay, torn tails, corruption, formats, segment reuse.

use super::files::{segment_path, FORMAT_FILE};
use super::*;

/// Entry bytes; their length varies with the index, so reused segment files are not
/// overwritten record for record.
pub(super) fn entry(index: u64) -> Vec<u8> {
    let pad = if index % 100 < 50 { 60 } else { 0 };
    format!("entry-{index}-{}", "x".repeat(pad)).into_bytes()
}

pub(super) fn append(wal: &mut Wal, range: std::ops::Range<u64>) {
    let bytes: Vec<_> = range.clone().map(entry).collect();
    let records: Vec<_> = range
        .zip(&bytes)
        .map(|(index, bytes)| Record::Entry { index, bytes })
        .collect();
    wal.write(&records).unwrap();
}

fn wal_files(dir: &Path, extension: &str) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension() == Some(extension.as_ref()))
        .count()
}

pub(super) fn indexes(wal: &WalReader) -> Vec<u64> {
    let got = wal.entries(..).unwrap();
    for (i, bytes) in &got {
        assert_eq!(bytes, &entry(*i));
    }
    got.into_iter().map(|(i, _)| i).collect()
}

#[test]
fn entries_truncation_purge_and_meta_survive_reopen_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), 1024).unwrap();
    for chunk in 0..40 {
        append(&mut wal, chunk * 10 + 1..chunk * 10 + 11);
    }
    wal.write(&[Record::Meta {
        key: 1,
        value: b"vote-a",
    }])
    .unwrap();
    // Truncation reaching back into older segments.
    wal.write(&[Record::Truncate { from: 205 }]).unwrap();
    append(&mut wal, 205..208);
    let before = wal.segment_count();
    assert!(before > 2, "{before}");
    wal.write(&[Record::Purge { upto: 150 }]).unwrap();
    assert!(
        wal.segment_count() < before,
        "{} segments",
        wal.segment_count()
    );
    let expect: Vec<u64> = (151..208).collect();
    assert_eq!(indexes(&wal.reader()), expect);
    drop(wal);

    let wal = Wal::open(dir.path(), 1024).unwrap();
    assert_eq!(indexes(&wal.reader()), expect);
    assert_eq!(wal.reader().meta(1).as_deref(), Some(&b"vote-a"[..]));
    assert_eq!(wal.reader().entries(200..300).unwrap().len(), 8);
    // Segments wholly below the purge point are gone from disk: what is left is the live
    // segments and the next one, prepared ahead.
    let live = wal.segment_count();
    drop(wal);
    assert_eq!(wal_files(dir.path(), "wal"), live + 1);
}

#[test]
fn segment_files_are_reused_and_the_log_stays_exact() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), 1024).unwrap();
    let mut next = 1;
    // Fill, purge and refill many segments, so files are reused several times over.
    for round in 0..6u64 {
        for _ in 0..20 {
            append(&mut wal, next..next + 5);
            next += 5;
        }
        wal.write(&[Record::Purge { upto: next - 30 }]).unwrap();
        assert!(!wal.recycled.is_empty() && wal.recycled.len() <= RECYCLE);
        assert_eq!(
            indexes(&wal.reader()),
            (next - 29..next).collect::<Vec<_>>()
        );
        if round == 2 {
            drop(wal);
            wal = Wal::open(dir.path(), 1024).unwrap();
        }
    }
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files.iter().filter(|f| f.ends_with(".recycle")).count() <= RECYCLE,
        "{files:?}"
    );
    drop(wal);
    // After a restart only live entries come back.
    let wal = Wal::open(dir.path(), 1024).unwrap();
    assert_eq!(
        indexes(&wal.reader()),
        (next - 29..next).collect::<Vec<_>>()
    );
}

#[test]
fn records_are_valid_only_in_the_segment_they_were_written_for() {
    // A reused file still holds its earlier life's records past whatever was rewritten:
    // here, all of them, under a new segment id.
    let old = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(old.path(), 1 << 16).unwrap();
    append(&mut wal, 1..6);
    let seg = wal.segments.last().unwrap().id;
    drop(wal);
    let copy = |to: u64| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(old.path().join(FORMAT_FILE), dir.path().join(FORMAT_FILE)).unwrap();
        std::fs::copy(segment_path(old.path(), seg), segment_path(dir.path(), to)).unwrap();
        dir
    };
    // Under another id, none of them is a record: a log with no record is refused.
    let elsewhere = copy(seg + 5);
    let err = Wal::open(elsewhere.path(), 1 << 16).unwrap_err();
    assert!(damage_of(&err).is_some(), "{err}");
    // The same bytes under their own id replay.
    let own = copy(seg);
    let wal = Wal::open(own.path(), 1 << 16).unwrap();
    assert_eq!(indexes(&wal.reader()), vec![1, 2, 3, 4, 5]);
}

#[test]
fn a_log_in_another_format_is_refused_not_read_as_empty() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), 1 << 16).unwrap();
    append(&mut wal, 1..3);
    drop(wal);
    std::fs::remove_file(dir.path().join(FORMAT_FILE)).unwrap();
    let err = Wal::open(dir.path(), 1 << 16).unwrap_err().to_string();
    assert!(err.contains("without a FORMAT file"), "{err}");
    std::fs::write(dir.path().join(FORMAT_FILE), "raftwasm-wal 9\n").unwrap();
    let err = Wal::open(dir.path(), 1 << 16).unwrap_err().to_string();
    assert!(err.contains("raftwasm-wal 9"), "{err}");
}

#[test]
fn restarts_without_writes_do_not_pile_up_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), 1 << 16).unwrap();
    append(&mut wal, 1..3);
    drop(wal);
    for _ in 0..5 {
        let wal = Wal::open(dir.path(), 1 << 16).unwrap();
        assert_eq!(indexes(&wal.reader()), vec![1, 2]);
    }
    // The segment with the entries, the active one and the next one; the empty segments
    // of earlier starts wait for reuse, no more than RECYCLE of them.
    assert_eq!(wal_files(dir.path(), "wal"), 3);
    assert!(wal_files(dir.path(), "recycle") <= RECYCLE);
}
