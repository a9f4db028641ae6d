//! Shared test harness: sandbox, webhook receiver, SMTP listener, config, app.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::Value;
use singapay_sync::app::App;
use singapay_sync::config::Config;
use singapay_sync::sandbox::{
    SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, SANDBOX_PARTNER_ID, SEED_ACCOUNT, Sandbox,
    SandboxOptions,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

pub const ACCOUNT: &str = SEED_ACCOUNT;
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A running sandbox.
pub struct TestSandbox {
    pub base: String,
    pub http: reqwest::Client,
    _stop: tokio_util::sync::DropGuard,
}

impl TestSandbox {
    pub async fn start() -> Self {
        Self::start_with(103).await
    }

    pub async fn start_with(links: usize) -> Self {
        let stop = CancellationToken::new();
        let addr = Sandbox::new(SandboxOptions {
            links,
            ..Default::default()
        })
        .spawn(SocketAddr::from(([127, 0, 0, 1], 0)), stop.clone())
        .await
        .unwrap();
        Self {
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            _stop: stop.drop_guard(),
        }
    }

    fn link_path(&self, id: i64, action: &str) -> String {
        format!(
            "{}/_sandbox/accounts/{ACCOUNT}/links/{id}{action}",
            self.base
        )
    }

    /// A control-plane call that may be refused (e.g. paying a closed link): `(status, body)`.
    pub async fn try_ctl(&self, method: reqwest::Method, url: String, body: Value) -> (u16, Value) {
        let r = self
            .http
            .request(method, url)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub fn link_url(&self, id: i64, action: &str) -> String {
        self.link_path(id, action)
    }

    pub async fn ctl(&self, method: reqwest::Method, url: String, body: Value) -> Value {
        let (status, v) = self.try_ctl(method, url, body).await;
        assert!(
            (200..300).contains(&status),
            "control plane refused: {status} {v}"
        );
        v
    }

    pub async fn pay(&self, id: i64) -> Value {
        self.ctl(
            reqwest::Method::POST,
            self.link_path(id, "/pay"),
            serde_json::json!({}),
        )
        .await
    }
    pub async fn close(&self, id: i64) -> Value {
        self.ctl(
            reqwest::Method::POST,
            self.link_path(id, "/close"),
            serde_json::json!({}),
        )
        .await
    }
    pub async fn edit(&self, id: i64, patch: Value) -> Value {
        self.ctl(reqwest::Method::PATCH, self.link_path(id, ""), patch)
            .await
    }
    pub async fn delete(&self, id: i64) -> Value {
        self.ctl(reqwest::Method::DELETE, self.link_path(id, ""), Value::Null)
            .await
    }
    pub async fn add(&self, body: Value) -> Value {
        self.ctl(
            reqwest::Method::POST,
            format!("{}/_sandbox/accounts/{ACCOUNT}/links", self.base),
            body,
        )
        .await
    }
    pub async fn fault(&self, f: Value) {
        let r = self
            .http
            .post(format!("{}/_sandbox/faults", self.base))
            .json(&f)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }

    /// The request log: `(method, path, query, status)`.
    pub async fn requests(&self) -> Vec<(String, String, Option<String>, u16)> {
        let v: Value = json_of(self.http.get(format!("{}/_sandbox/requests", self.base))).await;
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["method"].as_str().unwrap().to_string(),
                    r["path"].as_str().unwrap().to_string(),
                    r["query"].as_str().map(str::to_owned),
                    r["status"].as_u64().unwrap() as u16,
                )
            })
            .collect()
    }

    pub async fn advance(&self, seconds: i64) {
        self.ctl(
            reqwest::Method::POST,
            format!("{}/_sandbox/clock/advance", self.base),
            serde_json::json!({ "seconds": seconds }),
        )
        .await;
    }
}

/// One callback as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Hit {
    pub webhook_id: String,
    pub verified: bool,
    pub answered: u16,
    pub body: Value,
}

/// A webhook receiver verifying signatures with the independent `standardwebhooks` crate; it
/// answers the scripted statuses in order, then 200.
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    pub secret: String,
    pub hits: Arc<Mutex<Vec<Hit>>>,
    script: Arc<Mutex<Vec<u16>>>,
    /// Milliseconds to wait before answering (stretches a burst).
    pub delay_ms: Arc<std::sync::atomic::AtomicU64>,
}

