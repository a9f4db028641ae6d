//! The diff engine: what changed between the mirrored link and the fresh one (here) or the
//! mirrored payment and the fresh history row (`payment`). Pure: no I/O, no clock, no SQL; the
//! same inputs always give the same changes.
//!
//! Fields are compared in their canonical form ([`PaymentLink`] decoding erases encoding-only
//! differences: `20000` vs `"20000.00"`, `+07:00` vs `Z` for one instant, whitelist order), so an
//! encoding change is never an event.

use serde_json::{Map, Value};

use crate::singapay::PaymentLink;
use crate::types::EventType;

mod payment;

pub use payment::diff_payment;

/// One detected change: becomes one event (docs/ARCHITECTURE.md, "Events").
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Event type.
    pub event_type: EventType,
    /// The changed fields' values before this pass (canonical JSON), for `paid`,
    /// `status_changed`, `updated` and the payment events but `payment.created`; `None` for
    /// `created`, `exhausted`, `deleted` and `payment.created`.
    pub previous_attributes: Option<Map<String, Value>>,
    /// For `paid`: by how much `current_usage` rose (0 if only `payment_date` moved).
    pub usage_delta: Option<i64>,
}

/// How to treat a link (or a history row) the ledger has never seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewLink {
    /// Baseline without notification: record silently.
    Silent,
    /// Baseline with `sync.notify_on_baseline`: `created` only (history is not replayed).
    CreatedOnly,
    /// After the baseline: `created`, then `paid`/`exhausted` for payments it already has, so a
    /// link created and paid between two passes is never a missed payment.
    Full,
}

/// Fields whose change is a payment.
const PAID_FIELDS: [&str; 2] = ["current_usage", "payment_date"];
/// Fields whose change is a status change.
const STATUS_FIELDS: [&str; 3] = ["status", "status_computed", "is_expired"];
/// Fields that never make an event on their own: the id, SingaPay's own bookkeeping
/// (`updated_at` moves with every payment and edit) and the owning account's profile.
const IGNORED_FIELDS: [&str; 3] = ["id", "updated_at", "account"];

fn as_map(link: &PaymentLink) -> Map<String, Value> {
    match serde_json::to_value(link) {
        Ok(Value::Object(m)) => m,
        // PaymentLink always serialises to an object; an empty map would only hide nothing.
        _ => Map::new(),
    }
}

fn get<'a>(m: &'a Map<String, Value>, k: &str) -> &'a Value {
    m.get(k).unwrap_or(&Value::Null)
}

/// The changes from `old` (the ledger's row, `None` if never seen) to `new` (this pass), in the
/// order of the events table: created, paid, exhausted, status_changed, updated.
///
/// Errors: the usage rise does not fit an `i64` (numbers SingaPay never sends, but a hostile or
/// broken upstream could); the pass stops instead of reporting a wrong `usage_delta`.
pub fn diff(
    old: Option<&PaymentLink>,
    new: &PaymentLink,
    new_link: NewLink,
) -> Result<Vec<Change>, String> {
    let Some(old) = old else {
        return Ok(diff_new(new, new_link));
    };
    let (o, n) = (as_map(old), as_map(new));
    let mut out = Vec::new();

    let usage_rose = new.current_usage > old.current_usage;
    let date_moved = new.payment_date.is_some() && new.payment_date != old.payment_date;
    let paid = usage_rose || date_moved;
    if paid {
        let rise = new
            .current_usage
            .checked_sub(old.current_usage)
            .ok_or_else(|| {
                format!(
                    "current_usage {} → {} does not fit a 64-bit difference",
                    old.current_usage, new.current_usage
                )
            })?;
        out.push(Change {
            event_type: EventType::Paid,
            previous_attributes: Some(pick(&o, &PAID_FIELDS)),
            usage_delta: Some(rise.max(0)),
        });
    }
    if new.is_exhausted() && !old.is_exhausted() {
        out.push(Change {
            event_type: EventType::Exhausted,
            previous_attributes: None,
            usage_delta: None,
        });
    }
    if STATUS_FIELDS.iter().any(|f| get(&o, f) != get(&n, f)) {
        out.push(Change {
            event_type: EventType::StatusChanged,
            previous_attributes: Some(pick(&o, &STATUS_FIELDS)),
            usage_delta: None,
        });
    }
    let mut updated = Map::new();
    let keys: std::collections::BTreeSet<&String> = o.keys().chain(n.keys()).collect();
    for k in keys {
        let k = k.as_str();
        if IGNORED_FIELDS.contains(&k) || STATUS_FIELDS.contains(&k) {
            continue;
        }
        // A payment field that did not make a `paid` event (usage fell, date cleared) is an edit.
        if PAID_FIELDS.contains(&k) && paid {
            continue;
        }
        if get(&o, k) != get(&n, k) {
            updated.insert(k.to_string(), get(&o, k).clone());
        }
    }
    if !updated.is_empty() {
        out.push(Change {
            event_type: EventType::Updated,
            previous_attributes: Some(updated),
            usage_delta: None,
        });
    }
    Ok(out)
}

