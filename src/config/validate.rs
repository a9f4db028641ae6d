//! Validation: one function per section, each adding what is wrong to one list of problems, so
//! that an operator sees every problem at once. A section with problems yields placeholder values;
//! they never escape, because [`validate`] fails when the list is not empty.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use lettre::message::Mailbox;
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::fields::{
    MAX_DURATION, Problems, cron, duration, events, http_url, int_in, is_loopback, required,
    secret, subscriber_name,
};
use super::raw::{
    Raw, RawAccount, RawDelivery, RawEmail, RawHttp, RawLedger, RawLog, RawSingapay, RawSync,
    RawWebhook,
};
use super::{
    AccountConfig, Config, ConfigErrors, DEFAULT_BASE_URL, DEFAULT_LEDGER_PATH, DEFAULT_LISTEN,
    DEFAULT_RETRY_SCHEDULE, DEFAULT_SCHEDULE, DeletionLimit, DeliveryConfig, EmailConfig,
    HttpConfig, LedgerConfig, LogConfig, RecipientConfig, SingapayConfig, SyncConfig,
    WebhookConfig, parse_duration,
};
use crate::standard_webhooks::WebhookSecret;
use crate::telemetry::LogFormat;
use crate::types::AccountId;

/// Validates every section of `raw`; `Err` lists every problem found.
pub(super) fn validate(raw: Raw) -> Result<Config, ConfigErrors> {
    let mut p = Problems::new();
    let ledger = ledger(&mut p, raw.ledger);
    // `[singapay]`'s credential is the default one: required while an account names none.
    let needs_default =
        raw.accounts.is_empty() || raw.accounts.iter().any(|a| a.credential.is_none());
    let singapay = singapay(&mut p, raw.singapay, needs_default);
    let credentials = super::credentials::validate(&mut p, raw.credentials, &singapay.base_url);
    let sync = sync(&mut p, raw.sync);
    let accounts = accounts(&mut p, raw.accounts, &sync.schedule);
    super::credentials::check_accounts(&mut p, &accounts, &credentials);
    let http = http(&mut p, raw.http);
    let delivery = delivery(&mut p, raw.delivery);
    // Webhook and recipient names share one namespace (`delivery.subscriber`).
    let mut names = HashSet::new();
    let webhooks = webhooks(&mut p, raw.webhooks, &mut names);
    let email = raw.email.and_then(|e| email(&mut p, e, &mut names));
    let log = log(&mut p, raw.log);
    let inbound = raw
        .inbound
        .map(|i| super::inbound::validate(&mut p, i, http.listen));
    if !p.is_empty() {
        return Err(ConfigErrors(p));
    }
    Ok(Config {
        ledger,
        singapay,
        credentials,
        sync,
        accounts,
        http,
        delivery,
        webhooks,
        email,
        log,
        inbound,
    })
}

/// `[ledger]`: `url` (or `url_file`, for a URL holding a password) or the older `path`.
fn ledger(p: &mut Problems, l: RawLedger) -> LedgerConfig {
    let url = secret(p, "ledger.url", l.url, l.url_file, false);
    let mut postgres = None;
    let path = match (url, l.path) {
        (Some(_), Some(_)) => {
            p.push("ledger.url and ledger.path are both set: keep one (url)".into());
            PathBuf::from(DEFAULT_LEDGER_PATH)
        }
        (None, path) => PathBuf::from(path.unwrap_or_else(|| DEFAULT_LEDGER_PATH.to_string())),
        (Some(url), None) => match ledger_url(p, url.expose_secret()) {
            LedgerUrl::Sqlite(path) => path,
            LedgerUrl::Postgres => {
                postgres = Some(url);
                PathBuf::from(DEFAULT_LEDGER_PATH)
            }
        },
    };
    LedgerConfig {
        path,
        postgres,
        retention: duration(
            p,
            "ledger.retention",
            l.retention,
            Duration::from_secs(180 * 86_400),
        ),
        lease: duration(p, "ledger.lease", l.lease, Duration::from_secs(300)),
        event_retention: l
            .event_retention
            .map(|v| duration(p, "ledger.event_retention", Some(v), Duration::ZERO)),
    }
}

/// What a `ledger.url` names.
enum LedgerUrl {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database (the URL itself is kept secret by the caller).
    Postgres,
}

