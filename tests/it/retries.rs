//! Failed deliveries are retried from the `delivery` table on the configured schedule.

use std::time::Duration;

use crate::harness::*;

#[tokio::test]
async fn a_receiver_failing_twice_gets_the_event_on_the_third_attempt_with_the_same_id() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = TestSandbox::start().await;
    let erp = Receiver::start(vec![500, 500]).await;
    let mut setup = new_setup(&dir, &sandbox);
    setup.webhooks.push(("erp".into(), erp.clone(), None));
    setup.retry_schedule = vec!["100ms", "100ms"];
    let app = setup.app().await;
    app.sync_all(None).await[0].1.as_ref().unwrap();
    sandbox.pay(103).await;
    let s = app.sync_all(None).await;
    assert_eq!(s[0].1.as_ref().unwrap().events, 1);

    let first = app.dispatcher.dispatch_due().await.unwrap();
    assert_eq!((first.attempted, first.retrying), (1, 1));
    // Not due yet: the retry waits for its slot.
    assert_eq!(app.dispatcher.dispatch_due().await.unwrap().attempted, 0);
    let mut attempts = 1;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let d = app.dispatcher.dispatch_due().await.unwrap();
        attempts += d.attempted;
        if d.delivered == 1 {
            break;
        }
    }
    assert_eq!(attempts, 3);
    let hits = erp.hits();
    assert_eq!(
        hits.iter().map(|h| h.answered).collect::<Vec<_>>(),
        [500, 500, 200]
    );
    assert!(hits.iter().all(|h| h.verified));
    assert!(hits.iter().all(|h| h.webhook_id == hits[0].webhook_id));

    let rows = app
        .ledger
        .list_deliveries(None, Some("erp"), 10)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].state, "delivered");
    assert_eq!(rows[0].attempts, 3);
    assert_eq!(rows[0].event_id, hits[0].webhook_id);
    let log = app.ledger.delivery_attempts(rows[0].id).await.unwrap();
    assert_eq!(
        log.iter().map(|a| a.status).collect::<Vec<_>>(),
        [Some(500), Some(500), Some(200)]
    );
    assert!(log[0].error.as_deref().unwrap().contains("HTTP 500"));
    assert!(log[2].error.is_none());
    // The gaps follow the 100 ms schedule (±20% jitter), not hammering.
    for w in log.windows(2) {
        let gap = (w[1].attempted_at - w[0].attempted_at).num_milliseconds();
        assert!(gap >= 80, "retry came after {gap} ms");
    }
}

#[tokio::test]
async fn an_exhausted_schedule_leaves_the_delivery_dead() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = TestSandbox::start().await;
    let erp = Receiver::start(vec![503, 503]).await;
    let mut setup = new_setup(&dir, &sandbox);
    setup.webhooks.push(("erp".into(), erp.clone(), None));
    setup.retry_schedule = vec!["50ms"];
    let app = setup.app().await;
    app.sync_all(None).await;
    sandbox.close(103).await;
    app.sync_all(None).await;
    app.dispatcher.dispatch_due().await.unwrap();
    let mut dead = 0;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        dead += app.dispatcher.dispatch_due().await.unwrap().dead;
        if dead > 0 {
            break;
        }
    }
    assert_eq!(dead, 1);
    assert_eq!(erp.hits().len(), 2, "1 attempt + 1 retry");
    let rows = app
        .ledger
        .list_deliveries(Some("dead"), None, 10)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].last_status, Some(503));
    // A dead delivery can be retried by hand.
    assert!(
        app.ledger
            .retry_delivery(rows[0].id, chrono::Utc::now())
            .await
            .unwrap()
    );
    let d = app.dispatcher.dispatch_due().await.unwrap();
    assert_eq!(d.delivered, 1);
    assert_eq!(erp.hits().len(), 3);
}

#[tokio::test]
async fn smtp_failures_are_retried_through_the_delivery_table() {
    use singapay_sync::time::ManualClock;
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let sandbox = TestSandbox::start().await;
    // Nothing listens on this port yet: connection refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut setup = new_setup(&dir, &sandbox);
    let placeholder = SmtpSink::start().await;
    setup.smtp = Some((placeholder, vec!["finance@toko.example"], None));
    setup.retry_schedule = vec!["5s", "5m"];
    let toml = setup.toml().replace(
        &setup.smtp.as_ref().unwrap().0.url,
        &format!("smtp://127.0.0.1:{port}"),
    );
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let app = app_from_toml(&toml, clock.clone()).await;
    app.sync_all(None).await;
    sandbox.pay(103).await;
    app.sync_all(None).await;
    let d = app.dispatcher.dispatch_due().await.unwrap();
    assert_eq!((d.attempted, d.retrying), (1, 1));
    let row = &app
        .ledger
        .list_deliveries(None, Some("finance"), 10)
        .await
        .unwrap()[0];
    assert_eq!(row.channel, "email");
    assert!(row.last_error.is_some(), "{row:?}");
    // The mail server comes up; the retry goes through at its scheduled time.
    let sink = SmtpSink::start_on(port).await;
    assert_eq!(
        app.dispatcher.dispatch_due().await.unwrap().attempted,
        0,
        "not due yet"
    );
    clock.set(app.ledger.next_due_at().await.unwrap().unwrap());
    let d = app.dispatcher.dispatch_due().await.unwrap();
    assert_eq!(d.delivered, 1);
    assert_eq!(sink.mails().len(), 1);
    let log = app.ledger.delivery_attempts(row.id).await.unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[1].status, Some(250), "SMTP reply code logged");
}
