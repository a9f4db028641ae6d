//! The unauthenticated probes: `/healthz` (process and ledger alive), `/readyz` (every account
//! synced successfully within 3 schedule intervals) and `/metrics` (Prometheus text format).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{AdminState, ApiError};

pub(super) async fn healthz(State(st): State<AdminState>) -> Result<Json<Value>, ApiError> {
    st.ledger
        .ping()
        .await
        .map_err(|e| ApiError::unavailable(&e))?;
    Ok(Json(json!({"status": "ok"})))
}

/// `/readyz`: 200 when every account's last successful pass is younger than 3 schedule
/// intervals and held no deletions, else 503. Without the admin token the answer is only
/// `{"ready": …}`; with it, each account's details.
pub(super) async fn readyz(
    State(st): State<AdminState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let now = st.clock.now();
    let mut details = Vec::new();
    let mut ready = true;
    for a in &st.accounts {
        let status = st
            .ledger
            .account_status(&a.id)
            .await
            .map_err(|e| ApiError::unavailable(&e))?;
        let interval =
            crate::cron::interval(&a.schedule, now).unwrap_or(std::time::Duration::from_secs(300));
        let limit = interval
            .checked_mul(3)
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .unwrap_or(chrono::Duration::hours(1));
        let fresh = status.last_success_at.is_some_and(|t| now - t <= limit);
        let account_ready = fresh && status.deletions_held == 0;
        ready &= account_ready;
        details.push(json!({
            "account_id": a.id.as_str(),
            "last_success_at": status.last_success_at.map(crate::time::rfc3339_utc),
            "max_age_seconds": limit.num_seconds(),
            "deletions_held": status.deletions_held,
            "ready": account_ready,
        }));
    }
    let body = if st.authorized(&headers) {
        Json(json!({"ready": ready, "accounts": details}))
    } else {
        Json(json!({"ready": ready}))
    };
    Ok(if ready {
        body.into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    })
}

/// `/metrics`: the Prometheus text of what the process records; the gauges are maintained by
/// the dispatcher and the passes, so a scrape costs no query.
pub(super) async fn metrics_text(State(st): State<AdminState>) -> Result<Response, ApiError> {
    let h = st
        .metrics
        .as_ref()
        .ok_or_else(|| ApiError::not_found("not_found", "metrics are not enabled"))?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        h.render(),
    )
        .into_response())
}
