//! The SingaPay HTTP client: token handling, requests, bounded in-process retries, classification.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use chrono::Utc;
use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::time::Instant;
use tracing::{debug, warn};
use url::Url;

use crate::types::AccountId;

use super::auth::{CachedToken, TokenCache, token_signature, usable_lifetime};
use super::envelope::{Envelope, envelope_error};
use super::error::SingapayError;

/// What a [`SingapayClient`] needs (from `[singapay]` in the config).
#[derive(Clone)]
pub struct ClientConfig {
    /// Host, e.g. `https://sandbox-payment-b2b.singapay.id`; paths start with `/api`.
    pub base_url: Url,
    /// `X-PARTNER-ID`: the dashboard's API key.
    pub partner_id: String,
    /// `X-CLIENT-ID`.
    pub client_id: String,
    /// The client secret (signs the token request; never sent).
    pub client_secret: SecretString,
    /// Timeout of one HTTP request.
    pub timeout: Duration,
    /// In-process retries of a transient failure (5xx, 429, timeouts) before the call fails.
    pub max_retries: usize,
    /// First backoff delay; doubles each retry, with jitter, capped at `max_backoff`.
    pub min_backoff: Duration,
    /// Largest backoff delay (a longer `Retry-After` is honoured up to this).
    pub max_backoff: Duration,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("base_url", &self.base_url.as_str())
            .field("partner_id", &self.partner_id)
            .field("client_id", &self.client_id)
            .field("client_secret", &"[REDACTED]")
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// One SingaPay credential (`[singapay]` or a `[[credentials]]` entry, DESIGN §16) with its own
/// token cache: a token is issued per `X-CLIENT-ID`, so merchants never share one.
#[derive(Debug)]
struct Credential {
    /// `default` for `[singapay]`, else the entry's `name` (logged, never secret).
    name: String,
    cfg: ClientConfig,
    token: TokenCache,
}

/// A SingaPay API client: one credential per account (each with its own token cache), one pool
/// of connections. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SingapayClient {
    http: reqwest::Client,
    /// The `[singapay]` credential: accounts that name none (and the payment methods when no
    /// account is given). `None` when every account names its own.
    default: Option<Arc<Credential>>,
    /// Accounts whose config names a `[[credentials]]` entry.
    by_account: Arc<HashMap<AccountId, Arc<Credential>>>,
    /// Timeout of one request (the first credential's; `singapay.timeout` is shared).
    timeout: Duration,
}

#[derive(Deserialize)]
struct TokenData {
    access_token: String,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    crate::time::parse_retry_after(headers.get(RETRY_AFTER)?.to_str().ok()?)
}

fn transport_error(e: reqwest::Error) -> SingapayError {
    SingapayError::Retryable {
        status: None,
        code: None,
        message: if e.is_timeout() {
            "request timed out".to_string()
        } else {
            // The cause chain says "connection refused", "reset by peer", …
            crate::body::transport_message(e)
        },
    }
}

/// Counts one request to SingaPay by route and status (`error` when no answer came) in
/// `singapay_sync_upstream_requests_total`, and classifies a transport failure.
fn counted(
    route: &'static str,
    resp: Result<reqwest::Response, reqwest::Error>,
) -> Result<reqwest::Response, SingapayError> {
    let status = match &resp {
        Ok(r) => r.status().as_str().to_string(),
        Err(_) => "error".to_string(),
    };
    metrics::counter!("singapay_sync_upstream_requests_total", "route" => route, "status" => status)
        .increment(1);
    resp.map_err(transport_error)
}

/// The most of one answer read into memory: the largest list page (100 links of ~1.5 KB) is
/// about 150 KB.
const MAX_ANSWER: usize = 8 * 1024 * 1024;

/// An answer's body as text, at most [`MAX_ANSWER`] bytes.
///
/// Errors: the transport failed (retryable), the body is longer or not UTF-8 (malformed).
async fn answer_text(resp: reqwest::Response) -> Result<String, SingapayError> {
    let (bytes, cut) = crate::body::read_limited(resp, MAX_ANSWER)
        .await
        .map_err(transport_error)?;
    if cut {
        return Err(SingapayError::Malformed(format!(
            "the answer is over {} MiB",
            MAX_ANSWER / (1024 * 1024)
        )));
    }
    String::from_utf8(bytes)
        .map_err(|e| SingapayError::Malformed(format!("the answer is not UTF-8: {e}")))
}

