//! Validation: one function per section, each adding what is wrong to one list of problems, so
//! that an operator sees every problem at once. A section with problems yields placeholder values;
//! they never escape, because [`validate`] fails when the list is not empty.

use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use lettre::message::Mailbox;
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::raw::{
    Raw, RawAccount, RawDelivery, RawEmail, RawHttp, RawLog, RawSingapay, RawSync, RawWebhook,
};
use super::{
    AccountConfig, Config, ConfigErrors, DEFAULT_BASE_URL, DEFAULT_LEDGER_PATH, DEFAULT_LISTEN,
    DEFAULT_RETRY_SCHEDULE, DEFAULT_SCHEDULE, DeliveryConfig, EmailConfig, HttpConfig, LogConfig,
    RecipientConfig, SingapayConfig, SyncConfig, WebhookConfig, parse_duration,
};
use crate::standard_webhooks::WebhookSecret;
use crate::telemetry::LogFormat;
use crate::types::{AccountId, EventType};

/// What is wrong so far, one line per problem.
type Problems = Vec<String>;

/// Validates every section of `raw`; `Err` lists every problem found.
pub(super) fn validate(raw: Raw) -> Result<Config, ConfigErrors> {
    let mut p = Problems::new();
    let ledger_path = PathBuf::from(
        raw.ledger
            .path
            .unwrap_or_else(|| DEFAULT_LEDGER_PATH.to_string()),
    );
    let singapay = singapay(&mut p, raw.singapay);
    let sync = sync(&mut p, raw.sync);
    let accounts = accounts(&mut p, raw.accounts, &sync.schedule);
    let http = http(&mut p, raw.http);
    let delivery = delivery(&mut p, raw.delivery);
    // Webhook and recipient names share one namespace (`delivery.subscriber`).
    let mut names = HashSet::new();
    let webhooks = webhooks(&mut p, raw.webhooks, &mut names);
    let email = raw.email.and_then(|e| email(&mut p, e, &mut names));
    let log = log(&mut p, raw.log);
    if !p.is_empty() {
        return Err(ConfigErrors(p));
    }
    Ok(Config {
        ledger_path,
        singapay,
        sync,
        accounts,
        http,
        delivery,
        webhooks,
        email,
        log,
    })
}

fn singapay(p: &mut Problems, s: RawSingapay) -> SingapayConfig {
    let base_url = http_url(
        p,
        "singapay.base_url",
        Some(s.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL)),
    )
    .unwrap_or_else(|| Url::parse(DEFAULT_BASE_URL).expect("DEFAULT_BASE_URL is a valid URL"));
    SingapayConfig {
        base_url,
        partner_id: required(p, "singapay.partner_id", s.partner_id),
        client_id: required(p, "singapay.client_id", s.client_id),
        client_secret: secret(
            p,
            "singapay.client_secret",
            s.client_secret,
            s.client_secret_file,
            true,
        )
        .unwrap_or_else(|| SecretString::from(String::new())),
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
    SyncConfig {
        schedule,
        notify_on_baseline: s.notify_on_baseline.unwrap_or(false),
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
            Some(Err(e)) => {
                p.push(format!("{key}.id: {e}"));
                None
            }
            None => {
                p.push(format!("{key}.id is required"));
                None
            }
        };
        let schedule = a.schedule.unwrap_or_else(|| default_schedule.to_string());
        cron(p, &format!("{key}.schedule"), &schedule);
        if let Some(id) = id {
            if !seen.insert(id.clone()) {
                p.push(format!("{key}.id {id} is listed twice"));
            }
            out.push(AccountConfig {
                id,
                name: a.name,
                schedule,
            });
        }
    }
    out
}

