//! Shared test harness: [`TestApp`] (a sandbox, a fresh ledger and the app, configured through
//! the same [`DaemonConfig`] the demo uses), webhook receivers that verify signatures with the
//! independent `standardwebhooks` crate, an SMTP listener, and an admin-API client.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};
use singapay_sync::app::App;
use singapay_sync::ledger::{DeliveryFilter, DeliveryRow, EventFilter, EventRow, Ledger};
use singapay_sync::notify::DispatchSummary;
use singapay_sync::sandbox::{
    DaemonConfig, EmailEntry, LoggedRequest, SEED_ACCOUNT, Sandbox, SandboxOptions, strings,
};
use singapay_sync::sync::SyncSummary;
use singapay_sync::time::{Clock, SystemClock};
use singapay_sync::types::{AccountId, LinkId};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

pub const ACCOUNT: &str = SEED_ACCOUNT;
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
/// A schedule that fires at 00:00:00 UTC on 1 January.
pub const YEARLY: &str = "0 0 0 1 1 *";

/// The seeded account's id.
pub fn account() -> AccountId {
    AccountId::parse(ACCOUNT).unwrap()
}

/// A running sandbox.
pub struct TestSandbox {
    pub base: String,
    pub http: reqwest::Client,
    _stop: tokio_util::sync::DropGuard,
}

impl TestSandbox {
    /// The default sandbox: 103 links (SingaPay's list example and 78 generated ones).
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

    /// `/_sandbox/accounts/{ACCOUNT}/links/{id}{action}`.
    /// The control-plane URL of history row `hid`'s `step` (`pay`, `settle`, `fail`, `expire`).
    pub fn history_url(&self, hid: i64, step: &str) -> String {
        format!(
            "{}/_sandbox/accounts/{ACCOUNT}/histories/{hid}/{step}",
            self.base
        )
    }

    /// A customer picks `method` on link `id`: the new pending history row.
    pub async fn pick(&self, id: i64, method: &str) -> Value {
        self.ctl(
            reqwest::Method::POST,
            self.link_url(id, "/attempts"),
            json!({ "method": method }),
        )
        .await
    }

    /// History row `hid` takes `step` (`pay`, `settle`, `fail`, `expire`): the row after it.
    pub async fn step(&self, hid: i64, step: &str) -> Value {
        self.ctl(
            reqwest::Method::POST,
            self.history_url(hid, step),
            json!({}),
        )
        .await
    }

