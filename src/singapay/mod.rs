//! The upstream API: SingaPay's merchant (B2B) Payment Link endpoints.
//!
//! `auth` signs and caches the access token, `client` makes the calls (retries, error
//! classification); the wire format is decoded leniently and losslessly by `link` (payment
//! links), `history` (Payment Link History: one row per payment attempt), `envelope` (v1/v2 envelopes) and `pagination`, on the field readers of `fields`. No
//! other module knows SingaPay's wire format.

pub(crate) mod auth;
mod client;
mod envelope;
mod error;
mod fields;
#[cfg(test)]
pub(crate) mod fuzz;
mod history;
mod link;
mod list;
mod manage;
mod pagination;
mod reads;

pub use client::{ClientConfig, SingapayClient};
pub use error::SingapayError;
/// A history row with every field the docs list (tests of other modules).
#[cfg(test)]
pub(crate) use history::SAMPLE as HISTORY_SAMPLE;
pub use history::{HistoryPage, PaymentRecord};
pub use link::{LinkItem, PaymentLink};
pub use list::{ListPage, RawLink, RawListPage};
pub use manage::PaymentMethod;
pub use pagination::Pagination;
