//! The configuration as deserialised from the merged sources (TOML file, then environment
//! overrides), before validation: the environment as strings only, lenient scalars, the detection
//! of keys no section accepts, and deserialisation errors told without the values.
//!
//! Scalars are lenient because environment values are text (`SINGAPAY_SYNC__SINGAPAY__PER_PAGE=50`)
//! and a TOML file may quote a number: an integer or a boolean key takes `50` or `"50"`, a string
//! key takes `"0123"` or `123`. Environment values are never reinterpreted (figment's own `Env`
//! provider turns `0123456789` into the integer `123456789`: a secret of digits would lose its
//! leading zero).

use figment::Figment;
use figment::value::{Dict, Value};
use serde::{Deserialize, Deserializer};

/// The environment variables `SINGAPAY_SYNC__<SECTION>__<KEY>` (case-insensitive), each as a
/// string at `section.key` (a value starting with `[` is read as a TOML-like array).
pub(super) fn environment(mut fig: Figment) -> Figment {
    const PREFIX: &str = "SINGAPAY_SYNC__";
    for (name, value) in std::env::vars_os() {
        let (Some(name), Some(value)) = (name.to_str(), value.to_str()) else {
            continue;
        };
        let Some(path) = name
            .get(..PREFIX.len())
            .filter(|p| p.eq_ignore_ascii_case(PREFIX))
            .and_then(|_| name.get(PREFIX.len()..))
        else {
            continue;
        };
        let key = path
            .split("__")
            .collect::<Vec<_>>()
            .join(".")
            .to_ascii_lowercase();
        if key.is_empty() {
            continue;
        }
        let value = if value.trim_start().starts_with('[') {
            value
                .parse::<Value>()
                .unwrap_or_else(|_| Value::from(value))
        } else {
            Value::from(value)
        };
        fig = fig.merge((key, value));
    }
    fig
}

/// A scalar as text: strings as they are, numbers and booleans written out.
fn scalar_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Int(i64),
        Uint(u64),
        Float(f64),
        Bool(bool),
    }
    let scalar = Option::<Scalar>::deserialize(d).map_err(|_| {
        serde::de::Error::custom("expected a single value (text, a number or true/false)")
    })?;
    Ok(scalar.map(|s| match s {
        Scalar::Text(t) => t,
        Scalar::Int(n) => n.to_string(),
        Scalar::Uint(n) => n.to_string(),
        Scalar::Float(f) => f.to_string(),
        Scalar::Bool(b) => b.to_string(),
    }))
}

/// A string key: `"text"`, or a number or boolean written out.
pub(super) fn string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    scalar_text(d)
}

/// An integer key: `50` or `"50"`.
pub(super) fn integer<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    match scalar_text(d)? {
        None => Ok(None),
        Some(t) => t
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom("expected an integer")),
    }
}

/// A boolean key: `true` or `"true"` (also `1`/`0`, `yes`/`no`).
pub(super) fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match scalar_text(d)?.map(|t| t.trim().to_ascii_lowercase()) {
        None => Ok(None),
        Some(t) => match t.as_str() {
            "true" | "1" | "yes" => Ok(Some(true)),
            "false" | "0" | "no" => Ok(Some(false)),
            _ => Err(serde::de::Error::custom("expected true or false")),
        },
    }
}

/// A deserialisation error as one line naming the key and what it expects, never the value
/// (a misplaced secret must not reach the terminal or the journal).
pub(super) fn describe(e: &figment::Error) -> String {
    use figment::error::Kind;
    let key = if e.path.is_empty() {
        "the configuration".to_string()
    } else {
        e.path.join(".")
    };
    let what = match &e.kind {
        Kind::InvalidType(_, expected) => format!("expected {expected}"),
        Kind::InvalidValue(_, expected) => format!("invalid value, expected {expected}"),
        Kind::InvalidLength(n, expected) => format!("{n} items, expected {expected}"),
        Kind::UnknownVariant(_, known) => format!("unknown value (known: {})", known.join(", ")),
        Kind::UnknownField(f, _) => format!("unknown key `{f}`"),
        Kind::MissingField(f) => format!("`{f}` is required"),
        Kind::DuplicateField(f) => format!("`{f}` is given twice"),
        Kind::Message(m) => {
            // A TOML syntax error quotes the offending line: keep its position and reason only.
            let lines: Vec<&str> = m
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.contains('|'))
                .collect();
            match lines.as_slice() {
                [] => "unreadable".to_string(),
                [one] => one.to_string(),
                [first, .., last] => format!("{first}: {last}"),
            }
        }
        other => format!("{other:?}")
            .split('(')
            .next()
            .unwrap_or("invalid")
            .to_string(),
    };
    format!("{key}: {what}")
}

