//! Upstream faults and shifting pages: the pass never invents or misses a change.

use std::collections::BTreeMap;

use serde_json::json;
use singapay_sync::ledger::EventRow;
use singapay_sync::types::EventType;

use crate::harness::*;

/// The link events (`payment_link.*`) by link and type.
fn count_by(events: &[EventRow]) -> BTreeMap<(i64, EventType), usize> {
    let mut m = BTreeMap::new();
    for e in events.iter().filter(|e| !e.event.event_type.is_payment()) {
        *m.entry((e.link_id.0, e.event.event_type)).or_default() += 1;
    }
    m
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried_and_the_pass_completes() {
    let t = TestApp::spawn().await;
    let sandbox = &t.sandbox;
    sandbox
        .fault(json!({"route": "list", "page": 2, "status": 503, "count": 2}))
        .await;
    sandbox
        .fault(json!({"route": "list", "page": 3, "status": 429, "retry_after": "1"}))
        .await;
    assert_eq!(t.sync_ok().await.links_seen, 103);
    assert_eq!(sandbox.page_statuses(2).await, [503, 503, 200]);
    assert_eq!(sandbox.page_statuses(3).await, [429, 200]);

    sandbox.pay(103).await;
    sandbox
        .fault(json!({"route": "list", "page": 1, "status": 502}))
        .await;
    assert_eq!(link_events(&t.sync_ok().await), 1);
    assert_eq!(
        count_by(&t.events().await),
        BTreeMap::from([((103, EventType::Paid), 1)])
    );
}

#[tokio::test]
async fn a_token_expiring_mid_pass_is_refreshed_once() {
    let t = TestApp::spawn().await;
    t.sandbox
        .fault(json!({"route": "list", "page": 3, "expire_tokens": true}))
        .await;
    assert_eq!(t.sync_ok().await.links_seen, 103);
    let log = t.sandbox.requests().await;
    let tokens = log
        .iter()
        .filter(|r| r.path.contains("access-token"))
        .count();
    assert_eq!(tokens, 2, "initial token + one refresh: {log:?}");
    // Pages in flight together with page 3 (at most the page concurrency, 4) may each see one
    // 401; they share the one new token.
    let refused = log.iter().filter(|r| r.status == 401).count();
    assert!((1..=4).contains(&refused), "{log:?}");
    let listed_ok = log
        .iter()
        .filter(|r| r.path.contains("/payment-link-manage/") && r.status == 200)
        .count();
    assert_eq!(listed_ok, 5, "every page read once successfully");
}

#[tokio::test]
async fn a_malformed_page_fails_the_pass_without_touching_the_ledger_and_the_next_pass_recovers() {
    let t = TestApp::spawn().await;
    let sandbox = &t.sandbox;
    t.sync_ok().await;
    sandbox.pay(103).await; // page 1
    sandbox.edit(60, json!({"title": "Order #60 v2"})).await; // page 2
    sandbox.close(40).await; // page 3
    sandbox
        .fault(json!({"route": "list", "page": 2, "body": "{\"status\":200,\"success\":true,\"data\":[{\"id\":"}))
        .await;
    let err = t.sync_err().await;
    assert!(
        err.contains("page 2") && err.contains("cannot be decoded"),
        "{err}"
    );
    let run = t.app.ledger.get_run(2).await.unwrap().unwrap();
    assert_eq!(run.outcome, "failed");
    assert!(run.error.unwrap().contains("page 2"));
    // Page 1 committed (its payment is recorded); page 2 and later untouched.
    assert_eq!(
        count_by(&t.events().await),
        BTreeMap::from([((103, EventType::Paid), 1)])
    );
    assert_eq!(
        t.link(60).await.link.title.as_deref(),
        Some("Payment for Order #60")
    );

    assert_eq!(link_events(&t.sync_ok().await), 2);
    assert_eq!(
        count_by(&t.events().await),
        BTreeMap::from([
            ((40, EventType::StatusChanged), 1),
            ((60, EventType::Updated), 1),
            ((103, EventType::Paid), 1),
        ])
    );
}

#[tokio::test]
async fn a_changed_link_that_cannot_be_decoded_fails_its_page_whole() {
    // A sweep decodes only the links whose bytes changed: a bad field in one of those still fails
    // the whole page, and nothing of it is committed.
    let t = TestApp::spawn().await;
    t.sync_ok().await;
    t.sandbox.edit(60, json!({"title": "Order #60 v2"})).await; // page 2
    let bad = json!({"status": 200, "success": true, "data": [
        {"id": 61, "reff_no": "PL61", "status": "open", "current_usage": 0, "title": "fine"},
        {"id": 60, "reff_no": "PL60", "status": "open", "current_usage": "one"}
    ]});
    t.sandbox
        .fault(json!({"route": "list", "page": 2, "body": bad.to_string()}))
        .await;
    let err = t.sync_err().await;
    assert!(
        err.contains("page 2")
            && err.contains("cannot be decoded")
            && err.contains("current_usage"),
        "{err}"
    );
    assert_eq!(
        t.link(61).await.link.title.as_deref(),
        Some("Payment for Order #61"),
        "the page's decodable link is not committed either"
    );
    assert_eq!(t.events().await.len(), 0);
    assert_eq!(link_events(&t.sync_ok().await), 1, "the retitle, once");
}

#[tokio::test]
async fn links_created_during_a_pass_make_no_duplicate_events() {
    let t = TestApp::spawn().await;
    t.sync_ok().await;
    // Two links appear while page 3 is served: every later item shifts two places.
    t.sandbox
        .fault(json!({"route": "list", "page": 3, "add_links": 2}))
        .await;
    assert_eq!(t.sync_ok().await.links_seen, 105);
    assert_eq!(
        count_by(&t.events().await),
        BTreeMap::from([
            ((104, EventType::Created), 1),
            ((105, EventType::Created), 1)
        ])
    );
    assert_eq!(link_events(&t.sync_ok().await), 0);
}

#[tokio::test]
async fn a_link_deleted_mid_pass_causes_no_false_deletion_and_the_skipped_link_is_still_diffed() {
    let t = TestApp::spawn().await;
    t.sync_ok().await;
    // Link 53 (first of page 3) is edited; link 100 (page 1) vanishes while page 3 is served,
    // so 53 slides onto page 2, already read: the drift sweep must still diff it, in this pass.
    t.sandbox
        .edit(53, json!({"title": "Order #53 (edited)"}))
        .await;
    t.sandbox
        .fault(json!({"route": "list", "page": 3, "delete_links": [100]}))
        .await;
    let first = t.sync_ok().await;
    assert_eq!(
        count_by(&t.events().await),
        BTreeMap::from([((53, EventType::Updated), 1)]),
        "the slid link is diffed in the pass it slid in, and nothing is reported deleted"
    );
    assert_eq!(link_events(&first), 1);
    // The next pass confirms 100 gone (404 on show) and reports it once.
    t.sync_ok().await;
    assert_eq!(
        count_by(&t.events().await),
        BTreeMap::from([
            ((53, EventType::Updated), 1),
            ((100, EventType::Deleted), 1)
        ])
    );
}

#[tokio::test]
async fn a_page_that_times_out_is_fetched_again_and_the_pass_completes() {
    let t = TestApp::spawn_with(|c| c.singapay_timeout = Some("300ms".into())).await;
    t.sandbox
        .fault(json!({"route": "list", "page": 4, "delay_ms": 1000}))
        .await;
    assert_eq!(t.sync_ok().await.links_seen, 103);
    // Exactly two requests: the one the client gave up on, and the retry that was answered.
    let page4 = t.sandbox.page_statuses(4).await;
    assert_eq!(page4.len(), 2, "{page4:?}");
    assert_eq!(page4[1], 200);
}

#[tokio::test]
async fn a_connection_reset_mid_page_is_retried_and_the_pass_finds_every_change_once() {
    let t = TestApp::spawn().await;
    t.sync_ok().await;
    // Link 78 sits on page 2 of 5 (25 per page, newest first): pay it, then cut page 2 twice.
    t.sandbox.pay(78).await;
    t.sandbox
        .fault(json!({"route": "list", "page": 2, "reset": true, "count": 2}))
        .await;
    let s = t.sync_ok().await;
    assert_eq!(s.links_seen, 103);
    assert_eq!(s.events_by_type.get("payment_link.paid"), Some(&1));
    // One in the baseline, then two cut answers and the whole page.
    assert_eq!(t.sandbox.page_statuses(2).await.len(), 4);
    assert_eq!(
        count_by(&t.events().await),
        BTreeMap::from([((78, EventType::Paid), 1)])
    );
}
