//! The payment sections of the finance digest (DESIGN §13): one line per payment received (link
//! title and reff_no, attempt reff_no, method, Rupiah amount, WIB time), a settlement section,
//! and the attempts that started, failed or expired. Fed by `payment.*` events and by the
//! `data.payments` of `payment_link.paid`.

use std::collections::HashSet;

use rust_decimal::Decimal;
use serde::Serialize;

use crate::event::{Event, PaymentObject};
use crate::money::format_rupiah;
use crate::time::format_wib;
use crate::types::EventType;

/// One payment line.
#[derive(Debug, Clone, Serialize)]
pub(super) struct PaymentLine {
    /// What happened, for the attempts section (`started`, `failed`, `expired`).
    pub what: &'static str,
    /// When, in WIB: paid at (received), settled at (settlements), created at (attempts).
    pub when: String,
    /// Amount, e.g. `Rp 1.250.000`.
    pub amount: String,
    /// `payment_method_name`, e.g. `VA BRI`.
    pub method: String,
    /// The link's title.
    pub title: String,
    /// The link's `reff_no`.
    pub link_reff_no: String,
    /// The attempt's own `reff_no`.
    pub attempt_reff_no: String,
}

/// A payment's identity in one digest: account, history id.
type Key = (String, i64);

/// The payment sections being built, event by event.
#[derive(Debug, Default)]
pub(super) struct PaymentSections {
    /// Received payments, and whether a `payment_link.paid` of the same link is in the digest
    /// (its usage rise already counts them).
    received: Vec<(PaymentLine, Key, (String, i64), Decimal)>,
    received_keys: HashSet<Key>,
    settled: Vec<PaymentLine>,
    total_settled: Decimal,
    attempts: Vec<PaymentLine>,
    started: i64,
    failed: i64,
    expired: i64,
    /// `(account, link id)` of the `payment_link.paid` events in the digest.
    paid_links: HashSet<(String, i64)>,
}

/// What the sections add to a digest.
#[derive(Debug, Default)]
pub(super) struct Sections {
    /// Payments received, one line each.
    pub received: Vec<PaymentLine>,
    /// Payments settled, one line each.
    pub settled: Vec<PaymentLine>,
    /// Total settled, when any.
    pub total_settled: Option<String>,
    /// Attempts started, failed or expired.
    pub attempts: Vec<PaymentLine>,
    /// Payments received that no `payment_link.paid` of the digest counts: `(count, amount)`.
    pub uncounted: (i64, Decimal),
    /// Subject parts for settlements and attempts, in order.
    pub subject_parts: Vec<String>,
}

fn line(
    p: &PaymentObject,
    what: &'static str,
    at: Option<chrono::DateTime<chrono::Utc>>,
) -> PaymentLine {
    let r = &p.payment;
    PaymentLine {
        what,
        when: at.map(format_wib).unwrap_or_else(|| "—".into()),
        amount: format_rupiah(r.amount),
        method: r
            .payment_method_name
            .clone()
            .unwrap_or_else(|| "(method unknown)".into()),
        title: p
            .payment_link
            .title
            .clone()
            .unwrap_or_else(|| "(untitled)".into()),
        link_reff_no: p.payment_link.reff_no.clone(),
        attempt_reff_no: r.reff_no.clone(),
    }
}

fn plural(n: i64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

impl PaymentSections {
    /// Takes one payment received (a `payment.paid` object or an entry of `data.payments`);
    /// the same payment twice is one line.
    fn receive(&mut self, ev: &Event, p: &PaymentObject) {
        let key = (ev.account_id.to_string(), p.payment.id.0);
        if !self.received_keys.insert(key.clone()) {
            return;
        }
        let at = p.payment.payment_date.or(p.payment.created_at);
        self.received.push((
            line(p, "paid", at),
            key,
            (ev.account_id.to_string(), p.payment_link.id.0),
            p.payment.amount,
        ));
    }

    /// Takes one event: a `payment.*` event, or a `payment_link.paid` (its `data.payments`).
    ///
    /// Errors: the object (or an entry of `data.payments`) is not a mirrored payment, or a
    /// total overflows.
    pub(super) fn add(&mut self, ev: &Event) -> Result<(), String> {
        let bad = |e: serde_json::Error| format!("event {}: not a payment: {e}", ev.id);
        if ev.event_type == EventType::Paid {
            if let Some(id) = ev.data.object.get("id").and_then(|v| v.as_i64()) {
                self.paid_links.insert((ev.account_id.to_string(), id));
            }
            for p in ev.payments().map_err(bad)? {
                self.receive(ev, &p);
            }
            return Ok(());
        }
        if !ev.event_type.is_payment() {
            return Ok(());
        }
        let p = ev.payment().map_err(bad)?;
        match ev.event_type {
            EventType::PaymentPaid => self.receive(ev, &p),
            EventType::PaymentSettled => {
                self.total_settled = self
                    .total_settled
                    .checked_add(p.payment.amount)
                    .ok_or_else(|| format!("event {}: the total settled overflows", ev.id))?;
                self.settled.push(line(&p, "settled", p.payment.settle_at));
            }
            EventType::PaymentCreated => {
                self.started += 1;
                self.attempts
                    .push(line(&p, "started", p.payment.created_at));
            }
            EventType::PaymentFailed => {
                self.failed += 1;
                let at = p.payment.updated_at.or(p.payment.created_at);
                self.attempts.push(line(&p, "failed", at));
            }
            EventType::PaymentExpired => {
                self.expired += 1;
                let at = p.payment.expired_at.or(p.payment.updated_at);
                self.attempts.push(line(&p, "expired", at));
            }
            _ => {}
        }
        Ok(())
    }

    /// The finished sections. A received payment whose link's `payment_link.paid` is not in the
    /// digest (a subscriber of `payment.*` only) is counted in `uncounted`.
    ///
    /// Errors: the uncounted total overflows.
    pub(super) fn finish(self) -> Result<Sections, String> {
        let mut uncounted = (0i64, Decimal::ZERO);
        let mut received = Vec::with_capacity(self.received.len());
        for (line, _, link, amount) in self.received {
            if !self.paid_links.contains(&link) {
                uncounted.0 += 1;
                uncounted.1 = uncounted
                    .1
                    .checked_add(amount)
                    .ok_or("the total received overflows")?;
            }
            received.push(line);
        }
        let mut subject_parts = Vec::new();
        if !self.settled.is_empty() {
            subject_parts.push(format!(
                "{} settled",
                plural(self.settled.len() as i64, "payment", "payments")
            ));
        }
        for (n, what) in [
            (self.started, "started"),
            (self.failed, "failed"),
            (self.expired, "expired"),
        ] {
            if n > 0 {
                subject_parts.push(format!(
                    "{} {what}",
                    plural(n, "payment attempt", "payment attempts")
                ));
            }
        }
        Ok(Sections {
            received,
            total_settled: (!self.settled.is_empty()).then(|| format_rupiah(self.total_settled)),
            settled: self.settled,
            attempts: self.attempts,
            uncounted,
            subject_parts,
        })
    }
}
