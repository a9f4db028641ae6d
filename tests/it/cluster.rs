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
        if live as usize == LINKS && got.len() >= LINKS {
            done_at = Some(killed.elapsed());
            break;
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
    assert!(
        deliveries
            .iter()
            .all(|d| d.state == DeliveryState::Delivered)
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
