//! Config unit tests: defaults, every problem at once, the example file, secrets from files.

use super::*;
use secrecy::ExposeSecret;

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
    assert_eq!(
        c.sync.history_window,
        std::time::Duration::from_secs(7 * 86_400)
    );
    for key in [
        "path",
        "retention",
        "allow_insecure_http",
        "base_url",
        "partner_id",
        "client_id",
        "client_secret",
        "timeout",
        "per_page",
        "max_retries",
        "schedule",
        "notify_on_baseline",
        "history_window",
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

/// `GOOD` with `from` replaced by `to`.
fn good_with(from: &str, to: &str) -> String {
    assert!(GOOD.contains(from), "{from}");
    GOOD.replace(from, to)
}

fn problems(toml: &str) -> String {
    Config::from_toml_str(toml).unwrap_err().to_string()
}

#[test]
fn unsafe_setups_are_refused_naming_the_key() {
    // SMTP credentials in clear text to another host.
    let plain = good_with(
        "smtp_url = \"smtp://127.0.0.1:2525\"",
        "smtp_url = \"smtp://user:pw@mail.example.com:587\"",
    );
    assert!(problems(&plain).contains("email.smtp_url sends credentials without TLS"));
    for ok in [
        "smtp_url = \"smtp://user:pw@mail.example.com:587?tls=required\"",
        "smtp_url = \"smtps://user:pw@mail.example.com:465\"",
        "smtp_url = \"smtp://user:pw@localhost:25\"",
        "smtp_url = \"smtp://relay.example.com:25\"",
    ] {
        let toml = good_with("smtp_url = \"smtp://127.0.0.1:2525\"", ok);
        assert!(Config::from_toml_str(&toml).is_ok(), "{ok}");
    }
    // http:// to another host, for SingaPay and for a webhook, unless allowed on that entry.
    let http_base = good_with(
        "[singapay]\n",
        "[singapay]\nbase_url = \"http://payment-b2b.singapay.id\"\n",
    );
    assert!(problems(&http_base).contains("singapay.base_url is http:// to another host"));
    let allowed = http_base.replace("[singapay]\n", "[singapay]\nallow_insecure_http = true\n");
    assert!(Config::from_toml_str(&allowed).is_ok());
    let http_hook = good_with(
        "url = \"https://erp.example.com/hooks\"",
        "url = \"http://erp.example.com/hooks\"",
    );
    assert!(problems(&http_hook).contains("webhooks[0].url is http:// to another host"));
    let allowed = http_hook.replace(
        "url = \"http://erp.example.com/hooks\"",
        "url = \"http://erp.example.com/hooks\"\nallow_insecure_http = true",
    );
    assert!(Config::from_toml_str(&allowed).is_ok());
    // Webhook keys of 16 and 65 bytes.
    for key in [[7u8; 16].to_vec(), [7u8; 65].to_vec()] {
        use base64::Engine;
        let secret = base64::engine::general_purpose::STANDARD.encode(&key);
        let toml = good_with(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            &format!("whsec_{secret}"),
        );
        assert!(
            problems(&toml).contains("webhooks[0].secret must hold a key of 24 to 64 bytes"),
            "{} bytes",
            key.len()
        );
    }
    // A level that is not one.
    let level = format!("{GOOD}\n[log]\nlevel = \"verbose\"\n");
    assert!(problems(&level).contains("log.level is not a tracing filter"));
}

#[test]
fn no_problem_echoes_a_value() {
    let bad = r#"
[singapay]
partner_id = ["p-secret-in-a-list"]
client_id = "c"
client_secret = "s"
per_page = 100000
timeout = "t-secret-timeout"
base_url = "ftp://u-secret@host"
[sync]
schedule = "s-secret-cron"
max_deletions = "m-secret"
[[accounts]]
id = "a-secret-account"
[http]
listen = "l-secret"
admin_token = "short-secret"
[[webhooks]]
name = "erp"
url = "https://erp.example.com"
secret = "whsec_w-secret!!"
events = ["e-secret-event"]
[email]
smtp_url = "x-secret://mail"
from = "f-secret"
[[email.recipients]]
name = "finance"
to = ["r-secret"]
[log]
format = "g-secret"
"#;
    let all = Config::from_toml_str(bad).unwrap_err().to_string();
    assert!(
        !all.contains("secret-") && !all.contains("short-secret"),
        "{all}"
    );
    let second = Config::from_toml_str(&bad.replace("partner_id = [\"p-secret-in-a-list\"]\n", ""))
        .unwrap_err();
    assert!(second.0.len() >= 10, "{second}");
    assert!(!second.to_string().contains("secret-"), "{second}");
    // A TOML syntax error on a line holding a secret says where, not what.
    let syntax =
        Config::from_toml_str("[http]\nadmin_token = \"unterminated-secret\n").unwrap_err();
    let text = syntax.to_string();
    assert!(text.contains("line 2"), "{text}");
    assert!(!text.contains("unterminated-secret"), "{text}");
}

#[test]
fn environment_overrides_keep_digits_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, GOOD).unwrap();
    // SAFETY: this is the only test of the process that reads these variables.
    unsafe {
        std::env::set_var("SINGAPAY_SYNC__HTTP__ADMIN_TOKEN", "0012345678901234567");
        std::env::set_var("SINGAPAY_SYNC__SINGAPAY__PARTNER_ID", "000123");
        std::env::set_var("SINGAPAY_SYNC__SINGAPAY__PER_PAGE", "50");
        std::env::set_var("singapay_sync__sync__notify_on_baseline", "true");
    }
    let c = Config::load(Some(&path));
    unsafe {
        for k in [
            "SINGAPAY_SYNC__HTTP__ADMIN_TOKEN",
            "SINGAPAY_SYNC__SINGAPAY__PARTNER_ID",
            "SINGAPAY_SYNC__SINGAPAY__PER_PAGE",
            "singapay_sync__sync__notify_on_baseline",
        ] {
            std::env::remove_var(k);
        }
    }
    let c = c.unwrap();
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(&c.http.admin_token),
        "0012345678901234567"
    );
    assert_eq!(c.singapay.partner_id, "000123");
    assert_eq!(c.singapay.per_page, 50);
    assert!(c.sync.notify_on_baseline);
}

