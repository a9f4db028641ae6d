//! The outbox: parked deliveries of a disabled subscriber, order per link across batches.

use chrono::DurationRound;

use super::*;

#[tokio::test]
async fn deliveries_of_a_disabled_subscriber_are_parked_and_order_is_kept() {
    let f = Fixture::new().await;
    let (l, run) = (&f.l, f.run);
    l.disable_subscriber("gone", "410 Gone", Utc::now())
        .await
        .expect("disable");
    let mut c = PageCommit::default();
    for i in 1..=3 {
        let id = format!("evt_{i}");
        c.events.push(event(&id, i, run));
        for sub in ["erp", "gone"] {
            c.deliveries.push(webhook_delivery(&id, sub, Utc::now()));
        }
    }
    l.commit_page(run, c).await.expect("commit");

    let of = |sub: &str| DeliveryFilter {
        subscriber: Some(sub.into()),
        limit: 10,
        ..Default::default()
    };
    let erp = l.list_deliveries(&of("erp")).await.expect("erp");
    let order: Vec<&str> = erp.iter().rev().map(|d| d.event_id.as_str()).collect();
    assert_eq!(order, ["evt_1", "evt_2", "evt_3"]);
    assert!(
        erp.iter()
            .all(|d| d.state == DeliveryState::Pending && d.next_attempt_at.is_some())
    );
    let gone = l.list_deliveries(&of("gone")).await.expect("gone");
    assert_eq!(gone.len(), 3);
    assert!(
        gone.iter()
            .all(|d| d.state == DeliveryState::Disabled && d.next_attempt_at.is_none())
    );
    let feed = l
        .events(&EventFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("events")
        .expect("feed");
    let ids: Vec<&str> = feed.iter().map(|e| e.event.id.0.as_str()).collect();
    assert_eq!(ids, ["evt_1", "evt_2", "evt_3"]);
    f.close().await;
}

#[tokio::test]
async fn a_delivery_behind_a_claimed_earlier_event_of_its_link_is_not_due() {
    // A link's later event waits for an earlier one in flight (claimed by a batch being sent),
    // whatever batch or dispatcher each is in.
    let f = Fixture::new().await;
    let (l, run) = (&f.l, f.run);
    let mut c = PageCommit::default();
    for (id, link, seq) in [("evt_a1", 7, 1), ("evt_a2", 7, 2), ("evt_b1", 8, 1)] {
        let mut e = event(id, link, run);
        e.event.sequence = seq;
        c.events
            .push(NewEvent::new(e.event, LinkId(link), run).expect("event"));
        c.deliveries.push(webhook_delivery(id, "erp", Utc::now()));
    }
    l.commit_page(run, c).await.expect("commit");
    let due_ids = || async {
        l.due_deliveries(Utc::now(), 10)
            .await
            .expect("due")
            .into_iter()
            .map(|d| (d.event_id, d.id))
            .collect::<Vec<_>>()
    };
    let all = due_ids().await;
    let names: Vec<&str> = all.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(names, ["evt_a1", "evt_a2", "evt_b1"]);
    // evt_a1 claimed (in flight): evt_a2 waits, evt_b1 (another link) does not.
    l.claim_deliveries(&[all[0].1], Utc::now())
        .await
        .expect("claim");
    let names: Vec<String> = due_ids().await.into_iter().map(|(e, _)| e).collect();
    assert_eq!(names, ["evt_b1"]);
    l.release_claims(&[all[0].1]).await.expect("release");
    assert_eq!(due_ids().await.len(), 3);
    f.close().await;
}

#[tokio::test]
async fn the_due_query_reads_only_the_pending_deliveries_of_a_key_through_delivery_held() {
    // The plan of the ordering check: `delivery_held` (pending deliveries only) searched on all
    // five of its columns (subscriber, account, link, the payment expression by equality, the
    // sequence as a range). Before migration 8 it searched `link_event_sequence`, which read every
    // earlier event of the link, delivered ones too, for each due delivery: 13 s per claim of
    // 2,000 new events on a link with 10,000 (docs/PERFORMANCE.md).
    let f = Fixture::new().await;
    let plan = plan_of(&f, super::super::due::DUE_SQL).await;
    checks_order_through_delivery_held(&plan);
    assert!(
        plan.iter()
            .any(|d| d == "SCAN d USING INDEX delivery_pending"),
        "{plan:#?}"
    );
    f.close().await;
}

/// The ordering check of `plan` searches `delivery_held` on all five of its columns and not
/// `link_event_sequence` (a link's whole history).
fn checks_order_through_delivery_held(plan: &[String]) {
    assert!(
        plan.iter().any(|d| d
            == "SEARCH d2 USING INDEX delivery_held (subscriber=? AND account_id=? AND link_id=? AND <expr>=? AND sequence<?)"),
        "{plan:#?}"
    );
    assert!(
        !plan.iter().any(|d| d.contains("link_event_sequence")),
        "{plan:#?}"
    );
}

/// SQLite's plan of `sql` (its `detail` lines), with `$1` a time and `$2` a limit if it has them.
async fn plan_of(f: &Fixture, sql: &str) -> Vec<String> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
        .bind("2026-12-04T00:00:00.000000Z")
        .bind(2000_i64)
        .fetch_all(f.l.sqlite_pool())
        .await
        .expect("plan");
    rows.iter()
        .map(|r| sqlx::Row::get::<String, _>(r, "detail"))
        .collect()
}

