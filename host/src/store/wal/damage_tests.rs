//! Unit tests of what replay accepts and refuses: torn tails, flipped bits, cut and missing
//! segments, random damage, and the previous format.

use super::files::{segment_path, FORMAT_FILE};
use super::record::HEADER;
use super::tests::{append, entry, indexes};
use super::*;
use rand::{Rng, SeedableRng};

fn flip(path: &Path, at: u64) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, at).unwrap();
    file.write_all_at(&[b[0] ^ 1], at).unwrap();
}

fn damage(dir: &Path) -> Damage {
    let e = Wal::open(dir, 1024).unwrap_err();
    damage_of(&e)
        .cloned()
        .unwrap_or_else(|| panic!("not reported as damage: {e}"))
}

/// Where the record holding entry `i` starts.
fn record_of(wal: &Wal, i: u64) -> (u64, u64) {
    let loc = wal.index.read().unwrap().entries[&i];
    (loc.segment, loc.offset - 9 - HEADER as u64)
}

/// A log of entries 1..=300 over many 1 KiB segments, closed by reopening once.
fn many_segments(dir: &Path) -> Wal {
    let mut wal = Wal::open(dir, 1024).unwrap();
    for chunk in 0..30 {
        append(&mut wal, chunk * 10 + 1..chunk * 10 + 11);
    }
    wal
}

#[test]
fn a_flipped_bit_inside_the_log_stops_it_naming_file_offset_and_entry() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), 1 << 20).unwrap();
    append(&mut wal, 1..4);
    let (seg, at) = record_of(&wal, 2);
    drop(wal);
    let path = segment_path(dir.path(), seg);
    // In an entry's bytes, and (another copy) in a record's length.
    for offset in [at + HEADER as u64 + 12, at + 1] {
        let copy = tempfile::tempdir().unwrap();
        for name in [FORMAT_FILE.to_string(), format!("{seg:016x}.wal")] {
            std::fs::copy(dir.path().join(&name), copy.path().join(&name)).unwrap();
        }
        flip(&segment_path(copy.path(), seg), offset);
        let found = damage(copy.path());
        assert_eq!(found.file, segment_path(copy.path(), seg));
        assert_eq!((found.offset, found.last_entry), (at, Some(1)), "{found}");
        let message = found.to_string();
        assert!(message.contains("add it back") && message.contains("wal verify"));
    }
    // The original, untouched, still opens whole.
    assert!(path.exists());
    assert_eq!(
        indexes(&Wal::open(dir.path(), 1024).unwrap().reader()),
        [1, 2, 3]
    );
}

/// Writes entry `index` after the end of the log in `seg`, half of it zeroed (a torn write),
/// and, with `then`, a complete record after it.
fn torn_write(dir: &Path, seg: u64, salt: u64, end: u64, then: bool) {
    let mut torn = Vec::new();
    let (six, seven) = (entry(6), entry(7));
    encode(
        &mut torn,
        &Record::Entry {
            index: 6,
            bytes: &six,
        },
    );
    let first = torn.len();
    if then {
        encode(
            &mut torn,
            &Record::Entry {
                index: 7,
                bytes: &seven,
            },
        );
    }
    seal(&mut torn, Seal { salt, segment: seg });
    torn[first / 2..first].fill(0);
    let file = OpenOptions::new()
        .write(true)
        .open(segment_path(dir, seg))
        .unwrap();
    file.write_all_at(&torn, end).unwrap();
}

#[test]
fn a_torn_tail_is_cut_and_a_valid_record_after_a_torn_one_is_refused() {
    for then in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), 1 << 20).unwrap();
        append(&mut wal, 1..6);
        let (seg, salt, end) = (wal.segments.last().unwrap().id, wal.salt, wal.pos);
        drop(wal);
        torn_write(dir.path(), seg, salt, end, then);
        if then {
            let found = damage(dir.path());
            assert_eq!((found.offset, found.last_entry), (end, Some(5)), "{found}");
            continue;
        }
        let mut wal = Wal::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(indexes(&wal.reader()), [1, 2, 3, 4, 5]);
        append(&mut wal, 6..7);
        drop(wal);
        let wal = Wal::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(indexes(&wal.reader()), [1, 2, 3, 4, 5, 6]);
    }
}

#[test]
fn a_torn_tail_inside_a_large_entry_is_cut_quickly() {
    // A torn 16 MiB entry of random bytes (a module upgrade): the scan for a valid record after
    // it crosses 8 MiB of random lengths, and must not checksum each one.
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), 1 << 20).unwrap();
    append(&mut wal, 1..6);
    let (seg, salt, end) = (wal.segments.last().unwrap().id, wal.salt, wal.pos);
    drop(wal);
    let mut big = vec![0u8; 16 << 20];
    rand::rngs::StdRng::seed_from_u64(7).fill(&mut big[..]);
    let mut torn = Vec::new();
    encode(
        &mut torn,
        &Record::Entry {
            index: 6,
            bytes: &big,
        },
    );
    seal(&mut torn, Seal { salt, segment: seg });
    let half = torn.len() / 2;
    torn[half..].fill(0);
    let file = OpenOptions::new()
        .write(true)
        .open(segment_path(dir.path(), seg))
        .unwrap();
    file.write_all_at(&torn, end).unwrap();
    drop(file);
    let wal = Wal::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(indexes(&wal.reader()), [1, 2, 3, 4, 5]);
    // Of the offsets inside the torn entry whose length fits, almost none are checksummed.
    let fits = (1..half - HEADER)
        .filter(|&pos| {
            let len = u32::from_le_bytes(torn[pos..pos + 4].try_into().unwrap()) as usize;
            len > 0 && len <= torn.len() - pos - HEADER
        })
        .count();
    let checked = (1..half - HEADER)
        .filter(|&pos| super::record::could_be_record(&torn, pos, 5))
        .count();
    assert!(
        fits > 10_000 && checked < 10,
        "{fits} fit, {checked} checked"
    );
}

