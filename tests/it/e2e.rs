//! The whole path over real HTTP: sandbox → sync → ledger → webhooks (verified) and SMTP digest.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use singapay_sync::ledger::{EventFilter, EventRow};
use singapay_sync::types::{EventType, LinkId};

use crate::harness::*;

fn mail_parts(data: &[u8]) -> (String, Vec<String>, String, String) {
    let m = mail_parser::MessageParser::default().parse(data).unwrap();
    let subject = m.subject().unwrap_or_default().to_string();
    let to = m
        .to()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.address().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    (
        subject,
        to,
        m.body_text(0).unwrap_or_default().to_string(),
        m.body_html(0).unwrap_or_default().to_string(),
    )
}

#[tokio::test]
async fn a_pass_after_the_baseline_records_and_delivers_every_change_exactly_once() {
    let erp = Receiver::start(vec![]).await;
    let payments_only = Receiver::start(vec![]).await;
    let smtp = SmtpSink::start().await;
    let t = TestApp::spawn_with(|c| {
        subscribe(c, "erp", &erp, Some(LINK_EVENTS));
        subscribe(c, "cashier", &payments_only, Some(&["payment_link.paid"]));
        mail_to(
            c,
            &smtp,
            &["finance@toko.example", "Owner <owner@toko.example>"],
            Some(&[
                "payment_link.paid",
                "payment_link.exhausted",
                "payment_link.status_changed",
            ]),
        );
    })
    .await;
    let (app, sandbox) = (&t.app, &t.sandbox);

    // Baseline: 103 links, 5 pages of 25, nothing to tell anyone.
    let base = t.sync_ok().await;
    assert!(base.baseline);
    assert_eq!((base.links_seen, base.pages, base.events), (103, 5, 0));
    assert_eq!(base.links_written, 103);
    assert_eq!(app.ledger.count_live_links(&account()).await.unwrap(), 103);
    assert_eq!(t.dispatch().await.attempted, 0);

    // Customers and the merchant act; the clock moves 25 h (link 78 expires).
    sandbox.pay(103).await;
    sandbox.pay(103).await;
    sandbox.close(102).await;
    sandbox.advance(25 * 3600).await;
    sandbox
        .edit(60, json!({"title": "Order #60 (revised)"}))
        .await;
    sandbox.delete(50).await;
    let added = sandbox
        .add(json!({"title": "Walk-in order", "total_amount": 75000}))
        .await;
    let new_id = added["data"]["id"].as_i64().unwrap();
    assert_eq!(new_id, 104);

    let pass = t.sync_ok().await;
    assert!(!pass.baseline);
    assert_eq!(link_events(&pass), 6, "{pass:?}");
    // The two payments on 103 are history rows too: each created and paid (tests/it/payments.rs).
    assert_eq!(pass.events, 10, "{pass:?}");
    // Only the changed rows were written (5 changed + 1 new; the deleted one is marked).
    assert_eq!(pass.links_written, 6);

    let events: Vec<EventRow> = t
        .events()
        .await
        .into_iter()
        .filter(|e| !e.event.event_type.is_payment())
        .collect();
    let by_link: BTreeMap<i64, Vec<&EventRow>> = events.iter().fold(BTreeMap::new(), |mut m, e| {
        m.entry(e.link_id.0).or_default().push(e);
        m
    });
    assert_eq!(
        by_link.keys().copied().collect::<Vec<_>>(),
        [50, 60, 78, 102, 103, 104]
    );
    for evs in by_link.values() {
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].event.sequence, 1);
        assert_eq!(evs[0].event.account_id.as_str(), ACCOUNT);
    }
    let ev = |id: i64| &by_link[&id][0].event;
    let prev = |e: &singapay_sync::event::Event| {
        Value::Object(e.data.previous_attributes.clone().unwrap_or_default())
    };

    let paid = ev(103);
    assert_eq!(paid.event_type, EventType::Paid);
    assert_eq!(paid.data.usage_delta, Some(2));
    assert_eq!(
        prev(paid),
        json!({"current_usage": 2, "payment_date": "2025-10-21T06:59:40Z"})
    );
    assert_eq!(paid.data.object["current_usage"], 4);
    assert_eq!(paid.data.object["total_amount"], "20000.00");
    // The payments behind the rise, one per history row.
    let behind = paid.payments().unwrap();
    assert_eq!(behind.len(), 2);
    for p in &behind {
        assert_eq!(p.payment.amount.to_string(), "20000.00");
        assert_eq!(p.payment.payment_method_name.as_deref(), Some("VA BRI"));
        assert_eq!(p.payment.status, "paid");
        assert_eq!(p.payment_link.id.0, 103);
        assert_eq!(p.payment_link.title.as_deref(), Some("tes"));
    }
    assert_ne!(behind[0].payment.reff_no, behind[1].payment.reff_no);

    let closed = ev(102);
    assert_eq!(closed.event_type, EventType::StatusChanged);
    assert_eq!(
        prev(closed),
        json!({"status": "open", "status_computed": "open", "is_expired": false})
    );
    assert_eq!(closed.data.object["status_computed"], "closed");

    let expired = ev(78);
    assert_eq!(expired.event_type, EventType::StatusChanged);
    assert_eq!(expired.data.object["status"], "open");
    assert_eq!(expired.data.object["status_computed"], "expired");
    assert_eq!(expired.data.object["is_expired"], true);
    assert_eq!(expired.previous("status_computed"), "open");

    let retitled = ev(60);
    assert_eq!(retitled.event_type, EventType::Updated);
    assert_eq!(prev(retitled), json!({"title": "Payment for Order #60"}));

    let deleted = ev(50);
    assert_eq!(deleted.event_type, EventType::Deleted);
    assert_eq!(deleted.data.object["id"], 50);
    assert!(t.link(50).await.deleted_at.is_some());

    let created = ev(104);
    assert_eq!(created.event_type, EventType::Created);
    assert_eq!(created.data.object["total_amount"], "75000.00");
    assert_eq!(created.data.previous_attributes, None);
    assert_eq!(created.data.usage_delta, None);

    // Deliver: 6 to the ERP, 1 to the payments-only hook, 3 e-mail deliveries in one digest.
    let d = t.dispatch().await;
    assert_eq!((d.attempted, d.delivered, d.retrying), (10, 10, 0), "{d:?}");

    let hits = erp.hits();
    assert_eq!(hits.len(), 6);
    assert!(hits.iter().all(|h| h.verified && h.answered == 200));
    let mut ids: Vec<&str> = hits.iter().map(|h| h.webhook_id.as_str()).collect();
    ids.sort();
    let mut want: Vec<&str> = events.iter().map(|e| e.event.id.0.as_str()).collect();
    want.sort();
    assert_eq!(
        ids, want,
        "each event delivered once, webhook-id = event id"
    );
    for h in &hits {
        assert_eq!(h.body["id"], h.webhook_id.as_str());
    }
    let cashier = payments_only.hits();
    assert_eq!(cashier.len(), 1);
    assert_eq!(cashier[0].body["type"], "payment_link.paid");
    assert!(cashier[0].verified);

    let mails = smtp.mails();
    assert_eq!(mails.len(), 1, "one digest per pass per group");
    let mut rcpt = mails[0].rcpt_to.clone();
    rcpt.sort();
    assert_eq!(rcpt, ["finance@toko.example", "owner@toko.example"]);
    let (subject, to, text, html) = mail_parts(&mails[0].data);
    assert_eq!(
        subject,
        "SingaPay: 2 payments received, 1 link expired, 1 link closed"
    );
    assert_eq!(to, ["finance@toko.example", "owner@toko.example"]);
    assert!(text.contains("Received in this pass: Rp 40.000"), "{text}");
    assert!(
        text.contains("2 payments × Rp 20.000 = Rp 40.000"),
        "{text}"
    );
    assert!(text.contains("usage 4/1000"), "{text}");
    assert!(text.contains("Payment for Order #78"), "{text}");
    assert!(
        !text.contains("Order #60"),
        "updated is not in finance's filter: {text}"
    );
    assert!(html.contains("Rp 40.000"), "{html}");

    // Nothing changed: no event, no delivery, no row written.
    let idle = t.sync_ok().await;
    assert_eq!(
        (idle.events, idle.links_written, idle.links_seen),
        (0, 0, 103)
    );
    assert_eq!(t.dispatch().await.attempted, 0);
    assert_eq!(erp.hits().len(), 6);
    assert_eq!(smtp.mails().len(), 1);
    assert_eq!(app.ledger.count_events().await.unwrap(), 10);
}

