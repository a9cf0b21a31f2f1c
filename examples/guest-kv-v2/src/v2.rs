//! The v2 state: v1's map plus a revision counter, its commands, and both snapshot layouts.

use guest_kv::schema::{Change, ChangeOp};
use guest_kv::{Kv, KvError};
use serde::Deserialize;
use serde_json::json;

const MAGIC_V2: &[u8; 4] = b"GKV2";
const MAGIC_V1: &[u8; 4] = b"GKV1";

/// v2's state.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KvV2 {
    kv: Kv,
    /// Commands that changed the state since the v2 state began (a migration starts it at 0).
    revision: u64,
}

/// The commands v2 adds; anything else is a v1 command.
#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum NewCommand {
    Incr {
        key: String,
        #[serde(default = "one")]
        by: i64,
    },
}

fn one() -> i64 {
    1
}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum NewQuery {
    Revision,
}

impl KvV2 {
    /// The revision (see the crate docs).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Applies a v2 or v1 command.
    pub fn apply(&mut self, command: &[u8]) -> Result<Vec<u8>, KvError> {
        self.apply_observed(command, &mut |_, _| {})
    }

    /// Applies a v2 or v1 command, telling `on_change` each key it changes: v1's commands as
    /// v1 does, `incr` as an `incr` change.
    pub fn apply_observed(
        &mut self,
        command: &[u8],
        on_change: &mut impl FnMut(&str, Change<'_>),
    ) -> Result<Vec<u8>, KvError> {
        let response = match serde_json::from_slice::<NewCommand>(command) {
            Ok(NewCommand::Incr { key, by }) => {
                let current = match self.kv.get(&key) {
                    None => 0,
                    Some(v) => v.parse::<i64>().map_err(|_| {
                        KvError::InvalidInput(format!("value of {key:?} is not an integer"))
                    })?,
                };
                let next = current
                    .checked_add(by)
                    .ok_or_else(|| KvError::Rejected(format!("{current} + {by} overflows")))?;
                let value = next.to_string();
                let prev = self.kv.set(&key, value.clone())?;
                let response = json!({ "value": value }).to_string().into_bytes();
                on_change(
                    &key,
                    Change {
                        op: ChangeOp::Incr,
                        value: Some(value.into()),
                        prev: prev.map(Into::into),
                    },
                );
                response
            }
            Err(_) => self.kv.apply_bytes_observed(command, on_change)?,
        };
        self.revision += 1;
        Ok(response)
    }

    /// Answers a v2 or v1 query.
    pub fn query(&self, request: &[u8]) -> Result<Vec<u8>, KvError> {
        match serde_json::from_slice::<NewQuery>(request) {
            Ok(NewQuery::Revision) => {
                Ok(json!({ "revision": self.revision, "keys": self.kv.len() })
                    .to_string()
                    .into_bytes())
            }
            Err(_) => self.kv.query_bytes(request),
        }
    }

    /// `GKV2`, the revision, then the map in v1's layout.
    pub fn snapshot(&self) -> Vec<u8> {
        let map = self.kv.snapshot();
        let mut out = Vec::with_capacity(12 + map.len());
        out.extend_from_slice(MAGIC_V2);
        out.extend_from_slice(&self.revision.to_le_bytes());
        out.extend_from_slice(&map);
        out
    }

    /// Reads a v2 snapshot, or migrates a v1 one (revision 0).
    pub fn restore(bytes: &[u8]) -> Result<KvV2, KvError> {
        if let Some(rest) = bytes.strip_prefix(MAGIC_V2) {
            let (rev, map) = rest.split_at_checked(8).ok_or_else(|| {
                KvError::InvalidInput("bad snapshot: truncated GKV2 revision".into())
            })?;
            let revision = u64::from_le_bytes(rev.try_into().unwrap_or_default());
            return Ok(KvV2 {
                kv: Kv::restore(map)?,
                revision,
            });
        }
        if bytes.starts_with(MAGIC_V1) {
            return Ok(KvV2 {
                kv: Kv::restore(bytes)?,
                revision: 0,
            });
        }
        Err(KvError::InvalidInput(
            "bad snapshot: neither GKV2 nor GKV1".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(s: &mut KvV2, json: &str) -> serde_json::Value {
        serde_json::from_slice(&s.apply(json.as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn migrates_v1_state_and_adds_incr() {
        let mut v1 = Kv::default();
        v1.apply_bytes(br#"{"op":"put","key":"n","value":"41"}"#)
            .unwrap();
        v1.apply_bytes(br#"{"op":"put","key":"s","value":"x"}"#)
            .unwrap();
        let mut v2 = KvV2::restore(&v1.snapshot()).unwrap();
        assert_eq!(v2.revision(), 0);
        assert_eq!(apply(&mut v2, r#"{"op":"incr","key":"n"}"#)["value"], "42");
        assert_eq!(
            apply(&mut v2, r#"{"op":"incr","key":"new","by":-3}"#)["value"],
            "-3"
        );
        assert!(v2.apply(br#"{"op":"incr","key":"s"}"#).is_err());
        // v1 commands still work and count.
        apply(&mut v2, r#"{"op":"append","key":"s","value":"y"}"#);
        let q: serde_json::Value =
            serde_json::from_slice(&v2.query(br#"{"op":"revision"}"#).unwrap()).unwrap();
        assert_eq!(
            (q["revision"].as_u64(), q["keys"].as_u64()),
            (Some(3), Some(3))
        );
        let got: serde_json::Value =
            serde_json::from_slice(&v2.query(br#"{"op":"get","key":"s"}"#).unwrap()).unwrap();
        assert_eq!(got["value"], "xy");
        // Its own layout round-trips; garbage is refused.
        assert_eq!(KvV2::restore(&v2.snapshot()).unwrap(), v2);
        assert!(KvV2::restore(b"GKV2").is_err());
        assert!(KvV2::restore(b"nope").is_err());
    }

    #[test]
    fn announces_incr_and_v1_changes() {
        let mut v2 = KvV2::default();
        let mut seen = Vec::new();
        let mut run = |v2: &mut KvV2, json: &str| {
            v2.apply_observed(json.as_bytes(), &mut |key, c| {
                seen.push((
                    key.to_string(),
                    c.op,
                    c.value.map(|v| v.into_owned()),
                    c.prev.map(|v| v.into_owned()),
                ))
            })
            .unwrap();
        };
        run(&mut v2, r#"{"op":"incr","key":"n","by":2}"#);
        run(&mut v2, r#"{"op":"incr","key":"n"}"#);
        run(&mut v2, r#"{"op":"append","key":"s","value":"x"}"#);
        let some = |s: &str| Some(s.to_string());
        assert_eq!(
            seen,
            [
                ("n".into(), ChangeOp::Incr, some("2"), None),
                ("n".into(), ChangeOp::Incr, some("3"), some("2")),
                ("s".into(), ChangeOp::Append, some("x"), None),
            ]
        );
    }
}
