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
        let command: Command = serde_json::from_slice(command)
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
                Ok(to_json(&PutResponse { prev }))
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
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&(self.map.len() as u64).to_le_bytes());
        for (k, v) in &self.map {
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(v.as_bytes());
        }
        out
    }

    /// Rebuilds a map from [`Kv::snapshot`] bytes, refusing anything that is not exactly such bytes.
    pub fn restore(bytes: &[u8]) -> Result<Kv, KvError> {
        let bad = |why: &str| KvError::InvalidInput(format!("bad snapshot: {why}"));
        let rest = bytes
            .strip_prefix(SNAPSHOT_MAGIC)
            .ok_or_else(|| bad("missing GKV1 header"))?;
        let mut reader = Reader { rest };
        let count = u64::from_le_bytes(
            reader
                .take(8)
                .ok_or_else(|| bad("truncated count"))?
                .try_into()
                .unwrap_or_default(),
        );
        let mut map = BTreeMap::new();
        let mut last: Option<String> = None;
        for _ in 0..count {
            let key = reader
                .string()
                .ok_or_else(|| bad("truncated or non-UTF-8 key"))?;
            let value = reader
                .string()
                .ok_or_else(|| bad("truncated or non-UTF-8 value"))?;
            if key.is_empty() || last.as_ref().is_some_and(|l| *l >= key) {
                return Err(bad("keys not strictly ascending"));
            }
            last = Some(key.clone());
            map.insert(key, value);
        }
        if !reader.rest.is_empty() {
            return Err(bad("trailing bytes"));
        }
        Ok(Kv { map })
    }
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.rest.len() < n {
            return None;
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Some(head)
    }

    fn string(&mut self) -> Option<String> {
        let len = u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize;
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(kv: &mut Kv, json: &str) -> Result<serde_json::Value, KvError> {
        kv.apply_bytes(json.as_bytes())
            .map(|b| serde_json::from_slice(&b).unwrap())
    }

    fn query(kv: &Kv, json: &str) -> Result<serde_json::Value, KvError> {
        kv.query_bytes(json.as_bytes())
            .map(|b| serde_json::from_slice(&b).unwrap())
    }

    #[test]
    fn put_get_delete_cas() {
        let mut kv = Kv::default();
        assert_eq!(
            apply(&mut kv, r#"{"op":"put","key":"a_b","value":"1"}"#).unwrap()["prev"],
            serde_json::Value::Null
        );
        assert_eq!(
            apply(&mut kv, r#"{"op":"put","key":"a_b","value":"2"}"#).unwrap()["prev"],
            "1"
        );
        assert_eq!(
            query(&kv, r#"{"op":"get","key":"a_b"}"#).unwrap()["value"],
            "2"
        );
        let r = apply(
            &mut kv,
            r#"{"op":"cas","key":"a_b","expected":"1","value":"3"}"#,
        )
        .unwrap();
        assert_eq!(
            (r["swapped"].as_bool(), r["current"].as_str()),
            (Some(false), Some("2"))
        );
        let r = apply(
            &mut kv,
            r#"{"op":"cas","key":"a_b","expected":"2","value":"3"}"#,
        )
        .unwrap();
        assert_eq!(
            (r["swapped"].as_bool(), r["current"].as_str()),
            (Some(true), Some("3"))
        );
        let r = apply(&mut kv, r#"{"op":"cas","key":"new","value":"x"}"#).unwrap();
        assert_eq!(r["swapped"], true);
        let r = apply(&mut kv, r#"{"op":"delete","key":"a_b"}"#).unwrap();
        assert_eq!(
            (r["deleted"].as_bool(), r["prev"].as_str()),
            (Some(true), Some("3"))
        );
        assert_eq!(
            query(&kv, r#"{"op":"get","key":"a_b"}"#).unwrap()["value"],
            serde_json::Value::Null
        );
    }

    #[test]
    fn append_txn_and_get_many() {
        let mut kv = Kv::default();
        assert_eq!(
            apply(&mut kv, r#"{"op":"append","key":"l","value":"1 "}"#).unwrap()["len"],
            2
        );
        assert_eq!(
            apply(&mut kv, r#"{"op":"append","key":"l","value":"22 "}"#).unwrap()["len"],
            5
        );
        let r = apply(
            &mut kv,
            r#"{"op":"txn","ops":[{"op":"get","key":"l"},{"op":"append","key":"l","value":"3 "},
                {"op":"get","key":"l"},{"op":"put","key":"p","value":"v"},
                {"op":"delete","key":"p"},{"op":"get","key":"none"}]}"#,
        )
        .unwrap();
        assert_eq!(
            r["results"],
            serde_json::json!([{"value":"1 22 "},{"len":7},{"value":"1 22 3 "},{"prev":null},
                {"deleted":true,"prev":"v"},{"value":null}])
        );
        let r = query(&kv, r#"{"op":"get_many","keys":["l","p"]}"#).unwrap();
        assert_eq!(r["values"], serde_json::json!(["1 22 3 ", null]));

        // One bad key rejects the whole transaction before anything changes.
        let before = kv.clone();
        assert!(matches!(
            kv.apply_bytes(
                br#"{"op":"txn","ops":[{"op":"append","key":"l","value":"x"},{"op":"get","key":""}]}"#
            ),
            Err(KvError::InvalidInput(_))
        ));
        assert_eq!(kv, before);
        let too_many = serde_json::json!({"op":"txn","ops":
            vec![serde_json::json!({"op":"get","key":"a"}); MAX_TXN_OPS + 1]});
        assert!(kv.apply_bytes(too_many.to_string().as_bytes()).is_err());
        assert!(kv
            .query_bytes(br#"{"op":"get_many","keys":["a",""]}"#)
            .is_err());
    }

    #[test]
    fn scan_prefix_range_limit() {
        let mut kv = Kv::default();
        for k in ["a", "b/1", "b/2", "b/3", "c"] {
            kv.apply(Command::Put {
                key: k.into(),
                value: k.to_uppercase(),
            })
            .unwrap();
        }
        let r = query(&kv, r#"{"op":"scan","prefix":"b/","limit":2}"#).unwrap();
        assert_eq!(r["items"].as_array().unwrap().len(), 2);
        assert_eq!(r["more"], true);
        assert_eq!(r["items"][0]["key"], "b/1");
        let r = query(&kv, r#"{"op":"scan","start":"b/2","end":"c"}"#).unwrap();
        let keys: Vec<_> = r["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["key"].as_str().unwrap())
            .collect();
        assert_eq!(keys, ["b/2", "b/3"]);
        assert_eq!(r["more"], false);
    }

    #[test]
    fn bad_commands_are_errors() {
        let mut kv = Kv::default();
        for bad in [
            "not json",
            r#"{"op":"explode","key":"a"}"#,
            r#"{"op":"put","key":"a"}"#,
            r#"{"key":"a","value":"b"}"#,
            r#"{"op":"put","key":"","value":"b"}"#,
            r#"{"op":"put","key":"a","value":"b","extra":1}"#,
        ] {
            assert!(
                matches!(
                    kv.apply_bytes(bad.as_bytes()),
                    Err(KvError::InvalidInput(_))
                ),
                "{bad}"
            );
        }
        assert!(kv.is_empty());
    }

    #[test]
    fn snapshot_round_trip_and_validation() {
        let mut kv = Kv::default();
        for (k, v) in [("x_y", ""), ("α/β γ", "ü"), ("z", "v")] {
            kv.apply(Command::Put {
                key: k.into(),
                value: v.into(),
            })
            .unwrap();
        }
        let snap = kv.snapshot();
        let back = Kv::restore(&snap).unwrap();
        assert_eq!(back, kv);
        assert_eq!(back.snapshot(), snap);
        assert!(Kv::restore(&snap[..snap.len() - 1]).is_err());
        assert!(Kv::restore(b"nope").is_err());
        let mut extra = snap.clone();
        extra.push(0);
        assert!(Kv::restore(&extra).is_err());
    }

    fn changes(kv: &mut Kv, json: &str) -> Vec<String> {
        let mut seen = Vec::new();
        let command = serde_json::from_str(json).unwrap();
        kv.apply_observed(command, &mut |key, change| {
            seen.push(format!(
                "{key} {}",
                String::from_utf8(change.encode()).unwrap()
            ));
        })
        .unwrap();
        seen
    }

    #[test]
    fn every_write_announces_the_value_after_and_before() {
        let mut kv = Kv::default();
        let c = |kv: &mut Kv, json| changes(kv, json);
        assert_eq!(
            c(&mut kv, r#"{"op":"put","key":"a","value":"1"}"#),
            [r#"a {"op":"put","value":"1","prev":null}"#]
        );
        assert_eq!(
            c(&mut kv, r#"{"op":"append","key":"a","value":"2"}"#),
            [r#"a {"op":"append","value":"12","prev":"1"}"#]
        );
        assert_eq!(
            c(&mut kv, r#"{"op":"append","key":"b","value":"x"}"#),
            [r#"b {"op":"append","value":"x","prev":null}"#]
        );
        // No change, no announcement.
        assert!(c(
            &mut kv,
            r#"{"op":"cas","key":"a","expected":"no","value":"3"}"#
        )
        .is_empty());
        assert!(c(&mut kv, r#"{"op":"delete","key":"zz"}"#).is_empty());
        assert_eq!(
            c(
                &mut kv,
                r#"{"op":"cas","key":"a","expected":"12","value":null}"#
            ),
            [r#"a {"op":"cas","value":null,"prev":"12"}"#]
        );
        assert_eq!(
            c(
                &mut kv,
                r#"{"op":"txn","ops":[{"op":"get","key":"b"},{"op":"put","key":"c","value":"3"},
                    {"op":"delete","key":"b"}]}"#
            ),
            [
                r#"c {"op":"put","value":"3","prev":null}"#,
                r#"b {"op":"delete","value":null,"prev":"x"}"#
            ]
        );
        // A refused command announces nothing.
        let mut seen = 0;
        let bad = serde_json::from_str(r#"{"op":"txn","ops":[{"op":"put","key":"d","value":"1"},{"op":"put","key":"","value":"1"}]}"#).unwrap();
        assert!(kv.apply_observed(bad, &mut |_, _| seen += 1).is_err());
        assert_eq!(seen, 0);
        let decoded: Change<'static> =
            serde_json::from_slice(br#"{"op":"put","value":"a\"b","prev":null}"#).unwrap();
        assert_eq!(decoded.value.as_deref(), Some("a\"b"));
    }
}
