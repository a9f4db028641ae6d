//! Typed domain values shared by every module: account and link ids, event ids and event types.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A SingaPay account id: a 26-character ULID such as `01K7P073Q8RE2A9PQT8Q7MXPN4`
/// (LV `docs/endpoint-inventory.md`, "ID types"). Parsed case-insensitively, stored upper-case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AccountId(String);

impl AccountId {
    /// Parses a ULID account id. Errors with a message naming the bad value.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        match ulid::Ulid::from_string(t) {
            Ok(_) => Ok(Self(t.to_ascii_uppercase())),
            Err(e) => Err(format!("account id {t:?} is not a ULID: {e}")),
        }
    }
    /// The id as sent to SingaPay.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AccountId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}
impl From<AccountId> for String {
    fn from(a: AccountId) -> String {
        a.0
    }
}
impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A payment link id: SingaPay's numeric `payment_links.id` (LV "ID types").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LinkId(pub i64);

impl fmt::Display for LinkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An event id, `evt_<ULID>`: unique, stable, and the receivers' idempotency key.
/// It is also the Standard Webhooks `webhook-id` of every delivery of the event.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(pub String);

impl EventId {
    /// A new, time-ordered event id.
    pub fn generate() -> Self {
        Self(format!("evt_{}", ulid::Ulid::new()))
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The event catalogue (docs/ARCHITECTURE.md, "Events"), in the order one pass emits them for
/// one link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventType {
    /// A link first seen after the account's baseline.
    #[serde(rename = "payment_link.created")]
    Created,
    /// `current_usage` rose or `payment_date` moved.
    #[serde(rename = "payment_link.paid")]
    Paid,
    /// `current_usage` reached `max_usage`.
    #[serde(rename = "payment_link.exhausted")]
    Exhausted,
    /// `status`, `status_computed` or `is_expired` changed (closed, reopened, expired).
    #[serde(rename = "payment_link.status_changed")]
    StatusChanged,
    /// Any other field changed.
    #[serde(rename = "payment_link.updated")]
    Updated,
    /// Gone from a complete pass and confirmed gone by a 404 on show.
    #[serde(rename = "payment_link.deleted")]
    Deleted,
}

impl EventType {
    /// Every type, in emission order.
    pub const ALL: [EventType; 6] = [
        EventType::Created,
        EventType::Paid,
        EventType::Exhausted,
        EventType::StatusChanged,
        EventType::Updated,
        EventType::Deleted,
    ];

    /// The wire name, e.g. `payment_link.paid`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Created => "payment_link.created",
            EventType::Paid => "payment_link.paid",
            EventType::Exhausted => "payment_link.exhausted",
            EventType::StatusChanged => "payment_link.status_changed",
            EventType::Updated => "payment_link.updated",
            EventType::Deleted => "payment_link.deleted",
        }
    }
}

impl FromStr for EventType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_named("event type", s, &EventType::ALL, EventType::as_str)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What started a sync pass (`sync_run.trigger`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The account's cron schedule.
    Schedule,
    /// `POST /resync` or the `sync` command.
    Manual,
    /// A SingaPay webhook "doorbell" (reserved).
    Webhook,
}

impl Trigger {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Manual => "manual",
            Trigger::Webhook => "webhook",
        }
    }
}

/// A delivery channel (`delivery.channel`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// Signed HTTP callback (Standard Webhooks).
    Webhook,
    /// E-mail digest.
    Email,
}

impl Channel {
    /// The stored name: `webhook` or `email`.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Webhook => "webhook",
            Channel::Email => "email",
        }
    }
}

/// Where a delivery stands (`delivery.state`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Owed: due at `next_attempt_at`.
    Pending,
    /// A 2xx (webhook) or an accepted message (SMTP).
    Delivered,
    /// The retry schedule is exhausted; retried only by hand.
    Dead,
    /// Parked: the subscriber answered 410 Gone and was disabled.
    Disabled,
}

impl DeliveryState {
    /// Every state.
    pub const ALL: [DeliveryState; 4] = [
        DeliveryState::Pending,
        DeliveryState::Delivered,
        DeliveryState::Dead,
        DeliveryState::Disabled,
    ];

    /// The stored name: `pending`, `delivered`, `dead` or `disabled`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
            DeliveryState::Disabled => "disabled",
        }
    }
}

/// Parses a stored name (`as_str`) among `all`, naming the known ones on error.
fn parse_named<T: Copy>(
    what: &str,
    s: &str,
    all: &[T],
    name: impl Fn(T) -> &'static str,
) -> Result<T, String> {
    all.iter().copied().find(|t| name(*t) == s).ok_or_else(|| {
        let known: Vec<&str> = all.iter().map(|t| name(*t)).collect();
        format!("unknown {what} {s:?} (known: {})", known.join(", "))
    })
}

impl FromStr for Channel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_named(
            "channel",
            s,
            &[Channel::Webhook, Channel::Email],
            Channel::as_str,
        )
    }
}

impl FromStr for DeliveryState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_named(
            "delivery state",
            s,
            &DeliveryState::ALL,
            DeliveryState::as_str,
        )
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_round_trip_by_name() {
        for t in EventType::ALL {
            assert_eq!(t.as_str().parse::<EventType>().unwrap(), t);
            assert_eq!(
                serde_json::to_string(&t).unwrap(),
                format!("\"{}\"", t.as_str())
            );
        }
        assert!("payment_link.nope".parse::<EventType>().is_err());
    }

    #[test]
    fn delivery_states_and_channels_round_trip_by_name() {
        for s in DeliveryState::ALL {
            assert_eq!(s.as_str().parse::<DeliveryState>().unwrap(), s);
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for c in [Channel::Webhook, Channel::Email] {
            assert_eq!(c.as_str().parse::<Channel>().unwrap(), c);
        }
        let e = "lost".parse::<DeliveryState>().unwrap_err();
        assert!(e.contains("pending, delivered, dead, disabled"), "{e}");
    }

    #[test]
    fn account_ids_must_be_ulids() {
        assert_eq!(
            AccountId::parse("01k7p073q8re2a9pqt8q7mxpn4")
                .unwrap()
                .as_str(),
            "01K7P073Q8RE2A9PQT8Q7MXPN4"
        );
        assert!(AccountId::parse("toko-utama").is_err());
    }
}
