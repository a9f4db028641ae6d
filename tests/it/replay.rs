//! Property: whatever SingaPay does between passes, each pass emits exactly the events the
//! change upstream calls for (types in table order, `previous_attributes`, `usage_delta`), the
//! events replay exactly to the mirror, and the mirror equals SingaPay
//! (fold(events) = ledger = sandbox), for links and for payments (Payment Link History rows:
//! customers pick methods, pay, attempts settle, fail or expire; DESIGN §13).

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use reqwest::Method;
use serde_json::{Map, Value, json};
use singapay_sync::event::PaymentObject;
use singapay_sync::singapay::{ClientConfig, SingapayClient};
use singapay_sync::time::SystemClock;
use singapay_sync::types::EventType;

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
    /// A customer picks a method (the index into `METHODS`) on a link.
    Pick(i64, u8),
    /// The history row at this index (of the rows SingaPay lists) takes a step.
    Step(u8, &'static str),
    Sync,
}

const METHODS: [&str; 4] = ["VA_BRI", "QRIS", "ALFAMART", "EWALLET_OVO"];

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
        2 => (1..=LINKS + 3, any::<u8>()).prop_map(|(i, m)| Op::Pick(i, m)),
        3 => (any::<u8>(), prop::sample::select(vec!["pay", "settle", "fail", "expire"]))
            .prop_map(|(k, s)| Op::Step(k, s)),
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

/// Every history row the sandbox holds, decoded by the daemon's client and serialised like a
/// payment event's object (without its `payment_link`).
async fn sandbox_history(client: &SingapayClient) -> BTreeMap<i64, Value> {
    let mut out = BTreeMap::new();
    for page in 1.. {
        let p = client
            .history_page(&account(), page, 100, &[])
            .await
            .unwrap();
        if p.rows.is_empty() {
            break;
        }
        for (r, _) in p.rows {
            out.insert(r.id.0, serde_json::to_value(&r).unwrap());
        }
    }
    out
}

/// The mirrored payments.
async fn mirror_payments(t: &TestApp) -> BTreeMap<i64, Value> {
    t.app
        .ledger
        .list_payments(&account())
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.payment.id.0, serde_json::to_value(&p.payment).unwrap()))
        .collect()
}

/// Where an attempt stands by the contract and reference §4 (statuses are open strings and
/// SingaPay computes `status_computed`/`is_expired` at read time): paid, failed, expired or
/// pending.
fn outcome(row: &Value) -> &'static str {
    let s = |k: &str| field(row, k).as_str().unwrap_or_default().to_string();
    let settled = field(row, "has_settle") == &json!(true) || !field(row, "settle_at").is_null();
    if s("status") == "paid" || s("status") == "settled" || settled {
        "paid"
    } else if s("status") == "failed" {
        "failed"
    } else if s("status") == "expired"
        || s("status_computed") == "expired"
        || field(row, "is_expired") == &json!(true)
    {
        "expired"
    } else {
        "pending"
    }
}