#[test]
fn max_deletions_takes_links_or_a_share() {
    let with = |v: &str| {
        Config::from_toml_str(&good_with(
            "[[accounts]]",
            &format!("[sync]\nmax_deletions = {v}\n[[accounts]]"),
        ))
        .map(|c| c.sync.max_deletions)
    };
    assert_eq!(
        Config::from_toml_str(GOOD).unwrap().sync.max_deletions,
        DeletionLimit::Default
    );
    assert_eq!(with("50").unwrap(), DeletionLimit::Links(50));
    assert_eq!(with("\"5%\"").unwrap(), DeletionLimit::Percent(5));
    assert!(with("\"lots\"").is_err());
    assert!(with("\"150%\"").is_err());
    assert_eq!(DeletionLimit::Default.allowed(103), 20);
    assert_eq!(DeletionLimit::Default.allowed(100_000), 2_000);
    assert_eq!(DeletionLimit::Default.allowed(1_001), 21);
    assert_eq!(DeletionLimit::Percent(5).allowed(1_000), 50);
    assert_eq!(DeletionLimit::Links(3).allowed(1_000), 3);
}

#[test]
fn history_window_is_a_duration_of_seven_days_by_default() {
    let with = |v: &str| {
        Config::from_toml_str(&good_with(
            "[[accounts]]",
            &format!("[sync]\nhistory_window = {v}\n[[accounts]]"),
        ))
        .map(|c| c.sync.history_window)
    };
    assert_eq!(
        Config::from_toml_str(GOOD).unwrap().sync.history_window,
        std::time::Duration::from_secs(7 * 86_400)
    );
    assert_eq!(
        with("\"36h\"").unwrap(),
        std::time::Duration::from_secs(36 * 3600)
    );
    for bad in ["\"soon\"", "\"0s\""] {
        let e = with(bad).unwrap_err().to_string();
        assert!(e.contains("sync.history_window"), "{e}");
    }
}

