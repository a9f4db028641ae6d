//! The sandbox's state: accounts and their links, payment history, tokens, faults, the request log
//! and the clock offset; and how SingaPay writes them (v1 envelopes, WIB times, money strings).

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::time::{jakarta, parse_singapay_time};

/// The payment method catalogue of the sandbox as LV listed it on 2026-08-21 (SP-METHODS;
/// tags: docs/ARCHITECTURE.md, "Sources").
pub(super) const METHODS: &[(&str, &str, &str)] = &[
    ("VA_BCA", "VA BCA", "va"),
    ("VA_BNC", "VA BNC", "va"),
    ("VA_BNI", "VA BNI", "va"),
    ("VA_BRI", "VA BRI", "va"),
    ("VA_BSI", "VA BSI", "va"),
    ("VA_CIMB", "VA CIMB", "va"),
    ("VA_DANAMON", "VA Danamon", "va"),
    ("VA_MANDIRI", "VA Mandiri", "va"),
    ("VA_MAYBANK", "VA Maybank", "va"),
    ("VA_MUAMALAT", "VA Muamalat", "va"),
    ("VA_OCBC", "VA OCBC", "va"),
    ("VA_PERMATA", "VA Permata", "va"),
    ("QRIS", "QRIS", "qris"),
    ("EWALLET_DANA", "DANA", "ewallet"),
    ("EWALLET_GOPAY", "GoPay", "ewallet"),
    ("EWALLET_OVO", "OVO", "ewallet"),
    ("EWALLET_SHOPEEPAY", "ShopeePay", "ewallet"),
    ("ALFAMART", "Alfamart (Linkqu)", "offline_store"),
    ("INDOMARET", "Indomaret", "offline_store"),
    ("NICEPAY_CARD", "Credit Card", "card"),
];

/// One item of a sandbox link.
#[derive(Debug, Clone)]
pub struct SandboxItem {
    /// Name.
    pub name: String,
    /// Quantity.
    pub quantity: Decimal,
    /// Unit price, Rupiah.
    pub unit_price: Decimal,
}

/// A sandbox link (the server's own record).
#[derive(Debug, Clone)]
pub struct SandboxLink {
    /// Id.
    pub id: i64,
    /// Merchant reference.
    pub reff_no: String,
    /// Title.
    pub title: String,
    /// Stored status: `open` or `closed` (`expired` if set so by update).
    pub status: String,
    /// Customer details required.
    pub required_customer_detail: bool,
    /// Maximum payments.
    pub max_usage: i64,
    /// Payments so far.
    pub current_usage: i64,
    /// Expiry.
    pub expired_at: Option<DateTime<Utc>>,
    /// Total, Rupiah.
    pub total_amount: Decimal,
    /// Items.
    pub items: Option<Vec<SandboxItem>>,
    /// Whitelist.
    pub whitelisted_payment_method: Option<Vec<String>>,
    /// Redirect.
    pub redirect_url: Option<String>,
    /// Last payment.
    pub payment_date: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Updated.
    pub updated_at: DateTime<Utc>,
    /// Metadata.
    pub optional_metadata: Option<Value>,
    /// Whether a payment history row exists (delete is then refused).
    pub has_history: bool,
}

impl SandboxLink {
    /// An open, unpaid link without items, expiry or whitelist, created at `at`.
    pub fn new_open(
        id: i64,
        reff_no: String,
        title: String,
        total_amount: Decimal,
        max_usage: i64,
        at: DateTime<Utc>,
    ) -> Self {
        Self {
            id,
            reff_no,
            title,
            status: "open".into(),
            required_customer_detail: false,
            max_usage,
            current_usage: 0,
            expired_at: None,
            total_amount,
            items: None,
            whitelisted_payment_method: None,
            redirect_url: None,
            payment_date: None,
            created_at: at,
            updated_at: at,
            optional_metadata: None,
            has_history: false,
        }
    }
}

