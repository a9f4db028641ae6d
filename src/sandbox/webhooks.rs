//! SingaPay's own webhooks, as the sandbox posts them (DOC2 webhooks): when a customer picks a
//! method, `payment-link-inquiry` with the pending history row; when the attempt is paid,
//! `payment-link-transaction` with the link; when it expires, `transaction-expiration` with it.
//! Bodies are encoded the way PHP's `json_encode` does by default (slashes escaped as `\/`), and
//! signed over the normalised body as DOC2 webhooks "Security and signature" says (`crate::inbound::signature`), with a
//! fresh random TOKEN in `Authorization` per delivery. `/_sandbox/webhooks` sets where and how (signed or not, which
//! key, duplicates, a delay) and lists what was posted with the answers.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use rand::Rng;
use rand::distr::Alphanumeric;
use rust_decimal::prelude::ToPrimitive;
use serde_json::{Value, json};

use super::state::{History, PostedWebhook, SandboxState, WebhookSettings, money};
use super::{SANDBOX_CLIENT_SECRET, SANDBOX_PARTNER_ID, Sandbox};
use crate::inbound::signature::{normalize, sha256_hex, sign, string_to_sign};
use crate::time::jakarta;

/// What happened to a history row, for the webhook it causes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Happened {
    /// A customer picked a method (a pending row).
    Picked,
    /// The attempt was paid.
    Paid,
    /// The attempt expired.
    Expired,
}

/// SingaPay's text timestamp: `d M Y H:i:s` in WIB, no offset (DOC2 webhooks "Payment Link", LV #8).
fn text_time(t: DateTime<Utc>) -> String {
    t.with_timezone(&jakarta())
        .format("%d %b %Y %H:%M:%S")
        .to_string()
}

/// SingaPay's numeric id of an account (its internal id, not the ULID: DOC2 webhooks "Payment Link", LV #8).
fn numeric_account(st: &SandboxState, account: &str) -> i64 {
    35 + st.accounts.keys().position(|a| a == account).unwrap_or(0) as i64
}

impl SandboxState {
    /// The webhook body for `what` on history row `hid` of `account`, if there is one to post.
    pub(super) fn webhook_body(&self, account: &str, hid: i64, what: Happened) -> Option<Value> {
        let row: &History = self.find_history(account, hid)?;
        let now = self.now();
        let stamp = text_time(now);
        match what {
            Happened::Picked => {
                let mut h = row.render(now);
                // As it was when picked (`/pay` picks and pays at once).
                h["status"] = json!("pending");
                h["status_computed"] = json!("pending");
                h["payment_date"] = Value::Null;
                h["processed_timestamp"] = Value::Null;
                // The inquiry sends integer amounts (27000), and fee fields (LV #53).
                h["amount"] = json!(row.amount.trunc().to_i64());
                h["vendor_fee"] = json!(0);
                h["our_margin"] = json!(0);
                h["merchant_fee"] = json!(0);
                h["net_amount"] = json!(row.amount.trunc().to_i64());
                h["payment_link_id"] = json!(row.link_id);
                Some(json!({
                    "status": 200, "success": true, "event": "payment-link-inquiry",
                    "timestamp": stamp,
                    "data": {"payment_link_history": h},
                }))
            }
            Happened::Paid => {
                let link = self.accounts.get(account)?.get(&row.link_id)?;
                let paid_at = row.payment_date.unwrap_or(now);
                Some(json!({
                    "status": 200, "success": true, "event": "payment-link-transaction",
                    "timestamp": stamp,
                    "data": {
                        "transaction": {
                            "reff_no": row.reff_no, "type": "pl", "status": "paid",
                            "amount": {"value": money(row.amount), "currency": "IDR"},
                            "tip": null,
                            "post_timestamp": text_time(paid_at),
                            "processed_timestamp": text_time(paid_at),
                        },
                        "customer": {
                            "id": null, "name": row.customer_name, "email": row.customer_email,
                            "phone": "",
                        },
                        "payment": {"method": "payment_link", "additional_info": {"payment_link": {
                            "id": link.id, "reff_no": link.reff_no, "title": link.title,
                            "payment_date": paid_at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
                            "payment_url": format!("{}/b2b/{}", self.payment_host, link.reff_no),
                            "status": link.status, "max_usage": link.max_usage,
                            "current_usage": link.current_usage,
                            "expired_at": link.expired_at.map(super::state::wib),
                            "total_amount": money(link.total_amount),
                            "account_id": numeric_account(self, account),
                        }}},
                    },
                }))
            }
            Happened::Expired => Some(json!({
                "status": 200, "success": true, "event": "transaction-expiration",
                "timestamp": stamp,
                "data": {
                    "payment_link_histories": [row.render(now)],
                    "virtual_account_transactions": [],
                    "qris_histories": [],
                    "summary": {"payment_link_histories": 1, "virtual_account_transactions": 0,
                                "qris_histories": 0},
                },
            })),
        }
    }
}

