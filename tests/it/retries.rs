//! Failed deliveries are retried from the `delivery` table on the configured schedule.

use std::sync::Arc;
use std::time::Duration;

use singapay_sync::ledger::DeliveryFilter;
use singapay_sync::sandbox::{EmailEntry, strings};
use singapay_sync::time::ManualClock;
use singapay_sync::types::{Channel, DeliveryState};

use crate::harness::*;

#[tokio::test]
async fn a_receiver_failing_twice_gets_the_event_on_the_third_attempt_with_the_same_id() {
    let erp = Receiver::start(vec![500, 500]).await;
    let t = TestApp::spawn_with(|c| {
        subscribe(c, "erp", &erp, Some(LINK_EVENTS));
        c.retry_schedule = Some(strings(&["100ms", "100ms"]));
    })
    .await;
    t.sync_ok().await;
    t.sandbox.pay(103).await;
    assert_eq!(link_events(&t.sync_ok().await), 1);

    let first = t.dispatch().await;
    assert_eq!((first.attempted, first.retrying), (1, 1));
    // Not due yet: the retry waits for its slot.
    assert_eq!(t.dispatch().await.attempted, 0);
    let mut attempts = 1;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let d = t.dispatch().await;
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

    let rows = t.deliveries_of("erp").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].state, DeliveryState::Delivered);
    assert_eq!(rows[0].attempts, 3);
    assert_eq!(rows[0].event_id, hits[0].webhook_id);
    let log = t.app.ledger.delivery_attempts(rows[0].id).await.unwrap();
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
    let erp = Receiver::start(vec![503, 503]).await;
    let t = TestApp::spawn_with(|c| {
        subscribe(c, "erp", &erp, Some(LINK_EVENTS));
        c.retry_schedule = Some(strings(&["50ms"]));
    })
    .await;
    t.sync_ok().await;
    t.sandbox.close(103).await;
    t.sync_ok().await;
    t.dispatch().await;
    let mut dead = 0;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        dead += t.dispatch().await.dead;
        if dead > 0 {
            break;
        }
    }
    assert_eq!(dead, 1);
    assert_eq!(erp.hits().len(), 2, "1 attempt + 1 retry");
    let rows = t
        .app
        .ledger
        .list_deliveries(&DeliveryFilter {
            state: Some(DeliveryState::Dead),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].last_status, Some(503));
    // A dead delivery can be retried by hand.
    assert!(
        t.app
            .ledger
            .retry_delivery(rows[0].id, chrono::Utc::now())
            .await
            .unwrap()
    );
    let d = t.dispatch().await;
    assert_eq!(d.delivered, 1);
    assert_eq!(erp.hits().len(), 3);
}

#[tokio::test]
async fn smtp_failures_are_retried_through_the_delivery_table() {
    // Nothing listens on this port yet: connection refused.
    let port = free_port();
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let t = TestApp::start(TestSandbox::start().await, clock.clone(), |c| {
        c.email = Some(EmailEntry {
            smtp_url: format!("smtp://127.0.0.1:{port}"),
            from: "SingaPay Sync <sync@toko.example>".into(),
            to: strings(&["finance@toko.example"]),
            events: Some(strings(LINK_EVENTS)),
            timeout: Some("5s".into()),
        });
        c.retry_schedule = Some(strings(&["5s", "5m"]));
    })
    .await;
    t.sync_ok().await;
    t.sandbox.pay(103).await;
    t.sync_ok().await;
    let d = t.dispatch().await;
    assert_eq!((d.attempted, d.retrying), (1, 1));
    let row = &t.deliveries_of("finance").await[0];
    assert_eq!(row.channel, Channel::Email);
    assert!(
        row.last_error
            .as_deref()
            .is_some_and(|e| e.contains("refused")),
        "{row:?}"
    );
    // The mail server comes up; the retry goes through at its scheduled time.
    let sink = SmtpSink::start_on(port).await;
    assert_eq!(t.dispatch().await.attempted, 0, "not due yet");
    clock.set(t.app.ledger.next_due_at().await.unwrap().unwrap());
    let d = t.dispatch().await;
    assert_eq!(d.delivered, 1);
    assert_eq!(sink.mails().len(), 1);
    let log = t.app.ledger.delivery_attempts(row.id).await.unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[1].status, Some(250), "SMTP reply code logged");
}

#[tokio::test]
async fn one_group_of_mixed_outcomes_records_each_deliverys_own_status_error_and_next_attempt() {
    // Six links paid, six events: the receiver fails three of the POSTs (whichever come first)
    // and accepts the others. Their outcomes are recorded together (one group, or two if the
    // group's window closes between them): each delivery must get its own outcome, whatever
    // order they were sent and recorded in (PostgreSQL records a group as parallel arrays).
    let erp = Receiver::start(vec![500, 500, 500]).await;
    let t = TestApp::spawn_with(|c| {
        subscribe(c, "erp", &erp, Some(LINK_EVENTS));
        c.retry_schedule = Some(strings(&["1h"]));
    })
    .await;
    t.sync_ok().await;
    for id in [5, 10, 15, 20, 25, 30] {
        t.sandbox.pay(id).await;
    }
    assert_eq!(link_events(&t.sync_ok().await), 6);
    let d = t.dispatch().await;
    assert_eq!((d.attempted, d.delivered, d.retrying), (6, 3, 3), "{d:?}");

    let answered: std::collections::HashMap<String, u16> = erp
        .hits()
        .into_iter()
        .map(|h| (h.webhook_id, h.answered))
        .collect();
    assert_eq!(answered.len(), 6);
    let rows = t.deliveries_of("erp").await;
    assert_eq!(rows.len(), 6);
    for r in &rows {
        let status = answered[&r.event_id];
        let log = t.app.ledger.delivery_attempts(r.id).await.unwrap();
        assert_eq!(log.len(), 1, "{r:?}: {log:?}");
        assert_eq!(r.attempts, 1, "{r:?}");
        assert_eq!(r.last_status, Some(i64::from(status)), "{r:?}");
        assert_eq!(log[0].status, Some(i64::from(status)), "{log:?}");
        assert_eq!(log[0].error, r.last_error, "{r:?}: {log:?}");
        if status == 200 {
            assert_eq!(r.state, DeliveryState::Delivered, "{r:?}");
            assert_eq!(r.delivered_at, Some(log[0].attempted_at), "{r:?}");
            assert_eq!((r.next_attempt_at, r.last_error.as_deref()), (None, None));
        } else {
            assert_eq!(r.state, DeliveryState::Pending, "{r:?}");
            assert_eq!(r.delivered_at, None, "{r:?}");
            // The one-hour slot of the schedule, ±20% jitter, from the attempt's start.
            let wait = r.next_attempt_at.unwrap() - log[0].attempted_at;
            assert!(
                wait >= chrono::Duration::minutes(47) && wait <= chrono::Duration::minutes(73),
                "{r:?}: {wait}"
            );
            assert!(
                r.last_error.as_deref().unwrap().contains("HTTP 500"),
                "{r:?}"
            );
        }
    }
}
