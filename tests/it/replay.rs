//! Property: whatever SingaPay does between passes, each pass emits exactly the events the
//! change upstream calls for (types in table order, `previous_attributes`, `usage_delta`), the
//! events replay exactly to the mirror, and the mirror equals SingaPay
//! (fold(events) = ledger = sandbox).

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use reqwest::Method;
use serde_json::{Map, Value, json};
use singapay_sync::singapay::{ClientConfig, SingapayClient};
use singapay_sync::time::SystemClock;

use crate::harness::*;

const LINKS: i64 = 30;

#[derive(Debug, Clone)]
enum Op {
    Pay(i64),
    Close(i64),
    Reopen(i64),
    Retitle(i64, u8),
    Reprice(i64, u32),
    Delete(i64),
    Add(u32),
    Advance(u16),
    Sync,
}

fn op() -> impl Strategy<Value = Op> {
    let id = 1..=LINKS + 3;
    prop_oneof![
        4 => id.clone().prop_map(Op::Pay),
        1 => id.clone().prop_map(Op::Close),
        1 => id.clone().prop_map(Op::Reopen),
        1 => (id.clone(), any::<u8>()).prop_map(|(i, n)| Op::Retitle(i, n)),
        1 => (id.clone(), 1u32..100).prop_map(|(i, n)| Op::Reprice(i, n)),
        1 => id.prop_map(Op::Delete),
        1 => (1u32..50).prop_map(Op::Add),
        1 => (1u16..48).prop_map(Op::Advance),
        3 => Just(Op::Sync),
    ]
}

/// The comparable part of a link: everything but SingaPay's bookkeeping fields that by design
/// never make an event on their own (`updated_at`, `account`).
fn comparable(mut v: Value) -> Value {
    if let Value::Object(m) = &mut v {
        m.remove("updated_at");
        m.remove("account");
    }
    v
}

/// Every link the sandbox holds, as the daemon mirrors it (decoded by its own SingaPay client,
/// then serialised like an event's `data.object`).
async fn sandbox_state(client: &SingapayClient) -> BTreeMap<i64, Value> {
    let mut out = BTreeMap::new();
    for page in 1.. {
        let p = client.list_page(&account(), page, 100).await.unwrap();
        if p.links.is_empty() {
            break;
        }
        for (l, _) in p.links {
            out.insert(l.id.0, serde_json::to_value(&l).unwrap());
        }
    }
    out
}

/// The live links of the mirror, comparable.
async fn mirror(t: &TestApp) -> BTreeMap<i64, Value> {
    let (rows, _) = t
        .app
        .ledger
        .list_links(&account(), 10_000, 0)
        .await
        .unwrap();
    rows.into_iter()
        .filter(|r| r.deleted_at.is_none())
        .map(|r| {
            (
                r.link.id.0,
                comparable(serde_json::to_value(&r.link).unwrap()),
            )
        })
        .collect()
}

/// One expected event: type, `previous_attributes`, `usage_delta`.
type Expected = (String, Option<Value>, Option<i64>);

fn field<'a>(link: &'a Value, k: &str) -> &'a Value {
    link.get(k).unwrap_or(&Value::Null)
}

fn exhausted(link: &Value) -> bool {
    let max = field(link, "max_usage").as_i64().unwrap_or(0);
    max > 0 && field(link, "current_usage").as_i64().unwrap_or(0) >= max
}

fn pick(link: &Value, keys: &[&str]) -> Value {
    Value::Object(
        keys.iter()
            .map(|k| (k.to_string(), field(link, k).clone()))
            .collect(),
    )
}

