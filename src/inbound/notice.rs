//! What a SingaPay webhook names (DOC2 webhooks "Payment Link" and "Payment Link Inquiry"): the event, and the link and history rows a
//! targeted pass should read. The webhook's own fields are never written to the ledger; they only
//! say where to look.

use serde_json::Value;

use crate::types::LinkId;

/// What a notification asks the daemon to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// `payment-link-transaction` (a payment on a link; also recognised by
    /// `data.transaction.type == "pl"` or `data.payment.method == "payment_link"`, LV #8):
    /// show the link, read the attempt.
    Transaction {
        /// `data.payment.additional_info.payment_link.id`.
        link_id: Option<LinkId>,
        /// `data.payment.additional_info.payment_link.reff_no` (the merchant reference).
        link_reff_no: Option<String>,
        /// `data.transaction.reff_no` (the attempt's reference, the history row's `reff_no`).
        attempt_reff_no: Option<String>,
    },
    /// `payment_link.inquiry` / `payment-link-inquiry` (a customer picked a method) and
    /// `payment_link.inquiry.expired`: read the history row.
    Inquiry {
        /// `data.payment_link_history.reff_no`.
        attempt_reff_no: Option<String>,
        /// The parent link's id, when the body carries it.
        link_id: Option<LinkId>,
        /// `data.payment_link_history.payment_link_reff_no`, when present.
        link_reff_no: Option<String>,
    },
    /// `transaction-expiration` / `transaction_expiration`: the history rows listed in
    /// `data.payment_link_histories[]` (VA and QRIS lists are not link history).
    Expiration {
        /// Their attempt `reff_no`s.
        attempt_reff_nos: Vec<String>,
    },
    /// Anything else (settlement, money-out, the dashboard's unsigned test…): stored, not acted
    /// on.
    Other,
}

/// The event name a body gives (`event`), or the one recognised from its fields; and what it asks
/// to read.
pub fn classify(body: &Value) -> (Option<String>, Notice) {
    let event = body
        .get("event")
        .and_then(Value::as_str)
        .map(str::to_string);
    let data = body.get("data").unwrap_or(&Value::Null);
    let canonical = event.as_deref().map(|e| e.replace('_', "-"));
    let is_transaction = canonical.as_deref() == Some("payment-link-transaction")
        || (canonical.is_none()
            && (text(data.pointer("/transaction/type")).as_deref() == Some("pl")
                || text(data.pointer("/payment/method")).as_deref() == Some("payment_link")));
    if is_transaction {
        let link = data.pointer("/payment/additional_info/payment_link");
        let notice = Notice::Transaction {
            link_id: link.and_then(|l| id(l.get("id"))),
            link_reff_no: link.and_then(|l| text(l.get("reff_no"))),
            attempt_reff_no: text(data.pointer("/transaction/reff_no")),
        };
        return (
            Some(event.unwrap_or_else(|| "payment-link-transaction".into())),
            notice,
        );
    }
    let notice = match canonical.as_deref() {
        Some("payment-link.inquiry" | "payment-link-inquiry" | "payment-link.inquiry.expired") => {
            let h = data.get("payment_link_history").unwrap_or(&Value::Null);
            let link = data.get("payment_link");
            Notice::Inquiry {
                attempt_reff_no: text(h.get("reff_no")),
                link_id: id(h.get("payment_link_id"))
                    .or_else(|| link.and_then(|l| id(l.get("id")))),
                link_reff_no: text(h.get("payment_link_reff_no"))
                    .or_else(|| link.and_then(|l| text(l.get("reff_no")))),
            }
        }
        Some("transaction-expiration") => Notice::Expiration {
            attempt_reff_nos: data
                .get("payment_link_histories")
                .and_then(Value::as_array)
                .map(|rows| rows.iter().filter_map(|r| text(r.get("reff_no"))).collect())
                .unwrap_or_default(),
        },
        _ => Notice::Other,
    };
    (event, notice)
}

/// A non-empty string, or a number written as text.
fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A positive link id, given as a number or a numeric string.
fn id(v: Option<&Value>) -> Option<LinkId> {
    let n = match v? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }?;
    (n > 0).then_some(LinkId(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The documented sample (DOC2 webhooks "Payment Link", LG `webhook_events_test.go`),
    /// with the `event` field a live delivery carried.
    fn transaction() -> Value {
        json!({
            "status": 200, "success": true, "event": "payment-link-transaction",
            "timestamp": "10 Nov 2025 09:46:38",
            "data": {
                "transaction": {
                    "reff_no": "18917720251110094037705", "type": "pl", "status": "paid",
                    "amount": {"value": "10000.00", "currency": "IDR"}, "tip": null,
                    "post_timestamp": "10 Nov 2025 09:46:38",
                    "processed_timestamp": "10 Nov 2025 09:46:38"
                },
                "customer": {"id": null, "name": "Budi", "email": "budi@example.com", "phone": "0812"},
                "payment": {"method": "payment_link", "additional_info": {"payment_link": {
                    "id": 189, "reff_no": "PL20251110", "title": "Invoice",
                    "payment_date": "2025-11-05T09:09:49.000000Z", "status": "open",
                    "max_usage": 1, "current_usage": 1, "expired_at": null,
                    "total_amount": "10000.00", "account_id": 35
                }}}
            }
        })
    }

    #[test]
    fn a_transaction_names_its_link_and_attempt() {
        let (event, notice) = classify(&transaction());
        assert_eq!(event.as_deref(), Some("payment-link-transaction"));
        assert_eq!(
            notice,
            Notice::Transaction {
                link_id: Some(LinkId(189)),
                link_reff_no: Some("PL20251110".into()),
                attempt_reff_no: Some("18917720251110094037705".into()),
            }
        );
    }

    #[test]
    fn a_transaction_without_event_is_recognised_by_its_fields() {
        let mut body = transaction();
        body.as_object_mut().unwrap().remove("event");
        let (event, notice) = classify(&body);
        assert_eq!(event.as_deref(), Some("payment-link-transaction"));
        assert!(matches!(notice, Notice::Transaction { .. }));
    }

    #[test]
    fn inquiry_in_both_spellings_and_expiration_batches() {
        for name in ["payment_link.inquiry", "payment-link-inquiry"] {
            let body = json!({"event": name, "data": {"payment_link_history": {
                "reff_no": "A1", "status": "pending", "payment_method_name": "VA BRI",
                "payment_link_reff_no": "INV-1", "amount": 27000
            }}});
            assert_eq!(
                classify(&body).1,
                Notice::Inquiry {
                    attempt_reff_no: Some("A1".into()),
                    link_id: None,
                    link_reff_no: Some("INV-1".into())
                }
            );
        }
        let body = json!({"event": "transaction-expiration", "data": {
            "payment_link_histories": [{"reff_no": "A1"}, {"reff_no": "A2"}, {"id": 3}],
            "virtual_account_transactions": [{"reff_no": "VA"}], "qris_histories": [],
            "summary": {"payment_link_histories": 2}
        }});
        assert_eq!(
            classify(&body).1,
            Notice::Expiration {
                attempt_reff_nos: vec!["A1".into(), "A2".into()]
            }
        );
    }

    #[test]
    fn the_dashboard_test_and_settlements_are_other() {
        let test =
            json!({"status": 200, "success": true, "data": "VA Payment Notification testing"});
        assert_eq!(classify(&test), (None, Notice::Other));
        let settlement = json!({"event": "settlement.completed", "data": {"amount": "1.00"}});
        assert_eq!(classify(&settlement).1, Notice::Other);
    }
}
