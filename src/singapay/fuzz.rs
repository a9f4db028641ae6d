//! Property tests of every decoder of SingaPay's answers: arbitrary bytes and the seed pages'
//! JSON with fields replaced by hostile values (huge numbers, strings where numbers go, deep
//! nesting, nulls, dates out of range) never panic, and whatever decodes mirrors faithfully (a
//! decoded link reads back from its own serialised form, as the digest reads an event's object).

use proptest::prelude::*;
use serde_json::{Map, Value};

use super::envelope::Envelope;
use super::history::{PaymentRecord, SAMPLE, decode_history_list, decode_history_show};
use super::link::{PaymentLink, decode_show};
use super::list::decode_list;
use super::pagination::Pagination;

const SEED_004: &str = include_str!("../../tests/fixtures/seed_004_list_page1.json");
const SEED_000: &str = include_str!("../../tests/fixtures/seed_000_show.json");

/// Field names to aim at: every documented one, the envelope's, and a few unknown ones.
const FIELDS: &[&str] = &[
    "id",
    "reff_no",
    "title",
    "payment_url",
    "status",
    "status_computed",
    "is_expired",
    "required_customer_detail",
    "max_usage",
    "current_usage",
    "expired_at",
    "total_amount",
    "items",
    "whitelisted_payment_method",
    "redirect_url",
    "payment_date",
    "created_at",
    "updated_at",
    "optional_metadata",
    "account",
    "quantity",
    "unit_price",
    "subtotal",
    "name",
    "description",
    "",
    // Payment Link History rows (DOC2 payment-link-history).
    "payment_link_reff_no",
    "payment_method_name",
    "payment_method_value",
    "payment_method_additional",
    "amount",
    "balance_after",
    "customer_name",
    "customer_email",
    "customer_phone",
    "processed_timestamp",
    "has_settle",
    "settle_at",
    "ip_address",
    "locations",
];

/// Scalars that break naive decoders.
fn nasty_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[0-9]{1,45}".prop_map(Value::from),
        "-?[0-9]{1,30}\\.[0-9]{0,32}".prop_map(Value::from),
        "-?[0-9]{1,3}[eE][-+]?[0-9]{1,5}".prop_map(Value::from),
        "[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})?"
            .prop_map(Value::from),
        "[0-9]{9,19}".prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ]
}

/// Any JSON value, nested a few levels, its object keys from [`FIELDS`].
fn json_value() -> impl Strategy<Value = Value> {
    json_value_with(FIELDS)
}

/// Any JSON value, nested a few levels, its object keys from `keys`.
pub(crate) fn json_value_with(keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
    nasty_scalar().prop_recursive(3, 24, 4, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(keys).prop_map(str::to_string),
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// One change to the seed page: (link index or the envelope, field, new value).
fn mutation() -> impl Strategy<Value = (Option<usize>, &'static str, Value)> {
    (
        prop::option::weighted(0.85, 0usize..25),
        prop::sample::select(FIELDS),
        json_value(),
    )
}

/// Calls every decoder on `body` (and on its links one by one); checks what decodes.
fn decode_everything(body: &str) -> Result<(), TestCaseError> {
    let _ = Envelope::parse(body);
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        let _ = Pagination::from_value(&v["pagination"]);
        let _ = Pagination::from_value(&v);
    }
    let _ = decode_show(200, body);
    let _ = decode_show(404, body);
    let _ = decode_list(500, body);
    if let Ok(page) = decode_list(200, body) {
        for (link, raw) in &page.links {
            prop_assert_eq!(
                &PaymentLink::decode(raw).map_err(TestCaseError::fail)?,
                link
            );
            let object =
                serde_json::to_value(link).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let back = PaymentLink::deserialize(&object)
                .map_err(|e| TestCaseError::fail(format!("{e}: {object}")))?;
            prop_assert_eq!(
                &back,
                link,
                "a mirrored link reads back from its event object"
            );
        }
    }
    Ok(())
}

use serde::Deserialize;

/// A history page of three rows (the documented sample, ids 129-131) in a v1 envelope.
fn history_page() -> Value {
    let row: Value = serde_json::from_str(SAMPLE).unwrap();
    let rows: Vec<Value> = (0..3)
        .map(|k| {
            let mut r = row.clone();
            r["id"] = Value::from(129 + k);
            r
        })
        .collect();
    serde_json::json!({"status": 200, "success": true, "data": rows,
        "pagination": {"count": 3, "total": 3, "perPage": 25, "currentPage": 1, "totalPages": 1}})
}

/// Calls the history decoders on `body`; whatever decodes reads back from its own JSON and from
/// the event object the ledger would build of it.
fn decode_history(body: &str) -> Result<(), TestCaseError> {
    let _ = decode_history_show(200, body);
    let _ = decode_history_show(404, body);
    let _ = decode_history_list(500, body);
    if let Ok(page) = decode_history_list(200, body) {
        for (row, raw) in &page.rows {
            prop_assert_eq!(
                &PaymentRecord::decode(raw).map_err(TestCaseError::fail)?,
                row
            );
            let object = crate::event::PaymentObject {
                payment: row.clone(),
                payment_link: crate::event::LinkRef {
                    id: crate::types::LinkId(103),
                    reff_no: row.payment_link_reff_no.clone(),
                    title: None,
                },
            }
            .to_value()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let back = crate::event::PaymentObject::from_value(&object)
                .map_err(|e| TestCaseError::fail(format!("{e}: {object}")))?;
            prop_assert_eq!(
                &back.payment,
                row,
                "a mirrored payment reads back from its event"
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_bytes_never_panic_a_decoder(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        decode_everything(&String::from_utf8_lossy(&bytes))?;
        decode_history(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn mutated_history_pages_never_panic_and_decode_faithfully(
        changes in prop::collection::vec(
            (prop::option::weighted(0.85, 0usize..3), prop::sample::select(FIELDS), json_value()),
            1..5,
        )
    ) {
        let mut page = history_page();
        for (row, field, value) in changes {
            match row {
                Some(i) => page["data"][i][field] = value,
                None => page[field] = value,
            }
        }
        decode_history(&page.to_string())?;
        let show = serde_json::json!({"status": 200, "success": true, "data": page["data"][0]});
        decode_history(&show.to_string())?;
    }

    #[test]
    fn mutated_seed_pages_never_panic_and_decode_faithfully(
        changes in prop::collection::vec(mutation(), 1..5)
    ) {
        let mut page: Value = serde_json::from_str(SEED_004).unwrap();
        for (link, field, value) in changes {
            match link {
                Some(i) => page["data"][i][field] = value,
                None => page[field] = value,
            }
        }
        decode_everything(&page.to_string())?;
        let mut show: Value = serde_json::from_str(SEED_000).unwrap();
        show["data"]["total_amount"] = page["data"][0]["total_amount"].clone();
        decode_everything(&show.to_string())?;
    }
}
