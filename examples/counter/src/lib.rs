//! The README's counter, version 1, on the SDK: command `{"add":N}`, query `null`.

use raftwasm_guest::{Context, Error, StateMachine};
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct Counter {
    total: i64,
}

#[derive(Deserialize)]
struct Add {
    add: i64,
}

impl StateMachine for Counter {
    type Command = Add;
    type Query = ();
    type Response = i64;

    fn apply(&mut self, _: &Context, Add { add }: Add) -> Result<i64, Error> {
        self.total = self
            .total
            .checked_add(add)
            .ok_or(Error::rejected("overflow"))?;
        Ok(self.total)
    }

    fn query(&self, _: &Context, (): ()) -> Result<i64, Error> {
        Ok(self.total)
    }
}

raftwasm_guest::export!(Counter);
