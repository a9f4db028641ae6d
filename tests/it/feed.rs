//! The pull feed `GET /events?after=` over the real admin API, across a daemon restart.

use std::sync::Arc;

use singapay_sync::time::SystemClock;

use crate::harness::*;

async fn page(admin: &Admin, after: Option<&str>) -> (Vec<String>, Option<String>) {
    let v = match after {
        Some(a) => admin.get(&format!("/events?limit=2&after={a}")).await,
        None => admin.get("/events?limit=2").await,
    };
    let ids = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    (ids, v["next_after"].as_str().map(str::to_owned))
}

#[tokio::test]
async fn the_pull_feed_returns_every_event_once_across_pages_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = TestSandbox::start().await;
    let config = test_config(&dir, &sandbox);

    let daemon = serve(&config, Arc::new(SystemClock)).await;
    let admin = daemon.admin.clone();
    admin.resync_and_wait().await; // baseline
    for id in [103, 103, 70] {
        sandbox.pay(id).await;
    }
    sandbox.close(101).await;
    sandbox
        .edit(60, serde_json::json!({"title": "renamed"}))
        .await;
    // 4 link events (103 paid, 101 status, 70 paid, 60 updated) and 6 payment events (each of
    // the 3 history rows created and paid).
    admin.resync_and_wait().await;

    let mut seen = Vec::new();
    let (ids, mut cursor) = page(&admin, None).await;
    assert_eq!(ids.len(), 2);
    seen.extend(ids);
    daemon.shutdown().await;

    // Restart on the same ledger; more changes arrive; the cursor still works.
    let daemon = serve(&config, Arc::new(SystemClock)).await;
    let admin = daemon.admin.clone();
    sandbox.pay(78).await;
    admin.resync_and_wait().await; // +3 events: 78 paid, its history row created and paid
    loop {
        let (ids, next) = page(&admin, cursor.as_deref()).await;
        if ids.is_empty() {
            assert_eq!(next, cursor, "an empty page keeps the cursor");
            break;
        }
        seen.extend(ids);
        cursor = next;
    }
    assert_eq!(seen.len(), 13);
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 13, "{seen:?}");

    let (status, body) = admin
        .call(reqwest::Method::GET, "/events?after=evt_nope")
        .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "unknown_cursor");
    daemon.shutdown().await;
}