async fn receive(
    State(rx): State<Receiver>,
    h: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let delay = rx.delay_ms.load(std::sync::atomic::Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    let wh = standardwebhooks::Webhook::new(&rx.secret).unwrap();
    let verified = wh.verify(&body, &h).is_ok();
    let answered = {
        let mut s = rx.script.lock().unwrap();
        if !verified {
            401
        } else if s.is_empty() {
            200
        } else {
            s.remove(0)
        }
    };
    rx.hits.lock().unwrap().push(Hit {
        webhook_id: h
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        verified,
        answered,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    let mut resp = StatusCode::from_u16(answered).unwrap().into_response();
    if answered == 429 {
        resp.headers_mut()
            .insert("retry-after", "7200".parse().unwrap());
    }
    resp
}

impl Receiver {
    pub async fn start(script: Vec<u16>) -> Self {
        let (_, secret) = singapay_sync::standard_webhooks::WebhookSecret::generate();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let rx = Receiver {
            url: format!("http://{addr}/hooks"),
            secret,
            hits: Arc::new(Mutex::new(Vec::new())),
            script: Arc::new(Mutex::new(script)),
            delay_ms: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        };
        let app = Router::new()
            .route("/hooks", post(receive))
            .with_state(rx.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        rx
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }
}

/// One message received over SMTP.
#[derive(Debug, Clone)]
pub struct Mail {
    pub rcpt_to: Vec<String>,
    pub data: Vec<u8>,
}

/// A minimal SMTP listener (EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT) that keeps what it gets.
#[derive(Clone)]
pub struct SmtpSink {
    pub url: String,
    pub mails: Arc<Mutex<Vec<Mail>>>,
}

impl SmtpSink {
    pub async fn start() -> Self {
        Self::start_on(0).await
    }

    pub async fn start_on(port: u16) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let sink = SmtpSink {
            url: format!("smtp://{addr}"),
            mails: Arc::new(Mutex::new(Vec::new())),
        };
        let mails = Arc::clone(&sink.mails);
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let mails = Arc::clone(&mails);
                tokio::spawn(async move {
                    let (r, mut w) = sock.into_split();
                    let mut r = BufReader::new(r);
                    let _ = w.write_all(b"220 sink ESMTP\r\n").await;
                    let mut rcpt = Vec::new();
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                            break;
                        }
                        let cmd = line.trim_end().to_ascii_uppercase();
                        let reply: &[u8] = if cmd.starts_with("EHLO") || cmd.starts_with("HELO") {
                            b"250-sink\r\n250 8BITMIME\r\n"
                        } else if cmd.starts_with("RCPT TO:") {
                            rcpt.push(
                                line.trim_end()[8..]
                                    .trim()
                                    .trim_matches(['<', '>'])
                                    .to_string(),
                            );
                            b"250 OK\r\n"
                        } else if cmd.starts_with("DATA") {
                            let _ = w.write_all(b"354 go ahead\r\n").await;
                            let mut data = Vec::new();
                            loop {
                                let mut l = String::new();
                                if r.read_line(&mut l).await.unwrap_or(0) == 0 || l == ".\r\n" {
                                    break;
                                }
                                data.extend_from_slice(
                                    l.strip_prefix('.').unwrap_or(&l).as_bytes(),
                                );
                            }
                            mails.lock().unwrap().push(Mail {
                                rcpt_to: std::mem::take(&mut rcpt),
                                data,
                            });
                            b"250 queued\r\n"
                        } else if cmd.starts_with("QUIT") {
                            let _ = w.write_all(b"221 bye\r\n").await;
                            break;
                        } else {
                            b"250 OK\r\n"
                        };
                        if w.write_all(reply).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        sink
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }
}

/// An SMTP sink, its recipient addresses and their event filter.
pub type EmailSetup = (SmtpSink, Vec<&'static str>, Option<Vec<&'static str>>);

/// What a test's config wires together.
pub struct Setup {
    pub sandbox_url: String,
    pub ledger: PathBuf,
    pub webhooks: Vec<(String, Receiver, Option<Vec<&'static str>>)>,
    pub smtp: Option<EmailSetup>,
    pub retry_schedule: Vec<&'static str>,
    pub listen: String,
}

impl Setup {
    pub fn toml(&self) -> String {
        let mut t = format!(
            r#"
[ledger]
path = "{ledger}"
[singapay]
base_url = "{sb}"
partner_id = "{SANDBOX_PARTNER_ID}"
client_id = "{SANDBOX_CLIENT_ID}"
client_secret = "{SANDBOX_CLIENT_SECRET}"
per_page = 25
timeout = "5s"
[sync]
schedule = "0 */5 * * * *"
[[accounts]]
id = "{ACCOUNT}"
name = "Toko Utama"
[http]
listen = "{listen}"
admin_token = "{ADMIN_TOKEN}"
[delivery]
retry_schedule = [{rs}]
timeout = "2s"
"#,
            ledger = self.ledger.display(),
            sb = self.sandbox_url,
            listen = self.listen,
            rs = self
                .retry_schedule
                .iter()
                .map(|s| format!("\"{s}\""))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for (name, rx, events) in &self.webhooks {
            t.push_str(&format!(
                "[[webhooks]]\nname = \"{name}\"\nurl = \"{}\"\nsecret = \"{}\"\n",
                rx.url, rx.secret
            ));
            if let Some(ev) = events {
                t.push_str(&format!("events = {ev:?}\n"));
            }
        }
        if let Some((sink, to, events)) = &self.smtp {
            t.push_str(&format!(
                "[email]\nsmtp_url = \"{}\"\nfrom = \"SingaPay Sync <sync@toko.example>\"\ntimeout = \"5s\"\n[[email.recipients]]\nname = \"finance\"\nto = {to:?}\n",
                sink.url
            ));
            if let Some(ev) = events {
                t.push_str(&format!("events = {ev:?}\n"));
            }
        }
        t
    }

    pub fn config(&self) -> Config {
        Config::from_toml_str(&self.toml()).unwrap_or_else(|e| panic!("{e}\n{}", self.toml()))
    }

    pub async fn app(&self) -> App {
        self.app_with_clock(Arc::new(singapay_sync::time::SystemClock))
            .await
    }

    pub async fn app_with_clock(&self, clock: Arc<dyn singapay_sync::time::Clock>) -> App {
        app_from_toml(&self.toml(), clock).await
    }
}

/// An app (no listener) from a config text, e.g. a [`Setup::toml`] with a key edited.
pub async fn app_from_toml(toml: &str, clock: Arc<dyn singapay_sync::time::Clock>) -> App {
    let config = Config::from_toml_str(toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    App::build_with_clock(config, clock, false).await.unwrap()
}

pub fn new_setup(dir: &tempfile::TempDir, sandbox: &TestSandbox) -> Setup {
    Setup {
        sandbox_url: sandbox.base.clone(),
        ledger: dir.path().join("ledger.db"),
        webhooks: Vec::new(),
        smtp: None,
        retry_schedule: vec!["5s", "5m", "30m", "2h", "5h", "10h", "10h"],
        listen: "127.0.0.1:0".into(),
    }
}

/// A client of a running daemon's admin API (bearer [`ADMIN_TOKEN`]).
#[derive(Clone)]
pub struct Admin {
    pub base: String,
    http: reqwest::Client,
}

impl Admin {
    pub fn new(base: impl Into<String>) -> Self {
        Self {
            base: base.into(),
            http: reqwest::Client::new(),
        }
    }

    pub fn on_port(port: u16) -> Self {
        Self::new(format!("http://127.0.0.1:{port}"))
    }

    /// `GET path` with the token, parsed as JSON.
    pub async fn get(&self, path: &str) -> Value {
        json_of(
            self.http
                .get(format!("{}{path}", self.base))
                .bearer_auth(ADMIN_TOKEN),
        )
        .await
    }

    /// Waits until `/healthz` answers (the daemon is up).
    pub async fn wait_healthy(&self) {
        for _ in 0..400 {
            if self
                .http
                .get(format!("{}/healthz", self.base))
                .send()
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("daemon at {} did not come up", self.base);
    }

    /// `POST /resync`: the run id of the (first) account.
    pub async fn resync(&self) -> i64 {
        let v: Value = json_of(
            self.http
                .post(format!("{}/resync", self.base))
                .bearer_auth(ADMIN_TOKEN),
        )
        .await;
        v["runs"][0]["run_id"].as_i64().unwrap()
    }

    /// Waits for run `id` to succeed (fails the test if it fails) and returns it.
    pub async fn wait_run(&self, id: i64) -> Value {
        for _ in 0..1200 {
            let r = self.get(&format!("/sync-runs/{id}")).await;
            if r["outcome"] == "succeeded" {
                return r;
            }
            assert_ne!(r["outcome"], "failed", "{r}");
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("run {id} did not finish");
    }

    /// `POST /resync` and wait for the run.
    pub async fn resync_and_wait(&self) -> Value {
        let id = self.resync().await;
        self.wait_run(id).await
    }
}

/// Every event in the ledger, in commit order.
pub async fn all_events(
    ledger: &singapay_sync::ledger::Ledger,
) -> Vec<singapay_sync::ledger::EventRow> {
    ledger
        .events(&singapay_sync::ledger::EventFilter {
            limit: 1_000_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .unwrap()
}

/// Sends `req` and parses the answer as JSON (a transport or parse error fails the test).
pub async fn json_of(req: reqwest::RequestBuilder) -> Value {
    req.send().await.unwrap().json().await.unwrap()
}
