//! The SingaPay sandbox: an in-memory stand-in for SingaPay's merchant API (DESIGN §9), faithful to
//! the seeds and the reference: token endpoint verifying the HMAC-SHA512 signature, list with
//! `page`/`per_page` and seed 004's `pagination` block, show, create/update with the seeds'
//! validation, delete (403 with history), payment methods, histories, and the JSON quirks
//! (amounts as `"20000.00"`, item quantities as strings, `+07:00` times).
//!
//! The `/_sandbox/` control plane acts as customers and as the clock: pay, close, reopen, edit, add
//! or delete a link, advance time, expire tokens, inject faults, read the request log.

// Handlers return `Result<_, Response>`: the error is the HTTP answer itself, built once and
// handed straight to axum, so boxing it would only add an allocation.
#![allow(clippy::result_large_err)]

pub mod seed;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::singapay::auth::token_signature_for_date;
use crate::time::{jakarta, jakarta_yyyymmdd, parse_singapay_time};

pub use seed::SEED_ACCOUNT;

/// Sandbox credentials (what a config pointing at the sandbox uses).
pub const SANDBOX_PARTNER_ID: &str = "sandbox-partner-id";
/// Sandbox `client_id` (DESIGN §3's test vector).
pub const SANDBOX_CLIENT_ID: &str = "sandbox-client-id";
/// Sandbox `client_secret` (DESIGN §3's test vector).
pub const SANDBOX_CLIENT_SECRET: &str = "sandbox-client-secret";

/// The payment method catalogue (reference §6.1, sandbox 2026-08-21).
const METHODS: &[(&str, &str, &str)] = &[
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
pub struct SItem {
    /// Name.
    pub name: String,
    /// Quantity.
    pub quantity: Decimal,
    /// Unit price, Rupiah.
    pub unit_price: Decimal,
}

/// A sandbox link (the server's own record).
#[derive(Debug, Clone)]
pub struct SLink {
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
    pub items: Option<Vec<SItem>>,
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

#[derive(Debug, Clone)]
struct History {
    id: i64,
    account: String,
    link_id: i64,
    link_reff_no: String,
    reff_no: String,
    method: String,
    amount: Decimal,
    at: DateTime<Utc>,
}

/// An injected fault (`POST /_sandbox/faults`).
#[derive(Debug, Clone, Deserialize)]
pub struct Fault {
    /// `token`, `list`, `show`, `methods` or `any`.
    #[serde(default = "any")]
    pub route: String,
    /// Only this list page.
    #[serde(default)]
    pub page: Option<u64>,
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
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoggedRequest {
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Query string.
    pub query: Option<String>,
    /// Status answered; 0 if no answer was sent (the client gave up first).
    pub status: u16,
}

#[derive(Debug)]
struct St {
    accounts: BTreeMap<String, BTreeMap<i64, SLink>>,
    histories: Vec<History>,
    next_link_id: i64,
    next_history_id: i64,
    offset: chrono::Duration,
    tokens: HashMap<String, DateTime<Utc>>,
    token_ttl: i64,
    faults: Vec<Fault>,
    log: Vec<LoggedRequest>,
    payment_host: String,
}

impl St {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.offset
    }
}

/// Sandbox settings.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// Links seeded for [`SEED_ACCOUNT`] (default 103).
    pub links: usize,
    /// `expires_in` of issued tokens, seconds (default 216,000 as observed).
    pub token_ttl_secs: i64,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        Self {
            links: 103,
            token_ttl_secs: 216_000,
        }
    }
}

/// The sandbox's shared state. Clone to share.
#[derive(Debug, Clone)]
pub struct Sandbox {
    st: Arc<Mutex<St>>,
}

type ApiResult = Result<Response, Response>;

