//! Payment Link History: every payment attempt on a link is its own record (seed 002), with its
//! method, amount, status and settlement. Decoded leniently and losslessly like links: `amount`
//! as a string or a number, customer fields `""` when absent (kept as received),
//! `payment_method_additional` as text (often a JSON-encoded string), statuses as open strings
//! (sources disagree on the set: LV, LG and the docs list `pending`, `paid`, `settled`, `failed`,
//! `expired`, `unpaid`).

use std::collections::BTreeMap;

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
use super::pagination::Pagination;
use crate::money::canonical_money;
use crate::types::{LinkId, PaymentId};

/// One payment attempt as mirrored: every documented field, typed and canonical, plus the
/// fields this version does not know (`extra`).
///
/// Serialised (an event's `data.object`), amounts are decimal strings in Rupiah and times
/// RFC 3339 UTC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentRecord {
    /// The history row's numeric id (not the link's).
    pub id: PaymentId,
    /// The attempt's own reference (`12917720251024134439474`), not the merchant's.
    pub reff_no: String,
    /// The parent link's `reff_no` (the merchant's invoice).
    pub payment_link_reff_no: String,
    /// The parent link's id, when SingaPay sends it.
    pub payment_link_id: Option<LinkId>,
    /// The channel, e.g. `VA BRI`, `QRIS`, `Alfamart (Linkqu)`.
    pub payment_method_name: Option<String>,
    /// The VA number or pay code (a card attempt echoes its reff_no).
    pub payment_method_value: Option<String>,
    /// Extra method data as SingaPay sends it: text, often a JSON-encoded object.
    pub payment_method_additional: Option<String>,
    /// When the attempt stops accepting payment (UTC).
    pub expired_at: Option<DateTime<Utc>>,
    /// The amount, Rupiah.
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    /// When it was paid (UTC).
    pub payment_date: Option<DateTime<Utc>>,
    /// The account's balance after it, Rupiah, when sent.
    #[serde(with = "rust_decimal::serde::str_option", default)]
    pub balance_after: Option<Decimal>,
    /// `pending`, `paid`, `failed`, `expired`, … (kept as sent).
    pub status: String,
    /// The status SingaPay computes at read time, when sent.
    pub status_computed: Option<String>,
    /// Whether `expired_at` has passed.
    pub is_expired: bool,
    /// The payer's name (`""` when absent, as SingaPay sends it).
    pub customer_name: String,
    /// The payer's e-mail (`""` when absent).
    pub customer_email: String,
    /// The payer's phone (`""` when absent).
    pub customer_phone: String,
    /// When SingaPay processed it (UTC).
    pub processed_timestamp: Option<DateTime<Utc>>,
    /// Whether it has been settled to the merchant.
    pub has_settle: bool,
    /// When it was settled (UTC).
    pub settle_at: Option<DateTime<Utc>>,
    /// Creation time (UTC): when the method was picked.
    pub created_at: Option<DateTime<Utc>>,
    /// Last update (UTC).
    pub updated_at: Option<DateTime<Utc>>,
    /// Everything else SingaPay sends (`ip_address`, `locations`, `optional_metadata`, fees…).
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// The documented field names read into typed fields; everything else goes to `extra`.
const KNOWN_FIELDS: &[&str] = &[
    "id",
    "reff_no",
    "payment_link_reff_no",
    "payment_link_id",
    "payment_method_name",
    "payment_method_value",
    "payment_method_additional",
    "expired_at",
    "amount",
    "payment_date",
    "balance_after",
    "status",
    "status_computed",
    "is_expired",
    "customer_name",
    "customer_email",
    "customer_phone",
    "processed_timestamp",
    "has_settle",
    "settle_at",
    "created_at",
    "updated_at",
];

/// A field as text whatever SingaPay sent: a string as is, anything else (an object, a number)
/// as its JSON.
fn opt_text(m: &RawMap<'_>, f: &str) -> Result<Option<String>, String> {
    match opt_value(m, f)? {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Ok(Some(other.to_string())),
    }
}

