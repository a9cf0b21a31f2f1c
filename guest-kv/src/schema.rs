//! guest-kv's wire schema: every command, query and response, as JSON. The guest decodes and
//! encodes with these types, and so does everything that talks to it (the host's `kv` calls, the
//! chaos workload, the tests), so a renamed field fails to compile instead of failing at run time.
//!
//! Commands (through `apply`, one per committed log entry):
//! - `{"op":"put","key":K,"value":V}` → [`PutResponse`] `{"prev":V|null}`
//! - `{"op":"delete","key":K}` → [`DeleteResponse`] `{"deleted":bool,"prev":V|null}`
//! - `{"op":"cas","key":K,"expected":V|null,"value":V|null}` → [`CasResponse`]
//!   `{"swapped":bool,"current":V|null}`: sets `key` to `value` (deletes it when `value` is null)
//!   only if its current value equals `expected` (null or absent: the key must not exist).
//! - `{"op":"append","key":K,"value":S}` → [`AppendResponse`] `{"len":N}`: appends `S` to the
//!   key's value (an absent key counts as empty), like Redis `APPEND`; `N` is the new length in
//!   bytes.
//! - `{"op":"txn","ops":[OP,…]}` → [`TxnResponse`] `{"results":[R,…]}`: runs up to
//!   [`crate::kv::MAX_TXN_OPS`] of `get`, `put`, `delete` and `append` (same fields and results as
//!   above) as one atomic step, in order, each seeing the ones before it. Every key is checked
//!   before anything changes, so a bad operation rejects the whole transaction and nothing is
//!   written.
//!
//! Queries (through `query`, read-only):
//! - `{"op":"get","key":K}` → [`GetResponse`] `{"value":V|null}`
//! - `{"op":"get_many","keys":[K,…]}` → [`GetManyResponse`] `{"values":[V|null,…]}`: several keys
//!   read at one point.
//! - `{"op":"scan","prefix":P?,"start":K?,"end":K?,"limit":N?}` → [`ScanResponse`]
//!   `{"items":[{"key":K,"value":V},…],"more":bool}`, keys ascending, `start` inclusive, `end`
//!   exclusive, at most `limit` items (default [`crate::kv::DEFAULT_SCAN_LIMIT`], capped at
//!   [`crate::kv::MAX_SCAN_LIMIT`]).
//!
//! Changes (announced to watchers, one per key a command changes, with the key as the event's
//! key): [`Change`] `{"op":"put"|"delete"|"cas"|"append"|"incr","value":V|null,"prev":V|null}`, the
//! key's value after and before; a txn announces each of its writes. A delete of an absent key,
//! a cas that does not swap and a get change nothing and announce nothing.
//!
//! Keys are non-empty strings; values are strings, empty allowed. Any Unicode text round-trips.

use crate::json;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A state-changing operation, decoded from the JSON of one log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Set `key` to `value`.
    Put { key: String, value: String },
    /// Remove `key` if present.
    Delete { key: String },
    /// Compare-and-swap: set (or delete, when `value` is null) only if the current value is `expected`.
    Cas {
        key: String,
        #[serde(default)]
        expected: Option<String>,
        #[serde(default)]
        value: Option<String>,
    },
    /// Append `value` to the current value of `key` (absent counts as empty).
    Append { key: String, value: String },
    /// Several operations applied atomically, in order.
    Txn { ops: Vec<TxnOp> },
}

/// One operation inside a `txn` command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum TxnOp {
    /// Read `key` as of this point in the transaction.
    Get { key: String },
    /// Set `key` to `value`.
    Put { key: String, value: String },
    /// Remove `key` if present.
    Delete { key: String },
    /// Append `value` to the current value of `key`.
    Append { key: String, value: String },
}

impl TxnOp {
    pub(crate) fn key(&self) -> &str {
        match self {
            TxnOp::Get { key }
            | TxnOp::Put { key, .. }
            | TxnOp::Delete { key }
            | TxnOp::Append { key, .. } => key,
        }
    }
}

/// A read-only request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Query {
    /// The value of one key.
    Get { key: String },
    /// The values of several keys, read at one point.
    GetMany { keys: Vec<String> },
    /// Keys in ascending order, filtered by prefix and/or the range `[start, end)`.
    Scan {
        #[serde(default)]
        prefix: Option<String>,
        #[serde(default)]
        start: Option<String>,
        #[serde(default)]
        end: Option<String>,
        #[serde(default)]
        limit: Option<usize>,
    },
}

