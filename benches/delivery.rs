//! `cargo bench --bench delivery`: the dispatcher delivering 10,000 events to a local receiver,
//! against a floor measured in the same run: the same signed requests sent by a bare reqwest
//! loop with the same concurrency and no ledger. Prints deliveries per second and the ratio.
//! Targets: ≥ 0.5 × the floor and ≥ 1,000 deliveries/s. `DELIVERY_BENCH_EVENTS`
//! overrides the count.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use futures_util::StreamExt;
use singapay_sync::event::{Event, EventData};
use singapay_sync::ledger::{Ledger, NewDelivery, NewEvent, PageCommit};
use singapay_sync::notify::dispatcher::WebhookTarget;
use singapay_sync::notify::{Dispatcher, RetrySchedule};
use singapay_sync::standard_webhooks::{WebhookSecret, sign};
use singapay_sync::time::SystemClock;
use singapay_sync::types::{AccountId, Channel, EventId, EventType, LinkId, Trigger};

const CONCURRENCY: usize = 16;
const SEED_004: &str = include_str!("../tests/fixtures/seed_004_list_page1.json");

fn main() {
    let n: usize = std::env::var("DELIVERY_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        // The receiver: counts and answers 204.
        let hits = Arc::new(AtomicU64::new(0));
        let h2 = Arc::clone(&hits);
        let app = Router::new().route(
            "/hooks",
            post(move || {
                let h = Arc::clone(&h2);
                async move {
                    h.fetch_add(1, Ordering::Relaxed);
                    StatusCode::NO_CONTENT
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/hooks", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });

        // A realistic envelope (~1 KB): link 103 of SingaPay's list example as the object.
        let seed: serde_json::Value = serde_json::from_str(SEED_004).expect("seed");
        let link = singapay_sync::singapay::PaymentLink::decode(&seed["data"][0].to_string())
            .expect("link");
        let object = serde_json::to_value(&link).expect("object");
        let (secret, _) = WebhookSecret::generate();
        let account = AccountId::parse("01K7P073Q8RE2A9PQT8Q7MXPN4").expect("account");

        // Floor: the same signed POSTs from a bare reqwest loop.
        let client = reqwest::Client::new();
        let now = chrono::Utc::now();
        let events: Vec<Event> = (0..n)
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
                    sequence: 1,
                    event_type: EventType::Paid,
                }
            })
            .collect();
        let bodies: Vec<(String, String)> = events
            .iter()
            .map(|e| (e.id.0.clone(), e.to_json().expect("envelope")))
            .collect();
        let t = Instant::now();
        futures_util::stream::iter(bodies.iter())
            .map(|(id, body)| {
                let client = client.clone();
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
            .buffer_unordered(CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        let floor = t.elapsed();

        // The dispatcher: the same events, committed to the ledger as a sync would.
        let dir = std::env::temp_dir().join(format!("singapay-sync-dbench-{}", ulid::Ulid::new()));
        let ledger = Ledger::open(&dir.join("ledger.db")).await.expect("ledger");
        let run = ledger.start_run(&account, Trigger::Manual, false, now).await.expect("run");
        for (chunk_no, chunk) in events.chunks(500).enumerate() {
            let mut commit = PageCommit::default();
            for (k, event) in chunk.iter().enumerate() {
                let link = LinkId((chunk_no * 500 + k) as i64 + 1);
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
        .expect("dispatcher");
        hits.store(0, Ordering::Relaxed);
        let t = Instant::now();
        let mut delivered = 0;
        while delivered < n {
            let s = dispatcher.dispatch_due().await.expect("dispatch");
            assert_eq!(s.retrying + s.dead, 0, "{s:?}");
            if s.attempted == 0 {
                break;
            }
            delivered += s.delivered;
        }
        let ours = t.elapsed();
        assert_eq!(delivered, n);
        assert_eq!(hits.load(Ordering::Relaxed) as usize, n);
        let rate = |d: Duration| n as f64 / d.as_secs_f64();
        println!("delivery bench: {n} events, concurrency {CONCURRENCY}, local receiver");
        println!("  floor (bare reqwest loop)  {:>9.0} deliveries/s  ({:.3} s)", rate(floor), floor.as_secs_f64());
        println!(
            "  dispatcher (ledger)        {:>9.0} deliveries/s  ({:.3} s)  {:.2} × floor (target ≥ 0.5, ≥ 1000/s)",
            rate(ours),
            ours.as_secs_f64(),
            rate(ours) / rate(floor)
        );
        ledger.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    });
}