impl PaymentRecord {
    /// Decodes one history row from its JSON text (a list entry or a show `data`).
    ///
    /// Errors: a message naming the field and the row when a required field (`id`, `reff_no`,
    /// `amount`, `status`) is missing or a field cannot be read in any known encoding.
    pub fn decode(raw: &str) -> Result<PaymentRecord, String> {
        let m: RawMap<'_> = serde_json::from_str(raw)
            .map_err(|e| format!("history row is not a JSON object: {e}"))?;
        let id = opt_i64(&m, "id")?.ok_or_else(|| bad("id", "missing"))?;
        let ctx = |e: String| format!("history row {id}: {e}");
        let required = |f: &str| -> Result<String, String> {
            opt_string(&m, f)
                .map_err(ctx)?
                .ok_or_else(|| ctx(bad(f, "missing")))
        };
        let customer = |f: &str| -> Result<String, String> {
            Ok(opt_string(&m, f).map_err(ctx)?.unwrap_or_default())
        };
        let mut extra = BTreeMap::new();
        for (k, v) in &m {
            if !KNOWN_FIELDS.contains(&k.as_str()) {
                let value: Value = serde_json::from_str(v.get()).map_err(|e| ctx(bad(k, e)))?;
                extra.insert(k.clone(), value);
            }
        }
        Ok(PaymentRecord {
            id: PaymentId(id),
            reff_no: required("reff_no")?,
            payment_link_reff_no: required("payment_link_reff_no")?,
            payment_link_id: opt_i64(&m, "payment_link_id").map_err(ctx)?.map(LinkId),
            payment_method_name: opt_string(&m, "payment_method_name").map_err(ctx)?,
            payment_method_value: opt_string(&m, "payment_method_value").map_err(ctx)?,
            payment_method_additional: opt_text(&m, "payment_method_additional").map_err(ctx)?,
            expired_at: opt_time(&m, "expired_at").map_err(ctx)?,
            amount: opt_decimal(&m, "amount")
                .map_err(ctx)?
                .map(canonical_money)
                .ok_or_else(|| ctx(bad("amount", "missing")))?,
            payment_date: opt_time(&m, "payment_date").map_err(ctx)?,
            balance_after: opt_decimal(&m, "balance_after")
                .map_err(ctx)?
                .map(canonical_money),
            status: required("status")?,
            status_computed: opt_string(&m, "status_computed").map_err(ctx)?,
            is_expired: opt_bool(&m, "is_expired").map_err(ctx)?.unwrap_or(false),
            customer_name: customer("customer_name")?,
            customer_email: customer("customer_email")?,
            customer_phone: customer("customer_phone")?,
            processed_timestamp: opt_time(&m, "processed_timestamp").map_err(ctx)?,
            has_settle: opt_bool(&m, "has_settle").map_err(ctx)?.unwrap_or(false),
            settle_at: opt_time(&m, "settle_at").map_err(ctx)?,
            created_at: opt_time(&m, "created_at").map_err(ctx)?,
            updated_at: opt_time(&m, "updated_at").map_err(ctx)?,
            extra,
        })
    }

    /// Whether it is settled: `has_settle`, or a settlement time.
    pub fn is_settled(&self) -> bool {
        self.has_settle || self.settle_at.is_some()
    }
}

/// One decoded history page: the rows newest first (as asked), each with its verbatim JSON, and
/// the pagination block.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    /// `(row, verbatim JSON of that row)`.
    pub rows: Vec<(PaymentRecord, String)>,
    /// Pagination metadata (all `None` when absent).
    pub pagination: Pagination,
}

/// Decodes a history list answer (`GET /api/v1.0/payment-link-histories/{account_id}`).
///
/// Errors: [`SingapayError::Malformed`] when the body or any row cannot be decoded (the whole
/// page fails), or the classified error of a non-success envelope.
pub(crate) fn decode_history_list(
    http_status: u16,
    body: &str,
) -> Result<HistoryPage, SingapayError> {
    let env = Envelope::parse(body).map_err(SingapayError::Malformed)?;
    if !env.is_success() {
        return Err(envelope_error(http_status, &env));
    }
    let data = env
        .data
        .ok_or_else(|| SingapayError::Malformed("history answer has no `data`".into()))?;
    let raws: Vec<&RawValue> = if is_null(data) {
        Vec::new()
    } else {
        serde_json::from_str(data.get()).map_err(|e| {
            SingapayError::Malformed(format!("history `data` is not an array of rows: {e}"))
        })?
    };
    let mut rows = Vec::with_capacity(raws.len());
    for r in raws {
        let row = PaymentRecord::decode(r.get()).map_err(SingapayError::Malformed)?;
        rows.push((row, r.get().to_string()));
    }
    Ok(HistoryPage {
        rows,
        pagination: env
            .pagination
            .as_ref()
            .map(Pagination::from_value)
            .unwrap_or_default(),
    })
}