/// The whole file; every key optional (validation reports what is missing).
#[derive(Debug, Default, Deserialize)]
pub(super) struct Raw {
    #[serde(default)]
    pub ledger: RawLedger,
    #[serde(default)]
    pub singapay: RawSingapay,
    #[serde(default)]
    pub sync: RawSync,
    #[serde(default)]
    pub accounts: Vec<RawAccount>,
    #[serde(default)]
    pub credentials: Vec<RawCredential>,
    #[serde(default)]
    pub http: RawHttp,
    #[serde(default)]
    pub delivery: RawDelivery,
    #[serde(default)]
    pub webhooks: Vec<RawWebhook>,
    pub email: Option<RawEmail>,
    #[serde(default)]
    pub log: RawLog,
    pub inbound: Option<RawInbound>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawInbound {
    #[serde(default, deserialize_with = "string")]
    pub listen: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub path: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub tolerance: Option<String>,
    pub keys: Option<Vec<String>>,
    #[serde(default, deserialize_with = "string")]
    pub keys_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawLedger {
    #[serde(default, deserialize_with = "string")]
    pub path: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub url: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub url_file: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub retention: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub event_retention: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub lease: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawSingapay {
    #[serde(default, deserialize_with = "string")]
    pub base_url: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub partner_id: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub client_id: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub client_secret: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub client_secret_file: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub timeout: Option<String>,
    #[serde(default, deserialize_with = "integer")]
    pub per_page: Option<i64>,
    #[serde(default, deserialize_with = "integer")]
    pub max_retries: Option<i64>,
    #[serde(default, deserialize_with = "integer")]
    pub concurrency: Option<i64>,
    #[serde(default, deserialize_with = "boolean")]
    pub allow_insecure_http: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawSync {
    #[serde(default, deserialize_with = "string")]
    pub schedule: Option<String>,
    #[serde(default, deserialize_with = "boolean")]
    pub notify_on_baseline: Option<bool>,
    #[serde(default, deserialize_with = "string")]
    pub max_deletions: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub history_window: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawAccount {
    #[serde(default, deserialize_with = "string")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub schedule: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub credential: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawCredential {
    #[serde(default, deserialize_with = "string")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub base_url: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub partner_id: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub client_id: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub client_secret: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub client_secret_file: Option<String>,
    #[serde(default, deserialize_with = "boolean")]
    pub allow_insecure_http: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawHttp {
    #[serde(default, deserialize_with = "string")]
    pub listen: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub admin_token: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub admin_token_file: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub header_timeout: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub request_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawDelivery {
    pub retry_schedule: Option<Vec<String>>,
    #[serde(default, deserialize_with = "string")]
    pub timeout: Option<String>,
    #[serde(default, deserialize_with = "integer")]
    pub concurrency: Option<i64>,
    #[serde(default, deserialize_with = "integer")]
    pub per_subscriber_concurrency: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawWebhook {
    #[serde(default, deserialize_with = "string")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub url: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub secret: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub secret_file: Option<String>,
    pub events: Option<Vec<String>>,
    #[serde(default, deserialize_with = "boolean")]
    pub allow_insecure_http: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawEmail {
    #[serde(default, deserialize_with = "string")]
    pub smtp_url: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub smtp_url_file: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub from: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub timeout: Option<String>,
    #[serde(default)]
    pub recipients: Vec<RawRecipients>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawRecipients {
    #[serde(default, deserialize_with = "string")]
    pub name: Option<String>,
    #[serde(default)]
    pub to: Vec<String>,
    pub events: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawLog {
    #[serde(default, deserialize_with = "string")]
    pub format: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub level: Option<String>,
}

/// The keys each section accepts (a misspelt key is reported, not silently ignored).
const KNOWN_KEYS: &[(&str, &[&str])] = &[
    (
        "ledger",
        &[
            "path",
            "url",
            "url_file",
            "retention",
            "event_retention",
            "lease",
        ],
    ),
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
            "allow_insecure_http",
        ],
    ),
    (
        "sync",
        &[
            "schedule",
            "notify_on_baseline",
            "max_deletions",
            "history_window",
        ],
    ),
    ("accounts", &["id", "name", "schedule", "credential"]),
    (
        "credentials",
        &[
            "name",
            "base_url",
            "partner_id",
            "client_id",
            "client_secret",
            "client_secret_file",
            "allow_insecure_http",
        ],
    ),
    (
        "http",
        &[
            "listen",
            "admin_token",
            "admin_token_file",
            "header_timeout",
            "request_timeout",
        ],
    ),
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
        &[
            "name",
            "url",
            "secret",
            "secret_file",
            "events",
            "allow_insecure_http",
        ],
    ),
    (
        "email",
        &["smtp_url", "smtp_url_file", "from", "timeout", "recipients"],
    ),
    ("log", &["format", "level"]),
    (
        "inbound",
        &["listen", "path", "tolerance", "keys", "keys_file"],
    ),
];

/// The keys of one `[[email.recipients]]` entry.
const RECIPIENT_KEYS: &[&str] = &["name", "to", "events"];

/// Reports every key of `dict` (at `path`) that is not in `known`.
fn check_keys(path: &str, dict: &Dict, known: &[&str], out: &mut Vec<String>) {
    for k in dict.keys() {
        if !known.contains(&k.as_str()) {
            out.push(format!("unknown key `{path}.{k}`"));
        }
    }
}

/// Every key of the merged sources that no section accepts, as "unknown key `a.b`" (and
/// "unknown section `x`").
pub(super) fn unknown_keys(fig: &Figment) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(Value::Dict(_, top)) = fig.extract::<Value>() else {
        return out;
    };
    for (section, value) in &top {
        let Some((_, known)) = KNOWN_KEYS.iter().find(|(s, _)| s == section) else {
            out.push(format!("unknown section `{section}`"));
            continue;
        };
        match value {
            Value::Dict(_, d) => {
                check_keys(section, d, known, &mut out);
                if section == "email"
                    && let Some(Value::Array(_, rs)) = d.get("recipients")
                {
                    for (i, r) in rs.iter().enumerate() {
                        if let Value::Dict(_, rd) = r {
                            check_keys(
                                &format!("email.recipients[{i}]"),
                                rd,
                                RECIPIENT_KEYS,
                                &mut out,
                            );
                        }
                    }
                }
            }
            Value::Array(_, items) => {
                for (i, item) in items.iter().enumerate() {
                    if let Value::Dict(_, d) = item {
                        check_keys(&format!("{section}[{i}]"), d, known, &mut out);
                    }
                }
            }
            _ => {}
        }
    }
    out
}
