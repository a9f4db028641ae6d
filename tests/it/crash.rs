//! Crash safety with the daemon as a real child process killed with SIGKILL: nothing owed is
//! lost, duplicates carry the same `webhook-id`, and no link row is ahead of or behind its events.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use singapay_sync::ledger::DeliveryFilter;
use singapay_sync::types::{DeliveryState, EventType};
use tokio::process::{Child, Command};

use crate::harness::*;
use singapay_sync::sandbox::DaemonConfig;

const LINKS: usize = 2000;

/// The most deliveries a kill may make the daemon send again: those in flight (the total
/// `delivery.concurrency`) and one uncommitted group of outcomes.
const RESEND_BOUND: usize = 16 + 200;

pub(crate) async fn spawn_daemon(cfg: &Path, port: u16) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_singapay-sync"))
        .arg("--config")
        .arg(cfg)
        .arg("run")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    Admin::on_port(port).wait_healthy().await;
    child
}

pub(crate) async fn sigkill(mut child: Child) {
    child.start_kill().unwrap();
    let status = child.wait().await.unwrap();
    assert_eq!(status.code(), None, "killed by a signal");
}

pub(crate) async fn sigterm(mut child: Child) {
    let pid = child.id().unwrap();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// Waits until the receiver has every event id the ledger holds, and returns the ledger's ids.
async fn await_all_delivered(
    rx: &Receiver,
    conf: &DaemonConfig,
    expected: usize,
) -> BTreeSet<String> {
    for _ in 0..1200 {
        let got: BTreeSet<String> = rx.hits().into_iter().map(|h| h.webhook_id).collect();
        if got.len() >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let ledger = open_ledger(conf).await;
    // The receiver may have had an event from the killed daemon before its outcome was recorded:
    // wait until the ledger has every delivery recorded too (on PostgreSQL the killed daemon's
    // claims are sent again once their lease lapses).
    for _ in 0..1200 {
        let pending = ledger
            .list_deliveries(&DeliveryFilter {
                state: Some(DeliveryState::Pending),
                limit: 1,
                ..Default::default()
            })
            .await
            .unwrap();
        if pending.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let events = all_events(&ledger).await;
    ledger.close().await;
    events.into_iter().map(|e| e.event.id.0).collect()
}

/// Every event reached the receiver, signed, and nothing else did; each at most twice (a
/// re-send after the kill carries the same `webhook-id`); the re-sent ones are at most
/// `resendable`. Returns how many were sent again.
fn check_hits(rx: &Receiver, ids: &BTreeSet<String>, resendable: usize) -> usize {
    let hits = rx.hits();
    assert!(hits.iter().all(|h| h.verified), "every signature verifies");
    let mut per_id: BTreeMap<&str, usize> = BTreeMap::new();
    for h in &hits {
        assert_eq!(
            h.body["id"],
            h.webhook_id.as_str(),
            "a duplicate carries the same id"
        );
        *per_id.entry(h.webhook_id.as_str()).or_default() += 1;
    }
    let got: BTreeSet<String> = per_id.keys().map(|s| s.to_string()).collect();
    assert_eq!(
        &got, ids,
        "every event reached the receiver; nothing else did"
    );
    assert!(
        per_id.values().all(|n| *n <= 2),
        "no event sent more than twice"
    );
    let resent = hits.len() - ids.len();
    assert!(
        resent <= resendable,
        "{resent} re-sent, more than the {resendable} the kill may cost"
    );
    resent
}

/// The ledger is consistent: `links` rows, one `created` event each, every row's sequence equal
/// to its last event's, and every delivery `delivered`.
async fn check_ledger(conf: &DaemonConfig, links: usize) {
    let ledger = open_ledger(conf).await;
    let (rows, total) = ledger.list_links(&account(), 100_000, 0).await.unwrap();
    assert_eq!(total as usize, links);
    let events = all_events(&ledger).await;
    let mut last: BTreeMap<i64, i64> = BTreeMap::new();
    let mut per_link: BTreeMap<i64, usize> = BTreeMap::new();
    for e in &events {
        assert_eq!(e.event.event_type, EventType::Created);
        last.insert(e.link_id.0, e.event.sequence);
        *per_link.entry(e.link_id.0).or_default() += 1;
    }
    assert_eq!(
        events.len(),
        links,
        "one created event per link, none lost, none doubled"
    );
    assert!(per_link.values().all(|n| *n == 1));
    for r in rows {
        assert_eq!(
            r.sequence,
            last.get(&r.link.id.0).copied().unwrap_or(0),
            "link {} row vs its events",
            r.link.id
        );
    }
    let deliveries = deliveries_of(&ledger, "erp").await;
    assert_eq!(deliveries.len(), links, "one delivery per event");
    assert!(
        deliveries
            .iter()
            .all(|d| d.state == DeliveryState::Delivered),
        "every delivery ends delivered"
    );
    ledger.close().await;
}

/// A config file for a daemon on `port` announcing its baseline (a `created` event per link) to
/// `rx`.
fn setup_for(
    dir: &tempfile::TempDir,
    sb: &TestSandbox,
    rx: &Receiver,
    port: u16,
) -> (std::path::PathBuf, DaemonConfig) {
    let mut c = test_config(dir, sb);
    subscribe(&mut c, "erp", rx, Some(LINK_EVENTS));
    c.listen = format!("127.0.0.1:{port}");
    c.retry_schedule = Some(singapay_sync::sandbox::strings(&["1s", "1s", "1s"]));
    c.notify_on_baseline = true;
    c.per_page = 100;
    // PostgreSQL: the restarted daemon takes the killed one's claims over once their lease
    // lapses (it cannot tell them from a live instance's).
    c.ledger_lease = Some("2s".into());
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, c.toml()).unwrap();
    (cfg, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_during_a_delivery_burst_delivers_every_event_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let sb = TestSandbox::start_with(LINKS).await;
    let rx = Receiver::start(vec![]).await;
    rx.delay_ms.store(2, std::sync::atomic::Ordering::Relaxed);
    let port = free_port();
    let (cfg, conf) = setup_for(&dir, &sb, &rx, port);

    let daemon = spawn_daemon(&cfg, port).await;
    Admin::on_port(port).resync_and_wait().await;
    // Kill mid-burst: some deliveries made, most still owed.
    for _ in 0..2000 {
        if rx.hits().len() >= 300 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sigkill(daemon).await;
    // Requests the receiver was serving when the daemon died finish now; then nothing moves.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let at_kill = rx.hits().len();
    assert!(
        at_kill > 0 && at_kill < LINKS,
        "the kill landed mid-burst ({at_kill} of {LINKS} delivered)"
    );

    rx.delay_ms.store(0, std::sync::atomic::Ordering::Relaxed);
    let daemon = spawn_daemon(&cfg, port).await;
    let ids = await_all_delivered(&rx, &conf, LINKS).await;
    sigterm(daemon).await;

    assert_eq!(ids.len(), LINKS);
    check_hits(&rx, &ids, at_kill.min(RESEND_BOUND));
    check_ledger(&conf, LINKS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_in_the_middle_of_a_pass_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sb = TestSandbox::start_with(LINKS).await;
    let rx = Receiver::start(vec![]).await;
    let port = free_port();
    let (cfg, conf) = setup_for(&dir, &sb, &rx, port);
    // Page 12 of 20 answers slowly: the pass is caught with pages 1–11 committed.
    sb.fault(json!({"route": "list", "page": 12, "delay_ms": 3000}))
        .await;

    let daemon = spawn_daemon(&cfg, port).await;
    Admin::on_port(port).resync().await;
    let probe = open_ledger(&conf).await;
    let mut committed = 0;
    for _ in 0..400 {
        committed = probe.count_live_links(&account()).await.unwrap();
        if committed >= 1000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    probe.close().await;
    sigkill(daemon).await;
    assert!(
        (1000..LINKS as i64).contains(&committed),
        "killed mid-pass ({committed} rows)"
    );

    let daemon = spawn_daemon(&cfg, port).await;
    Admin::on_port(port).resync_and_wait().await;
    let ids = await_all_delivered(&rx, &conf, LINKS).await;
    sigterm(daemon).await;

    assert_eq!(ids.len(), LINKS);
    check_hits(&rx, &ids, RESEND_BOUND);
    check_ledger(&conf, LINKS).await;
    // The interrupted run is recorded as failed, the next one as the successful baseline.
    let ledger = open_ledger(&conf).await;
    let first = ledger.get_run(1).await.unwrap().unwrap();
    assert_eq!(first.outcome, "failed");
    assert!(first.error.unwrap().contains("interrupted"));
    assert_eq!(
        ledger.get_run(2).await.unwrap().unwrap().outcome,
        "succeeded"
    );
    ledger.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_mid_burst_sends_again_at_most_the_attempts_in_flight_and_one_group() {
    const N: usize = 1000;
    let dir = tempfile::tempdir().unwrap();
    let sb = TestSandbox::start_with(N).await;
    let rx = Receiver::start(vec![]).await;
    rx.delay_ms.store(20, std::sync::atomic::Ordering::Relaxed);
    let port = free_port();
    let (cfg, conf) = setup_for(&dir, &sb, &rx, port);

    let daemon = spawn_daemon(&cfg, port).await;
    Admin::on_port(port).resync_and_wait().await;
    for _ in 0..2000 {
        if rx.hits().len() >= N / 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    sigkill(daemon).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let at_kill = rx.hits().len();
    assert!(
        at_kill > N / 4 && at_kill < N,
        "the kill landed mid-burst ({at_kill} of {N} delivered)"
    );

    rx.delay_ms.store(0, std::sync::atomic::Ordering::Relaxed);
    let daemon = spawn_daemon(&cfg, port).await;
    let ids = await_all_delivered(&rx, &conf, N).await;
    sigterm(daemon).await;
    assert_eq!(ids.len(), N);
    let resent = check_hits(&rx, &ids, RESEND_BOUND);
    let ledger = open_ledger(&conf).await;
    let mut interrupted = 0;
    for d in ledger
        .list_deliveries(&DeliveryFilter {
            limit: 10_000,
            ..Default::default()
        })
        .await
        .unwrap()
    {
        interrupted += ledger
            .delivery_attempts(d.id)
            .await
            .unwrap()
            .iter()
            .filter(|a| {
                a.error
                    .as_deref()
                    .is_some_and(|e| e.starts_with("interrupted"))
            })
            .count();
    }
    ledger.close().await;
    println!(
        "kill after {at_kill} of {N} acknowledged: {resent} sent again (bound {RESEND_BOUND}), \
         {interrupted} deliveries were claimed at the kill"
    );
    assert!(
        interrupted >= resent,
        "every re-sent delivery was claimed at the kill"
    );
    check_ledger(&conf, N).await;
}

/// One process at a time syncs an SQLite ledger: `sync` beside a running daemon is refused (exit
/// 1, saying why and what to do instead) and leaves the daemon's running pass alone; after a
/// SIGKILL the lock is gone with the process and `sync` runs (and ends the killed pass).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_beside_a_running_daemon_is_refused_and_runs_once_the_daemon_is_gone() {
    if on_postgres() {
        eprintln!(
            "SKIPPED on PostgreSQL: the process lock is SQLite's (instances share PostgreSQL)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sb = TestSandbox::start().await;
    let rx = Receiver::start(vec![]).await;
    let port = free_port();
    let (cfg, conf) = setup_for(&dir, &sb, &rx, port);
    let sync = || {
        Command::new(env!("CARGO_BIN_EXE_singapay-sync"))
            .arg("--config")
            .arg(&cfg)
            .args(["sync", "--json"])
            .env("RUST_LOG", "off")
            .output()
    };
    // The daemon's pass is caught on its second page.
    sb.fault(json!({"route": "list", "page": 2, "delay_ms": 60_000}))
        .await;
    let daemon = spawn_daemon(&cfg, port).await;
    let run = Admin::on_port(port).resync().await;

    let refused = sync().await.unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("in use by another singapay-sync process") && stderr.contains("/resync"),
        "{stderr}"
    );
    let ledger = open_ledger(&conf).await;
    let r = ledger.get_run(run).await.unwrap().unwrap();
    assert_eq!(
        r.outcome, "running",
        "the refused command touched the daemon's run"
    );
    let raw = RawLedger::connect(&conf).await;
    assert_eq!(
        raw.count("SELECT COUNT(*) FROM sync_run").await,
        1,
        "only the daemon's pass"
    );
    raw.close().await;

    sigkill(daemon).await;
    sb.http
        .delete(format!("{}/_sandbox/faults", sb.base))
        .send()
        .await
        .unwrap();
    let ran = sync().await.unwrap();
    assert_eq!(
        ran.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&ran.stdout).unwrap();
    assert_eq!(
        summary["accounts"][0]["summary"]["links_seen"], 103,
        "{summary}"
    );
    let r = ledger.get_run(run).await.unwrap().unwrap();
    assert_eq!(r.outcome, "failed");
    assert!(r.error.unwrap().contains("interrupted"));
    ledger.close().await;
}
