//! `cargo bench --bench delivery`: the dispatcher delivering 10,000 events to a local receiver,
//! against a floor measured in the same run: the same signed requests sent by a bare reqwest
//! loop at the same concurrency, with no ledger.
//!
//! The dispatcher runs as the daemon does by default: `delivery.concurrency` 16 in all and
//! `delivery.per_subscriber_concurrency` 8 to the one subscriber, so the floor sends 8 at a time
//! too; after each `dispatch_due` it asks `next_due_at`, as the daemon's loop does. A third of
//! the events are on links with three events each, so per-link ordering is paid for. Floor and
//! dispatcher alternate for `DELIVERY_BENCH_ROUNDS` rounds (default 15; a fresh ledger and, on
//! both sides, a new HTTP client each round, so both open their connections to the receiver
//! inside the step) and the medians are printed: wall time (deliveries per second) and the CPU
//! seconds of the daemon's side alone (this process, from the kernel's scheduler clock: the
//! receiver is a process of its own), with the ratios for both, then each round's own ratios (on
//! this 2-core machine one round's CPU ratio strays by 20% or more from the median, and the
//! medians of 5 rounds disagreed by 11% between invocations). Every step starts with the
//! machine's dirty pages written back (`common::settle`). Target: ≥ 0.8 × the floor. Then the
//! same rounds, smaller, under callgrind: instructions of this process, the dispatcher's against
//! the floor's (see `common::callgrind`). `DELIVERY_BENCH_EVENTS` overrides the count.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use futures_util::StreamExt;
use singapay_sync::event::{Event, EventData};
use singapay_sync::ledger::{Ledger, NewDelivery, NewEvent, PageCommit};
use singapay_sync::notify::dispatcher::WebhookTarget;
use singapay_sync::notify::{Dispatcher, RetrySchedule};
use singapay_sync::standard_webhooks::{WebhookSecret, sign};
use singapay_sync::time::SystemClock;
use singapay_sync::types::{AccountId, Channel, EventId, EventType, LinkId, Trigger};

/// `delivery.concurrency`'s default.
const CONCURRENCY: usize = 16;
/// `delivery.per_subscriber_concurrency`'s default: what one subscriber gets.
const PER_SUBSCRIBER: usize = 8;
const SEED_004: &str = include_str!("../tests/fixtures/seed_004_list_page1.json");

mod common;
use common::{ACCOUNT, callgrind, cpu_seconds, env_count, median, threads_cpu_seconds};

/// The receiver, as its own process (this bench binary again with `DELIVERY_BENCH_RECEIVER`
/// set), so that neither its CPU nor its instructions count as the daemon's side: it counts
/// each `POST /hooks` and answers 204; `GET /hits` answers the count so far. Killed on drop.
struct Receiver {
    child: std::process::Child,
    /// `http://127.0.0.1:PORT`.
    base: String,
}

