//! The payment link as mirrored ([`PaymentLink`]), decoded leniently and losslessly from a list
//! entry or a show `data` (SingaPay's list and show pages: docs/ARCHITECTURE.md, "Sources").
//!
//! The decoded link is canonical (money with two or more decimals, times in UTC, whitelist
//! sorted), so two encodings of the same link compare equal; the verbatim JSON is kept beside it.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use super::SingapayError;
use super::envelope::{Envelope, envelope_error};
use super::fields::{
    RawMap, bad, is_null, opt_bool, opt_decimal, opt_i64, opt_string, opt_time, opt_value,
};
use crate::money::{canonical_money, canonical_quantity};
use crate::types::LinkId;

/// One line of a link's `items` (SingaPay's list and show pages, seeds 004 and 000).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkItem {
    /// Item name.
    pub name: String,
    /// Quantity; SingaPay sends `1` or `"1"`.
    #[serde(with = "rust_decimal::serde::str")]
    pub quantity: Decimal,
    /// Unit price in Rupiah; negative for a discount line.
    #[serde(with = "rust_decimal::serde::str")]
    pub unit_price: Decimal,
    /// `quantity × unit_price` in Rupiah as SingaPay computed it, when sent.
    #[serde(with = "rust_decimal::serde::str_option", default)]
    pub subtotal: Option<Decimal>,
}

/// A payment link as mirrored: every documented field, typed and canonical, plus any field SingaPay
/// sends that this version does not know (`extra`, compared and mirrored like the others).
///
/// Serialised (the event `data.object`), amounts are decimal strings
/// in Rupiah and times RFC 3339 UTC (docs/ARCHITECTURE.md, "Events").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentLink {
    /// SingaPay's numeric `payment_links.id`.
    pub id: LinkId,
    /// Merchant reference (`reff_no`), at most 40 characters.
    pub reff_no: String,
    /// Title shown to the payer.
    pub title: Option<String>,
    /// The hosted payment page.
    pub payment_url: Option<String>,
    /// The stored status: `open` or `closed` (stays `open` after expiry: seed 004's link 100).
    pub status: String,
    /// The status SingaPay computes at read time: `open`, `closed` or `expired`.
    pub status_computed: String,
    /// Whether `expired_at` has passed.
    pub is_expired: bool,
    /// Whether the payer must enter contact details.
    pub required_customer_detail: Option<bool>,
    /// Maximum number of payments; `0` means unlimited (v2).
    pub max_usage: Option<i64>,
    /// Number of payments so far.
    pub current_usage: i64,
    /// When the link stops accepting payments (UTC); `None` = never.
    pub expired_at: Option<DateTime<Utc>>,
    /// Total to pay, Rupiah.
    #[serde(with = "rust_decimal::serde::str_option", default)]
    pub total_amount: Option<Decimal>,
    /// Line items, or `None` when SingaPay sends `null`.
    pub items: Option<Vec<LinkItem>>,
    /// Allowed payment method codes, sorted (SingaPay does not keep their order); `None` = all.
    pub whitelisted_payment_method: Option<Vec<String>>,
    /// Where the payer is sent afterwards.
    pub redirect_url: Option<String>,
    /// Time of the last successful payment (UTC).
    pub payment_date: Option<DateTime<Utc>>,
    /// Creation time (UTC).
    pub created_at: Option<DateTime<Utc>>,
    /// Last update time (UTC).
    pub updated_at: Option<DateTime<Utc>>,
    /// Merchant-defined metadata (`{}` when empty).
    pub optional_metadata: Option<Value>,
    /// The owning account as SingaPay describes it (`id`, `name`, …).
    pub account: Option<Value>,
    /// Fields this version does not know (e.g. v2's `description`, `success_redirect_url`).
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// The documented field names, in SingaPay's order; everything else goes to `extra`.
const KNOWN_FIELDS: &[&str] = &[
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
];

fn decode_item(raw: &RawValue, idx: usize) -> Result<LinkItem, String> {
    let field = format!("items[{idx}]");
    let m: RawMap<'_> = serde_json::from_str(raw.get()).map_err(|e| bad(&field, e))?;
    let name = opt_string(&m, "name")
        .map_err(|e| format!("{field}.{e}"))?
        .unwrap_or_default();
    let quantity = opt_decimal(&m, "quantity")
        .map_err(|e| format!("{field}.{e}"))?
        .ok_or_else(|| bad(&field, "missing quantity"))?;
    let unit_price = opt_decimal(&m, "unit_price")
        .map_err(|e| format!("{field}.{e}"))?
        .ok_or_else(|| bad(&field, "missing unit_price"))?;
    let subtotal = opt_decimal(&m, "subtotal").map_err(|e| format!("{field}.{e}"))?;
    Ok(LinkItem {
        name,
        quantity: canonical_quantity(quantity),
        unit_price: canonical_money(unit_price),
        subtotal: subtotal.map(canonical_money),
    })
}

