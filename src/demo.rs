//! `singapay-sync demo`: the newcomer's first command. Starts the sandbox, a webhook receiver that
//! verifies Standard Webhooks signatures, and the daemon on a temporary ledger; runs the baseline;
//! has customers pay, a link get closed and one expire; and prints what the daemon saw and
//! delivered; then a payment rings the doorbell (SingaPay's signed webhook) and reaches the ERP
//! without a sweep. Needs no credentials and no network (everything is on 127.0.0.1).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::event::Event;
use crate::sandbox::{DaemonConfig, EmailEntry, SEED_ACCOUNT, Sandbox, SandboxOptions, strings};
use crate::standard_webhooks::{WebhookSecret, verify};
use crate::types::EventType;

/// A callback the demo's receiver accepted.
#[derive(Debug, Clone)]
pub struct Received {
    /// `webhook-id`.
    pub id: String,
    /// The body, parsed.
    pub body: Value,
}

#[derive(Clone)]
struct Rx {
    secret: Arc<WebhookSecret>,
    got: Arc<Mutex<Vec<Received>>>,
    rejected: Arc<Mutex<usize>>,
}

async fn receive(State(rx): State<Rx>, h: HeaderMap, body: Bytes) -> StatusCode {
    let hv = |n: &str| h.get(n).and_then(|v| v.to_str().ok());
    let now = chrono::Utc::now().timestamp();
    match verify(
        &rx.secret,
        hv("webhook-id"),
        hv("webhook-timestamp"),
        hv("webhook-signature"),
        &body,
        now,
        300,
    ) {
        Ok(()) => {
            let parsed = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if let Ok(mut g) = rx.got.lock() {
                g.push(Received {
                    id: hv("webhook-id").unwrap_or_default().to_string(),
                    body: parsed,
                });
            }
            StatusCode::NO_CONTENT
        }
        Err(_) => {
            if let Ok(mut r) = rx.rejected.lock() {
                *r += 1;
            }
            StatusCode::UNAUTHORIZED
        }
    }
}