    pub fn link_url(&self, id: i64, action: &str) -> String {
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

    /// A control-plane call that must succeed.
    pub async fn ctl(&self, method: reqwest::Method, url: String, body: Value) -> Value {
        let (status, v) = self.try_ctl(method, url, body).await;
        assert!(
            (200..300).contains(&status),
            "control plane refused: {status} {v}"
        );
        v
    }

    pub async fn pay(&self, id: i64) -> Value {
        self.ctl(reqwest::Method::POST, self.link_url(id, "/pay"), json!({}))
            .await
    }
    pub async fn close(&self, id: i64) -> Value {
        self.ctl(
            reqwest::Method::POST,
            self.link_url(id, "/close"),
            json!({}),
        )
        .await
    }
    pub async fn edit(&self, id: i64, patch: Value) -> Value {
        self.ctl(reqwest::Method::PATCH, self.link_url(id, ""), patch)
            .await
    }
    pub async fn delete(&self, id: i64) -> Value {
        self.ctl(reqwest::Method::DELETE, self.link_url(id, ""), Value::Null)
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

    /// Forgets the requests logged so far.
    pub async fn clear_requests(&self) {
        self.http
            .delete(format!("{}/_sandbox/requests", self.base))
            .send()
            .await
            .unwrap();
    }

    /// The request log, in arrival order.
    pub async fn requests(&self) -> Vec<LoggedRequest> {
        serde_json::from_value(
            json_of(self.http.get(format!("{}/_sandbox/requests", self.base))).await,
        )
        .unwrap()
    }

    /// The statuses answered to the list requests of `page` of the seeded account, in order.
    /// The statuses answered to requests for link list page `page`, in order.
    pub async fn page_statuses(&self, page: u64) -> Vec<u16> {
        self.requests()
            .await
            .into_iter()
            .filter(|r| {
                r.path.ends_with(&format!("/payment-link-manage/{ACCOUNT}"))
                    && r.query
                        .as_deref()
                        .is_some_and(|q| q.starts_with(&format!("page={page}&")))
            })
            .map(|r| r.status)
            .collect()
    }

    pub async fn advance(&self, seconds: i64) {
        self.ctl(
            reqwest::Method::POST,
            format!("{}/_sandbox/clock/advance", self.base),
            json!({ "seconds": seconds }),
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
    pub delay_ms: Arc<AtomicU64>,
    in_flight: Arc<AtomicUsize>,
    /// The most requests it was ever serving at once.
    pub max_in_flight: Arc<AtomicUsize>,
}

async fn receive(
    State(rx): State<Receiver>,
    h: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let now = rx.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    rx.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let delay = rx.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
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
    rx.in_flight.fetch_sub(1, Ordering::SeqCst);
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
            delay_ms: Arc::new(AtomicU64::new(0)),
            in_flight: Arc::new(AtomicUsize::new(0)),
            max_in_flight: Arc::new(AtomicUsize::new(0)),
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

    /// The `webhook-id`s of the requests it verified and answered 200 (each once).
    pub fn delivered_ids(&self) -> std::collections::BTreeSet<String> {
        self.hits()
            .into_iter()
            .filter(|h| h.verified && h.answered == 200)
            .map(|h| h.webhook_id)
            .collect()
    }

    /// Waits (at most 10 s) for a verified hit of event type `event` whose body `matches`;
    /// fails the test, listing the hits, if none comes.
    pub async fn wait_for(&self, event: &str, matches: impl Fn(&Value) -> bool) -> Hit {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(h) = self
                .hits()
                .into_iter()
                .find(|h| h.verified && h.body["type"] == event && matches(&h.body))
            {
                return h;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no verified {event}: {:?}",
                self.hits()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A dispatcher of its own on `ledger` sending the subscriber `erp`'s webhooks to `rx` (signed
/// with `rx`'s key), one delivery per batch, on the default retry schedule without jitter, 5 s
/// per request, 16 in flight.
pub fn one_per_batch(
    ledger: &Ledger,
    rx: &Receiver,
    clock: Arc<dyn Clock>,
) -> singapay_sync::notify::Dispatcher {
    dispatcher_to(ledger, &[("erp", rx)], Duration::from_secs(5), clock).with_batch(1)
}

/// A dispatcher of its own on `ledger` sending each named subscriber's webhooks to its receiver
/// (signed with that receiver's key), on the default retry schedule without jitter, `timeout`
/// per request, 16 in flight; the batch and per-subscriber bounds are the builder's defaults.
pub fn dispatcher_to(
    ledger: &Ledger,
    subscribers: &[(&str, &Receiver)],
    timeout: Duration,
    clock: Arc<dyn Clock>,
) -> singapay_sync::notify::Dispatcher {
    let targets = subscribers
        .iter()
        .map(
            |(name, rx)| singapay_sync::notify::dispatcher::WebhookTarget {
                name: (*name).into(),
                url: rx.url.parse().unwrap(),
                secret: singapay_sync::standard_webhooks::WebhookSecret::parse(&rx.secret).unwrap(),
            },
        )
        .collect();
    singapay_sync::notify::Dispatcher::new(
        ledger.clone(),
        targets,
        None,
        singapay_sync::notify::RetrySchedule {
            delays: singapay_sync::config::DEFAULT_RETRY_SCHEDULE
                .map(Duration::from_secs)
                .to_vec(),
            jitter: 0.0,
        },
        timeout,
        16,
        clock,
    )
    .unwrap()
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

/// The tests' daemon configuration: the demo's builder with a known admin token, short timeouts,
/// the default retry schedule, and a schedule that fires once a year (passes happen when a test
/// asks, never at a 5-minute boundary in the middle of one).
pub fn test_config(dir: &tempfile::TempDir, sandbox: &TestSandbox) -> DaemonConfig {
    let mut c = DaemonConfig::new(&sandbox.base, dir.path().join("ledger.db"));
    c.ledger_url = test_ledger_url();
    c.schedule = YEARLY.into();
    c.admin_token = ADMIN_TOKEN.into();
    c.singapay_timeout = Some("5s".into());
    c.delivery_timeout = Some("2s".into());
    c.retry_schedule = Some(strings(&["5s", "5m", "30m", "2h", "5h", "10h", "10h"]));
    c
}

/// Whether this run tests the PostgreSQL ledger: `SINGAPAY_TEST_LEDGER=postgres` (`.ci/run`
/// runs the suite once with it, once without).
pub fn on_postgres() -> bool {
    std::env::var("SINGAPAY_TEST_LEDGER").is_ok_and(|v| v == "postgres")
}

/// The server PostgreSQL tests use: `SINGAPAY_TEST_PG` (default
/// `postgres://postgres@127.0.0.1:5432/test`, the machines' server with trust auth).
pub fn postgres_server() -> String {
    std::env::var("SINGAPAY_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A fresh, empty PostgreSQL database of its own for one test (`singapay_t_<ulid>`), its URL
/// (`create_postgres_database` also drops those earlier runs left). Panics when the server cannot
/// be reached: a PostgreSQL run must not pass silently without one.
pub fn fresh_postgres_database() -> String {
    let server = postgres_server();
    // Its own thread and runtime: callers may be inside a test's runtime, or not.
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(singapay_sync::ledger::create_postgres_database(
                &server,
                "singapay_t_",
            ))
            .unwrap_or_else(|e| panic!("PostgreSQL at {server}: {e}"))
    })
    .join()
    .unwrap()
}

/// The ledger URL of a test's config: a fresh PostgreSQL database on a PostgreSQL run, else
/// `None` (the SQLite file in the test's directory).
pub fn test_ledger_url() -> Option<String> {
    on_postgres().then(fresh_postgres_database)
}

/// Opens the ledger `c` names (SQLite file or PostgreSQL database), as the daemon does.
pub async fn open_ledger(c: &DaemonConfig) -> Ledger {
    let cfg = c.build().unwrap_or_else(|e| panic!("{e}"));
    Ledger::connect(&cfg.ledger).await.unwrap()
}

/// Straight SQL on a test's ledger, whichever the database (test scaffolding: seeding a backlog,
/// counting rows). Statements must be valid on both (`WITH RECURSIVE`, `||`, `COUNT(*)`).
pub enum RawLedger {
    /// The SQLite file.
    Sqlite(sqlx::SqlitePool),
    /// The PostgreSQL database.
    Postgres(sqlx::PgPool),
}

impl RawLedger {
    /// Connects to the ledger `c` names (which must exist: open it with [`open_ledger`] first).
    pub async fn connect(c: &DaemonConfig) -> Self {
        match &c.ledger_url {
            Some(url) => Self::Postgres(sqlx::PgPool::connect(url).await.unwrap()),
            None => Self::Sqlite(
                sqlx::sqlite::SqlitePoolOptions::new()
                    .connect(&format!("sqlite://{}", c.ledger.display()))
                    .await
                    .unwrap(),
            ),
        }
    }

    /// Runs one statement.
    pub async fn execute(&self, sql: &str) {
        let q = || sqlx::AssertSqlSafe(sql.to_string());
        match self {
            Self::Sqlite(p) => sqlx::query(q()).execute(p).await.map(drop),
            Self::Postgres(p) => sqlx::query(q()).execute(p).await.map(drop),
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// The `BIGINT` one-row answer of `sql` (a count).
    pub async fn count(&self, sql: &str) -> i64 {
        let q = || sqlx::AssertSqlSafe(sql.to_string());
        match self {
            Self::Sqlite(p) => sqlx::query_scalar(q()).fetch_one(p).await,
            Self::Postgres(p) => sqlx::query_scalar(q()).fetch_one(p).await,
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// The rows of `sql`, which selects two `TEXT` columns.
    pub async fn pairs(&self, sql: &str) -> Vec<(String, String)> {
        let q = || sqlx::AssertSqlSafe(sql.to_string());
        match self {
            Self::Sqlite(p) => sqlx::query_as(q()).fetch_all(p).await,
            Self::Postgres(p) => sqlx::query_as(q()).fetch_all(p).await,
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Closes the pool.
    pub async fn close(self) {
        match self {
            Self::Sqlite(p) => p.close().await,
            Self::Postgres(p) => p.close().await,
        }
    }
}

/// The link events (`payment_link.*`): what tests of delivery mechanics subscribe to, so that
/// one link change is one delivery (a payment also makes `payment.*` events of its history row).
pub const LINK_EVENTS: &[&str] = &[
    "payment_link.created",
    "payment_link.paid",
    "payment_link.exhausted",
    "payment_link.status_changed",
    "payment_link.updated",
    "payment_link.deleted",
];

/// The events of a pass about links (`payment_link.*`), leaving out its `payment.*` events.
pub fn link_events(s: &singapay_sync::sync::SyncSummary) -> u64 {
    s.events_by_type
        .iter()
        .filter(|(t, _)| t.starts_with("payment_link."))
        .map(|(_, n)| n)
        .sum()
}

/// Subscribes `rx` as webhook `name` (with an event filter, or to every event).
pub fn subscribe(c: &mut DaemonConfig, name: &str, rx: &Receiver, events: Option<&[&str]>) {
    c.webhook(name, &rx.url, &rx.secret, events);
}

/// Sends e-mail digests for group `finance` (addresses `to`, filter `events`) to `sink`.
pub fn mail_to(c: &mut DaemonConfig, sink: &SmtpSink, to: &[&str], events: Option<&[&str]>) {
    c.email = Some(EmailEntry {
        smtp_url: sink.url.clone(),
        from: "SingaPay Sync <sync@toko.example>".into(),
        to: strings(to),
        events: events.map(strings),
        timeout: Some("5s".into()),
    });
}

/// A sandbox, a fresh ledger in a temporary directory, and the app (no listener) built from
/// [`test_config`] as edited by the test.
pub struct TestApp {
    pub sandbox: TestSandbox,
    pub config: DaemonConfig,
    pub app: App,
    pub dir: tempfile::TempDir,
}

impl TestApp {
    /// The default sandbox, the system clock, no subscribers.
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// The default sandbox and the system clock, with the config edited first.
    pub async fn spawn_with(edit: impl FnOnce(&mut DaemonConfig)) -> Self {
        Self::start(TestSandbox::start().await, Arc::new(SystemClock), edit).await
    }

    /// `sandbox`, `clock`, and the config edited first.
    pub async fn start(
        sandbox: TestSandbox,
        clock: Arc<dyn Clock>,
        edit: impl FnOnce(&mut DaemonConfig),
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(&dir, &sandbox);
        edit(&mut config);
        let cfg = config
            .build()
            .unwrap_or_else(|e| panic!("{e}\n{}", config.toml()));
        let app = App::build_with_clock(cfg, clock, false).await.unwrap();
        Self {
            sandbox,
            config,
            app,
            dir,
        }
    }

    /// One pass of the (first) account, which must succeed.
    pub async fn sync_ok(&self) -> SyncSummary {
        sync_ok(&self.app).await
    }

    /// One pass of the (first) account, which must fail; its error text.
    pub async fn sync_err(&self) -> String {
        let r = self.app.sync_all(None).await;
        match &r[0].1 {
            Ok(s) => panic!("the pass succeeded: {s:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// Sends what is due now.
    pub async fn dispatch(&self) -> DispatchSummary {
        self.app.dispatcher.dispatch_due().await.unwrap()
    }

    /// [`Self::dispatch`], and how long it took (real time).
    pub async fn timed_dispatch(&self) -> (DispatchSummary, Duration) {
        let started = std::time::Instant::now();
        let d = self.dispatch().await;
        (d, started.elapsed())
    }

    /// Every event in the ledger, in commit order.
    pub async fn events(&self) -> Vec<EventRow> {
        all_events(&self.app.ledger).await
    }

    /// The deliveries of `subscriber`, newest first.
    pub async fn deliveries_of(&self, subscriber: &str) -> Vec<DeliveryRow> {
        deliveries_of(&self.app.ledger, subscriber).await
    }

    /// A mirrored link of the seeded account.
    pub async fn link(&self, id: i64) -> singapay_sync::ledger::StoredLink {
        self.app
            .ledger
            .get_link(&account(), LinkId(id))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("link {id} is not mirrored"))
    }
}

/// One pass of the first account of `app`, which must succeed: its summary.
pub async fn sync_ok(app: &App) -> SyncSummary {
    let r = app.sync_all(None).await;
    match r.into_iter().next() {
        Some((_, Ok(s))) => s,
        Some((a, Err(e))) => panic!("the pass of {a} failed: {e}"),
        None => panic!("no account is configured"),
    }
}

/// Every event in the ledger, in commit order.
pub async fn all_events(ledger: &Ledger) -> Vec<EventRow> {
    ledger
        .events(&EventFilter {
            limit: 1_000_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .unwrap()
}

/// The deliveries of `subscriber`, newest first.
pub async fn deliveries_of(ledger: &Ledger, subscriber: &str) -> Vec<DeliveryRow> {
    ledger
        .list_deliveries(&DeliveryFilter {
            subscriber: Some(subscriber.into()),
            limit: 100_000,
            ..Default::default()
        })
        .await
        .unwrap()
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A client of a running daemon's admin API (bearer [`ADMIN_TOKEN`]).
#[derive(Clone)]
pub struct Admin {
    pub base: String,
    pub http: reqwest::Client,
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

    /// `method path` with the token: `(status, JSON body)`.
    pub async fn call(&self, method: reqwest::Method, path: &str) -> (u16, Value) {
        let r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
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
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("daemon at {} did not come up", self.base);
    }

    /// `POST /resync`: the answer's `runs`.
    pub async fn resync_runs(&self) -> Vec<Value> {
        let (status, v) = self.call(reqwest::Method::POST, "/resync").await;
        assert_eq!(status, 202, "{v}");
        v["runs"].as_array().unwrap().clone()
    }

    /// `POST /resync`: the run id of the (first) account.
    pub async fn resync(&self) -> i64 {
        self.resync_runs().await[0]["run_id"].as_i64().unwrap()
    }

    /// Waits for run `id` to succeed (fails the test if it fails) and returns it.
    pub async fn wait_run(&self, id: i64) -> Value {
        let r = self.wait_run_ended(id).await;
        assert_eq!(r["outcome"], "succeeded", "{r}");
        r
    }

    /// Waits for run `id` to end, whatever its outcome, and returns it.
    pub async fn wait_run_ended(&self, id: i64) -> Value {
        for _ in 0..1200 {
            let r = self.get(&format!("/sync-runs/{id}")).await;
            if r["outcome"] != "running" {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("run {id} did not finish");
    }

    /// `POST /resync`, each account's pass started by it: a resync that joined a pass already
    /// running (`coalesced`, e.g. one that began before the test changed the sandbox) waits for
    /// that pass to end and asks again. Returns the answer's `runs`.
    pub async fn resync_runs_fresh(&self) -> Vec<Value> {
        for _ in 0..100 {
            let runs = self.resync_runs().await;
            let joined: Vec<i64> = runs
                .iter()
                .filter(|r| r["coalesced"] == true)
                .map(|r| r["run_id"].as_i64().unwrap())
                .collect();
            if joined.is_empty() {
                return runs;
            }
            for id in joined {
                self.wait_run_ended(id).await;
            }
        }
        panic!("every resync joined a pass already running");
    }

    /// `POST /resync` and wait for the run.
    pub async fn resync_and_wait(&self) -> Value {
        let id = self.resync().await;
        self.wait_run(id).await
    }
}

/// A daemon running in this process (admin API, schedulers, dispatcher) until `stop`.
pub struct Served {
    pub admin: Admin,
    pub ledger: Ledger,
    pub stop: CancellationToken,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Served {
    /// Stops the daemon and waits for a clean exit.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// The daemon of `config` on `clock`, serving its admin API on `config.listen`.
pub async fn serve(config: &DaemonConfig, clock: Arc<dyn Clock>) -> Served {
    let app = App::build_with_clock(config.build().unwrap(), clock, true)
        .await
        .unwrap();
    serve_app(app)
}

/// `app` (built with its listener) running in the background.
pub fn serve_app(app: App) -> Served {
    let admin = Admin::new(format!("http://{}", app.local_addr().unwrap()));
    let ledger = app.ledger.clone();
    let stop = CancellationToken::new();
    let task = tokio::spawn(app.run_until_stopped(stop.clone()));
    Served {
        admin,
        ledger,
        stop,
        task,
    }
}

/// Sends `req` and parses the answer as JSON (a transport or parse error fails the test).
pub async fn json_of(req: reqwest::RequestBuilder) -> Value {
    req.send().await.unwrap().json().await.unwrap()
}

/// `singapay-sync --config … <args>`: `(exit code, stdout, stderr)`.
pub async fn cli(cfg: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_singapay-sync"))
        .arg("--config")
        .arg(cfg)
        .args(args)
        .output()
        .await
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