fn diff_new(new: &PaymentLink, mode: NewLink) -> Vec<Change> {
    let mut out = Vec::new();
    if mode == NewLink::Silent {
        return out;
    }
    out.push(Change {
        event_type: EventType::Created,
        previous_attributes: None,
        usage_delta: None,
    });
    if mode == NewLink::CreatedOnly {
        return out;
    }
    if new.current_usage > 0 || new.payment_date.is_some() {
        let mut prev = Map::new();
        prev.insert("current_usage".into(), Value::from(0));
        prev.insert("payment_date".into(), Value::Null);
        out.push(Change {
            event_type: EventType::Paid,
            previous_attributes: Some(prev),
            usage_delta: Some(new.current_usage.max(0)),
        });
    }
    if new.is_exhausted() {
        out.push(Change {
            event_type: EventType::Exhausted,
            previous_attributes: None,
            usage_delta: None,
        });
    }
    out
}

/// The change for a link confirmed deleted (gone from a complete pass and 404 on show).
pub fn deletion() -> Change {
    Change {
        event_type: EventType::Deleted,
        previous_attributes: None,
        usage_delta: None,
    }
}

fn pick(m: &Map<String, Value>, fields: &[&str]) -> Map<String, Value> {
    fields
        .iter()
        .map(|f| (f.to_string(), get(m, f).clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SEED_004: &str = include_str!("../../../tests/fixtures/seed_004_list_page1.json");

    /// Link `id` from the list example (seed 004), decoded.
    fn seed(id: i64) -> PaymentLink {
        let v: Value = serde_json::from_str(SEED_004).unwrap();
        let raw = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["id"] == id)
            .unwrap()
            .to_string();
        PaymentLink::decode(&raw).unwrap()
    }

    /// Seed link `id` with JSON fields replaced, decoded again from the wire form.
    fn edited(id: i64, patch: Value) -> PaymentLink {
        let v: Value = serde_json::from_str(SEED_004).unwrap();
        let mut l = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["id"] == id)
            .unwrap()
            .clone();
        for (k, val) in patch.as_object().unwrap() {
            l[k] = val.clone();
        }
        PaymentLink::decode(&l.to_string()).unwrap()
    }

    fn types(c: &[Change]) -> Vec<EventType> {
        c.iter().map(|c| c.event_type).collect()
    }

    #[test]
    fn an_unchanged_link_yields_nothing() {
        assert!(
            diff(Some(&seed(103)), &seed(103), NewLink::Full)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn encoding_only_differences_are_not_changes() {
        let old = seed(103);
        let new = edited(
            103,
            json!({
                "total_amount": 20000,
                "payment_date": "2025-10-21T06:59:40.000000Z",
                "created_at": "2025-10-21T06:59:40Z",
                "whitelisted_payment_method": ["QRIS", "VA_MAYBANK", "VA_DANAMON", "VA_BRI"],
                "items": [{"name": "tes", "quantity": 1, "unit_price": 20000, "subtotal": "20000.00"}],
                "max_usage": "1000",
                "current_usage": "2"
            }),
        );
        assert_eq!(diff(Some(&old), &new, NewLink::Full).unwrap(), vec![]);
    }

    #[test]
    fn a_payment_is_paid_with_usage_delta_and_previous_values() {
        let old = seed(103);
        let new = edited(
            103,
            json!({"current_usage": 4, "payment_date": "2026-11-21T10:00:00+07:00",
                   "updated_at": "2026-11-21T10:00:00+07:00"}),
        );
        let c = diff(Some(&old), &new, NewLink::Full).unwrap();
        assert_eq!(types(&c), [EventType::Paid]);
        assert_eq!(c[0].usage_delta, Some(2));
        assert_eq!(
            Value::Object(c[0].previous_attributes.clone().unwrap()),
            json!({"current_usage": 2, "payment_date": "2025-10-21T06:59:40Z"})
        );
    }

    #[test]
    fn a_payment_that_exhausts_a_link_is_paid_then_exhausted() {
        // Link 99: max_usage 5, current_usage 0; four more payments would leave it open, five
        // exhaust it. Seed 102 is already exhausted (1 of 1).
        let old = edited(99, json!({"current_usage": 4}));
        let new = edited(
            99,
            json!({"current_usage": 5, "payment_date": "2025-10-17T10:00:00+07:00"}),
        );
        let c = diff(Some(&old), &new, NewLink::Full).unwrap();
        assert_eq!(types(&c), [EventType::Paid, EventType::Exhausted]);
        assert_eq!(c[0].usage_delta, Some(1));
        assert_eq!(c[1].previous_attributes, None);
    }

    #[test]
    fn closing_a_link_is_a_status_change() {
        let old = seed(103);
        let new = edited(
            103,
            json!({"status": "closed", "status_computed": "closed"}),
        );
        let c = diff(Some(&old), &new, NewLink::Full).unwrap();
        assert_eq!(types(&c), [EventType::StatusChanged]);
        assert_eq!(
            Value::Object(c[0].previous_attributes.clone().unwrap()),
            json!({"status": "open", "status_computed": "open", "is_expired": false})
        );
    }

    #[test]
    fn expiry_with_status_still_open_is_a_status_change() {
        let old = edited(103, json!({"expired_at": "2026-11-22T10:00:00+07:00"}));
        let new = edited(
            103,
            json!({"expired_at": "2026-11-22T10:00:00+07:00", "status": "open",
                   "status_computed": "expired", "is_expired": true}),
        );
        let c = diff(Some(&old), &new, NewLink::Full).unwrap();
        assert_eq!(types(&c), [EventType::StatusChanged]);
        let prev = c[0].previous_attributes.clone().unwrap();
        assert_eq!(prev["status_computed"], "open");
        assert_eq!(prev["is_expired"], false);
        assert_eq!(new.status, "open");
    }

    #[test]
    fn edits_are_updated_with_each_changed_field() {
        let old = seed(103);
        let new = edited(
            103,
            json!({"title": "Invoice 103", "max_usage": 2000, "redirect_url": "https://example.com/t",
                   "whitelisted_payment_method": ["QRIS"], "updated_at": "2026-11-21T10:00:00+07:00",
                   "description": "new v2 field"}),
        );
        let c = diff(Some(&old), &new, NewLink::Full).unwrap();
        assert_eq!(types(&c), [EventType::Updated]);
        assert_eq!(
            Value::Object(c[0].previous_attributes.clone().unwrap()),
            json!({"title": "tes", "max_usage": 1000, "redirect_url": null,
                   "whitelisted_payment_method": ["QRIS", "VA_BRI", "VA_DANAMON", "VA_MAYBANK"],
                   "description": null})
        );
    }

    #[test]
    fn amount_and_item_changes_are_updates() {
        let old = seed(103);
        let new = edited(
            103,
            json!({"total_amount": "25000.00",
                   "items": [{"name": "tes", "quantity": "1", "unit_price": "25000", "subtotal": 25000}]}),
        );
        let c = diff(Some(&old), &new, NewLink::Full).unwrap();
        assert_eq!(types(&c), [EventType::Updated]);
        let prev = c[0].previous_attributes.clone().unwrap();
        assert_eq!(prev["total_amount"], "20000.00");
        assert_eq!(prev["items"][0]["unit_price"], "20000.00");
    }

    #[test]
    fn several_changes_come_in_table_order() {
        let old = edited(99, json!({"current_usage": 4}));
        let new = edited(
            99,
            json!({"current_usage": 5, "status": "closed", "status_computed": "closed",
                   "title": "Order #99 (final)"}),
        );
        let c = diff(Some(&old), &new, NewLink::Full).unwrap();
        assert_eq!(
            types(&c),
            [
                EventType::Paid,
                EventType::Exhausted,
                EventType::StatusChanged,
                EventType::Updated
            ]
        );
    }

    #[test]
    fn only_updated_at_or_account_changing_is_no_event() {
        let old = seed(103);
        let new = edited(
            103,
            json!({"updated_at": "2026-01-01T00:00:00Z",
                   "account": {"id": "01K7P073Q8RE2A9PQT8Q7MXPN4", "name": "Renamed"}}),
        );
        assert!(diff(Some(&old), &new, NewLink::Full).unwrap().is_empty());
    }

    #[test]
    fn a_usage_decrease_is_an_update_not_a_payment() {
        let old = seed(103);
        let new = edited(103, json!({"current_usage": 1}));
        let c = diff(Some(&old), &new, NewLink::Full).unwrap();
        assert_eq!(types(&c), [EventType::Updated]);
        assert_eq!(
            c[0].previous_attributes.clone().unwrap()["current_usage"],
            2
        );
    }

    #[test]
    fn new_links_depend_on_the_baseline() {
        let l = seed(103);
        assert!(diff(None, &l, NewLink::Silent).unwrap().is_empty());
        assert_eq!(
            types(&diff(None, &l, NewLink::CreatedOnly).unwrap()),
            [EventType::Created]
        );
        let c = diff(None, &l, NewLink::Full).unwrap();
        assert_eq!(types(&c), [EventType::Created, EventType::Paid]);
        assert_eq!(c[1].usage_delta, Some(2));
        // Seed 102: 1 of 1 used: created, paid, exhausted.
        assert_eq!(
            types(&diff(None, &seed(102), NewLink::Full).unwrap()),
            [EventType::Created, EventType::Paid, EventType::Exhausted]
        );
        // An unpaid new link is just created.
        assert_eq!(
            types(&diff(None, &seed(100), NewLink::Full).unwrap()),
            [EventType::Created]
        );
    }

    #[test]
    fn a_usage_rise_that_overflows_is_an_error_not_a_panic() {
        let old = edited(99, json!({"current_usage": -5}));
        let new = edited(99, json!({"current_usage": i64::MAX}));
        let e = diff(Some(&old), &new, NewLink::Full).unwrap_err();
        assert!(e.contains("current_usage"), "{e}");
    }

    #[test]
    fn deletion_is_its_own_change() {
        assert_eq!(deletion().event_type, EventType::Deleted);
        assert_eq!(deletion().previous_attributes, None);
    }
}
