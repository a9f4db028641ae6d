//! Payments, one row each (DESIGN §13): the Payment Link History mirrored row by row, its events
//! through the outbox to a verifying receiver, `data.payments` on `payment_link.paid`, the
//! history window and the full resync, and the accounting export (CLI and `GET /payments`).

use std::collections::BTreeMap;
use std::sync::Arc;

use reqwest::Method;
use serde_json::{Value, json};
use singapay_sync::event::Event;
use singapay_sync::export::COLUMNS;
use singapay_sync::time::SystemClock;
use singapay_sync::types::EventType;

use crate::harness::*;

/// The events delivered to `rx` so far (each signature verified), in the ledger's commit order:
/// deliveries of different links and payments run concurrently, so arrival order is not theirs.
async fn delivered(t: &TestApp, rx: &Receiver) -> Vec<Event> {
    let hits = rx.hits();
    assert!(hits.iter().all(|h| h.verified), "signatures");
    let ids: std::collections::BTreeSet<String> =
        hits.iter().map(|h| h.webhook_id.clone()).collect();
    assert_eq!(ids.len(), hits.len(), "each event delivered once");
    let events: Vec<Event> = t
        .events()
        .await
        .into_iter()
        .map(|e| e.event)
        .filter(|e| ids.contains(&e.id.0))
        .collect();
    assert_eq!(events.len(), hits.len());
    events
}

fn types(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(|e| e.event_type.as_str()).collect()
}

