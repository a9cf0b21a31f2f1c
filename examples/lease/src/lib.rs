//! lease: named locks with a time to live, on the SDK. Whether a lease has expired is decided by
//! the time of the log entry that asks (`Context::unix_ms`), so every node, and a node that
//! restored a snapshot, decides it the same way, whatever its own clock says.
//!
//! Commands (JSON):
//! - `{"acquire":{"name":"db","owner":"alice","ttl_ms":5000}}`: grants the lease if it is free or
//!   expired, answering the [`Lease`] with a fencing token (the entry's log index: a later
//!   holder always has a larger one) and a random id; rejected while someone else holds it.
//! - `{"renew":{"name":"db","id":"…","ttl_ms":5000}}`: extends the holder's lease from now;
//!   rejected once it has expired or for another id.
//! - `{"release":{"name":"db","id":"…"}}`: frees it.
//!
//! Queries: `{"holder":"db"}` (the lease, or `null` when free or expired at the read's time),
//! `"list"` (every lease held at the read's time, by name).

use raftwasm_guest::{Context, Error, StateMachine};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Longest time to live: a day.
const MAX_TTL_MS: u64 = 86_400_000;

/// One granted lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub name: String,
    pub owner: String,
    /// 16 random bytes, hex: what renew and release must present.
    pub id: String,
    /// The log index that granted it.
    pub token: u64,
    /// When it expires, ms since the Unix epoch (log time).
    pub expires_ms: u64,
}

#[derive(Default, Serialize, Deserialize)]
struct Leases {
    by_name: BTreeMap<String, Lease>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Command {
    Acquire {
        name: String,
        owner: String,
        ttl_ms: u64,
    },
    Renew {
        name: String,
        id: String,
        ttl_ms: u64,
    },
    Release {
        name: String,
        id: String,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Query {
    Holder(String),
    List,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Response {
    Lease(Option<Lease>),
    Leases(Vec<Lease>),
    Released { released: String },
}

fn ttl(ttl_ms: u64) -> Result<u64, Error> {
    match ttl_ms {
        1..=MAX_TTL_MS => Ok(ttl_ms),
        _ => Err(Error::invalid_input(format!(
            "ttl_ms must be 1 to {MAX_TTL_MS}, not {ttl_ms}"
        ))),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Leases {
    /// The lease on `name` if it is still held at `now`.
    fn held(&self, name: &str, now: u64) -> Option<&Lease> {
        self.by_name.get(name).filter(|l| l.expires_ms > now)
    }

    /// The live lease on `name` whose id is `id`.
    fn own(&self, name: &str, id: &str, now: u64) -> Result<&Lease, Error> {
        match self.held(name, now) {
            Some(l) if l.id == id => Ok(l),
            Some(_) => Err(Error::rejected(format!("{name} is held under another id"))),
            None => Err(Error::rejected(format!(
                "{name} is not held (expired or released)"
            ))),
        }
    }
}

impl StateMachine for Leases {
    type Command = Command;
    type Query = Query;
    type Response = Response;

    fn apply(&mut self, ctx: &Context, command: Command) -> Result<Response, Error> {
        let now = ctx.unix_ms();
        match command {
            Command::Acquire {
                name,
                owner,
                ttl_ms,
            } => {
                let expires_ms = now + ttl(ttl_ms)?;
                if let Some(l) = self.held(&name, now) {
                    return Err(Error::rejected(format!(
                        "{name} is held by {} until {}",
                        l.owner, l.expires_ms
                    )));
                }
                let lease = Lease {
                    id: hex(&ctx.random_bytes(16)?),
                    token: ctx.index(),
                    name: name.clone(),
                    owner,
                    expires_ms,
                };
                ctx.info(&format!(
                    "{} acquired {name} until {expires_ms}",
                    lease.owner
                ));
                self.by_name.insert(name, lease.clone());
                Ok(Response::Lease(Some(lease)))
            }
            Command::Renew { name, id, ttl_ms } => {
                let expires_ms = now + ttl(ttl_ms)?;
                let mut lease = self.own(&name, &id, now)?.clone();
                lease.expires_ms = expires_ms;
                self.by_name.insert(name, lease.clone());
                Ok(Response::Lease(Some(lease)))
            }
            Command::Release { name, id } => {
                self.own(&name, &id, now)?;
                self.by_name.remove(&name);
                Ok(Response::Released { released: name })
            }
        }
    }

    fn query(&self, ctx: &Context, query: Query) -> Result<Response, Error> {
        let now = ctx.unix_ms();
        Ok(match query {
            Query::Holder(name) => Response::Lease(self.held(&name, now).cloned()),
            Query::List => Response::Leases(
                self.by_name
                    .values()
                    .filter(|l| l.expires_ms > now)
                    .cloned()
                    .collect(),
            ),
        })
    }
}

raftwasm_guest::export!(Leases);
