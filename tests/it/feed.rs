//! The pull feed `GET /events?after=` over the real admin API, across a daemon restart.

use serde_json::Value;
use singapay_sync::app::App;
use tokio_util::sync::CancellationToken;

use crate::harness::*;

async fn start(
    setup: &Setup,
) -> (
    String,
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let app = App::build(setup.config()).await.unwrap();
    let base = format!("http://{}", app.local_addr().unwrap());
    let stop = CancellationToken::new();
    let h = tokio::spawn(app.run_until_stopped(stop.clone()));
    (base, stop, h)
}

async fn page(
    http: &reqwest::Client,
    base: &str,
    after: Option<&str>,
) -> (Vec<String>, Option<String>) {
    let url = match after {
        Some(a) => format!("{base}/events?limit=2&after={a}"),
        None => format!("{base}/events?limit=2"),
    };
    let v: Value = json_of(http.get(url).bearer_auth(ADMIN_TOKEN)).await;
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
    let setup = new_setup(&dir, &sandbox);
    let http = reqwest::Client::new();

    let (base, stop, h) = start(&setup).await;
    Admin::new(&base).resync_and_wait().await; // baseline
    for id in [103, 103, 70] {
        sandbox.pay(id).await;
    }
    sandbox.close(101).await;
    sandbox
        .edit(60, serde_json::json!({"title": "renamed"}))
        .await;
    Admin::new(&base).resync_and_wait().await; // 4 events: 103 paid, 101 status, 70 paid, 60 updated

    let mut seen = Vec::new();
    let (ids, mut cursor) = page(&http, &base, None).await;
    assert_eq!(ids.len(), 2);
    seen.extend(ids);
    stop.cancel();
    h.await.unwrap().unwrap();

    // Restart on the same ledger; more changes arrive; the cursor still works.
    let (base, stop, h) = start(&setup).await;
    sandbox.pay(78).await;
    Admin::new(&base).resync_and_wait().await; // +1 event
    loop {
        let (ids, next) = page(&http, &base, cursor.as_deref()).await;
        if ids.is_empty() {
            break;
        }
        seen.extend(ids);
        cursor = next;
    }
    assert_eq!(seen.len(), 5);
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 5, "{seen:?}");

    let unknown = http
        .get(format!("{base}/events?after=evt_nope"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    stop.cancel();
    h.await.unwrap().unwrap();
}
