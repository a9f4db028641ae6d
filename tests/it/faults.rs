//! Upstream faults and shifting pages: the pass never invents or misses a change.

use std::collections::BTreeMap;

use serde_json::json;
use singapay_sync::types::EventType;

use crate::harness::*;

fn count_by(events: &[singapay_sync::ledger::EventRow]) -> BTreeMap<(i64, EventType), usize> {
    let mut m = BTreeMap::new();
    for e in events {
        *m.entry((e.link_id, e.event_type)).or_default() += 1;
    }
    m
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried_and_the_pass_completes() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = TestSandbox::start().await;
    let app = new_setup(&dir, &sandbox).app().await;
    sandbox
        .fault(json!({"route": "list", "page": 2, "status": 503, "count": 2}))
        .await;
    sandbox
        .fault(json!({"route": "list", "page": 3, "status": 429, "retry_after": "1"}))
        .await;
    let r = app.sync_all(None).await;
    let s = r[0].1.as_ref().unwrap();
    assert_eq!(s.links_seen, 103);
    let log = sandbox.requests().await;
    let page = |p: &str| {
        log.iter()
            .filter(|r| {
                r.1.ends_with(ACCOUNT)
                    && r.2
                        .as_deref()
                        .is_some_and(|q| q.starts_with(&format!("page={p}&")))
            })
            .map(|r| r.3)
            .collect::<Vec<_>>()
    };
    assert_eq!(page("2"), [503, 503, 200]);
    assert_eq!(page("3"), [429, 200]);

    sandbox.pay(103).await;
    sandbox
        .fault(json!({"route": "list", "page": 1, "status": 502}))
        .await;
    let r = app.sync_all(None).await;
    assert_eq!(r[0].1.as_ref().unwrap().events, 1);
    assert_eq!(
        count_by(&all_events(&app.ledger).await).get(&(103, EventType::Paid)),
        Some(&1)
    );
}

#[tokio::test]
async fn a_token_expiring_mid_pass_is_refreshed_once() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = TestSandbox::start().await;
    let app = new_setup(&dir, &sandbox).app().await;
    sandbox
        .fault(json!({"route": "list", "page": 3, "expire_tokens": true}))
        .await;
    let r = app.sync_all(None).await;
    assert_eq!(r[0].1.as_ref().unwrap().links_seen, 103);
    let log = sandbox.requests().await;
    let tokens = log.iter().filter(|r| r.1.contains("access-token")).count();
    assert_eq!(tokens, 2, "initial token + one refresh: {log:?}");
    // Pages in flight together with page 3 may each see one 401; they share the one new token.
    let refused = log.iter().filter(|r| r.3 == 401).count();
    assert!((1..=4).contains(&refused), "{log:?}");
    let listed_ok = log
        .iter()
        .filter(|r| r.1.ends_with(ACCOUNT) && r.3 == 200)
        .count();
    assert_eq!(listed_ok, 5, "every page read once successfully");
}

#[tokio::test]
async fn a_malformed_page_fails_the_pass_without_touching_the_ledger_and_the_next_pass_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = TestSandbox::start().await;
    let app = new_setup(&dir, &sandbox).app().await;
    app.sync_all(None).await[0].1.as_ref().unwrap();
    sandbox.pay(103).await; // page 1
    sandbox.edit(60, json!({"title": "Order #60 v2"})).await; // page 2
    sandbox.close(40).await; // page 3
    sandbox
        .fault(json!({"route": "list", "page": 2, "body": "{\"status\":200,\"success\":true,\"data\":[{\"id\":"}))
        .await;
    let r = app.sync_all(None).await;
    let err = r[0].1.as_ref().unwrap_err().to_string();
    assert!(
        err.contains("page 2") && err.contains("cannot be decoded"),
        "{err}"
    );
    let run = app.ledger.get_run(2).await.unwrap().unwrap();
    assert_eq!(run.outcome, "failed");
    assert!(run.error.unwrap().contains("page 2"));
    // Page 1 committed (its payment is recorded); page 2 and later untouched.
    let after_fail = count_by(&all_events(&app.ledger).await);
    assert_eq!(after_fail.len(), 1);
    assert_eq!(after_fail.get(&(103, EventType::Paid)), Some(&1));
    let account = singapay_sync::types::AccountId::parse(ACCOUNT).unwrap();
    let l60 = app
        .ledger
        .get_link(&account, singapay_sync::types::LinkId(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(l60.link.title.as_deref(), Some("Payment for Order #60"));

    let r = app.sync_all(None).await;
    assert_eq!(r[0].1.as_ref().unwrap().events, 2);
    let all = count_by(&all_events(&app.ledger).await);
    assert_eq!(
        all,
        BTreeMap::from([
            ((40, EventType::StatusChanged), 1),
            ((60, EventType::Updated), 1),
            ((103, EventType::Paid), 1),
        ])
    );
}

#[tokio::test]
async fn links_created_during_a_pass_make_no_duplicate_events() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = TestSandbox::start().await;
    let app = new_setup(&dir, &sandbox).app().await;
    app.sync_all(None).await[0].1.as_ref().unwrap();
    // Two links appear while page 3 is served: every later item shifts two places.
    sandbox
        .fault(json!({"route": "list", "page": 3, "add_links": 2}))
        .await;
    let r = app.sync_all(None).await;
    let s = r[0].1.as_ref().unwrap();
    assert_eq!(s.links_seen, 105);
    let events = count_by(&all_events(&app.ledger).await);
    assert_eq!(
        events,
        BTreeMap::from([
            ((104, EventType::Created), 1),
            ((105, EventType::Created), 1)
        ])
    );
    let r = app.sync_all(None).await;
    assert_eq!(r[0].1.as_ref().unwrap().events, 0);
}

