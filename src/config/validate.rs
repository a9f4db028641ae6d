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
use crate::types::{AccountId, EventType};

/// What is wrong so far, one line per problem.
type Problems = Vec<String>;

/// Validates every section of `raw`; `Err` lists every problem found.
pub(super) fn validate(raw: Raw) -> Result<Config, ConfigErrors> {
    let mut p = Problems::new();
    let ledger = ledger(&mut p, raw.ledger);
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
    let inbound = raw
        .inbound
        .map(|i| super::inbound::validate(&mut p, i, http.listen));
    if !p.is_empty() {
        return Err(ConfigErrors(p));
    }
    Ok(Config {
        ledger,
        singapay,
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

fn ledger(p: &mut Problems, l: RawLedger) -> LedgerConfig {
    LedgerConfig {
        path: PathBuf::from(l.path.unwrap_or_else(|| DEFAULT_LEDGER_PATH.to_string())),
        retention: duration(
            p,
            "ledger.retention",
            l.retention,
            Duration::from_secs(180 * 86_400),
        ),
        event_retention: l
            .event_retention
            .map(|v| duration(p, "ledger.event_retention", Some(v), Duration::ZERO)),
    }
}

fn singapay(p: &mut Problems, s: RawSingapay) -> SingapayConfig {
    let base_url = http_url(
        p,
        "singapay.base_url",
        Some(s.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL)),
        s.allow_insecure_http.unwrap_or(false),
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

/// Whether the URL's host is this machine (`localhost`, 127.0.0.0/8, `::1`).
fn is_loopback(u: &Url) -> bool {
    match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
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
                p.push(format!("{key}_file names an empty file"));
                None
            }
            Ok(v) => Some(SecretString::from(v.trim().to_string())),
            Err(e) => {
                p.push(format!("{key}_file cannot be read: {}", e.kind()));
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
    for (i, e) in v?.iter().enumerate() {
        match e.parse::<EventType>() {
            Ok(t) => {
                set.insert(t);
            }
            Err(_) => {
                let known: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
                p.push(format!(
                    "{key}[{i}] is not an event type (known: {})",
                    known.join(", ")
                ));
            }
        }
    }
    Some(set)
}

/// The longest duration any key takes: time arithmetic on it cannot overflow.
const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 86_400);

/// A positive duration up to 10 years, `default` when absent.
fn duration(p: &mut Problems, key: &str, v: Option<String>, default: Duration) -> Duration {
    match v.as_deref().map(parse_duration) {
        None => default,
        Some(Ok(d)) if !d.is_zero() && d <= MAX_DURATION => d,
        _ => {
            p.push(format!(
                "{key} is not a duration from 1ms to 10 years (\"500ms\", \"30s\", \"5m\", \"2h\", \"180d\")"
            ));
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
        _ => {
            p.push(format!("{key} must be {lo} to {hi}{note}"));
            default
        }
    }
}

/// An `https://` URL, or `http://` to a loopback host or with `allow_insecure_http = true`.
fn http_url(p: &mut Problems, key: &str, v: Option<&str>, allow_insecure: bool) -> Option<Url> {
    match v.map(Url::parse) {
        Some(Ok(u)) if u.scheme() == "https" => Some(u),
        Some(Ok(u)) if u.scheme() == "http" && (allow_insecure || is_loopback(&u)) => Some(u),
        Some(Ok(u)) if u.scheme() == "http" => {
            p.push(format!(
                "{key} is http:// to another host: use https://, or set allow_insecure_http = true \
                 beside it"
            ));
            None
        }
        Some(Ok(_)) => {
            p.push(format!("{key} must be an https:// URL"));
            None
        }
        Some(Err(e)) => {
            p.push(format!("{key} is not a URL: {e}"));
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
    if crate::cron::validate(expr).is_err() {
        p.push(format!(
            "{key} is not a cron schedule (6 fields, seconds first, UTC, e.g. \"0 */5 * * * *\")"
        ));
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
            "{key}.name is used twice (webhook and recipient names share one namespace)"
        ));
    }
    name
}
