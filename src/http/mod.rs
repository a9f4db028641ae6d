//! The admin HTTP API (axum), DESIGN §7. Every answer is JSON; errors are
//! `{"error": {"code", "message"}}`. All routes but `/healthz`, `/readyz` and `/metrics` need
//! `Authorization: Bearer <http.admin_token>`.

// Handlers return `Result<_, Response>`: the error is the HTTP answer itself, built once and
// handed straight to axum, so boxing it would only add an allocation.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::config::AccountConfig;
use crate::ledger::{EventFilter, Ledger};
use crate::sync::Syncer;
use crate::time::Clock;
use crate::types::{AccountId, EventType, LinkId, Trigger};

/// Shared state of the admin API.
#[derive(Clone)]
pub struct AdminState {
    /// Ledger.
    pub ledger: Ledger,
    /// Starts passes.
    pub syncer: Arc<Syncer>,
    /// Wakes the dispatcher after a manual retry.
    pub wake: Arc<tokio::sync::Notify>,
    /// Bearer token.
    pub admin_token: SecretString,
    /// Configured accounts.
    pub accounts: Vec<AccountConfig>,
    /// Clock.
    pub clock: Arc<dyn Clock>,
    /// Prometheus text renderer.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

/// A JSON error answer.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message.into()}})),
    )
        .into_response()
}

fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "http.internal_error");
    error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
}

/// The router.
pub fn router(state: AdminState) -> Router {
    let protected = Router::new()
        .route("/resync", post(resync))
        .route("/sync-runs/{id}", get(sync_run))
        .route("/links", get(links))
        .route("/links/{account_id}/{id}", get(link))
        .route("/events", get(events))
        .route("/deliveries", get(deliveries))
        .route("/deliveries/{id}/retry", post(retry_delivery))
        .route("/subscribers/{name}/enable", post(enable_subscriber))
        .layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .merge(protected)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route",
            )
        })
        .with_state(state)
}

async fn require_token(State(st): State<AdminState>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Compare digests: equal-length inputs, no early exit on the secret's bytes.
    let ok = !given.is_empty()
        && Sha256::digest(given.as_bytes())
            == Sha256::digest(st.admin_token.expose_secret().as_bytes());
    if !ok {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong bearer token (http.admin_token)",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            "Bearer".parse().expect("static header value"),
        );
        return r;
    }
    next.run(req).await
}

async fn healthz(State(st): State<AdminState>) -> Response {
    match st.ledger.ping().await {
        Ok(()) => Json(json!({"status": "ok"})).into_response(),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ledger_unavailable",
            e.to_string(),
        ),
    }
}

async fn readyz(State(st): State<AdminState>) -> Response {
    let now = st.clock.now();
    let mut details = Vec::new();
    let mut ready = true;
    for a in &st.accounts {
        let last = match st.ledger.last_success(&a.id).await {
            Ok(l) => l,
            Err(e) => {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ledger_unavailable",
                    e.to_string(),
                );
            }
        };
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
    if ready {
        body.into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

async fn metrics_text(State(st): State<AdminState>) -> Response {
    if let Ok(counts) = st.ledger.delivery_state_counts().await {
        for state in ["pending", "delivered", "dead", "disabled"] {
            let n = counts
                .iter()
                .find(|(s, _)| s == state)
                .map(|c| c.1)
                .unwrap_or(0);
            metrics::gauge!("singapay_sync_deliveries", "state" => state).set(n as f64);
        }
    }
    match &st.metrics {
        Some(h) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            h.render(),
        )
            .into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "metrics are not enabled",
        ),
    }
}

fn account_param(
    st: &AdminState,
    q: &HashMap<String, String>,
) -> Result<Option<AccountId>, Response> {
    match q.get("account_id") {
        None => Ok(None),
        Some(a) => {
            let id = AccountId::parse(a)
                .map_err(|e| error(StatusCode::BAD_REQUEST, "bad_account_id", e))?;
            if !st.accounts.iter().any(|c| c.id == id) {
                return Err(error(
                    StatusCode::NOT_FOUND,
                    "unknown_account",
                    format!("account {id} is not configured"),
                ));
            }
            Ok(Some(id))
        }
    }
}

fn int_param(
    q: &HashMap<String, String>,
    k: &str,
    default: i64,
    max: i64,
) -> Result<i64, Response> {
    match q.get(k) {
        None => Ok(default),
        Some(v) => match v.parse::<i64>() {
            Ok(n) if (0..=max).contains(&n) => Ok(n),
            _ => Err(error(
                StatusCode::BAD_REQUEST,
                "bad_parameter",
                format!("{k} must be an integer from 0 to {max}"),
            )),
        },
    }
}

async fn resync(
    State(st): State<AdminState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let only = match account_param(&st, &q) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let mut runs = Vec::new();
    for a in st
        .accounts
        .iter()
        .filter(|a| only.as_ref().is_none_or(|o| *o == a.id))
    {
        match st.syncer.trigger(&a.id, Trigger::Manual).await {
            Ok(t) => runs.push(
                json!({"account_id": a.id.as_str(), "run_id": t.run_id, "coalesced": t.coalesced}),
            ),
            Err(e) => return internal(e),
        }
    }
    (StatusCode::ACCEPTED, Json(json!({"runs": runs}))).into_response()
}

