//! Tests of guest-kv's map: commands, queries, announced changes and snapshots.

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