#[tokio::test]
async fn a_link_deleted_mid_pass_causes_no_false_deletion_and_the_skipped_link_is_still_diffed() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = TestSandbox::start().await;
    let app = new_setup(&dir, &sandbox).app().await;
    app.sync_all(None).await[0].1.as_ref().unwrap();
    // Link 53 (first of page 3) is edited; link 100 (page 1) vanishes while page 3 is served,
    // so 53 slides onto page 2, already read.
    sandbox
        .edit(53, json!({"title": "Order #53 (edited)"}))
        .await;
    sandbox
        .fault(json!({"route": "list", "page": 3, "delete_links": [100]}))
        .await;
    let r = app.sync_all(None).await;
    r[0].1.as_ref().unwrap();
    let first = count_by(&all_events(&app.ledger).await);
    assert!(
        !first
            .keys()
            .any(|(id, t)| *t == EventType::Deleted && *id != 100),
        "{first:?}"
    );
    app.sync_all(None).await[0].1.as_ref().unwrap();
    let all = count_by(&all_events(&app.ledger).await);
    assert_eq!(
        all,
        BTreeMap::from([
            ((53, EventType::Updated), 1),
            ((100, EventType::Deleted), 1)
        ])
    );
}

#[tokio::test]
async fn a_page_that_times_out_is_fetched_again_and_the_pass_completes() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = TestSandbox::start().await;
    let setup = new_setup(&dir, &sandbox);
    let toml = setup
        .toml()
        .replace("timeout = \"5s\"", "timeout = \"300ms\"");
    let app = app_from_toml(&toml, std::sync::Arc::new(singapay_sync::time::SystemClock)).await;
    sandbox
        .fault(json!({"route": "list", "page": 4, "delay_ms": 1000}))
        .await;
    let r = app.sync_all(None).await;
    assert_eq!(r[0].1.as_ref().unwrap().links_seen, 103);
    let page4 = sandbox
        .requests()
        .await
        .into_iter()
        .filter(|r| r.2.as_deref().is_some_and(|q| q.starts_with("page=4&")))
        .count();
    assert!(page4 >= 2, "the timed-out page was asked again ({page4})");
}

#[tokio::test]
async fn a_connection_reset_mid_page_is_retried_and_the_pass_finds_every_change_once() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = TestSandbox::start().await;
    let app = new_setup(&dir, &sandbox).app().await;
    app.sync_all(None).await[0].1.as_ref().unwrap();
    // Link 78 sits on page 2 of 5 (25 per page, newest first): pay it, then cut page 2 twice.
    sandbox.pay(78).await;
    sandbox
        .fault(json!({"route": "list", "page": 2, "reset": true, "count": 2}))
        .await;
    let r = app.sync_all(None).await;
    let s = r[0].1.as_ref().unwrap();
    assert_eq!(s.links_seen, 103);
    assert_eq!(s.events_by_type.get("payment_link.paid"), Some(&1));
    let page2 = sandbox
        .requests()
        .await
        .into_iter()
        .filter(|r| {
            r.1.ends_with(ACCOUNT) && r.2.as_deref().is_some_and(|q| q.starts_with("page=2&"))
        })
        .count();
    // One in the baseline, then two cut answers and the whole page.
    assert_eq!(page2, 4);
    assert_eq!(
        count_by(&all_events(&app.ledger).await).get(&(78, EventType::Paid)),
        Some(&1)
    );
}