impl Receiver {
    fn start() -> Receiver {
        use std::io::BufRead;
        let exe = std::env::var_os("SINGAPAY_BENCH_EXE")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::env::current_exe().expect("this bench's path"));
        let mut child = std::process::Command::new(exe)
            .arg("--bench")
            .env("DELIVERY_BENCH_RECEIVER", "1")
            .env_remove("SINGAPAY_BENCH_COUNTING")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start the receiver");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("receiver stdout"))
            .read_line(&mut line)
            .expect("receiver address");
        Receiver {
            child,
            base: line.trim().to_owned(),
        }
    }

    /// The receiver process's id (for its CPU time).
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn url(&self) -> String {
        format!("{}/hooks", self.base)
    }

    async fn hits(&self, client: &reqwest::Client) -> u64 {
        client
            .get(format!("{}/hits", self.base))
            .send()
            .await
            .expect("hits")
            .text()
            .await
            .expect("hits body")
            .parse()
            .expect("hits count")
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The receiver process's body: prints its base URL on one line, then serves until killed.
fn serve_receiver() {
    let hits = Arc::new(AtomicU64::new(0));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("receiver runtime");
    rt.block_on(async move {
        let h2 = Arc::clone(&hits);
        let app = Router::new()
            .route(
                "/hooks",
                post(move || {
                    let h = Arc::clone(&h2);
                    async move {
                        h.fetch_add(1, Ordering::Relaxed);
                        StatusCode::NO_CONTENT
                    }
                }),
            )
            .route(
                "/hits",
                get(move || {
                    let h = Arc::clone(&hits);
                    async move { h.load(Ordering::Relaxed).to_string() }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        println!("http://{}", listener.local_addr().expect("addr"));
        let _ = axum::serve(listener, app).await;
    });
}

/// One measured step: wall seconds and the daemon side's CPU seconds.
struct Sample {
    wall: f64,
    cpu: f64,
    /// Of `cpu`, SQLite's worker threads.
    sqlite: f64,
    /// The receiver process's CPU seconds (not the daemon's side: shown to tell how much of
    /// the machine's two cores the step left unused).
    receiver: f64,
    /// The PostgreSQL server's CPU seconds (its processes, `common::postgres_cpu`): the
    /// ledger's side of the work on PostgreSQL; 0 on SQLite, whose work is in `cpu`.
    server: f64,
}

/// Measures `step` (named `name` in the instruction counts under callgrind): wall time, this
/// process's CPU, its SQLite threads' CPU, the receiver's (another process: `receiver` is its
/// id) and, on PostgreSQL, the server's.
async fn measured<T>(
    name: &str,
    receiver: u32,
    step: impl std::future::Future<Output = T>,
) -> (Sample, T) {
    common::settle();
    let g0 = common::postgres_cpu();
    let p0 = cpu_seconds(None);
    let q0 = threads_cpu_seconds("sqlx-sqlite");
    let r0 = cpu_seconds(Some(receiver));
    let t = Instant::now();
    callgrind::begin();
    let out = step.await;
    callgrind::end(name);
    let wall = t.elapsed().as_secs_f64();
    let p1 = cpu_seconds(None);
    let q1 = threads_cpu_seconds("sqlx-sqlite");
    let r1 = cpu_seconds(Some(receiver));
    let server = common::postgres_cpu_since(&g0);
    (
        Sample {
            wall,
            cpu: p1 - p0,
            sqlite: q1 - q0,
            receiver: r1 - r0,
            server,
        },
        out,
    )
}

fn main() {
    let n = env_count("DELIVERY_BENCH_EVENTS", 10_000);
    let rounds = env_count("DELIVERY_BENCH_ROUNDS", 15).max(1);
    if std::env::var_os("DELIVERY_BENCH_RECEIVER").is_some() {
        serve_receiver();
        return;
    }
    let receiver = Receiver::start();
    // Parsed once, as the dispatcher's subscriber URL is: both sides clone it per POST.
    let url: reqwest::Url = receiver.url().parse().expect("receiver url");
    let receiver_pid = receiver.pid();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        // A realistic envelope (~1 KB): link 103 of SingaPay's list example as the object.
        let seed: serde_json::Value = serde_json::from_str(SEED_004).expect("seed");
        let link = singapay_sync::singapay::PaymentLink::decode(&seed["data"][0].to_string())
            .expect("link");
        let object = serde_json::to_value(&link).expect("object");
        let (secret, _) = WebhookSecret::generate();
        let account = AccountId::parse(ACCOUNT).expect("account");
        // Asks the receiver for its count (not in any measured step).
        let client = reqwest::Client::new();
        let now = chrono::Utc::now();
        // The first third of the events: three per link (sequences 1, 2, 3); the rest one each.
        let third = n / 3 / 3 * 3;
        let link_of = |i: usize| {
            if i < third {
                (LinkId((i / 3) as i64 + 1), (i % 3) as i64 + 1)
            } else {
                (LinkId((i - third + third / 3) as i64 + 1), 1)
            }
        };
        let make_events = || -> Vec<Event> {
            (0..n)
                .map(|i| {
                    let mut prev = serde_json::Map::new();
                    prev.insert("current_usage".into(), i.into());
                    prev.insert("payment_date".into(), serde_json::Value::Null);
                    Event {
                        account_id: account.clone(),
                        created_at: now,
                        data: EventData {
                            object: object.clone(),
                            payments: None,
                            previous_attributes: Some(prev),
                            usage_delta: Some(1),
                        },
                        id: EventId::generate(),
                        sequence: link_of(i).1,
                        event_type: EventType::Paid,
                    }
                })
                .collect()
        };
        let (mut floor, mut ours) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            // Floor: the same signed POSTs from a bare reqwest loop.
            let events = make_events();
            let bodies: Vec<(String, String)> = events
                .iter()
                .map(|e| (e.id.0.clone(), e.to_json().expect("envelope")))
                .collect();
            // A new client each round, built before the step as `Dispatcher::new` builds the
            // dispatcher's: both sides open their connections to the receiver inside the step
            // (cold alike; the floor's connections were kept from round to round before).
            let floor_client = reqwest::Client::new();
            let (f, ()) = measured("floor", receiver_pid, async {
                futures_util::stream::iter(bodies.iter())
                    .map(|(id, body)| {
                        let client = floor_client.clone();
                        let url = url.clone();
                        let secret = &secret;
                        async move {
                            let ts = chrono::Utc::now().timestamp();
                            let r = client
                                .post(url)
                                .header("content-type", "application/json")
                                .header("webhook-id", id.as_str())
                                .header("webhook-timestamp", ts.to_string())
                                .header("webhook-signature", sign(secret, id, ts, body.as_bytes()))
                                .body(body.clone())
                                .send()
                                .await
                                .expect("floor request");
                            assert!(r.status().is_success());
                        }
                    })
                    .buffer_unordered(PER_SUBSCRIBER)
                    .collect::<Vec<_>>()
                    .await;
            })
            .await;
            floor.push(f);

            // The dispatcher: new events, committed to a fresh ledger as a sync would.
            let events = make_events();
            let dir = std::env::temp_dir()
                .join(format!("singapay-sync-dbench-{}-{round}", ulid::Ulid::new()));
            let ledger = if common::on_postgres() {
                Ledger::open_postgres(&common::fresh_postgres_database(), 8).await
            } else {
                Ledger::open(&dir.join("ledger.db")).await
            }
            .expect("ledger");
            let run = ledger
                .start_run(&account, Trigger::Manual, false, now)
                .await
                .expect("run");
            for (chunk_no, chunk) in events.chunks(500).enumerate() {
                let mut commit = PageCommit::default();
                for (k, event) in chunk.iter().enumerate() {
                    let (link, _) = link_of(chunk_no * 500 + k);
                    commit.deliveries.push(NewDelivery {
                        event_id: event.id.0.clone(),
                        subscriber: "erp".into(),
                        channel: Channel::Webhook,
                        next_attempt_at: now,
                    });
                    commit
                        .events
                        .push(NewEvent::new(event.clone(), link, run).expect("event"));
                }
                ledger.commit_page(run, commit).await.expect("commit");
            }
            let dispatcher = Dispatcher::new(
                ledger.clone(),
                vec![WebhookTarget {
                    name: "erp".into(),
                    url: url.clone(),
                    secret: secret.clone(),
                }],
                None,
                RetrySchedule {
                    delays: singapay_sync::config::DEFAULT_RETRY_SCHEDULE
                        .map(Duration::from_secs)
                        .to_vec(),
                    jitter: 0.2,
                },
                Duration::from_secs(15),
                CONCURRENCY,
                Arc::new(SystemClock),
            )
            .expect("dispatcher")
            .with_per_subscriber_limit(PER_SUBSCRIBER);
            let hits0 = receiver.hits(&client).await;
            let (d, (delivered, next_due)) = measured("dispatcher", receiver_pid, async {
                let mut delivered = 0;
                let mut next_due = None;
                while delivered < n {
                    let s = dispatcher.dispatch_due().await.expect("dispatch");
                    assert_eq!(s.retrying + s.dead, 0, "{s:?}");
                    // As the daemon's loop does after each turn: when to wake next.
                    next_due = ledger.next_due_at().await.expect("next due");
                    if s.attempted == 0 {
                        break;
                    }
                    delivered += s.delivered;
                }
                (delivered, next_due)
            })
            .await;
            assert_eq!(next_due, None, "everything was delivered");
            assert_eq!(delivered, n);
            assert_eq!((receiver.hits(&client).await - hits0) as usize, n);
            ours.push(d);
            ledger.close().await;
            let _ = std::fs::remove_dir_all(&dir);
        }
        // Each round's dispatcher against the floor measured just before it.
        let paired = |f: fn(&Sample) -> f64| {
            median(floor.iter().zip(&ours).map(|(a, b)| f(b) / f(a)).collect())
        };
        let (wall_ratio, cpu_ratio) = (paired(|s| s.wall), paired(|s| s.cpu));
        let fw = median(floor.iter().map(|s| s.wall).collect());
        let fc = median(floor.iter().map(|s| s.cpu).collect());
        let ow = median(ours.iter().map(|s| s.wall).collect());
        let oc = median(ours.iter().map(|s| s.cpu).collect());
        let fr = median(floor.iter().map(|s| s.receiver).collect());
        let or = median(ours.iter().map(|s| s.receiver).collect());
        // Cores busy on this side, the PostgreSQL server's (if any) and the receiver's together
        // (of the machine's).
        let busy = |v: &[Sample]| {
            median(
                v.iter()
                    .map(|s| (s.cpu + s.server + s.receiver) / s.wall)
                    .collect(),
            )
        };
        let rate = |secs: f64| n as f64 / secs;
        // Where the ledger's work is done: SQLite's threads (in this process's CPU), or the
        // PostgreSQL server (beside it: also given added to this side's, as a ratio).
        let (ledger_name, ledgers, ledger_cpu, with_server): (&str, &str, fn(&Sample) -> f64, _) =
            if common::on_postgres() {
                let with_server = format!(
                    "; this side + server {:.2} × floor cpu",
                    paired(|s| s.cpu + s.server)
                );
                ("PostgreSQL server", "PostgreSQL server's", |s| s.server, with_server)
            } else {
                ("SQLite threads", "SQLite threads'", |s| s.sqlite, String::new())
            };
        let ledger_side = format!(
            "{ledger_name} {:.2} s{with_server}",
            median(ours.iter().map(ledger_cpu).collect())
        );
        println!(
            "delivery bench ({} ledger): {n} events ({third} on links with 3 each), one subscriber at {PER_SUBSCRIBER} in flight (the daemon's default), median of {rounds} interleaved rounds",
            common::backend_name()
        );
        println!(
            "  floor (bare reqwest loop)  {:>9.0} deliveries/s  ({fw:.3} s)  cpu (this side) {fc:.2} s  (receiver {fr:.2} s; {:.2} cores busy of {})",
            rate(fw),
            busy(&floor),
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        println!(
            "  dispatcher (ledger)        {:>9.0} deliveries/s  ({ow:.3} s)  cpu (this side) {oc:.2} s ({ledger_side})  (receiver {or:.2} s; {:.2} cores busy)  {:.2} × floor rate (target ≥ 0.8), {cpu_ratio:.2} × floor cpu (medians of the rounds' ratios)",
            rate(ow),
            busy(&ours),
            1.0 / wall_ratio
        );
        println!(
            "  rounds' rate/cpu ratios ({ledgers} CPU): {}",
            floor
                .iter()
                .zip(&ours)
                .map(|(f, o)| format!(
                    "{:.2}/{:.2} ({:.2} s)",
                    f.wall / o.wall,
                    o.cpu / f.cpu,
                    ledger_cpu(o)
                ))
                .collect::<Vec<_>>()
                .join(" ")
        );
    });
    instructions();
}

/// The same rounds again as instruction counts of this process (callgrind), smaller
/// (`DELIVERY_BENCH_COUNT_EVENTS`, default 2,000 events; `DELIVERY_BENCH_COUNT_ROUNDS`,
/// default 3; `DELIVERY_BENCH_INSTRUCTIONS=0` skips them): the dispatcher's count against the
/// floor's just before it, median of the rounds.
fn instructions() {
    if !callgrind::wanted("DELIVERY_BENCH_INSTRUCTIONS") {
        return;
    }
    let n = env_count("DELIVERY_BENCH_COUNT_EVENTS", 2_000);
    let rounds = env_count("DELIVERY_BENCH_COUNT_ROUNDS", 3).max(1);
    match callgrind::run(&[
        ("DELIVERY_BENCH_EVENTS", n.to_string()),
        ("DELIVERY_BENCH_ROUNDS", rounds.to_string()),
    ]) {
        Ok(steps) => {
            let rows = callgrind::paired(&steps, "floor", &["dispatcher"]);
            println!(
                "  instructions (callgrind, this process only; {n} events, median of {rounds} rounds): floor {:.1} M, dispatcher {:.1} M = {:.2} × the floor's",
                rows[0].1 / 1e6,
                rows[1].1 / 1e6,
                rows[1].2
            );
        }
        Err(why) => println!("  instructions: not counted: {why}"),
    }
}