#[tokio::test]
async fn the_next_due_time_reads_the_held_deliveries_of_a_key_through_delivery_held() {
    // `next_due_at`'s ordering check reads what `claim_due`'s reads: before, it searched
    // `link_event_sequence`, every earlier event of the link, for each delivery held behind one
    // retrying (6.6 s a call for 2,000 new events of a link with 10,000 delivered ones).
    let f = Fixture::new().await;
    // The pending deliveries are walked in time order (no sort), up to the first that passes.
    let plan = plan_of(&f, super::super::due::NEXT_DUE_SQL).await;
    assert!(
        plan.iter()
            .any(|d| d == "SEARCH d USING INDEX delivery_due (state=? AND next_attempt_at>?)"),
        "{plan:#?}"
    );
    assert!(!plan.iter().any(|d| d.contains("TEMP B-TREE")), "{plan:#?}");
    checks_order_through_delivery_held(&plan);
    f.close().await;
}

#[tokio::test]
async fn the_next_due_time_is_not_a_delivery_held_behind_an_earlier_event() {
    // Link 7: event 1 retrying in an hour, event 2 due now behind it; link 8: event 1 retrying
    // in two hours; a payment of link 7 (an order of its own) retrying in half an hour. The next
    // time the dispatcher can send is the payment's, not event 2's (held) nor an hour (the
    // payment held behind its link's events); once event 1 is delivered, event 2's: now.
    let f = Fixture::new().await;
    let (l, run) = (&f.l, f.run);
    let now = Utc::now()
        .duration_trunc(chrono::Duration::seconds(1))
        .expect("now");
    let hours = |h: i64| now + chrono::Duration::hours(h);
    let mut c = PageCommit::default();
    for (id, link, seq, payment) in [
        ("evt_a1", 7, 1, None),
        ("evt_a2", 7, 2, None),
        ("evt_b1", 8, 1, None),
        ("evt_p1", 7, 3, Some(9)),
    ] {
        let mut e = event(id, link, run);
        e.event.sequence = seq;
        let mut e = NewEvent::new(e.event, LinkId(link), run).expect("event");
        e.payment_id = payment.map(crate::types::PaymentId);
        c.events.push(e);
        c.deliveries.push(webhook_delivery(id, "erp", now));
    }
    l.commit_page(run, c).await.expect("commit");
    assert_eq!(l.next_due_at().await.expect("next"), Some(now));
    let due = l.due_deliveries(now, 10).await.expect("due");
    let id_of = |event: &str| due.iter().find(|d| d.event_id == event).expect("due").id;
    let outcome = |event: &str, result| AttemptOutcome {
        delivery_id: id_of(event),
        attempted_at: now,
        duration_ms: 5,
        status: Some(500),
        error: Some("HTTP 500".into()),
        result,
    };
    let retries = [
        outcome("evt_a1", AttemptResult::Retry(hours(1))),
        outcome("evt_b1", AttemptResult::Retry(hours(2))),
        outcome(
            "evt_p1",
            AttemptResult::Retry(now + chrono::Duration::minutes(30)),
        ),
    ];
    l.record_attempts(&retries.iter().collect::<Vec<_>>())
        .await
        .expect("record");
    assert_eq!(
        l.next_due_at().await.expect("next"),
        Some(now + chrono::Duration::minutes(30))
    );
    let delivered = AttemptOutcome {
        status: Some(204),
        error: None,
        ..outcome("evt_a1", AttemptResult::Delivered)
    };
    l.record_attempts(&[&delivered]).await.expect("record");
    assert_eq!(l.next_due_at().await.expect("next"), Some(now));
    f.close().await;
}