/// The events of one history row between two reads, from DESIGN §13's table.
fn expected_payment_events(before: Option<&Value>, after: Option<&Value>) -> Vec<Expected> {
    let Some(new) = after else {
        return Vec::new(); // a row SingaPay no longer lists is not an event
    };
    let settled =
        |r: &Value| field(r, "has_settle") == &json!(true) || !field(r, "settle_at").is_null();
    let status = json!({"status": before.map_or(Value::Null, |o| field(o, "status").clone())});
    let mut out = Vec::new();
    if before.is_none() {
        out.push(("payment.created".into(), None, None));
    }
    let was = before.map_or("pending", outcome);
    let now = outcome(new);
    if now == "paid" && was != "paid" {
        out.push(("payment.paid".into(), Some(status.clone()), None));
    }
    if settled(new) && !before.is_some_and(settled) {
        let prev = before.map_or(json!({"has_settle": false, "settle_at": null}), |o| {
            pick(o, &["has_settle", "settle_at"])
        });
        out.push(("payment.settled".into(), Some(prev), None));
    }
    if now != was && (now == "failed" || now == "expired") {
        out.push((format!("payment.{now}"), Some(status), None));
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
    let mut history = sandbox_history(&client).await;
    let mut fold_payments = mirror_payments(&t).await;
    prop_assert_eq!(
        &fold_payments,
        &history,
        "the baseline mirrors the history silently"
    );
    // Sequences per link (`Err`) and per payment (`Ok`).
    let mut last_seq: BTreeMap<Result<i64, i64>, i64> = BTreeMap::new();
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
            Op::Pick(i, m) => drop(
                sb.try_ctl(
                    Method::POST,
                    sb.link_url(i, "/attempts"),
                    json!({"method": METHODS[m as usize % METHODS.len()]}),
                )
                .await,
            ),
            Op::Step(k, step) => {
                let ids: Vec<i64> = sandbox_history(&client).await.into_keys().collect();
                let hid = ids[k as usize % ids.len()];
                drop(
                    sb.try_ctl(Method::POST, sb.history_url(hid, step), json!({}))
                        .await,
                );
            }
            Op::Sync => {
                let r = t.app.sync_all(None).await;
                prop_assert!(r[0].1.is_ok(), "{:?}", r[0].1);
                let run = r[0].1.as_ref().unwrap().run_id;
                let now = sandbox_state(&client).await;
                let history_now = sandbox_history(&client).await;
                // What this pass emitted, per link and per payment, against what the change
                // calls for.
                let mut got: BTreeMap<i64, Vec<Expected>> = BTreeMap::new();
                let mut got_payments: BTreeMap<i64, Vec<Expected>> = BTreeMap::new();
                // Payments paid in this pass, and those a `payment_link.paid` carries, by link.
                let mut paid_now: BTreeMap<String, Vec<i64>> = BTreeMap::new();
                let mut carried: BTreeMap<String, Vec<i64>> = BTreeMap::new();
                for e in t
                    .events()
                    .await
                    .into_iter()
                    .filter(|e| e.run_id == Some(run))
                {
                    let ev = e.event;
                    let key = e.payment_id.map_or(Err(e.link_id.0), |p| Ok(p.0));
                    let seq = last_seq.entry(key).or_insert(0);
                    prop_assert_eq!(
                        ev.sequence,
                        *seq + 1,
                        "sequences rise by one per link and per payment"
                    );
                    *seq = ev.sequence;
                    if let Some(pid) = e.payment_id {
                        let p = PaymentObject::from_value(&ev.data.object).unwrap();
                        prop_assert_eq!(p.payment.id, pid);
                        prop_assert_eq!(&p.payment_link.reff_no, &p.payment.payment_link_reff_no);
                        prop_assert_eq!(p.payment_link.id, e.link_id);
                        if ev.event_type == EventType::PaymentPaid {
                            paid_now
                                .entry(p.payment.payment_link_reff_no.clone())
                                .or_default()
                                .push(pid.0);
                        }
                        fold_payments.insert(pid.0, serde_json::to_value(&p.payment).unwrap());
                        got_payments.entry(pid.0).or_default().push((
                            ev.event_type.to_string(),
                            ev.data.previous_attributes.map(Value::Object),
                            ev.data.usage_delta,
                        ));
                        continue;
                    }
                    if ev.event_type == EventType::Paid {
                        let reff = ev.data.object["reff_no"].as_str().unwrap().to_string();
                        let ids = ev
                            .payments()
                            .unwrap()
                            .iter()
                            .map(|p| p.payment.id.0)
                            .collect();
                        carried.insert(reff, ids);
                    }
                    let obj = comparable(ev.data.object.clone());
                    if ev.event_type == EventType::Deleted {
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
                let mut want_payments: BTreeMap<i64, Vec<Expected>> = BTreeMap::new();
                for id in history.keys().chain(history_now.keys()) {
                    let e = expected_payment_events(history.get(id), history_now.get(id));
                    if !e.is_empty() {
                        want_payments.insert(*id, e);
                    }
                }
                prop_assert_eq!(
                    &got_payments,
                    &want_payments,
                    "the pass's payment events are exactly the history's change"
                );
                // Every payment paid in this pass rides on its link's `payment_link.paid`, and
                // nothing else does (a payment is a usage rise: one without the other would be
                // a payment the ERP cannot place).
                prop_assert_eq!(&carried, &paid_now, "data.payments = the payments paid");
                upstream = now;
                history = history_now;
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
        prop_assert_eq!(
            r.sequence,
            last_seq.get(&Err(r.link.id.0)).copied().unwrap_or(0)
        );
    }
    let mirror = mirror(&t).await;
    let upstream: BTreeMap<i64, Value> = upstream
        .into_iter()
        .map(|(k, v)| (k, comparable(v)))
        .collect();
    prop_assert_eq!(&fold, &mirror, "fold of events = mirror");
    prop_assert_eq!(&mirror, &upstream, "mirror = SingaPay");
    // Payments: the fold of payment events equals the mirror but for `updated_at` (SingaPay's
    // bookkeeping), and the mirror equals SingaPay exactly.
    let payments = mirror_payments(&t).await;
    let no_updated_at = |m: &BTreeMap<i64, Value>| -> BTreeMap<i64, Value> {
        m.iter().map(|(k, v)| (*k, comparable(v.clone()))).collect()
    };
    prop_assert_eq!(
        no_updated_at(&fold_payments),
        no_updated_at(&payments),
        "fold of payment events = payment mirror"
    );
    prop_assert_eq!(&payments, &history, "payment mirror = SingaPay's history");
    for p in t.app.ledger.list_payments(&account()).await.unwrap() {
        prop_assert_eq!(
            p.sequence,
            last_seq.get(&Ok(p.payment.id.0)).copied().unwrap_or(0)
        );
    }
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
