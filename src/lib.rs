//! singapay-sync: mirrors a merchant's SingaPay Payment Links into a local SQLite ledger, detects
//! what changed, and notifies finance (e-mail digests) and ERPs (Standard Webhooks callbacks).
//!
//! `docs/ARCHITECTURE.md` has the data flow, the module map and the invariants: `sync::diff` is
//! pure; [`ledger`] is the only module that writes SQL; [`singapay`] is the only module that
//! knows SingaPay's wire format; [`notify`] knows nothing of SingaPay. The public modules are
//! what the binary, the integration tests and the benchmarks drive.

pub mod app;
mod body;
pub mod cli;
pub mod commands;
pub mod config;
mod cron;
mod demo;
pub mod event;
pub mod export;
pub(crate) mod http;
pub mod inbound;
pub mod ledger;
mod maintenance;
pub mod manage;
mod money;
pub mod notify;
pub mod sandbox;
pub mod singapay;
pub mod standard_webhooks;
pub mod sync;
mod telemetry;
pub mod time;
pub mod types;
