//! The event envelope: what ERPs receive as a webhook body, the pull feed returns and the finance
//! digest summarises (docs/ARCHITECTURE.md, "Events").
//!
//! ```json
//! { "account_id": "01K7P073Q8RE2A9PQT8Q7MXPN4", "created_at": "2026-11-21T03:04:05Z",
//!   "data": { "object": { …the link as mirrored… }, "previous_attributes": { "current_usage": 1 },
//!             "usage_delta": 1 },
//!   "id": "evt_…", "sequence": 7, "type": "payment_link.paid" }
//! ```
//!
//! A `payment.*` event's `object` is a [`PaymentObject`]: the history row as mirrored plus
//! `payment_link: {id, reff_no, title}`; a `payment_link.paid` carries the rows behind its usage
//! rise in `data.payments` (same shape; DESIGN §13).
//!
//! Keys are serialised in byte order at every level (the struct fields are declared in that order
//! and `object` is a `serde_json::Value`, whose maps are sorted), so an envelope's text is a pure
//! function of its content: the bytes a receiver verifies are the bytes the ledger stores.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::singapay::{PaymentLink, PaymentRecord};
use crate::time::rfc3339_utc;
use crate::types::{AccountId, EventId, EventType, LinkId};

/// One event. `id` is unique and stable (the receivers' idempotency key and the `webhook-id`);
/// `sequence` rises by one per event of the same link, so a receiver can discard stale ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The SingaPay account the link belongs to.
    pub account_id: AccountId,
    /// When the daemon detected the change, UTC (RFC 3339, `Z`, fractions only when present).
    #[serde(serialize_with = "utc_text", deserialize_with = "utc_from_text")]
    pub created_at: DateTime<Utc>,
    /// The object and what changed.
    pub data: EventData,
    /// `evt_<ULID>`.
    pub id: EventId,
    /// Per-link sequence, from 1.
    pub sequence: i64,
    /// What happened.
    #[serde(rename = "type")]
    pub event_type: EventType,
}

/// `data` of an [`Event`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventData {
    /// The link as mirrored after the change (a serialised [`PaymentLink`]: amounts as decimal
    /// strings in Rupiah, times RFC 3339 UTC).
    pub object: Value,
    /// For `payment_link.paid`: the payments behind the usage rise (each a serialised
    /// [`PaymentObject`]), when the history shows them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payments: Option<Vec<Value>>,
    /// The changed fields' values before the change (`paid`, `status_changed`, `updated`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_attributes: Option<Map<String, Value>>,
    /// For `payment_link.paid`: by how much `current_usage` rose (0 if only `payment_date` moved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_delta: Option<i64>,
}

impl Event {
    /// The envelope as delivered: compact JSON, keys in byte order.
    ///
    /// Errors: only if a `Value` inside cannot be written (serde_json's own limits).
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }

    /// `data.object` as a link. Errors when the object is not a mirrored link (a hand-edited or
    /// foreign envelope).
    pub fn link(&self) -> Result<PaymentLink, serde_json::Error> {
        PaymentLink::deserialize(&self.data.object)
    }

    /// `data.object` as a payment (of a `payment.*` event).
    ///
    /// Errors when the object is not a mirrored payment.
    pub fn payment(&self) -> Result<PaymentObject, serde_json::Error> {
        PaymentObject::from_value(&self.data.object)
    }

    /// `data.payments` of a `payment_link.paid` (empty when absent).
    ///
    /// Errors when an entry is not a mirrored payment.
    pub fn payments(&self) -> Result<Vec<PaymentObject>, serde_json::Error> {
        self.data
            .payments
            .iter()
            .flatten()
            .map(PaymentObject::from_value)
            .collect()
    }

    /// A previous attribute (`Value::Null` when absent).
    pub fn previous(&self, field: &str) -> &Value {
        self.data
            .previous_attributes
            .as_ref()
            .and_then(|p| p.get(field))
            .unwrap_or(&Value::Null)
    }
}

/// The link a payment belongs to, as payment events name it: `payment_link: {id, reff_no,
/// title}` (the id is 0 and the title absent while the ledger has not seen the link).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkRef {
    /// The link's id.
    pub id: LinkId,
    /// Its `reff_no` (the merchant's invoice; the row's `payment_link_reff_no`).
    pub reff_no: String,
    /// Its title.
    pub title: Option<String>,
}

