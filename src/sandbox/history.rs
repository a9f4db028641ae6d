//! Payment Link History as the sandbox keeps and serves it (DOC2 payment-link-history, DESIGN §13): one row per
//! payment attempt, made the way SingaPay makes them. A customer picks a method on the hosted page
//! (a `pending` row with its VA number or pay code), then pays (`paid`, and the link's usage
//! rises), is settled later (`has_settle`, `settle_at`), or the attempt fails or expires. The list
//! answers newest first with the real endpoint's filters and pagination; show answers one row or
//! SingaPay's 404.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::json;

use super::api::{authorize, list_answer};
use super::state::{History, METHODS, SandboxLink, SandboxState, ok, v1_error};
use super::{ApiResult, Sandbox};
use crate::time::parse_singapay_time;

/// Seeded history for `links`: one paid row per payment each link already counts
/// (`current_usage`), made before its last `payment_date` (so outside any recent window),
/// methods from its whitelist, settled a day later, except the oldest one (a settlement still
/// outstanding). Returns the rows in id order from `first_id`.
pub(super) fn seed_history(links: &[SandboxLink], first_id: i64) -> Vec<History> {
    let mut rows = Vec::new();
    let mut id = first_id;
    let mut by_time: Vec<&SandboxLink> = links.iter().filter(|l| l.current_usage > 0).collect();
    by_time.sort_by_key(|l| (l.payment_date.unwrap_or(l.created_at), l.id));
    for l in by_time {
        let last = l.payment_date.unwrap_or(l.created_at);
        let methods = l
            .whitelisted_payment_method
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| vec!["VA_BRI".into(), "QRIS".into()]);
        for k in 0..l.current_usage.max(0) {
            let paid_at = last - Duration::minutes(10 * (l.current_usage - 1 - k));
            let picked = paid_at - Duration::minutes(2);
            let mut h = History::attempt(id, l, &methods[k as usize % methods.len()], picked);
            h.status = "paid".into();
            h.payment_date = Some(paid_at);
            h.updated_at = paid_at;
            if id != first_id {
                h.settle_at = Some(paid_at + Duration::days(1));
                h.updated_at = paid_at + Duration::days(1);
            }
            rows.push(h);
            id += 1;
        }
    }
    rows
}

/// `n` generated paid rows on `links` (round robin) for benchmarks: `recent` of them created in
/// the last 6 days (not settled), the rest spread over the year before `now - 8 days` (settled).
/// Every row is final, so passes over them change nothing. Ids from `first_id`, oldest first.
pub(super) fn generated_history(
    links: &[SandboxLink],
    n: usize,
    recent: usize,
    now: DateTime<Utc>,
    first_id: i64,
) -> Vec<History> {
    if links.is_empty() {
        return Vec::new();
    }
    let old = n.saturating_sub(recent);
    let year_start = now - Duration::days(365);
    let old_span = Duration::days(357).num_seconds();
    let recent_span = Duration::days(6).num_seconds();
    (0..n)
        .map(|k| {
            let at = if k < old {
                year_start + Duration::seconds(old_span * k as i64 / old.max(1) as i64)
            } else {
                now - Duration::days(6)
                    + Duration::seconds(recent_span * (k - old) as i64 / recent.max(1) as i64)
            };
            let link = &links[k % links.len()];
            let code = METHODS[k % METHODS.len()].0;
            let mut h = History::attempt(first_id + k as i64, link, code, at);
            h.status = "paid".into();
            h.payment_date = Some(at + Duration::minutes(3));
            h.updated_at = at + Duration::minutes(3);
            if k < old {
                h.settle_at = Some(at + Duration::days(1));
                h.updated_at = at + Duration::days(1);
            }
            h
        })
        .collect()
}

