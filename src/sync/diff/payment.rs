//! What changed between the mirrored payment and the fresh history row (DESIGN §13): a payment
//! first seen, paid, settled, failed or expired. Pure.
//!
//! SingaPay's status values differ by source (DOC2 payment-link-history: `pending`, `paid`, `settled`,
//! `failed`, `expired`, `unpaid`), so a row's outcome is read from all of its fields: paid when
//! the status is `paid` or `settled` or the row is settled; otherwise failed on `failed`; otherwise
//! expired on `expired` (in `status` or `status_computed`) or `is_expired`; else pending.

use serde_json::{Map, Value};

use super::{Change, NewLink};
use crate::singapay::PaymentRecord;
use crate::types::EventType;

/// Where a payment attempt stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Pending,
    Paid,
    Failed,
    Expired,
}

fn outcome(r: &PaymentRecord) -> Outcome {
    let status = r.status.to_ascii_lowercase();
    let computed = r
        .status_computed
        .as_deref()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if status == "paid" || status == "settled" || r.is_settled() {
        Outcome::Paid
    } else if status == "failed" {
        Outcome::Failed
    } else if status == "expired" || computed == "expired" || r.is_expired {
        Outcome::Expired
    } else {
        Outcome::Pending
    }
}

/// Whether settled: `has_settle`, a `settle_at`, or the status `settled`.
fn settled(r: &PaymentRecord) -> bool {
    r.is_settled() || r.status.eq_ignore_ascii_case("settled")
}

fn change(event_type: EventType, previous: Option<Map<String, Value>>) -> Change {
    Change {
        event_type,
        previous_attributes: previous,
        usage_delta: None,
    }
}

fn status_before(old: Option<&PaymentRecord>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(
        "status".into(),
        old.map_or(Value::Null, |o| Value::from(o.status.clone())),
    );
    m
}

fn settlement_before(old: Option<&PaymentRecord>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(
        "has_settle".into(),
        Value::from(old.is_some_and(|o| o.has_settle)),
    );
    m.insert(
        "settle_at".into(),
        old.and_then(|o| o.settle_at)
            .map_or(Value::Null, |t| Value::from(crate::time::rfc3339_utc(t))),
    );
    m
}

