//! Several accounts: each its own pass, schedule and run history; `sync --account` picks one.

use std::sync::Arc;

use serde_json::json;
use singapay_sync::ledger::EventFilter;
use singapay_sync::sandbox::AccountEntry;
use singapay_sync::time::SystemClock;
use singapay_sync::types::AccountId;

use crate::harness::*;

const SECOND: &str = "01K946KF851RK7FX075GJHBVKF";

#[tokio::test]
async fn accounts_sync_side_by_side_and_sync_account_picks_one() {
    let sandbox = TestSandbox::start().await;
    sandbox
        .ctl(
            reqwest::Method::POST,
            format!("{}/_sandbox/accounts/{SECOND}", sandbox.base),
            json!({"links": 40}),
        )
        .await;
    let t = TestApp::start(sandbox, Arc::new(SystemClock), |c| {
        c.accounts.push(AccountEntry {
            id: SECOND.into(),
            name: Some("Cabang Dua".into()),
            schedule: Some("0 */2 * * * *".into()),
            credential: None,
        });
    })
    .await;
    let (app, sandbox) = (&t.app, &t.sandbox);
    let cfg_path = t.dir.path().join("config.toml");
    std::fs::write(&cfg_path, t.config.toml()).unwrap();
    assert_eq!(app.config.accounts[1].schedule, "0 */2 * * * *");
    assert_eq!(app.config.accounts[0].schedule, YEARLY);

    let r = app.sync_all(None).await;
    let seen: Vec<(String, u64)> = r
        .iter()
        .map(|(a, s)| (a.to_string(), s.as_ref().unwrap().links_seen))
        .collect();
    assert_eq!(seen, [(ACCOUNT.to_string(), 103), (SECOND.to_string(), 40)]);
    for (_, s) in &r {
        let run = app
            .ledger
            .get_run(s.as_ref().unwrap().run_id)
            .await
            .unwrap()
            .unwrap();
        assert!(run.baseline);
        assert_eq!(run.outcome, "succeeded");
    }

    // A payment on the second account's link 40 (the list example's link 103, renumbered).
    sandbox
        .ctl(
            reqwest::Method::POST,
            format!("{}/_sandbox/accounts/{SECOND}/links/40/pay", sandbox.base),
            json!({}),
        )
        .await;
    app.ledger.close().await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_singapay-sync"))
        .arg("--config")
        .arg(&cfg_path)
        .args(["sync", "--account", SECOND, "--json"])
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
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let accounts = summary["accounts"].as_array().unwrap();
    assert_eq!(accounts.len(), 1);
    assert_eq!(accounts[0]["account_id"], SECOND);
    assert_eq!(
        accounts[0]["summary"]["events_by_type"]["payment_link.paid"],
        1
    );

    let ledger = open_ledger(&t.config).await;
    let events = ledger
        .events(&EventFilter {
            account_id: Some(AccountId::parse(SECOND).unwrap()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .unwrap();
    // The link's event, and its history row's `payment.created` and `payment.paid`.
    let types: Vec<&str> = events.iter().map(|e| e.event.event_type.as_str()).collect();
    assert_eq!(
        types,
        ["payment.created", "payment.paid", "payment_link.paid"]
    );
    let events: Vec<_> = events
        .into_iter()
        .filter(|e| !e.event.event_type.is_payment())
        .collect();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event.account_id.as_str(), SECOND);
    assert_eq!(events[0].link_id.0, 40);
    let first_account = ledger
        .events(&EventFilter {
            account_id: Some(AccountId::parse(ACCOUNT).unwrap()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .unwrap();
    assert!(first_account.is_empty());
    ledger.close().await;
}