fn http(p: &mut Problems, h: RawHttp) -> HttpConfig {
    let listen = match h.listen.as_deref().unwrap_or(DEFAULT_LISTEN).parse() {
        Ok(a) => a,
        Err(e) => {
            p.push(format!("http.listen: {e}"));
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
                Ok(d) => Some(d),
                Err(e) => {
                    p.push(format!("delivery.retry_schedule[{i}]: {e}"));
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
        let url = http_url(p, &format!("{key}.url"), w.url.as_deref());
        let secret =
            secret(p, &format!("{key}.secret"), w.secret, w.secret_file, true).and_then(|s| {
                match WebhookSecret::parse(s.expose_secret()) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        p.push(format!("{key}.secret: {e}"));
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
    if smtp_url.as_ref().is_some_and(|u| {
        let u = u.expose_secret();
        !["smtp://", "smtps://", "file://"]
            .iter()
            .any(|s| u.starts_with(s))
    }) {
        p.push("email.smtp_url must start with smtp://, smtps:// or file://".into());
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
                .filter_map(|a| match a.parse::<Mailbox>() {
                    Ok(m) => Some(m),
                    Err(err) => {
                        p.push(format!("{key}.to {a:?}: {err}"));
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
    let format = match l.format.as_deref().unwrap_or("text") {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            p.push(format!(
                "log.format must be \"text\" or \"json\", got {other:?}"
            ));
            LogFormat::Text
        }
    };
    LogConfig {
        format,
        level: l.level.unwrap_or_else(|| "info".into()),
    }
}

// ---- helpers shared by the sections ----

/// A secret given inline or as `<key>_file` (trimmed file contents), not both.
fn secret(
    p: &mut Problems,
    key: &str,
    inline: Option<String>,
    file: Option<String>,
    required: bool,
) -> Option<SecretString> {
    match (inline, file) {
        (Some(_), Some(_)) => {
            p.push(format!("{key} and {key}_file are both set: keep one"));
            None
        }
        (Some(v), None) if v.trim().is_empty() => {
            p.push(format!("{key} is empty"));
            None
        }
        (Some(v), None) => Some(SecretString::from(v)),
        (None, Some(path)) => match std::fs::read_to_string(&path) {
            Ok(v) if v.trim().is_empty() => {
                p.push(format!("{key}_file {path:?} is empty"));
                None
            }
            Ok(v) => Some(SecretString::from(v.trim().to_string())),
            Err(e) => {
                p.push(format!("{key}_file {path:?} cannot be read: {e}"));
                None
            }
        },
        (None, None) => {
            if required {
                p.push(format!("{key} is required (or {key}_file)"));
            }
            None
        }
    }
}

/// An event filter (`None` = every type).
fn events(p: &mut Problems, key: &str, v: Option<Vec<String>>) -> Option<BTreeSet<EventType>> {
    let mut set = BTreeSet::new();
    for e in v? {
        match e.parse::<EventType>() {
            Ok(t) => {
                set.insert(t);
            }
            Err(msg) => p.push(format!("{key}: {msg}")),
        }
    }
    Some(set)
}

/// A positive duration, `default` when absent.
fn duration(p: &mut Problems, key: &str, v: Option<String>, default: Duration) -> Duration {
    match v.as_deref().map(parse_duration) {
        None => default,
        Some(Ok(d)) if d.is_zero() => {
            p.push(format!("{key} must be more than 0"));
            default
        }
        Some(Ok(d)) => d,
        Some(Err(e)) => {
            p.push(format!("{key}: {e}"));
            default
        }
    }
}

/// A non-empty string, trimmed.
fn required(p: &mut Problems, key: &str, v: Option<String>) -> String {
    match v {
        Some(s) if !s.trim().is_empty() => s.trim().to_string(),
        _ => {
            p.push(format!("{key} is required"));
            String::new()
        }
    }
}

/// An integer in `lo..=hi` (`default` when absent); `note` explains the bound.
fn int_in(
    p: &mut Problems,
    key: &str,
    v: Option<i64>,
    (lo, hi, default): (i64, i64, i64),
    note: &str,
) -> i64 {
    match v.unwrap_or(default) {
        n if (lo..=hi).contains(&n) => n,
        n => {
            p.push(format!("{key} must be {lo} to {hi}{note}, got {n}"));
            default
        }
    }
}

/// An `http://` or `https://` URL.
fn http_url(p: &mut Problems, key: &str, v: Option<&str>) -> Option<Url> {
    match v.map(Url::parse) {
        Some(Ok(u)) if matches!(u.scheme(), "http" | "https") => Some(u),
        Some(Ok(u)) => {
            p.push(format!("{key}: scheme {:?} is not http(s)", u.scheme()));
            None
        }
        Some(Err(e)) => {
            p.push(format!("{key}: {e}"));
            None
        }
        None => {
            p.push(format!("{key} is required"));
            None
        }
    }
}

/// A cron schedule the scheduler accepts.
fn cron(p: &mut Problems, key: &str, expr: &str) {
    if let Err(e) = crate::cron::validate(expr) {
        p.push(format!("{key} {expr:?}: {e}"));
    }
}

/// A subscriber's unique name (`<key>.name`).
fn subscriber_name(
    p: &mut Problems,
    key: &str,
    v: Option<String>,
    names: &mut HashSet<String>,
) -> String {
    let name = required(p, &format!("{key}.name"), v);
    if !name.is_empty() && !names.insert(name.clone()) {
        p.push(format!(
            "{key}.name {name:?} is used twice (webhook and recipient names share one namespace)"
        ));
    }
    name
}