/// The list's query (DOC2 payment-link-history): pagination, sort and every documented filter.
#[derive(Debug, Default, Deserialize)]
pub(super) struct HistoryQuery {
    page: Option<String>,
    per_page: Option<String>,
    sort_by: Option<String>,
    sort_order: Option<String>,
    reff_no: Option<String>,
    status: Option<String>,
    payment_method_name: Option<String>,
    payment_method_value: Option<String>,
    amount: Option<String>,
    amount_min: Option<String>,
    amount_max: Option<String>,
    has_settle: Option<String>,
    created_at_from: Option<String>,
    created_at_to: Option<String>,
    payment_date_from: Option<String>,
    payment_date_to: Option<String>,
    processed_timestamp_from: Option<String>,
    processed_timestamp_to: Option<String>,
    settle_at_from: Option<String>,
    settle_at_to: Option<String>,
}

/// A filter that cannot be read: SingaPay's 422 with the field named.
fn invalid(field: &str, why: &str) -> Response {
    v1_error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "The given data was invalid.",
        Some(json!({ field: [why] })),
    )
}

fn time_bound(field: &str, v: &Option<String>) -> Result<Option<DateTime<Utc>>, Response> {
    match v.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => parse_singapay_time(s)
            .map(Some)
            .map_err(|_| invalid(field, "must be an ISO 8601 date")),
    }
}

fn decimal_bound(field: &str, v: &Option<String>) -> Result<Option<Decimal>, Response> {
    match v.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| invalid(field, "must be a number")),
    }
}

fn within(
    t: Option<DateTime<Utc>>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> bool {
    if from.is_none() && to.is_none() {
        return true;
    }
    t.is_some_and(|t| from.is_none_or(|f| t >= f) && to.is_none_or(|u| t <= u))
}

fn contains(hay: &str, needle: &Option<String>) -> bool {
    needle
        .as_deref()
        .is_none_or(|n| hay.to_ascii_lowercase().contains(&n.to_ascii_lowercase()))
}

/// `GET /api/v1.0/payment-link-histories/{account_id}`.
pub(super) async fn list(
    State(sb): State<Sandbox>,
    Path(account): Path<String>,
    Query(q): Query<HistoryQuery>,
    h: HeaderMap,
) -> ApiResult {
    authorize(&sb, &h, Some(&account))?;
    let created = (
        time_bound("created_at_from", &q.created_at_from)?,
        time_bound("created_at_to", &q.created_at_to)?,
    );
    let paid = (
        time_bound("payment_date_from", &q.payment_date_from)?,
        time_bound("payment_date_to", &q.payment_date_to)?,
    );
    let processed = (
        time_bound("processed_timestamp_from", &q.processed_timestamp_from)?,
        time_bound("processed_timestamp_to", &q.processed_timestamp_to)?,
    );
    let settled = (
        time_bound("settle_at_from", &q.settle_at_from)?,
        time_bound("settle_at_to", &q.settle_at_to)?,
    );
    let amount = decimal_bound("amount", &q.amount)?;
    let amount_min = decimal_bound("amount_min", &q.amount_min)?;
    let amount_max = decimal_bound("amount_max", &q.amount_max)?;
    let has_settle = match q.has_settle.as_deref() {
        None | Some("") => None,
        Some("1" | "true") => Some(true),
        Some("0" | "false") => Some(false),
        Some(_) => return Err(invalid("has_settle", "must be true or false")),
    };
    let sort_by = q.sort_by.as_deref().unwrap_or("id");
    if !["id", "created_at", "amount", "payment_date"].contains(&sort_by) {
        return Err(invalid(
            "sort_by",
            "must be id, created_at, amount or payment_date",
        ));
    }
    let ascending = match q
        .sort_order
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("desc") => false,
        Some("asc") => true,
        Some(_) => return Err(invalid("sort_order", "must be asc or desc")),
    };
    let st = sb.lock();
    if !st.accounts.contains_key(&account) {
        return Err(v1_error(StatusCode::NOT_FOUND, "Account not found", None));
    }
    let now = st.now();
    let rows = st.histories.get(&account).map(Vec::as_slice).unwrap_or(&[]);
    let path = format!("/api/v1.0/payment-link-histories/{account}");
    let pq = super::api::PageQ {
        page: q.page.clone(),
        per_page: q.per_page.clone(),
    };
    let unfiltered = q.reff_no.is_none()
        && q.status.is_none()
        && q.payment_method_name.is_none()
        && q.payment_method_value.is_none()
        && amount.is_none()
        && amount_min.is_none()
        && amount_max.is_none()
        && has_settle.is_none()
        && [created, paid, processed, settled]
            .iter()
            .all(|(a, b)| a.is_none() && b.is_none());
    // Rows are kept in id order: the usual request (newest first by id, no filter) is a slice.
    if unfiltered && sort_by == "id" {
        let render = |r: &History| r.render(now);
        return Ok(if ascending {
            list_answer(&h, &path, super::api::paginate(&pq), rows.iter(), render)
        } else {
            list_answer(
                &h,
                &path,
                super::api::paginate(&pq),
                rows.iter().rev(),
                render,
            )
        });
    }
    let mut hits: Vec<&History> = rows
        .iter()
        .filter(|r| {
            contains(&r.reff_no, &q.reff_no)
                && q.status
                    .as_deref()
                    .is_none_or(|s| r.status.eq_ignore_ascii_case(s))
                && contains(&r.method, &q.payment_method_name)
                && contains(&r.method_value, &q.payment_method_value)
                && amount.is_none_or(|a| r.amount == a)
                && amount_min.is_none_or(|a| r.amount >= a)
                && amount_max.is_none_or(|a| r.amount <= a)
                && has_settle.is_none_or(|s| r.settle_at.is_some() == s)
                && within(Some(r.created_at), created.0, created.1)
                && within(r.payment_date, paid.0, paid.1)
                && within(r.payment_date, processed.0, processed.1)
                && within(r.settle_at, settled.0, settled.1)
        })
        .collect();
    match sort_by {
        "created_at" => hits.sort_by_key(|r| (r.created_at, r.id)),
        "amount" => hits.sort_by_key(|r| (r.amount, r.id)),
        "payment_date" => hits.sort_by_key(|r| (r.payment_date, r.id)),
        _ => {}
    }
    if !ascending {
        hits.reverse();
    }
    Ok(list_answer(
        &h,
        &path,
        super::api::paginate(&pq),
        hits.into_iter(),
        |r| r.render(now),
    ))
}