impl PaymentLink {
    /// Decodes one link object from its JSON text (a list entry or a show `data`).
    ///
    /// Errors: a message naming the field and the offending value when a required field (`id`,
    /// `reff_no`, `current_usage`…) is missing or a field cannot be read in any known encoding.
    pub fn decode(raw: &str) -> Result<PaymentLink, String> {
        let m: RawMap<'_> =
            serde_json::from_str(raw).map_err(|e| format!("link is not a JSON object: {e}"))?;
        let id = opt_i64(&m, "id")?.ok_or_else(|| bad("id", "missing"))?;
        let ctx = |e: String| format!("link {id}: {e}");
        let reff_no = opt_string(&m, "reff_no")
            .map_err(ctx)?
            .ok_or_else(|| ctx(bad("reff_no", "missing")))?;
        let status = opt_string(&m, "status")
            .map_err(ctx)?
            .ok_or_else(|| ctx(bad("status", "missing")))?;
        let expired_at = opt_time(&m, "expired_at").map_err(ctx)?;
        let is_expired = opt_bool(&m, "is_expired").map_err(ctx)?.unwrap_or(false);
        let status_computed = opt_string(&m, "status_computed")
            .map_err(ctx)?
            .unwrap_or_else(|| {
                if status != "closed" && is_expired {
                    "expired".to_string()
                } else {
                    status.clone()
                }
            });
        let items = match m.get("items") {
            None => None,
            Some(r) if is_null(r) => None,
            Some(r) => {
                let list: Vec<&RawValue> = serde_json::from_str(r.get())
                    .map_err(|e| ctx(bad("items", format!("expected an array: {e}"))))?;
                Some(
                    list.iter()
                        .enumerate()
                        .map(|(i, it)| decode_item(it, i))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(ctx)?,
                )
            }
        };
        let whitelisted_payment_method =
            match opt_value(&m, "whitelisted_payment_method").map_err(ctx)? {
                None => None,
                Some(Value::Array(a)) => {
                    let mut set = BTreeSet::new();
                    for v in a {
                        match v {
                            Value::String(s) => {
                                set.insert(s);
                            }
                            other => {
                                return Err(ctx(bad(
                                    "whitelisted_payment_method",
                                    format!("expected codes, got {other}"),
                                )));
                            }
                        }
                    }
                    Some(set.into_iter().collect())
                }
                Some(other) => {
                    return Err(ctx(bad(
                        "whitelisted_payment_method",
                        format!("expected an array, got {other}"),
                    )));
                }
            };
        let mut extra = BTreeMap::new();
        for (k, v) in &m {
            if !KNOWN_FIELDS.contains(&k.as_str()) {
                let value: Value = serde_json::from_str(v.get()).map_err(|e| ctx(bad(k, e)))?;
                extra.insert(k.clone(), value);
            }
        }
        Ok(PaymentLink {
            id: LinkId(id),
            reff_no,
            title: opt_string(&m, "title").map_err(ctx)?,
            payment_url: opt_string(&m, "payment_url").map_err(ctx)?,
            status,
            status_computed,
            is_expired,
            required_customer_detail: opt_bool(&m, "required_customer_detail").map_err(ctx)?,
            max_usage: opt_i64(&m, "max_usage").map_err(ctx)?,
            current_usage: opt_i64(&m, "current_usage").map_err(ctx)?.unwrap_or(0),
            expired_at,
            total_amount: opt_decimal(&m, "total_amount")
                .map_err(ctx)?
                .map(canonical_money),
            items,
            whitelisted_payment_method,
            redirect_url: opt_string(&m, "redirect_url").map_err(ctx)?,
            payment_date: opt_time(&m, "payment_date").map_err(ctx)?,
            created_at: opt_time(&m, "created_at").map_err(ctx)?,
            updated_at: opt_time(&m, "updated_at").map_err(ctx)?,
            optional_metadata: opt_value(&m, "optional_metadata").map_err(ctx)?,
            account: opt_value(&m, "account").map_err(ctx)?,
            extra,
        })
    }

