//! `cargo bench --bench sync`: sync cost against a 100,000-link sandbox (a separate process).
//!
//! Prints the median of `SYNC_BENCH_ROUNDS` (default 15) interleaved rounds, each measuring the
//! fetch-only floor (same client, same page concurrency, pages fetched and decoded, no ledger)
//! before each variant: the baseline import (a fresh ledger each round), a no-change pass and a
//! 1%-changed pass; wall time and CPU seconds of this process (the daemon's side) and of the
//! sandbox, with the ratios to the floor for both; rows written as the database counts them (a
//! trigger); this process's peak RSS; each round's own ratios too (on this 2-core machine one
//! round's CPU ratio strays by 15–25% from the median, and the medians of 5 rounds disagreed by up
//! to 24% between invocations). CPU seconds come from the kernel's scheduler clock of each
//! process, and every step starts with the machine's dirty pages written back
//! (`common::settle`). Targets: no-change ≤ 1.1 × floor wall and ≤ 1.25 × floor CPU, baseline
//! ≤ 1.5 ×, peak RSS ≤ 150 MB, zero row writes when nothing changed.
//!
//! Then the history figure (DESIGN §13): a second sandbox with the same links plus 300,000
//! Payment Link History rows, 10,000 of them in the last 6 days (inside `sync.history_window`).
//! After the baseline (which reads all of it), a no-change pass over links and history is
//! compared with the fetch-only floor of the same requests (the link pages and the history pages
//! that pass read), rows written are counted by the database, and history pages read must track
//! the window, not the 300,000 rows: the request counts are printed.
//! After the link figures, the same steps at 10,000 links run again under callgrind and print
//! the instructions of this process (the sandbox is not traced), each variant's against the
//! floor's just before it (see `common::callgrind`; `SYNC_BENCH_INSTRUCTIONS=0` skips it).
//! `SYNC_BENCH_LINKS`, `SYNC_BENCH_HISTORY`, `SYNC_BENCH_RECENT` and `SYNC_BENCH_ROUNDS` override
//! the counts; `SYNC_BENCH_ONLY=links` or `history` runs one figure.

use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use singapay_sync::app::App;
use singapay_sync::config::Config;
use singapay_sync::singapay::{ClientConfig, SingapayClient};
use singapay_sync::types::AccountId;

mod common;
use common::{
    ACCOUNT, Sandbox, backend_name, bench_config, callgrind, clear_requests, cpu_seconds,
    env_count, median, peak_rss_mb, requests,
};

/// Rounds of each measured step (`SYNC_BENCH_ROUNDS`, default 15, at least 1); the median is
/// reported.
fn rounds() -> usize {
    env_count("SYNC_BENCH_ROUNDS", 15).max(1)
}

/// One measured step: wall seconds and CPU seconds of this process, of the sandbox and, on
/// PostgreSQL, of the server's processes (`common::postgres_cpu`; 0 on SQLite, whose work is
/// in this process's).
#[derive(Clone, Copy)]
struct Sample {
    wall: f64,
    client_cpu: f64,
    sandbox_cpu: f64,
    server_cpu: f64,
}

/// `, PostgreSQL server N s` for a sample taken on PostgreSQL; empty on SQLite.
fn server_note(s: &Sample) -> String {
    if common::on_postgres() {
        format!(", PostgreSQL server {:>5.2} s", s.server_cpu)
    } else {
        String::new()
    }
}

/// The samples of a step; reported by their medians (wall and CPU each on its own), so that one
/// slow minute on the shared machine moves a figure less than a best-of or a mean would.
#[derive(Default)]
struct Median(Vec<Sample>);

impl Median {
    fn add(&mut self, s: Sample) {
        self.0.push(s);
    }

    fn of(&self, f: impl Fn(&Sample) -> f64) -> f64 {
        median(self.0.iter().map(f).collect())
    }

