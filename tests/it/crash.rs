//! Crash safety with the daemon as a real child process killed with SIGKILL: nothing owed is
//! lost, duplicates carry the same `webhook-id`, and no link row is ahead of or behind its events.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use singapay_sync::ledger::Ledger;
use singapay_sync::types::AccountId;
use tokio::process::{Child, Command};

use crate::harness::*;

const LINKS: usize = 2000;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn spawn_daemon(cfg: &Path, port: u16) -> Child {
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

async fn sigkill(mut child: Child) {
    child.start_kill().unwrap();
    let status = child.wait().await.unwrap();
    assert_eq!(status.code(), None, "killed by a signal");
}

async fn sigterm(mut child: Child) {
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
    ledger_path: &Path,
    expected: usize,
) -> BTreeSet<String> {
    for _ in 0..1200 {
        let got: BTreeSet<String> = rx.hits().into_iter().map(|h| h.webhook_id).collect();
        if got.len() >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let ledger = Ledger::open(ledger_path).await.unwrap();
    let events = all_events(&ledger).await;
    ledger.close().await;
    events.into_iter().map(|e| e.id).collect()
}

/// The ledger is consistent: `LINKS` rows, one `created` event each, every row's sequence equal
/// to its last event's.
async fn check_ledger(ledger_path: &Path) {
    let ledger = Ledger::open(ledger_path).await.unwrap();
    let account = AccountId::parse(ACCOUNT).unwrap();
    let (rows, total) = ledger.list_links(&account, 100_000, 0).await.unwrap();
    assert_eq!(total as usize, LINKS);
    let events = all_events(&ledger).await;
    let mut last: BTreeMap<i64, i64> = BTreeMap::new();
    let mut per_link: BTreeMap<i64, usize> = BTreeMap::new();
    for e in &events {
        assert_eq!(e.event_type, singapay_sync::types::EventType::Created);
        last.insert(e.link_id, e.sequence);
        *per_link.entry(e.link_id).or_default() += 1;
    }
    assert_eq!(
        events.len(),
        LINKS,
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
    ledger.close().await;
}

fn setup_for(
    dir: &tempfile::TempDir,
    sb: &TestSandbox,
    rx: &Receiver,
    port: u16,
) -> std::path::PathBuf {
    let mut setup = new_setup(dir, sb);
    setup.webhooks.push(("erp".into(), rx.clone(), None));
    setup.listen = format!("127.0.0.1:{port}");
    setup.retry_schedule = vec!["1s", "1s", "1s"];
    let toml = setup
        .toml()
        .replace("[sync]\n", "[sync]\nnotify_on_baseline = true\n")
        .replace("per_page = 25", "per_page = 100");
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, toml).unwrap();
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_during_a_delivery_burst_delivers_every_event_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let sb = TestSandbox::start_with(LINKS).await;
    let rx = Receiver::start(vec![]).await;
    rx.delay_ms.store(2, std::sync::atomic::Ordering::Relaxed);
    let port = free_port();
    let cfg = setup_for(&dir, &sb, &rx, port);
    let ledger_path = dir.path().join("ledger.db");

    let daemon = spawn_daemon(&cfg, port).await;
    Admin::on_port(port).resync_and_wait().await;
    // Kill mid-burst: some deliveries made, most still owed.
    for _ in 0..2000 {
        if rx.hits().len() >= 300 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let before = rx.hits().len();
    sigkill(daemon).await;
    assert!(before < LINKS, "the burst ended before the kill ({before})");

    rx.delay_ms.store(0, std::sync::atomic::Ordering::Relaxed);
    let daemon = spawn_daemon(&cfg, port).await;
    let ids = await_all_delivered(&rx, &ledger_path, LINKS).await;
    sigterm(daemon).await;

    let hits = rx.hits();
    assert!(hits.iter().all(|h| h.verified), "every signature verifies");
    let got: BTreeSet<String> = hits.iter().map(|h| h.webhook_id.clone()).collect();
    assert_eq!(
        got, ids,
        "every event reached the receiver; nothing else did"
    );
    assert!(hits.len() >= LINKS);
    for h in &hits {
        assert_eq!(
            h.body["id"],
            h.webhook_id.as_str(),
            "a duplicate carries the same id"
        );
    }
    check_ledger(&ledger_path).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_in_the_middle_of_a_pass_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sb = TestSandbox::start_with(LINKS).await;
    let rx = Receiver::start(vec![]).await;
    let port = free_port();
    let cfg = setup_for(&dir, &sb, &rx, port);
    let ledger_path = dir.path().join("ledger.db");
    // Page 12 of 20 answers slowly: the pass is caught with pages 1–11 committed.
    sb.fault(json!({"route": "list", "page": 12, "delay_ms": 3000}))
        .await;

    let daemon = spawn_daemon(&cfg, port).await;
    Admin::on_port(port).resync().await;
    let probe = Ledger::open(&ledger_path).await.unwrap();
    let account = AccountId::parse(ACCOUNT).unwrap();
    let mut committed = 0;
    for _ in 0..400 {
        committed = probe.count_live_links(&account).await.unwrap();
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
    let ids = await_all_delivered(&rx, &ledger_path, LINKS).await;
    sigterm(daemon).await;

    let got: BTreeSet<String> = rx.hits().iter().map(|h| h.webhook_id.clone()).collect();
    assert_eq!(got, ids);
    check_ledger(&ledger_path).await;
    // The interrupted run is recorded as failed, the next one as the successful baseline.
    let ledger = Ledger::open(&ledger_path).await.unwrap();
    let first = ledger.get_run(1).await.unwrap().unwrap();
    assert_eq!(first.outcome, "failed");
    assert!(first.error.unwrap().contains("interrupted"));
    assert_eq!(
        ledger.get_run(2).await.unwrap().unwrap().outcome,
        "succeeded"
    );
    ledger.close().await;
}
