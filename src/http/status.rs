//! The unauthenticated probes: `/healthz` (process and ledger alive), `/readyz` (every account
//! synced successfully within 3 schedule intervals) and `/metrics` (Prometheus text format).

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{AdminState, ApiError};
use crate::types::DeliveryState;

pub(super) async fn healthz(State(st): State<AdminState>) -> Result<Json<Value>, ApiError> {
    st.ledger
        .ping()
        .await
        .map_err(|e| ApiError::unavailable(&e))?;
    Ok(Json(json!({"status": "ok"})))
}

pub(super) async fn readyz(State(st): State<AdminState>) -> Result<Response, ApiError> {
    let now = st.clock.now();
    let mut details = Vec::new();
    let mut ready = true;
    for a in &st.accounts {
        let last = st
            .ledger
            .last_success(&a.id)
            .await
            .map_err(|e| ApiError::unavailable(&e))?;
        let interval =
            crate::cron::interval(&a.schedule, now).unwrap_or(std::time::Duration::from_secs(300));
        let limit = chrono::Duration::from_std(interval * 3).unwrap_or(chrono::Duration::hours(1));
        let fresh = last.is_some_and(|t| now - t <= limit);
        ready &= fresh;
        details.push(json!({
            "account_id": a.id.as_str(),
            "last_success_at": last.map(crate::time::rfc3339_utc),
            "max_age_seconds": limit.num_seconds(),
            "ready": fresh,
        }));
    }
    let body = Json(json!({"ready": ready, "accounts": details}));
    Ok(if ready {
        body.into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    })
}

pub(super) async fn metrics_text(State(st): State<AdminState>) -> Result<Response, ApiError> {
    if let Ok(counts) = st.ledger.delivery_state_counts().await {
        for &state in DeliveryState::ALL {
            let n = counts
                .iter()
                .find(|(s, _)| *s == state)
                .map(|c| c.1)
                .unwrap_or(0);
            metrics::gauge!("singapay_sync_deliveries", "state" => state.as_str()).set(n as f64);
        }
    }
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
