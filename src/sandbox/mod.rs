//! The SingaPay sandbox: an in-memory stand-in for SingaPay's merchant API, faithful to SingaPay's
//! docs pages and what LV observed (tags: docs/ARCHITECTURE.md, "Sources"): token endpoint
//! verifying the HMAC-SHA512 signature, list with `page`/`per_page` and the list example's
//! `pagination` block (seed 004), show, create/update with the docs' validation (seeds 000, 001,
//! 003), delete (403 with history), payment methods, histories, and the JSON quirks
//! (amounts as `"20000.00"`, item quantities as strings, `+07:00` times).
//!
//! The `/_sandbox/` control plane acts as customers and as the clock: pick a method (a pending
//! history row), pay, settle, fail or expire an attempt, close, reopen, edit, add or delete a link,
//! advance time, expire tokens, inject faults, read the request log, and have SingaPay's own
//! webhooks posted (signed inquiry, transaction and expiration bodies) to a notify URL.

// Handlers return `Result<_, Response>`: the error is the HTTP answer itself, built once and
// handed straight to axum, so boxing it would only add an allocation.
#![allow(clippy::result_large_err)]

mod api;
mod control;
mod daemon_config;
mod faults;
mod history;
mod seed;
mod state;
mod webhooks;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::middleware;
use axum::response::Response;
use axum::routing::{get, post};
use chrono::Utc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use daemon_config::{
    AccountEntry, CredentialEntry, DaemonConfig, EmailEntry, InboundEntry, WebhookEntry, strings,
};
pub use seed::SEED_ACCOUNT;
use state::SandboxState;
pub use state::{Fault, LoggedRequest, PostedWebhook, SandboxCredential, WebhookSettings};

/// Sandbox credentials (what a config pointing at the sandbox uses).
pub const SANDBOX_PARTNER_ID: &str = "sandbox-partner-id";
/// Sandbox `client_id` (the token signature's test vector in `singapay::auth`).
pub const SANDBOX_CLIENT_ID: &str = "sandbox-client-id";
/// Sandbox `client_secret` (the token signature's test vector in `singapay::auth`).
pub const SANDBOX_CLIENT_SECRET: &str = "sandbox-client-secret";

/// Sandbox settings.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// Links seeded for [`SEED_ACCOUNT`] (default 103).
    pub links: usize,
    /// `expires_in` of issued tokens, seconds (default 216,000 as observed).
    pub token_ttl_secs: i64,
    /// Extra generated history rows for [`SEED_ACCOUNT`] (benchmarks; default 0), beyond the
    /// seeded ones (one paid, settled row per payment a seeded link counts).
    pub history: usize,
    /// How many of the generated rows were created in the last 6 days (the rest over the year
    /// before).
    pub recent_history: usize,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        Self {
            links: 103,
            token_ttl_secs: 216_000,
            history: 0,
            recent_history: 0,
        }
    }
}

/// The sandbox's shared state. Clone to share.
#[derive(Debug, Clone)]
pub struct Sandbox {
    st: Arc<Mutex<SandboxState>>,
    /// Posts SingaPay's webhooks.
    http: reqwest::Client,
}

/// How a sandbox handler answers: the answer, or an error answer.
type ApiResult = Result<Response, Response>;