/// How long a picked method accepts payment (the docs' sample: 24 hours).
const ATTEMPT_TTL_HOURS: i64 = 24;

/// One history row: a payment attempt.
#[derive(Debug, Clone)]
pub(super) struct History {
    pub(super) id: i64,
    pub(super) link_id: i64,
    pub(super) link_reff_no: String,
    pub(super) reff_no: String,
    /// `payment_method_name`, a label such as `VA BRI`.
    pub(super) method: String,
    pub(super) method_value: String,
    pub(super) method_additional: Option<String>,
    pub(super) amount: Decimal,
    /// `pending`, `paid`, `failed` or `expired`.
    pub(super) status: String,
    pub(super) created_at: DateTime<Utc>,
    pub(super) updated_at: DateTime<Utc>,
    pub(super) expired_at: DateTime<Utc>,
    pub(super) payment_date: Option<DateTime<Utc>>,
    pub(super) settle_at: Option<DateTime<Utc>>,
    pub(super) customer_name: String,
    pub(super) customer_email: String,
}

/// A method's label and group from a code (`VA_BRI`) or a label (`VA BRI`); an unknown one is
/// kept as given, in group `other`.
fn method(m: &str) -> (String, &'static str) {
    METHODS
        .iter()
        .find(|(code, name, _)| code.eq_ignore_ascii_case(m) || name.eq_ignore_ascii_case(m))
        .map(|(_, name, group)| (name.to_string(), *group))
        .unwrap_or_else(|| (m.to_string(), "other"))
}

impl History {
    /// A `pending` attempt on `link` by `method`, picked at `at`: its own reff_no (the link id,
    /// the WIB time and the history id, as LV observed), a VA number or pay code.
    pub(super) fn attempt(id: i64, link: &SandboxLink, method_in: &str, at: DateTime<Utc>) -> Self {
        let (name, group) = method(method_in);
        let wib_stamp = at.with_timezone(&jakarta()).format("%Y%m%d%H%M%S");
        let reff_no = format!("{}{wib_stamp}{id:04}", link.id);
        let (value, additional) = match group {
            "va" => (
                format!("8277{:012}", id),
                Some("a.n. SINGA PAYMENT".to_string()),
            ),
            "offline_store" => (
                format!("{wib_stamp}{:02}", id % 100),
                Some(
                    json!({"retail_code": name.to_ascii_uppercase(),
                           "partner_reff": format!("{wib_stamp}{:06}", link.id)})
                    .to_string(),
                ),
            ),
            "card" => (reff_no.clone(), None),
            "qris" => (format!("00020101021226680016ID.CO.QRIS.WWW{id:010}"), None),
            _ => (format!("0812{:08}", id), None),
        };
        History {
            id,
            link_id: link.id,
            link_reff_no: link.reff_no.clone(),
            reff_no,
            method: name,
            method_value: value,
            method_additional: additional,
            amount: link.total_amount,
            status: "pending".into(),
            created_at: at,
            updated_at: at,
            expired_at: at + chrono::Duration::hours(ATTEMPT_TTL_HOURS),
            payment_date: None,
            settle_at: None,
            customer_name: String::new(),
            customer_email: String::new(),
        }
    }