impl Sandbox {
    /// Posts the webhook for `what` on row `hid`, in the background, if webhooks are set.
    pub(super) fn announce(&self, account: &str, hid: i64, what: Happened) {
        let (settings, body, now, owner) = {
            let st = self.lock();
            let Some(settings) = st.webhooks.clone() else {
                return;
            };
            if what == Happened::Picked && !settings.inquiry {
                return;
            }
            let Some(body) = st.webhook_body(account, hid, what) else {
                return;
            };
            // The account's merchant: its partner id and secret sign (unless a key is set).
            let owner = st
                .owner_of(account)
                .map(|c| (c.partner_id.clone(), c.client_secret.clone()))
                .unwrap_or_else(|| (SANDBOX_PARTNER_ID.into(), SANDBOX_CLIENT_SECRET.into()));
            (settings, body, st.now(), owner)
        };
        let sb = self.clone();
        tokio::spawn(async move {
            if settings.delay_ms > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(settings.delay_ms)).await;
            }
            let times = if settings.duplicate { 2 } else { 1 };
            for _ in 0..times {
                sb.post(&settings, &body, now, &owner).await;
            }
        });
    }

    /// Posts `body` as the merchant `(partner id, client secret)` would be notified.
    async fn post(
        &self,
        s: &WebhookSettings,
        body: &Value,
        at: DateTime<Utc>,
        (partner_id, secret): &(String, String),
    ) {
        let event = body["event"].as_str().unwrap_or_default().to_string();
        // PHP's default encoding escapes slashes; the signature is over the normalised form.
        let raw = body.to_string().replace('/', "\\/");
        let token: String = rand::rng()
            .sample_iter(Alphanumeric)
            .take(32)
            .map(char::from)
            .collect();
        let timestamp = at.timestamp().to_string();
        let mut req = self
            .http
            .post(&s.url)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json")
            .header("User-Agent", "SingaPaymentGateway/1.0")
            .header("X-PARTNER-ID", partner_id)
            .header("X-Timestamp", &timestamp)
            .header("Authorization", format!("Bearer {token}"));
        if s.signed {
            let endpoint = url::Url::parse(&s.url)
                .map(|u| match u.query() {
                    Some(q) => format!("{}?{q}", u.path()),
                    None => u.path().to_string(),
                })
                .unwrap_or_default();
            let hash = sha256_hex(normalize(raw.as_bytes()).unwrap_or_default().as_bytes());
            let key = s.key.as_deref().unwrap_or(secret);
            req = req.header(
                "X-Signature",
                sign(key, &string_to_sign(&endpoint, &token, &hash, &timestamp)),
            );
        }
        let (status, error) = match req.body(raw).send().await {
            Ok(r) => (Some(r.status().as_u16()), None),
            Err(e) => (None, Some(e.to_string())),
        };
        self.lock().posted.push(PostedWebhook {
            event,
            at,
            status,
            error,
        });
    }
}

/// `POST /_sandbox/webhooks {url, signed?, key?, duplicate?, delay_ms?, inquiry?}`.
pub(super) async fn ctl_set(
    State(sb): State<Sandbox>,
    Json(s): Json<WebhookSettings>,
) -> StatusCode {
    sb.lock().webhooks = Some(s);
    StatusCode::NO_CONTENT
}

/// `DELETE /_sandbox/webhooks`: stop posting (and forget what was posted).
pub(super) async fn ctl_clear(State(sb): State<Sandbox>) -> StatusCode {
    let mut st = sb.lock();
    st.webhooks = None;
    st.posted.clear();
    StatusCode::NO_CONTENT
}

/// `GET /_sandbox/webhooks`: the settings and every delivery made, oldest first.
pub(super) async fn ctl_get(State(sb): State<Sandbox>) -> Json<Value> {
    let st = sb.lock();
    Json(json!({"settings": st.webhooks, "posted": st.posted}))
}
