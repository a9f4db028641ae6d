//! Property: whatever SingaPay does between passes, the events replay exactly to the mirror, and
//! the mirror equals SingaPay (fold(events) = ledger = sandbox).

use std::collections::BTreeMap;

use proptest::prelude::*;
use reqwest::Method;
use serde_json::{Value, json};
use singapay_sync::ledger::EventFilter;
use singapay_sync::types::{AccountId, EventType};

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

/// Every link the sandbox holds, read with the daemon's own SingaPay client.
async fn sandbox_state(sb: &TestSandbox) -> BTreeMap<i64, Value> {
    let client =
        singapay_sync::singapay::SingapayClient::new(singapay_sync::singapay::ClientConfig {
            base_url: sb.base.parse().unwrap(),
            partner_id: singapay_sync::sandbox::SANDBOX_PARTNER_ID.into(),
            client_id: singapay_sync::sandbox::SANDBOX_CLIENT_ID.into(),
            client_secret: secrecy::SecretString::from(
                singapay_sync::sandbox::SANDBOX_CLIENT_SECRET,
            ),
            timeout: std::time::Duration::from_secs(5),
            max_retries: 0,
            min_backoff: std::time::Duration::from_millis(10),
            max_backoff: std::time::Duration::from_millis(10),
        })
        .unwrap();
    let account = AccountId::parse(ACCOUNT).unwrap();
    let mut out = BTreeMap::new();
    for page in 1.. {
        let p = client.list_page(&account, page, 100).await.unwrap();
        if p.links.is_empty() {
            break;
        }
        for (l, _) in p.links {
            out.insert(l.id.0, comparable(serde_json::to_value(&l).unwrap()));
        }
    }
    out
}

async fn run_case(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let sb = TestSandbox::start_with(LINKS as usize).await;
    let app = new_setup(&dir, &sb).app().await;
    let account = AccountId::parse(ACCOUNT).unwrap();
    app.sync_all(None).await[0].1.as_ref().unwrap();
    // The mirror after the baseline is the fold's starting point.
    let (rows, _) = app.ledger.list_links(&account, 10_000, 0).await.unwrap();
    let mut fold: BTreeMap<i64, Value> = rows
        .into_iter()
        .map(|r| {
            (
                r.link.id.0,
                comparable(serde_json::to_value(&r.link).unwrap()),
            )
        })
        .collect();
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
                let r = app.sync_all(None).await;
                prop_assert!(r[0].1.is_ok(), "{:?}", r[0].1);
            }
        }
    }
    let events = app
        .ledger
        .events(&EventFilter {
            limit: 100_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .unwrap();
    let mut last_seq: BTreeMap<i64, i64> = BTreeMap::new();
    for e in &events {
        let seq = last_seq.entry(e.link_id).or_insert(0);
        prop_assert_eq!(e.sequence, *seq + 1, "sequences rise by one per link");
        *seq = e.sequence;
        let obj = comparable(e.envelope["data"]["object"].clone());
        match e.event_type {
            EventType::Deleted => {
                fold.remove(&e.link_id);
            }
            _ => {
                fold.insert(e.link_id, obj);
            }
        }
    }
    let (rows, _) = app.ledger.list_links(&account, 10_000, 0).await.unwrap();
    let mirror: BTreeMap<i64, Value> = rows
        .iter()
        .filter(|r| r.deleted_at.is_none())
        .map(|r| {
            (
                r.link.id.0,
                comparable(serde_json::to_value(&r.link).unwrap()),
            )
        })
        .collect();
    for r in &rows {
        prop_assert_eq!(r.sequence, last_seq.get(&r.link.id.0).copied().unwrap_or(0));
    }
    let upstream = sandbox_state(&sb).await;
    prop_assert_eq!(&fold, &mirror, "fold of events = mirror");
    prop_assert_eq!(&mirror, &upstream, "mirror = SingaPay");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn events_replay_to_the_mirror_and_the_mirror_equals_singapay(ops in prop::collection::vec(op(), 1..14)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(run_case(ops))?;
    }
}
