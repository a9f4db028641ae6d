//! Integration tests: the daemon's library against the sandbox over real HTTP on 127.0.0.1,
//! callbacks to a receiver verifying signatures with the `standardwebhooks` crate, e-mail over real
//! SMTP to a listener. One binary, a module per feature.

mod admin;
mod cluster;
mod crash;
mod credentials;
mod daemon;
mod doorbell;
mod e2e;
mod faults;
mod feed;
mod guards;
mod harness;
mod hung;
mod layout;
mod manage;
mod multi;
mod observability;
mod payments;
mod replay;
mod retention;
mod retries;
mod schedule;
