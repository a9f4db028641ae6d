//! E-mail digests for finance: one mail per sync pass per recipient group, text and HTML parts,
//! amounts in Rupiah, times in WIB. Rendered from `templates/digest.{txt,html}.j2` (minijinja,
//! HTML auto-escaped) and sent through lettre (SMTP, pooled; or a directory of `.eml` files).

use std::path::PathBuf;
use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use minijinja::{Environment, context};
use rust_decimal::Decimal;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::Value;

use super::digest_payments::PaymentSections;
use crate::event::Event;
use crate::money::format_rupiah;
use crate::time::format_wib;
use crate::types::EventType;

const TEXT_TEMPLATE: &str = include_str!("../../templates/digest.txt.j2");
const HTML_TEMPLATE: &str = include_str!("../../templates/digest.html.j2");

/// A rendered digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    /// Subject summarising the pass, e.g. `SingaPay: 3 payments received, 1 link expired`.
    pub subject: String,
    /// Plain-text part.
    pub text: String,
    /// HTML part.
    pub html: String,
}

#[derive(Serialize)]
struct Item {
    headline: String,
    title: String,
    reff_no: String,
    link_id: String,
    lines: Vec<String>,
    payment_url: Option<String>,
}

/// A field as text for people (`None` for JSON null).
fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// A digest that cannot be computed: `what` of event `ev` overflows.
fn overflow(ev: &Event, what: &str) -> String {
    format!("event {}: {what} overflows; the digest is not sent", ev.id)
}

