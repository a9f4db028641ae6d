//! SingaPay's API as the sandbox serves it: the v1.1 token (signature checked), list, show,
//! create, update and delete of payment links with the docs' validation (seeds 000, 001, 003),
//! payment methods (histories: `history`).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use rust_decimal::Decimal;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{Value, json};

use super::state::{
    METHODS, SandboxItem, SandboxLink, SandboxState, decimal_from_json, ok, parse_expiry_millis,
    v1_error,
};
use super::{ApiResult, Sandbox};
use crate::singapay::auth::token_signature_for_date;
use crate::time::jakarta_yyyymmdd;

pub(super) fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Checks the bearer token and `X-PARTNER-ID` (the token's own), and that `account` (when the
/// route names one) belongs to that credential: 401, or 403 for another merchant's account.
pub(super) fn authorize(
    sb: &Sandbox,
    h: &HeaderMap,
    account: Option<&str>,
) -> Result<(), Response> {
    let partner = header(h, "x-partner-id").unwrap_or("");
    let token = header(h, "authorization")
        .and_then(|a| a.strip_prefix("Bearer "))
        .unwrap_or("");
    let st = sb.lock();
    if !st.credentials.iter().any(|c| c.partner_id == partner) {
        return Err(v1_error(
            StatusCode::UNAUTHORIZED,
            "Invalid X-PARTNER-ID",
            None,
        ));
    }
    match st.tokens.get(token) {
        Some((exp, owner)) if *exp > Utc::now() && owner == partner => {}
        _ => return Err(v1_error(StatusCode::UNAUTHORIZED, "Unauthenticated.", None)),
    }
    if let Some(a) = account
        && st.owner_of(a).map(|c| c.partner_id.as_str()) != Some(partner)
    {
        return Err(v1_error(
            StatusCode::FORBIDDEN,
            "This account does not belong to the partner.",
            None,
        ));
    }
    Ok(())
}

pub(super) async fn token(State(sb): State<Sandbox>, h: HeaderMap, body: String) -> ApiResult {
    let cred = {
        let st = sb.lock();
        st.credentials
            .iter()
            .find(|c| {
                header(&h, "x-partner-id") == Some(c.partner_id.as_str())
                    && header(&h, "x-client-id") == Some(c.client_id.as_str())
            })
            .cloned()
    };
    let Some(cred) = cred else {
        return Err(v1_error(
            StatusCode::UNAUTHORIZED,
            "Invalid credentials",
            None,
        ));
    };
    let grant: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    if grant["grant_type"] != "client_credentials" {
        return Err(v1_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "The given data was invalid.",
            Some(json!({"grant_type": ["The grant type field is required."]})),
        ));
    }
    let secret = SecretString::from(cred.client_secret.clone());
    // SingaPay signs with the Jakarta date of the real clock (the sandbox's advanced clock only
    // moves link expiry).
    let today = jakarta_yyyymmdd(Utc::now());
    let want = token_signature_for_date(&cred.client_id, &secret, &today);
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
        st.tokens.insert(
            tok.clone(),
            (Utc::now() + chrono::Duration::seconds(ttl), cred.partner_id),
        );
        ttl
    };
    Ok(ok(
        json!({"access_token": tok, "token_type": "Bearer", "expires_in": ttl.to_string()}),
    ))
}

