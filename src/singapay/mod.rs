//! The upstream API: SingaPay's merchant (B2B) Payment Link endpoints.
//!
//! [`auth`] signs and caches the access token, [`client`] makes the calls (retries, error
//! classification), [`model`] decodes the wire format leniently and losslessly. No other module
//! knows SingaPay's wire format.

pub mod auth;
pub mod client;
pub mod error;
pub mod model;

pub use client::{ClientConfig, SingapayClient};
pub use error::SingapayError;
pub use model::{LinkItem, ListPage, Pagination, PaymentLink, PaymentMethod};
