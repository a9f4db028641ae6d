//! singapay-sync: mirrors a merchant's SingaPay Payment Links into a local SQLite ledger, detects what
//! changed, and notifies finance (e-mail digests) and ERPs (Standard Webhooks callbacks).
//!
//! Layout and contract: see `DESIGN.md` (shared with the project). Module boundaries:
//! [`sync::diff`] is pure; [`ledger`] is the only module that writes SQL; [`singapay`] is the only
//! module that knows SingaPay's wire format; [`notify`] knows nothing of SingaPay.

pub mod app;
pub mod cli;
pub mod commands;
pub mod config;
pub mod cron;
pub mod demo;
pub mod event;
pub mod http;
pub mod ledger;
pub mod money;
pub mod notify;
pub mod sandbox;
pub mod singapay;
pub mod standard_webhooks;
pub mod sync;
pub mod telemetry;
pub mod time;
pub mod types;
