//! `[inbound]`: the doorbell listener (DESIGN §14) and its validation.

use std::net::SocketAddr;
use std::time::Duration;

use secrecy::SecretString;

use super::parse_duration;
use super::raw::RawInbound;

/// `[inbound]`: SingaPay's own webhooks, the doorbell (DESIGN §14). Off unless the section is
/// present.
#[derive(Debug, Clone)]
pub struct InboundConfig {
    /// Address of the inbound listener (default `0.0.0.0:8789`), separate from the admin API.
    pub listen: SocketAddr,
    /// The ENDPOINT exactly as registered in SingaPay's dashboard "Notif URL" fields: path plus
    /// query string (default `/singapay/webhook`). It is part of the signed string (DOC2
    /// webhooks "Security and signature"), so a proxy must pass it through unchanged; the listener serves its path.
    pub path: String,
    /// How far `X-Timestamp` may be from now, either way (default 5 minutes, DOC2 webhooks "Security and signature").
    pub tolerance: Duration,
    /// Candidate HMAC-SHA512 keys beyond the configured client secret (`keys`, and one per
    /// non-empty line of `keys_file`).
    pub keys: Vec<SecretString>,
}

impl InboundConfig {
    /// The path the listener routes (the ENDPOINT without its query string).
    pub fn route(&self) -> &str {
        self.path.split('?').next().unwrap_or("/")
    }
}

/// Default `inbound.listen`.
pub const DEFAULT_INBOUND_LISTEN: &str = "0.0.0.0:8789";
/// Default `inbound.path`.
pub const DEFAULT_INBOUND_PATH: &str = "/singapay/webhook";

/// Validates `[inbound]`, adding what is wrong to `p`; `admin` is `http.listen` (the two must
/// not share a port).
pub(super) fn validate(p: &mut Vec<String>, i: RawInbound, admin: SocketAddr) -> InboundConfig {
    let listen = match i
        .listen
        .as_deref()
        .unwrap_or(DEFAULT_INBOUND_LISTEN)
        .parse()
    {
        Ok(a) => a,
        Err(_) => {
            p.push("inbound.listen is not an address:port (e.g. 0.0.0.0:8789)".into());
            SocketAddr::from(([0, 0, 0, 0], 8789))
        }
    };
    if listen.port() != 0 && listen.port() == admin.port() {
        p.push(
            "inbound.listen must not share http.listen's port: the admin API stays private".into(),
        );
    }
    let path = i.path.unwrap_or_else(|| DEFAULT_INBOUND_PATH.to_string());
    if !path.starts_with('/') || path.contains(char::is_whitespace) || path.contains('#') {
        p.push(format!(
            "inbound.path must be the ENDPOINT as registered in SingaPay's dashboard: a path \
             starting with / (query string allowed), got {path:?}"
        ));
    }
    let mut keys = Vec::new();
    for (n, k) in i.keys.unwrap_or_default().into_iter().enumerate() {
        if k.trim().is_empty() {
            p.push(format!("inbound.keys[{n}] is empty"));
        } else {
            keys.push(SecretString::from(k.trim().to_string()));
        }
    }
    if let Some(file) = i.keys_file {
        match std::fs::read_to_string(&file) {
            Ok(text) => keys.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(|l| SecretString::from(l.to_string())),
            ),
            Err(e) => p.push(format!("inbound.keys_file cannot be read: {}", e.kind())),
        }
    }
    InboundConfig {
        listen,
        path,
        tolerance: match i.tolerance.as_deref().map(parse_duration) {
            None => Duration::from_secs(300),
            Some(Ok(d)) if !d.is_zero() => d,
            _ => {
                p.push("inbound.tolerance is not a positive duration (\"5m\", \"300s\")".into());
                Duration::from_secs(300)
            }
        },
        keys,
    }
}