/// What a `ledger.url` names: the SQLite file of `sqlite:///abs/path.db`, `sqlite://relative.db`
/// or `sqlite:path.db`, or a PostgreSQL database (`postgres://` or `postgresql://`, a URL). The URL is never quoted back: it may hold a password.
fn ledger_url(p: &mut Problems, url: &str) -> LedgerUrl {
    let fallback = || LedgerUrl::Sqlite(PathBuf::from(DEFAULT_LEDGER_PATH));
    let url = url.trim();
    let scheme = url.split(':').next().unwrap_or("").to_ascii_lowercase();
    let path = match scheme.as_str() {
        "sqlite" => url
            .get("sqlite:".len()..)
            .map(|rest| rest.strip_prefix("//").unwrap_or(rest))
            .unwrap_or(""),
        "postgres" | "postgresql" => {
            if url::Url::parse(url).is_err() {
                p.push(
                    "ledger.url is not a valid PostgreSQL URL (e.g. \
                     postgres://singapay@db.example.com/ledger)"
                        .into(),
                );
            }
            return LedgerUrl::Postgres;
        }
        _ => {
            p.push("ledger.url must start with sqlite:// or postgres:// (e.g. sqlite:///var/lib/singapay-sync/ledger.db)".into());
            return fallback();
        }
    };
    if path.is_empty() || path.contains('?') || path.contains('#') {
        p.push(
            "ledger.url must name a file, without options (e.g.              sqlite:///var/lib/singapay-sync/ledger.db)"
                .into(),
        );
        return fallback();
    }
    LedgerUrl::Sqlite(PathBuf::from(path))
}

/// `[singapay]`; its credential (partner id, client id, secret) is checked when `needs_default`
/// (an account names no `credential`) or when any of it is given.
fn singapay(p: &mut Problems, s: RawSingapay, needs_default: bool) -> SingapayConfig {
    let given = s.partner_id.is_some()
        || s.client_id.is_some()
        || s.client_secret.is_some()
        || s.client_secret_file.is_some();
    let mut none = Problems::new();
    let p_cred: &mut Problems = if needs_default || given { p } else { &mut none };
    let partner_id = required(p_cred, "singapay.partner_id", s.partner_id);
    let client_id = required(p_cred, "singapay.client_id", s.client_id);
    let client_secret = secret(
        p_cred,
        "singapay.client_secret",
        s.client_secret,
        s.client_secret_file,
        true,
    )
    .unwrap_or_else(|| SecretString::from(String::new()));
    let base_url = http_url(
        p,
        "singapay.base_url",
        Some(s.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL)),
        s.allow_insecure_http.unwrap_or(false),
    )
    .unwrap_or_else(|| Url::parse(DEFAULT_BASE_URL).expect("DEFAULT_BASE_URL is a valid URL"));
    SingapayConfig {
        base_url,
        partner_id,
        client_id,
        client_secret,
        timeout: duration(p, "singapay.timeout", s.timeout, Duration::from_secs(30)),
        per_page: int_in(
            p,
            "singapay.per_page",
            s.per_page,
            (1, 100, 100),
            " (SingaPay caps pages at 100)",
        ) as u64,
        max_retries: int_in(p, "singapay.max_retries", s.max_retries, (0, 10, 3), "") as usize,
        concurrency: int_in(p, "singapay.concurrency", s.concurrency, (1, 16, 4), "") as usize,
    }
}

fn sync(p: &mut Problems, s: RawSync) -> SyncConfig {
    let schedule = s.schedule.unwrap_or_else(|| DEFAULT_SCHEDULE.to_string());
    cron(p, "sync.schedule", &schedule);
    let max_deletions = match s.max_deletions.as_deref().map(str::trim) {
        None => DeletionLimit::Default,
        Some(v) => match v.strip_suffix('%').map(|n| n.trim().parse::<u64>()) {
            Some(Ok(pct)) if pct <= 100 => DeletionLimit::Percent(pct),
            None if v.parse::<u64>().is_ok() => DeletionLimit::Links(v.parse().unwrap_or(0)),
            _ => {
                p.push(
                    "sync.max_deletions must be a number of links (50) or a percentage of the \
                     live links (\"5%\")"
                        .into(),
                );
                DeletionLimit::Default
            }
        },
    };
    SyncConfig {
        schedule,
        notify_on_baseline: s.notify_on_baseline.unwrap_or(false),
        max_deletions,
        history_window: duration(
            p,
            "sync.history_window",
            s.history_window,
            Duration::from_secs(7 * 86_400),
        ),
    }
}