fn plural(n: i64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Renders the digest of `events` (one pass's events for one recipient group, in commit order).
///
/// Errors: an event whose object is not a link, or a template error (a defect, reported as the
/// delivery's error rather than a crash).
pub fn render_digest(events: &[Event]) -> Result<Digest, String> {
    let mut payments = 0i64;
    let mut received = Decimal::ZERO;
    let (
        mut exhausted,
        mut expired,
        mut closed,
        mut reopened,
        mut created,
        mut edited,
        mut deleted,
    ) = (0, 0, 0, 0, 0, 0, 0);
    let mut items = Vec::new();
    let mut ids = Vec::new();
    let mut accounts = std::collections::BTreeSet::new();
    let mut detected_at = None;
    let mut sections = PaymentSections::default();
    for ev in events {
        ids.push(ev.id.0.clone());
        accounts.insert(ev.account_id.as_str().to_string());
        detected_at = detected_at.or_else(|| Some(format_wib(ev.created_at)));
        sections.add(ev)?;
        if ev.event_type.is_payment() {
            continue;
        }
        let link = ev
            .link()
            .map_err(|e| format!("event {}: the object is not a link: {e}", ev.id))?;
        let amount_text = link
            .total_amount
            .map(format_rupiah)
            .unwrap_or_else(|| "—".into());
        let usage = format!(
            "usage {}/{}",
            link.current_usage,
            match link.max_usage {
                Some(0) | None => "unlimited".to_string(),
                Some(m) => m.to_string(),
            }
        );
        let mut lines = Vec::new();
        let headline = match ev.event_type {
            EventType::Paid => {
                let delta = ev.data.usage_delta.unwrap_or(0);
                payments = payments
                    .checked_add(delta.max(1))
                    .ok_or_else(|| overflow(ev, "the number of payments"))?;
                if let Some(a) = link.total_amount {
                    let got = a
                        .checked_mul(Decimal::from(delta))
                        .ok_or_else(|| overflow(ev, "amount × payments"))?;
                    received = received
                        .checked_add(got)
                        .ok_or_else(|| overflow(ev, "the total received"))?;
                    lines.push(format!(
                        "{} × {} = {}",
                        plural(delta, "payment", "payments"),
                        format_rupiah(a),
                        format_rupiah(got)
                    ));
                }
                lines.push(usage);
                if let Some(p) = link.payment_date {
                    lines.push(format!("last paid {}", format_wib(p)));
                }
                "Payment received"
            }
            EventType::Exhausted => {
                exhausted += 1;
                lines.push(usage);
                "Link fully used"
            }
            EventType::StatusChanged => {
                let now = link.status_computed.as_str();
                let before = text(ev.previous("status_computed")).unwrap_or_default();
                lines.push(format!("status {before} → {now}"));
                if let Some(e) = link.expired_at {
                    lines.push(format!("expiry {}", format_wib(e)));
                }
                match now {
                    "expired" => {
                        expired += 1;
                        "Link expired"
                    }
                    "closed" => {
                        closed += 1;
                        "Link closed"
                    }
                    "open" => {
                        reopened += 1;
                        "Link reopened"
                    }
                    _ => {
                        edited += 1;
                        "Status changed"
                    }
                }
            }
            EventType::Created => {
                created += 1;
                lines.push(format!("amount {amount_text}"));
                lines.push(usage);
                "New link"
            }
            EventType::Updated => {
                edited += 1;
                for (k, before) in ev.data.previous_attributes.iter().flatten() {
                    let after = ev.data.object.get(k).unwrap_or(&Value::Null);
                    let fmt = |v: &Value| match (k.as_str(), text(v).map(|t| t.parse())) {
                        ("total_amount", Some(Ok(d))) => format_rupiah(d),
                        _ => text(v).unwrap_or_else(|| "none".into()),
                    };
                    lines.push(format!("{k}: {} → {}", fmt(before), fmt(after)));
                }
                "Link edited"
            }
            EventType::Deleted => {
                deleted += 1;
                lines.push(format!("amount {amount_text}"));
                "Link deleted"
            }
            // Taken by the payment sections above.
            EventType::PaymentCreated
            | EventType::PaymentPaid
            | EventType::PaymentSettled
            | EventType::PaymentFailed
            | EventType::PaymentExpired => continue,
        };
        items.push(Item {
            headline: headline.to_string(),
            title: link.title.unwrap_or_else(|| "(untitled)".into()),
            reff_no: link.reff_no,
            link_id: link.id.to_string(),
            lines,
            // Only an https:// page is offered to click on.
            payment_url: link.payment_url.filter(|u| u.starts_with("https://")),
        });
    }
    let sections = sections.finish()?;
    payments = payments
        .checked_add(sections.uncounted.0)
        .ok_or("the number of payments overflows")?;
    received = received
        .checked_add(sections.uncounted.1)
        .ok_or("the total received overflows")?;
    let mut parts = Vec::new();
    if payments > 0 {
        parts.push(format!(
            "{} received",
            plural(payments, "payment", "payments")
        ));
    }
    parts.extend(sections.subject_parts.iter().cloned());
    for (n, one, many) in [
        (exhausted, "link fully used", "links fully used"),
        (expired, "link expired", "links expired"),
        (closed, "link closed", "links closed"),
        (reopened, "link reopened", "links reopened"),
        (created, "new link", "new links"),
        (edited, "link edited", "links edited"),
        (deleted, "link deleted", "links deleted"),
    ] {
        if n > 0 {
            parts.push(plural(n, one, many));
        }
    }
    let subject = if parts.is_empty() {
        "SingaPay: no changes".to_string()
    } else {
        format!("SingaPay: {}", parts.join(", "))
    };
    let account_line = if accounts.is_empty() {
        None
    } else {
        Some(format!(
            "Account {}",
            accounts.into_iter().collect::<Vec<_>>().join(", ")
        ))
    };
    let total_received = (received > Decimal::ZERO).then(|| format_rupiah(received));
    let ctx = context! {
        subject => subject.clone(),
        account_line => account_line,
        total_received => total_received,
        items => minijinja::Value::from(minijinja::value::Serde(&items)),
        received_payments => minijinja::Value::from(minijinja::value::Serde(&sections.received)),
        settlements => minijinja::Value::from(minijinja::value::Serde(&sections.settled)),
        total_settled => sections.total_settled,
        attempts => minijinja::Value::from(minijinja::value::Serde(&sections.attempts)),
        event_ids => ids.join(", "),
        detected_at => detected_at.unwrap_or_default(),
    };
    let mut env = Environment::new();
    env.add_template("digest.txt", TEXT_TEMPLATE)
        .map_err(|e| e.to_string())?;
    env.add_template("digest.html", HTML_TEMPLATE)
        .map_err(|e| e.to_string())?;
    let text = env
        .get_template("digest.txt")
        .and_then(|t| t.render(&ctx))
        .map_err(|e| format!("digest text template: {e}"))?;
    let html = env
        .get_template("digest.html")
        .and_then(|t| t.render(&ctx))
        .map_err(|e| format!("digest HTML template: {e}"))?;
    Ok(Digest {
        subject,
        text,
        html,
    })
}

/// Where mail goes.
#[derive(Clone)]
pub enum Mailer {
    /// SMTP (`smtp://`, `smtps://`, `smtp://…?tls=required` for STARTTLS, with auth in the URL).
    /// Connections are pooled by lettre.
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// One `.eml` file per message in a directory (`file:///path`): the demo's transport.
    File(AsyncFileTransport<Tokio1Executor>, PathBuf),
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mailer::Smtp(_) => f.write_str("Mailer::Smtp([REDACTED URL])"),
            Mailer::File(_, p) => write!(f, "Mailer::File({})", p.display()),
        }
    }
}