/// A payment as events carry it: the mirrored history row and its link.
#[derive(Debug, Clone, PartialEq)]
pub struct PaymentObject {
    /// The row as mirrored.
    pub payment: PaymentRecord,
    /// Its link.
    pub payment_link: LinkRef,
}

impl PaymentObject {
    /// The JSON object: the row's fields (amounts decimal strings, times RFC 3339 UTC) plus
    /// `payment_link`, keys in byte order.
    ///
    /// Errors: only serde_json's own limits.
    pub fn to_value(&self) -> Result<Value, serde_json::Error> {
        let mut v = serde_json::to_value(&self.payment)?;
        if let Value::Object(m) = &mut v {
            m.insert(
                "payment_link".into(),
                serde_json::to_value(&self.payment_link)?,
            );
        }
        Ok(v)
    }

    /// Reads one back from its JSON object.
    ///
    /// Errors: the value is not such an object.
    pub fn from_value(v: &Value) -> Result<PaymentObject, serde_json::Error> {
        let mut m = match v {
            Value::Object(m) => m.clone(),
            _ => return Err(serde::de::Error::custom("a payment is a JSON object")),
        };
        let link = m
            .remove("payment_link")
            .ok_or_else(|| serde::de::Error::missing_field("payment_link"))?;
        Ok(PaymentObject {
            payment: PaymentRecord::deserialize(Value::Object(m))?,
            payment_link: LinkRef::deserialize(link)?,
        })
    }
}

fn utc_text<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339_utc(*at))
}

fn utc_from_text<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    let text = String::deserialize(d)?;
    DateTime::parse_from_rfc3339(&text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SEED_004: &str = include_str!("../tests/fixtures/seed_004_list_page1.json");

    fn link_103() -> PaymentLink {
        let v: Value = serde_json::from_str(SEED_004).unwrap();
        PaymentLink::decode(&v["data"][0].to_string()).unwrap()
    }

    fn paid() -> Event {
        let object = serde_json::to_value(link_103()).unwrap();
        let mut prev = Map::new();
        prev.insert("current_usage".into(), json!(2));
        prev.insert("payment_date".into(), json!("2025-10-21T06:59:40Z"));
        Event {
            account_id: AccountId::parse("01K7P073Q8RE2A9PQT8Q7MXPN4").unwrap(),
            created_at: DateTime::parse_from_rfc3339("2026-11-21T03:04:05.250Z")
                .unwrap()
                .with_timezone(&Utc),
            data: EventData {
                object,
                payments: None,
                previous_attributes: Some(prev),
                usage_delta: Some(2),
            },
            id: EventId("evt_01KAPZ0000000000000000000".into()),
            sequence: 7,
            event_type: EventType::Paid,
        }
    }

    #[test]
    fn the_envelope_is_the_key_sorted_json_of_its_content() {
        let e = paid();
        // The envelope as the first versions built it: a `json!` value, whose maps are sorted.
        let as_value = json!({
            "id": e.id.0, "type": "payment_link.paid", "created_at": "2026-11-21T03:04:05.250Z",
            "account_id": "01K7P073Q8RE2A9PQT8Q7MXPN4", "sequence": 7,
            "data": {"object": e.data.object, "previous_attributes": e.data.previous_attributes,
                     "usage_delta": 2},
        });
        assert_eq!(e.to_json().unwrap(), as_value.to_string());
        assert!(
            e.to_json()
                .unwrap()
                .starts_with(r#"{"account_id":"01K7P073Q8RE2A9PQT8Q7MXPN4","#)
        );

        let mut created = e.clone();
        created.event_type = EventType::Created;
        created.data.previous_attributes = None;
        created.data.usage_delta = None;
        let text = created.to_json().unwrap();
        assert!(!text.contains("previous_attributes") && !text.contains("usage_delta"));
    }

    #[test]
    fn an_envelope_reads_back_with_its_link() {
        let e = paid();
        let back: Event = serde_json::from_str(&e.to_json().unwrap()).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.link().unwrap(), link_103());
        assert_eq!(back.previous("current_usage"), &json!(2));
        assert_eq!(back.previous("title"), &Value::Null);
        assert!(serde_json::from_str::<Event>(r#"{"id":"evt_x"}"#).is_err());
    }
}
