//! A guest with two mistakes `host guest check` must find: its `query` changes the state (a
//! count of peeks, which every response then shows), and its `restore` drops a field (the count
//! of applied commands), so a node that restored a snapshot answers differently.
//!
//! Commands: `add N` answers `TOTAL APPLIED PEEKS`. Query: `peek` answers the total.

use std::cell::Cell;

wit_bindgen::generate!({ path: "../../../../wit/0.1.0", world: "fsm" });

use exports::raftwasm::fsm::state_machine::{Error, Guest};

thread_local! {
    static TOTAL: Cell<i64> = const { Cell::new(0) };
    static APPLIED: Cell<u64> = const { Cell::new(0) };
    static PEEKS: Cell<u64> = const { Cell::new(0) };
}

struct Sloppy;

impl Guest for Sloppy {
    fn apply(command: Vec<u8>) -> Result<Vec<u8>, Error> {
        let text = String::from_utf8(command).map_err(|e| Error::InvalidInput(e.to_string()))?;
        let n: i64 = match text.split_once(' ') {
            Some(("add", n)) => n.parse().map_err(|_| Error::InvalidInput(text.clone()))?,
            _ => return Err(Error::InvalidInput(format!("unknown command {text:?}"))),
        };
        TOTAL.set(TOTAL.get().wrapping_add(n));
        APPLIED.set(APPLIED.get() + 1);
        Ok(format!("{} {} {}", TOTAL.get(), APPLIED.get(), PEEKS.get()).into_bytes())
    }

    fn query(_: Vec<u8>) -> Result<Vec<u8>, Error> {
        // The mistake: a read that writes.
        PEEKS.set(PEEKS.get() + 1);
        Ok(TOTAL.get().to_string().into_bytes())
    }

    fn snapshot() -> Vec<u8> {
        let mut out = TOTAL.get().to_le_bytes().to_vec();
        out.extend_from_slice(&APPLIED.get().to_le_bytes());
        out.extend_from_slice(&PEEKS.get().to_le_bytes());
        out
    }

    fn restore(state: Vec<u8>) -> Result<(), Error> {
        let word = |i: usize| -> Result<[u8; 8], Error> {
            state
                .get(i * 8..i * 8 + 8)
                .and_then(|w| w.try_into().ok())
                .ok_or_else(|| Error::InvalidInput("bad snapshot".into()))
        };
        TOTAL.set(i64::from_le_bytes(word(0)?));
        // The other mistake: the count of applied commands is not restored.
        APPLIED.set(0);
        PEEKS.set(u64::from_le_bytes(word(2)?));
        Ok(())
    }
}

export!(Sloppy);
