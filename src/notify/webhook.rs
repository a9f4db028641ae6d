//! Sending one signed callback: a POST with the Standard Webhooks headers
//! ([`crate::standard_webhooks`] signs), classified for the retry schedule.

use std::time::{Duration, Instant};

use super::retry::FailureKind;
use crate::standard_webhooks::{WebhookSecret, sign};

/// The result of one POST.
#[derive(Debug, Clone, PartialEq)]
pub struct SendResult {
    /// HTTP status, if an answer came.
    pub status: Option<u16>,
    /// How long it took.
    pub duration: Duration,
    /// `None` on 2xx; else what went wrong (with the start of the response body).
    pub failure: Option<(FailureKind, String)>,
    /// The receiver answered 410 Gone: disable the subscriber.
    pub gone: bool,
}

const BODY_KEEP: usize = 512;

/// POSTs a signed event to `url` (`body` is moved into the request, not copied). Any 2xx is success;
/// redirects are not followed (a 3xx is a failure); the client's timeout cuts a receiver that
/// never answers.
pub async fn send(
    http: &reqwest::Client,
    url: &reqwest::Url,
    secret: &WebhookSecret,
    event_id: &str,
    timestamp: i64,
    body: String,
) -> SendResult {
    let started = Instant::now();
    let signature = sign(secret, event_id, timestamp, body.as_bytes());
    let resp = http
        .post(url.clone())
        .header("content-type", "application/json")
        .header("webhook-id", event_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await;
    match resp {
        Err(e) => {
            let kind = if e.is_timeout() {
                FailureKind::Timeout
            } else {
                FailureKind::Other(None)
            };
            let msg = crate::body::transport_message(e);
            SendResult {
                status: None,
                duration: started.elapsed(),
                failure: Some((kind, msg)),
                gone: false,
            }
        }
        Ok(r) => {
            let status = r.status().as_u16();
            if r.status().is_success() {
                return SendResult {
                    status: Some(status),
                    duration: started.elapsed(),
                    failure: None,
                    gone: false,
                };
            }
            let retry_after = r
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(crate::time::parse_retry_after);
            let location = r
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            // A receiver's error page is read up to 64 KiB; the first 512 characters are kept.
            let text = match crate::body::read_limited(r, 64 * 1024).await {
                Ok((bytes, _)) => String::from_utf8_lossy(&bytes).into_owned(),
                Err(_) => String::new(),
            };
            let mut snippet: String = text.chars().take(BODY_KEEP).collect();
            if let Some(loc) = location {
                snippet = format!("redirect to {loc} not followed; {snippet}");
            }
            let kind = if status == 429 {
                FailureKind::RateLimited(retry_after)
            } else {
                FailureKind::Other(retry_after)
            };
            SendResult {
                status: Some(status),
                duration: started.elapsed(),
                failure: Some((kind, format!("HTTP {status}: {snippet}"))),
                gone: status == 410,
            }
        }
    }
}
