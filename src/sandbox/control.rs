//! The control plane under `/_sandbox/`: act as customers (pay), as the merchant (close, reopen,
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
use super::state::{Fault, History, LoggedRequest, SandboxLink, decimal_from_json, ok};
use super::{ApiResult, Sandbox, seed};
use crate::time::{jakarta, parse_singapay_time};

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
    #[serde(default)]
    method: Option<String>,
}

pub(super) async fn ctl_pay(
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
    st.accounts.insert(
        account.clone(),
        links.into_iter().map(|l| (l.id, l)).collect(),
    );
    Ok(ok(json!({"account_id": account, "links": n})))
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
