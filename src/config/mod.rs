//! Typed, layered, validated configuration (`config/example.toml` documents every key and
//! default).
//!
//! Sources, later wins: the TOML file, then `SINGAPAY_SYNC__<SECTION>__<KEY>` environment
//! variables. Every secret can also be given as `<key>_file` (a path whose contents, trimmed, are
//! the secret: systemd `LoadCredential=`). `raw` is the file as deserialised (and the unknown-key
//! check), `validate` checks it section by section; every problem is reported at once and the CLI
//! exits 2 with them.

mod credentials;
mod fields;
mod inbound;
mod raw;
#[cfg(test)]
mod tests;
mod validate;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Toml};
use lettre::message::Mailbox;
use secrecy::SecretString;
use url::Url;

pub use credentials::CredentialConfig;
pub use inbound::{DEFAULT_INBOUND_LISTEN, DEFAULT_INBOUND_PATH, InboundConfig};

use crate::singapay::ClientConfig;
use crate::standard_webhooks::WebhookSecret;
use crate::telemetry::LogFormat;
use crate::types::{AccountId, EventType};

/// Default config path when neither `--config` nor `$SINGAPAY_SYNC_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/singapay-sync/config.toml";
/// Default ledger path.
pub const DEFAULT_LEDGER_PATH: &str = "/var/lib/singapay-sync/ledger.db";
/// Default SingaPay host (sandbox).
pub const DEFAULT_BASE_URL: &str = "https://sandbox-payment-b2b.singapay.id";
/// Default schedule: every 5 minutes, on the minute.
pub const DEFAULT_SCHEDULE: &str = "0 */5 * * * *";
/// Default admin listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";
/// Default `delivery.retry_schedule`, seconds: 5s, 5m, 30m, 2h, 5h, 10h, 10h (Svix's schedule,
/// <https://docs.svix.com/retries>): 8 attempts over about 27.6 hours, then `dead`.
pub const DEFAULT_RETRY_SCHEDULE: [u64; 7] = [5, 300, 1800, 7200, 18_000, 36_000, 36_000];

/// `[singapay]`: the settings every credential shares, and the default credential (DESIGN §16).
#[derive(Debug, Clone)]
pub struct SingapayConfig {
    /// API host (also the default of `credentials[].base_url`).
    pub base_url: Url,
    /// `X-PARTNER-ID` of the default credential; empty when every account names a
    /// `[[credentials]]` entry and `[singapay]` gives none ([`SingapayConfig::has_credential`]).
    pub partner_id: String,
    /// `X-CLIENT-ID` of the default credential (empty likewise).
    pub client_id: String,
    /// Client secret of the default credential (empty likewise).
    pub client_secret: SecretString,
    /// Per-request timeout (default 30 s).
    pub timeout: Duration,
    /// Links per page (default 100, SingaPay's cap).
    pub per_page: u64,
    /// In-process retries of transient failures per request (default 3).
    pub max_retries: usize,
    /// List pages fetched at once after page 1 (default 4).
    pub concurrency: usize,
}

impl SingapayConfig {
    /// Whether `[singapay]` holds a credential (it may not when every account names its own).
    pub fn has_credential(&self) -> bool {
        !self.partner_id.is_empty()
    }
}

/// `[ledger]`.
#[derive(Debug, Clone)]
pub struct LedgerConfig {
    /// The SQLite file: from `ledger.url` (`sqlite:///path`, or `url_file`) or the older
    /// `ledger.path` (default `/var/lib/singapay-sync/ledger.db`). Unused when `postgres` is set.
    pub path: PathBuf,
    /// A PostgreSQL ledger's URL (`ledger.url = "postgres://user@host/db"`, DESIGN §16); kept
    /// secret (it may hold a password).
    pub postgres: Option<secrecy::SecretString>,
    /// How long delivered deliveries, their attempts and finished sync runs without events are
    /// kept (default 180 days).
    pub retention: Duration,
    /// PostgreSQL ledger only: how long a claim on a delivery (an instance sending it) holds
    /// before the other instances take it over (`ledger.lease`, default 5 minutes; above the
    /// longest batch a dispatcher sends). A killed instance's deliveries are sent again by another
    /// after at most this long.
    pub lease: Duration,
    /// How long events (the audit trail) are kept, with their deliveries once none is pending;
    /// `None` (the default) keeps them forever.
    pub event_retention: Option<Duration>,
}