#[tokio::test]
async fn a_due_delivery_comes_back_with_every_value_as_stored() {
    // The due query packs eight of a row's values into one JSON array (`meta`) that `due_of`
    // unpacks: each must come back in its own place, NULLs as `None`. A payment event beside
    // it carries a `payment_id`.
    let f = Fixture::new().await;
    let (l, run) = (&f.l, f.run);
    let mut c = PageCommit::default();
    c.events.push(event("evt_m1", 42, run));
    let mut paid = event("evt_m2", 43, run);
    paid.payment_id = Some(crate::types::PaymentId(7));
    c.events.push(paid);
    for id in ["evt_m1", "evt_m2"] {
        c.deliveries.push(webhook_delivery(id, "erp-2", Utc::now()));
    }
    l.commit_page(run, c).await.expect("commit");
    let first = l.due_deliveries(Utc::now(), 10).await.expect("due");
    assert_eq!(first.len(), 2);
    let m2 = &first[1];
    assert_eq!(
        (m2.event_id.as_str(), m2.link_id, m2.payment_id, m2.attempts),
        ("evt_m2", 43, Some(7), 0)
    );
    // One failed attempt, due again at once: `attempts` is 1.
    let again = Utc::now() - chrono::Duration::seconds(1);
    let failed = AttemptOutcome {
        delivery_id: first[0].id,
        attempted_at: again,
        duration_ms: 5,
        status: Some(500),
        error: Some("HTTP 500".into()),
        result: AttemptResult::Retry(again),
    };
    l.record_attempts(&[&failed]).await.expect("record");
    let due = l.due_deliveries(Utc::now(), 10).await.expect("due");
    assert_eq!(due.len(), 2);
    let d = &due[0];
    assert_eq!(d.id, first[0].id);
    assert_eq!(d.event_id, "evt_m1");
    assert_eq!(d.subscriber, "erp-2");
    assert_eq!(d.channel, Channel::Webhook);
    assert_eq!(d.attempts, 1);
    assert_eq!(d.run_id, Some(run));
    assert_eq!(d.link_id, 42);
    assert_eq!(d.payment_id, None);
    assert_eq!(d.account_id, ACCOUNT);
    let envelope: serde_json::Value = serde_json::from_str(&d.envelope).expect("envelope");
    assert_eq!(envelope["id"], "evt_m1");
    assert_eq!(envelope["data"]["object"]["id"], 42);
    f.close().await;
}

#[tokio::test]
async fn a_delivery_keyed_by_its_event_in_the_commit_or_the_commit_fails_whole() {
    // Each delivery takes its event's ordering key; a payment event's carries the payment.
    let f = Fixture::new().await;
    let (l, run) = (&f.l, f.run);
    let mut c = PageCommit::default();
    let mut paid = event("evt_k1", 42, run);
    paid.payment_id = Some(crate::types::PaymentId(7));
    paid.event.sequence = 5;
    c.events.push(paid);
    c.deliveries
        .push(webhook_delivery("evt_k1", "erp", Utc::now()));
    l.commit_page(run, c).await.expect("commit");
    let key: (String, i64, Option<i64>, i64) = sqlx::query_as(
        "SELECT account_id, link_id, payment_id, sequence FROM delivery WHERE event_id = 'evt_k1'",
    )
    .fetch_one(l.sqlite_pool())
    .await
    .expect("key");
    assert_eq!(key, (ACCOUNT.to_string(), 42, Some(7), 5));

    // A delivery whose event is not in its commit: nothing of the commit is written.
    let mut c = PageCommit::default();
    c.events.push(event("evt_k2", 43, run));
    c.deliveries
        .push(webhook_delivery("evt_k2", "erp", Utc::now()));
    c.deliveries
        .push(webhook_delivery("evt_elsewhere", "erp", Utc::now()));
    let err = l.commit_page(run, c).await.expect_err("no event for it");
    assert!(matches!(err, LedgerError::Corrupt(_)), "{err:?}");
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM link_event WHERE id = 'evt_k2'")
        .fetch_one(l.sqlite_pool())
        .await
        .expect("count");
    assert_eq!(n, 0);
    f.close().await;
}
