//! The configuration of a daemon pointed at a sandbox, as the demo, the integration tests and the
//! benchmarks run it: one builder, so that they all exercise the same keys the same way.

use std::path::PathBuf;

use crate::config::{Config, ConfigErrors};

use super::{SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, SANDBOX_PARTNER_ID, SEED_ACCOUNT};

/// One `[[accounts]]` entry.
#[derive(Debug, Clone)]
pub struct AccountEntry {
    /// ULID.
    pub id: String,
    /// Display name.
    pub name: Option<String>,
    /// Its own schedule.
    pub schedule: Option<String>,
    /// The `[[credentials]]` entry it names (`None`: `[singapay]`'s).
    pub credential: Option<String>,
}

impl AccountEntry {
    /// An account `id` with no name, schedule or credential of its own.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            name: None,
            schedule: None,
            credential: None,
        }
    }
}

/// One `[[credentials]]` entry (the sandbox must know it: `POST /_sandbox/credentials`).
#[derive(Debug, Clone)]
pub struct CredentialEntry {
    /// Its name.
    pub name: String,
    /// `partner_id`.
    pub partner_id: String,
    /// `client_id`.
    pub client_id: String,
    /// `client_secret`.
    pub client_secret: String,
}

/// One `[[webhooks]]` entry.
#[derive(Debug, Clone)]
pub struct WebhookEntry {
    /// Subscriber name.
    pub name: String,
    /// Callback URL.
    pub url: String,
    /// `whsec_…`.
    pub secret: String,
    /// Event filter (`None` = all).
    pub events: Option<Vec<String>>,
}

/// `[email]` with one recipient group named `finance`.
#[derive(Debug, Clone)]
pub struct EmailEntry {
    /// `smtp://…` or `file:///dir`.
    pub smtp_url: String,
    /// `From:`.
    pub from: String,
    /// The group's addresses.
    pub to: Vec<String>,
    /// The group's event filter (`None` = all).
    pub events: Option<Vec<String>>,
    /// SMTP command timeout.
    pub timeout: Option<String>,
}

/// `[inbound]`: the doorbell listener.
#[derive(Debug, Clone)]
pub struct InboundEntry {
    /// `inbound.listen` (e.g. `127.0.0.1:0`).
    pub listen: String,
    /// `inbound.path`: the ENDPOINT as registered (path and query).
    pub path: String,
    /// `inbound.tolerance`.
    pub tolerance: Option<String>,
    /// `inbound.keys`.
    pub keys: Vec<String>,
}

/// The keys a run against a sandbox varies; [`DaemonConfig::toml`] writes them (keys left `None`
/// keep the daemon's defaults) and [`DaemonConfig::build`] validates the result like any file.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// `ledger.path`.
    pub ledger: PathBuf,
    /// `ledger.url` instead of the path when set (a PostgreSQL ledger: `postgres://…`).
    pub ledger_url: Option<String>,
    /// `ledger.lease` (PostgreSQL: how long another instance's delivery claims hold).
    pub ledger_lease: Option<String>,
    /// `singapay.base_url`: the sandbox.
    pub sandbox_url: String,
    /// `singapay.per_page`.
    pub per_page: u64,
    /// `singapay.timeout`.
    pub singapay_timeout: Option<String>,
    /// `singapay.concurrency`.
    pub page_concurrency: Option<u64>,
    /// `sync.schedule`.
    pub schedule: String,
    /// `sync.notify_on_baseline`.
    pub notify_on_baseline: bool,
    /// `sync.history_window` (default: the daemon's, 7 days).
    pub history_window: Option<String>,
    /// `[[accounts]]` (default: the sandbox's seeded account, "Toko Utama").
    pub accounts: Vec<AccountEntry>,
    /// `[[credentials]]` (default: none; `[singapay]` is the sandbox's default credential).
    pub credentials: Vec<CredentialEntry>,
    /// `http.listen`.
    pub listen: String,
    /// `http.admin_token`.
    pub admin_token: String,
    /// `http.header_timeout`.
    pub header_timeout: Option<String>,
    /// `delivery.retry_schedule`.
    pub retry_schedule: Option<Vec<String>>,
    /// `delivery.timeout`.
    pub delivery_timeout: Option<String>,
    /// `delivery.concurrency`.
    pub delivery_concurrency: Option<u64>,
    /// `delivery.per_subscriber_concurrency`.
    pub per_subscriber_concurrency: Option<u64>,
    /// `[[webhooks]]`.
    pub webhooks: Vec<WebhookEntry>,
    /// `[email]`.
    pub email: Option<EmailEntry>,
    /// `[inbound]`.
    pub inbound: Option<InboundEntry>,
}

