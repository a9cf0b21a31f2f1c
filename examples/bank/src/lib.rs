//! bank: an example raftwasm state machine, a ledger of accounts whose money is only ever moved,
//! never created or destroyed by a transfer.
//!
//! Build and run it on a node (the host build does the first step for you):
//! `cargo build --release --target wasm32-unknown-unknown -p bank`, then
//! `host --fsm target/wasm/bank.wasm --id node1 --bs`.
//!
//! It shows that commands are the guest's own bytes: here plain text, not JSON.
//! - `open NAME AMOUNT`: a new account holding AMOUNT (the only way money enters the ledger);
//! - `transfer FROM TO AMOUNT`: moves money; rejected if FROM lacks funds or an account is unknown;
//! - `close NAME`: removes an empty account.
//!
//! Queries: `balance NAME`, `audit` (checks that the balances add up to the money opened and
//! answers `ok TOTAL ACCOUNTS`).

use std::cell::RefCell;
use std::collections::BTreeMap;

wit_bindgen::generate!({ path: "../../wit/0.1.0", world: "fsm" });

use exports::raftwasm::fsm::state_machine::{Error, Guest};

#[derive(Default)]
struct Ledger {
    accounts: BTreeMap<String, u64>,
    /// Sum of every `open`: the invariant is that the balances always add up to it.
    opened: u64,
}

thread_local! {
    static LEDGER: RefCell<Ledger> = RefCell::new(Ledger::default());
}

fn amount(s: &str) -> Result<u64, Error> {
    s.parse()
        .map_err(|_| Error::InvalidInput(format!("{s:?} is not an amount")))
}

impl Ledger {
    fn apply(&mut self, text: &str) -> Result<String, Error> {
        let words: Vec<&str> = text.split_whitespace().collect();
        match words.as_slice() {
            ["open", name, value] => {
                let value = amount(value)?;
                if self.accounts.contains_key(*name) {
                    return Err(Error::Rejected(format!("account {name} exists")));
                }
                let opened = self
                    .opened
                    .checked_add(value)
                    .ok_or_else(|| Error::Rejected("ledger total would overflow".into()))?;
                self.accounts.insert(name.to_string(), value);
                self.opened = opened;
                Ok(format!("opened {name} {value}"))
            }
            ["transfer", from, to, value] => {
                let value = amount(value)?;
                let have = *self
                    .accounts
                    .get(*from)
                    .ok_or_else(|| Error::Rejected(format!("no account {from}")))?;
                if !self.accounts.contains_key(*to) {
                    return Err(Error::Rejected(format!("no account {to}")));
                }
                if have < value {
                    return Err(Error::Rejected(format!(
                        "{from} has {have}, cannot send {value}"
                    )));
                }
                *self.accounts.entry(from.to_string()).or_default() -= value;
                *self.accounts.entry(to.to_string()).or_default() += value;
                Ok(format!("moved {value} from {from} to {to}"))
            }
            ["close", name] => match self.accounts.get(*name) {
                None => Err(Error::Rejected(format!("no account {name}"))),
                Some(0) => {
                    self.accounts.remove(*name);
                    Ok(format!("closed {name}"))
                }
                Some(b) => Err(Error::Rejected(format!("{name} still holds {b}"))),
            },
            _ => Err(Error::InvalidInput(format!("unknown command {text:?}"))),
        }
    }

    fn query(&self, text: &str) -> Result<String, Error> {
        let words: Vec<&str> = text.split_whitespace().collect();
        match words.as_slice() {
            ["balance", name] => self
                .accounts
                .get(*name)
                .map(|b| b.to_string())
                .ok_or_else(|| Error::Rejected(format!("no account {name}"))),
            ["audit"] => {
                let sum: u64 = self.accounts.values().sum();
                if sum == self.opened {
                    Ok(format!("ok {sum} {}", self.accounts.len()))
                } else {
                    Err(Error::Internal(format!(
                        "balances add up to {sum}, but {} was opened",
                        self.opened
                    )))
                }
            }
            _ => Err(Error::InvalidInput(format!("unknown query {text:?}"))),
        }
    }
}

fn text(bytes: Vec<u8>) -> Result<String, Error> {
    String::from_utf8(bytes).map_err(|_| Error::InvalidInput("not UTF-8 text".into()))
}

struct Bank;

impl Guest for Bank {
    fn apply(command: Vec<u8>) -> Result<Vec<u8>, Error> {
        let command = text(command)?;
        LEDGER
            .with_borrow_mut(|l| l.apply(&command))
            .map(String::into_bytes)
    }

    fn query(request: Vec<u8>) -> Result<Vec<u8>, Error> {
        let request = text(request)?;
        LEDGER
            .with_borrow(|l| l.query(&request))
            .map(String::into_bytes)
    }

    /// One `NAME BALANCE` line per account, names ascending.
    fn snapshot() -> Vec<u8> {
        LEDGER.with_borrow(|l| {
            l.accounts
                .iter()
                .map(|(name, balance)| format!("{name} {balance}\n"))
                .collect::<String>()
                .into_bytes()
        })
    }

    fn restore(state: Vec<u8>) -> Result<(), Error> {
        let mut ledger = Ledger::default();
        for (n, line) in text(state)?.lines().enumerate() {
            // The line is account data: say where, never what.
            let (name, balance) = line.split_once(' ').ok_or_else(|| {
                Error::InvalidInput(format!(
                    "bad snapshot: line {} is not `name balance`",
                    n + 1
                ))
            })?;
            let balance = amount(balance).map_err(|_| {
                Error::InvalidInput(format!("bad snapshot: line {} has no amount", n + 1))
            })?;
            ledger.accounts.insert(name.to_string(), balance);
            ledger.opened = ledger
                .opened
                .checked_add(balance)
                .ok_or_else(|| Error::InvalidInput("snapshot total overflows".into()))?;
        }
        LEDGER.set(ledger);
        Ok(())
    }
}

export!(Bank);