#[tokio::test]
async fn a_payment_is_created_when_a_method_is_picked_then_paid_then_settled() {
    let erp = Receiver::start(vec![]).await;
    let t = TestApp::spawn_with(|c| subscribe(c, "erp", &erp, None)).await;

    // Baseline: the seeded history (4 paid rows on links 101-103) is mirrored silently.
    let base = t.sync_ok().await;
    assert_eq!(base.events, 0);
    assert!(base.history_full);
    assert_eq!(base.payments_seen, 4);
    assert_eq!(base.payments_written, 4);
    let seeded = t.app.ledger.list_payments(&account()).await.unwrap();
    assert_eq!(seeded.len(), 4);
    assert_eq!(
        seeded
            .iter()
            .map(|p| p.link_id.map(|l| l.0))
            .collect::<Vec<_>>(),
        [Some(101), Some(102), Some(103), Some(103)],
        "joined to their links through payment_link_reff_no"
    );
    assert_eq!(t.dispatch().await.attempted, 0);

    // A customer opens link 103's page and picks VA BRI: a pending attempt.
    let row = t.sandbox.pick(103, "VA_BRI").await;
    let hid = row["data"]["id"].as_i64().unwrap();
    let attempt = row["data"]["reff_no"].as_str().unwrap().to_string();
    let s = t.sync_ok().await;
    assert_eq!(
        s.events_by_type,
        BTreeMap::from([("payment.created".into(), 1)])
    );
    assert_eq!(s.history_pages, 1, "the window fits on page 1");
    t.dispatch().await;
    let got = delivered(&t, &erp).await;
    assert_eq!(types(&got), ["payment.created"]);
    let created = got[0].payment().unwrap();
    assert_eq!(created.payment.id.0, hid);
    assert_eq!(created.payment.reff_no, attempt);
    assert_eq!(created.payment.status, "pending");
    assert_eq!(
        created.payment.payment_method_name.as_deref(),
        Some("VA BRI")
    );
    assert_eq!(created.payment.amount.to_string(), "20000.00");
    assert_eq!(created.payment_link.id.0, 103);
    assert_eq!(created.payment_link.title.as_deref(), Some("tes"));
    assert_eq!(got[0].sequence, 1);
    assert_eq!(got[0].data.object["amount"], "20000.00", "a decimal string");
    assert_eq!(got[0].data.object["customer_name"], "", "kept as received");

    // The customer pays: the attempt is paid and the link's usage rises.
    t.sandbox.step(hid, "pay").await;
    let s = t.sync_ok().await;
    assert_eq!(
        s.events_by_type,
        BTreeMap::from([("payment.paid".into(), 1), ("payment_link.paid".into(), 1)])
    );
    t.dispatch().await;
    let got = delivered(&t, &erp).await;
    assert_eq!(
        types(&got),
        ["payment.created", "payment.paid", "payment_link.paid"]
    );
    let paid = &got[1];
    assert_eq!(paid.sequence, 2, "sequence rises per payment");
    assert_eq!(
        Value::Object(paid.data.previous_attributes.clone().unwrap()),
        json!({"status": "pending"})
    );
    assert!(
        paid.data.object["payment_date"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    let link_paid = &got[2];
    assert_eq!(link_paid.sequence, 1, "the link's own sequence");
    assert_eq!(link_paid.data.usage_delta, Some(1));
    let behind = link_paid.payments().unwrap();
    assert_eq!(behind.len(), 1);
    assert_eq!(behind[0].payment.reff_no, attempt);
    assert_eq!(
        behind[0].payment.payment_method_name.as_deref(),
        Some("VA BRI")
    );
    assert_eq!(
        link_paid.data.payments.as_ref().unwrap()[0]["amount"],
        "20000.00"
    );
    assert_eq!(behind[0].payment.status, "paid");

    // Settlement a day later.
    t.sandbox.step(hid, "settle").await;
    let s = t.sync_ok().await;
    assert_eq!(
        s.events_by_type,
        BTreeMap::from([("payment.settled".into(), 1)])
    );
    t.dispatch().await;
    let got = delivered(&t, &erp).await;
    let settled = &got[3];
    assert_eq!(settled.event_type, EventType::PaymentSettled);
    assert_eq!(settled.sequence, 3);
    assert_eq!(
        Value::Object(settled.data.previous_attributes.clone().unwrap()),
        json!({"has_settle": false, "settle_at": null})
    );
    assert_eq!(settled.data.object["has_settle"], true);

    // Nothing more: no event, no payment row written.
    let idle = t.sync_ok().await;
    assert_eq!((idle.events, idle.payments_written), (0, 0));
    let stored = t.app.ledger.list_payments(&account()).await.unwrap();
    let mine = stored.iter().find(|p| p.payment.id.0 == hid).unwrap();
    assert_eq!((mine.sequence, mine.link_id.map(|l| l.0)), (3, Some(103)));
    assert!(mine.payment.has_settle);
}

#[tokio::test]
async fn three_payments_by_three_methods_on_one_link_are_three_rows_and_three_paid_events() {
    let erp = Receiver::start(vec![]).await;
    let t = TestApp::spawn_with(|c| subscribe(c, "erp", &erp, None)).await;
    t.sync_ok().await;
    // A failed attempt and an expired one first: attempts that took no money.
    let failed = t.sandbox.pick(103, "QRIS").await["data"]["id"]
        .as_i64()
        .unwrap();
    t.sandbox.step(failed, "fail").await;
    let lapsed = t.sandbox.pick(103, "EWALLET_OVO").await["data"]["id"]
        .as_i64()
        .unwrap();
    t.sandbox.step(lapsed, "expire").await;
    let mut paid_ids = Vec::new();
    for method in ["VA_BRI", "QRIS", "ALFAMART"] {
        let hid = t.sandbox.pick(103, method).await["data"]["id"]
            .as_i64()
            .unwrap();
        t.sandbox.step(hid, "pay").await;
        paid_ids.push(hid);
    }
    let s = t.sync_ok().await;
    assert_eq!(
        s.events_by_type,
        BTreeMap::from([
            ("payment.created".into(), 5),
            ("payment.paid".into(), 3),
            ("payment.failed".into(), 1),
            ("payment.expired".into(), 1),
            ("payment_link.paid".into(), 1),
        ])
    );
    assert_eq!(s.payments_written, 5);
    t.dispatch().await;
    let got = delivered(&t, &erp).await;
    // History is read newest first; by id, the order the customers paid in.
    let mut paid: Vec<&Event> = got
        .iter()
        .filter(|e| e.event_type == EventType::PaymentPaid)
        .collect();
    paid.sort_by_key(|e| e.payment().unwrap().payment.id);
    let methods: Vec<String> = paid
        .iter()
        .map(|e| e.payment().unwrap().payment.payment_method_name.unwrap())
        .collect();
    assert_eq!(methods, ["VA BRI", "QRIS", "Alfamart (Linkqu)"]);
    let alfamart = paid[2].payment().unwrap().payment;
    let additional: Value =
        serde_json::from_str(alfamart.payment_method_additional.as_deref().unwrap()).unwrap();
    assert_eq!(additional["retail_code"], "ALFAMART (LINKQU)");
    let link = got
        .iter()
        .find(|e| e.event_type == EventType::Paid)
        .unwrap();
    assert_eq!(link.data.usage_delta, Some(3));
    let mut behind: Vec<i64> = link
        .payments()
        .unwrap()
        .iter()
        .map(|p| p.payment.id.0)
        .collect();
    behind.sort();
    assert_eq!(
        behind, paid_ids,
        "only the paid attempts are behind the rise"
    );
    let failed_ev = got
        .iter()
        .find(|e| e.event_type == EventType::PaymentFailed)
        .unwrap();
    assert_eq!(
        failed_ev.previous("status"),
        &Value::Null,
        "first seen failed"
    );
    let rows = t.app.ledger.list_payments(&account()).await.unwrap();
    assert_eq!(rows.len(), 4 + 5);
    assert_eq!(
        rows.iter()
            .filter(|p| p.link_id.map(|l| l.0) == Some(103))
            .count(),
        2 + 5
    );
}

#[tokio::test]
async fn a_row_outside_the_window_that_changes_is_caught_by_a_full_resync() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = TestSandbox::start().await;
    let erp = Receiver::start(vec![]).await;
    let mut config = test_config(&dir, &sandbox);
    config.per_page = 2;
    subscribe(&mut config, "erp", &erp, Some(&["payment.settled"]));
    let daemon = serve(&config, Arc::new(SystemClock)).await;
    let admin = &daemon.admin;
    let base = admin.resync_and_wait().await;
    assert_eq!(
        base["history_pages"], 2,
        "4 seeded rows, 2 a page: all read"
    );
    // Two recent payments fill page 1; the seeded rows (from 2025) are pages 2-3, and the
    // oldest, history row 1, is the one whose settlement is outstanding.
    for _ in 0..2 {
        let hid = sandbox.pick(70, "VA_BRI").await["data"]["id"]
            .as_i64()
            .unwrap();
        sandbox.step(hid, "pay").await;
    }
    let run = admin.resync_and_wait().await;
    assert_eq!(
        run["history_pages"], 2,
        "page 1 changed, page 2 old and unchanged: stop"
    );
    sandbox.step(1, "settle").await;
    let windowed = admin.resync_and_wait().await;
    assert_eq!(windowed["history_pages"], 2);
    assert_eq!(
        windowed["changes"], 0,
        "row 1 is on page 3, past the window"
    );
    let (status, v) = admin.call(Method::POST, "/resync?full=true").await;
    assert_eq!(status, 202, "{v}");
    let full = admin
        .wait_run(v["runs"][0]["run_id"].as_i64().unwrap())
        .await;
    assert_eq!(full["history_pages"], 3, "every page");
    assert_eq!(full["changes"], 1);
    for _ in 0..200 {
        if !erp.hits().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let got = erp
        .hits()
        .into_iter()
        .map(|h| {
            assert!(h.verified);
            serde_json::from_value::<Event>(h.body).unwrap()
        })
        .collect::<Vec<_>>();
    assert_eq!(types(&got), ["payment.settled"]);
    let p = got[0].payment().unwrap();
    assert_eq!((p.payment.id.0, p.payment_link.id.0), (1, 101));
    daemon.shutdown().await;
}

/// Reads a CSV export back with the `csv` crate: the header and the rows as maps.
fn read_csv(bytes: &[u8]) -> (Vec<String>, Vec<BTreeMap<String, String>>) {
    let mut r = csv::Reader::from_reader(bytes);
    let header: Vec<String> = r.headers().unwrap().iter().map(str::to_owned).collect();
    let rows = r
        .records()
        .map(|rec| {
            header
                .iter()
                .cloned()
                .zip(rec.unwrap().iter().map(str::to_owned))
                .collect()
        })
        .collect();
    (header, rows)
}

#[tokio::test]
async fn the_export_reads_back_as_csv_and_the_api_serves_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = TestSandbox::start().await;
    let config = test_config(&dir, &sandbox);
    let cfg_path = dir.path().join("config.toml");
    std::fs::write(&cfg_path, config.toml()).unwrap();
    let daemon = serve(&config, Arc::new(SystemClock)).await;
    let admin = &daemon.admin;
    admin.resync_and_wait().await;
    sandbox
        .edit(70, json!({"title": "Kue, \"Lapis\" Legit"}))
        .await;
    let hid = sandbox.pick(70, "QRIS").await["data"]["id"]
        .as_i64()
        .unwrap();
    sandbox.step(hid, "pay").await;
    let pending = sandbox.pick(103, "VA_BRI").await["data"]["id"]
        .as_i64()
        .unwrap();
    admin.resync_and_wait().await;

    let csv_of = |query: &'static str| {
        let admin = admin.clone();
        async move {
            let r = admin
                .http
                .get(format!("{}/payments{query}", admin.base))
                .bearer_auth(ADMIN_TOKEN)
                .header("Accept", "text/csv")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");
            r.bytes().await.unwrap().to_vec()
        }
    };
    let api = csv_of("").await;
    let (header, rows) = read_csv(&api);
    assert_eq!(header, COLUMNS);
    assert_eq!(
        header.join(","),
        "account_id,payment_id,attempt_reff_no,link_id,link_reff_no,link_title,method,\
         method_value,amount,currency,status,payment_date_wib,payment_date_utc,settled,\
         settle_at_wib,customer_name,customer_email"
    );
    assert_eq!(rows.len(), 6, "4 seeded, 1 paid, 1 pending");
    let by_id = |id: i64| {
        rows.iter()
            .find(|r| r["payment_id"] == id.to_string())
            .unwrap()
    };
    let paid = by_id(hid);
    assert_eq!(paid["amount"], "430000.00", "link 70's total");
    assert_eq!(paid["currency"], "IDR");
    assert_eq!(paid["method"], "QRIS");
    assert_eq!(paid["status"], "paid");
    assert_eq!(paid["link_id"], "70");
    assert_eq!(
        paid["link_title"], "Kue, \"Lapis\" Legit",
        "quoted per RFC 4180"
    );
    assert_eq!(paid["settled"], "false");
    let utc = chrono::DateTime::parse_from_rfc3339(&paid["payment_date_utc"]).unwrap();
    let wib = chrono::DateTime::parse_from_rfc3339(&paid["payment_date_wib"]).unwrap();
    assert_eq!(utc, wib, "one instant");
    assert_eq!(wib.offset().local_minus_utc(), 7 * 3600, "WIB is UTC+7");
    assert!(paid["payment_date_wib"].ends_with("+07:00"));
    let seeded = by_id(2);
    assert_eq!(
        seeded["payment_date_wib"], "2025-10-16T14:56:23+07:00",
        "link 102's payment_date in seed 004"
    );
    assert_eq!(seeded["settled"], "true");
    assert_eq!(seeded["amount"], "10000.00");
    let open = by_id(pending);
    assert_eq!(
        (open["status"].as_str(), open["payment_date_wib"].as_str()),
        ("pending", "")
    );

    // The CLI writes the same bytes from the ledger.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_singapay-sync"))
        .arg("--config")
        .arg(&cfg_path)
        .args(["export", "payments"])
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
    assert_eq!(
        out.stdout, api,
        "export payments = GET /payments (text/csv)"
    );

    // Filters: status, Jakarta days, account; JSON by default; bad input is a JSON error.
    let (_, only_paid) = read_csv(&csv_of("?status=paid").await);
    assert_eq!(only_paid.len(), 5);
    let (_, october) = read_csv(&csv_of("?from=2025-10-01&to=2025-10-31").await);
    assert_eq!(
        october.len(),
        4,
        "the seeded payments of October 2025 (WIB)"
    );
    let (_, day) = read_csv(&csv_of("?from=2025-10-21&to=2025-10-21").await);
    assert_eq!(day.len(), 2, "link 103's two payments on 21 Oct (WIB)");
    let v = admin
        .get(&format!("/payments?account_id={ACCOUNT}&status=paid"))
        .await;
    let list = v["payments"].as_array().unwrap();
    assert_eq!(list.len(), 5);
    assert_eq!(list[0]["amount"], "10000.00");
    assert_eq!(list[0]["payment_id"], 1);
    assert_eq!(
        list[0]["settled"], false,
        "the seeded settlement still outstanding"
    );
    assert_eq!(list[1]["settled"], true);
    let (status, e) = admin.call(Method::GET, "/payments?from=21-10-2025").await;
    assert_eq!(status, 400);
    assert_eq!(e["error"]["code"], "bad_parameter");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_singapay-sync"))
        .arg("--config")
        .arg(&cfg_path)
        .args([
            "export", "payments", "--format", "json", "--status", "pending",
        ])
        .env("RUST_LOG", "off")
        .output()
        .await
        .unwrap();
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["payment_id"], pending);
    assert_eq!(lines[0]["payment_date_wib"], Value::Null);
    daemon.shutdown().await;
}