impl DaemonConfig {
    /// A daemon of the seeded account against the sandbox at `sandbox_url` with its ledger at
    /// `ledger`: pages of 25 (the size of SingaPay's list example), every 5 minutes, admin API on a
    /// free port, a random admin token, no subscribers.
    pub fn new(sandbox_url: impl Into<String>, ledger: impl Into<PathBuf>) -> Self {
        Self {
            ledger: ledger.into(),
            ledger_url: None,
            ledger_lease: None,
            sandbox_url: sandbox_url.into(),
            per_page: 25,
            singapay_timeout: None,
            page_concurrency: None,
            schedule: crate::config::DEFAULT_SCHEDULE.into(),
            notify_on_baseline: false,
            history_window: None,
            accounts: vec![AccountEntry {
                id: SEED_ACCOUNT.into(),
                name: Some("Toko Utama".into()),
                schedule: None,
                credential: None,
            }],
            credentials: Vec::new(),
            listen: "127.0.0.1:0".into(),
            admin_token: hex::encode(rand::random::<[u8; 16]>()),
            header_timeout: None,
            retry_schedule: None,
            delivery_timeout: None,
            delivery_concurrency: None,
            per_subscriber_concurrency: None,
            webhooks: Vec::new(),
            email: None,
            inbound: None,
        }
    }

    /// Turns the doorbell on: `[inbound]` on a free port of 127.0.0.1 with `path`.
    pub fn doorbell(&mut self, path: &str) -> &mut Self {
        self.inbound = Some(InboundEntry {
            listen: "127.0.0.1:0".into(),
            path: path.into(),
            tolerance: None,
            keys: Vec::new(),
        });
        self
    }

    /// Adds a webhook subscriber.
    pub fn webhook(
        &mut self,
        name: &str,
        url: &str,
        secret: &str,
        events: Option<&[&str]>,
    ) -> &mut Self {
        self.webhooks.push(WebhookEntry {
            name: name.into(),
            url: url.into(),
            secret: secret.into(),
            events: events.map(strings),
        });
        self
    }

