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

/// A payment's id: the numeric id of SingaPay's Payment Link History row (one per attempt).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PaymentId(pub i64);

impl fmt::Display for PaymentId {
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

/// Gives a fieldless enum its wire names, from one list: `ALL` (declaration order), `as_str`,
/// `FromStr` (an error naming the known names), `Display`, and serde as that string.
macro_rules! wire_names {
    ($ty:ident, $what:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// Every value, in declaration order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The wire and stored name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }
        }

        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                $ty::ALL.iter().copied().find(|t| t.as_str() == s).ok_or_else(|| {
                    let known: Vec<&str> = $ty::ALL.iter().map(|t| t.as_str()).collect();
                    format!("unknown {} {s:?} (known: {})", $what, known.join(", "))
                })
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// The event catalogue (docs/ARCHITECTURE.md, "Events"), in the order one pass emits them for
/// one link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    /// A link first seen after the account's baseline.
    Created,
    /// `current_usage` rose or `payment_date` moved.
    Paid,
    /// `current_usage` reached `max_usage`.
    Exhausted,
    /// `status`, `status_computed` or `is_expired` changed (closed, reopened, expired).
    StatusChanged,
    /// Any other field changed.
    Updated,
    /// Gone from a complete pass and confirmed gone by a 404 on show.
    Deleted,
    /// A payment (history row) first seen after the account's history baseline: usually
    /// `pending`, a customer picked a method (DESIGN §13, seed 002).
    PaymentCreated,
    /// A payment's status became `paid` (or it was first seen already paid).
    PaymentPaid,
    /// A payment's `has_settle` became true or its `settle_at` was set.
    PaymentSettled,
    /// A payment's status became `failed`.
    PaymentFailed,
    /// A payment's status became `expired`.
    PaymentExpired,
}

impl EventType {
    /// Whether it is a `payment.*` event (about one history row, not a link).
    pub fn is_payment(self) -> bool {
        matches!(
            self,
            EventType::PaymentCreated
                | EventType::PaymentPaid
                | EventType::PaymentSettled
                | EventType::PaymentFailed
                | EventType::PaymentExpired
        )
    }
}

wire_names!(EventType, "event type", {
    Created => "payment_link.created",
    Paid => "payment_link.paid",
    Exhausted => "payment_link.exhausted",
    StatusChanged => "payment_link.status_changed",
    Updated => "payment_link.updated",
    Deleted => "payment_link.deleted",
    PaymentCreated => "payment.created",
    PaymentPaid => "payment.paid",
    PaymentSettled => "payment.settled",
    PaymentFailed => "payment.failed",
    PaymentExpired => "payment.expired",
});

/// What started a sync pass (`sync_run.trigger`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The account's cron schedule.
    Schedule,
    /// `POST /resync` or the `sync` command.
    Manual,
    /// A SingaPay webhook "doorbell" (reserved).
    Webhook,
}

wire_names!(Trigger, "trigger", {
    Schedule => "schedule",
    Manual => "manual",
    Webhook => "webhook",
});

/// A delivery channel (`delivery.channel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum Channel {
    /// Signed HTTP callback (Standard Webhooks).
    Webhook,
    /// E-mail digest.
    Email,
}

wire_names!(Channel, "channel", {
    Webhook => "webhook",
    Email => "email",
});

/// Where a delivery stands (`delivery.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
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

wire_names!(DeliveryState, "delivery state", {
    Pending => "pending",
    Delivered => "delivered",
    Dead => "dead",
    Disabled => "disabled",
});

/// The state of a notification (`inbound_notification.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundState {
    /// Waiting for (another) targeted pass.
    Pending,
    /// Its targeted pass succeeded.
    Processed,
    /// Stored, nothing to read (an event the daemon does not act on).
    Ignored,
    /// Its reads kept failing; the sweep remains the safety net.
    Failed,
}

wire_names!(InboundState, "inbound state", {
    Pending => "pending",
    Processed => "processed",
    Ignored => "ignored",
    Failed => "failed",
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_round_trip_by_name() {
        for &t in EventType::ALL {
            assert_eq!(t.as_str().parse::<EventType>().unwrap(), t);
            assert_eq!(
                serde_json::to_string(&t).unwrap(),
                format!("\"{}\"", t.as_str())
            );
        }
        assert!("payment_link.nope".parse::<EventType>().is_err());
        assert!(serde_json::from_str::<EventType>("\"payment_link.nope\"").is_err());
    }

    #[test]
    fn delivery_states_and_channels_round_trip_by_name() {
        for &s in DeliveryState::ALL {
            assert_eq!(s.as_str().parse::<DeliveryState>().unwrap(), s);
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for &c in Channel::ALL {
            assert_eq!(c.as_str().parse::<Channel>().unwrap(), c);
        }
        for &t in Trigger::ALL {
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
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