struct Admin {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Admin {
    async fn post(&self, path: &str) -> anyhow::Result<Value> {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await?;
        Ok(r.error_for_status()?.json().await?)
    }
    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await?;
        Ok(r.error_for_status()?.json().await?)
    }
    /// `GET path` as CSV (`Accept: text/csv`).
    async fn get_csv(&self, path: &str) -> anyhow::Result<String> {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("Accept", "text/csv")
            .send()
            .await?;
        Ok(r.error_for_status()?.text().await?)
    }
    /// `POST path` with a JSON body and an `Idempotency-Key`.
    async fn post_json(&self, path: &str, body: Value, key: &str) -> anyhow::Result<Value> {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
            .await?;
        Ok(r.error_for_status()?.json().await?)
    }
    /// Triggers a pass and waits for it to finish; returns the run.
    async fn resync(&self) -> anyhow::Result<Value> {
        let runs = self.post("/resync").await?;
        let id = runs["runs"][0]["run_id"]
            .as_i64()
            .context("resync returned no run id")?;
        for _ in 0..600 {
            let run = self.get(&format!("/sync-runs/{id}")).await?;
            if run["outcome"] != "running" {
                if run["outcome"] != "succeeded" {
                    bail!("sync run {id} failed: {}", run["error"]);
                }
                return Ok(run);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("sync run {id} did not finish in 30 s")
    }
}

async fn sandbox_post(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    body: Value,
) -> anyhow::Result<Value> {
    let r = http
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await?;
    Ok(r.error_for_status()?.json().await?)
}

/// One line per event: type, link (or payment), sequence, title and what changed.
fn describe(e: &Event) -> String {
    let o = &e.data.object;
    if e.event_type.is_payment() {
        let link = &o["payment_link"];
        let what = match e.event_type {
            EventType::PaymentSettled => format!("settled {}", o["settle_at"]),
            EventType::PaymentCreated => format!("first seen, status {}", o["status"]),
            _ => format!("status {} → {}", e.previous("status"), o["status"]),
        };
        return format!(
            "{:<28} pay  {:>3} seq {}  {:<24} {} {} {}, attempt {}",
            e.event_type.as_str(),
            o["id"],
            e.sequence,
            link["title"].as_str().unwrap_or_default(),
            o["payment_method_name"]
                .as_str()
                .unwrap_or("(method unknown)"),
            o["amount"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .map(crate::money::format_rupiah)
                .unwrap_or_else(|| o["amount"].to_string()),
            what,
            o["reff_no"].as_str().unwrap_or_default(),
        );
    }
    let what = match e.event_type {
        EventType::Paid => format!(
            "usage {} → {} (+{}), {} each{}",
            e.previous("current_usage"),
            o["current_usage"],
            e.data.usage_delta.unwrap_or(0),
            o["total_amount"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .map(crate::money::format_rupiah)
                .unwrap_or_else(|| o["total_amount"].to_string()),
            match e.payments() {
                Ok(p) if !p.is_empty() => format!(
                    "; data.payments: {}",
                    p.iter()
                        .map(|p| format!(
                            "{} {}",
                            p.payment.payment_method_name.as_deref().unwrap_or("?"),
                            p.payment.reff_no
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                _ => String::new(),
            }
        ),
        EventType::Exhausted => format!("usage {}/{}", o["current_usage"], o["max_usage"]),
        EventType::StatusChanged => format!(
            "status_computed {} → {} (status {}, is_expired {})",
            e.previous("status_computed"),
            o["status_computed"],
            o["status"],
            o["is_expired"]
        ),
        EventType::Updated => format!(
            "changed {}",
            Value::Object(e.data.previous_attributes.clone().unwrap_or_default())
        ),
        EventType::Created | EventType::Deleted => String::new(),
        EventType::PaymentCreated
        | EventType::PaymentPaid
        | EventType::PaymentSettled
        | EventType::PaymentFailed
        | EventType::PaymentExpired => String::new(),
    };
    format!(
        "{:<28} link {:>3} seq {}  {:<24} {}",
        e.event_type.as_str(),
        o["id"],
        e.sequence,
        o["title"].as_str().unwrap_or_default(),
        what
    )
}

fn newest_mail(dir: &Path) -> Option<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    files.sort();
    files.pop()
}

/// Runs the demo, writing its report to `out`.
///
/// Errors: any step that fails (with what it was doing).
pub async fn run(out: &mut dyn Write) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let dir = std::env::temp_dir().join(format!("singapay-sync-demo-{}", ulid::Ulid::new()));
    let mail_dir = dir.join("mail");
    std::fs::create_dir_all(&mail_dir)?;

    let sandbox = Sandbox::new(SandboxOptions::default());
    let sb_addr = sandbox
        .spawn(SocketAddr::from(([127, 0, 0, 1], 0)), stop.clone())
        .await?;
    let sb = format!("http://{sb_addr}");

    let (secret, secret_text) = WebhookSecret::generate();
    let rx = Rx {
        secret: Arc::new(secret),
        got: Arc::new(Mutex::new(Vec::new())),
        rejected: Arc::new(Mutex::new(0)),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let rx_addr = listener.local_addr()?;
    let rx_app = Router::new()
        .route("/hooks/singapay", post(receive))
        .with_state(rx.clone());
    let rx_stop = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, rx_app)
            .with_graceful_shutdown(async move { rx_stop.cancelled().await })
            .await;
    });

    let mut daemon = DaemonConfig::new(&sb, dir.join("ledger.db"));
    daemon.schedule = "0 0 0 1 1 *".into();
    daemon.retry_schedule = Some(strings(&["1s", "2s"]));
    daemon.webhook(
        "erp",
        &format!("http://{rx_addr}/hooks/singapay"),
        &secret_text,
        None,
    );
    daemon.email = Some(EmailEntry {
        smtp_url: format!("file://{}", mail_dir.display()),
        from: "SingaPay Sync <sync@toko-utama.example>".into(),
        to: strings(&["Finance <finance@toko-utama.example>"]),
        events: Some(
            [
                EventType::Paid,
                EventType::Exhausted,
                EventType::StatusChanged,
                EventType::PaymentSettled,
            ]
            .map(|t| t.to_string())
            .to_vec(),
        ),
        timeout: None,
    });
    daemon.doorbell("/singapay/webhook");
    let cfg = daemon.build().map_err(|e| anyhow::anyhow!("{e}"))?;
    let admin_token = daemon.admin_token.clone();
    let app = App::build(cfg).await?;
    let admin_addr = app.local_addr().context("admin listener")?;
    let inbound_addr = app.inbound_addr().context("inbound listener")?;
    let daemon_stop = CancellationToken::new();
    let daemon = tokio::spawn(app.run_until_stopped(daemon_stop.clone()));
    let admin = Admin {
        http: reqwest::Client::new(),
        base: format!("http://{admin_addr}"),
        token: admin_token,
    };

    writeln!(
        out,
        "singapay-sync demo: sandbox {sb}, webhook receiver http://{rx_addr}, daemon admin http://{admin_addr}"
    )?;
    writeln!(out, "ledger {}\n", dir.join("ledger.db").display())?;

    // 1. Baseline.
    let run = admin.resync().await?;
    writeln!(
        out,
        "1. Baseline of account {SEED_ACCOUNT}: {} links mirrored from {} pages, {} payments (Payment Link History rows) from {} history pages, {} events (a baseline is recorded silently).",
        run["links_seen"], run["pages"], run["payments_seen"], run["history_pages"], run["changes"]
    )?;

    // 2. Customers and time act on SingaPay.
    let acct = format!("/_sandbox/accounts/{SEED_ACCOUNT}");
    let http = reqwest::Client::new();
    let mut attempts = Vec::new();
    for method in ["VA_BRI", "QRIS"] {
        // The customer picks a method on the hosted page (a pending history row), then pays.
        let row = sandbox_post(
            &http,
            &sb,
            &format!("{acct}/links/103/attempts"),
            json!({ "method": method }),
        )
        .await?;
        let hid = row["data"]["id"]
            .as_i64()
            .context("the sandbox made no history row")?;
        sandbox_post(
            &http,
            &sb,
            &format!("{acct}/histories/{hid}/pay"),
            json!({}),
        )
        .await?;
        attempts.push(hid);
    }
    sandbox_post(&http, &sb, &format!("{acct}/links/101/close"), json!({})).await?;
    sandbox_post(
        &http,
        &sb,
        "/_sandbox/clock/advance",
        json!({"seconds": 25 * 3600}),
    )
    .await?;
    sandbox_post(
        &http,
        &sb,
        &format!("{acct}/histories/{}/settle", attempts[0]),
        json!({}),
    )
    .await?;
    writeln!(
        out,
        "\n2. On SingaPay: two customers pay link 103 (Rp 20.000 each), one by VA BRI, one by QRIS; link 101 is closed; 25 hours pass, link 78 expires and the VA BRI payment is settled."
    )?;

    // 3. The next pass.
    let run = admin.resync().await?;
    let events = admin.get("/events?limit=100").await?;
    let list: Vec<Event> = serde_json::from_value(events["events"].clone())
        .context("the pull feed answered something that is not a list of events")?;
    writeln!(
        out,
        "\n3. Next pass (run {}): {} events detected and committed with their deliveries:",
        run["id"],
        list.len()
    )?;
    for e in &list {
        writeln!(out, "   {}", describe(e))?;
    }

    // 4. Webhooks, verified by the receiver.
    let want = list.len();
    for _ in 0..200 {
        if rx.got.lock().map(|g| g.len()).unwrap_or(0) >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = rx.got.lock().map(|g| g.clone()).unwrap_or_default();
    let rejected = rx.rejected.lock().map(|r| *r).unwrap_or(0);
    writeln!(
        out,
        "\n4. Webhook callbacks received by the ERP stand-in ({} verified, {} rejected):",
        got.len(),
        rejected
    )?;
    for r in &got {
        writeln!(
            out,
            "   ✓ signature verified  webhook-id {}  {}",
            r.id,
            r.body["type"].as_str().unwrap_or_default()
        )?;
    }
    if got.len() != want {
        bail!(
            "expected {want} callbacks, the receiver verified {}",
            got.len()
        );
    }

    // 5. The finance e-mail.
    let mut mail = None;
    for _ in 0..200 {
        mail = newest_mail(&mail_dir);
        if mail.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let path = mail.context("no finance e-mail was written")?;
    let raw = std::fs::read(&path)?;
    let parsed = mail_parser::MessageParser::default()
        .parse(&raw)
        .context("the e-mail file is not a message")?;
    writeln!(out, "\n5. Finance e-mail ({}):", path.display())?;
    writeln!(
        out,
        "   To: {}",
        parsed
            .to()
            .and_then(|a| a.first())
            .and_then(|a| a.address())
            .unwrap_or_default()
    )?;
    writeln!(out, "   Subject: {}", parsed.subject().unwrap_or_default())?;
    writeln!(out)?;
    for line in parsed.body_text(0).unwrap_or_default().lines() {
        writeln!(out, "   | {line}")?;
    }

    // 6. The accounting export.
    let csv = admin.get_csv("/payments").await?;
    writeln!(
        out,
        "\n6. Accounting export (GET /payments, Accept: text/csv; the same bytes as `singapay-sync export payments`):"
    )?;
    for line in csv.lines() {
        writeln!(out, "   {line}")?;
    }

    // 7. The ERP creates an invoice's link through the daemon (validated, created once,
    //    mirrored and delivered at once).
    let before_create = rx.got.lock().map(|g| g.len()).unwrap_or(0);
    let created = admin
        .post_json(
            &format!("/links/{SEED_ACCOUNT}"),
            json!({"reff_no": "INV-2026-0042", "title": "Invoice INV-2026-0042",
                   "items": [{"name": "Kopi Gayo 250g", "quantity": 2, "unit_price": 75000}],
                   "whitelisted_payment_method": ["VA_MANDIRI", "QRIS"]}),
            "INV-2026-0042",
        )
        .await?;
    let link = created["link"]["id"]
        .as_i64()
        .context("the daemon made no link")?;
    let mut callback = None;
    for _ in 0..400 {
        callback = rx.got.lock().ok().and_then(|g| {
            g.iter()
                .skip(before_create)
                .find(|r| r.body["type"] == "payment_link.created")
                .cloned()
        });
        if callback.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let callback = callback.context("payment_link.created did not arrive")?;
    writeln!(
        out,
        "\n7. The ERP creates a link through the daemon: POST /links/{SEED_ACCOUNT} (Idempotency-Key INV-2026-0042) → 201, link {link}, {} for 2 × Kopi Gayo 250g, {}",
        created["link"]["total_amount"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .map(crate::money::format_rupiah)
            .unwrap_or_default(),
        created["link"]["payment_url"].as_str().unwrap_or("-"),
    )?;
    writeln!(
        out,
        "   ✓ signature verified  webhook-id {}  payment_link.created (mirrored at once, no sweep)",
        callback.id
    )?;
    // 8. The doorbell: SingaPay's own signed webhook, seconds instead of the next sweep.
    // The sandbox's clock back to ours: a webhook stamped 25 hours ahead would be refused as
    // stale (inbound.tolerance), as it should be.
    sandbox_post(
        &http,
        &sb,
        "/_sandbox/clock/advance",
        json!({"seconds": -25 * 3600}),
    )
    .await?;
    sandbox_post(
        &http,
        &sb,
        "/_sandbox/webhooks",
        json!({"url": format!("http://{inbound_addr}/singapay/webhook")}),
    )
    .await
    .ok();
    let before = rx.got.lock().map(|g| g.len()).unwrap_or(0);
    let started = std::time::Instant::now();
    sandbox_post(
        &http,
        &sb,
        &format!("{acct}/links/{link}/pay"),
        json!({"method": "VA_MANDIRI"}),
    )
    .await?;
    let mut paid = None;
    for _ in 0..400 {
        paid = rx.got.lock().ok().and_then(|g| {
            g.iter()
                .skip(before)
                .find(|r| r.body["type"] == "payment_link.paid")
                .cloned()
        });
        if paid.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed();
    let paid = paid.context("the doorbell's payment_link.paid did not arrive")?;
    let inbound = admin.get("/inbound").await?;
    writeln!(
        out,
        "\n8. Doorbell: a customer pays INV-2026-0042 (link {link}, Rp 150.000) by VA Mandiri; the sandbox posts SingaPay's signed webhooks to http://{inbound_addr}/singapay/webhook (no sweep runs):"
    )?;
    for n in inbound["notifications"]
        .as_array()
        .into_iter()
        .flatten()
        .rev()
    {
        writeln!(
            out,
            "   notification {}  {:<26} signature verified, stored, {} by run {}",
            n["id"],
            n["event"].as_str().unwrap_or("-"),
            n["state"].as_str().unwrap_or("-"),
            n["run_id"]
        )?;
    }
    let method = paid.body["data"]["payments"][0]["payment_method_name"]
        .as_str()
        .unwrap_or("-")
        .to_string();
    writeln!(
        out,
        "   ✓ ERP received payment_link.paid (webhook-id {}, paid by {method}) {} ms after the payment",
        paid.id,
        took.as_millis()
    )?;

    daemon_stop.cancel();
    daemon.await??;
    stop.cancel();
    let _ = std::fs::remove_dir_all(&dir);
    writeln!(
        out,
        "\nDone: the daemon stopped cleanly. Next: `singapay-sync sandbox` and `singapay-sync run --config config/example.toml`."
    )?;
    Ok(())
}
