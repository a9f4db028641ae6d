//! The finance digest with payments (DESIGN §13): counts, totals and a snapshot of a pass with
//! payments received, a settlement and attempts that started, failed or expired.

use serde_json::{Value, json};

use crate::event::Event;
use crate::notify::email::render_digest;
use crate::types::EventType;

/// A history row as the ledger mirrors it (the DOC2 sample's shape) on link 103.
fn payment(id: i64, method: &str, amount: &str, status: &str, extra: Value) -> Value {
    let mut p = json!({
        "id": id, "reff_no": format!("1037720261121{id:04}"),
        "payment_link_reff_no": "PL2025102113590968f72f3df34e5",
        "payment_method_name": method, "payment_method_value": "827700000000129",
        "payment_method_additional": null, "expired_at": "2026-11-22T03:00:00Z",
        "amount": amount, "payment_date": null, "balance_after": null, "status": status,
        "status_computed": status, "is_expired": false, "customer_name": "",
        "customer_email": "", "customer_phone": "", "processed_timestamp": null,
        "has_settle": false, "settle_at": null, "created_at": "2026-11-21T02:55:00Z",
        "updated_at": "2026-11-21T02:55:00Z",
        "payment_link": {"id": 103, "reff_no": "PL2025102113590968f72f3df34e5",
                         "title": "Invoice <Toko> \"Maju\""},
    });
    for (k, v) in extra.as_object().unwrap() {
        p[k] = v.clone();
    }
    p
}

fn event(ty: EventType, object: Value, data: Value) -> Event {
    let mut d = json!({"object": object});
    for (k, v) in data.as_object().unwrap() {
        d[k] = v.clone();
    }
    serde_json::from_value(
        json!({"id": format!("evt_{ty}_{}", object["id"]), "type": ty.as_str(),
        "created_at": "2026-11-21T03:04:05Z", "account_id": "01K7P073Q8RE2A9PQT8Q7MXPN4",
        "sequence": 1, "data": d}),
    )
    .unwrap()
}

/// One pass with payments: two paid (one behind the link's rise, one by QRIS), a settlement
/// of an older one, a picked method, a failed and an expired attempt.
fn pass() -> Vec<Event> {
    let paid_at = json!({"payment_date": "2026-11-21T03:00:00Z",
                         "processed_timestamp": "2026-11-21T03:00:00Z"});
    let va = payment(130, "VA BRI", "1250000.00", "paid", paid_at.clone());
    let qris = payment(131, "QRIS", "1250000.00", "paid", paid_at);
    let settled = payment(
        120,
        "Alfamart (Linkqu)",
        "1250000.00",
        "paid",
        json!({"payment_date": "2026-11-19T08:00:00Z", "has_settle": true,
               "settle_at": "2026-11-21T02:00:00Z"}),
    );
    let link = json!({"id": 103, "title": "Invoice <Toko> \"Maju\"", "reff_no": "PL2025102113590968f72f3df34e5",
        "total_amount": "1250000.00", "current_usage": 4, "max_usage": 1000,
        "status": "open", "status_computed": "open", "is_expired": false,
        "payment_date": "2026-11-21T03:00:00Z",
        "payment_url": "https://sandbox-paymentlink.singapay.id/b2b/PL2025102113590968f72f3df34e5"});
    vec![
        event(
            EventType::PaymentCreated,
            payment(132, "VA Mandiri", "1250000.00", "pending", json!({})),
            json!({}),
        ),
        event(
            EventType::PaymentPaid,
            va.clone(),
            json!({"previous_attributes": {"status": "pending"}}),
        ),
        event(
            EventType::PaymentPaid,
            qris.clone(),
            json!({"previous_attributes": {"status": "pending"}}),
        ),
        event(
            EventType::PaymentSettled,
            settled,
            json!({"previous_attributes": {"has_settle": false, "settle_at": null}}),
        ),
        event(
            EventType::PaymentFailed,
            payment(128, "Credit Card", "1250000.00", "failed", json!({})),
            json!({"previous_attributes": {"status": "pending"}}),
        ),
        event(
            EventType::PaymentExpired,
            payment(127, "OVO", "1250000.00", "expired", json!({})),
            json!({"previous_attributes": {"status": "pending"}}),
        ),
        event(
            EventType::Paid,
            link,
            json!({"payments": [va, qris], "usage_delta": 2,
                   "previous_attributes": {"current_usage": 2, "payment_date": null}}),
        ),
    ]
}

#[test]
fn payments_are_counted_once_and_settlements_summed() {
    let d = render_digest(&pass()).unwrap();
    assert_eq!(
        d.subject,
        "SingaPay: 2 payments received, 1 payment settled, 1 payment attempt started, \
         1 payment attempt failed, 1 payment attempt expired"
    );
    assert!(
        d.text.contains("Received in this pass: Rp 2.500.000"),
        "{}",
        d.text
    );
    assert!(
        d.text.contains("Settled in this pass: Rp 1.250.000"),
        "{}",
        d.text
    );
    assert!(
        d.text.contains(
            "  21 Nov 2026 10:00 WIB  Rp 1.250.000  VA BRI  Invoice <Toko> \"Maju\" \
             (reff_no PL2025102113590968f72f3df34e5), attempt 10377202611210130"
        ),
        "{}",
        d.text
    );
    assert!(
        d.html.contains("Invoice &lt;Toko&gt;"),
        "escaped: {}",
        d.html
    );
    // Only `payment.*` (no `payment_link.paid` in the digest): the rows count on their own.
    let only: Vec<Event> = pass()
        .into_iter()
        .filter(|e| e.event_type == EventType::PaymentPaid)
        .collect();
    let d = render_digest(&only).unwrap();
    assert_eq!(d.subject, "SingaPay: 2 payments received");
    assert!(
        d.text.contains("Received in this pass: Rp 2.500.000"),
        "{}",
        d.text
    );
}

#[test]
fn digest_with_payments_snapshot() {
    let d = render_digest(&pass()).unwrap();
    insta::assert_snapshot!("digest_payments_text", d.text);
    insta::assert_snapshot!("digest_payments_html", d.html);
}
