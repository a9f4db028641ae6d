//! The control plane under `/_sandbox/`: act as customers (pick a method, pay; an attempt
//! settles, fails or expires), as the merchant (close, reopen,
//! edit, add, delete), as the clock (advance) and as the operator (faults, token expiry, extra
//! accounts, the request log).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::api::{insert_link, not_found, remove_link};
use super::state::{Fault, LoggedRequest, SandboxCredential, SandboxLink, decimal_from_json, ok};
use super::webhooks::Happened;
use super::{ApiResult, Sandbox, seed};
use crate::time::parse_singapay_time;

fn ctl_error(status: StatusCode, msg: &str) -> Response {
    (status, Json(json!({"error": {"message": msg}}))).into_response()
}

pub(super) async fn clock(State(sb): State<Sandbox>) -> Json<Value> {
    let st = sb.lock();
    Json(json!({"now": st.now().to_rfc3339(), "offset_seconds": st.offset.num_seconds()}))
}

#[derive(Deserialize)]
pub(super) struct Advance {
    seconds: i64,
}

pub(super) async fn advance(State(sb): State<Sandbox>, Json(a): Json<Advance>) -> Json<Value> {
    let mut st = sb.lock();
    st.offset += chrono::Duration::seconds(a.seconds);
    Json(json!({"now": st.now().to_rfc3339(), "offset_seconds": st.offset.num_seconds()}))
}

fn with_link<F>(sb: &Sandbox, account: &str, id: i64, f: F) -> ApiResult
where
    F: FnOnce(&mut SandboxLink, DateTime<Utc>) -> Result<(), Response>,
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
    Ok(ok(st.render(account, &link)))
}

#[derive(Deserialize, Default)]
pub(super) struct Pay {
    /// A method code (`VA_BRI`) or label (`VA BRI`); default `VA BRI`.
    #[serde(default)]
    method: Option<String>,
    /// Seconds until the attempt expires (default: a day, as the sandbox's attempts do).
    #[serde(default)]
    expires_in: Option<i64>,
}

fn method_of(body: &Option<Json<Pay>>) -> String {
    body.as_ref()
        .and_then(|Json(p)| p.method.clone())
        .unwrap_or_else(|| "VA BRI".into())
}

fn step_error((status, msg): (StatusCode, String)) -> Response {
    ctl_error(status, &msg)
}

/// The history row `id` of `account` as SingaPay would show it.
fn history_answer(sb: &Sandbox, account: &str, id: i64) -> ApiResult {
    let st = sb.lock();
    let row = st.find_history(account, id).ok_or_else(not_found)?;
    Ok(ok(row.render(st.now())))
}

/// `POST /_sandbox/accounts/{a}/links/{id}/attempts {"method", "expires_in"?}`: a customer picks a method on
/// the hosted page: a `pending` history row. Answers the row.
pub(super) async fn ctl_attempt(
    State(sb): State<Sandbox>,
    Path((account, id)): Path<(String, i64)>,
    body: Option<Json<Pay>>,
) -> ApiResult {
    let method = method_of(&body);
    let hid = {
        let mut st = sb.lock();
        let hid = st.pick(&account, id, &method).map_err(step_error)?;
        if let Some(secs) = body.as_ref().and_then(|Json(p)| p.expires_in) {
            st.set_attempt_expiry(&account, hid, chrono::Duration::seconds(secs));
        }
        hid
    };
    sb.announce(&account, hid, Happened::Picked);
    history_answer(&sb, &account, hid)
}

/// `POST /_sandbox/accounts/{a}/histories/{hid}/{pay|settle|fail|expire}`: the attempt is paid
/// (the link's usage rises), settled, fails or expires. Answers the row.
pub(super) async fn ctl_history_step(
    State(sb): State<Sandbox>,
    Path((account, hid, step)): Path<(String, i64, String)>,
) -> ApiResult {
    sb.lock()
        .advance_history(&account, hid, &step)
        .map_err(step_error)?;
    match step.as_str() {
        "pay" => sb.announce(&account, hid, Happened::Paid),
        "expire" => sb.announce(&account, hid, Happened::Expired),
        _ => {}
    }
    history_answer(&sb, &account, hid)
}