#[tokio::test]
async fn a_pass_that_exhausts_a_link_emits_paid_then_exhausted_with_rising_sequences() {
    let t = TestApp::spawn().await;
    t.sync_ok().await;
    // Link 78 allows 3 payments; pay 2, sync, pay the last one, sync.
    t.sandbox.pay(78).await;
    t.sandbox.pay(78).await;
    t.sync_ok().await;
    t.sandbox.pay(78).await;
    let s = t.sync_ok().await;
    assert_eq!(s.events_by_type.get("payment_link.paid"), Some(&1));
    assert_eq!(s.events_by_type.get("payment_link.exhausted"), Some(&1));
    let events = t
        .app
        .ledger
        .events(&EventFilter {
            link_id: Some(LinkId(78)),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .unwrap();
    let seen: Vec<(EventType, i64, Option<i64>)> = events
        .iter()
        .filter(|e| !e.event.event_type.is_payment())
        .map(|e| {
            (
                e.event.event_type,
                e.event.sequence,
                e.event.data.usage_delta,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (EventType::Paid, 1, Some(2)),
            (EventType::Paid, 2, Some(1)),
            (EventType::Exhausted, 3, None),
        ]
    );
}

/// A ledger whose `raw_hash`es are the full 64-digit SHA-256 (as written before 2026-12-07, when
/// new rows began to store its first 128 bits) sees no change where there was none, links and
/// payments alike, and a row that changed is rewritten with the short hash. The stored reads of
/// link 103 (its title) and of every payment (its customer's name) are edited behind the hash's
/// back: the pass must trust the 64-digit hashes, as it trusted them before, and not decode the
/// rows (which would find the edits and write them back, the link's with an event).
#[tokio::test]
async fn a_ledger_holding_full_sha256_hashes_sees_no_change_and_rewrites_only_what_changed() {
    use sha2::{Digest, Sha256};
    let t = TestApp::spawn_with(|_| {}).await;
    t.sync_ok().await;
    t.sandbox.pay(103).await;
    let paid = t.sync_ok().await;
    assert!(paid.payments_written >= 1, "{paid:?}");
    let raw = RawLedger::connect(&t.config).await;
    let mut rewritten = 0;
    for (table, key) in [("payment_link", "link_id"), ("payment", "payment_id")] {
        let rows = raw
            .pairs(&format!(
                "SELECT CAST({key} AS TEXT), raw_json FROM {table}"
            ))
            .await;
        for (id, json) in rows {
            let full = hex::encode(Sha256::digest(json.as_bytes()));
            raw.execute(&format!(
                "UPDATE {table} SET raw_hash = '{full}' WHERE {key} = {id}"
            ))
            .await;
            rewritten += 1;
        }
    }
    raw.execute(
        "UPDATE payment_link SET raw_json = REPLACE(raw_json, '\"title\":\"', '\"title\":\"was ') \
         WHERE link_id = 103",
    )
    .await;
    assert_eq!(
        raw.count("SELECT COUNT(*) FROM payment_link WHERE raw_json LIKE '%\"title\":\"was %'")
            .await,
        1
    );
    raw.execute(
        "UPDATE payment SET raw_json = \
         REPLACE(raw_json, '\"customer_name\":\"', '\"customer_name\":\"was ')",
    )
    .await;
    let edited_payments = raw
        .count("SELECT COUNT(*) FROM payment WHERE raw_json LIKE '%\"customer_name\":\"was %'")
        .await;
    let long = "SELECT COUNT(*) FROM payment_link WHERE LENGTH(raw_hash) = 64";
    let long_payments = "SELECT COUNT(*) FROM payment WHERE LENGTH(raw_hash) = 64";
    let (links, payments) = (raw.count(long).await, raw.count(long_payments).await);
    assert_eq!(links, 103);
    assert!(payments >= 1);
    assert_eq!(
        edited_payments, payments,
        "every payment's stored read edited"
    );
    assert_eq!(rewritten, links + payments);

    let idle = t.sync_ok().await;
    assert_eq!(
        (idle.events, idle.links_written, idle.payments_written),
        (0, 0, 0),
        "{idle:?}"
    );
    assert_eq!(idle.links_seen, 103);
    assert!(idle.payments_seen >= 1, "{idle:?}");
    assert_eq!(raw.count(long).await, 103);
    assert_eq!(raw.count(long_payments).await, payments);

    // Link 5 is paid: its row is written with 32 digits, the other links keep theirs.
    t.sandbox.pay(5).await;
    let changed = t.sync_ok().await;
    assert_eq!(changed.links_written, 1, "{changed:?}");
    assert_eq!(raw.count(long).await, 102);
    assert_eq!(
        raw.count("SELECT COUNT(*) FROM payment_link WHERE link_id = 5 AND LENGTH(raw_hash) = 32")
            .await,
        1
    );
    assert_eq!(raw.count(long_payments).await, payments);
    raw.close().await;
}