/// SingaPay's 404 for a history id it does not have (LG CHANGELOG's message).
fn history_not_found(account: &str, id: &str) -> Response {
    v1_error(
        StatusCode::NOT_FOUND,
        &format!("No result for account_id: {account} with history_id: {id}"),
        None,
    )
}

/// `GET /api/v1.0/payment-link-histories/{account_id}/{history_id}`.
pub(super) async fn show(
    State(sb): State<Sandbox>,
    Path((account, id)): Path<(String, String)>,
    h: HeaderMap,
) -> ApiResult {
    authorize(&sb, &h, Some(&account))?;
    let st = sb.lock();
    let hid: i64 = id.parse().map_err(|_| history_not_found(&account, &id))?;
    let row = st
        .find_history(&account, hid)
        .ok_or_else(|| history_not_found(&account, &id))?;
    Ok(ok(row.render(st.now())))
}

impl SandboxState {
    pub(super) fn find_history(&self, account: &str, id: i64) -> Option<&History> {
        let rows = self.histories.get(account)?;
        rows.binary_search_by_key(&id, |r| r.id)
            .ok()
            .map(|i| &rows[i])
    }

    fn find_history_mut(&mut self, account: &str, id: i64) -> Option<&mut History> {
        let rows = self.histories.get_mut(account)?;
        let i = rows.binary_search_by_key(&id, |r| r.id).ok()?;
        Some(&mut rows[i])
    }

