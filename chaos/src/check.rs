//! The verdicts on a run: the history checked by adya for strict serializability, every
//! acknowledged append found in the final state, and every replica at the same state hash.

use crate::cluster::Cluster;
use crate::history::{Event, Mop, Outcome};
use adya::{check, History, Opts, Valid, Workload};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// adya's verdict.
#[derive(Debug)]
pub struct Isolation {
    pub valid: bool,
    pub verdict: String,
    pub anomaly_types: Vec<String>,
    /// The anomalies, as adya explains them (JSON).
    pub details: String,
}

/// Checks the history (JSON lines) against strict serializability.
pub fn isolation(jsonl: &str) -> anyhow::Result<Isolation> {
    let history = History::from_json(jsonl).map_err(|e| anyhow::anyhow!("history: {e}"))?;
    let opts = Opts {
        models: vec!["strict-serializable".into()],
        timeout: Duration::from_secs(30),
        ..Opts::default()
    };
    let report = check(&history, Workload::ListAppend, &opts);
    let verdict = match report.valid {
        Valid::True => "valid",
        Valid::False => "INVALID",
        Valid::Unknown => "unknown",
    };
    Ok(Isolation {
        valid: matches!(report.valid, Valid::True),
        verdict: verdict.into(),
        anomaly_types: report.anomaly_types.clone(),
        details: format!("{:#?}", report.anomalies),
    })
}

/// Acknowledged appends missing from the final read of their key: `(key, element)`.
pub fn lost_appends(events: &[Event], final_read: &BTreeMap<u64, Vec<u64>>) -> Vec<(u64, u64)> {
    let mut lost = Vec::new();
    for e in events {
        if e.outcome() != Some(Outcome::Ok) {
            continue;
        }
        for m in &e.txn {
            if let Mop::Append { key, value } = m {
                let present = final_read.get(key).is_some_and(|l| l.contains(value));
                if !present {
                    lost.push((*key, *value));
                }
            }
        }
    }
    lost
}

/// Elements appended by acknowledged transactions.
pub fn acknowledged_appends(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| e.outcome() == Some(Outcome::Ok))
        .flat_map(|e| &e.txn)
        .filter(|m| matches!(m, Mop::Append { .. }))
        .count()
}

/// Appends whose transaction ended with an unknown outcome: `(key, element)`.
pub fn unknown_appends(events: &[Event]) -> BTreeSet<(u64, u64)> {
    events
        .iter()
        .filter(|e| e.outcome() == Some(Outcome::Info))
        .flat_map(|e| &e.txn)
        .filter_map(|m| match m {
            Mop::Append { key, value } => Some((*key, *value)),
            Mop::Read { .. } => None,
        })
        .collect()
}

/// Elements that appear more than once in one final list (an append applied twice).
pub fn duplicated_elements(final_read: &BTreeMap<u64, Vec<u64>>) -> Vec<(u64, u64)> {
    let mut dups = Vec::new();
    for (key, list) in final_read {
        let mut seen = BTreeSet::new();
        for v in list {
            if !seen.insert(v) {
                dups.push((*key, *v));
            }
        }
    }
    dups
}

/// What every replica agreed on at the end.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Agreement {
    pub applied_index: u64,
    pub state_hash: String,
    pub module_hash: String,
}

/// Waits until every node reports the same applied index, state hash and guest module; returns
/// them, or the last statuses seen when they did not agree within `wait`.
pub async fn replicas_agree(cluster: &Cluster, wait: Duration) -> Result<Agreement, Vec<String>> {
    let deadline = Instant::now() + wait;
    loop {
        let mut seen = Vec::new();
        let mut hashes = BTreeSet::new();
        let mut answered = 0;
        for i in 0..cluster.len() {
            match cluster.status(i, true).await {
                Ok(s) => {
                    answered += 1;
                    let h = s.state_hash.unwrap_or_default();
                    seen.push(format!(
                        "{}: {} applied {} hash {} module {}",
                        s.id, s.state, h.applied_index, h.sha256, s.fsm_module_hash
                    ));
                    hashes.insert(Agreement {
                        applied_index: h.applied_index,
                        state_hash: h.sha256,
                        module_hash: s.fsm_module_hash,
                    });
                }
                Err(e) => seen.push(e.to_string()),
            }
        }
        if answered == cluster.len() && hashes.len() == 1 {
            if let Some(agreed) = hashes.into_iter().next() {
                return Ok(agreed);
            }
        }
        if Instant::now() >= deadline {
            return Err(seen);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{to_jsonl, Recorder};

    fn append(key: u64, value: u64) -> Mop {
        Mop::Append { key, value }
    }

    fn read(key: u64, value: &[u64]) -> Mop {
        Mop::Read {
            key,
            value: Some(value.to_vec()),
        }
    }

    #[test]
    fn a_clean_history_is_valid() {
        let r = Recorder::default();
        r.invoke(0, &[append(1, 1)]);
        r.complete(0, Outcome::Ok, &[append(1, 1)], None);
        r.invoke(1, &[read(1, &[]), append(1, 2)]);
        r.complete(1, Outcome::Ok, &[read(1, &[1]), append(1, 2)], None);
        r.invoke(0, &[read(1, &[])]);
        r.complete(0, Outcome::Ok, &[read(1, &[1, 2])], None);
        let v = isolation(&to_jsonl(&r.events())).unwrap();
        assert!(v.valid, "{v:?}");
    }

    #[test]
    fn a_stale_read_after_an_acknowledged_append_is_caught() {
        // Process 0's append completes; afterwards process 1 reads the key and misses it: fine
        // for serializability, a real-time violation for strict serializability.
        let r = Recorder::default();
        r.invoke(0, &[append(1, 1)]);
        r.complete(0, Outcome::Ok, &[append(1, 1)], None);
        r.invoke(0, &[append(1, 2)]);
        r.complete(0, Outcome::Ok, &[append(1, 2)], None);
        r.invoke(1, &[read(1, &[])]);
        r.complete(1, Outcome::Ok, &[read(1, &[1])], None);
        let v = isolation(&to_jsonl(&r.events())).unwrap();
        assert!(!v.valid, "{v:?}");
        assert!(!v.anomaly_types.is_empty());
    }

    #[test]
    fn lost_and_duplicated_appends_are_found() {
        let r = Recorder::default();
        r.invoke(0, &[append(1, 1), append(2, 5)]);
        r.complete(0, Outcome::Ok, &[append(1, 1), append(2, 5)], None);
        r.invoke(1, &[append(1, 7)]);
        r.complete(1, Outcome::Info, &[append(1, 7)], None);
        let events = r.events();
        assert_eq!(acknowledged_appends(&events), 2);
        let final_read = BTreeMap::from([(1, vec![1, 1]), (2, vec![])]);
        // 5 was acknowledged and is gone; 7 was unknown, so its absence is fine.
        assert_eq!(lost_appends(&events, &final_read), [(2, 5)]);
        assert_eq!(duplicated_elements(&final_read), [(1, 1)]);
    }
}