#[test]
fn inbound_is_off_unless_configured_and_gets_its_defaults() {
    assert!(Config::from_toml_str(GOOD).unwrap().inbound.is_none());
    let c = Config::from_toml_str(&format!("{GOOD}[inbound]\n")).unwrap();
    let i = c.inbound.unwrap();
    assert_eq!(i.listen.to_string(), DEFAULT_INBOUND_LISTEN);
    assert_eq!(i.path, DEFAULT_INBOUND_PATH);
    assert_eq!(i.tolerance, Duration::from_secs(300));
    assert!(i.keys.is_empty());
}

#[test]
fn inbound_keys_come_inline_and_from_a_file_and_the_path_keeps_its_query() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("keys");
    std::fs::write(&f, "file-key-1\n\n  file-key-2  \n").unwrap();
    let toml = format!(
        "{GOOD}[inbound]\nlisten = \"127.0.0.1:9789\"\npath = \"/hooks/singapay?src=pl\"\n\
         tolerance = \"2m\"\nkeys = [\"inline-key\"]\nkeys_file = \"{}\"\n",
        f.display()
    );
    let i = Config::from_toml_str(&toml).unwrap().inbound.unwrap();
    assert_eq!(i.path, "/hooks/singapay?src=pl");
    assert_eq!(i.route(), "/hooks/singapay");
    assert_eq!(i.tolerance, Duration::from_secs(120));
    let keys: Vec<&str> = i
        .keys
        .iter()
        .map(secrecy::ExposeSecret::expose_secret)
        .collect();
    assert_eq!(keys, ["inline-key", "file-key-1", "file-key-2"]);
    // Debug output never shows a key.
    assert!(!format!("{i:?}").contains("inline-key"));
}

#[test]
fn every_inbound_problem_is_listed() {
    let all = problems(&format!(
        "{GOOD}[inbound]\nlisten = \"127.0.0.1:8787\"\npath = \"singapay webhook\"\n\
         tolerance = \"0s\"\nkeys = [\" \"]\nkeys_file = \"/nonexistent/keys\"\nport = 1\n"
    ));
    for part in [
        "inbound.listen must not share http.listen's port",
        "inbound.path must be the ENDPOINT",
        "inbound.tolerance is not a positive duration",
        "inbound.keys[0] is empty",
        "inbound.keys_file cannot be read",
        "unknown key `inbound.port`",
    ] {
        assert!(all.contains(part), "{part} missing from:\n{all}");
    }
}

/// `[ledger]` and `[singapay]` of [`GOOD`] replaced by `head`, the rest kept.
fn with_head(head: &str, accounts: &str) -> String {
    let rest = GOOD.split("[http]").nth(1).unwrap_or_default();
    format!("{head}\n{accounts}\n[http]{rest}")
}

#[test]
fn credentials_are_named_by_accounts_and_the_default_is_optional_then() {
    let toml = with_head(
        r#"[ledger]
url = "sqlite:///tmp/multi.db"
[singapay]
base_url = "https://api.example.com"
[[credentials]]
name = "toko-b"
partner_id = "pb"
client_id = "cb"
client_secret = "secret-b-0123"
[[credentials]]
name = "toko-c"
base_url = "https://other.example.com"
partner_id = "pc"
client_id = "cc"
client_secret = "secret-c-0123""#,
        r#"[[accounts]]
id = "01K7P073Q8RE2A9PQT8Q7MXPN4"
credential = "toko-b"
[[accounts]]
id = "01K946KF851RK7FX075GJHBVKF"
credential = "toko-c""#,
    );
    let c = Config::from_toml_str(&toml).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.ledger.path, PathBuf::from("/tmp/multi.db"));
    assert!(!c.singapay.has_credential());
    assert_eq!(c.credentials.len(), 2);
    assert_eq!(c.accounts[0].credential.as_deref(), Some("toko-b"));
    let b = c.credentials[0].client_config(&c.singapay);
    assert_eq!(b.base_url.as_str(), "https://api.example.com/");
    assert_eq!(b.timeout, c.singapay.timeout);
    assert_eq!(
        c.credentials[1].base_url.as_str(),
        "https://other.example.com/"
    );
    let keys: Vec<String> = c
        .client_secrets()
        .iter()
        .map(|k| secrecy::ExposeSecret::expose_secret(k).to_string())
        .collect();
    assert_eq!(keys, ["secret-b-0123", "secret-c-0123"]);
    let client = c.singapay_client().unwrap();
    let second = AccountId::parse("01K946KF851RK7FX075GJHBVKF").unwrap();
    assert_eq!(client.credential_name(Some(&second)), Some("toko-c"));
    assert!(!format!("{c:?}").contains("secret-b-0123"));
}

