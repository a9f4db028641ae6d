//! Typed, layered, validated configuration (DESIGN §8).
//!
//! Sources, later wins: the TOML file, then `SINGAPAY_SYNC__<SECTION>__<KEY>` environment variables.
//! Every secret can also be given as `<key>_file` (a path whose contents, trimmed, are the secret:
//! systemd `LoadCredential=`). Validation reports every problem at once; the CLI exits 2 with them.

use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use lettre::message::Mailbox;
use secrecy::SecretString;
use serde::Deserialize;
use url::Url;

use crate::notify::webhook::WebhookSecret;
use crate::types::{AccountId, EventType};

/// Default config path when neither `--config` nor `$SINGAPAY_SYNC_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/singapay-sync/config.toml";
/// Default ledger path.
pub const DEFAULT_LEDGER_PATH: &str = "/var/lib/singapay-sync/ledger.db";
/// Default SingaPay host (sandbox).
pub const DEFAULT_BASE_URL: &str = "https://sandbox-payment-b2b.singapay.id";
/// Default schedule: every 5 minutes, on the minute.
pub const DEFAULT_SCHEDULE: &str = "0 */5 * * * *";

#[derive(Debug, Default, Deserialize)]
struct Raw {
    #[serde(default)]
    ledger: RawLedger,
    #[serde(default)]
    singapay: RawSingapay,
    #[serde(default)]
    sync: RawSync,
    #[serde(default)]
    accounts: Vec<RawAccount>,
    #[serde(default)]
    http: RawHttp,
    #[serde(default)]
    delivery: RawDelivery,
    #[serde(default)]
    webhooks: Vec<RawWebhook>,
    email: Option<RawEmail>,
    #[serde(default)]
    log: RawLog,
}

