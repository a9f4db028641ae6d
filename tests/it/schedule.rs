//! The retry schedule run in full on a manual clock: 27.6 hours of retries in milliseconds, with
//! real HTTP to the receiver.

use std::sync::Arc;
use std::time::Duration;

use singapay_sync::app::App;
use singapay_sync::time::{Clock, ManualClock};

use crate::harness::*;

const DEFAULT: [u64; 7] = [5, 300, 1800, 7200, 18_000, 36_000, 36_000];

/// Baseline, one payment on link 103, one more pass: one event owed to every subscriber.
async fn one_event(setup: &Setup, sandbox: &TestSandbox, clock: &Arc<ManualClock>) -> App {
    let app = setup.app_with_clock(clock.clone()).await;
    app.sync_all(None).await[0].1.as_ref().unwrap();
    sandbox.pay(103).await;
    let s = app.sync_all(None).await;
    assert_eq!(s[0].1.as_ref().unwrap().events, 1);
    app
}

/// Dispatches, then jumps the clock to the next due time, until nothing is pending.
async fn drain(app: &App, clock: &ManualClock, max_rounds: usize) -> usize {
    let mut attempts = 0;
    for _ in 0..max_rounds {
        attempts += app.dispatcher.dispatch_due().await.unwrap().attempted;
        match app.ledger.next_due_at().await.unwrap() {
            Some(t) => clock.set(t),
            None => break,
        }
    }
    attempts
}

fn gaps_secs(app_attempts: &[singapay_sync::ledger::DeliveryAttemptRow]) -> Vec<f64> {
    app_attempts
        .windows(2)
        .map(|w| (w[1].attempted_at - w[0].attempted_at).num_milliseconds() as f64 / 1000.0)
        .collect()
}

#[tokio::test]
async fn a_receiver_failing_every_attempt_ends_dead_after_8_attempts_on_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = TestSandbox::start().await;
    let erp = Receiver::start(vec![500; 20]).await;
    let mut setup = new_setup(&dir, &sandbox);
    setup.webhooks.push(("erp".into(), erp.clone(), None));
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let app = one_event(&setup, &sandbox, &clock).await;
    let start = clock.now();
    let attempts = drain(&app, &clock, 50).await;
    assert_eq!(attempts, 8);
    assert_eq!(erp.hits().len(), 8);
    let row = &app
        .ledger
        .list_deliveries(None, Some("erp"), 10)
        .await
        .unwrap()[0];
    assert_eq!((row.state.as_str(), row.attempts), ("dead", 8));
    let log = app.ledger.delivery_attempts(row.id).await.unwrap();
    let gaps = gaps_secs(&log);
    assert_eq!(gaps.len(), 7);
    for (gap, want) in gaps.iter().zip(DEFAULT) {
        let want = want as f64;
        assert!(
            (want * 0.8..=want * 1.2).contains(gap),
            "gap {gap}s outside {want}s ±20% ({gaps:?})"
        );
    }
    let total = (clock.now() - start).num_seconds();
    assert!(
        (79_444..=119_166).contains(&total),
        "{total} s ≈ 27.6 h ± 20%"
    );
}

#[tokio::test]
async fn five_failures_then_success_is_delivered_after_six_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = TestSandbox::start().await;
    let erp = Receiver::start(vec![500, 502, 503, 504, 500]).await;
    let mut setup = new_setup(&dir, &sandbox);
    setup.webhooks.push(("erp".into(), erp.clone(), None));
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let app = one_event(&setup, &sandbox, &clock).await;
    assert_eq!(drain(&app, &clock, 50).await, 6);
    let row = &app
        .ledger
        .list_deliveries(None, Some("erp"), 10)
        .await
        .unwrap()[0];
    assert_eq!((row.state.as_str(), row.attempts), ("delivered", 6));
    let log = app.ledger.delivery_attempts(row.id).await.unwrap();
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
    assert!(
        hits.iter()
            .all(|h| h.verified && h.webhook_id == hits[0].webhook_id)
    );
}

