//! `cargo bench --bench sync`: sync cost against a 100,000-link sandbox (a separate process).
//!
//! Prints, in one run: the fetch-only floor (same client, same page concurrency, pages fetched and
//! decoded, no ledger), the baseline import, a no-change pass, a 1%-changed pass, the
//! `payment_link` rows each pass wrote, and this process's peak RSS. Targets: no-change
//! ≤ 1.3 × floor, baseline ≤ 2 × floor, peak RSS ≤ 150 MB, zero row writes when nothing changed.
//!
//! Then the history figure (DESIGN §13): a second sandbox with the same links plus 300,000
//! Payment Link History rows, 10,000 of them in the last 6 days (inside `sync.history_window`).
//! After the baseline (which reads all of it), a no-change pass over links and history must stay
//! ≤ 1.3 × the fetch-only floor of the same requests (the link pages and the history pages that
//! pass read), write 0 rows, and read history pages in proportion to the window, not to the
//! 300,000 rows: the request counts are printed.
//! `SYNC_BENCH_LINKS`, `SYNC_BENCH_HISTORY` and `SYNC_BENCH_RECENT` override the counts;
//! `SYNC_BENCH_ONLY=links` or `history` runs one figure.

use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use singapay_sync::app::App;
use singapay_sync::config::Config;
use singapay_sync::singapay::{ClientConfig, SingapayClient};
use singapay_sync::types::AccountId;

mod common;
use common::{Sandbox, clear_requests, env_count, peak_rss_mb, requests};

const ACCOUNT: &str = "01K7P073Q8RE2A9PQT8Q7MXPN4";

/// CPU seconds (user + system) used so far by process `pid` ("self" for this one), from
/// `/proc/PID/stat` (fields 14 and 15, in clock ticks of 1/100 s).
fn cpu_seconds(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // The command name (field 2) may hold spaces: count fields after its ')'.
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
            Some(ticks / 100.0)
        })
        .unwrap_or(f64::NAN)
}

/// Rounds of each measured step; the best (lowest wall time) is reported.
const ROUNDS: usize = 3;

/// One measured step: wall seconds and CPU seconds of this process and of the sandbox.
#[derive(Clone, Copy)]
struct Sample {
    wall: f64,
    client_cpu: f64,
    sandbox_cpu: f64,
}

/// The fastest sample of a step.
#[derive(Default)]
struct Best(Option<Sample>);

impl Best {
    fn add(&mut self, s: Sample) {
        if self.0.is_none_or(|b| s.wall < b.wall) {
            self.0 = Some(s);
        }
    }
}

/// Runs one step and measures it: wall time and the CPU both processes spent on it.
async fn measure<T>(sandbox_pid: &str, step: impl std::future::Future<Output = T>) -> (Sample, T) {
    let (c0, s0) = (cpu_seconds("self"), cpu_seconds(sandbox_pid));
    let t = Instant::now();
    let out = step.await;
    let wall = t.elapsed().as_secs_f64();
    let (c1, s1) = (cpu_seconds("self"), cpu_seconds(sandbox_pid));
    let sample = Sample {
        wall,
        client_cpu: c1 - c0,
        sandbox_cpu: s1 - s0,
    };
    (sample, out)
}

/// One pass of the bench account.
async fn pass(app: &App) -> singapay_sync::sync::SyncSummary {
    let r = app.sync_all(None).await;
    r.into_iter().next().expect("one account").1.expect("pass")
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

/// History pages 1..=`pages`, two at a time (a windowed pass fetches one page ahead).
async fn fetch_history(client: &SingapayClient, account: &AccountId, pages: u64) -> u64 {
    let mut rows = 0;
    let mut s = futures_util::stream::iter(1..=pages)
        .map(|p| client.history_page(account, p, 100, &[]))
        .buffered(2);
    while let Some(p) = s.next().await {
        rows += p.expect("history page").rows.len() as u64;
    }
    rows
}

/// The bench's config: the sandbox at `base`, the ledger `dir/ledger`.
fn bench_config(base: &str, dir: &std::path::Path, ledger: &str) -> Config {
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
        dir.join(ledger).display()
    );
    Config::from_toml_str(&toml).expect("config")
}