/// Decodes a history show answer (`GET …/payment-link-histories/{account_id}/{history_id}`).
///
/// Errors: as [`decode_history_list`].
pub(crate) fn decode_history_show(
    http_status: u16,
    body: &str,
) -> Result<(PaymentRecord, String), SingapayError> {
    let env = Envelope::parse(body).map_err(SingapayError::Malformed)?;
    if !env.is_success() {
        return Err(envelope_error(http_status, &env));
    }
    let data = env
        .data
        .ok_or_else(|| SingapayError::Malformed("history answer has no `data`".into()))?;
    let row = PaymentRecord::decode(data.get()).map_err(SingapayError::Malformed)?;
    Ok((row, data.get().to_string()))
}

/// A row with every field and quirk the docs and LV/LG list for history rows (the seed pages
/// carry no history JSON): `amount` as a string, `""` customer fields, the additional data
/// as a JSON-encoded string, `locations: {}`.
#[cfg(test)]
pub(crate) const SAMPLE: &str = r#"{"id":129,"reff_no":"12917720251024134439474",
    "payment_link_reff_no":"PL2025102113590968f72f3df34e5","payment_method_name":"Alfamart (Linkqu)",
    "payment_method_value":"2025102413443929","payment_method_additional":"{\"retail_code\":\"ALFAMART\",\"partner_reff\":\"20251024134439000129\"}",
    "expired_at":"2025-10-25T13:44:39+07:00","amount":"1200000.00","payment_date":null,
    "balance_after":null,"status":"pending","status_computed":"pending","is_expired":false,
    "customer_name":"","customer_email":"","customer_phone":"","ip_address":"103.133.68.7, 103.133.68.7",
    "locations":{},"processed_timestamp":null,"has_settle":false,"settle_at":null,
    "optional_metadata":null,"created_at":"2025-10-24T13:44:39+07:00","updated_at":"2025-10-24T13:44:39+07:00"}"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_history_row_decodes_losslessly() {
        let r = PaymentRecord::decode(SAMPLE).unwrap();
        assert_eq!(r.id, PaymentId(129));
        assert_eq!(r.reff_no, "12917720251024134439474");
        assert_eq!(r.amount.to_string(), "1200000.00");
        assert_eq!(r.status, "pending");
        assert_eq!(r.customer_name, "");
        assert_eq!(
            r.payment_method_additional.as_deref(),
            Some(r#"{"retail_code":"ALFAMART","partner_reff":"20251024134439000129"}"#)
        );
        assert_eq!(r.extra["ip_address"], "103.133.68.7, 103.133.68.7");
        assert!(!r.is_settled());
        // Amount as a number, an object for the additional data, settlement: all read.
        let other = SAMPLE
            .replace(r#""amount":"1200000.00""#, r#""amount":1200000"#)
            .replace(
                r#""has_settle":false,"settle_at":null"#,
                r#""has_settle":"1","settle_at":"2025-10-25 10:00:00""#,
            );
        let o = PaymentRecord::decode(&other).unwrap();
        assert_eq!(o.amount, r.amount);
        assert!(o.is_settled());
        assert_eq!(
            o.settle_at.unwrap().to_rfc3339(),
            "2025-10-25T03:00:00+00:00"
        );
        // What the digest and the export read back from an event's object.
        let back: PaymentRecord =
            serde_json::from_value(serde_json::to_value(&o).unwrap()).unwrap();
        assert_eq!(back, o);
        let e = PaymentRecord::decode(
            &SAMPLE.replace(r#""amount":"1200000.00""#, r#""amount":"lots""#),
        )
        .unwrap_err();
        assert!(e.contains("history row 129") && e.contains("amount"), "{e}");
    }
}