/// `POST /_sandbox/accounts/{a}/links/{id}/pay {"method"}`: a customer picks a method and pays
/// at once (a history row made `pending`, then `paid`). Answers the link.
pub(super) async fn ctl_pay(
    State(sb): State<Sandbox>,
    Path((account, id)): Path<(String, i64)>,
    body: Option<Json<Pay>>,
) -> ApiResult {
    let method = method_of(&body);
    let hid = {
        let mut st = sb.lock();
        let hid = st.pick(&account, id, &method).map_err(step_error)?;
        st.advance_history(&account, hid, "pay")
            .map_err(step_error)?;
        hid
    };
    sb.announce(&account, hid, Happened::Picked);
    sb.announce(&account, hid, Happened::Paid);
    with_link(&sb, &account, id, |_, _| Ok(()))
}

pub(super) async fn ctl_close(
    State(sb): State<Sandbox>,
    Path((account, id)): Path<(String, i64)>,
) -> ApiResult {
    with_link(&sb, &account, id, |l, now| {
        l.status = "closed".into();
        l.updated_at = now;
        Ok(())
    })
}

pub(super) async fn ctl_reopen(
    State(sb): State<Sandbox>,
    Path((account, id)): Path<(String, i64)>,
) -> ApiResult {
    with_link(&sb, &account, id, |l, now| {
        l.status = "open".into();
        l.updated_at = now;
        Ok(())
    })
}

pub(super) async fn ctl_edit(
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
        if let Some(a) = decimal_from_json(&b["total_amount"]) {
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
pub(super) struct Force {
    #[serde(default)]
    force: bool,
}

pub(super) async fn ctl_delete(
    State(sb): State<Sandbox>,
    Path((account, id)): Path<(String, i64)>,
    Query(f): Query<Force>,
) -> ApiResult {
    remove_link(&sb, &account, id, f.force)
}

pub(super) async fn ctl_add(
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
pub(super) struct NewAccount {
    #[serde(default)]
    links: usize,
}

/// Adds (or replaces) an account seeded with `links` links like the default one.
pub(super) async fn ctl_add_account(
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
    let first = st.next_history_id;
    let history = super::history::seed_history(&links, first);
    st.next_history_id += history.len() as i64;
    let rows = history.len();
    st.histories.insert(account.clone(), history);
    st.accounts.insert(
        account.clone(),
        links.into_iter().map(|l| (l.id, l)).collect(),
    );
    Ok(ok(
        json!({"account_id": account, "links": n, "history": rows}),
    ))
}

/// `GET /_sandbox/credentials`: the accepted credentials (partner and client ids, accounts; no
/// secrets).
pub(super) async fn ctl_credentials(State(sb): State<Sandbox>) -> Json<Value> {
    let st = sb.lock();
    let list: Vec<Value> = st
        .credentials
        .iter()
        .map(|c| json!({"partner_id": c.partner_id, "client_id": c.client_id, "accounts": c.accounts}))
        .collect();
    Json(json!({ "credentials": list }))
}

/// `POST /_sandbox/credentials`: accept another credential (a merchant of its own), replacing one
/// with the same partner id; the accounts it lists answer only to it.
pub(super) async fn ctl_add_credential(
    State(sb): State<Sandbox>,
    Json(c): Json<SandboxCredential>,
) -> ApiResult {
    if c.partner_id.is_empty() || c.client_id.is_empty() || c.client_secret.is_empty() {
        return Err(ctl_error(
            StatusCode::BAD_REQUEST,
            "partner_id, client_id and client_secret are required",
        ));
    }
    let mut st = sb.lock();
    if st
        .credentials
        .first()
        .is_some_and(|d| d.partner_id == c.partner_id)
    {
        return Err(ctl_error(
            StatusCode::CONFLICT,
            "that is the default credential's partner id",
        ));
    }
    st.credentials.retain(|k| k.partner_id != c.partner_id);
    let answer = json!({"partner_id": c.partner_id, "accounts": c.accounts});
    st.credentials.push(c);
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

pub(super) async fn ctl_fault(State(sb): State<Sandbox>, Json(f): Json<Fault>) -> StatusCode {
    sb.lock().faults.push(f);
    StatusCode::NO_CONTENT
}

pub(super) async fn ctl_clear_faults(State(sb): State<Sandbox>) -> StatusCode {
    sb.lock().faults.clear();
    StatusCode::NO_CONTENT
}

pub(super) async fn ctl_expire_tokens(State(sb): State<Sandbox>) -> StatusCode {
    sb.lock().tokens.clear();
    StatusCode::NO_CONTENT
}

pub(super) async fn ctl_log(State(sb): State<Sandbox>) -> Json<Vec<LoggedRequest>> {
    Json(sb.lock().log.clone())
}

pub(super) async fn ctl_clear_log(State(sb): State<Sandbox>) -> StatusCode {
    sb.lock().log.clear();
    StatusCode::NO_CONTENT
}