/// `sync.max_deletions`: how many links one pass may find missing from a complete list before it
/// holds its deletions for a human to confirm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeletionLimit {
    /// 20 links or 2% of the account's live links, whichever is larger.
    Default,
    /// At most this many links (`max_deletions = 50`).
    Links(u64),
    /// At most this share of the live links, in percent (`max_deletions = "5%"`).
    Percent(u64),
}

impl DeletionLimit {
    /// The most deletions one pass may make in an account with `live` live links.
    pub fn allowed(self, live: u64) -> u64 {
        let share = |p: u64| live.saturating_mul(p).div_ceil(100);
        match self {
            DeletionLimit::Default => share(2).max(20),
            DeletionLimit::Links(n) => n,
            DeletionLimit::Percent(p) => share(p),
        }
    }
}

/// `[sync]`.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// Default cron schedule (6 fields, seconds first, UTC).
    pub schedule: String,
    /// Emit `payment_link.created` for baseline links.
    pub notify_on_baseline: bool,
    /// Deletions one pass may make before it holds them.
    pub max_deletions: DeletionLimit,
    /// How far back (by `created_at`) a pass re-reads Payment Link History every time (default
    /// 7 days, DESIGN §13): rows in it are compared each pass; older ones only until a page of
    /// them is unchanged.
    pub history_window: Duration,
}

/// `[[accounts]]`.
#[derive(Debug, Clone)]
pub struct AccountConfig {
    /// SingaPay account ULID.
    pub id: AccountId,
    /// Display name.
    pub name: Option<String>,
    /// Effective schedule (the account's own or `sync.schedule`).
    pub schedule: String,
    /// The `[[credentials]]` entry its requests carry (`None`: `[singapay]`'s).
    pub credential: Option<String>,
}

/// `[http]`.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Listen address (default `127.0.0.1:8787`).
    pub listen: SocketAddr,
    /// Bearer token of the admin API.
    pub admin_token: SecretString,
    /// How long a client may take to send a request's headers (default 10 s).
    pub header_timeout: Duration,
    /// How long a request may run before it is answered 408 (default 30 s).
    pub request_timeout: Duration,
}

/// `[delivery]`.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Delay after each failed attempt.
    pub retry_schedule: Vec<Duration>,
    /// Webhook request timeout (default 15 s).
    pub timeout: Duration,
    /// Webhook requests in flight at most (default 16).
    pub concurrency: usize,
    /// Webhook requests in flight to one subscriber at most (default 8).
    pub per_subscriber_concurrency: usize,
}

/// `[[webhooks]]`.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Unique name (the `delivery.subscriber`).
    pub name: String,
    /// Callback URL.
    pub url: Url,
    /// Signing secret.
    pub secret: WebhookSecret,
    /// Event filter (`None` = all).
    pub events: Option<BTreeSet<EventType>>,
}

/// `[[email.recipients]]`.
#[derive(Debug, Clone)]
pub struct RecipientConfig {
    /// Unique name.
    pub name: String,
    /// Addresses.
    pub to: Vec<Mailbox>,
    /// Event filter (`None` = all).
    pub events: Option<BTreeSet<EventType>>,
}

/// `[email]`.
#[derive(Debug, Clone)]
pub struct EmailConfig {
    /// `smtp://`, `smtps://` (with `?tls=required` for STARTTLS) or `file:///dir`.
    pub smtp_url: SecretString,
    /// `From:`.
    pub from: Mailbox,
    /// SMTP command timeout (default 30 s).
    pub timeout: Duration,
    /// Recipient groups.
    pub recipients: Vec<RecipientConfig>,
}