pub(super) async fn methods(State(sb): State<Sandbox>, h: HeaderMap) -> ApiResult {
    authorize(&sb, &h, None)?;
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
pub(super) struct PageQ {
    pub(super) page: Option<String>,
    pub(super) per_page: Option<String>,
}

pub(super) fn paginate(q: &PageQ) -> (usize, usize) {
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

/// A v1 list answer: page `page` (of `per`) of `rows`, newest first, with seed 004's
/// `pagination` block (camelCase counts, a `links.next` URL on this host).
pub(super) fn list_answer<T>(
    h: &HeaderMap,
    path: &str,
    (page, per): (usize, usize),
    rows: impl ExactSizeIterator<Item = T>,
    render: impl Fn(T) -> Value,
) -> Response {
    let total = rows.len();
    let data: Vec<Value> = rows.skip((page - 1) * per).take(per).map(render).collect();
    let pages = total.div_ceil(per).max(1);
    let base = format!("http://{}{path}", header(h, "host").unwrap_or("localhost"));
    let next = if page < pages {
        Value::from(format!("{base}?page={}", page + 1))
    } else {
        Value::Null
    };
    let pagination = json!({
        "count": data.len(),
        "total": total,
        "perPage": per,
        "currentPage": page,
        "totalPages": pages,
        "links": {"next": next},
    });
    Json(json!({"status": 200, "success": true, "data": data, "pagination": pagination}))
        .into_response()
}

pub(super) async fn list(
    State(sb): State<Sandbox>,
    Path(account): Path<String>,
    Query(q): Query<PageQ>,
    h: HeaderMap,
) -> ApiResult {
    authorize(&sb, &h, Some(&account))?;
    let mut st = sb.lock();
    let Some(ids) = st.ids_newest_first(&account) else {
        return Err(v1_error(StatusCode::NOT_FOUND, "Account not found", None));
    };
    let st = &*st;
    let links = st.accounts.get(&account);
    Ok(list_answer(
        &h,
        &format!("/api/v1.0/payment-link-manage/{account}"),
        paginate(&q),
        ids.iter(),
        |id| match links.and_then(|l| l.get(id)) {
            Some(l) => st.render(&account, l),
            None => Value::Null,
        },
    ))
}

pub(super) fn not_found() -> Response {
    v1_error(StatusCode::NOT_FOUND, "Payment link not found", None)
}

pub(super) async fn show(
    State(sb): State<Sandbox>,
    Path((account, id)): Path<(String, String)>,
    h: HeaderMap,
) -> ApiResult {
    authorize(&sb, &h, Some(&account))?;
    let st = sb.lock();
    let id: i64 = id.parse().map_err(|_| not_found())?;
    let l = st
        .accounts
        .get(&account)
        .and_then(|a| a.get(&id))
        .ok_or_else(not_found)?;
    Ok(ok(st.render(&account, l)))
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

/// Validates a v1 create body per SingaPay's create pages (seeds 000 and 001: reff_no, title,
/// max_usage 1…1,000,000, total ≥ 10,000 and = the items' sum, 13-digit `expired_at`).
fn build_link(st: &SandboxState, account: &str, b: &Value) -> Result<SandboxLink, Response> {
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
    let total = decimal_from_json(&b["total_amount"]).unwrap_or_default();
    if total < Decimal::from(10_000) {
        err("total_amount", "The total amount must be at least 10000.");
    }
    let mut items = Vec::new();
    match b["items"].as_array() {
        Some(a) if !a.is_empty() => {
            for i in a {
                items.push(SandboxItem {
                    name: i["name"].as_str().unwrap_or_default().to_string(),
                    quantity: decimal_from_json(&i["quantity"]).unwrap_or_default(),
                    unit_price: decimal_from_json(&i["unit_price"]).unwrap_or_default(),
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
    let expired_at = match parse_expiry_millis(&b["expired_at"]) {
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
    Ok(SandboxLink {
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

pub(super) fn insert_link(sb: &Sandbox, account: &str, body: &Value) -> ApiResult {
    let mut st = sb.lock();
    let link = build_link(&st, account, body)?;
    st.next_link_id += 1;
    let v = st.render(account, &link);
    st.accounts
        .entry(account.to_string())
        .or_default()
        .insert(link.id, link);
    Ok(ok(v))
}

pub(super) async fn create(
    State(sb): State<Sandbox>,
    Path(account): Path<String>,
    h: HeaderMap,
    Json(body): Json<Value>,
) -> ApiResult {
    authorize(&sb, &h, Some(&account))?;
    insert_link(&sb, &account, &body)
}

pub(super) async fn update(
    State(sb): State<Sandbox>,
    Path((account, id)): Path<(String, String)>,
    h: HeaderMap,
    Json(b): Json<Value>,
) -> ApiResult {
    authorize(&sb, &h, Some(&account))?;
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
        match parse_expiry_millis(&b["expired_at"]) {
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
    Ok(ok(st.render(&account, &link)))
}

pub(super) async fn delete(
    State(sb): State<Sandbox>,
    Path((account, id)): Path<(String, String)>,
    h: HeaderMap,
) -> ApiResult {
    authorize(&sb, &h, Some(&account))?;
    let id: i64 = id.parse().map_err(|_| not_found())?;
    remove_link(&sb, &account, id, false)
}

pub(super) fn remove_link(sb: &Sandbox, account: &str, id: i64, force: bool) -> ApiResult {
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
