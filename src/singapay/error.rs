//! Classified SingaPay errors: callers decide on retry, token refresh or stop from the variant.

use std::time::Duration;

/// A failed SingaPay call, classified for the caller: retry, refresh the token, or stop.
///
/// SingaPay's own `code` (an `SPxxx` response code or the v1 envelope's numeric code) and
/// `message` are carried through so that the operator sees what SingaPay said
/// (SP-CODES; tags: docs/ARCHITECTURE.md, "Sources").
#[derive(Debug, Clone, thiserror::Error)]
pub enum SingapayError {
    /// A transient failure worth retrying: 5xx, `SP005` timeout, a timeout or a dropped connection.
    #[error("SingaPay is temporarily unavailable{}: {message}", fmt_status(*status, code))]
    Retryable {
        /// HTTP status, if a response arrived.
        status: Option<u16>,
        /// SingaPay's code, if any.
        code: Option<String>,
        /// What SingaPay or the transport said.
        message: String,
    },
    /// HTTP 429: wait `retry_after` (from the `Retry-After` header) before the next request.
    #[error("SingaPay rate-limited the request{}: {message}", retry_after.map(|d| format!(" (retry after {}s)", d.as_secs())).unwrap_or_default())]
    RateLimited {
        /// The server's `Retry-After`, seconds or HTTP date, as a duration.
        retry_after: Option<Duration>,
        /// What SingaPay said.
        message: String,
    },
    /// HTTP 401 or `SP013`: the access token is invalid or expired (or the credentials are wrong
    /// when it comes from the token endpoint itself).
    #[error("SingaPay refused the credentials{}: {message}", fmt_status(Some(*status), code))]
    Auth {
        /// HTTP status.
        status: u16,
        /// SingaPay's code, if any.
        code: Option<String>,
        /// What SingaPay said.
        message: String,
    },
    /// HTTP 404, `SP014` or `SP009`: the resource does not exist.
    #[error("SingaPay has no such resource{}: {message}", fmt_status(Some(*status), code))]
    NotFound {
        /// HTTP status.
        status: u16,
        /// SingaPay's code, if any.
        code: Option<String>,
        /// What SingaPay said.
        message: String,
    },
    /// Any other refusal (403 "IP not registered", `SP017`, `SP403`, 4xx validation): retrying
    /// will not help; the pass stops with this message.
    #[error("SingaPay rejected the request{}: {message}", fmt_status(Some(*status), code))]
    Fatal {
        /// HTTP status.
        status: u16,
        /// SingaPay's code, if any.
        code: Option<String>,
        /// What SingaPay said.
        message: String,
    },
    /// A success status whose body cannot be read as the documented shape.
    #[error("SingaPay sent a response that cannot be decoded: {0}")]
    Malformed(String),
    /// HTTP 422 with SingaPay's field errors (`error.errors`, seeds 000/001): the request was
    /// refused as invalid; nothing was written.
    #[error("SingaPay refused the request as invalid: {message}")]
    Invalid {
        /// SingaPay's message.
        message: String,
        /// `{"field": ["why", …]}` as SingaPay sent it.
        fields: serde_json::Value,
    },
}

fn fmt_status(status: Option<u16>, code: &Option<String>) -> String {
    match (status, code) {
        (Some(s), Some(c)) => format!(" (HTTP {s}, {c})"),
        (Some(s), None) => format!(" (HTTP {s})"),
        (None, Some(c)) => format!(" ({c})"),
        (None, None) => String::new(),
    }
}

impl SingapayError {
    /// Whether an in-process retry may succeed (transient or rate-limited).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable { .. } | Self::RateLimited { .. })
    }

    /// Whether the token should be dropped and fetched again (401 / `SP013`).
    pub fn is_auth(&self) -> bool {
        matches!(self, Self::Auth { .. })
    }

    /// Classifies a non-success answer from its HTTP status, SingaPay code, message and
    /// `Retry-After`. Rules: SP-CODES (`SP005` timeout, `SP009`/`SP014` not found, `SP013` token)
    /// and back-off on 429 and 5xx.
    pub fn classify(
        status: u16,
        code: Option<String>,
        message: String,
        retry_after: Option<Duration>,
    ) -> Self {
        let c = code.as_deref().unwrap_or("");
        if status == 429 {
            return Self::RateLimited {
                retry_after,
                message,
            };
        }
        if status == 401 || c == "SP013" {
            return Self::Auth {
                status,
                code,
                message,
            };
        }
        if status == 404 || c == "SP014" || c == "SP009" {
            return Self::NotFound {
                status,
                code,
                message,
            };
        }
        if matches!(status, 500 | 502 | 503 | 504) || c == "SP005" {
            return Self::Retryable {
                status: Some(status),
                code,
                message,
            };
        }
        Self::Fatal {
            status,
            code,
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_follows_status_and_sp_codes() {
        assert!(SingapayError::classify(503, None, "x".into(), None).is_retryable());
        assert!(matches!(
            SingapayError::classify(429, None, "x".into(), Some(Duration::from_secs(7))),
            SingapayError::RateLimited { retry_after: Some(d), .. } if d.as_secs() == 7
        ));
        assert!(SingapayError::classify(401, None, "x".into(), None).is_auth());
        assert!(SingapayError::classify(200, Some("SP013".into()), "x".into(), None).is_auth());
        assert!(matches!(
            SingapayError::classify(
                403,
                None,
                "Your IP address (1.2.3.4) is not registered".into(),
                None
            ),
            SingapayError::Fatal { status: 403, .. }
        ));
        assert!(matches!(
            SingapayError::classify(404, None, "gone".into(), None),
            SingapayError::NotFound { .. }
        ));
        let e = SingapayError::classify(403, Some("SP017".into()), "Unauthorized IP".into(), None);
        assert_eq!(
            e.to_string(),
            "SingaPay rejected the request (HTTP 403, SP017): Unauthorized IP"
        );
    }
}
