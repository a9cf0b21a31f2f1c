//! Test fixture: a guest that misbehaves on request, to prove the host contains it.
//!
//! Commands are text: `set K V` stores a value; `loop`, `grow`, `recurse`, `unreachable` misbehave
//! before touching state; `set-then-loop K V` and `set-then-trap K V` change state first, then
//! fail, so a test can check that the change is rolled back. Queries: `get K`. Built by
//! host/build.rs.

use std::cell::RefCell;
use std::collections::BTreeMap;

wit_bindgen::generate!({ path: "../../../../wit/0.1.0", world: "fsm" });

use exports::raftwasm::fsm::state_machine::{Error, Guest};

thread_local! {
    static STATE: RefCell<BTreeMap<String, String>> = const { RefCell::new(BTreeMap::new()) };
}

fn set(k: &str, v: &str) {
    STATE.with_borrow_mut(|s| s.insert(k.to_string(), v.to_string()));
}

/// Never returns: the point is to exhaust the stack.
#[allow(unconditional_recursion)]
#[inline(never)]
fn recurse(depth: u64, pad: &mut [u64; 16]) -> u64 {
    pad[(depth % 16) as usize] = depth;
    let mut local = *pad;
    std::hint::black_box(&mut local);
    recurse(depth + 1, &mut local) + local[3]
}

fn spin() -> ! {
    let mut x = 0u64;
    loop {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}

fn bomb() -> Vec<Vec<u8>> {
    let mut hoard = Vec::new();
    loop {
        // Reserve without touching: growth, not fuel, is what must stop this.
        hoard.push(std::hint::black_box(Vec::<u8>::with_capacity(1 << 20)));
    }
}

struct Hostile;

impl Guest for Hostile {
    fn apply(command: Vec<u8>) -> Result<Vec<u8>, Error> {
        let text = String::from_utf8(command).map_err(|e| Error::InvalidInput(e.to_string()))?;
        let words: Vec<&str> = text.split(' ').collect();
        match words.as_slice() {
            ["set", k, v] => set(k, v),
            ["loop"] => spin(),
            ["grow"] => {
                std::hint::black_box(bomb());
            }
            ["recurse"] => {
                std::hint::black_box(recurse(0, &mut [0; 16]));
            }
            ["unreachable"] => std::process::abort(),
            ["set-then-loop", k, v] => {
                set(k, v);
                spin()
            }
            ["set-then-trap", k, v] => {
                set(k, v);
                panic!("trap after changing state")
            }
            _ => return Err(Error::InvalidInput(format!("unknown command {text:?}"))),
        }
        Ok(b"ok".to_vec())
    }

    fn query(request: Vec<u8>) -> Result<Vec<u8>, Error> {
        let text = String::from_utf8(request).map_err(|e| Error::InvalidInput(e.to_string()))?;
        match text.split_once(' ') {
            Some(("get", k)) => Ok(STATE
                .with_borrow(|s| s.get(k).cloned())
                .unwrap_or_default()
                .into_bytes()),
            Some(("loop", _)) => spin(),
            _ => Err(Error::InvalidInput(format!("unknown query {text:?}"))),
        }
    }

    fn snapshot() -> Vec<u8> {
        STATE.with_borrow(|s| {
            s.iter()
                .map(|(k, v)| format!("{k} {v}\n"))
                .collect::<String>()
                .into_bytes()
        })
    }

    fn restore(state: Vec<u8>) -> Result<(), Error> {
        let text = String::from_utf8(state).map_err(|e| Error::InvalidInput(e.to_string()))?;
        let mut map = BTreeMap::new();
        for line in text.lines() {
            let (k, v) = line
                .split_once(' ')
                .ok_or_else(|| Error::InvalidInput(format!("bad line {line:?}")))?;
            map.insert(k.to_string(), v.to_string());
        }
        STATE.set(map);
        Ok(())
    }
}

export!(Hostile);