    /// The row as SingaPay writes it (DOC2's list sample: `amount` a string, `""` customer
    /// fields, `+07:00` times, `locations: {}`); `now` decides `is_expired` of an unpaid attempt.
    pub(super) fn render(&self, now: DateTime<Utc>) -> Value {
        let unpaid = self.status == "pending" || self.status == "expired";
        let is_expired = unpaid && self.expired_at <= now;
        let computed = if self.status == "pending" && is_expired {
            "expired"
        } else {
            self.status.as_str()
        };
        json!({
            "id": self.id,
            "reff_no": self.reff_no,
            "payment_link_reff_no": self.link_reff_no,
            "payment_method_name": self.method,
            "payment_method_value": self.method_value,
            "payment_method_additional": self.method_additional,
            "expired_at": wib(self.expired_at),
            "amount": money(self.amount),
            "payment_date": self.payment_date.map(wib),
            "balance_after": null,
            "status": self.status,
            "status_computed": computed,
            "is_expired": is_expired,
            "customer_name": self.customer_name,
            "customer_email": self.customer_email,
            "customer_phone": "",
            "ip_address": "103.133.68.7, 103.133.68.7",
            "locations": {},
            "processed_timestamp": self.payment_date.map(wib),
            "has_settle": self.settle_at.is_some(),
            "settle_at": self.settle_at.map(wib),
            "optional_metadata": null,
            "created_at": wib(self.created_at),
            "updated_at": wib(self.updated_at),
        })
    }
}

/// An injected fault (`POST /_sandbox/faults`).
#[derive(Debug, Clone, Deserialize)]
pub struct Fault {
    /// `token`, `list`, `show`, `create`, `update`, `delete`, `methods`, `history`,
    /// `history_show` or `any`.
    #[serde(default = "any")]
    pub route: String,
    /// Only this page of a list (of links or of history).
    #[serde(default)]
    pub page: Option<u64>,
    /// Only requests about this account (its id in the path).
    #[serde(default)]
    pub account: Option<String>,
    /// How many requests it affects.
    #[serde(default = "one")]
    pub count: u32,
    /// Answer with this status (with a v1 error envelope unless `body` is given).
    #[serde(default)]
    pub status: Option<u16>,
    /// `Retry-After` header value.
    #[serde(default)]
    pub retry_after: Option<String>,
    /// Delay before answering, milliseconds.
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// Raw body to send instead (e.g. malformed JSON) with status 200 unless `status` is given.
    #[serde(default)]
    pub body: Option<String>,
    /// Drop the connection in the middle of the answer: the status line, the headers (with the
    /// full `Content-Length`) and half the body are sent, then the body fails and the server
    /// closes the connection, as a peer reset would.
    #[serde(default)]
    pub reset: bool,
    /// Let the request take effect first (e.g. the link is created), then wait `delay_ms` and
    /// answer with `status` instead: SingaPay created it, the client never heard.
    #[serde(default)]
    pub after: bool,
    /// Invalidate every issued token before answering (the request then gets a 401).
    #[serde(default)]
    pub expire_tokens: bool,
    /// Scripted mutation: add this many links (newest ids) before answering.
    #[serde(default)]
    pub add_links: u32,
    /// Scripted mutation: delete these links (of the seeded account) before answering.
    #[serde(default)]
    pub delete_links: Vec<i64>,
}

fn any() -> String {
    "any".into()
}
fn one() -> u32 {
    1
}

/// A logged request (`GET /_sandbox/requests`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoggedRequest {
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Query string.
    pub query: Option<String>,
    /// Status answered; 0 if no answer was sent (the client gave up first).
    pub status: u16,
    /// The `X-PARTNER-ID` the request carried (which credential made it).
    #[serde(default)]
    pub partner_id: Option<String>,
}

/// One credential the sandbox accepts (`POST /_sandbox/credentials`; the default one is
/// [`super::SANDBOX_PARTNER_ID`]'s).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SandboxCredential {
    /// `X-PARTNER-ID`.
    pub partner_id: String,
    /// `X-CLIENT-ID`.
    pub client_id: String,
    /// Signs the token request.
    pub client_secret: String,
    /// The accounts only this credential may read and write; the default credential may use
    /// every account that no other credential lists.
    #[serde(default)]
    pub accounts: Vec<String>,
}