/// The events of one link between two reads of SingaPay, straight from the contract's table:
/// created / paid / exhausted / status_changed / updated / deleted, in that order.
fn expected_events(before: Option<&Value>, after: Option<&Value>) -> Vec<Expected> {
    const STATUS: [&str; 3] = ["status", "status_computed", "is_expired"];
    const PAID: [&str; 2] = ["current_usage", "payment_date"];
    let usage = |l: &Value| field(l, "current_usage").as_i64().unwrap_or(0);
    let mut out = Vec::new();
    match (before, after) {
        (None, None) => {}
        (Some(_), None) => out.push(("payment_link.deleted".into(), None, None)),
        (None, Some(new)) => {
            out.push(("payment_link.created".into(), None, None));
            if usage(new) > 0 || !field(new, "payment_date").is_null() {
                let prev = json!({"current_usage": 0, "payment_date": null});
                out.push(("payment_link.paid".into(), Some(prev), Some(usage(new))));
            }
            if exhausted(new) {
                out.push(("payment_link.exhausted".into(), None, None));
            }
        }
        (Some(old), Some(new)) => {
            let date = field(new, "payment_date");
            let paid =
                usage(new) > usage(old) || (!date.is_null() && date != field(old, "payment_date"));
            if paid {
                let delta = (usage(new) - usage(old)).max(0);
                out.push((
                    "payment_link.paid".into(),
                    Some(pick(old, &PAID)),
                    Some(delta),
                ));
            }
            if exhausted(new) && !exhausted(old) {
                out.push(("payment_link.exhausted".into(), None, None));
            }
            if STATUS.iter().any(|k| field(old, k) != field(new, k)) {
                out.push((
                    "payment_link.status_changed".into(),
                    Some(pick(old, &STATUS)),
                    None,
                ));
            }
            let (o, n) = (old.as_object().unwrap(), new.as_object().unwrap());
            let mut changed = Map::new();
            for k in o.keys().chain(n.keys()) {
                let ignored = ["id", "updated_at", "account"].contains(&k.as_str())
                    || STATUS.contains(&k.as_str())
                    || (paid && PAID.contains(&k.as_str()));
                if !ignored && field(old, k) != field(new, k) {
                    changed.insert(k.clone(), field(old, k).clone());
                }
            }
            if !changed.is_empty() {
                out.push((
                    "payment_link.updated".into(),
                    Some(Value::Object(changed)),
                    None,
                ));
            }
        }
    }
    out
}

