//! The retry schedule run in full on a manual clock: 27.6 hours of retries in milliseconds, with
//! real HTTP to the receiver.

use std::sync::Arc;
use std::time::Duration;

use singapay_sync::ledger::DeliveryAttemptRow;
use singapay_sync::sandbox::strings;
use singapay_sync::time::{Clock, ManualClock};
use singapay_sync::types::DeliveryState;

use crate::harness::*;

const DEFAULT: [u64; 7] = [5, 300, 1800, 7200, 18_000, 36_000, 36_000];

/// A manual clock reading now.
pub(crate) fn manual() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(chrono::Utc::now()))
}

/// The app on `clock` with `erp` subscribed; baseline, one payment on link 103, one more pass:
/// one event owed to every subscriber.
async fn one_event(
    erp: &Receiver,
    clock: &Arc<ManualClock>,
    edit: impl FnOnce(&mut singapay_sync::sandbox::DaemonConfig),
) -> TestApp {
    let t = TestApp::start(TestSandbox::start().await, clock.clone(), |c| {
        subscribe(c, "erp", erp, Some(LINK_EVENTS));
        edit(c);
    })
    .await;
    t.sync_ok().await;
    t.sandbox.pay(103).await;
    assert_eq!(link_events(&t.sync_ok().await), 1);
    t
}

/// Dispatches, then jumps the clock to the next due time, until nothing is pending.
async fn drain(t: &TestApp, clock: &ManualClock, max_rounds: usize) -> usize {
    let mut attempts = 0;
    for _ in 0..max_rounds {
        attempts += t.dispatch().await.attempted;
        match t.app.ledger.next_due_at().await.unwrap() {
            Some(at) => clock.set(at),
            None => break,
        }
    }
    attempts
}

fn gaps_secs(attempts: &[DeliveryAttemptRow]) -> Vec<f64> {
    attempts
        .windows(2)
        .map(|w| (w[1].attempted_at - w[0].attempted_at).num_milliseconds() as f64 / 1000.0)
        .collect()
}

#[tokio::test]
async fn a_receiver_failing_every_attempt_ends_dead_after_8_attempts_on_schedule() {
    let erp = Receiver::start(vec![500; 20]).await;
    let clock = manual();
    let t = one_event(&erp, &clock, |_| {}).await;
    let start = clock.now();
    assert_eq!(drain(&t, &clock, 50).await, 8);
    assert_eq!(erp.hits().len(), 8);
    let row = &t.deliveries_of("erp").await[0];
    assert_eq!((row.state, row.attempts), (DeliveryState::Dead, 8));
    let log = t.app.ledger.delivery_attempts(row.id).await.unwrap();
    let gaps = gaps_secs(&log);
    assert_eq!(gaps.len(), 7);
    let mut jittered = 0;
    for (gap, want) in gaps.iter().zip(DEFAULT) {
        let want = want as f64;
        assert!(
            (want * 0.8..=want * 1.2).contains(gap),
            "gap {gap}s outside {want}s ±20% ({gaps:?})"
        );
        // The 5 s slot is raised to the 60 s floor only for timeouts and 429s, not a 500.
        if (gap - want).abs() > want * 0.002 {
            jittered += 1;
        }
    }
    // With jitter off every gap would be exactly its slot; seven uniform draws over ±20% all
    // landing within ±0.2% of the slot has a chance of about 1e-14.
    assert!(jittered >= 1, "no gap is jittered: {gaps:?}");
    let total = (clock.now() - start).num_seconds();
    assert!(
        (79_444..=119_166).contains(&total),
        "{total} s ≈ 27.6 h ± 20%"
    );
}

#[tokio::test]
async fn five_failures_then_success_is_delivered_after_six_attempts() {
    let erp = Receiver::start(vec![500, 502, 503, 504, 500]).await;
    let clock = manual();
    let t = one_event(&erp, &clock, |_| {}).await;
    assert_eq!(drain(&t, &clock, 50).await, 6);
    let row = &t.deliveries_of("erp").await[0];
    assert_eq!((row.state, row.attempts), (DeliveryState::Delivered, 6));
    let log = t.app.ledger.delivery_attempts(row.id).await.unwrap();
    assert_eq!(
        log.iter().map(|a| a.status).collect::<Vec<_>>(),
        [
            Some(500),
            Some(502),
            Some(503),
            Some(504),
            Some(500),
            Some(200)
        ]
    );
    let hits = erp.hits();
    assert_eq!(hits.len(), 6);
    assert!(
        hits.iter()
            .all(|h| h.verified && h.webhook_id == hits[0].webhook_id)
    );
}