impl SingapayClient {
    /// A client with one credential for every account. Errors when the TLS stack cannot be
    /// initialised.
    pub fn new(cfg: ClientConfig) -> Result<Self, SingapayError> {
        Self::with_credentials(Some(cfg), Vec::new(), &[])
    }

    /// A client with a default credential (`[singapay]`; `None` when every account names its
    /// own) and named ones (`[[credentials]]`: `(name, config)`), `accounts` mapping each
    /// account that names a credential to its name. Tokens are cached per credential.
    ///
    /// Errors: [`SingapayError::Fatal`] when an account names a credential not in `named`, when
    /// no credential at all is given, or when the TLS stack cannot be initialised.
    pub fn with_credentials(
        default: Option<ClientConfig>,
        named: Vec<(String, ClientConfig)>,
        accounts: &[(AccountId, String)],
    ) -> Result<Self, SingapayError> {
        let fatal = |message: String| SingapayError::Fatal {
            status: 0,
            code: None,
            message,
        };
        let timeout = default
            .as_ref()
            .or_else(|| named.first().map(|(_, c)| c))
            .map(|c| c.timeout)
            .ok_or_else(|| fatal("no SingaPay credential is configured".into()))?;
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("singapay-sync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| fatal(format!("cannot build HTTP client: {e}")))?;
        let credential = |name: String, cfg: ClientConfig| {
            Arc::new(Credential {
                name,
                cfg,
                token: TokenCache::default(),
            })
        };
        let named: HashMap<String, Arc<Credential>> = named
            .into_iter()
            .map(|(n, c)| (n.clone(), credential(n, c)))
            .collect();
        let mut by_account = HashMap::new();
        for (account, name) in accounts {
            let cred = named.get(name).ok_or_else(|| {
                fatal(format!(
                    "account {account} names credential {name:?}, which is not configured"
                ))
            })?;
            by_account.insert(account.clone(), Arc::clone(cred));
        }
        Ok(Self {
            http,
            default: default.map(|c| credential("default".into(), c)),
            by_account: Arc::new(by_account),
            timeout,
        })
    }

    /// The timeout of one request (`singapay.timeout`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The credential `account`'s requests carry (for `None`: the default, else the named
    /// credential first by name, so that the choice does not depend on a map's order).
    ///
    /// Errors: [`SingapayError::Fatal`] for an account with no credential (not configured).
    fn credential(&self, account: Option<&AccountId>) -> Result<&Credential, SingapayError> {
        let found = match account {
            Some(a) => self.by_account.get(a).or(self.default.as_ref()),
            None => self
                .default
                .as_ref()
                .or_else(|| self.by_account.values().min_by(|a, b| a.name.cmp(&b.name))),
        };
        found.map(Arc::as_ref).ok_or_else(|| SingapayError::Fatal {
            status: 0,
            code: None,
            message: format!(
                "no SingaPay credential for account {}",
                account.map(AccountId::as_str).unwrap_or("(none)")
            ),
        })
    }

    fn url(cred: &Credential, path: &str) -> Result<Url, SingapayError> {
        cred.cfg
            .base_url
            .join(path)
            .map_err(|e| SingapayError::Fatal {
                status: 0,
                code: None,
                message: format!("bad URL {path}: {e}"),
            })
    }

    /// The name of the credential `account`'s requests carry (`default` for `[singapay]`).
    pub fn credential_name(&self, account: Option<&AccountId>) -> Option<&str> {
        self.credential(account).ok().map(|c| c.name.as_str())
    }

    async fn fetch_token(&self, cred: &Credential) -> Result<CachedToken, SingapayError> {
        let url = Self::url(cred, "/api/v1.1/access-token/b2b")?;
        let sig = token_signature(&cred.cfg.client_id, &cred.cfg.client_secret, Utc::now());
        let resp = self
            .http
            .post(url)
            .header("X-PARTNER-ID", &cred.cfg.partner_id)
            .header("X-CLIENT-ID", &cred.cfg.client_id)
            .header("X-Signature", sig)
            .header("Accept", "application/json")
            .json(&serde_json::json!({"grant_type": "client_credentials"}))
            .send()
            .await;
        let resp = counted("token", resp)?;
        let status = resp.status().as_u16();
        let ra = retry_after(resp.headers());
        let body = answer_text(resp).await?;
        let env = Envelope::parse(&body).map_err(|e| {
            if (200..300).contains(&status) {
                SingapayError::Malformed(format!("token answer: {e}"))
            } else {
                SingapayError::classify(status, None, truncate(&body), ra)
            }
        })?;
        if !(200..300).contains(&status) || !env.is_success() {
            let mut err = envelope_error(status, &env);
            if let SingapayError::RateLimited { retry_after, .. } = &mut err {
                *retry_after = ra;
            }
            // A 401 from the token endpoint means the credentials themselves are wrong: retrying
            // with a new token cannot help, so it is fatal rather than `Auth`.
            if let SingapayError::Auth {
                status,
                code,
                message,
            } = err
            {
                return Err(SingapayError::Fatal {
                    status,
                    code,
                    message: format!("token request refused: {message}"),
                });
            }
            return Err(err);
        }
        let data = env
            .data
            .ok_or_else(|| SingapayError::Malformed("token answer has no `data`".into()))?;
        let td: TokenData = serde_json::from_str(data.get())
            .map_err(|e| SingapayError::Malformed(format!("token answer: {e}")))?;
        let expires_in = td.expires_in.and_then(|v| match v {
            serde_json::Value::Number(n) => n.as_u64(),
            serde_json::Value::String(s) => s.trim().parse().ok(),
            _ => None,
        });
        debug!(target: "singapay", expires_in, credential = %cred.name, "singapay.token_fetched");
        Ok(CachedToken {
            token: SecretString::from(td.access_token),
            refresh_at: Instant::now()
                .checked_add(usable_lifetime(expires_in))
                .unwrap_or_else(Instant::now),
        })
    }

    async fn token(
        &self,
        cred: &Credential,
        stale: Option<&SecretString>,
    ) -> Result<SecretString, SingapayError> {
        cred.token
            .get_or_fetch(stale, || self.fetch_token(cred))
            .await
    }

    /// One authenticated GET: `(status, body)` of a 2xx, else the classified error. On 401/`SP013`
    /// the token is refreshed and the request sent once more.
    async fn get_once(
        &self,
        cred: &Credential,
        route: &'static str,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<(u16, String), SingapayError> {
        self.request_with(cred, reqwest::Method::GET, route, path, query, None)
            .await
    }

    /// One authenticated request (a JSON `body` for POST and PUT): `(status, body)` of a 2xx, else
    /// the classified error. On 401/`SP013` the token is refreshed and the request sent once
    /// more (a refused token means the request was not acted on). Carries `account`'s
    /// credential.
    pub(super) async fn request_once(
        &self,
        account: &AccountId,
        method: reqwest::Method,
        route: &'static str,
        path: &str,
        json: Option<&serde_json::Value>,
    ) -> Result<(u16, String), SingapayError> {
        let cred = self.credential(Some(account))?;
        self.request_with(cred, method, route, path, &[], json)
            .await
    }

    async fn request_with(
        &self,
        cred: &Credential,
        method: reqwest::Method,
        route: &'static str,
        path: &str,
        query: &[(&str, String)],
        json: Option<&serde_json::Value>,
    ) -> Result<(u16, String), SingapayError> {
        let mut stale: Option<SecretString> = None;
        for attempt in 0..2 {
            let token = self.token(cred, stale.as_ref()).await?;
            let mut req = self
                .http
                .request(method.clone(), Self::url(cred, path)?)
                .query(query)
                .header("Authorization", format!("Bearer {}", token.expose_secret()))
                .header("X-PARTNER-ID", &cred.cfg.partner_id)
                .header("Accept", HeaderValue::from_static("application/json"));
            if let Some(b) = json {
                req = req.json(b);
            }
            let resp = req.send().await;
            let resp = counted(route, resp)?;
            let status = resp.status().as_u16();
            let ra = retry_after(resp.headers());
            let body = answer_text(resp).await?;
            if (200..300).contains(&status) {
                // A 200 may still carry SP013 in a v2 envelope.
                if let Ok(env) = Envelope::parse(&body)
                    && !env.is_success()
                {
                    let err = envelope_error(status, &env);
                    if err.is_auth() && attempt == 0 {
                        warn!(target: "singapay", credential = %cred.name, "singapay.token_refused");
                        stale = Some(token);
                        continue;
                    }
                    return Err(err);
                }
                return Ok((status, body));
            }
            let (mut err, refusal) = match Envelope::parse(&body) {
                Ok(env) => {
                    let mut e = envelope_error(status, &env);
                    if let SingapayError::RateLimited { retry_after, .. } = &mut e {
                        *retry_after = ra;
                    }
                    (e, env.is_refusal())
                }
                Err(_) => (
                    SingapayError::classify(status, None, truncate(&body), ra),
                    false,
                ),
            };
            // "Not found" counts only when SingaPay itself says so: a proxy's HTML 404 or an
            // empty body must never make a link look deleted.
            if matches!(err, SingapayError::NotFound { .. }) && !refusal {
                err = SingapayError::Retryable {
                    status: Some(status),
                    code: None,
                    message: format!(
                        "HTTP {status} without SingaPay's JSON answer (a proxy or gateway?): {}",
                        truncate(&body)
                    ),
                };
            }
            if err.is_auth() && attempt == 0 {
                warn!(target: "singapay", status, credential = %cred.name, "singapay.token_refused");
                stale = Some(token);
                continue;
            }
            return Err(err);
        }
        Err(SingapayError::Auth {
            status: 401,
            code: None,
            message: "a freshly issued token was refused too".into(),
        })
    }

    /// [`Self::get_once`] with bounded exponential backoff (backon, jittered) on transient errors;
    /// a `Retry-After` longer than the computed delay is honoured up to `max_backoff`. Carries
    /// `account`'s credential (the default one for `None`).
    pub(super) async fn get(
        &self,
        account: Option<&AccountId>,
        route: &'static str,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<(u16, String), SingapayError> {
        let cred = self.credential(account)?;
        let policy = ExponentialBuilder::default()
            .with_min_delay(cred.cfg.min_backoff)
            .with_max_delay(cred.cfg.max_backoff)
            .with_max_times(cred.cfg.max_retries)
            .with_jitter();
        let max = cred.cfg.max_backoff;
        (|| self.get_once(cred, route, path, query))
            .retry(policy)
            .when(SingapayError::is_retryable)
            .adjust(move |e, dur| match e {
                SingapayError::RateLimited {
                    retry_after: Some(ra),
                    ..
                } => dur.map(|d| d.max((*ra).min(max))),
                _ => dur,
            })
            .notify(|e, dur| {
                warn!(target: "singapay", error = %e, retry_in_ms = dur.as_millis() as u64, path, "singapay.retry");
            })
            .await
    }

    /// Fetches a fresh token for every credential (used by `check-config --online`):
    /// `(credential name, result)`, the default first, then the named ones by name.
    pub(crate) async fn check_credentials(&self) -> Vec<(String, Result<(), SingapayError>)> {
        let mut creds: Vec<&Arc<Credential>> = self.by_account.values().collect();
        creds.sort_by(|a, b| a.name.cmp(&b.name));
        creds.dedup_by(|a, b| Arc::ptr_eq(a, b));
        let mut out = Vec::new();
        for cred in self.default.iter().chain(creds) {
            cred.token.clear().await;
            let r = self.token(cred, None).await.map(|_| ());
            out.push((cred.name.clone(), r));
        }
        out
    }
}

fn truncate(body: &str) -> String {
    let t = body.trim();
    if t.chars().count() > 300 {
        format!("{}…", t.chars().take(300).collect::<String>())
    } else if t.is_empty() {
        "empty body".into()
    } else {
        t.to_string()
    }
}