    /// The median sample: each field the median of its own values.
    fn median(&self) -> Sample {
        Sample {
            wall: self.of(|s| s.wall),
            client_cpu: self.of(|s| s.client_cpu),
            sandbox_cpu: self.of(|s| s.sandbox_cpu),
            server_cpu: self.of(|s| s.server_cpu),
        }
    }
}

/// Each round's variant with the floor measured just before it: the ratios are the medians of
/// the rounds' own ratios, so that a minute when the whole machine is slower (both sides) moves
/// them less than a ratio of two separate medians.
#[derive(Default)]
struct Paired(Vec<(Sample, Sample)>);

impl Paired {
    fn add(&mut self, floor: Sample, variant: Sample) {
        self.0.push((floor, variant));
    }

    /// `(wall, cpu)`: the medians of variant / floor.
    fn ratios(&self) -> (f64, f64) {
        let of = |f: fn(&Sample) -> f64| median(self.0.iter().map(|(a, b)| f(b) / f(a)).collect());
        (of(|s| s.wall), of(|s| s.client_cpu))
    }

    /// Each round's `wall / cpu` ratios in round order, so that a reader sees how far the
    /// rounds spread around the median (and whether one minute of the machine moved them all).
    fn rounds(&self) -> String {
        self.0
            .iter()
            .map(|(f, v)| format!("{:.2}/{:.2}", v.wall / f.wall, v.client_cpu / f.client_cpu))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Rows written, counted by the database itself: triggers on `payment_link` and `payment`
/// (insert and update, which an upsert fires as both databases document) add to one counter
/// row, read through a connection of its own.
enum WriteCounter {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl WriteCounter {
    async fn install(app: &App) -> Self {
        use secrecy::ExposeSecret;
        let counter = match &app.config.ledger.postgres {
            Some(url) => Self::Postgres(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(1)
                    .connect(url.expose_secret())
                    .await
                    .expect("counter connection"),
            ),
            None => Self::Sqlite(
                sqlx::sqlite::SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect_with(
                        sqlx::sqlite::SqliteConnectOptions::new().filename(&app.config.ledger.path),
                    )
                    .await
                    .expect("counter connection"),
            ),
        };
        let mut sql = vec![
            "CREATE TABLE IF NOT EXISTS bench_writes (n BIGINT NOT NULL)".to_string(),
            "INSERT INTO bench_writes SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM bench_writes)"
                .to_string(),
        ];
        if matches!(counter, Self::Postgres(_)) {
            sql.push(
                "CREATE OR REPLACE FUNCTION bench_count() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN UPDATE bench_writes SET n = n + 1; RETURN NULL; END $$"
                    .into(),
            );
        }
        for table in ["payment_link", "payment"] {
            for op in ["INSERT", "UPDATE"] {
                sql.push(match counter {
                    Self::Sqlite(_) => format!(
                        "CREATE TRIGGER IF NOT EXISTS bench_{table}_{op} AFTER {op} ON {table} \
                         BEGIN UPDATE bench_writes SET n = n + 1; END"
                    ),
                    Self::Postgres(_) => format!(
                        "CREATE OR REPLACE TRIGGER bench_{table}_{op} AFTER {op} ON {table} \
                         FOR EACH ROW EXECUTE FUNCTION bench_count()"
                    ),
                });
            }
        }
        for q in sql {
            let q = sqlx::AssertSqlSafe(q);
            match &counter {
                Self::Sqlite(p) => sqlx::query(q).execute(p).await.map(drop),
                Self::Postgres(p) => sqlx::query(q).execute(p).await.map(drop),
            }
            .expect("counter trigger");
        }
        counter
    }

    async fn count(&self) -> i64 {
        let q = "SELECT n FROM bench_writes";
        match self {
            Self::Sqlite(p) => sqlx::query_scalar(q).fetch_one(p).await,
            Self::Postgres(p) => sqlx::query_scalar(q).fetch_one(p).await,
        }
        .expect("counter")
    }
}

/// Runs one step and measures it: wall time and the CPU both processes (and PostgreSQL's
/// server, if the ledger is there) spent on it.
/// `name` names the step's instruction count when the bench runs under callgrind.
async fn measure<T>(
    sandbox_pid: u32,
    name: &str,
    step: impl std::future::Future<Output = T>,
) -> (Sample, T) {
    common::settle();
    let g0 = common::postgres_cpu();
    let (c0, s0) = (cpu_seconds(None), cpu_seconds(Some(sandbox_pid)));
    let t = Instant::now();
    callgrind::begin();
    let out = step.await;
    callgrind::end(name);
    let wall = t.elapsed().as_secs_f64();
    let (c1, s1) = (cpu_seconds(None), cpu_seconds(Some(sandbox_pid)));
    let sample = Sample {
        wall,
        client_cpu: c1 - c0,
        sandbox_cpu: s1 - s0,
        server_cpu: common::postgres_cpu_since(&g0),
    };
    (sample, out)
}

/// One pass of the bench account.
async fn pass(app: &App) -> singapay_sync::sync::SyncSummary {
    let r = app.sync_all(None).await;
    r.into_iter().next().expect("one account").1.expect("pass")
}

/// The floor: the account's list pages fetched (page 1, then the rest `conc` at a time) and each
/// decoded (`decode`), or only split into links (id and verbatim JSON: the stricter floor of
/// what a sweep reads before it decodes what changed). Returns `(pages, links)`.
async fn fetch_pages(
    client: &SingapayClient,
    account: &AccountId,
    per_page: u64,
    conc: usize,
    decode: bool,
) -> (u64, u64) {
    let page = |p: u64| async move {
        let (links, total_pages) = if decode {
            let page = client.list_page(account, p, per_page).await.expect("page");
            (page.links.len(), page.pagination.total_pages)
        } else {
            let page = client
                .list_page_raw(account, p, per_page)
                .await
                .expect("page");
            (page.links.len(), page.pagination.total_pages)
        };
        (links as u64, total_pages)
    };
    let (mut links, tp) = page(1).await;
    let tp = tp.unwrap_or(1);
    let mut pages = futures_util::stream::iter(2..=tp).map(page).buffered(conc);
    while let Some((n, _)) = pages.next().await {
        links += n;
    }
    (tp, links)
}

async fn fetch_only(
    client: &SingapayClient,
    account: &AccountId,
    per_page: u64,
    conc: usize,
) -> (u64, u64) {
    fetch_pages(client, account, per_page, conc, true).await
}

async fn fetch_split(
    client: &SingapayClient,
    account: &AccountId,
    per_page: u64,
    conc: usize,
) -> (u64, u64) {
    fetch_pages(client, account, per_page, conc, false).await
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
fn config_in(base: &str, dir: &std::path::Path, ledger: &str) -> Config {
    bench_config(base, &dir.join(ledger), "")
}

fn main() {
    let links = env_count("SYNC_BENCH_LINKS", 100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // `SYNC_BENCH_PROFILE=floor`, `=nochange` or `=baseline`: a profiling aid (run under `perf
    // record`): after one baseline, ten floors, no-change passes or baselines into fresh ledgers.
    if let Ok(what) = std::env::var("SYNC_BENCH_PROFILE") {
        rt.block_on(profile(links, &what));
        return;
    }
    // `SYNC_BENCH_ONLY=links`, `=history` or `=cluster` runs one of them (the cluster figure:
    // PostgreSQL only, run after the others there).
    let only = std::env::var("SYNC_BENCH_ONLY").unwrap_or_default();
    if only == "cluster" || (only.is_empty() && common::on_postgres()) {
        if !common::on_postgres() {
            println!(
                "cluster bench: needs BENCH_LEDGER=postgres (instances share a PostgreSQL ledger)"
            );
            return;
        }
        if only == "cluster" {
            rt.block_on(cluster_bench(
                env_count("SYNC_BENCH_ACCOUNTS", 200),
                env_count("SYNC_BENCH_PER_ACCOUNT", 500),
            ));
            return;
        }
    }
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
    if common::on_postgres() && only.is_empty() {
        rt.block_on(cluster_bench(
            env_count("SYNC_BENCH_ACCOUNTS", 200),
            env_count("SYNC_BENCH_PER_ACCOUNT", 500),
        ));
    }
}

/// Issue 13's figure: one instance, then two sharing one PostgreSQL ledger, over `accounts`
/// accounts of `per` links each: a baseline and a no-change pass of every account, as the cron
/// fires them (each instance tries every account; on two, each account's pass runs on one of
/// them and the other skips it). Prints wall time, passes run and skipped, and the upstream
/// requests (which two instances must not multiply).
async fn cluster_bench(accounts: usize, per: usize) {
    let (sandbox, base) = Sandbox::start(1, 0, 0).await;
    let http = reqwest::Client::new();
    let ids: Vec<String> = (0..accounts)
        .map(|_| ulid::Ulid::new().to_string())
        .collect();
    futures_util::stream::iter(ids.iter())
        .map(|id| {
            let http = http.clone();
            let url = format!("{base}/_sandbox/accounts/{id}");
            async move {
                http.post(url)
                    .json(&serde_json::json!({"links": per}))
                    .send()
                    .await
                    .expect("account")
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    let extra: String = ids
        .iter()
        .map(|i| format!("[[accounts]]\nid = \"{i}\"\n"))
        .collect();
    println!(
        "cluster bench (PostgreSQL ledger): {accounts} accounts × {per} links, page concurrency 4 per pass; every account once as its cron slot fires"
    );
    for instances in [1usize, 2] {
        let cfg = bench_config(&base, std::path::Path::new("unused"), &extra);
        let mut apps = Vec::new();
        for _ in 0..instances {
            apps.push(
                App::build_with_clock(
                    cfg.clone(),
                    Arc::new(singapay_sync::time::SystemClock),
                    false,
                )
                .await
                .expect("app"),
            );
        }
        for step in ["baseline", "no-change"] {
            if step == "no-change" {
                // The next cron slot: scheduled passes closer than the slot window (10 s) to
                // the last ones count as the same slot and are skipped.
                tokio::time::sleep(std::time::Duration::from_secs(11)).await;
            }
            clear_requests(&http, &base).await;
            let t = Instant::now();
            let results =
                futures_util::future::join_all(apps.iter().map(|a| a.sync_scheduled())).await;
            let wall = t.elapsed().as_secs_f64();
            let (list, _) = requests(&http, &base).await;
            let (mut ran, mut skipped, mut links) = (0, 0, 0);
            for (_, r) in results.iter().flatten() {
                match r {
                    Ok(s) => {
                        ran += 1;
                        links += s.links_seen;
                    }
                    Err(singapay_sync::sync::SyncError::Busy(_)) => skipped += 1,
                    Err(e) => panic!("pass failed: {e}"),
                }
            }
            println!(
                "  {instances} instance{} {step:<9} {wall:>7.3} s wall  passes run {ran} (skipped as taken by the other: {skipped}), links read {links}, list requests {list}",
                if instances == 1 { " " } else { "s" }
            );
        }
        for a in apps {
            a.ledger.close().await;
        }
    }
    drop(sandbox);
}

/// Ten floors, no-change passes or baselines (fresh ledgers) after one baseline
/// (`SYNC_BENCH_PROFILE`), timed: run it under `perf record` for each and compare the profiles.
async fn profile(links: usize, what: &str) {
    let (sandbox, base) = Sandbox::start(links, 0, 0).await;
    let dir = std::env::temp_dir().join(format!("singapay-sync-bench-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cfg = config_in(&base, &dir, "profile.db");
    let account = AccountId::parse(ACCOUNT).expect("account");
    let client = SingapayClient::new(ClientConfig::from(&cfg.singapay)).expect("client");
    let app = App::build_with_clock(cfg, Arc::new(singapay_sync::time::SystemClock), false)
        .await
        .expect("app");
    pass(&app).await;
    let (mut wall, mut cpu) = (Vec::new(), Vec::new());
    for round in 0..10 {
        let fresh = match what {
            "baseline" => Some(
                App::build_with_clock(
                    config_in(&base, &dir, &format!("baseline-{round}.db")),
                    Arc::new(singapay_sync::time::SystemClock),
                    false,
                )
                .await
                .expect("app"),
            ),
            _ => None,
        };
        let (s, _) = measure(sandbox.pid(), what, async {
            match (what, &fresh) {
                ("floor", _) => {
                    fetch_only(&client, &account, 100, 4).await;
                }
                (_, Some(app)) => assert!(pass(app).await.baseline),
                _ => assert_eq!(pass(&app).await.events, 0),
            }
        })
        .await;
        if let Some(app) = fresh {
            app.ledger.close().await;
        }
        wall.push(s.wall);
        cpu.push(s.client_cpu);
    }
    println!(
        "profile {what}: median wall {:.3} s, client cpu {:.2} s",
        median(wall),
        median(cpu)
    );
    app.ledger.close().await;
    drop(sandbox);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The figure of issue 10: links plus a year of history, most of it outside the window.
async fn history_bench(links: usize, history: usize, recent: usize) {
    let (sandbox, base) = Sandbox::start(links, history, recent).await;
    let sandbox_pid = sandbox.pid();
    let dir = std::env::temp_dir().join(format!("singapay-sync-bench-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cfg = config_in(&base, &dir, "history.db");
    let account = AccountId::parse(ACCOUNT).expect("account");
    let client = SingapayClient::new(ClientConfig::from(&cfg.singapay)).expect("client");
    let http = reqwest::Client::new();
    let app = App::build_with_clock(cfg, Arc::new(singapay_sync::time::SystemClock), false)
        .await
        .expect("app");
    clear_requests(&http, &base).await;
    let (b, s) = measure(sandbox_pid, "history-baseline", pass(&app)).await;
    let (b_list, b_hist) = requests(&http, &base).await;
    assert!(s.baseline && s.history_full);
    let total_rows = s.payments_seen;
    // The no-change passes, each against the floor of the requests it made.
    let mut nc = Median::default();
    let mut floor = Median::default();
    let mut pairs = Paired::default();
    let (mut written, mut events, mut counts, mut hist_pages) = (0, 0, (0, 0), 0);
    let (mut hist_ms, mut hist_floor_ms) = (Vec::new(), Vec::new());
    let counter = WriteCounter::install(&app).await;
    for _ in 0..rounds() {
        clear_requests(&http, &base).await;
        let before = counter.count().await;
        let (sample, s) = measure(sandbox_pid, "history-nochange", pass(&app)).await;
        counts = requests(&http, &base).await;
        written = written.max(counter.count().await - before);
        events = events.max(s.events);
        hist_pages = s.history_pages;
        hist_ms.push(s.history_ms as f64);
        nc.add(sample);
        let (f, h) = measure(sandbox_pid, "history-floor", async {
            fetch_only(&client, &account, 100, 4).await;
            let t = Instant::now();
            fetch_history(&client, &account, hist_pages).await;
            t.elapsed().as_millis() as u64
        })
        .await;
        hist_floor_ms.push(h as f64);
        floor.add(f);
        pairs.add(f, sample);
    }
    let (nc, floor) = (nc.median(), floor.median());
    let (wall_ratio, cpu_ratio) = pairs.ratios();
    let (hist_ms, hist_floor_ms) = (median(hist_ms), median(hist_floor_ms));
    println!(
        "history bench ({} ledger): {links} links + {total_rows} history rows ({recent} in the last 6 days; window 7 d), median of {} interleaved rounds",
        backend_name(),
        rounds()
    );
    println!(
        "  baseline (all history) {:>7.3} s  cpu: client {:>5.2} s, sandbox {:>5.2} s{}  rows written {} links + {} payments; requests: {b_list} list, {b_hist} history",
        b.wall,
        b.client_cpu,
        b.sandbox_cpu,
        server_note(&b),
        s.links_written,
        s.payments_written
    );
    println!(
        "  fetch-only floor       {:>7.3} s  (the no-change pass's requests: link pages and {hist_pages} history pages)",
        floor.wall
    );
    println!(
        "  no-change pass         {:>7.3} s  {wall_ratio:>5.2} × floor wall (target ≤ 1.1)  cpu: client {:>5.2} s = {cpu_ratio:>4.2} × the floor's {:.2} s (target ≤ 1.25), sandbox {:>5.2} s{}",
        nc.wall,
        nc.client_cpu,
        floor.client_cpu,
        nc.sandbox_cpu,
        server_note(&nc)
    );
    println!("    rounds' wall/cpu ratios: {}", pairs.rounds());
    println!(
        "    of which history {hist_ms:.0} ms (its floor {hist_floor_ms:.0} ms); rows written {written} (counted by the database; target 0), events {events}"
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
    history_instructions(links, history, recent);
}

/// The history figure again as instruction counts of this process (callgrind), a tenth of its
/// size (`SYNC_BENCH_INSTRUCTIONS=0` skips it): the no-change pass against the floor of its
/// own requests, median of `SYNC_BENCH_COUNT_ROUNDS` (default 3) rounds.
fn history_instructions(links: usize, history: usize, recent: usize) {
    if !callgrind::wanted("SYNC_BENCH_INSTRUCTIONS") {
        return;
    }
    let (links, history, recent) = (links / 10, history / 10, recent / 10);
    let rounds = env_count("SYNC_BENCH_COUNT_ROUNDS", 3).max(1);
    match callgrind::run(&[
        ("SYNC_BENCH_ONLY", "history".into()),
        ("SYNC_BENCH_LINKS", links.to_string()),
        ("SYNC_BENCH_HISTORY", history.to_string()),
        ("SYNC_BENCH_RECENT", recent.to_string()),
        ("SYNC_BENCH_ROUNDS", rounds.to_string()),
    ]) {
        Ok(steps) => {
            let rows = callgrind::paired(&steps, "history-floor", &["history-nochange"]);
            let baseline = steps
                .iter()
                .find(|(n, _)| n == "history-baseline")
                .map_or(f64::NAN, |(_, i)| *i as f64);
            println!(
                "  instructions (callgrind, this process only; {links} links + {history} history rows, {recent} recent, median of {rounds} rounds): baseline {:.1} M; floor {:.1} M, no-change pass {:.1} M = {:.2} × the floor's",
                baseline / 1e6,
                rows[0].1 / 1e6,
                rows[1].1 / 1e6,
                rows[1].2
            );
        }
        Err(why) => println!("  instructions: not counted: {why}"),
    }
}

/// The link figures (issue 5): baseline, no-change and 1%-changed passes against the floor.
async fn links_bench(links: usize) {
    let (sandbox, base) = Sandbox::start(links, 0, 0).await;
    let sandbox_pid = sandbox.pid();
    {
        let dir = std::env::temp_dir().join(format!("singapay-sync-bench-{}", ulid::Ulid::new()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let config = |ledger: &str| config_in(&base, &dir, ledger);
        let cfg = config("ledger-0.db");
        let account = AccountId::parse(ACCOUNT).expect("account");
        let client = SingapayClient::new(ClientConfig::from(&cfg.singapay)).expect("client");
        let fetch = || fetch_only(&client, &account, 100, 4);
        let split = || fetch_split(&client, &account, 100, 4);

        // Warm up (token, connections).
        let (_, (_, n)) = measure(sandbox_pid, "warm-up", fetch()).await;
        assert_eq!(n as usize, links);

        // Every figure is the median of `rounds()`; in each round the floor is measured before
        // each variant (the sandbox and this process share two cores: interleaving keeps a
        // slow minute from landing on one side only). Rows written are counted by the database
        // (a trigger on `payment_link`, installed after the baselines), not by the daemon.
        let (mut floor, mut split_floor, mut baseline, mut no_change, mut one_pct) = (
            Median::default(),
            Median::default(),
            Median::default(),
            Median::default(),
            Median::default(),
        );
        let (mut b_pairs, mut nc_pairs, mut nc_split_pairs, mut o_pairs) = (
            Paired::default(),
            Paired::default(),
            Paired::default(),
            Paired::default(),
        );
        let (mut b_written, mut nc_written, mut o_written, mut o_events) = (0, 0, 0, 0);
        let http = reqwest::Client::new();
        let mut app0: Option<(App, WriteCounter)> = None;
        for round in 0..rounds() {
            let f = measure(sandbox_pid, "floor", fetch()).await.0;
            floor.add(f);
            let app = App::build_with_clock(
                config(&format!("ledger-{round}.db")),
                Arc::new(singapay_sync::time::SystemClock),
                false,
            )
            .await
            .expect("app");
            let (sample, s) = measure(sandbox_pid, "baseline", pass(&app)).await;
            assert!(s.baseline);
            assert_eq!(s.links_seen as usize, links);
            b_written = app
                .ledger
                .list_links(&account, 0, 0)
                .await
                .expect("count")
                .1;
            baseline.add(sample);
            b_pairs.add(f, sample);
            if app0.is_none() {
                let counter = WriteCounter::install(&app).await;
                app0 = Some((app, counter));
            } else {
                // Closed and removed: fifteen rounds would leave 2.3 GB of ledgers behind.
                app.ledger.close().await;
                let file = &app.config.ledger.path;
                for suffix in ["", "-wal", "-shm"] {
                    let mut path = file.clone().into_os_string();
                    path.push(suffix);
                    let _ = std::fs::remove_file(path);
                }
            }
            let (app, counter) = app0.as_ref().expect("first app");
            let f = measure(sandbox_pid, "floor", fetch()).await.0;
            floor.add(f);
            let fs = measure(sandbox_pid, "split", split()).await.0;
            split_floor.add(fs);
            let before = counter.count().await;
            let (sample, s) = measure(sandbox_pid, "no-change", pass(app)).await;
            assert_eq!(s.events, 0);
            nc_written = nc_written.max(counter.count().await - before);
            no_change.add(sample);
            nc_pairs.add(f, sample);
            nc_split_pairs.add(fs, sample);
            // 1% of links change: retitle every 100th link through the control plane (another
            // title each round).
            let changed: Vec<usize> = (1..=links).step_by(100).collect();
            futures_util::stream::iter(changed.iter().copied())
                .map(|id| {
                    let http = http.clone();
                    let base = base.clone();
                    async move {
                        http.patch(format!("{base}/_sandbox/accounts/{ACCOUNT}/links/{id}"))
                            .json(&serde_json::json!({"title": format!("retitled #{id} in round {round}")}))
                            .send()
                            .await
                            .expect("edit")
                    }
                })
                .buffer_unordered(16)
                .collect::<Vec<_>>()
                .await;
            let f = measure(sandbox_pid, "floor", fetch()).await.0;
            floor.add(f);
            let before = counter.count().await;
            let (sample, o) = measure(sandbox_pid, "1%-changed", pass(app)).await;
            assert_eq!(o.events as usize, changed.len());
            o_written = counter.count().await - before;
            o_events = o.events;
            one_pct.add(sample);
            o_pairs.add(f, sample);
        }
        let (app, _) = app0.expect("measured");
        let pages = links.div_ceil(100);
        let floor = floor.median();
        let row = |name: &str, s: &Sample, pairs: Option<&Paired>, note: String| {
            let (w, c) = pairs.map_or((1.0, 1.0), Paired::ratios);
            println!(
                "  {name:<18} {:>7.3} s  {w:>5.2} × floor wall  cpu: client {:>5.2} s = {c:>5.2} × floor's, sandbox {:>5.2} s{}  {note}",
                s.wall,
                s.client_cpu,
                s.sandbox_cpu,
                server_note(s)
            );
            if let Some(p) = pairs {
                println!("  {:<18} rounds' wall/cpu ratios: {}", "", p.rounds());
            }
        };
        println!(
            "sync bench ({} ledger): {links} links, {pages} pages of 100, page concurrency 4, median of {} interleaved rounds (the floor measured before each variant: {} times; a ratio is the median of the rounds' variant / the floor just before it)",
            backend_name(),
            rounds(),
            3 * rounds()
        );
        row("fetch-only floor", &floor, None, String::new());
        let split_ratio =
            split_floor
                .0
                .iter()
                .zip(&nc_pairs.0)
                .fold(Paired::default(), |mut p, (s, (f, _))| {
                    p.add(*f, *s);
                    p
                });
        row(
            "fetch+split floor",
            &split_floor.median(),
            Some(&split_ratio),
            "(the pages only split into links, none decoded)".into(),
        );
        row(
            "baseline import",
            &baseline.median(),
            Some(&b_pairs),
            format!("(target ≤ 1.5 wall)  payment_link rows {b_written}"),
        );
        row(
            "no-change pass",
            &no_change.median(),
            Some(&nc_pairs),
            format!(
                "(targets ≤ 1.1 wall, ≤ 1.25 cpu)  rows written {nc_written} (database-counted; target 0)"
            ),
        );
        let (w, c) = nc_split_pairs.ratios();
        println!(
            "  {:<18} {w:>5.2} × wall, {c:>5.2} × cpu of the fetch+split floor (what the pass adds to reading the pages)",
            ""
        );
        row(
            "1%-changed pass",
            &one_pct.median(),
            Some(&o_pairs),
            format!("rows written {o_written} (database-counted), events {o_events}"),
        );
        println!(
            "  peak RSS (this process, sandbox excluded) {:.1} MB (target ≤ 150)",
            peak_rss_mb()
        );
        app.ledger.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
    drop(sandbox);
    links_instructions();
}

/// The link figures again as instruction counts of this process (callgrind), smaller
/// (`SYNC_BENCH_COUNT_LINKS`, default 10,000 links; `SYNC_BENCH_COUNT_ROUNDS`, default 3 rounds;
/// `SYNC_BENCH_INSTRUCTIONS=0` skips them): each variant's count against the floor's just
/// before it, median of the rounds.
fn links_instructions() {
    if !callgrind::wanted("SYNC_BENCH_INSTRUCTIONS") {
        return;
    }
    let links = env_count("SYNC_BENCH_COUNT_LINKS", 10_000);
    let rounds = env_count("SYNC_BENCH_COUNT_ROUNDS", 3).max(1);
    let steps = match callgrind::run(&[
        ("SYNC_BENCH_ONLY", "links".into()),
        ("SYNC_BENCH_LINKS", links.to_string()),
        ("SYNC_BENCH_ROUNDS", rounds.to_string()),
    ]) {
        Ok(steps) => steps,
        Err(why) => {
            println!("  instructions: not counted: {why}");
            return;
        }
    };
    println!(
        "  instructions (callgrind, this process only; the same steps at {links} links, median of {rounds} rounds, each against the floor just before it):"
    );
    let rows = callgrind::paired(&steps, "floor", &["baseline", "no-change", "1%-changed"]);
    let split = callgrind::paired(&steps, "split", &["no-change"]);
    let labels = [
        "fetch-only floor",
        "baseline import",
        "no-change pass",
        "1%-changed pass",
    ];
    let split_labels = ["fetch+split floor", "no-change vs split"];
    for (label, (_, ir, ratio)) in labels
        .iter()
        .zip(&rows)
        .chain(split_labels.iter().zip(&split))
    {
        println!(
            "    {label:<20} {:>9.1} M instructions  {ratio:>5.2} ×",
            ir / 1e6
        );
    }
}
