//! Delivery: the outbox dispatcher, Standard Webhooks callbacks and e-mail digests. Knows the event
//! envelope ([`crate::event`]), nothing of SingaPay's wire format.

mod digest_payments;
#[cfg(test)]
mod digest_tests;
pub mod dispatcher;
pub(crate) mod email;
pub mod retry;
mod webhook;

use std::collections::BTreeSet;

use crate::types::{Channel, EventType};

pub use dispatcher::{DispatchSummary, Dispatcher};
pub use retry::RetrySchedule;

/// A subscriber and the events it wants (`None` = all).
#[derive(Debug, Clone)]
pub(crate) struct Route {
    /// `[[webhooks]].name` or `[[email.recipients]].name`.
    pub name: String,
    /// Channel.
    pub channel: Channel,
    /// Event filter; `None` means every type.
    pub events: Option<BTreeSet<EventType>>,
}

/// Who gets which event: the subscribers of the config, in order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Routing {
    /// Every subscriber.
    pub routes: Vec<Route>,
}

impl Routing {
    /// The subscribers that want events of type `t`.
    pub(crate) fn targets(&self, t: EventType) -> impl Iterator<Item = &Route> {
        self.routes
            .iter()
            .filter(move |r| r.events.as_ref().is_none_or(|s| s.contains(&t)))
    }
}