fn main() {
    let links = env_count("SYNC_BENCH_LINKS", 100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // `SYNC_BENCH_ONLY=links` or `=history` runs one of the two.
    let only = std::env::var("SYNC_BENCH_ONLY").unwrap_or_default();
    if only != "history" {
        rt.block_on(links_bench(links));
    }
    if only == "links" {
        return;
    }
    rt.block_on(history_bench(
        links,
        env_count("SYNC_BENCH_HISTORY", 300_000),
        env_count("SYNC_BENCH_RECENT", 10_000),
    ));
}

/// The figure of issue 10: links plus a year of history, most of it outside the window.
async fn history_bench(links: usize, history: usize, recent: usize) {
    let (sandbox, base) = Sandbox::start(links, history, recent).await;
    let sandbox_pid = sandbox.pid();
    let dir = std::env::temp_dir().join(format!("singapay-sync-bench-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cfg = bench_config(&base, &dir, "history.db");
    let account = AccountId::parse(ACCOUNT).expect("account");
    let client = SingapayClient::new(ClientConfig::from(&cfg.singapay)).expect("client");
    let http = reqwest::Client::new();
    let app = App::build_with_clock(cfg, Arc::new(singapay_sync::time::SystemClock), false)
        .await
        .expect("app");
    clear_requests(&http, &base).await;
    let (b, s) = measure(&sandbox_pid, pass(&app)).await;
    let (b_list, b_hist) = requests(&http, &base).await;
    assert!(s.baseline && s.history_full);
    let total_rows = s.payments_seen;
    // The no-change passes, each against the floor of the requests it made.
    let mut nc = Best::default();
    let mut floor = Best::default();
    let (mut written, mut events, mut counts, mut hist_pages) = (0, 0, (0, 0), 0);
    let (mut hist_ms, mut hist_floor_ms) = (u64::MAX, u64::MAX);
    for _ in 0..ROUNDS {
        clear_requests(&http, &base).await;
        let (sample, s) = measure(&sandbox_pid, pass(&app)).await;
        counts = requests(&http, &base).await;
        written = written.max(s.links_written + s.payments_written);
        events = events.max(s.events);
        hist_pages = s.history_pages;
        hist_ms = hist_ms.min(s.history_ms);
        nc.add(sample);
        let (f, h) = measure(&sandbox_pid, async {
            fetch_only(&client, &account, 100, 4).await;
            let t = Instant::now();
            fetch_history(&client, &account, hist_pages).await;
            t.elapsed().as_millis() as u64
        })
        .await;
        hist_floor_ms = hist_floor_ms.min(h);
        floor.add(f);
    }
    let (nc, floor) = (nc.0.expect("measured"), floor.0.expect("measured"));
    println!(
        "history bench: {links} links + {total_rows} history rows ({recent} in the last 6 days; window 7 d), best of {ROUNDS}"
    );
    println!(
        "  baseline (all history) {:>7.3} s  cpu: client {:>5.2} s, sandbox {:>5.2} s  rows written {} links + {} payments; requests: {b_list} list, {b_hist} history",
        b.wall, b.client_cpu, b.sandbox_cpu, s.links_written, s.payments_written
    );
    println!(
        "  fetch-only floor       {:>7.3} s  (the no-change pass's requests: link pages and {hist_pages} history pages)",
        floor.wall
    );
    println!(
        "  no-change pass         {:>7.3} s  {:>5.2} × floor (target ≤ 1.3)  cpu: client {:>5.2} s, sandbox {:>5.2} s",
        nc.wall,
        nc.wall / floor.wall,
        nc.client_cpu,
        nc.sandbox_cpu
    );
    println!(
        "    of which history {hist_ms} ms (its floor {hist_floor_ms} ms); rows written {written} (target 0), events {events}"
    );
    println!(
        "    requests: {} list, {} history ({hist_pages} pages read; the whole history is {} pages)",
        counts.0,
        counts.1,
        total_rows.div_ceil(100)
    );
    println!(
        "  peak RSS (this process, sandbox excluded) {:.1} MB (target ≤ 150)",
        peak_rss_mb()
    );
    app.ledger.close().await;
    drop(sandbox);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The link figures (issue 5): baseline, no-change and 1%-changed passes against the floor.
async fn links_bench(links: usize) {
    let (sandbox, base) = Sandbox::start(links, 0, 0).await;
    let sandbox_pid = sandbox.pid();
    {
        let dir = std::env::temp_dir().join(format!("singapay-sync-bench-{}", ulid::Ulid::new()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let config = |ledger: &str| bench_config(&base, &dir, ledger);
        let cfg = config("ledger-0.db");
        let account = AccountId::parse(ACCOUNT).expect("account");
        let client = SingapayClient::new(ClientConfig::from(&cfg.singapay)).expect("client");
        let fetch = || fetch_only(&client, &account, 100, 4);

        // Warm up (token, connections).
        let (_, (pages, n)) = measure(&sandbox_pid, fetch()).await;
        assert_eq!(n as usize, links);

        // Every figure is the best of ROUNDS; the floor is measured between the passes it is
        // compared with (the sandbox and this process share two cores: interleaving keeps
        // a slow minute from landing on one side only).
        let mut floor = Best::default();
        let mut baseline = Best::default();
        let mut b_written = 0;
        let mut apps = Vec::new();
        for round in 0..ROUNDS {
            floor.add(measure(&sandbox_pid, fetch()).await.0);
            let app = App::build_with_clock(
                config(&format!("ledger-{round}.db")),
                Arc::new(singapay_sync::time::SystemClock),
                false,
            )
            .await
            .expect("app");
            let (sample, s) = measure(&sandbox_pid, pass(&app)).await;
            assert!(s.baseline);
            assert_eq!(s.links_seen as usize, links);
            b_written = s.links_written;
            baseline.add(sample);
            apps.push(app);
        }
        let app = apps.swap_remove(0);
        for other in apps {
            other.ledger.close().await;
        }
        let mut no_change = Best::default();
        let mut nc_written = 0;
        for _ in 0..ROUNDS {
            floor.add(measure(&sandbox_pid, fetch()).await.0);
            let (sample, s) = measure(&sandbox_pid, pass(&app)).await;
            assert_eq!(s.events, 0);
            nc_written = nc_written.max(s.links_written);
            no_change.add(sample);
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
        let (one_pct, o) = measure(&sandbox_pid, pass(&app)).await;
        assert_eq!(o.events as usize, changed.len());

        let floor = floor.0.expect("floor measured");
        let row = |name: &str, s: &Sample, note: String| {
            println!(
                "  {name:<18} {:>7.3} s  {:>5.2} × floor  cpu: client {:>5.2} s, sandbox {:>5.2} s  {note}",
                s.wall,
                s.wall / floor.wall,
                s.client_cpu,
                s.sandbox_cpu
            );
        };
        println!(
            "sync bench: {links} links, {pages} pages of 100, page concurrency 4, best of {ROUNDS}"
        );
        row("fetch-only floor", &floor, String::new());
        let baseline = baseline.0.expect("baseline measured");
        row(
            "baseline import",
            &baseline,
            format!("(target ≤ 2.0)  payment_link rows written {b_written}"),
        );
        let no_change = no_change.0.expect("no-change measured");
        row(
            "no-change pass",
            &no_change,
            format!("(target ≤ 1.3)  payment_link rows written {nc_written} (target 0)"),
        );
        row(
            "1%-changed pass",
            &one_pct,
            format!(
                "payment_link rows written {}, events {}",
                o.links_written, o.events
            ),
        );
        println!(
            "  peak RSS (this process, sandbox excluded) {:.1} MB (target ≤ 150)",
            peak_rss_mb()
        );
        app.ledger.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
    drop(sandbox);
}
