//! bank: an example raftwasm state machine on the SDK, a ledger of accounts whose money is only
//! ever moved, never created or destroyed by a transfer.
//!
//! Build and run it on a node (the host build does the first step for you):
//! `cargo build --release --target wasm32-unknown-unknown -p bank`, then
//! `host --fsm target/wasm/bank.wasm --id node1 --bs`.
//!
//! It shows that commands are the guest's own bytes: here plain text, not the SDK's default
//! JSON (`decode_command`, `decode_query` and `encode_response` are overridden).
//! - `open NAME AMOUNT`: a new account holding AMOUNT (the only way money enters the ledger);
//! - `transfer FROM TO AMOUNT`: moves money; rejected if FROM lacks funds or an account is unknown;
//! - `close NAME`: removes an empty account.
//!
//! Queries: `balance NAME`, `audit` (checks that the balances add up to the money opened and
//! answers `ok TOTAL ACCOUNTS`).

use raftwasm_guest::{Context, Error, StateMachine};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Default, Serialize, Deserialize)]
struct Ledger {
    accounts: BTreeMap<String, u64>,
    /// Sum of every `open`: the invariant is that the balances always add up to it.
    opened: u64,
}

#[derive(Deserialize)]
enum Command {
    Open(String, u64),
    Transfer(String, String, u64),
    Close(String),
}

#[derive(Deserialize)]
enum Query {
    Balance(String),
    Audit,
}

fn amount(s: &str) -> Result<u64, Error> {
    s.parse()
        .map_err(|_| Error::invalid_input(format!("{s:?} is not an amount")))
}

fn words(bytes: &[u8]) -> Result<Vec<String>, Error> {
    let text = std::str::from_utf8(bytes).map_err(|_| Error::invalid_input("not UTF-8 text"))?;
    Ok(text.split_whitespace().map(str::to_string).collect())
}

impl StateMachine for Ledger {
    type Command = Command;
    type Query = Query;
    type Response = String;

    fn decode_command(bytes: &[u8]) -> Result<Command, Error> {
        let w = words(bytes)?;
        match w.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
            ["open", name, value] => Ok(Command::Open(name.to_string(), amount(value)?)),
            ["transfer", from, to, value] => Ok(Command::Transfer(
                from.to_string(),
                to.to_string(),
                amount(value)?,
            )),
            ["close", name] => Ok(Command::Close(name.to_string())),
            _ => Err(Error::invalid_input(format!(
                "unknown command {:?}",
                w.join(" ")
            ))),
        }
    }

    fn decode_query(bytes: &[u8]) -> Result<Query, Error> {
        let w = words(bytes)?;
        match w.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
            ["balance", name] => Ok(Query::Balance(name.to_string())),
            ["audit"] => Ok(Query::Audit),
            _ => Err(Error::invalid_input(format!(
                "unknown query {:?}",
                w.join(" ")
            ))),
        }
    }

    fn encode_response(response: &String) -> Vec<u8> {
        response.as_bytes().to_vec()
    }

    fn apply(&mut self, _: &Context, command: Command) -> Result<String, Error> {
        match command {
            Command::Open(name, value) => {
                if self.accounts.contains_key(&name) {
                    return Err(Error::rejected(format!("account {name} exists")));
                }
                let opened = self
                    .opened
                    .checked_add(value)
                    .ok_or_else(|| Error::rejected("ledger total would overflow"))?;
                self.accounts.insert(name.clone(), value);
                self.opened = opened;
                Ok(format!("opened {name} {value}"))
            }
            Command::Transfer(from, to, value) => {
                let have = *self
                    .accounts
                    .get(&from)
                    .ok_or_else(|| Error::rejected(format!("no account {from}")))?;
                if !self.accounts.contains_key(&to) {
                    return Err(Error::rejected(format!("no account {to}")));
                }
                if have < value {
                    return Err(Error::rejected(format!(
                        "{from} has {have}, cannot send {value}"
                    )));
                }
                *self.accounts.entry(from.clone()).or_default() -= value;
                *self.accounts.entry(to.clone()).or_default() += value;
                Ok(format!("moved {value} from {from} to {to}"))
            }
            Command::Close(name) => match self.accounts.get(&name) {
                None => Err(Error::rejected(format!("no account {name}"))),
                Some(0) => {
                    self.accounts.remove(&name);
                    Ok(format!("closed {name}"))
                }
                Some(b) => Err(Error::rejected(format!("{name} still holds {b}"))),
            },
        }
    }

    fn query(&self, _: &Context, query: Query) -> Result<String, Error> {
        match query {
            Query::Balance(name) => self
                .accounts
                .get(&name)
                .map(|b| b.to_string())
                .ok_or_else(|| Error::rejected(format!("no account {name}"))),
            Query::Audit => {
                let sum: u64 = self.accounts.values().sum();
                if sum == self.opened {
                    Ok(format!("ok {sum} {}", self.accounts.len()))
                } else {
                    Err(Error::internal(format!(
                        "balances add up to {sum}, but {} was opened",
                        self.opened
                    )))
                }
            }
        }
    }
}

raftwasm_guest::export!(Ledger);
