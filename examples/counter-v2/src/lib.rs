//! The README's counter, version 2: adds `{"sub":N}` and a count of applied commands (query
//! `"stats"`), so the state's layout changes; `restore` migrates version 1's.

use raftwasm_guest::{decode_state, Context, Error, StateMachine};
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct Counter {
    total: i64,
    count: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Command {
    Add(i64),
    Sub(i64),
}

#[derive(Serialize)]
#[serde(untagged)]
enum Response {
    Total(i64),
    Stats { total: i64, count: u64 },
}

impl StateMachine for Counter {
    type Command = Command;
    /// `null`: the total; `"stats"`: the total and the count.
    type Query = Option<String>;
    type Response = Response;

    fn apply(&mut self, _: &Context, command: Command) -> Result<Response, Error> {
        let n = match command {
            Command::Add(n) => Some(n),
            Command::Sub(n) => n.checked_neg(),
        };
        let total = n.and_then(|n| self.total.checked_add(n));
        self.total = total.ok_or(Error::rejected("overflow"))?;
        self.count += 1;
        Ok(Response::Total(self.total))
    }

    fn query(&self, _: &Context, query: Option<String>) -> Result<Response, Error> {
        match query.as_deref() {
            None => Ok(Response::Total(self.total)),
            Some("stats") => Ok(Response::Stats {
                total: self.total,
                count: self.count,
            }),
            Some(other) => Err(Error::invalid_input(format!(
                "queries: null, \"stats\"; not {other:?}"
            ))),
        }
    }

    /// This version's layout, or version 1's (`{total}`), migrated with a count of 0.
    fn restore(bytes: &[u8]) -> Result<Self, Error> {
        #[derive(Deserialize)]
        struct V1 {
            total: i64,
        }
        decode_state(bytes).or_else(|_| {
            let V1 { total } = decode_state(bytes)?;
            Ok(Counter { total, count: 0 })
        })
    }
}

raftwasm_guest::export!(Counter);