    /// Whether the link has taken as many payments as it allows (`max_usage` > 0 and
    /// `current_usage` ≥ `max_usage`; `0` means unlimited).
    pub fn is_exhausted(&self) -> bool {
        matches!(self.max_usage, Some(m) if m > 0 && self.current_usage >= m)
    }
}

/// Decodes a show answer (`GET …/{account_id}/{id}`, seed 000) into the link and its verbatim JSON.
///
/// Errors: as [`decode_list`].
pub(crate) fn decode_show(
    http_status: u16,
    body: &str,
) -> Result<(PaymentLink, String), SingapayError> {
    let env = Envelope::parse(body).map_err(SingapayError::Malformed)?;
    if !env.is_success() {
        return Err(envelope_error(http_status, &env));
    }
    let data = env
        .data
        .ok_or_else(|| SingapayError::Malformed("show answer has no `data`".into()))?;
    let link = PaymentLink::decode(data.get()).map_err(SingapayError::Malformed)?;
    Ok((link, data.get().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED_000: &str = include_str!("../../tests/fixtures/seed_000_show.json");
    const SEED_001: &str = include_str!("../../tests/fixtures/seed_001_create_response.json");

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn seed_000_show_and_seed_001_create_decode() {
        let (l, _) = decode_show(200, SEED_000).unwrap();
        assert_eq!(l.id, LinkId(104));
        assert_eq!(l.total_amount.unwrap().to_string(), "100000.00");
        assert_eq!(l.expired_at, Some(utc("2025-01-31T17:00:00Z")));
        assert_eq!(l.status_computed, "expired");
        assert_eq!(l.items.as_ref().unwrap()[1].name, "Mouse Wireless");
        assert_eq!(
            l.items.as_ref().unwrap()[1].unit_price.to_string(),
            "50000.00"
        );
        assert_eq!(
            l.redirect_url.as_deref(),
            Some("https://example.com/thank-you")
        );

        // seed 001: numeric total, `Z` timestamps, account id as a number, optional_metadata {}.
        let (c, _) = decode_show(200, SEED_001).unwrap();
        assert_eq!(c.total_amount.unwrap().to_string(), "150000.00");
        assert_eq!(c.expired_at, Some(utc("2024-05-13T00:00:00Z")));
        assert_eq!(c.optional_metadata, Some(serde_json::json!({})));
        assert_eq!(c.account.as_ref().unwrap()["id"], 1);
    }

    #[test]
    fn encodings_of_the_same_link_decode_equal() {
        let a = r#"{"id":7,"reff_no":"R","status":"open","status_computed":"open","is_expired":false,
            "max_usage":"3","current_usage":1,"total_amount":20000,"expired_at":"2025-10-17T14:54:40+07:00",
            "items":[{"name":"x","quantity":"1","unit_price":"20000","subtotal":20000}],
            "whitelisted_payment_method":["VA_BRI","QRIS"]}"#;
        let b = r#"{"id":"7","reff_no":"R","status":"open","status_computed":"open","is_expired":"false",
            "max_usage":3,"current_usage":"1","total_amount":"20000.00","expired_at":"2025-10-17T07:54:40.000000Z",
            "items":[{"name":"x","quantity":1,"unit_price":20000.0,"subtotal":"20000.00"}],
            "whitelisted_payment_method":["QRIS","VA_BRI"]}"#;
        assert_eq!(
            PaymentLink::decode(a).unwrap(),
            PaymentLink::decode(b).unwrap()
        );
    }

    #[test]
    fn unknown_fields_are_kept_and_bad_fields_name_themselves() {
        let l = PaymentLink::decode(
            r#"{"id":1,"reff_no":"R","status":"open","current_usage":0,"description":"v2 field"}"#,
        )
        .unwrap();
        assert_eq!(l.extra["description"], "v2 field");
        let obj = serde_json::to_value(&l).unwrap();
        assert_eq!(obj["description"], "v2 field");

        let e =
            PaymentLink::decode(r#"{"id":9,"reff_no":"R","status":"open","total_amount":"lots"}"#)
                .unwrap_err();
        assert!(e.contains("link 9") && e.contains("total_amount"), "{e}");
        assert!(
            PaymentLink::decode(r#"{"reff_no":"R"}"#)
                .unwrap_err()
                .contains("`id`")
        );
    }
}