#[tokio::test]
async fn gone_disables_the_subscriber_after_one_attempt_until_re_enabled() {
    let erp = Receiver::start(vec![410]).await;
    let smtp = SmtpSink::start().await;
    let clock = manual();
    // Finance only wants status changes, so the payment below makes no digest: the one mail
    // is the notice that the ERP's hook was disabled.
    let t = one_event(&erp, &clock, |c| {
        mail_to(
            c,
            &smtp,
            &["finance@toko.example"],
            Some(&["payment_link.status_changed"]),
        );
    })
    .await;
    let d = t.dispatch().await;
    assert_eq!((d.attempted, d.disabled), (1, 1));
    assert_eq!(t.app.ledger.disabled_subscribers().await.unwrap(), ["erp"]);
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1);
    let notice = mail_parser::MessageParser::default()
        .parse(&mails[0].data)
        .unwrap();
    assert_eq!(
        notice.subject().unwrap(),
        "SingaPay: webhook subscriber erp disabled (410 Gone)"
    );
    assert!(
        notice
            .body_text(0)
            .unwrap()
            .contains("subscribers enable erp")
    );
    // A later event for the disabled subscriber is parked, not sent.
    t.sandbox.pay(103).await;
    t.sync_ok().await;
    assert_eq!(drain(&t, &clock, 10).await, 0);
    assert_eq!(erp.hits().len(), 1);
    let parked = t.deliveries_of("erp").await;
    assert_eq!(parked.len(), 2);
    assert!(parked.iter().all(|d| d.state == DeliveryState::Disabled));
    // Re-enabled, both go out (the receiver now answers 200).
    assert_eq!(
        t.app
            .ledger
            .enable_subscriber("erp", clock.now())
            .await
            .unwrap(),
        2
    );
    assert_eq!(t.dispatch().await.delivered, 2);
    assert_eq!(erp.hits().len(), 3);
}

#[tokio::test]
async fn a_429_with_retry_after_7200_on_a_5s_slot_waits_about_10s() {
    let erp = Receiver::start(vec![429]).await;
    let clock = manual();
    let t = one_event(&erp, &clock, |_| {}).await;
    let at = clock.now();
    t.dispatch().await;
    let next = t.app.ledger.next_due_at().await.unwrap().unwrap();
    let wait = (next - at).num_milliseconds() as f64 / 1000.0;
    // Clamped to [s, 2s] where s = 5 s ± 20%: 2s ∈ [8, 12].
    assert!((8.0..=12.0).contains(&wait), "waited {wait} s");
    assert_eq!(drain(&t, &clock, 5).await, 1);
    assert_eq!(
        erp.hits().iter().map(|h| h.answered).collect::<Vec<_>>(),
        [429, 200]
    );
}

