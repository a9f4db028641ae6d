//! Config unit tests: defaults, every problem at once, the example file, secrets from files.

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
    // 5s, 5m, 30m, 2h, 5h, 10h, 10h: 8 attempts over about 27.6 hours.
    assert_eq!(c.delivery.retry_schedule.len(), 7);
    let total: Duration = c.delivery.retry_schedule.iter().sum();
    assert_eq!(total.as_secs(), 99_305);
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
    let text = include_str!("../../config/example.toml");
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