fn v1_error(status: StatusCode, message: &str, errors: Option<Value>) -> Response {
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

fn ok(data: Value) -> Response {
    Json(json!({"status": 200, "success": true, "data": data})).into_response()
}

fn wib(t: DateTime<Utc>) -> String {
    t.with_timezone(&jakarta())
        .to_rfc3339_opts(SecondsFormat::Secs, false)
}

fn money(d: Decimal) -> String {
    let mut d = d;
    d.rescale(2);
    d.to_string()
}

impl Sandbox {
    /// A sandbox seeded per `opts`.
    pub fn new(opts: SandboxOptions) -> Self {
        let now = Utc::now();
        let links = seed::seed_links(opts.links, now);
        let max_id = links.iter().map(|l| l.id).max().unwrap_or(0);
        let mut accounts = BTreeMap::new();
        accounts.insert(
            SEED_ACCOUNT.to_string(),
            links.into_iter().map(|l| (l.id, l)).collect(),
        );
        Self {
            st: Arc::new(Mutex::new(St {
                accounts,
                histories: Vec::new(),
                next_link_id: max_id + 1,
                next_history_id: 1,
                offset: chrono::Duration::zero(),
                tokens: HashMap::new(),
                token_ttl: opts.token_ttl_secs,
                faults: Vec::new(),
                log: Vec::new(),
                payment_host: "https://sandbox-paymentlink.singapay.id".into(),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, St> {
        // A panic while holding the lock would be a sandbox bug; keep serving the state anyway.
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Renders a link as SingaPay does (seed 004's quirks).
    fn render(st: &St, account: &str, l: &SLink) -> Value {
        let now = st.now();
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
            "payment_url": format!("{}/b2b/{}", st.payment_host, l.reff_no),
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

    /// Serves the sandbox on `listener` until `shutdown`.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let app = self.router();
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
    }

    /// Binds `addr` and serves in the background; returns the bound address.
    pub async fn spawn(
        self,
        addr: SocketAddr,
        shutdown: CancellationToken,
    ) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        tokio::spawn(async move {
            if let Err(e) = self.serve(listener, shutdown).await {
                tracing::error!(error = %e, "sandbox.stopped");
            }
        });
        Ok(bound)
    }

    /// The router: SingaPay's API plus `/_sandbox/`.
    pub fn router(self) -> Router {
        let api = Router::new()
            .route("/api/v1.1/access-token/b2b", post(token))
            .route(
                "/api/v1.0/payment-link-manage/payment-methods",
                get(methods),
            )
            .route(
                "/api/v1.0/payment-link-manage/{account}",
                get(list).post(create),
            )
            .route(
                "/api/v1.0/payment-link-manage/{account}/{id}",
                get(show).put(update).delete(delete),
            )
            .route("/api/v1.0/payment-link-histories/{account}", get(histories))
            .layer(middleware::from_fn_with_state(self.clone(), faults_and_log));
        let control = Router::new()
            .route("/_sandbox/clock", get(clock))
            .route("/_sandbox/clock/advance", post(advance))
            .route("/_sandbox/accounts/{account}", post(ctl_add_account))
            .route("/_sandbox/accounts/{account}/links", post(ctl_add))
            .route(
                "/_sandbox/accounts/{account}/links/{id}",
                axum::routing::patch(ctl_edit).delete(ctl_delete),
            )
            .route("/_sandbox/accounts/{account}/links/{id}/pay", post(ctl_pay))
            .route(
                "/_sandbox/accounts/{account}/links/{id}/close",
                post(ctl_close),
            )
            .route(
                "/_sandbox/accounts/{account}/links/{id}/reopen",
                post(ctl_reopen),
            )
            .route("/_sandbox/faults", post(ctl_fault).delete(ctl_clear_faults))
            .route("/_sandbox/tokens/expire", post(ctl_expire_tokens))
            .route("/_sandbox/requests", get(ctl_log).delete(ctl_clear_log));
        api.merge(control).with_state(self)
    }
}

fn route_kind(path: &str) -> &'static str {
    if path.starts_with("/api/v1.1/access-token") {
        "token"
    } else if path.ends_with("/payment-methods") {
        "methods"
    } else if path.starts_with("/api/v1.0/payment-link-manage/") {
        if path.trim_end_matches('/').matches('/').count() >= 5 {
            "show"
        } else {
            "list"
        }
    } else {
        "other"
    }
}

fn query_page(q: Option<&str>) -> Option<u64> {
    q?.split('&')
        .find_map(|kv| kv.strip_prefix("page="))
        .and_then(|v| v.parse().ok())
}

async fn faults_and_log(State(sb): State<Sandbox>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_owned);
    let kind = route_kind(&path);
    let page = query_page(query.as_deref());
    // Logged on arrival (status 0 until answered: a request whose client gave up stays 0).
    let slot = {
        let mut st = sb.lock();
        st.log.push(LoggedRequest {
            method,
            path,
            query,
            status: 0,
        });
        st.log.len() - 1
    };
    let fault = {
        let mut st = sb.lock();
        let pos = st.faults.iter().position(|f| {
            (f.route == "any" || f.route == kind)
                && (f.page.is_none() || (kind == "list" && f.page == Some(page.unwrap_or(1))))
        });
        pos.map(|i| {
            let f = st.faults[i].clone();
            if st.faults[i].count <= 1 {
                st.faults.remove(i);
            } else {
                st.faults[i].count -= 1;
            }
            f
        })
    };
    let resp = match fault {
        Some(f) => {
            if f.expire_tokens || f.add_links > 0 || !f.delete_links.is_empty() {
                let mut st = sb.lock();
                if f.expire_tokens {
                    st.tokens.clear();
                }
                let now = st.now();
                for _ in 0..f.add_links {
                    let id = st.next_link_id;
                    st.next_link_id += 1;
                    let link = SLink {
                        id,
                        reff_no: format!("PLMIDPASS{id:08}"),
                        title: format!("Created mid-pass #{id}"),
                        status: "open".into(),
                        required_customer_detail: false,
                        max_usage: 1,
                        current_usage: 0,
                        expired_at: None,
                        total_amount: Decimal::from(25_000),
                        items: None,
                        whitelisted_payment_method: None,
                        redirect_url: None,
                        payment_date: None,
                        created_at: now,
                        updated_at: now,
                        optional_metadata: None,
                        has_history: false,
                    };
                    st.accounts
                        .entry(SEED_ACCOUNT.to_string())
                        .or_default()
                        .insert(id, link);
                }
                if let Some(a) = st.accounts.get_mut(SEED_ACCOUNT) {
                    for id in &f.delete_links {
                        a.remove(id);
                    }
                }
            }
            if let Some(ms) = f.delay_ms {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            match (f.status, f.body) {
                (None, None) if f.reset => cut_in_half(next.run(req).await).await,
                (None, None) => next.run(req).await,
                (status, Some(body)) => {
                    let code =
                        StatusCode::from_u16(status.unwrap_or(200)).unwrap_or(StatusCode::OK);
                    let mut r = (code, body).into_response();
                    if let Some(ra) = f.retry_after.and_then(|v| v.parse().ok()) {
                        r.headers_mut().insert("retry-after", ra);
                    }
                    r
                }
                (Some(status), None) => {
                    let code =
                        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                    let msg = if status == 403 {
                        "Your IP address (127.0.0.1) is not registered".to_string()
                    } else {
                        code.canonical_reason().unwrap_or("error").to_string()
                    };
                    let mut r = v1_error(code, &msg, None);
                    if let Some(ra) = f.retry_after.and_then(|v| v.parse().ok()) {
                        r.headers_mut().insert("retry-after", ra);
                    }
                    r
                }
            }
        }
        None => next.run(req).await,
    };
    if let Some(entry) = sb.lock().log.get_mut(slot) {
        entry.status = resp.status().as_u16();
    }
    resp
}

/// The `reset` fault: `resp` with its body cut after half of it by an I/O error (hyper then
/// aborts the connection; the client sees an incomplete body).
async fn cut_in_half(resp: Response) -> Response {
    let (mut parts, body) = resp.into_parts();
    let full = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    parts
        .headers
        .insert(axum::http::header::CONTENT_LENGTH, full.len().into());
    let chunks: Vec<Result<axum::body::Bytes, std::io::Error>> = vec![
        Ok(full.slice(..full.len() / 2)),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "sandbox fault: connection reset",
        )),
    ];
    Response::from_parts(
        parts,
        axum::body::Body::from_stream(futures_util::stream::iter(chunks)),
    )
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn authorize(sb: &Sandbox, h: &HeaderMap) -> Result<(), Response> {
    if header(h, "x-partner-id") != Some(SANDBOX_PARTNER_ID) {
        return Err(v1_error(
            StatusCode::UNAUTHORIZED,
            "Invalid X-PARTNER-ID",
            None,
        ));
    }
    let token = header(h, "authorization")
        .and_then(|a| a.strip_prefix("Bearer "))
        .unwrap_or("");
    let st = sb.lock();
    match st.tokens.get(token) {
        Some(exp) if *exp > Utc::now() => Ok(()),
        _ => Err(v1_error(StatusCode::UNAUTHORIZED, "Unauthenticated.", None)),
    }
}

async fn token(State(sb): State<Sandbox>, h: HeaderMap, body: String) -> ApiResult {
    if header(&h, "x-partner-id") != Some(SANDBOX_PARTNER_ID)
        || header(&h, "x-client-id") != Some(SANDBOX_CLIENT_ID)
    {
        return Err(v1_error(
            StatusCode::UNAUTHORIZED,
            "Invalid credentials",
            None,
        ));
    }
    let grant: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    if grant["grant_type"] != "client_credentials" {
        return Err(v1_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "The given data was invalid.",
            Some(json!({"grant_type": ["The grant type field is required."]})),
        ));
    }
    let secret = SecretString::from(SANDBOX_CLIENT_SECRET);
    // SingaPay signs with the Jakarta date of the real clock (the sandbox's advanced clock only
    // moves link expiry).
    let today = jakarta_yyyymmdd(Utc::now());
    let want = token_signature_for_date(SANDBOX_CLIENT_ID, &secret, &today);
    if header(&h, "x-signature").map(str::to_ascii_lowercase) != Some(want) {
        return Err(v1_error(
            StatusCode::UNAUTHORIZED,
            "Invalid signature",
            None,
        ));
    }
    let tok = format!("sbx_{}", hex::encode(rand::random::<[u8; 24]>()));
    let ttl = {
        let mut st = sb.lock();
        let ttl = st.token_ttl;
        st.tokens
            .insert(tok.clone(), Utc::now() + chrono::Duration::seconds(ttl));
        ttl
    };
    Ok(ok(
        json!({"access_token": tok, "token_type": "Bearer", "expires_in": ttl.to_string()}),
    ))
}

async fn methods(State(sb): State<Sandbox>, h: HeaderMap) -> ApiResult {
    authorize(&sb, &h)?;
    let list: Vec<Value> = METHODS
        .iter()
        .map(
            |(code, name, group)| json!({"code": code, "name": name, "group": group, "desc": null}),
        )
        .collect();
    let codes: Vec<&str> = METHODS.iter().map(|m| m.0).collect();
    Ok(ok(
        json!({"payment_methods": list, "available_codes": codes}),
    ))
}

#[derive(Deserialize)]
struct PageQ {
    page: Option<String>,
    per_page: Option<String>,
}

fn paginate(q: &PageQ) -> (usize, usize) {
    let page = q
        .page
        .as_deref()
        .and_then(|p| p.parse::<usize>().ok())
        .filter(|p| *p >= 1)
        .unwrap_or(1);
    let per = q
        .per_page
        .as_deref()
        .and_then(|p| p.parse::<usize>().ok())
        .filter(|p| *p >= 1)
        .unwrap_or(25)
        .min(100);
    (page, per)
}

fn pagination(base: &str, total: usize, count: usize, page: usize, per: usize) -> Value {
    let pages = total.div_ceil(per).max(1);
    json!({
        "count": count,
        "total": total,
        "perPage": per,
        "currentPage": page,
        "totalPages": pages,
        "links": {"next": if page < pages { Value::from(format!("{base}?page={}", page + 1)) } else { Value::Null }},
    })
}

async fn list(
    State(sb): State<Sandbox>,
    Path(account): Path<String>,
    Query(q): Query<PageQ>,
    h: HeaderMap,
) -> ApiResult {
    authorize(&sb, &h)?;
    let (page, per) = paginate(&q);
    let st = sb.lock();
    let Some(links) = st.accounts.get(&account) else {
        return Err(v1_error(StatusCode::NOT_FOUND, "Account not found", None));
    };
    let data: Vec<Value> = links
        .values()
        .rev()
        .skip((page - 1) * per)
        .take(per)
        .map(|l| Sandbox::render(&st, &account, l))
        .collect();
    let base = format!(
        "http://{}/api/v1.0/payment-link-manage/{account}",
        header(&h, "host").unwrap_or("localhost")
    );
    let p = pagination(&base, links.len(), data.len(), page, per);
    Ok(
        Json(json!({"status": 200, "success": true, "data": data, "pagination": p}))
            .into_response(),
    )
}

fn not_found() -> Response {
    v1_error(StatusCode::NOT_FOUND, "Payment link not found", None)
}

async fn show(
    State(sb): State<Sandbox>,
    Path((account, id)): Path<(String, String)>,
    h: HeaderMap,
) -> ApiResult {
    authorize(&sb, &h)?;
    let st = sb.lock();
    let id: i64 = id.parse().map_err(|_| not_found())?;
    let l = st
        .accounts
        .get(&account)
        .and_then(|a| a.get(&id))
        .ok_or_else(not_found)?;
    Ok(ok(Sandbox::render(&st, &account, l)))
}

fn dec_of(v: &Value) -> Option<Decimal> {
    match v {
        Value::Number(n) => n.to_string().parse().ok(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn ms13(v: &Value) -> Result<Option<DateTime<Utc>>, String> {
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

fn validate_whitelist(
    v: &Value,
    errors: &mut serde_json::Map<String, Value>,
) -> Option<Vec<String>> {
    match v {
        Value::Null => None,
        Value::Array(a) if a.is_empty() => None,
        Value::Array(a) => {
            let mut out = Vec::new();
            for c in a {
                match c.as_str() {
                    Some(code) if METHODS.iter().any(|m| m.0 == code) => out.push(code.to_string()),
                    _ => {
                        errors.insert(
                            "whitelisted_payment_method".into(),
                            json!([format!("The selected payment method {c} is invalid.")]),
                        );
                    }
                }
            }
            out.sort();
            Some(out)
        }
        _ => {
            errors.insert(
                "whitelisted_payment_method".into(),
                json!(["Must be an array."]),
            );
            None
        }
    }
}

/// Validates a v1 create body per seeds/001 and the reference §3.3.
fn build_link(st: &St, account: &str, b: &Value) -> Result<SLink, Response> {
    let mut errors = serde_json::Map::new();
    let mut err = |k: &str, m: &str| {
        errors.insert(k.into(), json!([m]));
    };
    let reff_no = b["reff_no"].as_str().unwrap_or_default().to_string();
    if reff_no.is_empty() {
        err("reff_no", "The reff no field is required.");
    } else if reff_no.len() > 40 || reff_no.contains(char::is_whitespace) || reff_no.contains('/') {
        err(
            "reff_no",
            "The reff no format is invalid (at most 40 characters, no spaces or slashes).",
        );
    } else if st
        .accounts
        .get(account)
        .is_some_and(|a| a.values().any(|l| l.reff_no == reff_no))
    {
        err("reff_no", "The reff no has already been taken.");
    }
    let title = b["title"].as_str().unwrap_or_default().to_string();
    if title.is_empty() {
        err("title", "The title field is required.");
    } else if title.chars().count() > 255 {
        err("title", "The title may not be greater than 255 characters.");
    }
    let max_usage = b["max_usage"].as_i64().unwrap_or(0);
    if !(1..=1_000_000).contains(&max_usage) {
        err("max_usage", "The max usage must be between 1 and 1000000.");
    }
    let total = dec_of(&b["total_amount"]).unwrap_or_default();
    if total < Decimal::from(10_000) {
        err("total_amount", "The total amount must be at least 10000.");
    }
    let mut items = Vec::new();
    match b["items"].as_array() {
        Some(a) if !a.is_empty() => {
            for i in a {
                items.push(SItem {
                    name: i["name"].as_str().unwrap_or_default().to_string(),
                    quantity: dec_of(&i["quantity"]).unwrap_or_default(),
                    unit_price: dec_of(&i["unit_price"]).unwrap_or_default(),
                });
            }
            let sum: Decimal = items.iter().map(|i| i.quantity * i.unit_price).sum();
            if sum != total {
                err(
                    "total_amount",
                    "The total amount must equal the sum of the items.",
                );
            }
        }
        _ => err("items", "The items field is required."),
    }
    let expired_at = match ms13(&b["expired_at"]) {
        Ok(e) => e,
        Err(m) => {
            err("expired_at", &m);
            None
        }
    };
    let redirect_url = b["redirect_url"].as_str().map(str::to_owned);
    if redirect_url.as_ref().is_some_and(|u| u.len() > 2048) {
        err(
            "redirect_url",
            "The redirect url may not be greater than 2048 characters.",
        );
    }
    let whitelist = validate_whitelist(&b["whitelisted_payment_method"], &mut errors);
    if !errors.is_empty() {
        return Err(v1_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "The given data was invalid.",
            Some(Value::Object(errors)),
        ));
    }
    let now = st.now();
    Ok(SLink {
        id: st.next_link_id,
        reff_no,
        title,
        status: "open".into(),
        required_customer_detail: b["required_customer_detail"].as_bool().unwrap_or(false),
        max_usage,
        current_usage: 0,
        expired_at,
        total_amount: total,
        items: Some(items),
        whitelisted_payment_method: whitelist,
        redirect_url,
        payment_date: None,
        created_at: now,
        updated_at: now,
        optional_metadata: b.get("optional_metadata").cloned().filter(|v| !v.is_null()),
        has_history: false,
    })
}

fn insert_link(sb: &Sandbox, account: &str, body: &Value) -> ApiResult {
    let mut st = sb.lock();
    let link = build_link(&st, account, body)?;
    st.next_link_id += 1;
    let v = Sandbox::render(&st, account, &link);
    st.accounts
        .entry(account.to_string())
        .or_default()
        .insert(link.id, link);
    Ok(ok(v))
}

async fn create(
    State(sb): State<Sandbox>,
    Path(account): Path<String>,
    h: HeaderMap,
    Json(body): Json<Value>,
) -> ApiResult {
    authorize(&sb, &h)?;
    insert_link(&sb, &account, &body)
}

async fn update(
    State(sb): State<Sandbox>,
    Path((account, id)): Path<(String, String)>,
    h: HeaderMap,
    Json(b): Json<Value>,
) -> ApiResult {
    authorize(&sb, &h)?;
    let id: i64 = id.parse().map_err(|_| not_found())?;
    let mut st = sb.lock();
    let now = st.now();
    let mut errors = serde_json::Map::new();
    let status = b["status"].as_str().map(str::to_owned);
    match status.as_deref() {
        Some("open" | "closed" | "expired") => {}
        Some(_) => {
            errors.insert("status".into(), json!(["The selected status is invalid."]));
        }
        None => {
            errors.insert("status".into(), json!(["Status is required"]));
        }
    }
    let expired_at = if b.get("expired_at").is_some() {
        match ms13(&b["expired_at"]) {
            Ok(e) => Some(e),
            Err(m) => {
                errors.insert("expired_at".into(), json!([m]));
                None
            }
        }
    } else {
        None
    };
    let whitelist = b
        .get("whitelisted_payment_method")
        .map(|w| validate_whitelist(w, &mut errors));
    let link = st
        .accounts
        .get_mut(&account)
        .and_then(|a| a.get_mut(&id))
        .ok_or_else(not_found)?;
    let max_usage = b["max_usage"].as_i64();
    if let Some(m) = max_usage
        && (!(1..=1_000_000).contains(&m) || m < link.current_usage)
    {
        errors.insert(
            "max_usage".into(),
            json!(["The max usage must be between 1 and 1000000 and not below the current usage."]),
        );
    }
    if !errors.is_empty() {
        return Err(v1_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "The given data was invalid.",
            Some(Value::Object(errors)),
        ));
    }
    if let Some(s) = status {
        link.status = s;
    }
    if let Some(m) = max_usage {
        link.max_usage = m;
    }
    if let Some(e) = expired_at {
        link.expired_at = e;
    }
    if let Some(w) = whitelist {
        link.whitelisted_payment_method = w;
    }
    if let Some(r) = b.get("redirect_url") {
        link.redirect_url = r.as_str().map(str::to_owned);
    }
    if let Some(m) = b.get("optional_metadata") {
        link.optional_metadata = Some(m.clone()).filter(|v| !v.is_null());
    }
    if let Some(r) = b["required_customer_detail"].as_bool() {
        link.required_customer_detail = r;
    }
    link.updated_at = now;
    let link = link.clone();
    Ok(ok(Sandbox::render(&st, &account, &link)))
}

async fn delete(
    State(sb): State<Sandbox>,
    Path((account, id)): Path<(String, String)>,
    h: HeaderMap,
) -> ApiResult {
    authorize(&sb, &h)?;
    let id: i64 = id.parse().map_err(|_| not_found())?;
    remove_link(&sb, &account, id, false)
}

fn remove_link(sb: &Sandbox, account: &str, id: i64, force: bool) -> ApiResult {
    let mut st = sb.lock();
    let links = st.accounts.get_mut(account).ok_or_else(not_found)?;
    let l = links.get(&id).ok_or_else(not_found)?;
    if l.has_history && !force {
        return Err(v1_error(
            StatusCode::FORBIDDEN,
            "Payment link has payment history and cannot be deleted",
            None,
        ));
    }
    links.remove(&id);
    Ok(ok(json!({"message": "Payment Link deleted successfully"})))
}

async fn histories(
    State(sb): State<Sandbox>,
    Path(account): Path<String>,
    Query(q): Query<PageQ>,
    h: HeaderMap,
) -> ApiResult {
    authorize(&sb, &h)?;
    let (page, per) = paginate(&q);
    let st = sb.lock();
    let rows: Vec<&History> = st
        .histories
        .iter()
        .rev()
        .filter(|r| r.account == account)
        .collect();
    let data: Vec<Value> = rows
        .iter()
        .skip((page - 1) * per)
        .take(per)
        .map(|r| {
            json!({
                "id": r.id, "reff_no": r.reff_no, "payment_link_id": r.link_id,
                "payment_link_reff_no": r.link_reff_no, "payment_method_name": r.method,
                "payment_method_value": "8277000000012345", "payment_method_additional": null,
                "amount": money(r.amount), "payment_date": wib(r.at), "status": "paid",
                "status_computed": "paid", "is_expired": false, "customer_name": "",
                "customer_email": "", "customer_phone": "", "has_settle": false, "settle_at": null,
                "created_at": wib(r.at), "updated_at": wib(r.at)
            })
        })
        .collect();
    let base = format!(
        "http://{}/api/v1.0/payment-link-histories/{account}",
        header(&h, "host").unwrap_or("localhost")
    );
    let p = pagination(&base, rows.len(), data.len(), page, per);
    Ok(
        Json(json!({"status": 200, "success": true, "data": data, "pagination": p}))
            .into_response(),
    )
}

// ---- control plane ----

fn ctl_error(status: StatusCode, msg: &str) -> Response {
    (status, Json(json!({"error": {"message": msg}}))).into_response()
}

async fn clock(State(sb): State<Sandbox>) -> Json<Value> {
    let st = sb.lock();
    Json(json!({"now": st.now().to_rfc3339(), "offset_seconds": st.offset.num_seconds()}))
}

#[derive(Deserialize)]
struct Advance {
    seconds: i64,
}

async fn advance(State(sb): State<Sandbox>, Json(a): Json<Advance>) -> Json<Value> {
    let mut st = sb.lock();
    st.offset += chrono::Duration::seconds(a.seconds);
    Json(json!({"now": st.now().to_rfc3339(), "offset_seconds": st.offset.num_seconds()}))
}

fn with_link<F>(sb: &Sandbox, account: &str, id: i64, f: F) -> ApiResult
where
    F: FnOnce(&mut SLink, DateTime<Utc>) -> Result<(), Response>,
{
    let mut st = sb.lock();
    let now = st.now();
    let link = st
        .accounts
        .get_mut(account)
        .and_then(|a| a.get_mut(&id))
        .ok_or_else(not_found)?;
    f(link, now)?;
    let link = link.clone();
    Ok(ok(Sandbox::render(&st, account, &link)))
}

#[derive(Deserialize, Default)]
struct Pay {
    #[serde(default)]
    method: Option<String>,
}

async fn ctl_pay(
    State(sb): State<Sandbox>,
    Path((account, id)): Path<(String, i64)>,
    body: Option<Json<Pay>>,
) -> ApiResult {
    let method = body
        .and_then(|Json(p)| p.method)
        .unwrap_or_else(|| "VA BRI".into());
    let mut paid = None;
    let r = with_link(&sb, &account, id, |l, now| {
        if l.status != "open" {
            return Err(ctl_error(StatusCode::CONFLICT, "link is not open"));
        }
        if l.expired_at.is_some_and(|e| e <= now) {
            return Err(ctl_error(StatusCode::CONFLICT, "link has expired"));
        }
        if l.max_usage > 0 && l.current_usage >= l.max_usage {
            return Err(ctl_error(StatusCode::CONFLICT, "link is fully used"));
        }
        l.current_usage += 1;
        l.payment_date = Some(now);
        l.updated_at = now;
        l.has_history = true;
        paid = Some((l.reff_no.clone(), l.total_amount, now));
        Ok(())
    })?;
    if let Some((link_reff, amount, at)) = paid {
        let mut st = sb.lock();
        let hid = st.next_history_id;
        st.next_history_id += 1;
        st.histories.push(History {
            id: hid,
            account: account.clone(),
            link_id: id,
            link_reff_no: link_reff,
            reff_no: format!(
                "{id}{}",
                at.with_timezone(&jakarta()).format("%Y%m%d%H%M%S")
            ),
            method,
            amount,
            at,
        });
    }
    Ok(r)
}

async fn ctl_close(
    State(sb): State<Sandbox>,
    Path((account, id)): Path<(String, i64)>,
) -> ApiResult {
    with_link(&sb, &account, id, |l, now| {
        l.status = "closed".into();
        l.updated_at = now;
        Ok(())
    })
}

async fn ctl_reopen(
    State(sb): State<Sandbox>,
    Path((account, id)): Path<(String, i64)>,
) -> ApiResult {
    with_link(&sb, &account, id, |l, now| {
        l.status = "open".into();
        l.updated_at = now;
        Ok(())
    })
}

async fn ctl_edit(
    State(sb): State<Sandbox>,
    Path((account, id)): Path<(String, i64)>,
    Json(b): Json<Value>,
) -> ApiResult {
    with_link(&sb, &account, id, |l, now| {
        if let Some(t) = b["title"].as_str() {
            l.title = t.to_string();
        }
        if let Some(m) = b["max_usage"].as_i64() {
            l.max_usage = m;
        }
        if let Some(c) = b["current_usage"].as_i64() {
            l.current_usage = c;
        }
        if let Some(a) = dec_of(&b["total_amount"]) {
            l.total_amount = a;
        }
        if let Some(s) = b["status"].as_str() {
            l.status = s.to_string();
        }
        if let Some(e) = b.get("expired_at") {
            l.expired_at = match e {
                Value::Null => None,
                Value::String(s) => Some(
                    parse_singapay_time(s).map_err(|m| ctl_error(StatusCode::BAD_REQUEST, &m))?,
                ),
                Value::Number(n) => Some(
                    parse_singapay_time(&n.to_string())
                        .map_err(|m| ctl_error(StatusCode::BAD_REQUEST, &m))?,
                ),
                _ => {
                    return Err(ctl_error(
                        StatusCode::BAD_REQUEST,
                        "expired_at: time or null",
                    ));
                }
            };
        }
        if let Some(r) = b.get("redirect_url") {
            l.redirect_url = r.as_str().map(str::to_owned);
        }
        if let Some(w) = b.get("whitelisted_payment_method") {
            l.whitelisted_payment_method = w.as_array().map(|a| {
                a.iter()
                    .filter_map(|c| c.as_str().map(str::to_owned))
                    .collect()
            });
        }
        if let Some(m) = b.get("optional_metadata") {
            l.optional_metadata = Some(m.clone()).filter(|v| !v.is_null());
        }
        l.updated_at = now;
        Ok(())
    })
}

#[derive(Deserialize)]
struct Force {
    #[serde(default)]
    force: bool,
}

async fn ctl_delete(
    State(sb): State<Sandbox>,
    Path((account, id)): Path<(String, i64)>,
    Query(f): Query<Force>,
) -> ApiResult {
    remove_link(&sb, &account, id, f.force)
}

async fn ctl_add(
    State(sb): State<Sandbox>,
    Path(account): Path<String>,
    Json(mut body): Json<Value>,
) -> ApiResult {
    // Lenient defaults so a test can add a link with only what it cares about.
    let n = sb.lock().next_link_id;
    let defaults = json!({
        "reff_no": format!("PLSANDBOX{n:08}"), "title": format!("Sandbox link #{n}"),
        "max_usage": 1, "required_customer_detail": false,
    });
    if let (Value::Object(b), Value::Object(d)) = (&mut body, defaults) {
        for (k, v) in d {
            b.entry(k).or_insert(v);
        }
        if !b.contains_key("items") {
            let total = b.get("total_amount").cloned().unwrap_or(json!(50_000));
            b.insert("total_amount".into(), total.clone());
            b.insert(
                "items".into(),
                json!([{"name": "Item", "quantity": 1, "unit_price": total}]),
            );
        }
    }
    insert_link(&sb, &account, &body)
}

#[derive(Deserialize)]
struct NewAccount {
    #[serde(default)]
    links: usize,
}

/// Adds (or replaces) an account seeded with `links` links like the default one.
async fn ctl_add_account(
    State(sb): State<Sandbox>,
    Path(account): Path<String>,
    Json(b): Json<NewAccount>,
) -> ApiResult {
    if ulid::Ulid::from_string(&account).is_err() {
        return Err(ctl_error(
            StatusCode::BAD_REQUEST,
            "account id must be a ULID",
        ));
    }
    let mut st = sb.lock();
    let now = st.now();
    let links = seed::seed_links(b.links, now);
    let n = links.len();
    st.accounts.insert(
        account.clone(),
        links.into_iter().map(|l| (l.id, l)).collect(),
    );
    Ok(ok(json!({"account_id": account, "links": n})))
}

async fn ctl_fault(State(sb): State<Sandbox>, Json(f): Json<Fault>) -> StatusCode {
    sb.lock().faults.push(f);
    StatusCode::NO_CONTENT
}

async fn ctl_clear_faults(State(sb): State<Sandbox>) -> StatusCode {
    sb.lock().faults.clear();
    StatusCode::NO_CONTENT
}

async fn ctl_expire_tokens(State(sb): State<Sandbox>) -> StatusCode {
    sb.lock().tokens.clear();
    StatusCode::NO_CONTENT
}

async fn ctl_log(State(sb): State<Sandbox>) -> Json<Vec<LoggedRequest>> {
    Json(sb.lock().log.clone())
}

async fn ctl_clear_log(State(sb): State<Sandbox>) -> StatusCode {
    sb.lock().log.clear();
    StatusCode::NO_CONTENT
}
