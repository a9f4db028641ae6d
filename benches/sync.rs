//! `cargo bench --bench sync`: sync cost against a 100,000-link sandbox (a separate process).
//!
//! Prints, in one run: the fetch-only floor (same client, same page concurrency, pages fetched and
//! decoded, no ledger), the baseline import, a no-change pass, a 1%-changed pass, the
//! `payment_link` rows each pass wrote, and this process's peak RSS. Targets (issue 4): no-change
//! ≤ 1.3 × floor, baseline ≤ 2 × floor, peak RSS ≤ 150 MB, zero row writes when nothing changed.
//! `SYNC_BENCH_LINKS` overrides the link count.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use singapay_sync::app::App;
use singapay_sync::config::Config;
use singapay_sync::singapay::{ClientConfig, SingapayClient};
use singapay_sync::types::AccountId;

const ACCOUNT: &str = "01K7P073Q8RE2A9PQT8Q7MXPN4";

struct Sandbox(Child);
impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|k| k.parse::<f64>().ok())
            })
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

async fn fetch_only(
    client: &SingapayClient,
    account: &AccountId,
    per_page: u64,
    conc: usize,
) -> (u64, u64) {
    let first = client
        .list_page(account, 1, per_page)
        .await
        .expect("page 1");
    let tp = first.pagination.total_pages.unwrap_or(1);
    let mut links = first.links.len() as u64;
    let mut pages = futures_util::stream::iter(2..=tp)
        .map(|p| client.list_page(account, p, per_page))
        .buffered(conc);
    while let Some(p) = pages.next().await {
        links += p.expect("page").links.len() as u64;
    }
    (tp, links)
}

fn main() {
    let links: usize = std::env::var("SYNC_BENCH_LINKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let _sandbox = Sandbox(
        Command::new(env!("CARGO_BIN_EXE_singapay-sync"))
            .args([
                "sandbox",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--links",
                &links.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the sandbox"),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let base = format!("http://127.0.0.1:{port}");
        for _ in 0..200 {
            if reqwest::get(format!("{base}/_sandbox/clock")).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let dir = std::env::temp_dir().join(format!("singapay-sync-bench-{}", ulid::Ulid::new()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let toml = format!(
            r#"
[ledger]
path = "{}"
[singapay]
base_url = "{base}"
partner_id = "sandbox-partner-id"
client_id = "sandbox-client-id"
client_secret = "sandbox-client-secret"
per_page = 100
concurrency = 4
[[accounts]]
id = "{ACCOUNT}"
[http]
admin_token = "bench-admin-token-0123456789"
"#,
            dir.join("ledger.db").display()
        );
        let cfg = Config::from_toml_str(&toml).expect("config");
        let account = AccountId::parse(ACCOUNT).expect("account");
        let client = SingapayClient::new(ClientConfig {
            base_url: cfg.singapay.base_url.clone(),
            partner_id: cfg.singapay.partner_id.clone(),
            client_id: cfg.singapay.client_id.clone(),
            client_secret: cfg.singapay.client_secret.clone(),
            timeout: Duration::from_secs(30),
            max_retries: 3,
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
        })
        .expect("client");

        // Warm up (token, connections), then the floor: best of 3.
        fetch_only(&client, &account, 100, 4).await;
        let mut floor = Duration::MAX;
        let mut pages = 0;
        for _ in 0..3 {
            let t = Instant::now();
            let (p, n) = fetch_only(&client, &account, 100, 4).await;
            floor = floor.min(t.elapsed());
            pages = p;
            assert_eq!(n as usize, links);
        }
        let app = App::build_with_clock(cfg, Arc::new(singapay_sync::time::SystemClock), false)
            .await
            .expect("app");
        let pass = |label: &'static str| {
            let app = &app;
            async move {
                let t = Instant::now();
                let r = app.sync_all(None).await;
                let el = t.elapsed();
                let s = r[0].1.as_ref().expect(label);
                (el, s.links_written, s.events, s.links_seen)
            }
        };
        let (baseline, b_written, _, b_seen) = pass("baseline").await;
        assert_eq!(b_seen as usize, links);
        let mut no_change = Duration::MAX;
        let mut nc_written = u64::MAX;
        for _ in 0..3 {
            let (el, w, ev, _) = pass("no-change").await;
            assert_eq!(ev, 0);
            no_change = no_change.min(el);
            nc_written = nc_written.min(w).max(w);
        }
        // 1% of links change: retitle every 100th link through the control plane.
        let http = reqwest::Client::new();
        let changed: Vec<usize> = (1..=links).step_by(100).collect();
        futures_util::stream::iter(changed.iter().copied())
            .map(|id| {
                let http = http.clone();
                let base = base.clone();
                async move {
                    http.patch(format!("{base}/_sandbox/accounts/{ACCOUNT}/links/{id}"))
                        .json(&serde_json::json!({"title": format!("retitled #{id}")}))
                        .send()
                        .await
                        .expect("edit")
                }
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
        let (one_pct, o_written, o_events, _) = pass("1% changed").await;
        assert_eq!(o_events as usize, changed.len());

        let ratio = |d: Duration| d.as_secs_f64() / floor.as_secs_f64();
        println!("sync bench: {links} links, {pages} pages of 100, page concurrency 4");
        println!("  fetch-only floor   {:>8.3} s", floor.as_secs_f64());
        println!(
            "  baseline import    {:>8.3} s  {:.2} × floor (target ≤ 2.0)  payment_link rows written {b_written}",
            baseline.as_secs_f64(),
            ratio(baseline)
        );
        println!(
            "  no-change pass     {:>8.3} s  {:.2} × floor (target ≤ 1.3)  payment_link rows written {nc_written} (target 0)",
            no_change.as_secs_f64(),
            ratio(no_change)
        );
        println!(
            "  1%-changed pass    {:>8.3} s  {:.2} × floor                 payment_link rows written {o_written}, events {o_events}",
            one_pct.as_secs_f64(),
            ratio(one_pct)
        );
        println!("  peak RSS (this process, sandbox excluded) {:.1} MB (target ≤ 150)", peak_rss_mb());
        app.ledger.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    });
}
