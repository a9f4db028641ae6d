//! The guards that keep the daemon from lying: no deletion on a proxy's 404, none en masse without
//! a human's confirmation, a pass that meets an overflowing number fails alone, and a pass that
//! panics is recorded as failed without wedging its account.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use reqwest::Method;
use serde_json::{Value, json};
use singapay_sync::app::App;
use singapay_sync::sandbox::AccountEntry;
use singapay_sync::sync::PageHook;
use singapay_sync::time::SystemClock;
use singapay_sync::types::{EventType, LinkId};

use crate::harness::*;

fn deleted_ids(events: &[singapay_sync::ledger::EventRow]) -> Vec<i64> {
    events
        .iter()
        .filter(|e| e.event.event_type == EventType::Deleted)
        .map(|e| e.link_id.0)
        .collect()
}

async fn clear_faults(sb: &TestSandbox) {
    sb.ctl(
        Method::DELETE,
        format!("{}/_sandbox/faults", sb.base),
        Value::Null,
    )
    .await;
}

#[tokio::test]
async fn a_proxy_404_or_an_empty_404_on_show_is_never_a_deletion() {
    let t = TestApp::spawn().await;
    t.sync_ok().await;
    t.sandbox.delete(50).await;
    for body in ["<html><body><h1>404 Not Found</h1>nginx</body></html>", ""] {
        t.sandbox
            .fault(json!({"route": "show", "status": 404, "body": body, "count": 100}))
            .await;
        let err = t.sync_err().await;
        assert!(err.contains("without SingaPay's JSON answer"), "{err}");
        assert!(deleted_ids(&t.events().await).is_empty());
        assert!(
            t.link(50).await.deleted_at.is_none(),
            "the ledger keeps link 50"
        );
        clear_faults(&t.sandbox).await;
    }
    // SingaPay's own answer (a v1 envelope with 404) is a deletion, reported once.
    t.sync_ok().await;
    assert_eq!(deleted_ids(&t.events().await), [50]);
    assert!(t.link(50).await.deleted_at.is_some());
    assert_eq!(link_events(&t.sync_ok().await), 0);
}

#[tokio::test]
async fn an_empty_list_deletes_nothing_until_a_human_confirms() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = TestSandbox::start_with(1000).await;
    let mut config = test_config(&dir, &sandbox);
    config.per_page = 100;
    let daemon = serve(&config, Arc::new(SystemClock)).await;
    let admin = &daemon.admin;
    let base = admin.resync_and_wait().await;
    assert_eq!(base["links_seen"], 1000);
    // SingaPay answers the list with nothing (successfully): every link is "missing".
    sandbox
        .ctl(
            Method::POST,
            format!("{}/_sandbox/accounts/{ACCOUNT}", sandbox.base),
            json!({"links": 0}),
        )
        .await;
    let run = admin.resync_and_wait().await;
    assert_eq!(
        (run["deletions_held"].as_i64(), run["changes"].as_i64()),
        (Some(1000), Some(0)),
        "{run}"
    );
    assert_eq!(
        daemon.ledger.count_live_links(&account()).await.unwrap(),
        1000
    );
    let shows = sandbox
        .requests()
        .await
        .iter()
        .filter(|r| r.path.ends_with("/1"))
        .count();
    assert_eq!(
        shows, 0,
        "no link is even checked while the deletions are held"
    );
    // /readyz says so: 503, naming the account only to the token holder.
    let open = admin
        .http
        .get(format!("{}/readyz", admin.base))
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), 503);
    assert_eq!(open.json::<Value>().await.unwrap(), json!({"ready": false}));
    let (status, ready) = admin.call(Method::GET, "/readyz").await;
    assert_eq!(status, 503);
    assert_eq!(ready["accounts"][0]["account_id"], ACCOUNT);
    assert_eq!(ready["accounts"][0]["deletions_held"], 1000);
    // Confirming needs the account.
    let (status, body) = admin
        .call(Method::POST, "/resync?confirm_deletions=true")
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bad_parameter"))
    );
    let (status, runs) = admin
        .call(
            Method::POST,
            &format!("/resync?account_id={ACCOUNT}&confirm_deletions=true"),
        )
        .await;
    assert_eq!(status, 202, "{runs}");
    let confirmed = admin
        .wait_run(runs["runs"][0]["run_id"].as_i64().unwrap())
        .await;
    assert_eq!(confirmed["deletions_held"], 0);
    assert_eq!(confirmed["changes"], 1000);
    let events = all_events(&daemon.ledger).await;
    let mut gone = deleted_ids(&events);
    gone.sort_unstable();
    assert_eq!(
        gone,
        (1..=1000).collect::<Vec<_>>(),
        "exactly those links, once each"
    );
    assert_eq!(events.len(), 1000);
    assert_eq!(daemon.ledger.count_live_links(&account()).await.unwrap(), 0);
    assert_eq!(admin.call(Method::GET, "/readyz").await.0, 200);
    daemon.shutdown().await;
}

