//! The admin HTTP API (axum). Every answer is JSON; every error is `{"error": {"code",
//! "message"}}` ([`ApiError`]). All routes but `/healthz`, `/readyz` and `/metrics` need
//! `Authorization: Bearer <http.admin_token>`. [`status`] has the probes, [`routes`] the rest.

mod error;
mod routes;
mod status;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

pub use error::{ApiError, ApiPath, ApiQuery};

use crate::config::AccountConfig;
use crate::ledger::Ledger;
use crate::sync::Syncer;
use crate::time::Clock;

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

/// The router.
pub fn router(state: AdminState) -> Router {
    let protected = Router::new()
        .route("/resync", post(routes::resync))
        .route("/sync-runs/{id}", get(routes::sync_run))
        .route("/links", get(routes::links))
        .route("/links/{account_id}/{id}", get(routes::link))
        .route("/events", get(routes::events))
        .route("/deliveries", get(routes::deliveries))
        .route("/deliveries/{id}/retry", post(routes::retry_delivery))
        .route(
            "/subscribers/{name}/enable",
            post(routes::enable_subscriber),
        )
        .layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(status::healthz))
        .route("/readyz", get(status::readyz))
        .route("/metrics", get(status::metrics_text))
        .merge(protected)
        .fallback(|| async { ApiError::not_found("not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route",
            )
        })
        .with_state(state)
}

impl AdminState {
    /// Whether `headers` carry `Authorization: Bearer <http.admin_token>` (the scheme is
    /// case-insensitive, RFC 9110 §11.1).
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .unwrap_or("");
        // Compare digests: equal-length inputs, no early exit on the secret's bytes.
        !given.is_empty()
            && Sha256::digest(given.as_bytes())
                == Sha256::digest(self.admin_token.expose_secret().as_bytes())
    }
}

/// Refuses requests without the admin token (logged, without any token), and logs every admin
/// write with its outcome.
async fn require_token(State(st): State<AdminState>, req: Request, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    if !st.authorized(req.headers()) {
        tracing::warn!(%method, path, "http.unauthorized");
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong bearer token (http.admin_token)",
        )
        .into_response();
    }
    let response = next.run(req).await;
    if method != Method::GET && method != Method::HEAD {
        tracing::info!(%method, path, status = response.status().as_u16(), "http.admin_write");
    }
    response
}
