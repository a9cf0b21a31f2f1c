//! The key-value map behind guest-kv and its snapshot format. The JSON it speaks is in
//! [`crate::schema`].

use crate::schema::{
    to_json, AppendResponse, CasResponse, Change, ChangeOp, Command, DeleteResponse,
    GetManyResponse, GetResponse, KeyValue, PutResponse, Query, ScanResponse, TxnOp, TxnResponse,
    TxnResult,
};
use std::borrow::Cow;
use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::ops::Bound;

/// Items a scan returns when the query gives no `limit`.
pub const DEFAULT_SCAN_LIMIT: usize = 100;
/// The most items one scan returns, whatever `limit` asks for.
pub const MAX_SCAN_LIMIT: usize = 10_000;

/// Most operations in one `txn` command, and most keys in one `get_many` query.
pub const MAX_TXN_OPS: usize = 1024;

/// First bytes of every snapshot, with the format version.
const SNAPSHOT_MAGIC: &[u8; 4] = b"GKV1";

/// Why a command or query was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvError {
    /// Malformed JSON, an unknown `op`, a missing field, an empty key, a bad snapshot.
    InvalidInput(String),
    /// Well-formed but refused (reserved for rules; guest-kv has none today).
    Rejected(String),
}

/// The map. Ordered, so snapshots are byte-identical on every node that applied the same commands.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Kv {
    map: BTreeMap<String, String>,
}

fn check_key(key: &str) -> Result<(), KvError> {
    if key.is_empty() {
        return Err(KvError::InvalidInput("key must not be empty".into()));
    }
    Ok(())
}

