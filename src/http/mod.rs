//! The admin HTTP API (axum). Every answer is JSON; every error is `{"error": {"code",
//! "message"}}` ([`ApiError`]). All routes but `/healthz`, `/readyz` and `/metrics` need
//! `Authorization: Bearer <http.admin_token>`. [`status`] has the probes, [`routes`] the rest.

mod error;
mod manage;
mod payments;
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
    /// Link management.
    pub manager: Arc<crate::manage::Manager>,
}

/// The router.
pub fn router(state: AdminState) -> Router {
    let protected = Router::new()
        .route("/resync", post(routes::resync))
        .route("/sync-runs/{id}", get(routes::sync_run))
        .route("/links", get(routes::links))
        .route("/links/{account_id}", post(manage::create))
        .route(
            "/links/{account_id}/{id}",
            get(routes::link).put(manage::update).delete(manage::delete),
        )
        .route("/payment-methods", get(manage::payment_methods))
        .route("/events", get(routes::events))
        .route("/payments", get(payments::payments))
        .route("/deliveries", get(routes::deliveries))
        .route("/inbound", get(routes::inbound))
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

/// The listener's limits (`[http]`): how long a client may take to send its headers, how long a
/// request may run, how many run at once, how large a body may be.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Header-read timeout (hyper): a client that trickles its headers is disconnected.
    pub header_timeout: std::time::Duration,
    /// Request timeout (tower-http): answered 408.
    pub request_timeout: std::time::Duration,
    /// Requests handled at once (tower); more wait.
    pub concurrency: usize,
    /// Largest request body, bytes (tower-http): answered 413.
    pub body_limit: usize,
}

/// Serves `router` on `listener` with `limits` until `stop`, then waits (at most 10 s) for the
/// requests in flight. Connections are served by hyper directly (axum's `serve` has no
/// header-read timeout); a failed `accept` (e.g. too many open files) is logged and retried.
///
/// Errors: none yet (the signature leaves room for listener errors).
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: Limits,
    stop: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceBuilder;

    // Layers wrap what is above them: the JSON mapper is outermost, so it sees the 408 and 413
    // that the limit layers answer.
    let app = router
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            limits.body_limit,
        ))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
        .layer(middleware::map_response(json_limit_errors));
    let service = ServiceBuilder::new()
        .layer(tower::limit::ConcurrencyLimitLayer::new(limits.concurrency))
        .service(app);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let graceful = GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "http.accept_failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let conn = http.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(service.clone()),
        );
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "http.connection_ended");
            }
        });
    }
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(std::time::Duration::from_secs(10)) => {
            tracing::warn!("http.shutdown_timed_out: connections still open after 10 s");
        }
    }
    Ok(())
}

/// Gives the limit layers' bare answers (408, 413) the API's JSON error body.
async fn json_limit_errors(response: Response) -> Response {
    match response.status() {
        StatusCode::REQUEST_TIMEOUT => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "the request took longer than http.request_timeout",
        )
        .into_response(),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "the request body is over the limit",
        )
        .into_response(),
        _ => response,
    }
}