#[test]
fn a_missing_or_cut_segment_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let wal = many_segments(dir.path());
    let (middle, _) = record_of(&wal, 150);
    let (newest, at) = record_of(&wal, 300);
    drop(wal);
    let copy = |f: &dyn Fn(&Path)| {
        let to = tempfile::tempdir().unwrap();
        for item in std::fs::read_dir(dir.path()).unwrap() {
            let from = item.unwrap().path();
            std::fs::copy(&from, to.path().join(from.file_name().unwrap())).unwrap();
        }
        f(to.path());
        damage(to.path())
    };
    let gone = copy(&|d| std::fs::remove_file(segment_path(d, middle)).unwrap());
    assert!(gone.what.contains("missing"), "{gone}");
    let cut = copy(&|d| {
        let file = OpenOptions::new()
            .write(true)
            .open(segment_path(d, middle))
            .unwrap();
        file.set_len(300).unwrap();
    });
    assert!(cut.what.contains("cut"), "{cut}");
    // The newest segment cut inside its acknowledged records, or emptied.
    for len in [at + 3, 0] {
        let found = copy(&|d| {
            let file = OpenOptions::new()
                .write(true)
                .open(segment_path(d, newest))
                .unwrap();
            file.set_len(len).unwrap();
        });
        assert!(found.last_entry < Some(300), "{found}");
    }
}

/// Flips bits and cuts files at random places in a log of acknowledged entries with an
/// unacknowledged tail: every open must give back every acknowledged entry intact, or refuse.
#[test]
fn random_damage_never_loses_an_acknowledged_entry_silently() {
    let seed = rand::random::<u64>();
    println!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), 1024).unwrap();
    let mut next = 1;
    while next <= 400 {
        let n = rng.gen_range(1..8);
        append(&mut wal, next..next + n);
        next += n;
        if next > 200 && wal.purged.is_none() {
            wal.write(&[Record::Purge { upto: 40 }]).unwrap();
        }
    }
    let acked: Vec<u64> = (41..next).collect();
    let tail: Vec<_> = (next..next + 4).map(entry).collect();
    let records: Vec<_> = (next..)
        .zip(&tail)
        .map(|(index, bytes)| Record::Entry { index, bytes })
        .collect();
    wal.write_unsynced(&records).unwrap();
    drop(wal);
    let files: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();

    let (mut refused, mut intact) = (0, 0);
    for trial in 0..400 {
        let to = tempfile::tempdir().unwrap();
        for item in std::fs::read_dir(dir.path()).unwrap() {
            let from = item.unwrap().path();
            std::fs::copy(&from, to.path().join(from.file_name().unwrap())).unwrap();
        }
        let victim = to
            .path()
            .join(files[rng.gen_range(0..files.len())].file_name().unwrap());
        let len = std::fs::metadata(&victim).unwrap().len();
        let at = rng.gen_range(0..len);
        let what = if rng.gen_bool(0.7) {
            flip(&victim, at);
            format!("bit flipped at {at} of {}", victim.display())
        } else {
            OpenOptions::new()
                .write(true)
                .open(&victim)
                .unwrap()
                .set_len(at)
                .unwrap();
            format!("cut at {at} of {}", victim.display())
        };
        match Wal::open(to.path(), 1024) {
            Err(e) => {
                assert!(damage_of(&e).is_some(), "trial {trial} ({what}): {e}");
                refused += 1;
            }
            Ok(wal) => {
                let got = indexes(&wal.reader());
                let whole = got.len() >= acked.len() && got[..acked.len()] == acked[..];
                let then_tail =
                    whole && got[acked.len()..].iter().zip(next..).all(|(a, b)| *a == b);
                assert!(whole && then_tail, "trial {trial} ({what}): got {got:?}");
                intact += 1;
            }
        }
    }
    println!("{refused} refused, {intact} intact");
    assert!(
        refused > 0 && intact > 0,
        "{refused} refused, {intact} intact"
    );
}

#[test]
fn a_log_of_the_previous_format_is_converted_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(FORMAT_FILE), "raftwasm-wal 2\n").unwrap();
    let mut bytes = Vec::new();
    let entries: Vec<_> = (1..=20).map(entry).collect();
    encode(
        &mut bytes,
        &Record::Meta {
            key: 1,
            value: b"vote",
        },
    );
    for (index, e) in (1..).zip(&entries) {
        encode(&mut bytes, &Record::Entry { index, bytes: e });
    }
    seal(
        &mut bytes,
        Seal {
            salt: 0,
            segment: 3,
        },
    );
    bytes.resize(4096, 0);
    std::fs::write(segment_path(dir.path(), 3), &bytes).unwrap();

    let wal = Wal::open(dir.path(), 1024).unwrap();
    assert_eq!(indexes(&wal.reader()), (1..=20).collect::<Vec<_>>());
    assert_eq!(wal.reader().meta(1).as_deref(), Some(&b"vote"[..]));
    drop(wal);
    let format = std::fs::read_to_string(dir.path().join(FORMAT_FILE)).unwrap();
    assert!(format.starts_with("raftwasm-wal 3 salt="), "{format}");
    let wal = Wal::open(dir.path(), 1024).unwrap();
    assert_eq!(indexes(&wal.reader()), (1..=20).collect::<Vec<_>>());
    assert!(Wal::verify(dir.path()).is_ok());
}