/// A failed send.
#[derive(Debug, Clone, PartialEq)]
pub struct MailError {
    /// SMTP reply code, if the server answered.
    pub code: Option<u16>,
    /// What went wrong.
    pub message: String,
}

impl Mailer {
    /// Builds the transport from `email.smtp_url`. `timeout` bounds each SMTP command.
    ///
    /// Errors: an unparsable URL or an unknown scheme (the message never contains the URL).
    pub fn from_url(url: &SecretString, timeout: Duration) -> Result<Self, String> {
        let u = url.expose_secret();
        if let Some(path) = u.strip_prefix("file://") {
            let dir = PathBuf::from(path);
            return Ok(Mailer::File(AsyncFileTransport::new(&dir), dir));
        }
        if !(u.starts_with("smtp://") || u.starts_with("smtps://")) {
            return Err("email.smtp_url must start with smtp://, smtps:// or file://".into());
        }
        let t = AsyncSmtpTransport::<Tokio1Executor>::from_url(u)
            .map_err(|e| format!("email.smtp_url is invalid: {e}"))?
            .timeout(Some(timeout))
            .build();
        Ok(Mailer::Smtp(t))
    }

    /// Sends one message: `Ok(reply code)` (250 for SMTP, `None` for files) or the failure.
    pub(crate) async fn send(&self, msg: Message) -> Result<Option<u16>, MailError> {
        match self {
            Mailer::Smtp(t) => match t.send(msg).await {
                Ok(resp) => Ok(Some(u16::from(resp.code()))),
                Err(e) => Err(MailError {
                    code: e.status().map(u16::from),
                    message: crate::telemetry::error_chain(&e),
                }),
            },
            Mailer::File(t, _) => t.send(msg).await.map(|_| None).map_err(|e| MailError {
                code: None,
                message: e.to_string(),
            }),
        }
    }
}