async fn run_case(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let t = TestApp::start(
        TestSandbox::start_with(LINKS as usize).await,
        Arc::new(SystemClock),
        |_| {},
    )
    .await;
    let sb = &t.sandbox;
    let client = SingapayClient::new(ClientConfig::from(&t.app.config.singapay)).unwrap();
    t.sync_ok().await;
    let mut upstream = sandbox_state(&client).await;
    // The mirror after the baseline is the fold's starting point.
    let mut fold = mirror(&t).await;
    let mut last_seq: BTreeMap<i64, i64> = BTreeMap::new();
    for op in ops.into_iter().chain([Op::Sync]) {
        match op {
            Op::Pay(i) => drop(
                sb.try_ctl(Method::POST, sb.link_url(i, "/pay"), json!({}))
                    .await,
            ),
            Op::Close(i) => drop(
                sb.try_ctl(Method::POST, sb.link_url(i, "/close"), json!({}))
                    .await,
            ),
            Op::Reopen(i) => drop(
                sb.try_ctl(Method::POST, sb.link_url(i, "/reopen"), json!({}))
                    .await,
            ),
            Op::Retitle(i, n) => drop(
                sb.try_ctl(
                    Method::PATCH,
                    sb.link_url(i, ""),
                    json!({"title": format!("T{n}")}),
                )
                .await,
            ),
            Op::Reprice(i, n) => drop(
                sb.try_ctl(
                    Method::PATCH,
                    sb.link_url(i, ""),
                    json!({"total_amount": n * 10_000}),
                )
                .await,
            ),
            Op::Delete(i) => drop(
                sb.try_ctl(Method::DELETE, sb.link_url(i, ""), Value::Null)
                    .await,
            ),
            Op::Add(n) => {
                sb.add(json!({"total_amount": n * 10_000, "max_usage": 2}))
                    .await;
            }
            Op::Advance(h) => sb.advance(i64::from(h) * 3600).await,
            Op::Sync => {
                let r = t.app.sync_all(None).await;
                prop_assert!(r[0].1.is_ok(), "{:?}", r[0].1);
                let run = r[0].1.as_ref().unwrap().run_id;
                let now = sandbox_state(&client).await;
                // What this pass emitted, per link, against what the change calls for.
                let mut got: BTreeMap<i64, Vec<Expected>> = BTreeMap::new();
                for e in t
                    .events()
                    .await
                    .into_iter()
                    .filter(|e| e.run_id == Some(run))
                {
                    let ev = e.event;
                    let seq = last_seq.entry(e.link_id.0).or_insert(0);
                    prop_assert_eq!(ev.sequence, *seq + 1, "sequences rise by one per link");
                    *seq = ev.sequence;
                    let obj = comparable(ev.data.object.clone());
                    if ev.event_type == singapay_sync::types::EventType::Deleted {
                        fold.remove(&e.link_id.0);
                    } else {
                        fold.insert(e.link_id.0, obj);
                    }
                    got.entry(e.link_id.0).or_default().push((
                        ev.event_type.to_string(),
                        ev.data.previous_attributes.map(Value::Object),
                        ev.data.usage_delta,
                    ));
                }
                let mut want: BTreeMap<i64, Vec<Expected>> = BTreeMap::new();
                for id in upstream.keys().chain(now.keys()) {
                    let e = expected_events(upstream.get(id), now.get(id));
                    if !e.is_empty() {
                        want.insert(*id, e);
                    }
                }
                prop_assert_eq!(&got, &want, "the pass's events are exactly the change's");
                upstream = now;
            }
        }
    }
    let (rows, _) = t
        .app
        .ledger
        .list_links(&account(), 10_000, 0)
        .await
        .unwrap();
    for r in &rows {
        prop_assert_eq!(r.sequence, last_seq.get(&r.link.id.0).copied().unwrap_or(0));
    }
    let mirror = mirror(&t).await;
    let upstream: BTreeMap<i64, Value> = upstream
        .into_iter()
        .map(|(k, v)| (k, comparable(v)))
        .collect();
    prop_assert_eq!(&fold, &mirror, "fold of events = mirror");
    prop_assert_eq!(&mirror, &upstream, "mirror = SingaPay");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        // A failing case is kept in tests/it/replay.proptest-regressions and replayed first.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn each_pass_emits_exactly_the_events_of_the_change_and_they_replay_to_the_mirror(
        ops in prop::collection::vec(op(), 1..14)
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(run_case(ops))?;
    }
}

#[test]
fn the_oracle_calls_for_the_contract_events() {
    let link = |usage: i64, status: &str, title: &str| {
        json!({"id": 1, "current_usage": usage, "max_usage": 2, "payment_date": null,
               "status": status, "status_computed": status, "is_expired": false, "title": title,
               "updated_at": "x"})
    };
    let types = |e: Vec<Expected>| e.into_iter().map(|(t, ..)| t).collect::<Vec<_>>();
    assert_eq!(
        types(expected_events(None, Some(&link(2, "open", "a")))),
        [
            "payment_link.created",
            "payment_link.paid",
            "payment_link.exhausted"
        ]
    );
    let mut paid = link(2, "closed", "b");
    paid["payment_date"] = json!("2026-01-01T00:00:00Z");
    let e = expected_events(Some(&link(1, "open", "a")), Some(&paid));
    assert_eq!(
        types(e.clone()),
        [
            "payment_link.paid",
            "payment_link.exhausted",
            "payment_link.status_changed",
            "payment_link.updated"
        ]
    );
    assert_eq!(e[0].2, Some(1));
    assert_eq!(e[3].1, Some(json!({"title": "a"})));
    assert!(expected_events(Some(&link(1, "open", "a")), Some(&link(1, "open", "a"))).is_empty());
}