impl Sandbox {
    /// A sandbox seeded per `opts`.
    pub fn new(opts: SandboxOptions) -> Self {
        let now = Utc::now();
        let links = seed::seed_links(opts.links, now);
        let max_id = links.iter().map(|l| l.id).max().unwrap_or(0);
        let mut rows = history::seed_history(&links, 1);
        let next = rows.len() as i64 + 1;
        rows.extend(history::generated_history(
            &links,
            opts.history,
            opts.recent_history.min(opts.history),
            now,
            next,
        ));
        let next_history_id = rows.len() as i64 + 1;
        let mut histories = BTreeMap::new();
        histories.insert(SEED_ACCOUNT.to_string(), rows);
        let mut accounts = BTreeMap::new();
        accounts.insert(
            SEED_ACCOUNT.to_string(),
            links.into_iter().map(|l| (l.id, l)).collect(),
        );
        Self {
            st: Arc::new(Mutex::new(SandboxState {
                accounts,
                histories,
                next_link_id: max_id + 1,
                next_history_id,
                offset: chrono::Duration::zero(),
                tokens: HashMap::new(),
                credentials: vec![SandboxCredential {
                    partner_id: SANDBOX_PARTNER_ID.into(),
                    client_id: SANDBOX_CLIENT_ID.into(),
                    client_secret: SANDBOX_CLIENT_SECRET.into(),
                    accounts: Vec::new(),
                }],
                token_ttl: opts.token_ttl_secs,
                faults: Vec::new(),
                log: Vec::new(),
                payment_host: "https://sandbox-paymentlink.singapay.id".into(),
                webhooks: None,
                posted: Vec::new(),
                id_index: HashMap::new(),
            })),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SandboxState> {
        // A panic while holding the lock would be a sandbox bug; keep serving the state anyway.
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// Serves the sandbox on `listener` until `shutdown`.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let app = self.router();
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
    }

    /// Binds `addr` and serves in the background; returns the bound address.
    pub async fn spawn(
        self,
        addr: SocketAddr,
        shutdown: CancellationToken,
    ) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        tokio::spawn(async move {
            if let Err(e) = self.serve(listener, shutdown).await {
                tracing::error!(error = %e, "sandbox.stopped");
            }
        });
        Ok(bound)
    }

    /// The router: SingaPay's API plus `/_sandbox/`.
    pub(crate) fn router(self) -> Router {
        let api = Router::new()
            .route("/api/v1.1/access-token/b2b", post(api::token))
            .route(
                "/api/v1.0/payment-link-manage/payment-methods",
                get(api::methods),
            )
            .route(
                "/api/v1.0/payment-link-manage/{account}",
                get(api::list).post(api::create),
            )
            .route(
                "/api/v1.0/payment-link-manage/{account}/{id}",
                get(api::show).put(api::update).delete(api::delete),
            )
            .route(
                "/api/v1.0/payment-link-histories/{account}",
                get(history::list),
            )
            .route(
                "/api/v1.0/payment-link-histories/{account}/{id}",
                get(history::show),
            )
            .layer(middleware::from_fn_with_state(
                self.clone(),
                faults::faults_and_log,
            ));
        let control = Router::new()
            .route("/_sandbox/clock", get(control::clock))
            .route("/_sandbox/clock/advance", post(control::advance))
            .route(
                "/_sandbox/accounts/{account}",
                post(control::ctl_add_account),
            )
            .route("/_sandbox/accounts/{account}/links", post(control::ctl_add))
            .route(
                "/_sandbox/accounts/{account}/links/{id}",
                axum::routing::patch(control::ctl_edit).delete(control::ctl_delete),
            )
            .route(
                "/_sandbox/accounts/{account}/links/{id}/pay",
                post(control::ctl_pay),
            )
            .route(
                "/_sandbox/accounts/{account}/links/{id}/attempts",
                post(control::ctl_attempt),
            )
            .route(
                "/_sandbox/accounts/{account}/histories/{hid}/{step}",
                post(control::ctl_history_step),
            )
            .route(
                "/_sandbox/accounts/{account}/links/{id}/close",
                post(control::ctl_close),
            )
            .route(
                "/_sandbox/accounts/{account}/links/{id}/reopen",
                post(control::ctl_reopen),
            )
            .route(
                "/_sandbox/faults",
                post(control::ctl_fault).delete(control::ctl_clear_faults),
            )
            .route("/_sandbox/tokens/expire", post(control::ctl_expire_tokens))
            .route(
                "/_sandbox/credentials",
                get(control::ctl_credentials).post(control::ctl_add_credential),
            )
            .route(
                "/_sandbox/webhooks",
                get(webhooks::ctl_get)
                    .post(webhooks::ctl_set)
                    .delete(webhooks::ctl_clear),
            )
            .route(
                "/_sandbox/requests",
                get(control::ctl_log).delete(control::ctl_clear_log),
            );
        // Faults may carry large bodies (an answer over the client's 8 MiB limit).
        api.merge(control)
            .layer(axum::extract::DefaultBodyLimit::max(32 * 1024 * 1024))
            .with_state(self)
    }
}
