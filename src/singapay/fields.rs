//! Lenient, lossless readers of one JSON object's fields, shared by every decoder of SingaPay's
//! answers: each field is read whatever its encoding (numbers or decimal strings, `"1"` or `1`,
//! `0`/`1`/`"true"` booleans, every timestamp form of [`crate::time::parse_singapay_time`]),
//! never through `f64`. Errors name the field and the offending value.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::money::parse_decimal_text;
use crate::time::parse_singapay_time;

/// An object's fields, each kept as its JSON text.
pub(crate) type RawMap<'a> = BTreeMap<String, &'a RawValue>;

/// "field `f`: msg".
pub(crate) fn bad(field: &str, msg: impl std::fmt::Display) -> String {
    format!("field `{field}`: {msg}")
}

/// Whether a field is JSON `null`.
pub(crate) fn is_null(r: &RawValue) -> bool {
    r.get().trim() == "null"
}

pub(crate) fn opt_string(m: &RawMap<'_>, f: &str) -> Result<Option<String>, String> {
    match m.get(f) {
        None => Ok(None),
        Some(r) if is_null(r) => Ok(None),
        Some(r) => match serde_json::from_str::<Value>(r.get()).map_err(|e| bad(f, e))? {
            Value::String(s) => Ok(Some(s)),
            Value::Number(n) => Ok(Some(n.to_string())),
            Value::Bool(b) => Ok(Some(b.to_string())),
            other => Err(bad(f, format!("expected a string, got {other}"))),
        },
    }
}

pub(crate) fn opt_i64(m: &RawMap<'_>, f: &str) -> Result<Option<i64>, String> {
    i64_of(f, m.get(f).copied())
}

/// The whole number of field `f`'s JSON text `r` (a number or a decimal string); `None` when
/// absent or `null`.
pub(crate) fn i64_of(f: &str, r: Option<&RawValue>) -> Result<Option<i64>, String> {
    match r {
        None => Ok(None),
        Some(r) if is_null(r) => Ok(None),
        Some(r) => {
            let d = parse_decimal_text(r.get()).map_err(|e| bad(f, e))?;
            if !d.fract().is_zero() {
                return Err(bad(f, format!("expected a whole number, got {}", r.get())));
            }
            d.to_i64().map(Some).ok_or_else(|| bad(f, "out of range"))
        }
    }
}

pub(crate) fn opt_bool(m: &RawMap<'_>, f: &str) -> Result<Option<bool>, String> {
    match m.get(f) {
        None => Ok(None),
        Some(r) if is_null(r) => Ok(None),
        Some(r) => match serde_json::from_str::<Value>(r.get()).map_err(|e| bad(f, e))? {
            Value::Bool(b) => Ok(Some(b)),
            Value::Number(n) if n.as_i64() == Some(0) => Ok(Some(false)),
            Value::Number(n) if n.as_i64() == Some(1) => Ok(Some(true)),
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" => Ok(Some(true)),
                "false" | "0" | "" => Ok(Some(false)),
                _ => Err(bad(f, format!("expected a boolean, got {s:?}"))),
            },
            other => Err(bad(f, format!("expected a boolean, got {other}"))),
        },
    }
}

pub(crate) fn opt_decimal(m: &RawMap<'_>, f: &str) -> Result<Option<Decimal>, String> {
    match m.get(f) {
        None => Ok(None),
        Some(r) if is_null(r) => Ok(None),
        Some(r) => parse_decimal_text(r.get()).map(Some).map_err(|e| bad(f, e)),
    }
}

pub(crate) fn opt_time(m: &RawMap<'_>, f: &str) -> Result<Option<DateTime<Utc>>, String> {
    match m.get(f) {
        None => Ok(None),
        Some(r) if is_null(r) => Ok(None),
        Some(r) => {
            let text = match serde_json::from_str::<Value>(r.get()).map_err(|e| bad(f, e))? {
                Value::String(s) if s.trim().is_empty() => return Ok(None),
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                other => return Err(bad(f, format!("expected a time, got {other}"))),
            };
            parse_singapay_time(&text).map(Some).map_err(|e| bad(f, e))
        }
    }
}

pub(crate) fn opt_value(m: &RawMap<'_>, f: &str) -> Result<Option<Value>, String> {
    match m.get(f) {
        None => Ok(None),
        Some(r) if is_null(r) => Ok(None),
        Some(r) => serde_json::from_str(r.get())
            .map(Some)
            .map_err(|e| bad(f, e)),
    }
}
