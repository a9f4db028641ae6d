//! Delivery: the outbox dispatcher, Standard Webhooks callbacks and e-mail digests. Knows the event
//! contract (DESIGN §5), nothing of SingaPay's wire format.

pub mod dispatcher;
pub mod email;
pub mod retry;
pub mod webhook;

use std::collections::BTreeSet;

use crate::types::EventType;

pub use dispatcher::{DispatchSummary, Dispatcher};
pub use retry::RetrySchedule;

/// A delivery channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Signed HTTP callback.
    Webhook,
    /// E-mail digest.
    Email,
}

impl Channel {
    /// Stored name (`delivery.channel`).
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Webhook => "webhook",
            Channel::Email => "email",
        }
    }
}

/// A subscriber and the events it wants (`None` = all).
#[derive(Debug, Clone)]
pub struct Route {
    /// `[[webhooks]].name` or `[[email.recipients]].name`.
    pub name: String,
    /// Channel.
    pub channel: Channel,
    /// Event filter; `None` means every type.
    pub events: Option<BTreeSet<EventType>>,
}

/// Who gets which event: the subscribers of the config, in order.
#[derive(Debug, Clone, Default)]
pub struct Routing {
    /// Every subscriber.
    pub routes: Vec<Route>,
}

impl Routing {
    /// The subscribers that want events of type `t`.
    pub fn targets(&self, t: EventType) -> impl Iterator<Item = &Route> {
        self.routes
            .iter()
            .filter(move |r| r.events.as_ref().is_none_or(|s| s.contains(&t)))
    }
}
