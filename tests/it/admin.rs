//! The admin API of a daemon running in this process: coalesced resyncs, manual retries,
//! re-enabling a subscriber, a stale `/readyz`, and JSON errors for every bad request.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use singapay_sync::sandbox::strings;
use singapay_sync::time::{ManualClock, SystemClock};

use crate::harness::*;

/// Polls `GET path` until `done` holds (at most ~10 s).
async fn wait_for(admin: &Admin, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..400 {
        let v = admin.get(path).await;
        if done(&v) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "{path} never reached the expected state: {}",
        admin.get(path).await
    );
}

#[tokio::test]
async fn a_resync_during_a_running_pass_joins_it_instead_of_starting_another() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = TestSandbox::start().await;
    // Page 2 answers after 800 ms: the first pass is still running when the second trigger comes.
    sandbox
        .fault(json!({"route": "list", "page": 2, "delay_ms": 800}))
        .await;
    let daemon = serve(&test_config(&dir, &sandbox), Arc::new(SystemClock)).await;
    let first = daemon.admin.resync_runs().await;
    let second = daemon.admin.resync_runs().await;
    assert_eq!(first[0]["coalesced"], false);
    assert_eq!(second[0]["coalesced"], true);
    assert_eq!(second[0]["run_id"], first[0]["run_id"]);
    let id = first[0]["run_id"].as_i64().unwrap();
    let run = daemon.admin.wait_run(id).await;
    assert_eq!(run["links_seen"], 103);
    let (status, _) = daemon
        .admin
        .call(Method::GET, &format!("/sync-runs/{}", id + 1))
        .await;
    assert_eq!(status, 404, "no second run was started");
    assert_eq!(
        sandbox.page_statuses(1).await.len(),
        1,
        "the account was read once"
    );
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_dead_delivery_retried_over_the_api_is_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = TestSandbox::start().await;
    let erp = Receiver::start(vec![500, 500]).await;
    let mut config = test_config(&dir, &sandbox);
    subscribe(&mut config, "erp", &erp, Some(LINK_EVENTS));
    config.retry_schedule = Some(strings(&["10ms"]));
    let daemon = serve(&config, Arc::new(SystemClock)).await;
    let admin = &daemon.admin;
    admin.resync_and_wait().await;
    sandbox.pay(103).await;
    admin.resync_and_wait().await;
    let dead = wait_for(admin, "/deliveries?state=dead", |v| {
        v["deliveries"].as_array().is_some_and(|d| d.len() == 1)
    })
    .await;
    let id = dead["deliveries"][0]["id"].as_i64().unwrap();
    assert_eq!(dead["deliveries"][0]["attempts"], 2);

    let (status, body) = admin
        .call(Method::POST, &format!("/deliveries/{id}/retry"))
        .await;
    assert_eq!(
        (status, &body),
        (202, &json!({"id": id, "state": "pending"}))
    );
    let done = wait_for(admin, "/deliveries?state=delivered", |v| {
        v["deliveries"].as_array().is_some_and(|d| d.len() == 1)
    })
    .await;
    assert_eq!(done["deliveries"][0]["id"], id);
    assert_eq!(done["deliveries"][0]["attempts"], 3);
    assert_eq!(
        erp.hits().iter().map(|h| h.answered).collect::<Vec<_>>(),
        [500, 500, 200]
    );
    // A delivered one is not retryable; an unknown id neither; a non-number is a bad id.
    let (status, body) = admin
        .call(Method::POST, &format!("/deliveries/{id}/retry"))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("not_retryable"))
    );
    let (status, _) = admin.call(Method::POST, "/deliveries/999999/retry").await;
    assert_eq!(status, 409);
    let (status, body) = admin.call(Method::POST, "/deliveries/abc/retry").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bad_id"))
    );
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_subscriber_re_enabled_over_the_api_gets_its_parked_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = TestSandbox::start().await;
    let erp = Receiver::start(vec![410]).await;
    let mut config = test_config(&dir, &sandbox);
    subscribe(&mut config, "erp", &erp, Some(LINK_EVENTS));
    let daemon = serve(&config, Arc::new(SystemClock)).await;
    let admin = &daemon.admin;
    admin.resync_and_wait().await;
    sandbox.pay(103).await;
    admin.resync_and_wait().await;
    wait_for(admin, "/deliveries?state=disabled", |v| {
        v["deliveries"].as_array().is_some_and(|d| d.len() == 1)
    })
    .await;
    // A later event is parked too.
    sandbox.close(102).await;
    admin.resync_and_wait().await;
    let parked = admin.get("/deliveries?state=disabled&subscriber=erp").await;
    assert_eq!(parked["deliveries"].as_array().unwrap().len(), 2);
    assert_eq!(erp.hits().len(), 1);

    let (status, body) = admin.call(Method::POST, "/subscribers/erp/enable").await;
    assert_eq!(
        (status, body),
        (200, json!({"subscriber": "erp", "requeued": 2}))
    );
    wait_for(admin, "/deliveries?state=delivered", |v| {
        v["deliveries"].as_array().is_some_and(|d| d.len() == 2)
    })
    .await;
    let hits = erp.hits();
    assert_eq!(hits.len(), 3);
    assert!(hits.iter().all(|h| h.verified));
    daemon.shutdown().await;
}

