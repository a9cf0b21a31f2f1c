//! A `raftwasm:fsm@0.2.0` test guest that records what its context tells it. Its state is the
//! list of every probe it applied, so equal state hashes on two nodes mean their guests saw the
//! same entries, times and random bytes.
//!
//! Commands: `probe` answers `INDEX TERM UNIX_MS RANDOM_HEX` (16 random bytes) and logs it at
//! info; `chatter N` logs N lines; `panic` logs a line, then traps.
//! Queries: `now` answers the read's `INDEX UNIX_MS`; `random` answers what `random-bytes` said
//! (an error in a query); `probes` answers every recorded probe, one per line.

use std::cell::RefCell;

wit_bindgen::generate!({ path: "../../../../wit/0.2.0", world: "fsm" });

use exports::raftwasm::fsm::state_machine::{Error, Guest};
use raftwasm::fsm::context::{current_entry, log, random_bytes, Level};

thread_local! {
    static PROBES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct Probe;

impl Guest for Probe {
    fn apply(command: Vec<u8>) -> Result<Vec<u8>, Error> {
        let text = String::from_utf8(command).map_err(|e| Error::InvalidInput(e.to_string()))?;
        match text.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["probe"] => {
                let e = current_entry();
                let random = random_bytes(16).map_err(Error::Internal)?;
                let line = format!("{} {} {} {}", e.index, e.term, e.unix_ms, hex(&random));
                log(Level::Info, &format!("probe {line}"));
                PROBES.with_borrow_mut(|p| p.push(line.clone()));
                Ok(line.into_bytes())
            }
            ["chatter", n] => {
                let n: u32 = n.parse().map_err(|_| Error::InvalidInput(text.clone()))?;
                for i in 0..n {
                    log(Level::Debug, &format!("chatter {i}"));
                }
                Ok(b"ok".to_vec())
            }
            ["panic"] => {
                log(Level::Error, "about to trap");
                panic!("the probe was told to trap");
            }
            _ => Err(Error::InvalidInput(format!("unknown command {text:?}"))),
        }
    }

    fn query(request: Vec<u8>) -> Result<Vec<u8>, Error> {
        match request.as_slice() {
            b"now" => {
                let e = current_entry();
                Ok(format!("{} {}", e.index, e.unix_ms).into_bytes())
            }
            b"random" => match random_bytes(4) {
                Ok(bytes) => Ok(hex(&bytes).into_bytes()),
                Err(message) => Err(Error::Rejected(message)),
            },
            b"probes" => Ok(PROBES.with_borrow(|p| p.join("\n")).into_bytes()),
            _ => Err(Error::InvalidInput("queries: now, random, probes".into())),
        }
    }

    fn snapshot() -> Vec<u8> {
        PROBES.with_borrow(|p| p.join("\n")).into_bytes()
    }

    fn restore(state: Vec<u8>) -> Result<(), Error> {
        let text = String::from_utf8(state).map_err(|e| Error::InvalidInput(e.to_string()))?;
        let probes = text.lines().map(str::to_string).collect();
        PROBES.set(probes);
        Ok(())
    }
}

export!(Probe);