impl Kv {
    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when no key is set.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.map.get(key).map(String::as_str)
    }

    /// Sets `key` (non-empty) to `value`, returning the previous value.
    pub fn set(&mut self, key: &str, value: String) -> Result<Option<String>, KvError> {
        check_key(key)?;
        Ok(self.map.insert(key.to_string(), value))
    }

    /// Decodes and applies one JSON command, returning the JSON response.
    pub fn apply_bytes(&mut self, command: &[u8]) -> Result<Vec<u8>, KvError> {
        self.apply_bytes_observed(command, &mut |_, _| {})
    }

    /// [`Kv::apply_bytes`], telling `on_change` each change (see [`Kv::apply_observed`]).
    pub fn apply_bytes_observed(
        &mut self,
        command: &[u8],
        on_change: &mut impl FnMut(&str, Change<'_>),
    ) -> Result<Vec<u8>, KvError> {
        let command = Command::decode(command)
            .map_err(|e| KvError::InvalidInput(format!("invalid command: {e}")))?;
        self.apply_observed(command, on_change)
    }

    /// Applies one decoded command, returning the JSON response.
    pub fn apply(&mut self, command: Command) -> Result<Vec<u8>, KvError> {
        self.apply_observed(command, &mut |_, _| {})
    }

    /// Applies one decoded command, telling `on_change` each key it changes (see
    /// [`crate::schema::Change`]) once the change is certain, and returns the JSON response.
    pub fn apply_observed(
        &mut self,
        command: Command,
        on_change: &mut impl FnMut(&str, Change<'_>),
    ) -> Result<Vec<u8>, KvError> {
        match command {
            Command::Put { key, value } => {
                check_key(&key)?;
                let prev = self.put(key, value, ChangeOp::Put, on_change);
                Ok(PutResponse { prev }.encode())
            }
            Command::Delete { key } => {
                check_key(&key)?;
                let prev = self.delete(&key, ChangeOp::Delete, on_change);
                Ok(to_json(&DeleteResponse {
                    deleted: prev.is_some(),
                    prev,
                }))
            }
            Command::Cas {
                key,
                expected,
                value,
            } => {
                check_key(&key)?;
                let current = self.map.get(&key);
                if current.map(String::as_str) != expected.as_deref() {
                    return Ok(to_json(&CasResponse {
                        swapped: false,
                        current: current.cloned(),
                    }));
                }
                let current = match value {
                    Some(v) => {
                        let current = v.clone();
                        self.put(key, v, ChangeOp::Cas, on_change);
                        Some(current)
                    }
                    None => {
                        self.delete(&key, ChangeOp::Cas, on_change);
                        None
                    }
                };
                Ok(to_json(&CasResponse {
                    swapped: true,
                    current,
                }))
            }
            Command::Append { key, value } => {
                check_key(&key)?;
                let len = self.append(key, &value, on_change);
                Ok(to_json(&AppendResponse { len }))
            }
            Command::Txn { ops } => {
                if ops.len() > MAX_TXN_OPS {
                    return Err(KvError::InvalidInput(format!(
                        "a txn holds at most {MAX_TXN_OPS} operations, got {}",
                        ops.len()
                    )));
                }
                // Validate everything first: after this point no operation can fail, so the
                // transaction is all or nothing without an undo log.
                for op in &ops {
                    check_key(op.key())?;
                }
                let results = ops
                    .into_iter()
                    .map(|op| self.txn_op(op, on_change))
                    .collect();
                Ok(to_json(&TxnResponse { results }))
            }
        }
    }

    /// Sets `key` to `value`, announcing it as `op`; returns the previous value. One lookup,
    /// no copy: this runs for every write.
    fn put(
        &mut self,
        key: String,
        value: String,
        op: ChangeOp,
        on_change: &mut impl FnMut(&str, Change<'_>),
    ) -> Option<String> {
        match self.map.entry(key) {
            Entry::Occupied(mut slot) => {
                let prev = slot.insert(value);
                let change = Change {
                    op,
                    value: Some(Cow::Borrowed(slot.get())),
                    prev: Some(Cow::Borrowed(&prev)),
                };
                on_change(slot.key(), change);
                Some(prev)
            }
            Entry::Vacant(slot) => {
                let change = Change {
                    op,
                    value: Some(Cow::Borrowed(&value)),
                    prev: None,
                };
                on_change(slot.key(), change);
                slot.insert(value);
                None
            }
        }
    }

    /// Removes `key` if present, announcing it as `op`; returns the removed value.
    fn delete(
        &mut self,
        key: &str,
        op: ChangeOp,
        on_change: &mut impl FnMut(&str, Change<'_>),
    ) -> Option<String> {
        let prev = self.map.remove(key)?;
        let change = Change {
            op,
            value: None,
            prev: Some(Cow::Borrowed(&prev)),
        };
        on_change(key, change);
        Some(prev)
    }

    fn append(
        &mut self,
        key: String,
        value: &str,
        on_change: &mut impl FnMut(&str, Change<'_>),
    ) -> usize {
        match self.map.entry(key) {
            Entry::Occupied(mut slot) => {
                let before = slot.get().len();
                slot.get_mut().push_str(value);
                let (key, all) = (slot.key(), slot.get());
                let change = Change {
                    op: ChangeOp::Append,
                    value: Some(Cow::Borrowed(all)),
                    prev: Some(Cow::Borrowed(&all[..before])),
                };
                on_change(key, change);
                all.len()
            }
            Entry::Vacant(slot) => {
                let change = Change {
                    op: ChangeOp::Append,
                    value: Some(Cow::Borrowed(value)),
                    prev: None,
                };
                on_change(slot.key(), change);
                slot.insert(value.to_string()).len()
            }
        }
    }

    fn txn_op(&mut self, op: TxnOp, on_change: &mut impl FnMut(&str, Change<'_>)) -> TxnResult {
        match op {
            TxnOp::Get { key } => TxnResult::Get(GetResponse {
                value: self.map.get(&key).cloned(),
            }),
            TxnOp::Put { key, value } => TxnResult::Put(PutResponse {
                prev: self.put(key, value, ChangeOp::Put, on_change),
            }),
            TxnOp::Delete { key } => {
                let prev = self.delete(&key, ChangeOp::Delete, on_change);
                TxnResult::Delete(DeleteResponse {
                    deleted: prev.is_some(),
                    prev,
                })
            }
            TxnOp::Append { key, value } => TxnResult::Append(AppendResponse {
                len: self.append(key, &value, on_change),
            }),
        }
    }

    /// Decodes and answers one JSON query.
    pub fn query_bytes(&self, request: &[u8]) -> Result<Vec<u8>, KvError> {
        let query: Query = serde_json::from_slice(request)
            .map_err(|e| KvError::InvalidInput(format!("invalid query: {e}")))?;
        self.query(&query)
    }

    /// Answers one decoded query.
    pub fn query(&self, query: &Query) -> Result<Vec<u8>, KvError> {
        match query {
            Query::Get { key } => {
                check_key(key)?;
                Ok(to_json(&GetResponse {
                    value: self.map.get(key).cloned(),
                }))
            }
            Query::GetMany { keys } => {
                if keys.len() > MAX_TXN_OPS {
                    return Err(KvError::InvalidInput(format!(
                        "get_many reads at most {MAX_TXN_OPS} keys, got {}",
                        keys.len()
                    )));
                }
                for key in keys {
                    check_key(key)?;
                }
                Ok(to_json(&GetManyResponse {
                    values: keys.iter().map(|k| self.map.get(k).cloned()).collect(),
                }))
            }
            Query::Scan {
                prefix,
                start,
                end,
                limit,
            } => {
                let limit = limit.unwrap_or(DEFAULT_SCAN_LIMIT).min(MAX_SCAN_LIMIT);
                let prefix = prefix.as_deref().unwrap_or("");
                // Begin at the later of `start` and `prefix`: every key with the prefix sorts at or after it.
                let from = match start.as_deref() {
                    Some(s) if s > prefix => s,
                    _ => prefix,
                };
                let mut items = Vec::new();
                let mut more = false;
                for (k, v) in self
                    .map
                    .range::<str, _>((Bound::Included(from), Bound::Unbounded))
                {
                    if !k.starts_with(prefix) || end.as_deref().is_some_and(|e| k.as_str() >= e) {
                        break;
                    }
                    if items.len() == limit {
                        more = true;
                        break;
                    }
                    items.push(KeyValue {
                        key: k.clone(),
                        value: v.clone(),
                    });
                }
                Ok(to_json(&ScanResponse { items, more }))
            }
        }
    }

    /// The whole map in a compact, canonical binary form: magic, entry count, then each key and
    /// value length-prefixed, keys ascending.
    pub fn snapshot(&self) -> Vec<u8> {
        let size: usize = self.map.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
        let mut out = Vec::with_capacity(12 + size);
        // Writing into memory cannot fail.
        let _ = self.write_snapshot(&mut out);
        out
    }

    /// [`Kv::snapshot`]'s bytes, written to `out` as they are encoded (nothing held beside the
    /// map).
    pub fn write_snapshot(&self, out: &mut dyn Write) -> std::io::Result<()> {
        out.write_all(SNAPSHOT_MAGIC)?;
        out.write_all(&(self.map.len() as u64).to_le_bytes())?;
        for (k, v) in &self.map {
            out.write_all(&(k.len() as u32).to_le_bytes())?;
            out.write_all(k.as_bytes())?;
            out.write_all(&(v.len() as u32).to_le_bytes())?;
            out.write_all(v.as_bytes())?;
        }
        Ok(())
    }

    /// Rebuilds a map from [`Kv::snapshot`] bytes, refusing anything that is not exactly such bytes.
    pub fn restore(mut bytes: &[u8]) -> Result<Kv, KvError> {
        Kv::read_snapshot(&mut bytes)
    }

    /// [`Kv::restore`] from a stream, read as the map is built.
    pub fn read_snapshot(input: &mut dyn Read) -> Result<Kv, KvError> {
        let bad = |why: &str| KvError::InvalidInput(format!("bad snapshot: {why}"));
        let mut reader = Reader { input };
        let mut magic = [0u8; 4];
        reader
            .exact(&mut magic)
            .filter(|()| &magic == SNAPSHOT_MAGIC)
            .ok_or_else(|| bad("missing GKV1 header"))?;
        let mut count = [0u8; 8];
        reader
            .exact(&mut count)
            .ok_or_else(|| bad("truncated count"))?;
        let mut map = BTreeMap::new();
        for _ in 0..u64::from_le_bytes(count) {
            let key = reader
                .string()
                .ok_or_else(|| bad("truncated or non-UTF-8 key"))?;
            let value = reader
                .string()
                .ok_or_else(|| bad("truncated or non-UTF-8 value"))?;
            if key.is_empty() || map.last_key_value().is_some_and(|(l, _)| *l >= key) {
                return Err(bad("keys not strictly ascending"));
            }
            map.insert(key, value);
        }
        if reader.exact(&mut [0u8; 1]).is_some() {
            return Err(bad("trailing bytes"));
        }
        Ok(Kv { map })
    }
}

struct Reader<'a> {
    input: &'a mut dyn Read,
}

impl Reader<'_> {
    /// Fills `out`, or `None` if the input ends (or fails) first.
    fn exact(&mut self, out: &mut [u8]) -> Option<()> {
        self.input.read_exact(out).ok()
    }

    fn string(&mut self) -> Option<String> {
        let mut len = [0u8; 4];
        self.exact(&mut len)?;
        let len = u32::from_le_bytes(len) as usize;
        // Up to 64 KiB read in place; a longer one in steps, so a corrupt length cannot make it
        // allocate more than the input holds. Either way the map keeps exactly the bytes.
        let bytes = if len <= 1 << 16 {
            let mut bytes = vec![0; len];
            self.exact(&mut bytes)?;
            bytes
        } else {
            let mut bytes = Vec::with_capacity(1 << 16);
            let read = self.input.take(len as u64).read_to_end(&mut bytes).ok()?;
            (read == len).then_some(())?;
            bytes.shrink_to_fit();
            bytes
        };
        String::from_utf8(bytes).ok()
    }
}

#[cfg(test)]
mod tests;
