//! The checks every section shares: secrets inline or from a file, durations, bounded integers,
//! URLs, event filters, cron expressions, subscriber names. Each adds what is wrong to one list
//! of problems (never quoting a value) and returns a placeholder, so validation goes on.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use super::parse_duration;
use crate::types::EventType;

/// What is wrong so far, one line per problem.
pub(super) type Problems = Vec<String>;

/// Whether the URL's host is this machine (`localhost`, 127.0.0.0/8, `::1`).
pub(super) fn is_loopback(u: &Url) -> bool {
    match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// A secret given inline or as `<key>_file` (trimmed file contents), not both.
pub(super) fn secret(
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
pub(super) fn events(
    p: &mut Problems,
    key: &str,
    v: Option<Vec<String>>,
) -> Option<BTreeSet<EventType>> {
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
pub(super) const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 86_400);

/// A positive duration up to 10 years, `default` when absent.
pub(super) fn duration(
    p: &mut Problems,
    key: &str,
    v: Option<String>,
    default: Duration,
) -> Duration {
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
pub(super) fn required(p: &mut Problems, key: &str, v: Option<String>) -> String {
    match v {
        Some(s) if !s.trim().is_empty() => s.trim().to_string(),
        _ => {
            p.push(format!("{key} is required"));
            String::new()
        }
    }
}

/// An integer in `lo..=hi` (`default` when absent); `note` explains the bound.
pub(super) fn int_in(
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
pub(super) fn http_url(
    p: &mut Problems,
    key: &str,
    v: Option<&str>,
    allow_insecure: bool,
) -> Option<Url> {
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
pub(super) fn cron(p: &mut Problems, key: &str, expr: &str) {
    if crate::cron::validate(expr).is_err() {
        p.push(format!(
            "{key} is not a cron schedule (6 fields, seconds first, UTC, e.g. \"0 */5 * * * *\")"
        ));
    }
}

/// A subscriber's unique name (`<key>.name`).
pub(super) fn subscriber_name(
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