#[test]
fn credential_problems_are_listed_with_the_others() {
    let toml = with_head(
        r#"[ledger]
url = "postgres://sync:pw@db.example.com/ledger"
path = "/tmp/x.db"
[[credentials]]
name = "default"
partner_id = "p"
client_id = "c"
client_secret = "s"
[[credentials]]
name = "b b"
client_id = "c"
client_secret = "s"
client_secret_file = "/nonexistent""#,
        r#"[[accounts]]
id = "01K7P073Q8RE2A9PQT8Q7MXPN4"
credential = "nope"
[[accounts]]
id = "01K946KF851RK7FX075GJHBVKF""#,
    );
    let problems = Config::from_toml_str(&toml).unwrap_err().0;
    for want in [
        "ledger.url and ledger.path are both set: keep one (url)",
        "credentials[0].name \"default\" is the [singapay] credential's: choose another",
        "credentials[1].name must be 1 to 64 letters, digits, '-', '_' or '.'",
        "credentials[1].partner_id is required",
        "credentials[1].client_secret and credentials[1].client_secret_file are both set: keep one",
        "accounts[0].credential \"nope\" is not a [[credentials]] name (known: default)",
        // The second account names none: [singapay]'s credential is required.
        "singapay.partner_id is required",
    ] {
        assert!(problems.iter().any(|p| p == want), "{want}\n{problems:#?}");
    }
    // The URL (with its password) is never quoted back.
    assert!(!problems.iter().any(|p| p.contains("pw@")), "{problems:#?}");
}

#[test]
fn a_ledger_url_names_a_sqlite_file_or_a_postgres_database() {
    let ledger = |l: &str| {
        Config::from_toml_str(&GOOD.replace("path = \"/tmp/x.db\"", l)).map(|c| c.ledger.path)
    };
    assert_eq!(
        ledger("url = \"sqlite:///var/lib/x/ledger.db\"").unwrap(),
        PathBuf::from("/var/lib/x/ledger.db")
    );
    assert_eq!(
        ledger("url = \"sqlite://ledger.db\"").unwrap(),
        PathBuf::from("ledger.db")
    );
    assert_eq!(
        ledger("url = \"sqlite:rel/ledger.db\"").unwrap(),
        PathBuf::from("rel/ledger.db")
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("url");
    std::fs::write(&file, "sqlite:///tmp/from-file.db\n").unwrap();
    assert_eq!(
        ledger(&format!("url_file = {:?}", file.display().to_string())).unwrap(),
        PathBuf::from("/tmp/from-file.db")
    );
    let pg = Config::from_toml_str(&GOOD.replace(
        "path = \"/tmp/x.db\"",
        "url = \"postgres://u:secret@db.example.com/ledger\"",
    ))
    .unwrap();
    assert_eq!(
        pg.ledger
            .postgres
            .as_ref()
            .map(|u| u.expose_secret().to_string()),
        Some("postgres://u:secret@db.example.com/ledger".to_string())
    );
    assert!(
        !format!("{pg:?}").contains("secret@"),
        "the URL is kept secret"
    );
    for (url, want) in [
        (
            "postgres://u:secret@h:notaport/db",
            "not a valid PostgreSQL URL",
        ),
        ("mysql://h/db", "must start with sqlite:// or postgres://"),
        ("sqlite://", "must name a file"),
        ("sqlite:///x.db?mode=ro", "must name a file"),
    ] {
        let e = ledger(&format!("url = {url:?}")).unwrap_err().0;
        assert!(e.iter().any(|p| p.contains(want)), "{url}: {e:?}");
        assert!(!e.iter().any(|p| p.contains("secret")), "{e:?}");
    }
}