/// Where and how the sandbox posts webhooks (`POST /_sandbox/webhooks`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct WebhookSettings {
    /// The notify URL (one for every event, as the dashboard allows); its path and query are the
    /// signed ENDPOINT. Also accepted as `notify_url`.
    #[serde(alias = "notify_url")]
    pub url: String,
    /// Sign the deliveries (default true; SingaPay's dashboard Test button does not). Also
    /// `sign`.
    #[serde(default = "yes", alias = "sign")]
    pub signed: bool,
    /// The signing key (default: the sandbox client secret, as LV observed live).
    #[serde(default)]
    pub key: Option<String>,
    /// Post every webhook twice (SingaPay retries and duplicates). Also `duplicates`.
    #[serde(default, alias = "duplicates")]
    pub duplicate: bool,
    /// Wait this long before posting, milliseconds. Also `delay`.
    #[serde(default, alias = "delay")]
    pub delay_ms: u64,
    /// Post the inquiry webhook when a method is picked (default true; it has its own optional
    /// URL at SingaPay).
    #[serde(default = "yes")]
    pub inquiry: bool,
}

fn yes() -> bool {
    true
}

/// One delivery the sandbox made (`GET /_sandbox/webhooks`).
#[derive(Debug, Clone, Serialize)]
pub struct PostedWebhook {
    /// The body's `event`.
    pub event: String,
    /// When it was posted (the sandbox's clock).
    pub at: DateTime<Utc>,
    /// The receiver's status code, or `None` if the request failed.
    pub status: Option<u16>,
    /// Why the request failed.
    pub error: Option<String>,
}

/// An account's link ids newest first, and the `(count, lowest, highest)` of the map they were
/// read from.
pub(super) type IdIndex = ((usize, i64, i64), std::sync::Arc<Vec<i64>>);

/// Everything the sandbox holds, behind one mutex.
#[derive(Debug)]
pub(super) struct SandboxState {
    pub(super) accounts: BTreeMap<String, BTreeMap<i64, SandboxLink>>,
    pub(super) histories: BTreeMap<String, Vec<History>>,
    pub(super) next_link_id: i64,
    pub(super) next_history_id: i64,
    pub(super) offset: chrono::Duration,
    /// Issued tokens: expiry and the partner id they were issued to.
    pub(super) tokens: HashMap<String, (DateTime<Utc>, String)>,
    /// Accepted credentials, the default first.
    pub(super) credentials: Vec<SandboxCredential>,
    pub(super) token_ttl: i64,
    pub(super) faults: Vec<Fault>,
    pub(super) log: Vec<LoggedRequest>,
    pub(super) payment_host: String,
    /// Where and how SingaPay's webhooks are posted (`None`: not at all).
    pub(super) webhooks: Option<WebhookSettings>,
    /// The webhooks posted, with their answers.
    pub(super) posted: Vec<PostedWebhook>,
    /// Each account's link ids, newest first, with the `(count, lowest, highest)` they were
    /// taken at: a page is then a slice instead of a walk of the map (ids only grow, so a change
    /// of the map changes one of the three).
    pub(super) id_index: HashMap<String, IdIndex>,
}

impl SandboxState {
    /// The credential that owns `account`: the one that lists it, else the default (the first).
    pub(super) fn owner_of(&self, account: &str) -> Option<&SandboxCredential> {
        self.credentials
            .iter()
            .find(|c| c.accounts.iter().any(|a| a == account))
            .or(self.credentials.first())
    }

    /// The link ids of `account`, newest first (`None`: no such account).
    pub(super) fn ids_newest_first(&mut self, account: &str) -> Option<std::sync::Arc<Vec<i64>>> {
        let links = self.accounts.get(account)?;
        let key = (
            links.len(),
            links.keys().next().copied().unwrap_or(0),
            links.keys().next_back().copied().unwrap_or(0),
        );
        if let Some((k, ids)) = self.id_index.get(account)
            && *k == key
        {
            return Some(std::sync::Arc::clone(ids));
        }
        let ids = std::sync::Arc::new(links.keys().rev().copied().collect::<Vec<_>>());
        self.id_index
            .insert(account.to_string(), (key, std::sync::Arc::clone(&ids)));
        Some(ids)
    }