#[tokio::test]
async fn gone_disables_the_subscriber_after_one_attempt_until_re_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = TestSandbox::start().await;
    let erp = Receiver::start(vec![410]).await;
    let smtp = SmtpSink::start().await;
    let mut setup = new_setup(&dir, &sandbox);
    setup.webhooks.push(("erp".into(), erp.clone(), None));
    // Finance only wants status changes, so the payment below makes no digest: the one mail
    // is the notice that the ERP's hook was disabled.
    setup.smtp = Some((
        smtp.clone(),
        vec!["finance@toko.example"],
        Some(vec!["payment_link.status_changed"]),
    ));
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let app = one_event(&setup, &sandbox, &clock).await;
    let d = app.dispatcher.dispatch_due().await.unwrap();
    assert_eq!((d.attempted, d.disabled), (1, 1));
    assert_eq!(app.ledger.disabled_subscribers().await.unwrap(), ["erp"]);
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
    sandbox.pay(103).await;
    app.sync_all(None).await;
    assert_eq!(drain(&app, &clock, 10).await, 0);
    assert_eq!(erp.hits().len(), 1);
    assert_eq!(
        app.ledger
            .list_deliveries(Some("disabled"), None, 10)
            .await
            .unwrap()
            .len(),
        2
    );
    // Re-enabled, both go out (the receiver now answers 200).
    assert_eq!(
        app.ledger
            .enable_subscriber("erp", clock.now())
            .await
            .unwrap(),
        2
    );
    let d = app.dispatcher.dispatch_due().await.unwrap();
    assert_eq!(d.delivered, 2);
}

#[tokio::test]
async fn a_429_with_retry_after_7200_on_a_5s_slot_waits_about_10s() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = TestSandbox::start().await;
    let erp = Receiver::start(vec![429]).await;
    let mut setup = new_setup(&dir, &sandbox);
    setup.webhooks.push(("erp".into(), erp.clone(), None));
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let app = one_event(&setup, &sandbox, &clock).await;
    let at = clock.now();
    app.dispatcher.dispatch_due().await.unwrap();
    let next = app.ledger.next_due_at().await.unwrap().unwrap();
    let wait = (next - at).num_milliseconds() as f64 / 1000.0;
    // Clamped to [s, 2s] where s = 5 s ± 20%: 2s ∈ [8, 12].
    assert!((8.0..=12.0).contains(&wait), "waited {wait} s");
    assert_eq!(drain(&app, &clock, 5).await, 1);
    assert_eq!(
        erp.hits().iter().map(|h| h.answered).collect::<Vec<_>>(),
        [429, 200]
    );
}

#[tokio::test]
async fn a_receiver_that_never_answers_is_cut_at_the_delivery_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = TestSandbox::start().await;
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
    let mut setup = new_setup(&dir, &sandbox);
    setup.webhooks.push(("erp".into(), rx, None));
    let mut toml_setup = setup;
    toml_setup.retry_schedule = vec!["5s"];
    let cfg_text = toml_setup
        .toml()
        .replace("timeout = \"2s\"", "timeout = \"300ms\"");
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let app = app_from_toml(&cfg_text, clock.clone()).await;
    app.sync_all(None).await;
    sandbox.pay(103).await;
    app.sync_all(None).await;
    let at = clock.now();
    let started = std::time::Instant::now();
    let d = app.dispatcher.dispatch_due().await.unwrap();
    let took = started.elapsed();
    assert_eq!(d.retrying, 1);
    assert!(
        took >= Duration::from_millis(280) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let row = &app
        .ledger
        .list_deliveries(None, Some("erp"), 10)
        .await
        .unwrap()[0];
    assert!(
        row.last_error.as_deref().unwrap().contains("timed out"),
        "{row:?}"
    );
    // A timeout waits at least 60 s even on a 5 s slot.
    let next = app.ledger.next_due_at().await.unwrap().unwrap();
    assert!(
        (next - at).num_milliseconds() >= 59_999,
        "{row:?} next {next} at {at}"
    );
}

#[tokio::test]
async fn one_links_events_reach_a_subscriber_in_sequence_order_even_across_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = TestSandbox::start().await;
    // The first delivery (link 78's `paid`, sequence 1) fails once.
    let erp = Receiver::start(vec![500]).await;
    let mut setup = new_setup(&dir, &sandbox);
    setup.webhooks.push(("erp".into(), erp.clone(), None));
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let app = setup.app_with_clock(clock.clone()).await;
    app.sync_all(None).await[0].1.as_ref().unwrap();
    // Link 78 allows 3 payments: three now make `paid` (seq 1) and `exhausted` (seq 2).
    for _ in 0..3 {
        sandbox.pay(78).await;
    }
    app.sync_all(None).await;
    let d = app.dispatcher.dispatch_due().await.unwrap();
    // Only sequence 1 was tried; sequence 2 waits behind it, though due.
    assert_eq!((d.attempted, d.retrying), (1, 1), "{d:?}");
    assert_eq!(app.dispatcher.dispatch_due().await.unwrap().attempted, 0);
    clock.set(app.ledger.next_due_at().await.unwrap().unwrap());
    assert_eq!(app.dispatcher.dispatch_due().await.unwrap().delivered, 2);
    let order: Vec<(i64, u16)> = erp
        .hits()
        .iter()
        .map(|h| (h.body["sequence"].as_i64().unwrap(), h.answered))
        .collect();
    assert_eq!(order, [(1, 500), (1, 200), (2, 200)]);
}
