//! The doorbell (DESIGN §14): SingaPay's own webhooks on a listener of their own. A request is
//! verified ([`signature`]), stored in `inbound_notification` and made durable, then answered
//! `200 {"status":"success"}` before any upstream call; [`processor`] drains the stored ones into
//! targeted passes (show + history, the same diff and commit as a sweep). The webhook only rings
//! the bell: the ledger is written from what SingaPay's API answers.

#[cfg(test)]
mod fuzz;
pub mod notice;
pub(crate) mod processor;
pub mod signature;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::ledger::{InboundState, Ledger, NewNotification, Stored};
use crate::time::Clock;
use notice::{Notice, classify};
use signature::{SignedRequest, Verifier};

/// What the inbound listener shares.
#[derive(Clone)]
pub(crate) struct Doorbell {
    /// The ledger.
    pub ledger: Ledger,
    /// Signature checks.
    pub verifier: Arc<Verifier>,
    /// Clock (the timestamp tolerance).
    pub clock: Arc<dyn Clock>,
    /// Woken after a notification is stored (the processor).
    pub wake: Arc<Notify>,
}

/// The `outcome` of a verified request stored as new.
const ACCEPTED: &str = "accepted";
/// The `outcome` of a verified request already stored (SingaPay sent it again).
const DUPLICATE: &str = "duplicate";
/// The `outcome` of a verified request the ledger could not store (answered 503).
const STORE_ERROR: &str = "error";
/// The `outcome` labels of `singapay_sync_inbound_requests_total` for a verified request; a
/// refused one is counted under its [`signature::Rejection::label`].
const VERIFIED_OUTCOMES: [&str; 3] = [ACCEPTED, DUPLICATE, STORE_ERROR];

/// The inbound router: `POST {path}` only; anything else is a JSON 404/405. Registers every
/// series of `singapay_sync_inbound_requests_total` at 0, so that an alert comparing two of them
/// (config/alerts.yml, `SingapaySyncInboundNotVerifying`: failures and no `accepted`) sees a 0
/// from the start rather than no series, which Prometheus' `== 0` never matches.
pub(crate) fn router(route: &str, bell: Doorbell) -> Router {
    for outcome in signature::Rejection::LABELS
        .into_iter()
        .chain(VERIFIED_OUTCOMES)
    {
        metrics::counter!("singapay_sync_inbound_requests_total", "outcome" => outcome)
            .increment(0);
    }
    Router::new()
        .route(route, post(receive))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                axum::Json(json!({"status": "error", "message": "not found"})),
            )
        })
        .method_not_allowed_fallback(|| async {
            (
                StatusCode::METHOD_NOT_ALLOWED,
                axum::Json(json!({"status": "error", "message": "POST only"})),
            )
        })
        .with_state(bell)
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn answer(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// `POST {inbound.path}`: verify, store (durably), answer; the processor does the rest.
async fn receive(State(bell): State<Doorbell>, headers: HeaderMap, body: Bytes) -> Response {
    let req = SignedRequest {
        signature: header(&headers, "x-signature"),
        timestamp: header(&headers, "x-timestamp"),
        authorization: header(&headers, "authorization"),
        body: &body,
    };
    if let Err(why) = bell.verifier.verify(req, bell.clock.now()) {
        // The reason only: never the body, the token or the signature.
        warn!(reason = %why, bytes = body.len(), "inbound.rejected");
        metrics::counter!("singapay_sync_inbound_requests_total", "outcome" => why.label())
            .increment(1);
        return answer(
            StatusCode::UNAUTHORIZED,
            json!({"status": "unauthorized", "message": why.to_string()}),
        );
    }
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let canonical = signature::normalize(&body);
    // SingaPay's retries of one webhook carry the same body (not the same token or timestamp).
    let dedupe_key = match &canonical {
        Some(c) => signature::sha256_hex(c.as_bytes()),
        None => signature::sha256_hex(&body),
    };
    let (event, notice) = match &parsed {
        Some(v) => classify(v),
        None => (None, Notice::Other),
    };
    let link_id = match &notice {
        Notice::Transaction { link_id, .. } | Notice::Inquiry { link_id, .. } => *link_id,
        _ => None,
    };
    let state = if notice == Notice::Other {
        InboundState::Ignored
    } else {
        InboundState::Pending
    };
    let n = NewNotification {
        dedupe_key,
        event: event.clone(),
        partner_id: header(&headers, "x-partner-id").map(str::to_string),
        x_timestamp: header(&headers, "x-timestamp").map(str::to_string),
        body: String::from_utf8_lossy(&body).into_owned(),
        received_at: bell.clock.now(),
        state,
        link_id,
    };
    match bell.ledger.store_notification(&n).await {
        Ok(Stored::New(id)) => {
            info!(id, event = event.as_deref().unwrap_or("-"), state = %state, "inbound.accepted");
            metrics::counter!("singapay_sync_inbound_requests_total", "outcome" => ACCEPTED)
                .increment(1);
            if state == InboundState::Pending {
                bell.wake.notify_one();
            }
            answer(StatusCode::OK, json!({"status": "success"}))
        }
        Ok(Stored::Duplicate(id)) => {
            info!(
                id,
                event = event.as_deref().unwrap_or("-"),
                "inbound.duplicate"
            );
            metrics::counter!("singapay_sync_inbound_requests_total", "outcome" => DUPLICATE)
                .increment(1);
            answer(StatusCode::OK, json!({"status": "success"}))
        }
        Err(e) => {
            // Not stored, or not durable: SingaPay must try again (it retries a 503 four times).
            tracing::error!(error = %e, "inbound.store_failed");
            metrics::counter!("singapay_sync_inbound_requests_total", "outcome" => STORE_ERROR)
                .increment(1);
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"status": "error", "message": "not stored; try again"}),
            )
        }
    }
}