/// The changes from `old` (the ledger's row, `None` if never seen) to `new`, in the order of the
/// events table: `payment.created`, `.paid`, `.settled`, `.failed` / `.expired`. A row never seen
/// is silent under [`NewLink::Silent`] (the history baseline) and `created` alone under
/// [`NewLink::CreatedOnly`]; otherwise `created` is followed by what it already is (a row first
/// seen paid is also `paid`, so a payment made between two passes is never missed). Other field
/// changes (a customer name filled in, a new `updated_at`) are written without an event.
pub fn diff_payment(
    old: Option<&PaymentRecord>,
    new: &PaymentRecord,
    new_row: NewLink,
) -> Vec<Change> {
    let mut out = Vec::new();
    if old.is_none() {
        if new_row == NewLink::Silent {
            return out;
        }
        out.push(change(EventType::PaymentCreated, None));
        if new_row == NewLink::CreatedOnly {
            return out;
        }
    }
    let before = old.map_or(Outcome::Pending, outcome);
    let now = outcome(new);
    if now == Outcome::Paid && before != Outcome::Paid {
        out.push(change(EventType::PaymentPaid, Some(status_before(old))));
    }
    if settled(new) && !old.is_some_and(settled) {
        out.push(change(
            EventType::PaymentSettled,
            Some(settlement_before(old)),
        ));
    }
    if now != before {
        match now {
            Outcome::Failed => out.push(change(EventType::PaymentFailed, Some(status_before(old)))),
            Outcome::Expired => {
                out.push(change(EventType::PaymentExpired, Some(status_before(old))))
            }
            Outcome::Pending | Outcome::Paid => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The documented history row (DOC2 list sample, as in `singapay::history`): a pending
    /// Alfamart attempt of 1,200,000.
    const ROW: &str = r#"{"id":129,"reff_no":"12917720251024134439474",
        "payment_link_reff_no":"PL2025102113590968f72f3df34e5","payment_method_name":"Alfamart (Linkqu)",
        "payment_method_value":"2025102413443929","payment_method_additional":"{\"retail_code\":\"ALFAMART\"}",
        "expired_at":"2025-10-25T13:44:39+07:00","amount":"1200000.00","payment_date":null,
        "balance_after":null,"status":"pending","status_computed":"pending","is_expired":false,
        "customer_name":"","customer_email":"","customer_phone":"","ip_address":"103.133.68.7",
        "locations":{},"processed_timestamp":null,"has_settle":false,"settle_at":null,
        "optional_metadata":null,"created_at":"2025-10-24T13:44:39+07:00","updated_at":"2025-10-24T13:44:39+07:00"}"#;

    fn row(patch: Value) -> PaymentRecord {
        let mut v: Value = serde_json::from_str(ROW).unwrap();
        for (k, val) in patch.as_object().unwrap() {
            v[k] = val.clone();
        }
        PaymentRecord::decode(&v.to_string()).unwrap()
    }

    fn types(c: &[Change]) -> Vec<EventType> {
        c.iter().map(|c| c.event_type).collect()
    }

    const PAID: &str =
        r#"{"status":"paid","status_computed":"paid","payment_date":"2025-10-24T14:00:00+07:00"}"#;

    fn paid() -> PaymentRecord {
        row(serde_json::from_str(PAID).unwrap())
    }

    #[test]
    fn a_new_row_is_created_then_what_it_already_is() {
        let pending = row(json!({}));
        assert!(diff_payment(None, &pending, NewLink::Silent).is_empty());
        assert_eq!(
            types(&diff_payment(None, &pending, NewLink::CreatedOnly)),
            [EventType::PaymentCreated]
        );
        assert_eq!(
            types(&diff_payment(None, &pending, NewLink::Full)),
            [EventType::PaymentCreated]
        );
        let c = diff_payment(None, &paid(), NewLink::Full);
        assert_eq!(
            types(&c),
            [EventType::PaymentCreated, EventType::PaymentPaid]
        );
        assert_eq!(c[0].previous_attributes, None);
        assert_eq!(
            Value::Object(c[1].previous_attributes.clone().unwrap()),
            json!({"status": null})
        );
        let failed = row(json!({"status": "failed"}));
        assert_eq!(
            types(&diff_payment(None, &failed, NewLink::Full)),
            [EventType::PaymentCreated, EventType::PaymentFailed]
        );
    }

    #[test]
    fn pending_to_paid_to_settled() {
        let pending = row(json!({}));
        assert!(diff_payment(Some(&pending), &pending, NewLink::Full).is_empty());
        let c = diff_payment(Some(&pending), &paid(), NewLink::Full);
        assert_eq!(types(&c), [EventType::PaymentPaid]);
        assert_eq!(
            Value::Object(c[0].previous_attributes.clone().unwrap()),
            json!({"status": "pending"})
        );
        let mut settled_row: Value = serde_json::from_str(PAID).unwrap();
        settled_row["has_settle"] = json!(true);
        settled_row["settle_at"] = json!("2025-10-25T10:00:00+07:00");
        let settled = row(settled_row);
        let c = diff_payment(Some(&paid()), &settled, NewLink::Full);
        assert_eq!(types(&c), [EventType::PaymentSettled]);
        assert_eq!(
            Value::Object(c[0].previous_attributes.clone().unwrap()),
            json!({"has_settle": false, "settle_at": null})
        );
        // Pending straight to settled (DOC2's `settled` status): paid and settled.
        let c = diff_payment(
            Some(&pending),
            &row(json!({"status": "settled"})),
            NewLink::Full,
        );
        assert_eq!(
            types(&c),
            [EventType::PaymentPaid, EventType::PaymentSettled]
        );
        // Settled again (nothing new) is nothing.
        assert!(diff_payment(Some(&settled), &settled, NewLink::Full).is_empty());
    }

    #[test]
    fn failed_and_expired_attempts() {
        let pending = row(json!({}));
        let c = diff_payment(
            Some(&pending),
            &row(json!({"status": "failed"})),
            NewLink::Full,
        );
        assert_eq!(types(&c), [EventType::PaymentFailed]);
        assert_eq!(
            c[0].previous_attributes.clone().unwrap()["status"],
            "pending"
        );
        for patch in [
            json!({"status": "expired"}),
            json!({"status_computed": "expired"}),
            json!({"is_expired": true}),
        ] {
            assert_eq!(
                types(&diff_payment(
                    Some(&pending),
                    &row(patch.clone()),
                    NewLink::Full
                )),
                [EventType::PaymentExpired],
                "{patch}"
            );
        }
        // A paid attempt whose expiry passes later is still paid, not expired.
        let late = row(json!({"status": "paid", "is_expired": true}));
        assert!(diff_payment(Some(&paid()), &late, NewLink::Full).is_empty());
        // Paid after it had expired: paid.
        let expired = row(json!({"status": "expired"}));
        assert_eq!(
            types(&diff_payment(Some(&expired), &paid(), NewLink::Full)),
            [EventType::PaymentPaid]
        );
    }

    #[test]
    fn other_field_changes_make_no_event() {
        let pending = row(json!({}));
        let named =
            row(json!({"customer_name": "Budi", "updated_at": "2025-10-24T13:50:00+07:00"}));
        assert!(diff_payment(Some(&pending), &named, NewLink::Full).is_empty());
    }
}