/// Builds the multipart (text + HTML) message of a digest.
///
/// Errors: an invalid address (config validation normally catches these first).
pub fn build_message(from: &Mailbox, to: &[Mailbox], digest: &Digest) -> Result<Message, String> {
    let mut b = Message::builder()
        .from(from.clone())
        .subject(&digest.subject);
    for t in to {
        b = b.to(t.clone());
    }
    b.multipart(MultiPart::alternative_plain_html(
        digest.text.clone(),
        digest.html.clone(),
    ))
    .map_err(|e| format!("cannot build the digest mail: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// An event of type `ty` about `object` (a link; fields it leaves out get an open link's
    /// values), parsed from its JSON as the dispatcher reads stored envelopes.
    fn env(ty: EventType, mut object: Value, prev: Value, delta: Option<i64>) -> Event {
        for (k, v) in [
            ("status", json!("open")),
            ("status_computed", json!("open")),
            ("is_expired", json!(false)),
            ("current_usage", json!(0)),
        ] {
            object.as_object_mut().unwrap().entry(k).or_insert(v);
        }
        let mut data = json!({"object": object, "previous_attributes": prev, "usage_delta": delta});
        data.as_object_mut().unwrap().retain(|_, v| !v.is_null());
        serde_json::from_value(json!({"id": format!("evt_{ty}"), "type": ty.as_str(),
            "created_at": "2026-11-21T03:04:05Z", "account_id": "01K7P073Q8RE2A9PQT8Q7MXPN4",
            "sequence": 1, "data": data}))
        .unwrap()
    }

    #[test]
    fn digest_summarises_the_pass_in_rupiah_and_wib() {
        let paid = env(
            EventType::Paid,
            json!({"id": 103, "title": "tes <b>", "reff_no": "PL1", "total_amount": "1250000.00",
                   "current_usage": 4, "max_usage": 1000, "payment_date": "2026-11-21T03:00:00Z",
                   "payment_url": "https://pay.example/b2b/PL1"}),
            json!({"current_usage": 2, "payment_date": null}),
            Some(2),
        );
        let expired = env(
            EventType::StatusChanged,
            json!({"id": 78, "title": "Order #78", "reff_no": "PL78", "total_amount": "50000.00",
                   "status_computed": "expired", "expired_at": "2026-11-22T03:00:00Z"}),
            json!({"status_computed": "open"}),
            None,
        );
        let d = render_digest(&[paid, expired]).unwrap();
        assert_eq!(d.subject, "SingaPay: 2 payments received, 1 link expired");
        assert!(
            d.text.contains("Received in this pass: Rp 2.500.000"),
            "{}",
            d.text
        );
        assert!(d.text.contains("2 payments × Rp 1.250.000 = Rp 2.500.000"));
        assert!(d.text.contains("last paid 21 Nov 2026 10:00 WIB"));
        assert!(d.text.contains("https://pay.example/b2b/PL1"));
        assert!(d.text.contains("status open → expired"));
        assert!(
            d.html.contains("tes &lt;b&gt;"),
            "HTML must be escaped: {}",
            d.html
        );
        assert!(d.html.contains("Rp 2.500.000"));
    }

    /// A pass with every kind of event, as finance receives it.
    fn full_pass() -> Vec<Event> {
        let link = |id: i64, title: &str, amount: &str| {
            json!({"id": id, "title": title, "reff_no": format!("PL{id}"), "total_amount": amount,
                   "current_usage": 3, "max_usage": 3, "status": "open", "status_computed": "open",
                   "payment_date": "2026-11-21T03:00:00Z", "expired_at": "2026-11-22T17:00:00Z",
                   "payment_url": format!("https://sandbox-paymentlink.singapay.id/b2b/PL{id}")})
        };
        let mut closed = link(101, "Kue & Kopi", "10000.00");
        closed["status"] = json!("closed");
        closed["status_computed"] = json!("closed");
        let mut expired = link(78, "Payment for Order #78", "50000.00");
        expired["status_computed"] = json!("expired");
        vec![
            env(
                EventType::Created,
                link(104, "Walk-in order", "75000.00"),
                Value::Null,
                None,
            ),
            env(
                EventType::Paid,
                link(103, "Invoice <Toko> \"Maju\"", "1250000.00"),
                json!({"current_usage": 1, "payment_date": null}),
                Some(2),
            ),
            env(
                EventType::Exhausted,
                link(103, "Invoice <Toko> \"Maju\"", "1250000.00"),
                Value::Null,
                None,
            ),
            env(
                EventType::StatusChanged,
                closed,
                json!({"status": "open", "status_computed": "open", "is_expired": false}),
                None,
            ),
            env(
                EventType::StatusChanged,
                expired,
                json!({"status": "open", "status_computed": "open", "is_expired": false}),
                None,
            ),
            env(
                EventType::Updated,
                link(60, "Order #60 (revised)", "119.84"),
                json!({"title": "Order #60", "total_amount": "100000.00"}),
                None,
            ),
            env(
                EventType::Deleted,
                link(50, "Payment for Order #50", "510000.00"),
                Value::Null,
                None,
            ),
        ]
    }

    #[test]
    fn amounts_that_overflow_fail_the_rendering_and_only_https_pages_are_linked() {
        let huge = env(
            EventType::Paid,
            json!({"id": 9, "title": "Huge", "reff_no": "PL9", "current_usage": 3,
                   "total_amount": Decimal::MAX.to_string()}),
            json!({"current_usage": 1, "payment_date": null}),
            Some(2),
        );
        let e = render_digest(&[huge]).unwrap_err();
        assert!(e.contains("amount × payments overflows"), "{e}");
        let plain = env(
            EventType::Created,
            json!({"id": 9, "title": "Plain", "reff_no": "PL9", "total_amount": "10000.00",
                   "payment_url": "http://pay.example/b2b/PL9"}),
            Value::Null,
            None,
        );
        let d = render_digest(&[plain]).unwrap();
        assert!(!d.text.contains("http://pay.example"), "{}", d.text);
        assert!(!d.html.contains("http://pay.example"));
    }

    #[test]
    fn digest_text_snapshot() {
        let d = render_digest(&full_pass()).unwrap();
        insta::assert_snapshot!(d.subject, @"SingaPay: 2 payments received, 1 link fully used, 1 link expired, 1 link closed, 1 new link, 1 link edited, 1 link deleted");
        insta::assert_snapshot!("digest_text", d.text);
    }

    #[test]
    fn digest_html_snapshot() {
        let d = render_digest(&full_pass()).unwrap();
        insta::assert_snapshot!("digest_html", d.html);
    }
}