#[tokio::test]
async fn the_sandbox_history_filters_pages_and_shows_like_singapay() {
    use singapay_sync::singapay::{ClientConfig, SingapayClient, SingapayError};
    use singapay_sync::types::PaymentId;
    let t = TestApp::spawn().await;
    let client = SingapayClient::new(ClientConfig::from(&t.app.config.singapay)).unwrap();
    let a = account();
    let pending = t.sandbox.pick(70, "ALFAMART").await["data"].clone();
    let page = |n: u64, per: u64, f: Vec<(&'static str, String)>| {
        let (client, a) = (client.clone(), a.clone());
        async move { client.history_page(&a, n, per, &f).await.unwrap() }
    };
    let ids = |p: &singapay_sync::singapay::HistoryPage| -> Vec<i64> {
        p.rows.iter().map(|(r, _)| r.id.0).collect()
    };
    // Newest first by id, paginated with seed 004's pagination block.
    let p1 = page(1, 2, vec![]).await;
    assert_eq!(ids(&p1), [5, 4]);
    assert_eq!(
        (p1.pagination.total, p1.pagination.total_pages),
        (Some(5), Some(3))
    );
    assert_eq!(ids(&page(3, 2, vec![]).await), [1]);
    assert!(page(4, 2, vec![]).await.rows.is_empty());
    // status, attempt reff_no (partial; not the link's reff_no), method, dates, sort.
    let only = page(1, 25, vec![("status", "pending".into())]).await;
    assert_eq!(ids(&only), [5]);
    let reff = pending["reff_no"].as_str().unwrap();
    assert_eq!(
        ids(&page(1, 25, vec![("reff_no", reff[..8].into())]).await),
        [5]
    );
    let link_reff = pending["payment_link_reff_no"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        page(1, 25, vec![("reff_no", link_reff)])
            .await
            .rows
            .is_empty()
    );
    assert_eq!(
        ids(&page(1, 25, vec![("payment_method_name", "alfa".into())]).await),
        [5]
    );
    assert_eq!(
        ids(&page(
            1,
            25,
            vec![("created_at_to", "2025-10-17T00:00:00+07:00".into())]
        )
        .await),
        [2, 1]
    );
    assert_eq!(
        ids(&page(1, 25, vec![("has_settle", "false".into())]).await),
        [5, 1]
    );
    let by_amount = page(
        1,
        25,
        vec![("sort_by", "amount".into()), ("sort_order", "asc".into())],
    )
    .await;
    assert_eq!(by_amount.rows[0].0.amount.to_string(), "10000.00");
    // Show: the row, or SingaPay's 404.
    let (row, _) = client
        .history_show(&a, PaymentId(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        row.payment_method_name.as_deref(),
        Some("Alfamart (Linkqu)")
    );
    assert_eq!(row.customer_name, "");
    assert!(
        row.payment_method_additional
            .unwrap()
            .contains("partner_reff")
    );
    assert!(
        client
            .history_show(&a, PaymentId(0))
            .await
            .unwrap()
            .is_none()
    );
    // A bad filter is SingaPay's 422.
    let e = client
        .history_page(&a, 1, 25, &[("created_at_from", "yesterday".into())])
        .await
        .unwrap_err();
    assert!(
        matches!(&e, SingapayError::Invalid { fields, .. } if fields.get("created_at_from").is_some()),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_malformed_history_page_fails_the_pass_but_never_holds_back_a_paid_link() {
    let t = TestApp::spawn().await;
    t.sync_ok().await;
    let before = t.app.ledger.list_payments(&account()).await.unwrap();
    t.sandbox.pay(103).await;
    t.sandbox
        .fault(json!({"route": "history", "page": 1,
                      "body": "{\"status\":200,\"success\":true,\"data\":[{\"id\":7,\"amount\":"}))
        .await;
    let err = t.sync_err().await;
    assert!(err.starts_with("history page 1: "), "{err}");
    // The payment rows are as they were; the link's payment is not lost: its event is
    // committed (without data.payments, which the history could not give).
    assert_eq!(
        t.app.ledger.list_payments(&account()).await.unwrap(),
        before
    );
    let events = t.events().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event.event_type, EventType::Paid);
    assert_eq!(events[0].event.data.payments, None);
    assert_eq!(t.link(103).await.link.current_usage, 3);
    // The next pass reads the history: the payment's own events, and the link is not repeated.
    let s = t.sync_ok().await;
    assert_eq!(
        s.events_by_type,
        BTreeMap::from([("payment.created".into(), 1), ("payment.paid".into(), 1)])
    );
}
