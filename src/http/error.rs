//! The admin API's one error type and the extractors whose rejections are answered with it, so
//! that every error, a malformed path or query included, is `{"error": {"code", "message"}}`.

use axum::Json;
use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::telemetry::error_chain;

/// An error answer: an HTTP status, a stable machine-readable `code` and a message for people.
/// Internal errors are logged with their cause chain and answered without internals.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// More members of the `error` object (e.g. `fields` of an invalid request).
    details: serde_json::Map<String, serde_json::Value>,
    /// More members beside `error` (e.g. the existing `link` of a duplicate).
    extra: serde_json::Map<String, serde_json::Value>,
}

impl ApiError {
    /// An answer with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: serde_json::Map::new(),
            extra: serde_json::Map::new(),
        }
    }

    /// The status and the JSON body this error answers with (the CLI prints the same).
    pub fn parts(self) -> (u16, serde_json::Value) {
        let status = self.status.as_u16();
        let mut error = serde_json::Map::new();
        error.insert("code".into(), json!(self.code));
        error.insert("message".into(), json!(self.message));
        error.extend(self.details);
        let mut body = serde_json::Map::new();
        body.insert("error".into(), serde_json::Value::Object(error));
        body.extend(self.extra);
        (status, serde_json::Value::Object(body))
    }

    /// Adds `key` to the `error` object.
    pub fn with_detail(mut self, key: &str, value: serde_json::Value) -> Self {
        self.details.insert(key.into(), value);
        self
    }

    /// Adds `key` beside the `error` object.
    pub fn with_extra(mut self, key: &str, value: serde_json::Value) -> Self {
        self.extra.insert(key.into(), value);
        self
    }

    /// 400 with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404 with `code`.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// 500 `internal`: logs `e` with its cause chain; the answer says only where to look.
    pub fn internal(e: &(dyn std::error::Error + 'static)) -> Self {
        tracing::error!(error = %error_chain(e), "http.internal_error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error (the daemon's log has the cause)",
        )
    }

    /// 503 `ledger_unavailable` for the unauthenticated probes: logged, answered without detail.
    pub fn unavailable(e: &(dyn std::error::Error + 'static)) -> Self {
        tracing::error!(error = %error_chain(e), "http.ledger_unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ledger_unavailable",
            "the ledger does not answer",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        let (_, body) = self.parts();
        let mut r = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        r
    }
}

impl From<crate::ledger::LedgerError> for ApiError {
    fn from(e: crate::ledger::LedgerError) -> Self {
        Self::internal(&e)
    }
}

impl From<crate::manage::ManageError> for ApiError {
    fn from(e: crate::manage::ManageError) -> Self {
        use crate::manage::ManageError as M;
        let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
        match e {
            M::Invalid(fields) => ApiError::new(
                unprocessable,
                "invalid_request",
                "the request is invalid: see fields",
            )
            .with_detail("fields", json!(fields)),
            M::Refused { message, fields } => ApiError::new(
                unprocessable,
                "invalid_request",
                format!("SingaPay refused the request: {message}"),
            )
            .with_detail("fields", fields),
            M::Duplicate(link) => ApiError::new(
                StatusCode::CONFLICT,
                "duplicate_reff_no",
                "the account already has a link with this reff_no",
            )
            .with_extra("link", *link),
            M::InProgress => ApiError::new(
                StatusCode::CONFLICT,
                "create_in_progress",
                "another create of this reff_no is in flight; try again in a few seconds",
            ),
            M::KeyReused => ApiError::new(
                unprocessable,
                "idempotency_key_reused",
                "this Idempotency-Key was used with another body",
            ),
            M::HasPayments => ApiError::new(
                StatusCode::CONFLICT,
                "link_has_payments",
                "the link has payments; SingaPay does not delete those (close it instead)",
            ),
            M::NotFound => ApiError::not_found("not_found", "no such link"),
            M::Upstream(m) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                format!("SingaPay failed, no link was changed: {m}"),
            ),
            M::Ledger(e) => Self::internal(&e),
        }
    }
}

impl From<crate::sync::SyncError> for ApiError {
    fn from(e: crate::sync::SyncError) -> Self {
        Self::internal(&e)
    }
}

/// `axum::extract::Path`, rejected with `400 bad_id`.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(Self(v)),
            Err(r) => Err(ApiError::bad_request("bad_id", r.body_text())),
        }
    }
}

/// `axum::extract::Query`, rejected with `400 bad_parameter`.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(Self(v)),
            Err(r) => Err(ApiError::bad_request("bad_parameter", r.body_text())),
        }
    }
}