async fn sync_run(State(st): State<AdminState>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_id",
            "run id must be an integer",
        );
    };
    match st.ledger.get_run(id).await {
        Ok(Some(r)) => Json(r).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no sync run {id}"),
        ),
        Err(e) => internal(e),
    }
}

async fn links(State(st): State<AdminState>, Query(q): Query<HashMap<String, String>>) -> Response {
    let account = match account_param(&st, &q) {
        Ok(Some(a)) => a,
        Ok(None) => match st.accounts.as_slice() {
            [only] => only.id.clone(),
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "missing_account_id",
                    "account_id is required",
                );
            }
        },
        Err(r) => return r,
    };
    let (limit, offset) = match (
        int_param(&q, "limit", 100, 1000),
        int_param(&q, "offset", 0, i64::MAX),
    ) {
        (Ok(l), Ok(o)) => (l, o),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    match st.ledger.list_links(&account, limit, offset).await {
        Ok((rows, total)) => Json(json!({
            "account_id": account.as_str(),
            "total": total,
            "links": rows.iter().map(|r| json!({
                "link": r.link, "sequence": r.sequence,
                "deleted_at": r.deleted_at.map(crate::time::rfc3339_utc),
            })).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(e) => internal(e),
    }
}

async fn link(
    State(st): State<AdminState>,
    Path((account, id)): Path<(String, String)>,
) -> Response {
    let account = match AccountId::parse(&account) {
        Ok(a) => a,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_account_id", e),
    };
    let Ok(id) = id.parse::<i64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_id",
            "link id must be an integer",
        );
    };
    let stored = match st.ledger.get_link(&account, LinkId(id)).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no link {id} in account {account}"),
            );
        }
        Err(e) => return internal(e),
    };
    let f = EventFilter {
        account_id: Some(account),
        link_id: Some(LinkId(id)),
        limit: 10_000,
        ..Default::default()
    };
    match st.ledger.events(&f).await {
        Ok(ev) => Json(json!({
            "link": stored.link,
            "sequence": stored.sequence,
            "deleted_at": stored.deleted_at.map(crate::time::rfc3339_utc),
            "events": ev.unwrap_or_default().into_iter().map(|e| e.envelope).collect::<Vec<Value>>(),
        }))
        .into_response(),
        Err(e) => internal(e),
    }
}

async fn events(
    State(st): State<AdminState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let account_id = match account_param(&st, &q) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let limit = match int_param(&q, "limit", 100, 1000) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let event_type = match q.get("type").map(|t| t.parse::<EventType>()) {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => return error(StatusCode::BAD_REQUEST, "bad_type", e),
    };
    let f = EventFilter {
        after: q.get("after").cloned(),
        event_type,
        account_id,
        limit,
        ..Default::default()
    };
    if let Err(e) = st.ledger.make_durable().await {
        return internal(e);
    }
    match st.ledger.events(&f).await {
        Ok(Some(rows)) => {
            let next = rows
                .last()
                .map(|r| r.id.clone())
                .or_else(|| f.after.clone());
            Json(json!({
                "events": rows.into_iter().map(|r| r.envelope).collect::<Vec<Value>>(),
                "next_after": next,
            }))
            .into_response()
        }
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "unknown_cursor",
            "no event with the id given in `after`",
        ),
        Err(e) => internal(e),
    }
}

async fn deliveries(
    State(st): State<AdminState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let state = q.get("state").map(String::as_str);
    if let Some(s) = state
        && !matches!(s, "pending" | "delivered" | "dead" | "disabled")
    {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_state",
            "state must be pending, delivered, dead or disabled",
        );
    }
    let limit = match int_param(&q, "limit", 100, 1000) {
        Ok(l) => l,
        Err(r) => return r,
    };
    match st
        .ledger
        .list_deliveries(state, q.get("subscriber").map(String::as_str), limit)
        .await
    {
        Ok(rows) => Json(json!({"deliveries": rows})).into_response(),
        Err(e) => internal(e),
    }
}

async fn retry_delivery(State(st): State<AdminState>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_id",
            "delivery id must be an integer",
        );
    };
    match st.ledger.retry_delivery(id, st.clock.now()).await {
        Ok(true) => {
            st.wake.notify_one();
            (
                StatusCode::ACCEPTED,
                Json(json!({"id": id, "state": "pending"})),
            )
                .into_response()
        }
        Ok(false) => error(
            StatusCode::CONFLICT,
            "not_retryable",
            format!("delivery {id} does not exist or is not dead or disabled"),
        ),
        Err(e) => internal(e),
    }
}

async fn enable_subscriber(
    State(st): State<AdminState>,
    Path(name): Path<String>,
    _h: HeaderMap,
) -> Response {
    match st.ledger.enable_subscriber(&name, st.clock.now()).await {
        Ok(n) => {
            st.wake.notify_one();
            Json(json!({"subscriber": name, "requeued": n})).into_response()
        }
        Err(e) => internal(e),
    }
}