#[tokio::test]
async fn more_missing_than_max_deletions_is_held_and_sync_confirm_deletions_releases_it() {
    let t = TestApp::spawn().await;
    t.sync_ok().await;
    // 25 links vanish at once (the default allows 20 in an account of 103).
    for id in 21..=45 {
        t.sandbox
            .ctl(
                Method::DELETE,
                t.sandbox.link_url(id, "?force=true"),
                Value::Null,
            )
            .await;
    }
    let held = t.sync_ok().await;
    assert_eq!((held.deletions_held, held.events), (25, 0));
    assert_eq!(
        t.app.ledger.count_live_links(&account()).await.unwrap(),
        103
    );
    // The CLI confirms (a human looked).
    let cfg = t.dir.path().join("config.toml");
    std::fs::write(&cfg, t.config.toml()).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_singapay-sync"))
        .arg("--config")
        .arg(&cfg)
        .args([
            "sync",
            "--account",
            ACCOUNT,
            "--confirm-deletions",
            "--json",
        ])
        .env("RUST_LOG", "off")
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        summary["accounts"][0]["summary"]["events_by_type"]["payment_link.deleted"],
        25
    );
    let mut gone = deleted_ids(&t.events().await);
    gone.sort_unstable();
    assert_eq!(gone, (21..=45).collect::<Vec<_>>());
    // A few at a time are deleted by an ordinary pass.
    for id in [10, 20] {
        t.sandbox
            .ctl(
                Method::DELETE,
                t.sandbox.link_url(id, "?force=true"),
                Value::Null,
            )
            .await;
    }
    let pass = t.sync_ok().await;
    assert_eq!((pass.deletions_held, pass.events), (0, 2));
    // --confirm-deletions without --account is refused by the CLI.
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_singapay-sync"))
        .arg("--config")
        .arg(&cfg)
        .args(["sync", "--confirm-deletions"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
}

#[tokio::test]
async fn an_amount_that_overflows_fails_its_pass_alone_and_webhooks_keep_going() {
    const SECOND: &str = "01K946KF851RK7FX075GJHBVKF";
    let erp = Receiver::start(vec![]).await;
    let sandbox = TestSandbox::start().await;
    sandbox
        .ctl(
            Method::POST,
            format!("{}/_sandbox/accounts/{SECOND}", sandbox.base),
            json!({"links": 40}),
        )
        .await;
    let t = TestApp::start(sandbox, Arc::new(SystemClock), |c| {
        c.accounts.push(AccountEntry {
            id: SECOND.into(),
            name: None,
            schedule: None,
            credential: None,
        });
        subscribe(c, "erp", &erp, Some(LINK_EVENTS));
    })
    .await;
    let r = t.app.sync_all(None).await;
    assert!(r.iter().all(|(_, s)| s.is_ok()), "{r:?}");
    // The first account's page 1 carries an amount no decimal holds (2^96 is past its range);
    // the second account's link 40 is paid.
    let mut page: Value =
        serde_json::from_str(include_str!("../fixtures/seed_004_list_page1.json")).unwrap();
    page["data"][3]["total_amount"] = json!("79228162514264337593543950336");
    t.sandbox
        .fault(json!({"route": "list", "page": 1, "account": ACCOUNT, "body": page.to_string()}))
        .await;
    t.sandbox
        .ctl(
            Method::POST,
            format!("{}/_sandbox/accounts/{SECOND}/links/40/pay", t.sandbox.base),
            json!({}),
        )
        .await;
    let r: BTreeMap<String, _> = t
        .app
        .sync_all(None)
        .await
        .into_iter()
        .map(|(a, s)| (a.to_string(), s))
        .collect();
    let err = r[ACCOUNT].as_ref().unwrap_err().to_string();
    assert!(
        err.contains("total_amount") && err.contains("link 100"),
        "{err}"
    );
    assert_eq!(link_events(r[SECOND].as_ref().unwrap()), 1);
    let d = t.dispatch().await;
    assert_eq!(d.delivered, 1);
    assert_eq!(erp.hits()[0].body["account_id"], SECOND);
    // Once SingaPay answers sensibly again the first account syncs.
    assert_eq!(link_events(&t.sync_ok().await), 0);
}

#[tokio::test]
async fn a_pass_that_panics_is_recorded_failed_and_the_next_trigger_runs_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = TestSandbox::start().await;
    let config = test_config(&dir, &sandbox);
    let app = App::build_with_clock(config.build().unwrap(), Arc::new(SystemClock), true)
        .await
        .unwrap();
    let armed = Arc::new(AtomicBool::new(true));
    let fuse = Arc::clone(&armed);
    app.set_page_hook(PageHook(Arc::new(move |_, page| {
        if page == 2 && fuse.swap(false, Ordering::SeqCst) {
            panic!("injected at page 2");
        }
    })));
    let daemon = serve_app(app);
    let admin = &daemon.admin;
    let first = admin.resync().await;
    let mut run = Value::Null;
    for _ in 0..400 {
        run = admin.get(&format!("/sync-runs/{first}")).await;
        if run["outcome"] != "running" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(run["outcome"], "failed", "{run}");
    assert!(
        run["error"]
            .as_str()
            .unwrap()
            .contains("the pass panicked: injected at page 2"),
        "{run}"
    );
    // The account is not wedged: the next trigger is a new pass, not a join of the dead one.
    let runs = admin.resync_runs().await;
    assert_eq!(runs[0]["coalesced"], false);
    assert_ne!(runs[0]["run_id"].as_i64(), Some(first));
    let second = admin.wait_run(runs[0]["run_id"].as_i64().unwrap()).await;
    assert_eq!(second["links_seen"], 103);
    assert!(
        daemon
            .ledger
            .get_link(&account(), LinkId(1))
            .await
            .unwrap()
            .is_some()
    );
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_hostile_page_count_ends_at_the_first_empty_page() {
    let t = TestApp::spawn().await;
    // Page 1 (seed 004's page as SingaPay sent it) claims a billion pages; there are five.
    let mut page: Value =
        serde_json::from_str(include_str!("../fixtures/seed_004_list_page1.json")).unwrap();
    page["pagination"]["totalPages"] = json!(1_000_000_000u64);
    t.sandbox
        .fault(json!({"route": "list", "page": 1, "body": page.to_string()}))
        .await;
    let s = t.sync_ok().await;
    assert_eq!(
        (s.pages, s.links_seen),
        (6, 103),
        "pages 1-5 and the empty page 6"
    );
    let asked = t
        .sandbox
        .requests()
        .await
        .iter()
        .filter(|r| r.path.ends_with(&format!("/payment-link-manage/{ACCOUNT}")))
        .count();
    // Page 6 ends it; at most the 4 pages fetched ahead of it were asked for too.
    assert!((6..=10).contains(&asked), "{asked} list requests");
}

#[tokio::test]
async fn an_answer_over_8_mib_fails_the_pass_instead_of_filling_memory() {
    let t = TestApp::spawn().await;
    t.sync_ok().await;
    let huge = format!(
        "{{\"status\":200,\"success\":true,\"data\":[],\"padding\":\"{}\"}}",
        "x".repeat(9 * 1024 * 1024)
    );
    t.sandbox
        .fault(json!({"route": "list", "page": 1, "body": huge}))
        .await;
    let err = t.sync_err().await;
    assert!(err.contains("over 8 MiB"), "{err}");
    assert!(deleted_ids(&t.events().await).is_empty());
}