fn accounts(p: &mut Problems, raw: Vec<RawAccount>, default_schedule: &str) -> Vec<AccountConfig> {
    if raw.is_empty() {
        p.push("at least one [[accounts]] entry is required".into());
    }
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (i, a) in raw.into_iter().enumerate() {
        let key = format!("accounts[{i}]");
        let id = match a.id.as_deref().map(AccountId::parse) {
            Some(Ok(id)) => Some(id),
            Some(Err(_)) => {
                p.push(format!(
                    "{key}.id is not a ULID (26 characters, e.g. 01K7P073Q8RE2A9PQT8Q7MXPN4)"
                ));
                None
            }
            None => {
                p.push(format!("{key}.id is required"));
                None
            }
        };
        // An inherited schedule is checked (and reported) once, as `sync.schedule`.
        if let Some(s) = &a.schedule {
            cron(p, &format!("{key}.schedule"), s);
        }
        let schedule = a.schedule.unwrap_or_else(|| default_schedule.to_string());
        if let Some(id) = id {
            if !seen.insert(id.clone()) {
                p.push(format!("{key}.id is listed twice"));
            }
            out.push(AccountConfig {
                id,
                name: a.name,
                schedule,
                credential: a.credential.map(|c| c.trim().to_string()),
            });
        }
    }
    out
}

fn http(p: &mut Problems, h: RawHttp) -> HttpConfig {
    let listen = match h.listen.as_deref().unwrap_or(DEFAULT_LISTEN).parse() {
        Ok(a) => a,
        Err(_) => {
            p.push("http.listen is not an address:port (e.g. 127.0.0.1:8787)".into());
            SocketAddr::from(([127, 0, 0, 1], 8787))
        }
    };
    let admin_token = secret(
        p,
        "http.admin_token",
        h.admin_token,
        h.admin_token_file,
        true,
    );
    if admin_token
        .as_ref()
        .is_some_and(|t| t.expose_secret().len() < 16)
    {
        p.push("http.admin_token must be at least 16 characters".into());
    }
    HttpConfig {
        listen,
        admin_token: admin_token.unwrap_or_else(|| SecretString::from(String::new())),
        header_timeout: duration(
            p,
            "http.header_timeout",
            h.header_timeout,
            Duration::from_secs(10),
        ),
        request_timeout: duration(
            p,
            "http.request_timeout",
            h.request_timeout,
            Duration::from_secs(30),
        ),
    }
}

fn delivery(p: &mut Problems, d: RawDelivery) -> DeliveryConfig {
    let retry_schedule = match d.retry_schedule {
        None => DEFAULT_RETRY_SCHEDULE
            .iter()
            .map(|s| Duration::from_secs(*s))
            .collect(),
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, d)| match parse_duration(d) {
                Ok(d) if !d.is_zero() && d <= MAX_DURATION => Some(d),
                _ => {
                    p.push(format!(
                        "delivery.retry_schedule[{i}] is not a duration from 1ms to 10 years"
                    ));
                    None
                }
            })
            .collect(),
    };
    DeliveryConfig {
        retry_schedule,
        timeout: duration(p, "delivery.timeout", d.timeout, Duration::from_secs(15)),
        concurrency: int_in(p, "delivery.concurrency", d.concurrency, (1, 1024, 16), "") as usize,
        per_subscriber_concurrency: int_in(
            p,
            "delivery.per_subscriber_concurrency",
            d.per_subscriber_concurrency,
            (1, 1024, 8),
            "",
        ) as usize,
    }
}