    /// The sandbox's clock: real time plus the control plane's offset.
    pub(super) fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.offset
    }

    /// Renders a link as SingaPay does (the quirks of seed 004's example: amounts as
    /// `"20000.00"`, item quantities as strings, `+07:00` times).
    pub(super) fn render(&self, account: &str, l: &SandboxLink) -> Value {
        let now = self.now();
        let is_expired = l.expired_at.is_some_and(|e| e <= now);
        let status_computed = if l.status == "closed" {
            "closed"
        } else if is_expired || l.status == "expired" {
            "expired"
        } else {
            "open"
        };
        let mut v = json!({
            "id": l.id,
            "reff_no": l.reff_no,
            "title": l.title,
            "payment_url": format!("{}/b2b/{}", self.payment_host, l.reff_no),
            "status": l.status,
            "status_computed": status_computed,
            "required_customer_detail": l.required_customer_detail,
            "max_usage": l.max_usage,
            "current_usage": l.current_usage,
            "expired_at": l.expired_at.map(wib),
            "is_expired": is_expired,
            "total_amount": money(l.total_amount),
            "items": l.items.as_ref().map(|items| items.iter().map(|i| json!({
                "name": i.name,
                "quantity": i.quantity.normalize().to_string(),
                "unit_price": i.unit_price.normalize().to_string(),
                "subtotal": serde_json::from_str::<Value>(&(i.quantity * i.unit_price).normalize().to_string())
                    .unwrap_or(Value::Null),
            })).collect::<Vec<_>>()),
            "whitelisted_payment_method": l.whitelisted_payment_method,
            "redirect_url": l.redirect_url,
            "payment_date": l.payment_date.map(wib),
            "created_at": wib(l.created_at),
            "updated_at": wib(l.updated_at),
            "account": {
                "id": account,
                "name": "Moh. Zulkifli Katili",
                "email": "tes@gmail.com",
                "phone": "08123993201",
                "status": "active"
            }
        });
        if let Some(m) = &l.optional_metadata {
            v["optional_metadata"] = m.clone();
        }
        v
    }
}

/// A v1 error envelope `{"status","success":false,"error":{code,message[,errors]}}`.
pub(super) fn v1_error(status: StatusCode, message: &str, errors: Option<Value>) -> Response {
    let mut error = json!({"code": status.as_u16(), "message": message});
    if let Some(e) = errors {
        error["errors"] = e;
    }
    (
        status,
        Json(json!({"status": status.as_u16(), "success": false, "error": error})),
    )
        .into_response()
}

/// A v1 success envelope around `data`.
pub(super) fn ok(data: Value) -> Response {
    Json(json!({"status": 200, "success": true, "data": data})).into_response()
}

/// A time as SingaPay writes it: RFC 3339 in WIB (`+07:00`), whole seconds.
pub(super) fn wib(t: DateTime<Utc>) -> String {
    t.with_timezone(&jakarta())
        .to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// An amount as SingaPay writes it: a decimal string with two places (`"20000.00"`).
pub(super) fn money(d: Decimal) -> String {
    let mut d = d;
    d.rescale(2);
    d.to_string()
}

/// A decimal from a JSON number or string (`None` for anything else).
pub(super) fn decimal_from_json(v: &Value) -> Option<Decimal> {
    match v {
        Value::Number(n) => n.to_string().parse().ok(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `expired_at` as create/update take it: 13-digit Unix milliseconds (number or string) or
/// null (seeds 000 and 003: "Epoch/Unix Millisecond Timestamp format / 13 digits").
pub(super) fn parse_expiry_millis(v: &Value) -> Result<Option<DateTime<Utc>>, String> {
    let s = match v {
        Value::Null => return Ok(None),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => return Err("The expired at must be 13 digits.".into()),
    };
    if s.len() != 13 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err("The expired at must be 13 digits.".into());
    }
    parse_singapay_time(&s).map(Some)
}
