//! The configuration as deserialised from the merged sources (TOML file, then environment
//! overrides), before validation, and the detection of keys no section accepts.

use figment::Figment;
use figment::value::{Dict, Value};
use serde::Deserialize;

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
    pub http: RawHttp,
    #[serde(default)]
    pub delivery: RawDelivery,
    #[serde(default)]
    pub webhooks: Vec<RawWebhook>,
    pub email: Option<RawEmail>,
    #[serde(default)]
    pub log: RawLog,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawLedger {
    pub path: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawSingapay {
    pub base_url: Option<String>,
    pub partner_id: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub client_secret_file: Option<String>,
    pub timeout: Option<String>,
    pub per_page: Option<i64>,
    pub max_retries: Option<i64>,
    pub concurrency: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawSync {
    pub schedule: Option<String>,
    pub notify_on_baseline: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawAccount {
    pub id: Option<String>,
    pub name: Option<String>,
    pub schedule: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawHttp {
    pub listen: Option<String>,
    pub admin_token: Option<String>,
    pub admin_token_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawDelivery {
    pub retry_schedule: Option<Vec<String>>,
    pub timeout: Option<String>,
    pub concurrency: Option<i64>,
    pub per_subscriber_concurrency: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawWebhook {
    pub name: Option<String>,
    pub url: Option<String>,
    pub secret: Option<String>,
    pub secret_file: Option<String>,
    pub events: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawEmail {
    pub smtp_url: Option<String>,
    pub smtp_url_file: Option<String>,
    pub from: Option<String>,
    pub timeout: Option<String>,
    #[serde(default)]
    pub recipients: Vec<RawRecipients>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawRecipients {
    pub name: Option<String>,
    #[serde(default)]
    pub to: Vec<String>,
    pub events: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawLog {
    pub format: Option<String>,
    pub level: Option<String>,
}

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
