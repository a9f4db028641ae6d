//! Two instances on one PostgreSQL ledger (DESIGN §16, issue 13): they share 50 accounts, never
//! run a pass of one account at the same time, and when one is killed in the middle of its
//! passes and of a burst of 2,000 deliveries, the other finishes the work once the lease lapses:
//! every event delivered, duplicates only under the same `webhook-id`, nothing lost or doubled in
//! the ledger. Runs on the PostgreSQL suite (`SINGAPAY_TEST_LEDGER=postgres`) only.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;
use singapay_sync::sandbox::{AccountEntry, DaemonConfig};
use singapay_sync::types::{AccountId, DeliveryState, EventType};

use crate::crash::{sigkill, sigterm, spawn_daemon};
use crate::harness::*;

const ACCOUNTS: usize = 50;
const LINKS_PER_ACCOUNT: usize = 40;
const LINKS: usize = ACCOUNTS * LINKS_PER_ACCOUNT;
const LEASE_SECS: u64 = 3;

/// Writes the config of one instance (`c` on `port`) and returns its path.
fn instance(dir: &tempfile::TempDir, c: &DaemonConfig, name: &str, port: u16) -> PathBuf {
    let mut c = c.clone();
    c.listen = format!("127.0.0.1:{port}");
    let path = dir.path().join(format!("{name}.toml"));
    std::fs::write(&path, c.toml()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_never_sync_one_account_at_once_and_the_survivor_finishes_a_killed_ones_work()
{
    if !on_postgres() {
        eprintln!(
            "SKIPPED on SQLite: two instances need the PostgreSQL ledger \
             (SINGAPAY_TEST_LEDGER=postgres, run by .ci/run)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sb = TestSandbox::start().await;
    let ids: Vec<String> = (0..ACCOUNTS)
        .map(|_| ulid::Ulid::new().to_string())
        .collect();
    for id in &ids {
        sb.ctl(
            reqwest::Method::POST,
            format!("{}/_sandbox/accounts/{id}", sb.base),
            json!({"links": LINKS_PER_ACCOUNT}),
        )
        .await;
    }
    // Page 2 of every account answers slowly: the passes are caught between their pages.
    sb.fault(json!({"route": "list", "page": 2, "delay_ms": 1500, "count": 1_000_000}))
        .await;
    let rx = Receiver::start(vec![]).await;
    rx.delay_ms.store(5, Ordering::Relaxed);
    let mut c = test_config(&dir, &sb);
    c.accounts = ids.iter().map(|i| AccountEntry::new(i.clone())).collect();
    subscribe(&mut c, "erp", &rx, Some(LINK_EVENTS));
    c.notify_on_baseline = true;
    c.per_page = 20;
    c.ledger_lease = Some(format!("{LEASE_SECS}s"));
    c.retry_schedule = Some(singapay_sync::sandbox::strings(&["1s", "1s", "1s"]));
    let (pa, pb) = (free_port(), free_port());
    let (cfg_a, cfg_b) = (instance(&dir, &c, "a", pa), instance(&dir, &c, "b", pb));
    let a = spawn_daemon(&cfg_a, pa).await;
    let b = spawn_daemon(&cfg_b, pb).await;
    let (admin_a, admin_b) = (Admin::on_port(pa), Admin::on_port(pb));

    // Both are asked to sync every account at the same moment: each account's pass runs on one
    // of them, and the other answers with that same run (it joins it).
    let (ra, rb) = tokio::join!(admin_a.resync_runs(), admin_b.resync_runs());
    let mut per_account: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    let mut started = [0, 0];
    for (i, runs) in [&ra, &rb].into_iter().enumerate() {
        for r in runs {
            per_account
                .entry(r["account_id"].as_str().unwrap().to_string())
                .or_default()
                .insert(r["run_id"].as_i64().unwrap());
            started[i] += usize::from(r["coalesced"] == false);
        }
    }
    assert_eq!(per_account.len(), ACCOUNTS);
    assert!(
        per_account.values().all(|runs| runs.len() == 1),
        "both instances name the same run of each account: {per_account:?}"
    );
    assert_eq!(started[0] + started[1], ACCOUNTS, "one pass per account");
    eprintln!(
        "passes started: instance a {}, instance b {}",
        started[0], started[1]
    );

    // Kill the instance that took more of the passes (which one wins the locks varies), mid-burst
    // and mid-pass (page 2 is still on its way); the other survives.
    let (victim, survivor, admin_survivor) = if started[0] >= started[1] {
        (a, b, admin_b)
    } else {
        (b, a, admin_a)
    };
    for _ in 0..4000 {
        if rx.hits().len() >= 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    sigkill(victim).await;
    let killed = Instant::now();
    let at_kill = rx.hits().len();
    assert!(
        at_kill < LINKS,
        "the kill landed mid-burst ({at_kill} delivered)"
    );

    // The survivor is asked again (as its schedule would): it takes over the accounts whose
    // passes died with the killed one, and its claimed deliveries once their lease lapses.
    let ledger = open_ledger(&c).await;
    let accounts: Vec<AccountId> = ids.iter().map(|i| AccountId::parse(i).unwrap()).collect();
    let mut done_at = None;
    while killed.elapsed() < Duration::from_secs(90) {
        admin_survivor.resync_runs().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut live = 0;
        for acc in &accounts {
            live += ledger.count_live_links(acc).await.unwrap();
        }
        let got: BTreeSet<String> = rx.hits().into_iter().map(|h| h.webhook_id).collect();
        // The receiver alone is not the end: a delivery the killed instance sent but had not
        // recorded is on the receiver and still claimed in the ledger, until the survivor takes
        // it over after the lease and sends it again.
        if live as usize == LINKS && got.len() >= LINKS {
            let delivered = deliveries_of(&ledger, "erp")
                .await
                .iter()
                .filter(|d| d.state == DeliveryState::Delivered)
                .count();
            if delivered == LINKS {
                done_at = Some(killed.elapsed());
                break;
            }
        }
    }
    let done_at = done_at.expect("the survivor finished the work within 90 s");
    eprintln!(
        "killed one instance with {at_kill} of {LINKS} delivered; the survivor finished {:.1} s later (lease {LEASE_SECS} s)",
        done_at.as_secs_f64()
    );
    sigterm(survivor).await;

    // The ledger: one created event per link, every delivery delivered, runs never overlapping.
    let events = all_events(&ledger).await;
    let mut per_link: BTreeMap<(String, i64), usize> = BTreeMap::new();
    for e in &events {
        assert_eq!(e.event.event_type, EventType::Created);
        *per_link
            .entry((e.event.account_id.to_string(), e.link_id.0))
            .or_default() += 1;
    }
    assert_eq!(
        events.len(),
        LINKS,
        "one event per link, none lost or doubled"
    );
    assert!(per_link.values().all(|n| *n == 1));
    let deliveries = deliveries_of(&ledger, "erp").await;
    assert_eq!(deliveries.len(), LINKS);
    let mut states: BTreeMap<&str, usize> = BTreeMap::new();
    for d in &deliveries {
        *states.entry(d.state.as_str()).or_default() += 1;
    }
    assert_eq!(
        states,
        BTreeMap::from([("delivered", LINKS)]),
        "every delivery delivered, and still so after the survivor stopped"
    );
    let raw = RawLedger::connect(&c).await;
    let overlapping = raw
        .count(
            "SELECT COUNT(*) FROM sync_run a JOIN sync_run b ON a.account_id = b.account_id \
             AND a.id < b.id AND a.started_at < COALESCE(b.finished_at, '9999') \
             AND b.started_at < COALESCE(a.finished_at, '9999')",
        )
        .await;
    assert_eq!(overlapping, 0, "no two passes of one account overlapped");
    let interrupted = raw
        .count("SELECT COUNT(*) FROM delivery_attempt WHERE error LIKE 'interrupted%'")
        .await;
    // The kill landed mid-pass: passes of `a` were left running, and `b` ended them when it
    // took their accounts.
    let cut_short = raw
        .count(
            "SELECT COUNT(*) FROM sync_run \
             WHERE error = 'interrupted: the instance running the pass stopped'",
        )
        .await;
    let baselines = raw
        .count(
            "SELECT COUNT(DISTINCT account_id) FROM sync_run \
             WHERE baseline = 1 AND outcome = 'succeeded'",
        )
        .await;
    raw.close().await;
    assert_eq!(
        baselines as usize, ACCOUNTS,
        "every account's baseline completed"
    );
    assert!(cut_short > 0, "the kill landed mid-pass");
    eprintln!("passes cut short by the kill and ended by the survivor: {cut_short}");

    // The receiver: every event, each signed, a duplicate only under the same id.
    let hits = rx.hits();
    assert!(hits.iter().all(|h| h.verified));
    let mut per_id: BTreeMap<&str, usize> = BTreeMap::new();
    for h in &hits {
        assert_eq!(h.body["id"], h.webhook_id.as_str());
        *per_id.entry(h.webhook_id.as_str()).or_default() += 1;
    }
    let ledger_ids: BTreeSet<&str> = events.iter().map(|e| e.event.id.0.as_str()).collect();
    assert_eq!(per_id.keys().copied().collect::<BTreeSet<_>>(), ledger_ids);
    let resent = hits.len() - ledger_ids.len();
    eprintln!(
        "{} hits for {LINKS} events: {resent} sent again (same webhook-id), {interrupted} claims \
         taken over after the lease",
        hits.len()
    );
    assert!(
        per_id.values().all(|n| *n <= 2),
        "none sent more than twice"
    );
    assert!(
        resent as i64 <= interrupted,
        "only deliveries the killed instance held were sent again"
    );
    ledger.close().await;
}

/// Two instances drain one inbound queue on PostgreSQL (DESIGN §16): a notification one instance
/// took is not taken by the other while the first processes it; when the first dies in the
/// middle of its targeted pass, the other takes it once the lease lapsed, processes it once
/// (the killed attempt not counted) and the payment reaches the subscriber once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_taken_by_one_instance_is_taken_by_another_only_once_its_lease_lapsed() {
    use std::sync::Arc;

    use singapay_sync::app::App;
    use singapay_sync::ledger::{InboundState, NewNotification, Stored};
    use singapay_sync::time::ManualClock;

    if !on_postgres() {
        eprintln!(
            "SKIPPED on SQLite: two instances need the PostgreSQL ledger \
             (SINGAPAY_TEST_LEDGER=postgres, run by .ci/run)"
        );
        return;
    }
    const LEASE: Duration = Duration::from_secs(60);
    let dir = tempfile::tempdir().unwrap();
    let sb = TestSandbox::start().await;
    let rx = Receiver::start(vec![]).await;
    let mut c = test_config(&dir, &sb);
    subscribe(&mut c, "erp", &rx, Some(&["payment_link.paid"]));
    c.ledger_lease = Some("60s".into());
    // Whole milliseconds: the ledger keeps times to the microsecond.
    let start = chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 3);
    let clock_a = Arc::new(ManualClock::new(start));
    let clock_b = Arc::new(ManualClock::new(start));
    let a = Arc::new(
        App::build_with_clock(c.build().unwrap(), clock_a.clone(), false)
            .await
            .unwrap(),
    );
    let b = App::build_with_clock(c.build().unwrap(), clock_b.clone(), false)
        .await
        .unwrap();
    sync_ok(&a).await;

    // Link 103 is paid; SingaPay's webhook for it is stored (as the doorbell stores it).
    sb.pay(103).await;
    let stored = a
        .ledger
        .store_notification(&NewNotification {
            dedupe_key: "transaction-103".into(),
            event: Some("payment-link-transaction".into()),
            partner_id: Some("sandbox-partner-id".into()),
            x_timestamp: None,
            body: crate::doorbell::transaction_body("NOT-THE-ATTEMPT"),
            received_at: start,
            state: InboundState::Pending,
            link_id: Some(singapay_sync::types::LinkId(103)),
        })
        .await
        .unwrap();
    let Stored::New(id) = stored else {
        panic!("{stored:?}")
    };
    let row = |ledger: singapay_sync::ledger::Ledger| async move {
        ledger
            .list_notifications(None, None, 10)
            .await
            .unwrap()
            .into_iter()
            .find(|r| r.id == id)
            .unwrap()
    };

    // A takes it; its targeted pass hangs on the show.
    sb.fault(json!({"route": "show", "delay_ms": 30_000})).await;
    let taker = Arc::clone(&a);
    let a_drain = tokio::spawn(async move { taker.process_inbound().await });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sb.requests().await.iter().any(|r| r.path.ends_with("/103")) {
        assert!(Instant::now() < deadline, "A never asked for link 103");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // B finds nothing to take while A holds it, even when it is due by B's clock…
    clock_b.advance(Duration::from_secs(5));
    assert_eq!(
        b.process_inbound().await.unwrap(),
        0,
        "B took A's notification"
    );
    let held = row(b.ledger.clone()).await;
    assert_eq!(held.state, "pending");
    assert_eq!(held.attempts, 0);
    assert_eq!(
        held.next_attempt_at,
        Some(start + chrono::Duration::from_std(LEASE).unwrap()),
        "the claim runs until the lease ends"
    );

    // …A dies in the middle of its pass…
    a_drain.abort();
    assert!(a_drain.await.unwrap_err().is_cancelled());
    drop(a);
    sb.http
        .delete(format!("{}/_sandbox/faults", sb.base))
        .send()
        .await
        .unwrap();

    // …and once the lease lapsed B takes it and processes it once.
    clock_b.advance(LEASE);
    let deadline = Instant::now() + Duration::from_secs(10);
    let done = loop {
        assert!(b.process_inbound().await.unwrap() <= 1);
        let r = row(b.ledger.clone()).await;
        if r.state == "processed" {
            break r;
        }
        assert!(Instant::now() < deadline, "never processed: {r:?}");
        // A's lock is released as its session notices; B's busy attempt is due again soon.
        clock_b.advance(Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(done.attempts, 1, "the killed attempt is not counted");
    let run = b
        .ledger
        .get_run(done.run_id.unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (run.trigger.as_str(), run.outcome.as_str()),
        ("webhook", "succeeded")
    );
    let paid_events: Vec<_> = all_events(&b.ledger)
        .await
        .into_iter()
        .filter(|e| e.event.event_type == EventType::Paid)
        .collect();
    assert_eq!(paid_events.len(), 1, "{paid_events:?}");
    assert_eq!(paid_events[0].run_id, Some(run.id));
    b.dispatcher.dispatch_due().await.unwrap();
    let paid: Vec<_> = rx
        .hits()
        .into_iter()
        .filter(|h| h.body["type"] == "payment_link.paid")
        .collect();
    assert_eq!(paid.len(), 1, "{paid:?}");
    assert_eq!(paid[0].body["data"]["object"]["id"], 103);
    // A's interrupted pass was ended by B, not left running.
    let raw = RawLedger::connect(&c).await;
    assert_eq!(
        raw.count("SELECT COUNT(*) FROM sync_run WHERE outcome = 'running'")
            .await,
        0
    );
    raw.close().await;
}

/// Retention on PostgreSQL prunes on one instance at a time (DESIGN §16): while another
/// instance holds the pruning lock, a batch removes nothing and says so (its round ends); once
/// the lock is free, the same batch removes the old rows.
#[tokio::test]
async fn while_another_instance_prunes_a_retention_batch_removes_nothing() {
    use sqlx::Connection;

    if !on_postgres() {
        eprintln!("SKIPPED on SQLite: the pruning lock is PostgreSQL's (run by .ci/run)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sb = TestSandbox::start().await;
    let c = test_config(&dir, &sb);
    let ledger = open_ledger(&c).await;
    let raw = RawLedger::connect(&c).await;
    raw.execute(
        "INSERT INTO sync_run (account_id, trigger, started_at, finished_at, outcome) \
         SELECT 'acc', 'schedule', '2025-01-01T00:00:00.000000Z', \
         '2025-01-01T00:00:00.000000Z', 'succeeded' FROM generate_series(1, 12)",
    )
    .await;
    // Another instance's batch: the pruning lock (class "SPSY", key 3) in an open transaction.
    let mut other = sqlx::PgConnection::connect(c.ledger_url.as_deref().unwrap())
        .await
        .unwrap();
    sqlx::query("BEGIN").execute(&mut other).await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock(1397773145, 3)")
        .execute(&mut other)
        .await
        .unwrap();
    let now = chrono::Utc::now();
    let p = ledger.prune_batch(now, None, 100).await.unwrap();
    assert!(p.is_empty(), "{p:?}");
    assert_eq!(raw.count("SELECT COUNT(*) FROM sync_run").await, 12);
    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    let p = ledger.prune_batch(now, None, 100).await.unwrap();
    assert_eq!(p.runs, 12, "{p:?}");
    assert_eq!(raw.count("SELECT COUNT(*) FROM sync_run").await, 0);
    raw.close().await;
    ledger.close().await;
}

/// A fresh PostgreSQL ledger gets planner statistics from the daemon itself as a pass fills it
/// (`Ledger::wrote_rows`: after 5,000 rows), not only when autovacuum (off on the test server)
/// gets round to it; a small pass does not trigger one.
#[tokio::test]
async fn a_baseline_import_refreshes_the_planner_statistics_of_a_fresh_postgres_ledger() {
    use std::sync::Arc;

    use singapay_sync::time::SystemClock;

    if !on_postgres() {
        eprintln!("SKIPPED on SQLite: planner statistics are PostgreSQL's (run by .ci/run)");
        return;
    }
    let analysed = "SELECT COUNT(*) FROM pg_stat_user_tables WHERE relname = 'payment_link' \
                    AND (last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL)";
    let small = TestApp::spawn().await;
    assert_eq!(small.sync_ok().await.links_seen, 103);
    let raw = RawLedger::connect(&small.config).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        raw.count(analysed).await,
        0,
        "103 rows refreshed the statistics"
    );
    raw.close().await;

    let t = TestApp::start(
        TestSandbox::start_with(6_000).await,
        Arc::new(SystemClock),
        |_| {},
    )
    .await;
    assert_eq!(t.sync_ok().await.links_seen, 6_000);
    let raw = RawLedger::connect(&t.config).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while raw.count(analysed).await == 0 {
        assert!(Instant::now() < deadline, "no ANALYZE after 6,000 rows");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let estimated = raw
        .count("SELECT reltuples::bigint FROM pg_class WHERE relname = 'payment_link'")
        .await;
    assert!(
        (5_000..=6_000).contains(&estimated),
        "{estimated} rows estimated"
    );
    raw.close().await;
}

#[tokio::test]
async fn a_links_later_event_waits_while_another_instance_sends_its_earlier_one() {
    // Two dispatchers on one PostgreSQL ledger (two instances). A has link 78's first event in
    // flight (its receiver answers after 2.5 s); B, claiming meanwhile, must leave link 78's
    // second event alone and send only link 5's: the claim's ordering check (`due_conditions`,
    // the same text as SQLite's) sees A's claim on the earlier event.
    if !on_postgres() {
        eprintln!(
            "SKIPPED on SQLite: two dispatchers claiming at once need the PostgreSQL ledger \
             (SINGAPAY_TEST_LEDGER=postgres, run by .ci/run)"
        );
        return;
    }
    // Both receivers stand for the subscriber `erp` (each instance configured with its own URL
    // and key for it): `slow` gets A's requests, `fast` B's.
    let (slow, fast) = (Receiver::start(vec![]).await, Receiver::start(vec![]).await);
    let t = TestApp::spawn_with(|c| subscribe(c, "erp", &slow, Some(LINK_EVENTS))).await;
    t.sync_ok().await;
    for _ in 0..3 {
        t.sandbox.pay(78).await;
    }
    t.sandbox.pay(5).await;
    t.sync_ok().await;
    let owed = deliveries_of(&t.app.ledger, "erp").await;
    let link_of = |h: &Hit| h.body["data"]["object"]["id"].as_i64().unwrap();
    assert_eq!(
        owed.len(),
        3,
        "link 78 paid and exhausted, link 5 paid: {owed:?}"
    );

    slow.delay_ms.store(2500, Ordering::Relaxed);
    let clock: std::sync::Arc<dyn singapay_sync::time::Clock> =
        std::sync::Arc::new(singapay_sync::time::SystemClock);
    let a = one_per_batch(&t.app.ledger, &slow, clock.clone());
    let b = one_per_batch(&t.app.ledger, &fast, clock);
    let a_run = tokio::spawn(async move { a.dispatch_due().await.unwrap() });
    let deadline = Instant::now() + Duration::from_secs(10);
    while slow.max_in_flight.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "A never sent");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let by_b = b.dispatch_due().await.unwrap();
    assert_eq!((by_b.attempted, by_b.delivered), (1, 1), "{by_b:?}");
    let fast_hits = fast.hits();
    assert_eq!(
        fast_hits
            .iter()
            .map(|h| (link_of(h), h.body["sequence"].as_i64().unwrap()))
            .collect::<Vec<_>>(),
        [(5, 1)],
        "B sent only link 5's event while A had link 78's first in flight"
    );
    assert!(
        slow.hits().is_empty(),
        "A's first request was still in flight"
    );

    let by_a = a_run.await.unwrap();
    assert_eq!((by_a.attempted, by_a.delivered), (2, 2), "{by_a:?}");
    let seen: Vec<(i64, i64, u16)> = slow
        .hits()
        .iter()
        .map(|h| (link_of(h), h.body["sequence"].as_i64().unwrap(), h.answered))
        .collect();
    assert_eq!(seen, [(78, 1, 200), (78, 2, 200)]);
    assert!(slow.hits().iter().chain(&fast_hits).all(|h| h.verified));
    let rows = deliveries_of(&t.app.ledger, "erp").await;
    assert!(
        rows.iter()
            .all(|r| r.state == DeliveryState::Delivered && r.attempts == 1),
        "{rows:?}"
    );
}