    /// Attempt `id` expires `after` its creation instead (the control plane's `expires_in`).
    pub(super) fn set_attempt_expiry(&mut self, account: &str, id: i64, after: Duration) {
        if let Some(row) = self.find_history_mut(account, id) {
            row.expired_at = row.created_at + after;
        }
    }

    /// A customer picks `method` on link `link_id`: a new `pending` attempt (the link then has
    /// history: delete is refused). Errors (the control plane's 404/409) when there is no such
    /// link or it does not take payments now.
    pub(super) fn pick(
        &mut self,
        account: &str,
        link_id: i64,
        method: &str,
    ) -> Result<i64, (StatusCode, String)> {
        let now = self.now();
        let id = self.next_history_id;
        let link = self
            .accounts
            .get_mut(account)
            .and_then(|a| a.get_mut(&link_id))
            .ok_or((StatusCode::NOT_FOUND, "no such link".to_string()))?;
        if link.status != "open" {
            return Err((StatusCode::CONFLICT, "link is not open".into()));
        }
        if link.expired_at.is_some_and(|e| e <= now) {
            return Err((StatusCode::CONFLICT, "link has expired".into()));
        }
        if link.max_usage > 0 && link.current_usage >= link.max_usage {
            return Err((StatusCode::CONFLICT, "link is fully used".into()));
        }
        link.has_history = true;
        let row = History::attempt(id, link, method, now);
        self.next_history_id += 1;
        self.histories
            .entry(account.to_string())
            .or_default()
            .push(row);
        Ok(id)
    }

    /// Moves attempt `id` to `step`: `pay` (a pending attempt before its `expired_at`; the link's
    /// usage rises and its `payment_date` moves), `settle` (a paid one), `fail` or `expire` (a
    /// pending one before its `expired_at`).
    /// Errors: 404 for an unknown row or step, 409 when the row's state (or its link, for `pay`)
    /// does not allow the step; nothing changes then.
    pub(super) fn advance_history(
        &mut self,
        account: &str,
        id: i64,
        step: &str,
    ) -> Result<(), (StatusCode, String)> {
        let now = self.now();
        let (status, settled, link_id, lapsed) = self
            .find_history(account, id)
            .map(|r| {
                (
                    r.status.clone(),
                    r.settle_at.is_some(),
                    r.link_id,
                    r.expired_at <= now,
                )
            })
            .ok_or((StatusCode::NOT_FOUND, "no such history row".to_string()))?;
        // An attempt past its `expired_at` is already expired as SingaPay computes it: it can
        // no longer be paid, failed or expired.
        let allowed = match step {
            "pay" | "fail" | "expire" => status == "pending" && !lapsed,
            "settle" => status == "paid" && !settled,
            _ => return Err((StatusCode::NOT_FOUND, format!("unknown step {step}"))),
        };
        if !allowed {
            return Err((
                StatusCode::CONFLICT,
                format!("history row {id} is {status}: cannot {step}"),
            ));
        }
        if step == "pay" {
            let link = self
                .accounts
                .get_mut(account)
                .and_then(|a| a.get_mut(&link_id))
                .ok_or((
                    StatusCode::CONFLICT,
                    "the attempt's link is gone".to_string(),
                ))?;
            if link.max_usage > 0 && link.current_usage >= link.max_usage {
                return Err((StatusCode::CONFLICT, "link is fully used".into()));
            }
            link.current_usage += 1;
            link.payment_date = Some(now);
            link.updated_at = now;
        }
        let Some(row) = self.find_history_mut(account, id) else {
            return Err((StatusCode::NOT_FOUND, "no such history row".into()));
        };
        match step {
            "pay" => {
                row.status = "paid".into();
                row.payment_date = Some(now);
            }
            "settle" => row.settle_at = Some(now),
            "fail" => row.status = "failed".into(),
            _ => {
                row.status = "expired".into();
                row.expired_at = row.expired_at.min(now);
            }
        }
        row.updated_at = now;
        Ok(())
    }
}