    /// The configuration file.
    pub fn toml(&self) -> String {
        let mut t = String::new();
        let mut line = |l: String| {
            t.push_str(&l);
            t.push('\n');
        };
        line("[ledger]".into());
        match &self.ledger_url {
            Some(url) => line(format!("url = {}", quoted(url))),
            None => line(format!(
                "path = {}",
                quoted(&self.ledger.display().to_string())
            )),
        }
        if let Some(lease) = &self.ledger_lease {
            line(format!("lease = {}", quoted(lease)));
        }
        line("[singapay]".into());
        line(format!("base_url = {}", quoted(&self.sandbox_url)));
        line(format!("partner_id = {}", quoted(SANDBOX_PARTNER_ID)));
        line(format!("client_id = {}", quoted(SANDBOX_CLIENT_ID)));
        line(format!("client_secret = {}", quoted(SANDBOX_CLIENT_SECRET)));
        line(format!("per_page = {}", self.per_page));
        if let Some(t) = &self.singapay_timeout {
            line(format!("timeout = {}", quoted(t)));
        }
        if let Some(c) = self.page_concurrency {
            line(format!("concurrency = {c}"));
        }
        line("[sync]".into());
        line(format!("schedule = {}", quoted(&self.schedule)));
        line(format!("notify_on_baseline = {}", self.notify_on_baseline));
        if let Some(w) = &self.history_window {
            line(format!("history_window = {}", quoted(w)));
        }
        for a in &self.accounts {
            line("[[accounts]]".into());
            line(format!("id = {}", quoted(&a.id)));
            if let Some(n) = &a.name {
                line(format!("name = {}", quoted(n)));
            }
            if let Some(s) = &a.schedule {
                line(format!("schedule = {}", quoted(s)));
            }
            if let Some(c) = &a.credential {
                line(format!("credential = {}", quoted(c)));
            }
        }
        for c in &self.credentials {
            line("[[credentials]]".into());
            line(format!("name = {}", quoted(&c.name)));
            line(format!("partner_id = {}", quoted(&c.partner_id)));
            line(format!("client_id = {}", quoted(&c.client_id)));
            line(format!("client_secret = {}", quoted(&c.client_secret)));
        }
        line("[http]".into());
        line(format!("listen = {}", quoted(&self.listen)));
        line(format!("admin_token = {}", quoted(&self.admin_token)));
        if let Some(t) = &self.header_timeout {
            line(format!("header_timeout = {}", quoted(t)));
        }
        line("[delivery]".into());
        if let Some(rs) = &self.retry_schedule {
            line(format!("retry_schedule = {}", list(rs)));
        }
        if let Some(t) = &self.delivery_timeout {
            line(format!("timeout = {}", quoted(t)));
        }
        if let Some(n) = self.delivery_concurrency {
            line(format!("concurrency = {n}"));
        }
        if let Some(n) = self.per_subscriber_concurrency {
            line(format!("per_subscriber_concurrency = {n}"));
        }
        for w in &self.webhooks {
            line("[[webhooks]]".into());
            line(format!("name = {}", quoted(&w.name)));
            line(format!("url = {}", quoted(&w.url)));
            line(format!("secret = {}", quoted(&w.secret)));
            if let Some(ev) = &w.events {
                line(format!("events = {}", list(ev)));
            }
        }
        if let Some(e) = &self.email {
            line("[email]".into());
            line(format!("smtp_url = {}", quoted(&e.smtp_url)));
            line(format!("from = {}", quoted(&e.from)));
            if let Some(t) = &e.timeout {
                line(format!("timeout = {}", quoted(t)));
            }
            line("[[email.recipients]]".into());
            line("name = \"finance\"".into());
            line(format!("to = {}", list(&e.to)));
            if let Some(ev) = &e.events {
                line(format!("events = {}", list(ev)));
            }
        }
        if let Some(i) = &self.inbound {
            line("[inbound]".into());
            line(format!("listen = {}", quoted(&i.listen)));
            line(format!("path = {}", quoted(&i.path)));
            if let Some(t) = &i.tolerance {
                line(format!("tolerance = {}", quoted(t)));
            }
            if !i.keys.is_empty() {
                line(format!("keys = {}", list(&i.keys)));
            }
        }
        t
    }

    /// The validated configuration.
    ///
    /// Errors: what the daemon would report for this file.
    pub fn build(&self) -> Result<Config, ConfigErrors> {
        Config::from_toml_str(&self.toml())
    }
}

/// `&["a", "b"]` as owned strings.
pub fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A TOML basic string (JSON's escaping is a subset TOML accepts).
fn quoted(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

fn list(v: &[String]) -> String {
    let items: Vec<String> = v.iter().map(|s| quoted(s)).collect();
    format!("[{}]", items.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sandbox_daemon_config_is_valid_and_carries_every_entry() {
        let mut c = DaemonConfig::new("http://127.0.0.1:9", "/tmp/l.db");
        c.webhook(
            "erp",
            "http://127.0.0.1:9/hooks",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            Some(&["payment_link.paid"]),
        );
        c.email = Some(EmailEntry {
            smtp_url: "file:///tmp/mail".into(),
            from: "Sync <sync@example.com>".into(),
            to: strings(&["Finance \"Team\" <finance@example.com>"]),
            events: None,
            timeout: Some("5s".into()),
        });
        c.retry_schedule = Some(strings(&["1s", "2s"]));
        let cfg = c.build().unwrap_or_else(|e| panic!("{e}\n{}", c.toml()));
        assert_eq!(cfg.accounts[0].id.as_str(), SEED_ACCOUNT);
        assert_eq!(cfg.singapay.per_page, 25);
        assert_eq!(cfg.webhooks[0].name, "erp");
        assert_eq!(cfg.delivery.retry_schedule.len(), 2);
        let email = cfg.email.unwrap();
        assert_eq!(
            email.recipients[0].to[0].email.to_string(),
            "finance@example.com"
        );
    }
}
