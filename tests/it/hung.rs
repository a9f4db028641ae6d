//! A webhook subscriber that hangs (answers after 10 s, past a 300 ms `delivery.timeout`) beside
//! one that answers at once: given up on after two timeouts in a row, within a batch or across
//! batches, its deliveries put off to the retry time instead of holding the other's.

use std::sync::Arc;
use std::time::Duration;

use singapay_sync::ledger::DeliveryRow;
use singapay_sync::time::{Clock, ManualClock};
use singapay_sync::types::DeliveryState;

use crate::harness::*;
use crate::schedule::manual;

/// A subscriber `hung` whose receiver answers only after 10 s and a subscriber `fast`, on
/// `clock` (and `edit`'s settings), each owed one event of each of `links` payments on as many
/// links (5, 10, … at most 60: open and unexpired in the seed).
async fn hung_and_fast(
    clock: &Arc<ManualClock>,
    links: i64,
    edit: impl FnOnce(&mut singapay_sync::sandbox::DaemonConfig),
) -> (TestApp, Receiver, Receiver) {
    let hung = Receiver::start(vec![]).await;
    let fast = Receiver::start(vec![]).await;
    hung.delay_ms
        .store(10_000, std::sync::atomic::Ordering::Relaxed);
    let t = TestApp::start(TestSandbox::start().await, clock.clone(), |c| {
        subscribe(c, "hung", &hung, Some(LINK_EVENTS));
        subscribe(c, "fast", &fast, Some(LINK_EVENTS));
        edit(c);
    })
    .await;
    t.sync_ok().await;
    for id in (1..=links).map(|i| i * 5) {
        t.sandbox.pay(id).await;
    }
    assert_eq!(link_events(&t.sync_ok().await), links as u64);
    (t, hung, fast)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_hangs_is_given_up_on_for_the_batch_and_its_other_deliveries_wait() {
    // One request in flight per subscriber, a 300 ms timeout, 12 events for each. The hung
    // subscriber times out twice in a row; its other 10 are then put off to the timed-out
    // attempts' retry time, unsent and not counted, instead of holding the batch (and the
    // claim of the next one) for 12 × 300 ms. The other subscriber gets all of its 12.
    use std::sync::atomic::Ordering::Relaxed;
    let clock = manual();
    let (t, hung, fast) = hung_and_fast(&clock, 12, |c| {
        c.per_subscriber_concurrency = Some(1);
        c.delivery_timeout = Some("300ms".into());
    })
    .await;
    let at = clock.now();

    let (d, took) = t.timed_dispatch().await;
    assert_eq!(
        (d.attempted, d.delivered, d.retrying, d.dead, d.deferred),
        (14, 12, 2, 0, 10),
        "{d:?}"
    );
    assert!(
        took < Duration::from_millis(2500),
        "two timeouts, not twelve: {took:?}"
    );
    assert_eq!(fast.hits().len(), 12);
    let rows = t.deliveries_of("hung").await;
    assert_eq!(rows.len(), 12);
    let (timed_out, put_off): (Vec<_>, Vec<_>) = rows.iter().partition(|r| r.attempts == 1);
    assert_eq!((timed_out.len(), put_off.len()), (2, 10), "{rows:?}");
    // A timeout's retry waits the 60 s floor (the 5 s slot is below it); the put-off ones wait
    // for the same time, with no attempt logged and their count untouched.
    // (The ledger keeps microseconds.)
    let due = chrono::SubsecRound::trunc_subsecs(at + chrono::Duration::seconds(60), 6);
    for r in &timed_out {
        assert_eq!(r.state, DeliveryState::Pending);
        assert!(
            r.last_error.as_deref().unwrap().contains("timed out"),
            "{r:?}"
        );
        assert_eq!(r.next_attempt_at, Some(due), "{r:?}");
        assert_eq!(t.app.ledger.delivery_attempts(r.id).await.unwrap().len(), 1);
    }
    for r in &put_off {
        assert_eq!(
            (r.state, r.attempts, r.last_status),
            (DeliveryState::Pending, 0, None)
        );
        assert_eq!(r.next_attempt_at, Some(due), "{r:?}");
        assert!(
            r.last_error.as_deref().unwrap().contains("put off"),
            "{r:?}"
        );
        assert!(
            t.app
                .ledger
                .delivery_attempts(r.id)
                .await
                .unwrap()
                .is_empty()
        );
    }
    // Nothing is claimed or due before then.
    assert_eq!(t.app.ledger.next_due_at().await.unwrap(), Some(due));
    assert_eq!(t.dispatch().await.attempted, 0);

    // The subscriber is back: at the retry time every one of its 12 goes out, once.
    hung.delay_ms.store(0, Relaxed);
    clock.set(due);
    let d = t.dispatch().await;
    assert_eq!((d.attempted, d.delivered), (12, 12), "{d:?}");
    let rows = t.deliveries_of("hung").await;
    assert!(
        rows.iter().all(|r| r.state == DeliveryState::Delivered),
        "{rows:?}"
    );
    assert_eq!(rows.iter().map(|r| r.attempts).sum::<i64>(), 14);
    assert_eq!(hung.delivered_ids().len(), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_given_up_on_is_not_tried_again_by_later_batches_before_its_retry_time() {
    // The same hung and fast subscribers, in batches of 6 (3 events of each): the first batch
    // gives up on the hung one after 2 timeouts; its other deliveries, in later batches or
    // not claimed yet, and an event that comes after, are put off without a POST, and every
    // batch after the first goes out at the fast one's pace.
    use std::sync::atomic::Ordering::Relaxed;
    let clock = manual();
    let (t, hung, fast) = hung_and_fast(&clock, 11, |_| {}).await;
    let dispatcher = dispatcher_to(
        &t.app.ledger,
        &[("hung", &hung), ("fast", &fast)],
        Duration::from_millis(300),
        clock.clone(),
    )
    .with_per_subscriber_limit(1)
    .with_batch(6);
    let at = clock.now();

    let started = std::time::Instant::now();
    let d = dispatcher.dispatch_due().await.unwrap();
    let took = started.elapsed();
    assert_eq!(
        (d.attempted, d.delivered, d.retrying, d.deferred),
        (13, 11, 2, 9),
        "{d:?}"
    );
    assert!(took < Duration::from_millis(2500), "{took:?}");
    let due = chrono::SubsecRound::trunc_subsecs(at + chrono::Duration::seconds(60), 6);
    let rows = t.deliveries_of("hung").await;
    assert_eq!(rows.len(), 11);
    assert_eq!(
        rows.iter().map(|r| r.attempts).sum::<i64>(),
        2,
        "two POSTs to the hung subscriber in all: {rows:?}"
    );
    assert!(
        rows.iter()
            .all(|r| r.state == DeliveryState::Pending && r.next_attempt_at == Some(due)),
        "{rows:?}"
    );
    assert_eq!(fast.hits().len(), 11);

    // A new event while the hung subscriber is given up on: put off at once, no POST.
    t.sandbox.pay(60).await;
    assert_eq!(link_events(&t.sync_ok().await), 1);
    let d = dispatcher.dispatch_due().await.unwrap();
    assert_eq!((d.attempted, d.delivered, d.deferred), (1, 1, 1), "{d:?}");
    let rows = t.deliveries_of("hung").await;
    assert_eq!(rows.len(), 12);
    assert_eq!(rows.iter().map(|r| r.attempts).sum::<i64>(), 2);
    assert!(
        rows.iter().all(|r| r.next_attempt_at == Some(due)),
        "{rows:?}"
    );

    // At the retry time the subscriber is tried again, and it answers: all 12 go out, once.
    hung.delay_ms.store(0, Relaxed);
    clock.set(due);
    let d = dispatcher.dispatch_due().await.unwrap();
    assert_eq!((d.attempted, d.delivered, d.deferred), (12, 12, 0), "{d:?}");
    assert_eq!(hung.delivered_ids().len(), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_hangs_owed_one_delivery_per_batch_is_given_up_on_at_its_second_timeout()
{
    // Events come one at a time, each dispatched in a batch of its own: the hung subscriber is
    // owed one delivery per batch, so no batch sees two timeouts. The count goes on from batch
    // to batch: the second batch's timeout gives up on it, and the third batch puts its
    // delivery off without a POST instead of holding the fast subscriber for one more timeout.
    use std::sync::atomic::Ordering::Relaxed;
    let clock = manual();
    let (t, hung, fast) = hung_and_fast(&clock, 1, |c| {
        c.delivery_timeout = Some("300ms".into());
    })
    .await;
    let at = clock.now();
    let due = chrono::SubsecRound::trunc_subsecs(at + chrono::Duration::seconds(60), 6);

    // Batch 1: one timeout (the hung subscriber's delivery retries at the 60 s floor).
    let d = t.dispatch().await;
    assert_eq!(
        (d.attempted, d.delivered, d.retrying, d.deferred),
        (2, 1, 1, 0),
        "{d:?}"
    );
    // Batch 2, an event of another link: its POST times out too, the second in a row.
    t.sandbox.pay(10).await;
    assert_eq!(link_events(&t.sync_ok().await), 1);
    let d = t.dispatch().await;
    assert_eq!(
        (d.attempted, d.delivered, d.retrying, d.deferred),
        (2, 1, 1, 0),
        "{d:?}"
    );
    let posts = |rows: &[DeliveryRow]| rows.iter().map(|r| r.attempts).sum::<i64>();
    assert_eq!(posts(&t.deliveries_of("hung").await), 2);
    // Batch 3: given up on until the retry time; put off, no POST, no timeout waited out.
    t.sandbox.pay(15).await;
    assert_eq!(link_events(&t.sync_ok().await), 1);
    let (d, took) = t.timed_dispatch().await;
    assert_eq!(
        (d.attempted, d.delivered, d.retrying, d.deferred),
        (1, 1, 0, 1),
        "{d:?}"
    );
    assert!(
        took < Duration::from_millis(300),
        "no timeout waited: {took:?}"
    );
    assert_eq!(fast.hits().len(), 3);
    let rows = t.deliveries_of("hung").await;
    assert_eq!(rows.len(), 3);
    assert_eq!(
        posts(&rows),
        2,
        "no third POST to the hung subscriber: {rows:?}"
    );
    assert!(
        rows.iter()
            .all(|r| r.state == DeliveryState::Pending && r.next_attempt_at == Some(due)),
        "{rows:?}"
    );

    // At the retry time the subscriber is tried afresh, and it answers: all 3 go out.
    hung.delay_ms.store(0, Relaxed);
    clock.set(due);
    let d = t.dispatch().await;
    assert_eq!((d.attempted, d.delivered, d.deferred), (3, 3, 0), "{d:?}");
}