#[derive(Debug, Default, Deserialize)]
struct RawLedger {
    path: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawSingapay {
    base_url: Option<String>,
    partner_id: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    client_secret_file: Option<String>,
    timeout: Option<String>,
    per_page: Option<i64>,
    max_retries: Option<i64>,
    concurrency: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
struct RawSync {
    schedule: Option<String>,
    notify_on_baseline: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
struct RawAccount {
    id: Option<String>,
    name: Option<String>,
    schedule: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawHttp {
    listen: Option<String>,
    admin_token: Option<String>,
    admin_token_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawDelivery {
    retry_schedule: Option<Vec<String>>,
    timeout: Option<String>,
    concurrency: Option<i64>,
    per_subscriber_concurrency: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
struct RawWebhook {
    name: Option<String>,
    url: Option<String>,
    secret: Option<String>,
    secret_file: Option<String>,
    events: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
struct RawEmail {
    smtp_url: Option<String>,
    smtp_url_file: Option<String>,
    from: Option<String>,
    timeout: Option<String>,
    #[serde(default)]
    recipients: Vec<RawRecipients>,
}

#[derive(Debug, Default, Deserialize)]
struct RawRecipients {
    name: Option<String>,
    #[serde(default)]
    to: Vec<String>,
    events: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
struct RawLog {
    format: Option<String>,
    level: Option<String>,
}

/// `[singapay]`.
#[derive(Debug, Clone)]
pub struct SingapayConfig {
    /// API host.
    pub base_url: Url,
    /// `X-PARTNER-ID`.
    pub partner_id: String,
    /// `X-CLIENT-ID`.
    pub client_id: String,
    /// Client secret.
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

/// `[sync]`.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// Default cron schedule (6 fields, seconds first, UTC).
    pub schedule: String,
    /// Emit `payment_link.created` for baseline links.
    pub notify_on_baseline: bool,
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
}

/// `[http]`.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Listen address (default `127.0.0.1:8787`).
    pub listen: SocketAddr,
    /// Bearer token of the admin API.
    pub admin_token: SecretString,
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

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for journald/Loki).
    Json,
}

/// `[log]`.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// `text` (default) or `json`.
    pub format: LogFormat,
    /// `tracing` filter, e.g. `info,singapay_sync=debug` (default `info`; `RUST_LOG` wins).
    pub level: String,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// SQLite ledger file.
    pub ledger_path: PathBuf,
    /// SingaPay.
    pub singapay: SingapayConfig,
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

/// The keys each section accepts (a misspelt key is reported, not silently ignored).
const KNOWN_KEYS: &[(&str, &[&str])] = &[
    ("ledger", &["path"]),
    (
        "singapay",
        &[
            "base_url",
            "partner_id",
            "client_id",
            "client_secret",
            "client_secret_file",
            "timeout",
            "per_page",
            "max_retries",
            "concurrency",
        ],
    ),
    ("sync", &["schedule", "notify_on_baseline"]),
    ("accounts", &["id", "name", "schedule"]),
    ("http", &["listen", "admin_token", "admin_token_file"]),
    (
        "delivery",
        &[
            "retry_schedule",
            "timeout",
            "concurrency",
            "per_subscriber_concurrency",
        ],
    ),
    (
        "webhooks",
        &["name", "url", "secret", "secret_file", "events"],
    ),
    (
        "email",
        &["smtp_url", "smtp_url_file", "from", "timeout", "recipients"],
    ),
    ("log", &["format", "level"]),
];

const RECIPIENT_KEYS: &[&str] = &["name", "to", "events"];

/// Every key of the merged sources that no section accepts, as "unknown key `a.b`".
fn unknown_keys(fig: &Figment) -> Vec<String> {
    use figment::value::Value as V;
    let mut out = Vec::new();
    let Ok(V::Dict(_, top)) = fig.extract::<figment::value::Value>() else {
        return out;
    };
    let check = |path: &str, dict: &figment::value::Dict, known: &[&str], out: &mut Vec<String>| {
        for k in dict.keys() {
            if !known.contains(&k.as_str()) {
                out.push(format!("unknown key `{path}.{k}`"));
            }
        }
    };
    for (section, value) in &top {
        let Some((_, known)) = KNOWN_KEYS.iter().find(|(s, _)| s == section) else {
            out.push(format!("unknown section `{section}`"));
            continue;
        };
        match value {
            V::Dict(_, d) => {
                check(section, d, known, &mut out);
                if section == "email"
                    && let Some(V::Array(_, rs)) = d.get("recipients")
                {
                    for (i, r) in rs.iter().enumerate() {
                        if let V::Dict(_, rd) = r {
                            check(
                                &format!("email.recipients[{i}]"),
                                rd,
                                RECIPIENT_KEYS,
                                &mut out,
                            );
                        }
                    }
                }
            }
            V::Array(_, items) => {
                for (i, item) in items.iter().enumerate() {
                    if let V::Dict(_, d) = item {
                        check(&format!("{section}[{i}]"), d, known, &mut out);
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Parses `"5s"`, `"30m"`, `"2h"`, `"1d"` (humantime).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("{s:?} is not a duration: {e}"))
}

fn secret(
    problems: &mut Vec<String>,
    key: &str,
    inline: Option<String>,
    file: Option<String>,
    required: bool,
) -> Option<SecretString> {
    match (inline, file) {
        (Some(_), Some(_)) => {
            problems.push(format!("{key} and {key}_file are both set: keep one"));
            None
        }
        (Some(v), None) if v.trim().is_empty() => {
            problems.push(format!("{key} is empty"));
            None
        }
        (Some(v), None) => Some(SecretString::from(v)),
        (None, Some(path)) => match std::fs::read_to_string(&path) {
            Ok(v) if v.trim().is_empty() => {
                problems.push(format!("{key}_file {path:?} is empty"));
                None
            }
            Ok(v) => Some(SecretString::from(v.trim().to_string())),
            Err(e) => {
                problems.push(format!("{key}_file {path:?} cannot be read: {e}"));
                None
            }
        },
        (None, None) => {
            if required {
                problems.push(format!("{key} is required (or {key}_file)"));
            }
            None
        }
    }
}

fn events(
    problems: &mut Vec<String>,
    key: &str,
    v: Option<Vec<String>>,
) -> Option<BTreeSet<EventType>> {
    let list = v?;
    let mut set = BTreeSet::new();
    for e in list {
        match e.parse::<EventType>() {
            Ok(t) => {
                set.insert(t);
            }
            Err(msg) => problems.push(format!("{key}: {msg}")),
        }
    }
    Some(set)
}

fn duration(
    problems: &mut Vec<String>,
    key: &str,
    v: Option<String>,
    default: Duration,
) -> Duration {
    match v {
        None => default,
        Some(s) => match parse_duration(&s) {
            Ok(d) if d.is_zero() => {
                problems.push(format!("{key} must be more than 0"));
                default
            }
            Ok(d) => d,
            Err(e) => {
                problems.push(format!("{key}: {e}"));
                default
            }
        },
    }
}

fn required(problems: &mut Vec<String>, key: &str, v: Option<String>) -> String {
    match v {
        Some(s) if !s.trim().is_empty() => s.trim().to_string(),
        _ => {
            problems.push(format!("{key} is required"));
            String::new()
        }
    }
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
        let fig = Figment::new()
            .merge(Toml::file_exact(&path))
            .merge(Env::prefixed("SINGAPAY_SYNC__").split("__"));
        Self::from_figment(fig)
    }

    /// Parses and validates a TOML document (no environment overrides): tests and the demo.
    pub fn from_toml_str(toml: &str) -> Result<Config, ConfigErrors> {
        Self::from_figment(Figment::new().merge(Toml::string(toml)))
    }

    fn from_figment(fig: Figment) -> Result<Config, ConfigErrors> {
        let unknown = unknown_keys(&fig);
        let raw: Raw = fig.extract().map_err(|e| {
            let mut all: Vec<String> = e.into_iter().map(|e| e.to_string()).collect();
            all.extend(unknown.iter().cloned());
            ConfigErrors(all)
        })?;
        match Self::validate(raw) {
            Ok(c) if unknown.is_empty() => Ok(c),
            Ok(_) => Err(ConfigErrors(unknown)),
            Err(ConfigErrors(mut p)) => {
                p.extend(unknown);
                Err(ConfigErrors(p))
            }
        }
    }

    fn validate(raw: Raw) -> Result<Config, ConfigErrors> {
        let mut p = Vec::new();

        let ledger_path = PathBuf::from(
            raw.ledger
                .path
                .unwrap_or_else(|| DEFAULT_LEDGER_PATH.to_string()),
        );

        let s = raw.singapay;
        let base_url = match Url::parse(s.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL)) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => u,
            Ok(u) => {
                p.push(format!(
                    "singapay.base_url: scheme {:?} is not http(s)",
                    u.scheme()
                ));
                Url::parse(DEFAULT_BASE_URL).expect("the default URL parses")
            }
            Err(e) => {
                p.push(format!("singapay.base_url: {e}"));
                Url::parse(DEFAULT_BASE_URL).expect("the default URL parses")
            }
        };
        let partner_id = required(&mut p, "singapay.partner_id", s.partner_id);
        let client_id = required(&mut p, "singapay.client_id", s.client_id);
        let client_secret = secret(
            &mut p,
            "singapay.client_secret",
            s.client_secret,
            s.client_secret_file,
            true,
        );
        let timeout = duration(
            &mut p,
            "singapay.timeout",
            s.timeout,
            Duration::from_secs(30),
        );
        let per_page = match s.per_page.unwrap_or(100) {
            n @ 1..=100 => n as u64,
            n => {
                p.push(format!(
                    "singapay.per_page must be 1 to 100 (SingaPay caps pages at 100), got {n}"
                ));
                100
            }
        };
        let max_retries = match s.max_retries.unwrap_or(3) {
            n @ 0..=10 => n as usize,
            n => {
                p.push(format!("singapay.max_retries must be 0 to 10, got {n}"));
                3
            }
        };

        let page_concurrency = match s.concurrency.unwrap_or(4) {
            n @ 1..=16 => n as usize,
            n => {
                p.push(format!("singapay.concurrency must be 1 to 16, got {n}"));
                4
            }
        };

        let schedule = raw
            .sync
            .schedule
            .unwrap_or_else(|| DEFAULT_SCHEDULE.to_string());
        if let Err(e) = crate::sync::schedule::validate_cron(&schedule) {
            p.push(format!("sync.schedule {schedule:?}: {e}"));
        }

        if raw.accounts.is_empty() {
            p.push("at least one [[accounts]] entry is required".into());
        }
        let mut accounts = Vec::new();
        let mut seen_accounts = HashSet::new();
        for (i, a) in raw.accounts.into_iter().enumerate() {
            let key = format!("accounts[{i}]");
            let id = match a.id.as_deref().map(AccountId::parse) {
                Some(Ok(id)) => Some(id),
                Some(Err(e)) => {
                    p.push(format!("{key}.id: {e}"));
                    None
                }
                None => {
                    p.push(format!("{key}.id is required"));
                    None
                }
            };
            let sched = a.schedule.unwrap_or_else(|| schedule.clone());
            if let Err(e) = crate::sync::schedule::validate_cron(&sched) {
                p.push(format!("{key}.schedule {sched:?}: {e}"));
            }
            if let Some(id) = id {
                if !seen_accounts.insert(id.clone()) {
                    p.push(format!("{key}.id {id} is listed twice"));
                }
                accounts.push(AccountConfig {
                    id,
                    name: a.name,
                    schedule: sched,
                });
            }
        }

        let listen = match raw
            .http
            .listen
            .as_deref()
            .unwrap_or("127.0.0.1:8787")
            .parse::<SocketAddr>()
        {
            Ok(a) => a,
            Err(e) => {
                p.push(format!("http.listen: {e}"));
                SocketAddr::from(([127, 0, 0, 1], 8787))
            }
        };
        let admin_token = secret(
            &mut p,
            "http.admin_token",
            raw.http.admin_token,
            raw.http.admin_token_file,
            true,
        );
        if let Some(t) = &admin_token
            && secrecy::ExposeSecret::expose_secret(t).len() < 16
        {
            p.push("http.admin_token must be at least 16 characters".into());
        }

        let retry_schedule = match raw.delivery.retry_schedule {
            None => crate::notify::RetrySchedule::default().delays,
            Some(list) => list
                .iter()
                .enumerate()
                .filter_map(|(i, d)| match parse_duration(d) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        p.push(format!("delivery.retry_schedule[{i}]: {e}"));
                        None
                    }
                })
                .collect(),
        };
        let delivery = DeliveryConfig {
            retry_schedule,
            timeout: duration(
                &mut p,
                "delivery.timeout",
                raw.delivery.timeout,
                Duration::from_secs(15),
            ),
            concurrency: match raw.delivery.concurrency.unwrap_or(16) {
                n @ 1..=1024 => n as usize,
                n => {
                    p.push(format!("delivery.concurrency must be 1 to 1024, got {n}"));
                    16
                }
            },
            per_subscriber_concurrency: match raw.delivery.per_subscriber_concurrency.unwrap_or(8) {
                n @ 1..=1024 => n as usize,
                n => {
                    p.push(format!(
                        "delivery.per_subscriber_concurrency must be 1 to 1024, got {n}"
                    ));
                    8
                }
            },
        };

        let mut names = HashSet::new();
        let mut webhooks = Vec::new();
        for (i, w) in raw.webhooks.into_iter().enumerate() {
            let key = format!("webhooks[{i}]");
            let name = required(&mut p, &format!("{key}.name"), w.name);
            if !name.is_empty() && !names.insert(name.clone()) {
                p.push(format!("{key}.name {name:?} is used twice (webhook and recipient names share one namespace)"));
            }
            let url = match w.url.as_deref().map(Url::parse) {
                Some(Ok(u)) if matches!(u.scheme(), "http" | "https") => Some(u),
                Some(Ok(u)) => {
                    p.push(format!("{key}.url: scheme {:?} is not http(s)", u.scheme()));
                    None
                }
                Some(Err(e)) => {
                    p.push(format!("{key}.url: {e}"));
                    None
                }
                None => {
                    p.push(format!("{key}.url is required"));
                    None
                }
            };
            let secret = secret(
                &mut p,
                &format!("{key}.secret"),
                w.secret,
                w.secret_file,
                true,
            )
            .and_then(|s| {
                match WebhookSecret::parse(secrecy::ExposeSecret::expose_secret(&s)) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        p.push(format!("{key}.secret: {e}"));
                        None
                    }
                }
            });
            let events = events(&mut p, &format!("{key}.events"), w.events);
            if let (Some(url), Some(secret)) = (url, secret) {
                webhooks.push(WebhookConfig {
                    name,
                    url,
                    secret,
                    events,
                });
            }
        }

        let email = raw.email.map(|e| {
            let smtp_url = secret(&mut p, "email.smtp_url", e.smtp_url, e.smtp_url_file, true);
            if let Some(u) = &smtp_url {
                let u = secrecy::ExposeSecret::expose_secret(u);
                if !(u.starts_with("smtp://") || u.starts_with("smtps://") || u.starts_with("file://")) {
                    p.push("email.smtp_url must start with smtp://, smtps:// or file://".into());
                }
            }
            let from = match e.from.as_deref().map(str::parse::<Mailbox>) {
                Some(Ok(m)) => Some(m),
                Some(Err(err)) => {
                    p.push(format!("email.from: {err}"));
                    None
                }
                None => {
                    p.push("email.from is required".into());
                    None
                }
            };
            let timeout = duration(&mut p, "email.timeout", e.timeout, Duration::from_secs(30));
            if e.recipients.is_empty() {
                p.push("email needs at least one [[email.recipients]] group".into());
            }
            let mut recipients = Vec::new();
            for (i, r) in e.recipients.into_iter().enumerate() {
                let key = format!("email.recipients[{i}]");
                let name = required(&mut p, &format!("{key}.name"), r.name);
                if !name.is_empty() && !names.insert(name.clone()) {
                    p.push(format!("{key}.name {name:?} is used twice (webhook and recipient names share one namespace)"));
                }
                if r.to.is_empty() {
                    p.push(format!("{key}.to needs at least one address"));
                }
                let to: Vec<Mailbox> = r
                    .to
                    .iter()
                    .filter_map(|a| match a.parse::<Mailbox>() {
                        Ok(m) => Some(m),
                        Err(err) => {
                            p.push(format!("{key}.to {a:?}: {err}"));
                            None
                        }
                    })
                    .collect();
                let events = events(&mut p, &format!("{key}.events"), r.events);
                recipients.push(RecipientConfig { name, to, events });
            }
            (smtp_url, from, timeout, recipients)
        });

        let log = LogConfig {
            format: match raw.log.format.as_deref().unwrap_or("text") {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => {
                    p.push(format!(
                        "log.format must be \"text\" or \"json\", got {other:?}"
                    ));
                    LogFormat::Text
                }
            },
            level: raw.log.level.unwrap_or_else(|| "info".into()),
        };

        if !p.is_empty() {
            return Err(ConfigErrors(p));
        }
        let email = match email {
            Some((Some(smtp_url), Some(from), timeout, recipients)) => Some(EmailConfig {
                smtp_url,
                from,
                timeout,
                recipients,
            }),
            _ => None,
        };
        Ok(Config {
            ledger_path,
            singapay: SingapayConfig {
                base_url,
                partner_id,
                client_id,
                client_secret: client_secret.unwrap_or_else(|| SecretString::from(String::new())),
                timeout,
                per_page,
                max_retries,
                concurrency: page_concurrency,
            },
            sync: SyncConfig {
                schedule,
                notify_on_baseline: raw.sync.notify_on_baseline.unwrap_or(false),
            },
            accounts,
            http: HttpConfig {
                listen,
                admin_token: admin_token.unwrap_or_else(|| SecretString::from(String::new())),
            },
            delivery,
            webhooks,
            email,
            log,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[ledger]
path = "/tmp/x.db"
[singapay]
partner_id = "p"
client_id = "c"
client_secret = "s"
[[accounts]]
id = "01K7P073Q8RE2A9PQT8Q7MXPN4"
[http]
admin_token = "0123456789abcdef"
[[webhooks]]
name = "erp"
url = "https://erp.example.com/hooks"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
events = ["payment_link.paid"]
[email]
smtp_url = "smtp://127.0.0.1:2525"
from = "SingaPay Sync <sync@example.com>"
[[email.recipients]]
name = "finance"
to = ["finance@example.com"]
"#;

    #[test]
    fn a_good_config_gets_every_default() {
        let c = Config::from_toml_str(GOOD).unwrap();
        assert_eq!(c.singapay.per_page, 100);
        assert_eq!(c.singapay.timeout, Duration::from_secs(30));
        assert_eq!(c.accounts[0].schedule, DEFAULT_SCHEDULE);
        assert_eq!(c.delivery.retry_schedule.len(), 7);
        assert_eq!(c.delivery.timeout, Duration::from_secs(15));
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:8787");
        assert_eq!(
            c.webhooks[0]
                .events
                .as_ref()
                .unwrap()
                .iter()
                .collect::<Vec<_>>(),
            [&EventType::Paid]
        );
        assert!(c.email.as_ref().unwrap().recipients[0].events.is_none());
        // Secrets stay out of Debug output.
        let dbg = format!("{c:?}");
        assert!(
            !dbg.contains("0123456789abcdef") && !dbg.contains("MfKQ9r8"),
            "{dbg}"
        );
    }

    #[test]
    fn every_problem_is_listed_at_once() {
        let bad = r#"
[singapay]
per_page = 500
timeout = "soon"
[sync]
schedule = "whenever"
[[accounts]]
id = "toko"
[http]
listen = "nowhere"
admin_token = "short"
[delivery]
retry_schedule = ["5s", "fortnight"]
[[webhooks]]
name = "erp"
url = "ftp://x"
secret = "whsec_!!"
events = ["payment_link.nope"]
"#;
        let e = Config::from_toml_str(&format!("{bad}\n[log]\nlevle = \"debug\"\n")).unwrap_err();
        let all = e.to_string();
        assert!(all.contains("unknown key `log.levle`"), "{all}");
        for needle in [
            "singapay.partner_id is required",
            "singapay.client_id is required",
            "singapay.client_secret is required",
            "singapay.per_page must be 1 to 100",
            "singapay.timeout",
            "sync.schedule",
            "accounts[0].id",
            "http.listen",
            "http.admin_token must be at least 16",
            "delivery.retry_schedule[1]",
            "webhooks[0].url",
            "webhooks[0].secret",
            "webhooks[0].events",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        assert!(e.0.len() >= 13, "{all}");
    }

    #[test]
    fn the_example_config_is_valid_and_documents_every_section() {
        let text = include_str!("../config/example.toml");
        let c = Config::from_toml_str(text).unwrap();
        assert_eq!(c.accounts[0].id.as_str(), "01K7P073Q8RE2A9PQT8Q7MXPN4");
        for key in [
            "path",
            "base_url",
            "partner_id",
            "client_id",
            "client_secret",
            "timeout",
            "per_page",
            "max_retries",
            "schedule",
            "notify_on_baseline",
            "listen",
            "admin_token",
            "retry_schedule",
            "concurrency",
            "url",
            "secret",
            "events",
            "smtp_url",
            "from",
            "to",
            "format",
            "level",
        ] {
            assert!(
                text.contains(&format!("\n{key} = ")),
                "example.toml lacks {key}"
            );
        }
    }

    #[test]
    fn secrets_can_come_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("secret");
        std::fs::write(&f, "from-file-secret\n").unwrap();
        let toml = GOOD.replace(
            "client_secret = \"s\"",
            &format!("client_secret_file = \"{}\"", f.display()),
        );
        let c = Config::from_toml_str(&toml).unwrap();
        assert_eq!(
            secrecy::ExposeSecret::expose_secret(&c.singapay.client_secret),
            "from-file-secret"
        );
    }
}