fn webhooks(
    p: &mut Problems,
    raw: Vec<RawWebhook>,
    names: &mut HashSet<String>,
) -> Vec<WebhookConfig> {
    let mut out = Vec::new();
    for (i, w) in raw.into_iter().enumerate() {
        let key = format!("webhooks[{i}]");
        let name = subscriber_name(p, &key, w.name, names);
        let url = http_url(
            p,
            &format!("{key}.url"),
            w.url.as_deref(),
            w.allow_insecure_http.unwrap_or(false),
        );
        let secret =
            secret(p, &format!("{key}.secret"), w.secret, w.secret_file, true).and_then(|s| {
                match WebhookSecret::parse(s.expose_secret()) {
                    Ok(s) if (24..=64).contains(&s.key_len()) => Some(s),
                    Ok(_) => {
                        p.push(format!(
                            "{key}.secret must hold a key of 24 to 64 bytes (whsec_ + base64 of it)"
                        ));
                        None
                    }
                    Err(_) => {
                        p.push(format!("{key}.secret is not whsec_<base64>"));
                        None
                    }
                }
            });
        let events = events(p, &format!("{key}.events"), w.events);
        if let (Some(url), Some(secret)) = (url, secret) {
            out.push(WebhookConfig {
                name,
                url,
                secret,
                events,
            });
        }
    }
    out
}

fn email(p: &mut Problems, e: RawEmail, names: &mut HashSet<String>) -> Option<EmailConfig> {
    let smtp_url = secret(p, "email.smtp_url", e.smtp_url, e.smtp_url_file, true);
    if let Some(u) = &smtp_url {
        smtp(p, u.expose_secret());
    }
    let from = match e.from.as_deref().map(str::parse::<Mailbox>) {
        Some(Ok(m)) => Some(m),
        Some(Err(err)) => {
            p.push(format!("email.from is not a mailbox: {err}"));
            None
        }
        None => {
            p.push("email.from is required".into());
            None
        }
    };
    let timeout = duration(p, "email.timeout", e.timeout, Duration::from_secs(30));
    if e.recipients.is_empty() {
        p.push("email needs at least one [[email.recipients]] group".into());
    }
    let mut recipients = Vec::new();
    for (i, r) in e.recipients.into_iter().enumerate() {
        let key = format!("email.recipients[{i}]");
        let name = subscriber_name(p, &key, r.name, names);
        if r.to.is_empty() {
            p.push(format!("{key}.to needs at least one address"));
        }
        let to =
            r.to.iter()
                .enumerate()
                .filter_map(|(j, a)| match a.parse::<Mailbox>() {
                    Ok(m) => Some(m),
                    Err(err) => {
                        p.push(format!("{key}.to[{j}] is not a mailbox: {err}"));
                        None
                    }
                })
                .collect();
        let events = events(p, &format!("{key}.events"), r.events);
        recipients.push(RecipientConfig { name, to, events });
    }
    Some(EmailConfig {
        smtp_url: smtp_url?,
        from: from?,
        timeout,
        recipients,
    })
}

fn log(p: &mut Problems, l: RawLog) -> LogConfig {
    let format = match l.format.as_deref() {
        None => None,
        Some("text") => Some(LogFormat::Text),
        Some("json") => Some(LogFormat::Json),
        Some(_) => {
            p.push("log.format must be \"text\" or \"json\"".into());
            None
        }
    };
    let level = l.level.unwrap_or_else(|| "info".into());
    if let Err(e) = crate::telemetry::check_level(&level) {
        p.push(format!(
            "log.level is not a tracing filter (e.g. \"info\" or \"info,singapay_sync=debug\"): {e}"
        ));
    }
    LogConfig { format, level }
}

/// `email.smtp_url`: a known scheme, and no credentials in clear text: SMTP with a user or a
/// password needs TLS (`smtps://`, or `smtp://…?tls=required` for STARTTLS) unless the server is
/// on this host.
fn smtp(p: &mut Problems, url: &str) {
    if url.starts_with("file://") {
        return;
    }
    let Ok(u) = Url::parse(url) else {
        p.push("email.smtp_url is not a URL (smtp://, smtps:// or file://)".into());
        return;
    };
    match u.scheme() {
        "smtps" => {}
        "smtp" => {
            let credentials = !u.username().is_empty() || u.password().is_some();
            let tls = u.query_pairs().any(|(k, v)| k == "tls" && v == "required");
            if credentials && !tls && !is_loopback(&u) {
                p.push(
                    "email.smtp_url sends credentials without TLS: use smtps:// or \
                     smtp://…?tls=required (plain SMTP only to a loopback host)"
                        .into(),
                );
            }
        }
        _ => p.push("email.smtp_url must start with smtp://, smtps:// or file://".into()),
    }
}