/// `[log]`.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// `text` or `json`; `None` (not configured): JSON under systemd (`JOURNAL_STREAM` set),
    /// else text.
    pub format: Option<LogFormat>,
    /// `tracing` filter, e.g. `info,singapay_sync=debug` (default `info`; `RUST_LOG` wins).
    pub level: String,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The ledger.
    pub ledger: LedgerConfig,
    /// SingaPay: shared settings and the default credential.
    pub singapay: SingapayConfig,
    /// `[[credentials]]`: further merchants' credentials, named by `accounts[].credential`.
    pub credentials: Vec<CredentialConfig>,
    /// Sync.
    pub sync: SyncConfig,
    /// Accounts to mirror.
    pub accounts: Vec<AccountConfig>,
    /// Admin HTTP.
    pub http: HttpConfig,
    /// Delivery.
    pub delivery: DeliveryConfig,
    /// Webhook subscribers.
    pub webhooks: Vec<WebhookConfig>,
    /// E-mail, if configured.
    pub email: Option<EmailConfig>,
    /// Logging.
    pub log: LogConfig,
    /// `[inbound]` (`None`: no inbound listener).
    pub inbound: Option<InboundConfig>,
}

/// Every problem found in a configuration, one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<String>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "invalid configuration ({} problems):", self.0.len())?;
        for p in &self.0 {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Parses `"5s"`, `"30m"`, `"2h"`, `"1d"` (humantime).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("{s:?} is not a duration: {e}"))
}

impl Config {
    /// Loads the config from `path` (or `$SINGAPAY_SYNC_CONFIG`, or [`DEFAULT_CONFIG_PATH`]) plus
    /// environment overrides, and validates it.
    ///
    /// Errors: [`ConfigErrors`] listing every problem (unreadable file, bad TOML, bad values).
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigErrors> {
        let path = path
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("SINGAPAY_SYNC_CONFIG").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
        if !path.exists() {
            return Err(ConfigErrors(vec![format!(
                "config file {} does not exist (give --config PATH or set SINGAPAY_SYNC_CONFIG)",
                path.display()
            )]));
        }
        Self::from_figment(raw::environment(
            Figment::new().merge(Toml::file_exact(&path)),
        ))
    }

    /// Parses and validates a TOML document (no environment overrides): tests and the demo.
    pub fn from_toml_str(toml: &str) -> Result<Config, ConfigErrors> {
        Self::from_figment(Figment::new().merge(Toml::string(toml)))
    }

    fn from_figment(fig: Figment) -> Result<Config, ConfigErrors> {
        let unknown = raw::unknown_keys(&fig);
        let raw: raw::Raw = fig.extract().map_err(|e| {
            let mut all: Vec<String> = e.into_iter().map(|e| raw::describe(&e)).collect();
            all.extend(unknown.iter().cloned());
            ConfigErrors(all)
        })?;
        match validate::validate(raw) {
            Ok(c) if unknown.is_empty() => Ok(c),
            Ok(_) => Err(ConfigErrors(unknown)),
            Err(ConfigErrors(mut p)) => {
                p.extend(unknown);
                Err(ConfigErrors(p))
            }
        }
    }
}

/// The SingaPay client of `[singapay]`: the configured timeout and retries, backoff from 200 ms
/// doubling up to 30 s (a longer `Retry-After` waits at most that).
impl From<&SingapayConfig> for ClientConfig {
    fn from(s: &SingapayConfig) -> Self {
        ClientConfig {
            base_url: s.base_url.clone(),
            partner_id: s.partner_id.clone(),
            client_id: s.client_id.clone(),
            client_secret: s.client_secret.clone(),
            timeout: s.timeout,
            max_retries: s.max_retries,
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
        }
    }
}
