//! Validation of link writes before any upstream call, every problem at once (DESIGN §15), from
//! the rules of SingaPay's create and update pages (seeds 000, 001, 003): `reff_no` required, at
//! most 40 characters, no spaces or `/`; `title` required, at most 255; `max_usage` 1…1,000,000;
//! `total_amount` at least 10,000 and equal to the items' sum; `expired_at` in the future;
//! `redirect_url` https and at most 2,048; whitelisted codes among the account's payment methods.
//! The result is the v1 body SingaPay takes (`expired_at` as 13-digit milliseconds, items always
//! present: a total alone becomes one item).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::{Map, Value, json};

/// `{"field": ["why", …]}`, every problem found.
pub type FieldErrors = BTreeMap<String, Vec<String>>;

/// A validated create: the merchant reference and the body to send.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateRequest {
    /// `reff_no`.
    pub reff_no: String,
    /// The v1 create body.
    pub body: Value,
}

fn add(e: &mut FieldErrors, field: &str, why: &str) {
    e.entry(field.to_string())
        .or_default()
        .push(why.to_string());
}

/// A decimal from a JSON number or a decimal string (never through `f64`).
fn decimal(v: &Value) -> Option<Decimal> {
    match v {
        Value::Number(n) => n.to_string().parse().ok(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `expired_at` as 13-digit Unix milliseconds (number or string) or RFC 3339; `Ok(None)` for
/// null.
fn expiry(v: &Value) -> Result<Option<DateTime<Utc>>, String> {
    let text = match v {
        Value::Null => return Ok(None),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_string(),
        _ => return Err("must be 13-digit milliseconds or an RFC 3339 time".into()),
    };
    if text.len() == 13 && text.bytes().all(|b| b.is_ascii_digit()) {
        let ms: i64 = text.parse().map_err(|_| "is not a number".to_string())?;
        return DateTime::from_timestamp_millis(ms)
            .map(Some)
            .ok_or_else(|| "is out of range".into());
    }
    DateTime::parse_from_rfc3339(&text)
        .map(|t| Some(t.with_timezone(&Utc)))
        .map_err(|_| "must be 13-digit milliseconds or an RFC 3339 time".into())
}

fn check_expiry(e: &mut FieldErrors, v: &Value, now: DateTime<Utc>) -> Option<Value> {
    match expiry(v) {
        Ok(None) => Some(Value::Null),
        Ok(Some(t)) if t <= now => {
            add(e, "expired_at", "must be in the future");
            None
        }
        Ok(Some(t)) => Some(json!(t.timestamp_millis())),
        Err(why) => {
            add(e, "expired_at", &why);
            None
        }
    }
}

fn check_max_usage(e: &mut FieldErrors, v: &Value) -> Option<i64> {
    match v.as_i64() {
        Some(n) if (1..=1_000_000).contains(&n) => Some(n),
        _ => {
            add(e, "max_usage", "must be a whole number from 1 to 1000000");
            None
        }
    }
}

fn check_redirect(e: &mut FieldErrors, v: &Value) {
    match v {
        Value::Null => {}
        Value::String(u) if u.len() > 2048 => {
            add(e, "redirect_url", "must be at most 2048 characters")
        }
        Value::String(u) if url::Url::parse(u).is_ok_and(|u| u.scheme() == "https") => {}
        _ => add(e, "redirect_url", "must be an https URL"),
    }
}

fn check_whitelist(e: &mut FieldErrors, v: &Value, known: Option<&[String]>) {
    let Some(codes) = v.as_array() else {
        if !v.is_null() {
            add(
                e,
                "whitelisted_payment_method",
                "must be a list of payment method codes",
            );
        }
        return;
    };
    for c in codes {
        match (c.as_str(), known) {
            (Some(code), Some(known)) if !known.iter().any(|k| k == code) => add(
                e,
                "whitelisted_payment_method",
                &format!("{code} is not one of the account's payment methods"),
            ),
            (Some(_), _) => {}
            (None, _) => add(e, "whitelisted_payment_method", "codes must be strings"),
        }
    }
}

/// Validates a create body (`known`: the account's payment method codes, `None` if they could
/// not be read: the whitelist is then left to SingaPay).
///
/// Errors: every problem, by field.
pub fn create(
    body: &Value,
    known: Option<&[String]>,
    now: DateTime<Utc>,
) -> Result<CreateRequest, FieldErrors> {
    let mut e = FieldErrors::new();
    let Some(b) = body.as_object() else {
        add(&mut e, "body", "must be a JSON object");
        return Err(e);
    };
    let reff_no = b
        .get("reff_no")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if reff_no.is_empty() {
        add(&mut e, "reff_no", "is required");
    } else if reff_no.chars().count() > 40 {
        add(&mut e, "reff_no", "must be at most 40 characters");
    } else if reff_no.contains(char::is_whitespace) || reff_no.contains('/') {
        add(&mut e, "reff_no", "must not contain spaces or slashes");
    }
    let title = b
        .get("title")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if title.trim().is_empty() {
        add(&mut e, "title", "is required");
    } else if title.chars().count() > 255 {
        add(&mut e, "title", "must be at most 255 characters");
    }
    let max_usage = check_max_usage(&mut e, b.get("max_usage").unwrap_or(&json!(1)));
    let mut items = Vec::new();
    let mut sum = Decimal::ZERO;
    if let Some(list) = b.get("items").filter(|v| !v.is_null()) {
        match list.as_array() {
            Some(list) if !list.is_empty() => {
                for (n, it) in list.iter().enumerate() {
                    let name = it.get("name").and_then(Value::as_str).unwrap_or("");
                    let qty = it.get("quantity").and_then(decimal);
                    let price = it.get("unit_price").and_then(decimal);
                    if name.trim().is_empty() {
                        add(&mut e, &format!("items.{n}.name"), "is required");
                    }
                    match (qty, price) {
                        (Some(q), Some(p)) if q > Decimal::ZERO => {
                            match q.checked_mul(p).and_then(|x| sum.checked_add(x)) {
                                Some(s) => sum = s,
                                None => add(&mut e, &format!("items.{n}"), "amount is too large"),
                            }
                            items.push(json!({"name": name, "quantity": q, "unit_price": p}));
                        }
                        _ => add(
                            &mut e,
                            &format!("items.{n}"),
                            "needs a positive quantity and a unit_price (numbers or decimal strings)",
                        ),
                    }
                }
            }
            _ => add(&mut e, "items", "must be a non-empty list"),
        }
    }
    let total = match b.get("total_amount").filter(|v| !v.is_null()) {
        Some(v) => match decimal(v) {
            Some(t) => Some(t),
            None => {
                add(
                    &mut e,
                    "total_amount",
                    "must be a number or a decimal string",
                );
                None
            }
        },
        None if !items.is_empty() => Some(sum),
        None => {
            add(&mut e, "total_amount", "is required (or items)");
            None
        }
    };
    if let Some(t) = total {
        if t < Decimal::from(10_000) {
            add(&mut e, "total_amount", "must be at least 10000");
        }
        if !items.is_empty() && t != sum {
            add(
                &mut e,
                "total_amount",
                &format!("must equal the sum of the items ({sum})"),
            );
        }
    }
    let expired_at = check_expiry(&mut e, b.get("expired_at").unwrap_or(&Value::Null), now);
    check_redirect(&mut e, b.get("redirect_url").unwrap_or(&Value::Null));
    let whitelist = b
        .get("whitelisted_payment_method")
        .cloned()
        .unwrap_or(Value::Null);
    check_whitelist(&mut e, &whitelist, known);
    if !matches!(
        b.get("required_customer_detail"),
        None | Some(Value::Bool(_)) | Some(Value::Null)
    ) {
        add(&mut e, "required_customer_detail", "must be true or false");
    }
    if !e.is_empty() {
        return Err(e);
    }
    let total = total.unwrap_or_default();
    if items.is_empty() {
        items.push(json!({"name": title, "quantity": 1, "unit_price": total}));
    }
    let mut out = Map::new();
    out.insert("reff_no".into(), json!(reff_no));
    out.insert("title".into(), json!(title));
    out.insert(
        "required_customer_detail".into(),
        json!(
            b.get("required_customer_detail")
                .and_then(Value::as_bool)
                .unwrap_or(false)
        ),
    );
    out.insert("max_usage".into(), json!(max_usage.unwrap_or(1)));
    out.insert("total_amount".into(), json!(total));
    out.insert("items".into(), Value::Array(items));
    out.insert("expired_at".into(), expired_at.unwrap_or(Value::Null));
    if !whitelist.is_null() {
        out.insert("whitelisted_payment_method".into(), whitelist);
    }
    for k in ["redirect_url", "optional_metadata"] {
        if let Some(v) = b.get(k).filter(|v| !v.is_null()) {
            out.insert(k.into(), v.clone());
        }
    }
    Ok(CreateRequest {
        reff_no,
        body: Value::Object(out),
    })
}

/// Validates an update body and completes it into the v1 body (seed 003: `status`,
/// `max_usage` and `required_customer_detail` are sent, the current values when not given).
/// `current` is the mirrored link (`status`, `max_usage`, `required_customer_detail`,
/// `current_usage`).
///
/// Errors: every problem, by field.
pub fn update(
    body: &Value,
    current: &Value,
    known: Option<&[String]>,
    now: DateTime<Utc>,
) -> Result<Value, FieldErrors> {
    let mut e = FieldErrors::new();
    let Some(b) = body.as_object() else {
        add(&mut e, "body", "must be a JSON object");
        return Err(e);
    };
    for k in ["reff_no", "total_amount", "items"] {
        if b.contains_key(k) {
            add(&mut e, k, "cannot be changed");
        }
    }
    let mut out = Map::new();
    let status = b
        .get("status")
        .cloned()
        .unwrap_or_else(|| current.get("status").cloned().unwrap_or(json!("open")));
    match status.as_str() {
        Some("open" | "closed" | "expired") => {
            out.insert("status".into(), status.clone());
        }
        _ => add(&mut e, "status", "must be open, closed or expired"),
    }
    let max = b
        .get("max_usage")
        .cloned()
        .unwrap_or_else(|| current.get("max_usage").cloned().unwrap_or(json!(1)));
    if let Some(m) = check_max_usage(&mut e, &max) {
        let used = current
            .get("current_usage")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if m < used {
            add(
                &mut e,
                "max_usage",
                &format!("must not be below the current usage ({used})"),
            );
        }
        out.insert("max_usage".into(), json!(m));
    }
    match b.get("required_customer_detail") {
        Some(Value::Bool(r)) => {
            out.insert("required_customer_detail".into(), json!(r));
        }
        None => {
            let r = current
                .get("required_customer_detail")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            out.insert("required_customer_detail".into(), json!(r));
        }
        Some(_) => add(&mut e, "required_customer_detail", "must be true or false"),
    }
    if let Some(v) = b.get("expired_at")
        && let Some(ms) = check_expiry(&mut e, v, now)
    {
        out.insert("expired_at".into(), ms);
    }
    if let Some(v) = b.get("redirect_url") {
        check_redirect(&mut e, v);
        out.insert("redirect_url".into(), v.clone());
    }
    if let Some(v) = b.get("whitelisted_payment_method") {
        check_whitelist(&mut e, v, known);
        out.insert("whitelisted_payment_method".into(), v.clone());
    }
    for k in ["title", "optional_metadata"] {
        if let Some(v) = b.get(k) {
            out.insert(k.into(), v.clone());
        }
    }
    if let Some(t) = b.get("title").and_then(Value::as_str)
        && (t.trim().is_empty() || t.chars().count() > 255)
    {
        add(&mut e, "title", "must be 1 to 255 characters");
    }
    if e.is_empty() {
        Ok(Value::Object(out))
    } else {
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_764_547_200, 0).unwrap() // 2025-12-01T00:00:00Z
    }

    #[test]
    fn a_good_create_becomes_the_v1_body() {
        let r = create(
            &json!({"reff_no": "INV-2026-0042", "title": "Invoice 42", "total_amount": "150000.00",
                    "expired_at": "2025-12-02T07:00:00+07:00", "whitelisted_payment_method": ["VA_BRI"]}),
            Some(&["VA_BRI".to_string(), "QRIS".to_string()]),
            now(),
        )
        .unwrap();
        assert_eq!(r.reff_no, "INV-2026-0042");
        assert_eq!(r.body["expired_at"], json!(1_764_633_600_000_i64));
        assert_eq!(r.body["total_amount"], json!("150000.00"));
        assert_eq!(
            r.body["items"],
            json!([{"name": "Invoice 42", "quantity": 1, "unit_price": "150000.00"}])
        );
        assert_eq!(r.body["max_usage"], 1);
    }

    #[test]
    fn every_create_problem_is_named_at_once() {
        let e = create(
            &json!({"reff_no": "INV 1/2", "title": "", "max_usage": 0, "total_amount": 5000,
                    "items": [{"name": "A", "quantity": 1, "unit_price": 4000}],
                    "expired_at": 1_700_000_000_000_i64, "redirect_url": "http://shop.example",
                    "whitelisted_payment_method": ["VA_BRI", "BITCOIN"]}),
            Some(&["VA_BRI".to_string()]),
            now(),
        )
        .unwrap_err();
        let fields: Vec<&str> = e.keys().map(String::as_str).collect();
        assert_eq!(
            fields,
            [
                "expired_at",
                "max_usage",
                "redirect_url",
                "reff_no",
                "title",
                "total_amount",
                "whitelisted_payment_method"
            ]
        );
        assert_eq!(e["total_amount"].len(), 2, "{e:?}");
        let long = create(
            &json!({"reff_no": "X".repeat(41), "title": "t", "total_amount": 10000}),
            None,
            now(),
        )
        .unwrap_err();
        assert_eq!(long["reff_no"], ["must be at most 40 characters"]);
    }

    #[test]
    fn an_update_keeps_the_current_values_it_does_not_change() {
        let current = json!({"status": "open", "max_usage": 5, "current_usage": 2, "required_customer_detail": true});
        let b = update(&json!({"status": "closed"}), &current, None, now()).unwrap();
        assert_eq!(
            b,
            json!({"status": "closed", "max_usage": 5, "required_customer_detail": true})
        );
        let e = update(
            &json!({"max_usage": 1, "reff_no": "x", "status": "gone"}),
            &current,
            None,
            now(),
        )
        .unwrap_err();
        assert_eq!(
            e.keys().collect::<Vec<_>>(),
            ["max_usage", "reff_no", "status"]
        );
    }
}