#[tokio::test]
async fn readyz_turns_503_when_the_last_successful_pass_is_older_than_three_intervals() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = TestSandbox::start().await;
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let mut config = test_config(&dir, &sandbox);
    config.schedule = "0 0 */6 * * *".into();
    let daemon = serve(&config, clock.clone()).await;
    let admin = &daemon.admin;
    let readyz = || admin.call(Method::GET, "/readyz");
    assert_eq!(readyz().await.0, 503, "not ready before the first pass");
    admin.resync_and_wait().await;
    let (status, body) = readyz().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accounts"][0]["max_age_seconds"], 64_800, "3 × 6 h");
    // A second short of 18 hours later it is still fresh; two seconds more and it is stale.
    clock.advance(Duration::from_secs(64_799));
    assert_eq!(readyz().await.0, 200);
    clock.advance(Duration::from_secs(2));
    let (status, body) = readyz().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["ready"], false);
    assert_eq!(body["accounts"][0]["ready"], false);
    daemon.shutdown().await;
}

#[tokio::test]
async fn every_bad_request_gets_a_json_error_and_internal_errors_say_nothing_internal() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = TestSandbox::start().await;
    let daemon = serve(&test_config(&dir, &sandbox), Arc::new(SystemClock)).await;
    let admin = &daemon.admin;
    for (method, path, status, code) in [
        (Method::GET, "/nowhere", 404, "not_found"),
        (Method::DELETE, "/events", 405, "method_not_allowed"),
        (Method::GET, "/sync-runs/abc", 400, "bad_id"),
        (Method::GET, "/sync-runs/42", 404, "not_found"),
        (Method::GET, "/events?limit=abc", 400, "bad_parameter"),
        (Method::GET, "/events?limit=5000", 400, "bad_parameter"),
        (
            Method::GET,
            "/events?type=payment_link.nope",
            400,
            "bad_type",
        ),
        (
            Method::GET,
            "/events?account_id=toko",
            400,
            "bad_account_id",
        ),
        (
            Method::GET,
            "/events?account_id=01K946KF851RK7FX075GJHBVKF",
            404,
            "unknown_account",
        ),
        (Method::GET, "/deliveries?state=lost", 400, "bad_state"),
        (Method::GET, "/deliveries?channel=fax", 400, "bad_parameter"),
        (Method::GET, "/links/toko/1", 400, "bad_account_id"),
        (Method::GET, &format!("/links/{ACCOUNT}/x"), 400, "bad_id"),
        (
            Method::GET,
            &format!("/links/{ACCOUNT}/999"),
            404,
            "not_found",
        ),
        (
            Method::POST,
            "/resync?account_id=nope",
            400,
            "bad_account_id",
        ),
    ] {
        let (got, body) = admin.call(method.clone(), path).await;
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{method} {path}: {body}"
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    // The scheme of `Authorization` is case-insensitive (RFC 9110 §11.1).
    let lower = admin
        .http
        .get(format!("{}/deliveries", admin.base))
        .header("authorization", format!("bearer {ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(lower.status(), 200);
    // The ledger goes away: the answers are errors without SQL or pool details.
    daemon.ledger.close().await;
    let (status, body) = admin.call(Method::GET, "/deliveries").await;
    assert_eq!(status, 500);
    assert_eq!(
        body,
        json!({"error": {"code": "internal",
                         "message": "internal error (the daemon's log has the cause)"}})
    );
    let health = admin
        .http
        .get(format!("{}/healthz", admin.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 503);
    let body: Value = health.json().await.unwrap();
    assert_eq!(body["error"]["code"], "ledger_unavailable");
    assert!(!body.to_string().to_lowercase().contains("pool"), "{body}");
    daemon.stop.cancel();
    let _ = daemon.task.await;
}