#[tokio::test]
async fn a_receiver_that_never_answers_is_cut_at_the_delivery_timeout() {
    // Accepts connections, never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let mut rx = Receiver::start(vec![]).await;
    rx.url = format!("http://{addr}/hooks");
    let clock = manual();
    let t = one_event(&rx, &clock, |c| {
        c.retry_schedule = Some(strings(&["5s"]));
        c.delivery_timeout = Some("300ms".into());
    })
    .await;
    let at = clock.now();
    let (d, took) = t.timed_dispatch().await;
    assert_eq!(d.retrying, 1);
    assert!(
        took >= Duration::from_millis(280) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let row = &t.deliveries_of("erp").await[0];
    assert!(
        row.last_error.as_deref().unwrap().contains("timed out"),
        "{row:?}"
    );
    // A timeout waits the 60 s floor on a 5 s slot (5 s ± 20% is always below it), counted
    // from the attempt's recorded start.
    let attempt = &t.app.ledger.delivery_attempts(row.id).await.unwrap()[0];
    assert!((attempt.attempted_at - at).num_milliseconds().abs() < 1);
    let next = t.app.ledger.next_due_at().await.unwrap().unwrap();
    assert_eq!(
        (next - attempt.attempted_at).num_milliseconds(),
        60_000,
        "{row:?}"
    );
}

/// `erp` subscribed on a manual clock, answering 500 to its first POST; after the baseline, link
/// 78 (which allows 3 payments) is paid three times in the sandbox, so the next pass makes its
/// `paid` (sequence 1) and `exhausted` (sequence 2).
async fn erp_failing_once_with_link_78_paid_out() -> (Receiver, Arc<ManualClock>, TestApp) {
    let erp = Receiver::start(vec![500]).await;
    let clock = manual();
    let t = TestApp::start(TestSandbox::start().await, clock.clone(), |c| {
        subscribe(c, "erp", &erp, Some(LINK_EVENTS));
    })
    .await;
    t.sync_ok().await;
    for _ in 0..3 {
        t.sandbox.pay(78).await;
    }
    (erp, clock, t)
}

#[tokio::test]
async fn one_links_events_reach_a_subscriber_in_sequence_order_even_across_a_failure() {
    // The first delivery (link 78's `paid`, sequence 1) fails once.
    let (erp, clock, t) = erp_failing_once_with_link_78_paid_out().await;
    t.sync_ok().await;
    let d = t.dispatch().await;
    // Only sequence 1 was tried; sequence 2 waits behind it, though due.
    assert_eq!((d.attempted, d.retrying), (1, 1), "{d:?}");
    assert_eq!(t.dispatch().await.attempted, 0);
    clock.set(t.app.ledger.next_due_at().await.unwrap().unwrap());
    assert_eq!(t.dispatch().await.delivered, 2);
    let order: Vec<(i64, u16)> = erp
        .hits()
        .iter()
        .map(|h| (h.body["sequence"].as_i64().unwrap(), h.answered))
        .collect();
    assert_eq!(order, [(1, 500), (1, 200), (2, 200)]);
}

#[tokio::test]
async fn batches_claimed_while_one_is_in_flight_keep_each_links_order_and_send_each_event_once() {
    // One delivery per batch: every batch is full, so each next one is claimed while the one
    // before it is in flight, and the events of one link fall in consecutive batches. The first
    // POST fails once. Link 78 gets two events; four more links are paid.
    let (erp, clock, t) = erp_failing_once_with_link_78_paid_out().await;
    for id in [5, 10, 15, 20] {
        t.sandbox.pay(id).await;
    }
    let events = link_events(&t.sync_ok().await) as usize;
    assert!(events >= 6, "{events} events");
    let dispatcher = one_per_batch(&t.app.ledger, &erp, clock.clone());
    let first = dispatcher.dispatch_due().await.unwrap();
    assert_eq!((first.retrying, first.dead), (1, 0), "{first:?}");
    // Only the failed event's later ones on its link wait for its retry.
    let failed_link = erp.hits()[0].body["data"]["object"]["id"].as_i64().unwrap();
    assert!(first.delivered >= events - 2, "{first:?}");
    clock.set(t.app.ledger.next_due_at().await.unwrap().unwrap());
    let second = dispatcher.dispatch_due().await.unwrap();
    assert_eq!((second.retrying, second.dead), (0, 0), "{second:?}");
    assert_eq!(first.delivered + second.delivered, events);
    assert_eq!(dispatcher.dispatch_due().await.unwrap().attempted, 0);

    let hits = erp.hits();
    assert_eq!(hits.len(), events + 1);
    assert!(hits.iter().all(|h| h.verified));
    assert_eq!(hits.iter().filter(|h| h.answered == 500).count(), 1);
    assert_eq!(hits[0].answered, 500);
    // Each link's events arrive in sequence order, each delivered (200) exactly once.
    let mut by_link: std::collections::BTreeMap<i64, Vec<(i64, u16)>> = Default::default();
    for h in &hits {
        let link = h.body["data"]["object"]["id"].as_i64().unwrap();
        by_link
            .entry(link)
            .or_default()
            .push((h.body["sequence"].as_i64().unwrap(), h.answered));
    }
    assert_eq!(by_link.len(), 5, "{by_link:?}");
    for (link, seen) in &by_link {
        let delivered: Vec<i64> = seen.iter().filter(|s| s.1 == 200).map(|s| s.0).collect();
        let expected: Vec<i64> = (1..=delivered.len() as i64).collect();
        assert_eq!(delivered, expected, "link {link}: {seen:?}");
        if *link == failed_link {
            assert_eq!(seen[..2], [(1, 500), (1, 200)], "link {link}: {seen:?}");
        }
    }
    assert_eq!(by_link[&78].iter().filter(|s| s.1 == 200).count(), 2);
    let ids: std::collections::BTreeSet<&str> = hits
        .iter()
        .filter(|h| h.answered == 200)
        .map(|h| h.webhook_id.as_str())
        .collect();
    assert_eq!(ids.len(), events);
    let rows = deliveries_of(&t.app.ledger, "erp").await;
    assert_eq!(rows.len(), events);
    assert!(
        rows.iter().all(|r| r.state == DeliveryState::Delivered),
        "{rows:?}"
    );
    assert_eq!(
        rows.iter().map(|r| r.attempts).sum::<i64>(),
        events as i64 + 1
    );
}

/// A slow and a fast subscriber (`names`, answering in `delays_ms`), each owed one event of each
/// of 12 payments on 12 links (ids 5, 10, … 60 are open and unexpired in the seed), at most 2
/// requests in flight to each (`per_subscriber_concurrency`) and `concurrency` in all.
async fn slow_and_fast(
    names: [&str; 2],
    delays_ms: [u64; 2],
    concurrency: Option<u64>,
) -> (TestApp, Receiver, Receiver) {
    use std::sync::atomic::Ordering::Relaxed;
    let slow = Receiver::start(vec![]).await;
    let fast = Receiver::start(vec![]).await;
    slow.delay_ms.store(delays_ms[0], Relaxed);
    fast.delay_ms.store(delays_ms[1], Relaxed);
    let t = TestApp::spawn_with(|c| {
        subscribe(c, names[0], &slow, Some(LINK_EVENTS));
        subscribe(c, names[1], &fast, Some(LINK_EVENTS));
        c.delivery_concurrency = concurrency;
        c.per_subscriber_concurrency = Some(2);
    })
    .await;
    t.sync_ok().await;
    for id in (5..=60).step_by(5) {
        t.sandbox.pay(id).await;
    }
    assert_eq!(link_events(&t.sync_ok().await), 12);
    (t, slow, fast)
}

#[tokio::test]
async fn a_slow_subscriber_gets_at_most_its_share_of_the_requests_in_flight() {
    // 16 in flight in all (the default): without the per-subscriber bound the slow one would
    // hold up to 12.
    let (t, slow, fast) = slow_and_fast(["slow", "fast"], [150, 20], None).await;
    let d = t.dispatch().await;
    assert_eq!(d.delivered, 24, "{d:?}");
    use std::sync::atomic::Ordering::SeqCst;
    assert_eq!(
        slow.max_in_flight.load(SeqCst),
        2,
        "the slow subscriber's bound"
    );
    assert_eq!(
        fast.max_in_flight.load(SeqCst),
        2,
        "the fast subscriber's bound"
    );
    assert_eq!(slow.hits().len(), 12);
    assert_eq!(fast.hits().len(), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_waiting_for_its_own_slots_never_holds_the_others() {
    // 4 requests in flight in all. The slow one comes first in every order of the batch (its
    // name, its deliveries' ids) and answers in 600 ms: while 2 of its requests are on their way,
    // its other groups wait for its own bound, never in the 2 slots left to the fast one, which
    // gets all 12 events through before the slow one's first answer.
    let (t, slow, fast) = slow_and_fast(["a-slow", "b-fast"], [600, 20], Some(4)).await;
    let watch = async {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while fast.hits().len() < 12 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        (fast.hits().len(), slow.hits().len())
    };
    let (d, (fast_done, slow_then)) = tokio::join!(t.dispatch(), watch);
    assert_eq!(fast_done, 12);
    assert_eq!(
        slow_then, 0,
        "the fast subscriber's 12 went out while the slow one's first 2 were on their way"
    );
    assert_eq!(d.delivered, 24, "{d:?}");
    use std::sync::atomic::Ordering::SeqCst;
    assert_eq!(slow.max_in_flight.load(SeqCst), 2);
    assert_eq!(fast.max_in_flight.load(SeqCst), 2);
    assert_eq!(slow.hits().len(), 12);
}

#[tokio::test]
async fn the_next_due_time_skips_an_event_held_behind_its_link_but_not_a_payment_of_that_link() {
    // Link 7: event 1 due in an hour, event 3 due now but held behind it; a payment's event on
    // link 7 (sequence 2, an order of its own) fails now and retries about 5 s later. The next due
    // time is that retry: not now (event 3 is held) nor in an hour (the payment is not behind
    // its link's events). Then the hour, then nothing. Both ledgers (one text, two planners).
    use singapay_sync::event::{Event, EventData};
    use singapay_sync::ledger::{NewDelivery, NewEvent, PageCommit};
    use singapay_sync::types::{Channel, EventId, EventType, LinkId, PaymentId, Trigger};
    let erp = Receiver::start(vec![500]).await;
    let clock = manual();
    let t = TestApp::start(TestSandbox::start().await, clock.clone(), |c| {
        subscribe(c, "erp", &erp, Some(LINK_EVENTS));
    })
    .await;
    let ledger = &t.app.ledger;
    // The ledger keeps microseconds.
    let now = chrono::SubsecRound::trunc_subsecs(clock.now(), 6);
    let hour = now + chrono::Duration::hours(1);
    let run = ledger
        .start_run(&account(), Trigger::Manual, false, now)
        .await
        .unwrap();
    let mut commit = PageCommit::default();
    for (id, sequence, event_type, payment, due) in [
        ("evt_a1", 1, EventType::Paid, None, hour),
        ("evt_p2", 2, EventType::PaymentPaid, Some(9), now),
        ("evt_a3", 3, EventType::Paid, None, now),
    ] {
        let event = Event {
            account_id: account(),
            created_at: now,
            data: EventData {
                object: serde_json::json!({"id": 7}),
                payments: None,
                previous_attributes: None,
                usage_delta: None,
            },
            id: EventId(id.into()),
            sequence,
            event_type,
        };
        let mut e = NewEvent::new(event, LinkId(7), run).unwrap();
        e.payment_id = payment.map(PaymentId);
        commit.events.push(e);
        commit.deliveries.push(NewDelivery {
            event_id: id.into(),
            subscriber: "erp".into(),
            channel: Channel::Webhook,
            next_attempt_at: due,
        });
    }
    ledger.commit_page(run, commit).await.unwrap();
    assert_eq!(ledger.next_due_at().await.unwrap(), Some(now));

    let d = t.dispatch().await;
    assert_eq!((d.attempted, d.retrying), (1, 1), "{d:?}");
    // The retry's time (5 s, with the config's jitter).
    let rows = t.deliveries_of("erp").await;
    let p2 = rows.iter().find(|r| r.event_id == "evt_p2").unwrap();
    let retry = p2.next_attempt_at.unwrap();
    assert!(p2.attempts == 1 && retry > now && retry < hour, "{p2:?}");
    assert_eq!(ledger.next_due_at().await.unwrap(), Some(retry));
    clock.set(retry);
    assert_eq!(t.dispatch().await.delivered, 1);
    assert_eq!(ledger.next_due_at().await.unwrap(), Some(hour));
    clock.set(hour);
    assert_eq!(t.dispatch().await.delivered, 2);
    assert_eq!(ledger.next_due_at().await.unwrap(), None);
    let order: Vec<(String, u16)> = erp
        .hits()
        .into_iter()
        .map(|h| (h.webhook_id, h.answered))
        .collect();
    let expected = [
        ("evt_p2", 500),
        ("evt_p2", 200),
        ("evt_a1", 200),
        ("evt_a3", 200),
    ];
    assert_eq!(order, expected.map(|(id, status)| (id.to_string(), status)));
}