impl Command {
    /// The JSON bytes a log entry carries; a put's written directly (see [`crate::json`]).
    pub fn encode(&self) -> Vec<u8> {
        let Command::Put { key, value } = self else {
            return to_json(self);
        };
        let mut out = Vec::with_capacity(key.len() + value.len() + 32);
        out.extend_from_slice(br#"{"op":"put","key":"#);
        json::write_str(&mut out, key);
        out.extend_from_slice(br#","value":"#);
        json::write_str(&mut out, value);
        out.push(b'}');
        out
    }

    /// A command from a log entry's JSON; a put as [`Command::encode`] writes it takes a short
    /// path (see [`crate::json`]).
    pub fn decode(bytes: &[u8]) -> Result<Command, serde_json::Error> {
        match json::plain_put(bytes) {
            Some((key, value)) => Ok(Command::Put { key, value }),
            None => serde_json::from_slice(bytes),
        }
    }
}

impl Query {
    /// The JSON bytes a query request carries.
    pub fn encode(&self) -> Vec<u8> {
        to_json(self)
    }
}

/// Reads a response of type `T` from the guest's JSON.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(bytes)
}

/// The operation behind a [`Change`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeOp {
    Put,
    Delete,
    Cas,
    Append,
    /// guest-kv v2's `incr` (examples/guest-kv-v2).
    Incr,
}

/// One key's change, as watchers receive it (the payload of a watch event whose key is the
/// key). Borrowed when guest-kv writes it; decoded, it owns its strings (`Change<'static>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change<'a> {
    pub op: ChangeOp,
    /// The value after the change; null when the change deleted the key.
    pub value: Option<std::borrow::Cow<'a, str>>,
    /// The value before; null when the key did not exist.
    pub prev: Option<std::borrow::Cow<'a, str>>,
}

impl ChangeOp {
    /// The name it has in JSON.
    pub fn name(self) -> &'static str {
        match self {
            ChangeOp::Put => "put",
            ChangeOp::Delete => "delete",
            ChangeOp::Cas => "cas",
            ChangeOp::Append => "append",
            ChangeOp::Incr => "incr",
        }
    }
}

impl Change<'_> {
    /// Its JSON, as serde would write it (see [`crate::json`]: every put writes one).
    pub fn encode(&self) -> Vec<u8> {
        let (value, prev) = (self.value.as_deref(), self.prev.as_deref());
        let strings = value.map_or(0, str::len) + prev.map_or(0, str::len);
        let mut out = Vec::with_capacity(strings + 48);
        out.extend_from_slice(b"{\"op\":\"");
        out.extend_from_slice(self.op.name().as_bytes());
        out.extend_from_slice(b"\",\"value\":");
        json::write_opt_str(&mut out, value);
        out.extend_from_slice(b",\"prev\":");
        json::write_opt_str(&mut out, prev);
        out.push(b'}');
        out
    }
}

pub(crate) fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    // These types hold only strings, numbers, bools and lists of them: serializing cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

// Every response denies unknown fields, so [`TxnResult`] (untagged) decodes each result as the
// one variant whose fields it has.

/// Answer to `put`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutResponse {
    pub prev: Option<String>,
}

impl PutResponse {
    /// Its JSON, as serde would write it (see [`crate::json`]: every put writes one).
    pub fn encode(&self) -> Vec<u8> {
        let prev = self.prev.as_deref();
        let mut out = Vec::with_capacity(prev.map_or(0, str::len) + 16);
        out.extend_from_slice(b"{\"prev\":");
        json::write_opt_str(&mut out, prev);
        out.push(b'}');
        out
    }

    /// An answer from the guest's JSON; guest-kv's own form is read directly.
    pub fn decode(bytes: &[u8]) -> Result<PutResponse, serde_json::Error> {
        match json::plain_put_answer(bytes) {
            Some(prev) => Ok(PutResponse { prev }),
            None => serde_json::from_slice(bytes),
        }
    }
}

/// Answer to `delete`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteResponse {
    pub deleted: bool,
    pub prev: Option<String>,
}

/// Answer to `cas`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CasResponse {
    pub swapped: bool,
    pub current: Option<String>,
}

/// Answer to `get`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetResponse {
    pub value: Option<String>,
}

/// Answer to `append`: the new length in bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppendResponse {
    pub len: usize,
}

/// Answer to `get_many`: one value per key asked for, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetManyResponse {
    pub values: Vec<Option<String>>,
}

/// One result inside a `txn` response: the same object the single command returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TxnResult {
    Delete(DeleteResponse),
    Get(GetResponse),
    Put(PutResponse),
    Append(AppendResponse),
}

/// Answer to `txn`: one result per operation, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TxnResponse {
    pub results: Vec<TxnResult>,
}

/// A key and its value, as a scan lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

/// Answer to `scan`: one page of keys in order; `more` when the limit cut it short.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanResponse {
    pub items: Vec<KeyValue>,
    pub more: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txn_results_decode_as_the_variant_with_their_fields() {
        let json = br#"{"results":[{"value":"1"},{"len":7},{"value":null},{"prev":null},
            {"deleted":true,"prev":"v"}]}"#;
        let r: TxnResponse = decode(json).unwrap();
        assert_eq!(
            r.results,
            [
                TxnResult::Get(GetResponse {
                    value: Some("1".into())
                }),
                TxnResult::Append(AppendResponse { len: 7 }),
                TxnResult::Get(GetResponse { value: None }),
                TxnResult::Put(PutResponse { prev: None }),
                TxnResult::Delete(DeleteResponse {
                    deleted: true,
                    prev: Some("v".into())
                }),
            ]
        );
        assert_eq!(decode::<TxnResponse>(&to_json(&r)).unwrap(), r);
    }
}
